"""What does an RNN's hidden state hold, layer by layer? (seed Q1 and Q12)

A stacked unidirectional LSTM language model (`RNNLanguageModel`, `experiments.language_model`'s
task: truncated BPTT, the state carried across batches) learns the words of UD English-EWT's
training split, its sentences joined into one stream with `<eos>` after each (vocabulary: the
training words seen `data.min_freq` times or more, `<unk>` for the rest). Frozen, it reads two
probe streams built the same way, from a zero state at the start of each stream and with the
state carried across sentences (as it reads in training and evaluation):

  probe-train  the first `probe.train_sentences` sentences of UD train (text the LM saw)
  probe-test   the first `probe.test_sentences` sentences of `probe.test_split` (0: all)

At every word position t (not `<eos>`; t >= max(k) so every k-back target exists; the last
position excluded so the next word exists) it collects layer 0 = the embedding x_t `[embed]`
and layer l = h^l_t `[hidden]` (`rnn_jax.probes.layer_states`), and fits linear probes of the
kinds in `probe.kinds` per (model, seed, layer, target), each regularisation strength chosen
on the last `probe.holdout_fraction` of probe-train, then refitted on all of it:

  lda       `rnn_jax.probes.fit_lda_probes`: linear discriminant analysis with a shrunk shared
            covariance (grid `probe.shrinkages`); every target
  logistic  `rnn_jax.logistic_probes.fit_logistic_probes`: multinomial logistic regression
            with an L2 penalty (grid `probe.l2_penalties`, `probe.logistic_iterations` L-BFGS
            steps); the tag targets only (`TAG_TARGETS`: 101-class word probes cost ~6x as
            much)

Targets:

  word_k<k>  memory (Q1): the token at t-k in the stream, as one of the `probe.num_words` most
             frequent training tokens (`<eos>` is one of them) or "other" (one class);
             k from `probe.distances`, 0 first (k = 0 is the current word: lexical identity)
  upos       abstraction (Q12): the UPOS tag of word t (17 classes)
  upos_next  what an LM must anticipate: the UPOS tag of token t+1 (`<eos>` an 18th class)
  upos_control, upos_next_control
             Hewitt & Liang's (2019) control tasks: word t's type (the LM's token:
             forms outside its vocabulary are one type, `<unk>`) mapped to a random tag
             (`rnn_jax.probe_baselines.control_task`, seeded by `seed` and `seed + 1`), drawn from
             probe-train's distribution of the real target; selectivity = task − control

Models: the trained LM of each seed and, as the control, the same seed's untrained LM (its
initial weights: what a probe decodes without learning, Hewitt & Liang 2019). Baselines: the
majority class of probe-train, and for the tag targets a lexical lookup
(`rnn_jax.probe_baselines.lexical_accuracy`: word t's most frequent tag, or next tag, in
probe-train; the overall majority for unseen words), the non-linear reference of what word
identity alone gives. Reported: accuracy on probe-test per (probe, model, layer, target), per
seed. W/results.json: `final` = {"<probe>-<trained|untrained>-L<layer>": {target: [per
seed]}, "majority": {target: accuracy}, "lexical": {tag target: accuracy}}, plus the LM's
perplexities, the chosen regularisation, the sizes and the probes' time; W/state_probe.md;
W/state_probe.png (memory curves).

The probe sets (streams, positions, labels) are built in `experiments.state_probe_data`; the
report's tables and plot are `experiments.state_probe_report`, the answers (Q1, Q12)
`experiments.state_probe_answers`.

    python -m experiments.state_probe --workdir=W \
        --config=experiments/configs/state_probe.py:quick
"""

from __future__ import annotations

import math
import pathlib
import time

import jax
import ml_collections
import numpy as np

from experiments import grid, state_probe_answers
from experiments import language_model_task as lm
from experiments import state_probe_report as report
from experiments.state_probe_data import (
    EOS,
    ProbeSet,
    distances,
    holdout_cut,
    load_sentences,
    num_classes,
    probe_sets,
    stream,
    target_names,
)
from rnn_jax import logistic_probes, probe_baselines, probes
from rnn_jax.data.lm_corpus import LMCorpus
from rnn_jax.data.vocab import Vocabulary
from rnn_jax.metrics import perplexity
from rnn_jax.models import RNNLanguageModel
from rnn_jax.predicates import is_decimal
from rnn_jax.train import config_checks, seeds
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import remove_done_marker, write_text_atomic
from rnn_jax.train.restore import restore_model
from rnn_jax.train.rules import Rules, in_range, int_at_least, one_of

MODELS = ("trained", "untrained")
PROBE_KINDS = ("lda", "logistic")


def _distance_list(value: object) -> str | None:
    """Rule: distinct integers >= 0, comma-separated, increasing, 0 first: word t itself is
    Q12's lexical reference (`state_probe_report.abstraction`), and without it the report
    failed (KeyError 'word_k0') after the LM had trained and every probe was fitted."""
    # ASCII digits only (`is_decimal`): int() read '١' as 1, '1_0' as 10 and '+2' as 2
    entries = [v.strip() for v in str(value).split(",")]
    numbers = [int(v) for v in entries] if all(map(is_decimal, entries)) else []
    ok = numbers and numbers[0] == 0 and numbers == sorted(set(numbers))
    return (
        None
        if ok
        else "increasing distinct integers >= 0, comma-separated, starting at 0 (word t "
        "itself, the lexical reference of Q12's layer comparison; e.g. '0,1,2,4,8')"
    )


def _positive_list(value: object) -> str | None:
    """Rule: positive numbers, comma-separated."""
    try:
        numbers = [float(v) for v in str(value).split(",")]
    except ValueError:
        numbers = []
    ok = numbers and all(math.isfinite(v) and v > 0 for v in numbers)
    return None if ok else "positive numbers, comma-separated (e.g. '0.01,0.1,1')"


def _probe_kinds(value: object) -> str | None:
    """Rule: distinct probe kinds, comma-separated, `lda` among them (the only word probe)."""
    names = [v.strip() for v in str(value).split(",")]
    ok = "lda" in names and grid.distinct_names(PROBE_KINDS)(value) is None
    allowed = ", ".join(PROBE_KINDS)
    return None if ok else f"distinct names from {allowed}, comma-separated, lda among them"


RULES: Rules = {
    # language_model's rules without its synthetic-corpus keys (this corpus is UD's).
    **{k: v for k, v in lm.RULES.items() if not k.startswith("data.markov_")},
    "data.corpus": one_of("ud_en_ewt"),
    "data.min_freq": int_at_least(1),
    "data.train_sentences": int_at_least(0),  # LM training sentences; 0: all of UD train
    "model.locked_dropout": one_of(False, True),
    "model.compute_dtype": one_of("float32"),  # states are read in float32
    # The probes read the last checkpoint: the LM's reported perplexities must be its too
    # (with keep_best the runtime's final evaluation scores the best-validation checkpoint).
    "train.keep_best": one_of(False),
    "probe.train_sentences": int_at_least(1),
    "probe.test_split": one_of("valid", "test"),
    "probe.test_sentences": int_at_least(0),  # 0: the whole split
    "probe.num_words": int_at_least(1),
    "probe.distances": _distance_list,
    "probe.shrinkages": _positive_list,
    "probe.holdout_fraction": in_range(0.05, 0.5),
    "probe.kinds": _probe_kinds,
    "probe.l2_penalties": _positive_list,
    "probe.logistic_iterations": int_at_least(1),
}


def shrinkages(config: ml_collections.ConfigDict) -> list[float]:
    """`probe.shrinkages` as floats (the rule has checked them)."""
    return [float(v) for v in str(config.probe.shrinkages).split(",")]


def l2_penalties(config: ml_collections.ConfigDict) -> list[float]:
    """`probe.l2_penalties` as floats (the rule has checked them)."""
    return [float(v) for v in str(config.probe.l2_penalties).split(",")]


def probe_kinds(config: ml_collections.ConfigDict) -> list[str]:
    """`probe.kinds` as a list, in `PROBE_KINDS` order (the rule has checked them)."""
    asked = {v.strip() for v in str(config.probe.kinds).split(",")}
    return [kind for kind in PROBE_KINDS if kind in asked]


def probed_targets(kind: str, ks: list[int]) -> list[str]:
    """The targets probe `kind` reads: lda every one, logistic the tag targets and controls."""
    names = target_names(ks)
    return names if kind == "lda" else [t for t in names if not t.startswith("word_k")]


def ud_lm_corpus(sentences: dict[str, list[dict]], min_freq: int) -> LMCorpus:
    """Word streams of UD sentences (`<eos>` after each); vocabulary: the training tokens seen
    `min_freq` times or more, then `<unk>` for the rest."""
    streams = {split: stream(s)[0] for split, s in sentences.items()}
    vocab = Vocabulary.build(
        [streams["train"]], min_freq=min_freq, pad=None, unk="<unk>", bos=None, eos=EOS
    )
    return LMCorpus(vocab, {split: vocab.encode(f) for split, f in streams.items()})


class UDLanguageModelTask(lm.LanguageModelTask):
    """`experiments.language_model`'s task on UD English-EWT's word streams."""

    def __init__(self, config: ml_collections.ConfigDict, sentences: dict[str, list[dict]]):
        self.config = config
        self.corpus = ud_lm_corpus(sentences, config.data.min_freq)
        self.vocab_size = len(self.corpus.vocab.tokens)
        self._check_split_sizes()


def untrained_model(
    task: UDLanguageModelTask, config: ml_collections.ConfigDict, replica: int
) -> RNNLanguageModel:
    """Seed `replica`'s LM at initialisation (the weights its training started from)."""
    base = seeds.base_keys(config.seed, config.num_seeds)[replica]
    return task.init_model(seeds.init_key(base))


def _fit(
    kind: str,
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[int],
    holdout: np.ndarray,
    config: ml_collections.ConfigDict,
) -> list[probes.LinearProbe]:
    if kind == "lda":
        return probes.fit_lda_probes(features, labels, classes, shrinkages(config), holdout)
    return logistic_probes.fit_logistic_probes(
        features, labels, classes, l2_penalties(config), holdout, config.probe.logistic_iterations
    )


def probe_model(
    model: RNNLanguageModel, sets: dict[str, ProbeSet], config: ml_collections.ConfigDict
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per probe kind: (accuracy on probe-test, chosen regularisation), each `[layers + 1,
    probed targets]` (`probed_targets` order), and the seconds its fits took."""
    train, test = sets["train"], sets["test"]
    states = {n: probes.layer_states(model, s.tokens[None]) for n, s in sets.items()}
    cut = holdout_cut(len(train.positions), config)
    holdout = np.arange(len(train.positions)) >= cut  # a contiguous block: no shared context
    names, classes = target_names(distances(config)), num_classes(config)
    out = {}
    for kind in probe_kinds(config):
        columns = [names.index(t) for t in probed_targets(kind, distances(config))]
        start = time.perf_counter()
        accuracy, regularization = [], []
        for layer_train, layer_test in zip(states["train"], states["test"], strict=True):
            fitted = _fit(
                kind,
                layer_train[0, train.positions],
                train.labels[:, columns],
                [classes[j] for j in columns],
                holdout,
                config,
            )
            features = layer_test[0, test.positions]
            accuracy.append(
                [
                    p.accuracy(features, test.labels[:, j])
                    for p, j in zip(fitted, columns, strict=True)
                ]
            )
            regularization.append([p.regularization for p in fitted])
        out[kind] = (np.array(accuracy), np.array(regularization), time.perf_counter() - start)
    return out


def baselines(sets: dict[str, ProbeSet], names: list[str]) -> dict[str, dict[str, float]]:
    """{"majority": {target: accuracy}, "lexical": {tag target or control: accuracy}} on
    probe-test, each fitted on probe-train."""
    train, test = sets["train"], sets["test"]
    majority = {
        name: probe_baselines.majority_accuracy(train.labels[:, j], test.labels[:, j])
        for j, name in enumerate(names)
    }
    lexical = {
        name: probe_baselines.lexical_accuracy(
            train.words, train.labels[:, j], test.words, test.labels[:, j]
        )
        for j, name in enumerate(names)
        if not name.startswith("word_k")
    }
    return {"majority": majority, "lexical": lexical}


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Train the LM (W/lm, resumable), probe every seed's trained and untrained states, write
    results.json, state_probe.md and state_probe.png; returns `final`."""
    config_checks.validate(config, RULES)
    start = time.perf_counter()
    sentences = load_sentences(config)
    task = UDLanguageModelTask(config, sentences)
    if jax.process_index() == 0:
        remove_done_marker(workdir)  # before anything is redone
    lm_dir = workdir / "lm"
    print(f"state_probe: training the LM ({config.num_seeds} seeds) in {lm_dir}", flush=True)
    lm_final = train_and_evaluate(config, lm_dir, task)["final"]
    lm_wall = time.perf_counter() - start
    sets, words = probe_sets(config, sentences, task.corpus)
    ks = distances(config)
    names = target_names(ks)
    kinds = probe_kinds(config)
    n = config.num_seeds
    accuracy = {(k, m): [] for k in kinds for m in MODELS}
    regularization = {(k, m): [] for k in kinds for m in MODELS}
    probe_wall = dict.fromkeys(kinds, 0.0)
    for replica in range(n):
        models = {
            "trained": restore_model(config, lm_dir, task, best=False, replica=replica)[0],
            "untrained": untrained_model(task, config, replica),
        }
        for model_name, model in models.items():
            for kind, (acc, chosen, seconds) in probe_model(model, sets, config).items():
                accuracy[kind, model_name].append(acc)
                regularization[kind, model_name].append(chosen)
                probe_wall[kind] += seconds
        print(f"  probed seed {replica} ({time.perf_counter() - start:.0f}s)", flush=True)
    final: dict = {}
    for (kind, model_name), per_model in accuracy.items():
        per_seed = np.stack(per_model, axis=-1)  # [layers + 1, probed targets, seeds]
        targets = probed_targets(kind, ks)
        for layer in range(per_seed.shape[0]):
            final[f"{kind}-{model_name}-L{layer}"] = {
                name: [float(v) for v in per_seed[layer, j]] for j, name in enumerate(targets)
            }
    final.update(baselines(sets, names))
    extra = {
        "setup": {
            "targets": names,
            "probe_kinds": kinds,
            "probed_targets": {kind: probed_targets(kind, ks) for kind in kinds},
            "distances": ks,
            "num_layers": config.model.num_layers,
            "hidden_size": config.model.hidden_size,
            "embed_size": config.model.embed_size or config.model.hidden_size,
            "cell": config.model.cell,
            "num_seeds": n,
            "vocab_size": task.vocab_size,
            "lm_train_tokens": len(task.corpus.splits["train"]),
            "num_steps": config.train.num_steps,
            "epochs": config.train.num_steps
            * config.train.batch_size
            * config.data.bptt_length
            / len(task.corpus.splits["train"]),
            "num_words": config.probe.num_words,
            "frequent_words": list(words)[:20],
            "probe_train_sentences": config.probe.train_sentences,
            "probe_train_positions": len(sets["train"].positions),
            "probe_test_split": config.probe.test_split,
            "probe_test_positions": len(sets["test"].positions),
            "shrinkages": shrinkages(config),
            "l2_penalties": l2_penalties(config),
            "logistic_iterations": config.probe.logistic_iterations,
            "holdout_fraction": config.probe.holdout_fraction,
            "control_seeds": [config.seed, config.seed + 1],
        },
        "lm": {
            f"{split}_perplexity": [
                None if v is None else grid.finite_or_none(perplexity(v))
                for v in grid.final_per_seed(lm_final, f"{split}_loss", n)
            ]
            for split in ("valid", "test")
        },
        # "<probe>-<model>": [layers + 1][probed targets][seeds]; LDA's shrinkage, logistic's L2
        "regularization": {
            f"{kind}-{model_name}": np.stack(chosen, axis=-1).tolist()
            for (kind, model_name), chosen in regularization.items()
        },
        "timing": {
            "wall_s": time.perf_counter() - start,
            "lm_wall_s": lm_wall,
            "probe_fit_s": probe_wall,
        },
    }
    results = {"final": final, **extra}
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    if jax.process_index() == 0:
        write_text_atomic(workdir / "state_probe.md", report.markdown(results))
        report.plot(results, workdir)
    grid.write_results(workdir, final, extra)
    return final


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 1 and 12 from a finished run's results.json."""
    return state_probe_answers.answers(grid.read_results(workdir))


if __name__ == "__main__":
    grid.main(run, RULES)
