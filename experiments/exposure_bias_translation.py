"""The translation part of `exposure_bias`: Multi30k en->de BLEU by training regime (Q8, Q16).

Each regime (teacher forcing, scheduled sampling with one of the decaying schedules of
`experiments.exposure_bias`, free running) trains the attention encoder-decoder
`rnn_jax.models.seq2seq.Seq2Seq` through the runtime (`train_and_evaluate`, `num_seeds` vmapped
replicas) on Multi30k's tokenised, lower-cased files (`tok/*.lc.norm.tok.{en,de}`). The
scheduled-sampling input is the model's argmax at the previous step (Bengio et al. 2015 and
the library's `Seq2Seq`). The final evaluation decodes the test set (test2016) greedily and
with beam search inside the jitted, vmapped evaluation step and sums BLEU statistics
(`rnn_jax.bleu.bleu_statistics`), so every seed gets its own corpus BLEU; the
copy-the-source baseline is scored with sacrebleu on the same sentences.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import grid, run_report, significance
from rnn_jax import bleu, decoding
from rnn_jax.data.batching import BatchIterator, pad_batch, repeat_epochs
from rnn_jax.data.pipeline import check_training_batch_size
from rnn_jax.data.readers import read_parallel
from rnn_jax.data.root import default_data_root
from rnn_jax.data.vocab import Vocabulary
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.scheduled_sampling import teacher_forcing_schedule
from rnn_jax.train import config_checks
from rnn_jax.train import metrics as run_metrics
from rnn_jax.train.config import ConfigError
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.restore import restore_model
from rnn_jax.train.rules import boolean, in_range, non_negative, one_of, positive, probability
from rnn_jax.train.task import Task

CORPUS = "multi30k"
FILES = {"train": "train", "valid": "val", "test": "test"}
MAX_ORDER = 4
# The checkpoint whose test BLEU is reported: the last, or the best evaluation by one of these.
SELECT_BY = ("last", "valid_tf_nll", "valid_greedy_bleu", "valid_beam_bleu")
RULES = {
    "translation.cell": one_of("elman", "lstm", "gru"),
    # Not 'dot': s^T h needs the decoder state as wide as the encoder states, and this
    # experiment's encoder is always bidirectional (2 x hidden_size). The rule accepted it and
    # the model failed to build only when the first translation point started (after every
    # language-model point had trained), suggesting a Seq2Seq option no config key sets.
    "translation.attention": one_of("additive", "general"),
    # a rate of 1 zeroes every unit it reaches (flax's Dropout), so the model trained blind
    "translation.dropout": probability,
    "translation.valid_bleu": boolean,  # a `=None` would read as False
    "translation.length_penalty_alpha": in_range(0.0, 10.0),
    # 0 = all pairs; a negative value would slice pairs off the end (kept[:-1]) unnoticed
    "translation.max_train_pairs": non_negative,
    "translation.max_eval_pairs": non_negative,
    "translation.select_by": one_of(*SELECT_BY),
    **{
        f"translation.{key}": positive
        for key in (
            "max_length min_freq time_multiple embed_size hidden_size num_layers num_steps "
            "batch_size learning_rate log_every eval_every checkpoint_every eval_batch_size "
            "beam_size max_decode_length"
        ).split()
    },
}
DECODERS = ("greedy", "beam")


def split_files(root: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(source, target) files of a split: Multi30k's tokenised lower-cased en and de."""
    tok, name = root / CORPUS / "tok", FILES[split]
    return tok / f"{name}.lc.norm.tok.en", tok / f"{name}.lc.norm.tok.de"


def read_pairs(root: pathlib.Path, split: str, max_length: int, limit: int) -> list[dict]:
    """The first `limit` (0 = all) pairs of a split with both sides <= `max_length` tokens.

    Raises:
      ValueError: for a negative `limit`.
    """
    if limit < 0:
        raise ValueError(f"limit={limit}: must be >= 0 (0 = every pair that fits)")
    pairs = read_parallel(*split_files(root, split))
    kept = [p for p in pairs if len(p["source"]) <= max_length and len(p["target"]) <= max_length]
    return kept[:limit] if limit else kept


def read_splits(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
    """The train/valid/test pairs that `translation.*` keeps (`read_pairs` of each split).

    Raises:
      ConfigError: naming `translation.max_length` when a split keeps no pair, and
        `translation.batch_size` when the training pairs fill no batch (the training batches
        drop the remainder; `pipeline.check_training_batch_size`, naming the cuts that set
        the split's size): before anything trains, not an IndexError or a library error
        from inside the point.
    """
    t = config.translation
    root = default_data_root(config.data.root or None)
    limits = {"train": t.max_train_pairs, "valid": t.max_eval_pairs, "test": t.max_eval_pairs}
    pairs = {split: read_pairs(root, split, t.max_length, limits[split]) for split in FILES}
    for split, kept in pairs.items():
        if not kept:
            raise ConfigError(
                f"translation.max_length={t.max_length}: no {split} pair of {CORPUS} has both "
                "sides that short"
            )
    check_training_batch_size(
        pairs["train"],
        t.batch_size,
        dataset=CORPUS,
        key="translation.batch_size",
        unit="pairs",
        cut_by=f"translation.max_length={t.max_length}, "
        f"translation.max_train_pairs={t.max_train_pairs}",
    )
    return pairs


def point_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The experiment's config with the runtime's train/optimizer keys set from
    `translation.*` (what the point's own config.json records)."""
    t = config.translation
    point = config.copy_and_resolve_references()
    with point.unlocked():
        point.train.num_steps = t.num_steps
        point.train.batch_size = t.batch_size
        point.train.log_every = t.log_every
        point.train.eval_every = t.eval_every
        point.train.checkpoint_every = t.checkpoint_every
        # "last": the best is still tracked (and logged) by valid_tf_nll, not kept.
        point.train.keep_best = t.select_by != "last"
        point.train.best_metric = "valid_tf_nll" if t.select_by == "last" else t.select_by
        point.train.best_mode = "max" if t.select_by.endswith("_bleu") else "min"
        point.optimizer.learning_rate = t.learning_rate
    return point


def check_selection(config: ml_collections.ConfigDict) -> None:
    """Selecting by a validation BLEU needs val decoded at every evaluation.

    Raises:
      ConfigError: naming both keys, before anything trains.
    """
    t = config.translation
    if t.select_by.endswith("_bleu") and not t.valid_bleu:
        raise ConfigError(
            f"translation.select_by={t.select_by!r} needs translation.valid_bleu=True (val is "
            "decoded at every evaluation only then)"
        )


class StepStream:
    """Training batches of a `BatchIterator` with the global step attached (`batch["step"]`,
    for the teacher-forcing schedule ε_i inside the train step); resumable like the iterator."""

    def __init__(self, batches: BatchIterator) -> None:
        self._batches, self._step = batches, 0
        self._endless = repeat_epochs(batches)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        batch = next(self._endless)
        self._step += 1
        return {**batch, "step": np.full(len(batch["source"]), self._step - 1, np.int32)}

    def state_dict(self) -> dict:
        return {**self._batches.state_dict(), "step": self._step}

    def load_state_dict(self, state: dict) -> None:
        self._batches.load_state_dict(state)
        self._step = int(state["step"])
        self._endless = repeat_epochs(self._batches)


class TranslationTask(Task):
    """Batches: `source`, `target_inputs` (BOS first), `targets` (EOS last), `[batch, time]`
    padded to one width; `weight [batch]` (0 for the rows that fill the last eval batch);
    test batches also carry `references [batch, time]` (out-of-vocabulary words get ids >=
    the vocabulary size, so the model's `<unk>` never matches them)."""

    eval_splits = ("valid",)
    final_splits = ("valid", "test")

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        regime: str,
        schedule: tuple[str, dict],
        pairs: dict[str, list[dict]] | None = None,
    ) -> None:
        self.config, self.regime = config, regime
        t = config.translation
        # `pairs`: `read_splits(config)` when the caller has read them already (`points`)
        self.pairs = read_splits(config) if pairs is None else pairs
        train = self.pairs["train"]
        self.source_vocab = Vocabulary.build([p["source"] for p in train], min_freq=t.min_freq)
        self.target_vocab = Vocabulary.build([p["target"] for p in train], min_freq=t.min_freq)
        self.schedule_name, self.schedule_options = schedule
        self.teacher_forcing = teacher_forcing_schedule(schedule[0], **schedule[1])
        scored = {"test"} | ({"valid"} if t.valid_bleu else set())
        self.examples = {
            split: [self._encode(p, split in scored) for p in pairs]
            for split, pairs in self.pairs.items()
        }

    def _encode(self, pair: dict, with_reference: bool) -> dict:
        vocab = self.target_vocab
        ids = vocab.encode(pair["target"])
        example = {
            "source": self.source_vocab.encode(pair["source"]),
            "target_inputs": np.concatenate([[vocab.bos_id], ids]).astype(np.int32),
            "targets": np.concatenate([ids, [vocab.eos_id]]).astype(np.int32),
            "weight": np.float32(1.0),
        }
        if with_reference:
            unseen: dict[str, int] = {}
            example["references"] = np.array(
                [
                    i if w in vocab else unseen.setdefault(w, len(vocab) + len(unseen))
                    for w, i in zip(pair["target"], ids, strict=True)
                ],
                np.int32,
            )
        return example

    def _collate(self, examples: list[dict]) -> dict:
        fields = ("source", "targets") + (("references",) if "references" in examples[0] else ())
        return pad_batch(examples, 0, fields, self.config.translation.time_multiple)

    # ---- data -----------------------------------------------------------------------------------
    def train_data(self) -> StepStream:
        batches = BatchIterator(
            self.examples["train"],
            self.config.translation.batch_size,
            seed=self.config.seed,
            drop_remainder=True,
            length_key="targets",
            collate=self._collate,
        )
        return StepStream(batches)

    def eval_data(self, split: str) -> list[dict]:
        """Fixed-shape batches (one compile): the last one is filled with weight-0 rows."""
        examples, size = self.examples[split], self.eval_batch_size(split)
        filler = {**examples[0], "weight": np.float32(0.0)}
        padded = examples + [filler] * (-len(examples) % size)
        return [self._collate(padded[i : i + size]) for i in range(0, len(padded), size)]

    def eval_batch_size(self, split: str) -> int:
        return self.config.translation.eval_batch_size

    def tokens_in(self, batch: dict) -> int:
        return int(batch["targets_mask"].sum())

    # ---- model and training ---------------------------------------------------------------------
    def init_model(self, rng: jax.Array) -> Seq2Seq:
        t = self.config.translation
        return Seq2Seq(
            len(self.source_vocab),
            len(self.target_vocab),
            embed_size=t.embed_size,
            hidden_size=t.hidden_size,
            num_layers=t.num_layers,
            cell=t.cell,
            bidirectional_encoder=True,
            attention=t.attention,
            dropout_rate=t.dropout,
            rngs=nnx.Rngs(params=rng),
        )

    def _nll(self, model: Seq2Seq, batch: dict, **feeding: object) -> jax.Array:
        """Summed token NLL per sentence `[batch]`."""
        return model.loss(
            batch["source"],
            batch["source_lengths"],
            batch["target_inputs"],
            batch["targets"],
            batch["targets_lengths"],
            **feeding,
        )

    def loss_fn(self, model: Seq2Seq, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        epsilon = self.teacher_forcing(batch["step"][0])
        if self.regime == "teacher_forcing":
            feeding = {}  # the plain teacher-forced pass
        elif self.regime == "free_running":
            feeding = {"teacher_forcing_prob": 0.0}
        else:
            feeding = {"teacher_forcing_prob": epsilon}
        nll = self._nll(model, batch, rng=rng, **feeding)
        total, tokens = jnp.sum(nll), jnp.sum(batch["targets_mask"])
        # Logged too as (summed NLL, tokens): the runtime logs the ratio of their sums, the
        # NLL per token over the logging window; the loss's window mean averages per-batch
        # ratios, weighing a batch of short pairs like one of long (length-bucketed batches).
        logged = {"teacher_forcing_prob": epsilon, run_report.TRAIN_NLL_PER_TOKEN: (total, tokens)}
        return total / tokens, ((), logged)

    # ---- evaluation -----------------------------------------------------------------------------
    def eval_step(self, model: Seq2Seq, batch: dict, carry: tuple) -> tuple:
        weight = batch["weight"]
        sums = {
            "nll": jnp.sum(weight * self._nll(model, batch)),
            "tokens": jnp.sum(weight * batch["targets_lengths"]),
        }
        if "references" in batch:  # test batches only (a second trace): decode and score
            sums.update(self._bleu_sums(model, batch))
        return (), sums

    def decode(self, model: Seq2Seq, batch: dict) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Each of `DECODERS`' output for the batch: (tokens `[batch, time]`, lengths `[batch]`
        without the EOS); beam search's best hypothesis."""
        t, vocab = self.config.translation, self.target_vocab
        state = model.init_decode_state(batch["source"], batch["source_lengths"])
        ids = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, max_length=t.max_decode_length)
        greedy, greedy_lengths, _ = decoding.greedy_decode(model.step, state, **ids)
        beam, beam_lengths, _ = decoding.beam_search(
            model.step, state, beam_size=t.beam_size, alpha=t.length_penalty_alpha, **ids
        )
        out = {}
        for name, tokens, lengths in (
            ("greedy", greedy, greedy_lengths),
            ("beam", beam[:, 0], beam_lengths[:, 0]),
        ):
            last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[:, None], 1)[:, 0]
            out[name] = (tokens, lengths - (last == vocab.eos_id))  # the EOS is not output
        return out

    def _bleu_sums(self, model: Seq2Seq, batch: dict) -> dict:
        weight = batch["weight"]
        sums = {"reference_length": jnp.sum(weight * batch["references_lengths"])}
        for name, (tokens, lengths) in self.decode(model, batch).items():
            matches, totals = bleu.bleu_statistics(
                tokens, lengths, batch["references"], batch["references_lengths"], MAX_ORDER
            )
            sums[f"{name}_length"] = jnp.sum(weight * lengths)
            for n in range(MAX_ORDER):
                sums[f"{name}_matches_{n + 1}"] = jnp.sum(weight * matches[:, n])
                sums[f"{name}_totals_{n + 1}"] = jnp.sum(weight * totals[:, n])
        return sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {"tf_nll": sums["nll"] / sums["tokens"]}
        for name in DECODERS:
            if f"{name}_length" not in sums:
                continue
            out[f"{name}_bleu"] = bleu.bleu_from_statistics(
                [sums[f"{name}_matches_{n}"] for n in range(1, MAX_ORDER + 1)],
                [sums[f"{name}_totals_{n}"] for n in range(1, MAX_ORDER + 1)],
                sums[f"{name}_length"],
                sums["reference_length"],
            )
            out[f"{name}_length_ratio"] = sums[f"{name}_length"] / sums["reference_length"]
        return out

    def copy_source_bleu(self) -> float:
        """BLEU of the source sentence taken as its own translation (names, numbers and
        cognates overlap), on the test sentences the models are scored on."""
        pairs = self.pairs["test"]
        return bleu.corpus_bleu(
            [" ".join(p["source"]) for p in pairs], [" ".join(p["target"]) for p in pairs], "none"
        )


def points(
    config: ml_collections.ConfigDict, schedules: list[tuple[str, tuple[str, dict]]]
) -> list[tuple[str, Callable[[pathlib.Path], dict]]]:
    """The grid points `multi30k-<regime>`, one per (regime, schedule) of `check_points`
    (none when it gave none: multi30k is not in `grid.corpora`). The pairs are read
    (`read_splits`) here, before any point trains, so a setting that keeps too few pairs
    fails the run at once; every point trains on these pairs (the corpus is read once per
    run)."""
    if not schedules:
        return []
    pairs = read_splits(config)
    return [
        (f"{CORPUS}-{regime}", functools.partial(run_point, config, regime, schedule, pairs))
        for regime, schedule in schedules
    ]


def check_points(
    config: ml_collections.ConfigDict,
    regimes: tuple[str, ...],
    schedule_options: Callable[[str, int, float], tuple[str, dict]],
) -> list[tuple[str, tuple[str, dict]]]:
    """(regime, schedule) of each translation point (what `points` builds them from), after
    every check that needs the config alone (no pairs read, nothing trained): the runtime
    config of the points (`point_config`) is validated, since the command line only checked
    the experiment's own `train.*` (`train.grad_accum_steps` must divide
    `translation.num_steps`, not only `train.num_steps`), and every
    `schedule_options(regime, num_steps, final)` is called, so a schedule it cannot build
    fails the run at once.

    Raises:
      ConfigError: naming the key.
    """
    check_selection(config)
    try:  # the runtime's cross-key checks, on the train.* that translation.* sets
        config_checks.validate(point_config(config))
    except ValueError as error:
        raise ConfigError(
            f"the translation points' train.* (train.num_steps = translation.num_steps="
            f"{config.translation.num_steps}, train.batch_size = translation.batch_size, ...): "
            + " ".join(str(error).split())  # one line, as the command line reports it
        ) from None
    final = config.schedule_sampling.final_teacher_forcing
    return [
        (regime, schedule_options(regime, config.translation.num_steps, final))
        for regime in grid.split_axis(config, "translation_regimes", regimes)
    ]


def run_point(
    config: ml_collections.ConfigDict,
    regime: str,
    schedule: tuple[str, dict],
    pairs: dict[str, list[dict]],
    point_dir: pathlib.Path,
) -> dict:
    """Train one regime (`schedule` = (name, options) of its ε_i) on `pairs` (`read_splits`
    of `config`) and summarise it: per-seed test BLEU (greedy, beam), valid/test
    teacher-forced NLL, the copy baseline, sizes."""
    point = point_config(config)
    task = TranslationTask(point, regime, schedule, pairs)
    results = train_and_evaluate(point, point_dir, task)
    translations = write_test_translations(point, point_dir, task)
    final = results["final"]
    per_seed = final.get("per_seed", {})
    metrics_ = {
        name: [grid.finite_or_none(v) for v in per_seed.get(name, [final[name]])]
        for name in final
        if name.startswith(("valid_", "test_")) and not name.endswith("_std")
    }
    return {
        "corpus": CORPUS,
        "regime": regime,
        "schedule": {"name": task.schedule_name, **task.schedule_options},
        "metrics": metrics_,
        "selected": {
            "by": config.translation.select_by,
            "step": final["step"] if config.translation.select_by == "last" else final["best_step"],
            "of": final["step"],
        },
        "valid_curve": valid_curve(point_dir),
        "translations": translations,
        "copy_source_bleu": task.copy_source_bleu(),
        "pairs": {split: len(pairs) for split, pairs in task.pairs.items()},
        "vocab_size": {"source": len(task.source_vocab), "target": len(task.target_vocab)},
        "timing": results["timing"],
    }


def valid_curve(point_dir: pathlib.Path) -> list[dict]:
    """Every evaluation's validation metrics from the point's metrics.jsonl, mean over seeds:
    `[{"step": s, "tf_nll": ..., "greedy_bleu": ..., "beam_bleu": ...}]` in step order (the
    BLEU keys only with `translation.valid_bleu`; a resumed run's replayed steps once)."""
    rows: dict[int, dict] = {}
    for name in ("tf_nll", "greedy_bleu", "beam_bleu"):
        for step, value in run_metrics.metric_series(point_dir / "metrics.jsonl", f"valid_{name}"):
            rows.setdefault(step, {"step": step})[name] = grid.finite_or_none(
                grid.nan_mean(value if isinstance(value, list) else [value])
            )
    return [rows[step] for step in sorted(rows)]


REFERENCES_FILE = "test_references.txt"


def translations_file(decoder: str, replica: int) -> str:
    """A point's test outputs of one decoder and seed replica (one sentence a line)."""
    return f"test_{decoder}_seed{replica}.txt"


def write_test_translations(
    config: ml_collections.ConfigDict, point_dir: pathlib.Path, task: TranslationTask
) -> dict:
    """Decode the test sentences with the scored checkpoint (the best with
    `train.keep_best`, else the last) of every seed replica and write them, tokenised, one a
    line, with the references beside them: for paired significance tests against another
    system's output on the same sentences (`rnn_jax.bleu.paired_bleu_significance`).
    Their sacrebleu BLEU is the run's in-graph test BLEU (a test checks it).

    Returns:
      {"references": file name, "greedy"/"beam": [file name per replica]}.
    """
    decode = nnx.jit(task.decode)
    tokens = task.target_vocab.tokens
    # Every process decodes (the model's arrays may span processes); one writes, as the
    # runtime and experiments.grid do.
    primary = jax.process_index() == 0
    written: dict = {"references": REFERENCES_FILE}
    for replica in range(config.num_seeds):
        model, _ = restore_model(
            config, point_dir, task, best=config.train.keep_best, replica=replica
        )
        lines: dict[str, list[str]] = {name: [] for name in DECODERS}
        for batch in task.eval_data("test"):
            outputs = jax.device_get(decode(model, batch))
            real = np.asarray(batch["weight"]) > 0
            for name, (ids, lengths) in outputs.items():
                lines[name] += [
                    " ".join(tokens[i] for i in row[:length])
                    for row, length, keep in zip(ids, lengths, real, strict=True)
                    if keep
                ]
        for name, sentences in lines.items():
            path = point_dir / translations_file(name, replica)
            if primary:
                significance.write_lines(path, sentences)
            written.setdefault(name, []).append(path.name)
    if primary:
        references = [" ".join(p["target"]) for p in task.pairs["test"]]
        significance.write_lines(point_dir / REFERENCES_FILE, references)
    return written
