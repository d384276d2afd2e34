"""A phrase-based SMT baseline on exactly the NMT's Multi30k data (seed Q16).

    python -m experiments.smt_baseline --workdir=W \
        --config=experiments/configs/smt_baseline.py:<smoke|quick|full>

Seed question 16 says early attention NMT "significantly outperformed phrase-based SMT";
`experiments.exposure_bias` measures the NMT side. This experiment builds the other side, a
small Moses-like system (Koehn, Och & Marcu 2003), on the same pairs `read_pairs` gives the
NMT (`experiments.exposure_bias_translation`) and scores it with the same sacrebleu corpus
BLEU (tokenize='none') against the same references, the real target words (the NMT's
references keep rare words too: they get ids its `<unk>` never matches):

1. word alignment: IBM Model 1 then Model 2 (nltk's, which runs Model 1 for twice Model 2's
   iterations first, with its EM counts mended: `experiments.ibm_models`), once per direction;
2. symmetrisation: grow-diag-final-and (`experiments.smt_phrases.grow_diag_final_and`, see
   there);
3. phrase pairs up to `smt.max_phrase_length` words per side, consistent with the alignment
   (`smt_phrases.consistent_phrase_pairs`; nltk's `phrase_extraction` returns inconsistent
   ones), scored by relative frequency in both directions, and their lexical weights lex(e|f)
   and lex(f|e) (Koehn et al. 2003, section 3.3: how well the words inside a phrase pair
   translate each other, from word translation probabilities of the same alignments); the
   best `smt.max_translations` per source phrase go into an `nltk.translate.PhraseTable` with
   the weighted log-linear score of the four;
4. a target n-gram LM on the same training sentences (`smt.lm_smoothing`, `smt.lm_order`):
   interpolated Witten-Bell (`nltk.lm.WittenBellInterpolated`), or interpolated modified
   Kneser-Ney as KenLM estimates it (`experiments.kneser_ney`, as Moses recommends), its
   scores memoised (nltk.lm recomputes every score from counts;
   `experiments.smt_language_model`);
5. stack decoding with nltk's scoring (`nltk.translate.StackDecoder`: histogram pruning;
   future costs from the target phrases, as Moses estimates them, where nltk's scored the
   source phrase with the target LM) searched as Moses searches
   (`experiments.smt_decoder.DistortionLimitedDecoder`): a distortion limit with Moses's
   reordering constraint (no dead ends), the LM's sentence end, hypothesis recombination, and
   stacks ranked once rather than re-sorted on every push. At the default stack of 100 the
   search is no longer what limits BLEU (nltk's own search at stack 10 lost 4-5 BLEU; see
   experiments/configs/smt_baseline.py). A source word the phrase table does not have passes
   through unchanged (Moses's behaviour for unknown words). Beside the distance penalty, a
   lexicalised reordering model (Koehn et al. 2005; Moses's msd-bidirectional-fe,
   `smt.reordering`): p(monotone | swap | discontinuous | phrase pair) for the orientation
   after the previous phrase and before the next one, counted at extraction
   (`training_orientations`) and scored in the search (`decoding_orientation`; both in
   `experiments.smt_reordering`);
6. the ten log-linear weights (FEATURES: log φ and log lex both ways, the LM, word count,
   source words jumped, reordering both ways, phrase count; `experiments.smt_system`) tuned by
   MERT on val (`experiments.mert`, Och 2003) from the config's, unless `smt.mert_iterations=0`.

Writes `W/results.json` (`final`: BLEU, length ratio, copy-the-source BLEU; sizes; timing per
stage; `tuning`: MERT's decodes and weights; the first translations) and the table
`W/smt_baseline.md` (`experiments.smt_baseline_report`, which also writes the answer), both
atomically. This module is the experiment: training the system (`train_system`, with the
corpus's phrase counts from `extract_phrases`), its data, MERT and the run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence

import ml_collections
import numpy as np

from experiments import grid, mert, significance
from experiments import smt_baseline_report as report
from experiments.exposure_bias_translation import CORPUS, read_pairs, split_files
from experiments.kneser_ney import KneserNeyLM, padding_symbols
from experiments.smt_language_model import DecoderLanguageModel, reference_perplexity, witten_bell
from experiments.smt_phrases import (
    Alignment,
    PhraseKey,
    consistent_phrase_pairs,
    lexical_translation,
    lexical_weight,
    phrase_features,
    word_alignments,
)
from experiments.smt_reordering import ORIENTATIONS, ReorderingModel, training_orientations
from experiments.smt_system import FEATURES, System, config_weights
from rnn_jax import bleu
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.data.readers import read_parallel
from rnn_jax.data.root import default_data_root
from rnn_jax.files import RESULTS_FILE
from rnn_jax.train import config as cfg
from rnn_jax.train import metrics as run_metrics
from rnn_jax.train.rules import Rules, in_range, int_at_least, non_negative, one_of

# Nothing here is trained by the runtime: its training keys are neither required nor checked.
TRAINS = False
RULES: Rules = {
    "smt.max_length": int_at_least(1),
    "smt.max_train_pairs": int_at_least(0),
    "smt.max_eval_pairs": int_at_least(0),
    "smt.eval_split": one_of("valid", "test"),
    "smt.ibm2_iterations": int_at_least(1),
    "smt.max_phrase_length": int_at_least(1),
    "smt.max_translations": int_at_least(1),
    "smt.lm_order": int_at_least(1),
    "smt.lm_unk_cutoff": int_at_least(1),
    "smt.lm_smoothing": one_of("witten-bell", "modified-kneser-ney"),
    "smt.weight_forward": non_negative,
    "smt.weight_backward": non_negative,
    "smt.weight_lexical_forward": non_negative,
    "smt.weight_lexical_backward": non_negative,
    "smt.weight_lm": non_negative,
    "smt.word_penalty": in_range(-10.0, 10.0),
    "smt.distortion_factor": in_range(0.0, 1.0),
    "smt.distortion_limit": int_at_least(0),
    "smt.stack_size": int_at_least(1),
    "smt.phrase_penalty": in_range(-10.0, 10.0),
    "smt.reordering": one_of("msd-bidirectional-fe", "distance"),
    "smt.weight_reordering_backward": non_negative,
    "smt.weight_reordering_forward": non_negative,
    "smt.mert_iterations": int_at_least(0),
    "smt.tune_pairs": int_at_least(0),
    "smt.nbest": int_at_least(1),
    "smt.mert_restarts": int_at_least(0),
    "smt.mert_seed": int_at_least(0),
    "smt.tune_stack_size": int_at_least(0),
}
SHOWN_TRANSLATIONS = 20  # kept in results.json to read


@dataclasses.dataclass
class ExtractedPhrases:
    """What phrase extraction counts, per (source phrase, target phrase): `counts`, how many
    sentence pairs' extractions gave it; `lexical`, its (log lex(e|f), log lex(f|e)); and
    `orientations`, its `training_orientations` counts ([backward, forward] x ORIENTATIONS)."""

    counts: collections.Counter
    lexical: dict[PhraseKey, tuple[float, float]]
    orientations: dict[PhraseKey, np.ndarray]


def extract_phrases(
    pairs: Sequence[dict], alignments: Sequence[Alignment], max_phrase_length: int
) -> ExtractedPhrases:
    """Every `consistent_phrase_pairs` pair of every sentence pair, counted; its lexical
    weights under `lexical_translation`'s tables are each the largest over the pair's
    occurrences (the alignment inside it may differ from one to the next; Koehn et al. 2003
    take the best)."""
    e_given_f, f_given_e = lexical_translation(pairs, alignments)
    counts: collections.Counter = collections.Counter()
    lexical: dict[PhraseKey, tuple[float, float]] = {}
    orientations: dict[PhraseKey, np.ndarray] = collections.defaultdict(
        lambda: np.zeros((2, len(ORIENTATIONS)))
    )
    for pair, alignment in zip(pairs, alignments, strict=True):
        source, target = pair["source"], pair["target"]
        for spans in consistent_phrase_pairs(
            len(source), len(target), alignment, max_phrase_length
        ):
            s0, s1, t0, t1 = spans
            key = (tuple(source[s0:s1]), tuple(target[t0:t1]))
            counts[key] += 1
            backward, forward = training_orientations(alignment, len(source), len(target), spans)
            orientations[key][0, backward] += 1
            orientations[key][1, forward] += 1
            inside = [(i - s0, j - t0) for i, j in alignment if s0 <= i < s1 and t0 <= j < t1]
            weights = (
                lexical_weight(key[1], key[0], inside, e_given_f),
                lexical_weight(key[0], key[1], [(j, i) for i, j in inside], f_given_e),
            )
            seen = lexical.get(key, weights)
            lexical[key] = (max(seen[0], weights[0]), max(seen[1], weights[1]))
    return ExtractedPhrases(counts, lexical, dict(orientations))


def train_system(pairs: Sequence[dict], smt: ml_collections.ConfigDict) -> tuple[System, dict]:
    """Align, extract, score and build the LM from `pairs`; -> (system, seconds per stage)."""
    timing = {}
    start = time.perf_counter()
    alignments = word_alignments(pairs, smt.ibm2_iterations)
    timing["align_s"] = time.perf_counter() - start
    start = time.perf_counter()
    extracted = extract_phrases(pairs, alignments, smt.max_phrase_length)
    counts = extracted.counts
    features = phrase_features(counts, extracted.lexical)
    reordering = None
    if smt.reordering == "msd-bidirectional-fe":
        reordering = ReorderingModel.estimate(extracted.orientations)
    timing["phrases_s"] = time.perf_counter() - start
    start = time.perf_counter()
    targets = [p["target"] for p in pairs]
    if smt.lm_smoothing == "modified-kneser-ney":
        model = KneserNeyLM.estimate(targets, smt.lm_order, smt.lm_unk_cutoff)
    else:
        model = witten_bell(targets, smt.lm_order, smt.lm_unk_cutoff)
    timing["lm_s"] = time.perf_counter() - start
    sizes = {
        "phrase_pairs": len(counts),
        "source_phrases": len({source for source, _ in counts}),
        "alignment_points": sum(map(len, alignments)),
        "lm_vocabulary": len(model.vocab),
    }
    system = System(features, DecoderLanguageModel(model, smt.weight_lm), smt, sizes, reordering)
    system.set_weights(config_weights(smt))
    return system, timing


def load_pairs(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
    """The training pairs, the scored split and (with MERT) the tuning pairs, as `read_pairs`
    gives them to the NMT.

    Raises:
      ConfigError: naming `smt.max_length` when a split keeps no pair (the aligner, MERT or
        sacrebleu would fail on it later, with errors that name nothing).
      DataFormatError: naming file:line of a kept training pair whose target holds `<s>` or
        `</s>` (`refuse_padding_symbols`).
    """
    smt = config.smt
    root = default_data_root(config.data.root or None)
    if not (root / CORPUS / "tok").is_dir():
        raise cfg.ConfigError(
            f"data.root={config.data.root!r}: no {root / CORPUS / 'tok'} (Multi30k's tokenised "
            "files; set RNN_JAX_DATA or data.root to the shared data directory)"
        )
    if smt.mert_iterations and smt.eval_split == "valid":
        raise cfg.ConfigError(
            f"smt.eval_split='valid' with smt.mert_iterations={smt.mert_iterations}: MERT tunes "
            "on val, so val cannot also be the scored split (score test, or set "
            "smt.mert_iterations=0)"
        )
    pairs = {
        "train": read_pairs(root, "train", smt.max_length, smt.max_train_pairs),
        smt.eval_split: read_pairs(root, smt.eval_split, smt.max_length, smt.max_eval_pairs),
    }
    if smt.mert_iterations:
        pairs["tune"] = read_pairs(root, "valid", smt.max_length, smt.tune_pairs)
    for name, kept in pairs.items():
        if not kept:  # the limits keep the first pairs that fit (0 = all): only length empties
            split = "valid (tuning)" if name == "tune" else name
            raise cfg.ConfigError(
                f"smt.max_length={smt.max_length}: no {split} pair of {CORPUS} has both sides "
                "that short"
            )
    refuse_padding_symbols(root, pairs["train"])
    return pairs


def refuse_padding_symbols(root: pathlib.Path, train: Sequence[dict]) -> None:
    """Refuse training targets that hold the LM's padding symbols `<s>` or `</s>` as words
    (`kneser_ney.padding_symbols`): Kneser-Ney refuses them (as KenLM's lmplz does), after
    minutes of alignment, naming only a sentence's index among the kept pairs, and nltk's
    Witten-Bell would count them as its own padding. Checked before anything runs.

    Raises:
      DataFormatError: naming the target file and line of the first kept pair holding one
        (the first line pair of the split equal to it: an equal pair is kept or dropped
        alike, and the kept pairs are the first that fit).
    """
    bad = next((pair for pair in train if padding_symbols(pair["target"])), None)
    if bad is None:
        return
    source_file, target_file = split_files(root, "train")
    for number, pair in enumerate(read_parallel(source_file, target_file), 1):
        if pair == bad:
            raise DataFormatError(
                f"{target_file}:{number}: holds {', '.join(padding_symbols(pair['target']))}, "
                "the language model's sentence padding, as a word (the LM adds one <s> and "
                "one </s> to each sentence itself)"
            )


def tune_weights(system: System, pairs: Sequence[dict], smt: ml_collections.ConfigDict) -> dict:
    """MERT (`experiments.mert.tune`) of `system`'s weights on `pairs` (the first val pairs),
    starting from the config's; sets the tuned weights and returns what to report."""
    references = [" ".join(p["target"]) for p in pairs]
    empty = ("", np.zeros(len(FEATURES)))  # a sentence the search could not complete

    def decode(weights: np.ndarray) -> list[list[tuple[str, np.ndarray]]]:
        system.set_weights(weights)
        system.decoder.stack_size = smt.tune_stack_size or smt.stack_size
        return [system.nbest(p["source"], smt.nbest) or [empty] for p in pairs]

    start = time.perf_counter()
    initial = config_weights(smt)
    weights, history = mert.tune(
        decode,
        references,
        initial,
        iterations=smt.mert_iterations,
        restarts=smt.mert_restarts,
        seed=smt.mert_seed,
        log=lambda line: print(line, flush=True),
    )
    system.set_weights(weights)  # and the scoring search's stack size
    return {
        "split": "valid",
        "pairs": len(pairs),
        "features": list(FEATURES),
        "initial_weights": initial.tolist(),
        "weights": weights.tolist(),
        "initial_bleu": history[0]["decoded_bleu"],
        "tuned_bleu": max(record["decoded_bleu"] for record in history),
        "history": history,
        "time_s": time.perf_counter() - start,
    }


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Train on the training pairs, translate the scored split, write the results."""
    smt, workdir = config.smt, pathlib.Path(workdir)
    begin = time.perf_counter()
    pairs = load_pairs(config)
    run_metrics.remove_done_marker(workdir)  # before anything is redone
    train, scored = pairs["train"], pairs[smt.eval_split]
    system, timing = train_system(train, smt)
    print(f"trained on {len(train)} pairs: {system.sizes} {timing}", flush=True)
    tuning = tune_weights(system, pairs["tune"], smt) if smt.mert_iterations else None
    if tuning is not None:
        timing["tune_s"] = tuning["time_s"]
    start = time.perf_counter()
    hypotheses = []
    for index, pair in enumerate(scored):
        hypotheses.append(" ".join(system.translate(pair["source"])))
        if (index + 1) % 100 == 0:
            print(f"decoded {index + 1}/{len(scored)}", flush=True)
    timing["decode_s"] = time.perf_counter() - start
    references = [" ".join(p["target"]) for p in scored]
    sources = [" ".join(p["source"]) for p in scored]
    known = {w for p in train for w in p["source"]}
    source_tokens = [w for p in scored for w in p["source"]]
    final = {
        "bleu": bleu.corpus_bleu(hypotheses, references, "none"),
        "length_ratio": sum(len(h.split()) for h in hypotheses)
        / sum(len(r.split()) for r in references),
        "copy_source_bleu": bleu.corpus_bleu(sources, references, "none"),
        "source_oov_rate": sum(w not in known for w in source_tokens) / len(source_tokens),
    }
    final["lm_perplexity"], final["lm_zero_probability_tokens"] = reference_perplexity(
        system.language_model, scored
    )
    timing["wall_s"] = time.perf_counter() - begin
    shown = SHOWN_TRANSLATIONS
    results = {
        "final": final,
        "split": smt.eval_split,
        "pairs": {"train": len(train), "scored": len(scored)},
        "sizes": system.sizes,
        "timing": timing,
        "tuning": tuning,
        "examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in zip(sources[:shown], references[:shown], hypotheses[:shown], strict=True)
        ],
        "config": json.loads(config.to_json_best_effort()),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    # Every output and its reference, one a line: for paired significance tests against the
    # NMT's outputs of the same sentences (experiments/significance.py, `answers`).
    significance.write_lines(workdir / report.TRANSLATIONS_FILE, hypotheses)
    significance.write_lines(workdir / report.REFERENCES_FILE, references)
    run_metrics.write_text_atomic(
        workdir / "smt_baseline.md", report.report_markdown(config, results)
    )
    run_metrics.write_json_atomic(workdir / RESULTS_FILE, results)
    print(f"BLEU {final['bleu']:.2f} (copy the source {final['copy_source_bleu']:.2f})")
    return results


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """A one-line answer to seed question 16 from a finished run's results.json
    (`smt_baseline_report.answers`)."""
    return report.answers(workdir)


if __name__ == "__main__":
    grid.main(run, RULES, trains=TRAINS)
