"""experiments.smt_baseline's training side: IBM Models 1 and 2 (experiments.ibm_models)
against a hand computation and a transcription of EM, orientations against a transcription
of Moses's word-based extraction (`extract-main.cpp`: `isAligned`, `getOrientWordModel`),
phrase probabilities normalised in their own direction, the phrase table keeping the best
translations by weighted score, the weight sweep scored on val, and config checks."""

import collections
import math
import random

import pytest
from nltk.translate import AlignedSent, IBMModel1

from experiments import smt_baseline, smt_phrases, smt_reordering
from experiments.configs import smt_baseline as smt_configs
from experiments.ibm_models import PositionalIBMModel1, PositionalIBMModel2
from launch import plan
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.train import cli


def test_ibm_model1_counts_every_position_of_a_repeated_word():
    """One EM iteration from uniform on ("x x" | "a"), ("y" | "a"): each target position's
    posteriors over NULL and "a" are 1/2 and 1/2, so "a" (like NULL) gets counts x: 2 x 1/2,
    y: 1/2 and t(x | a) = 1 / 1.5 = 2/3, x's relative frequency. nltk's Model 1 normalises
    per target word over both x positions and gives 1/2, as if x occurred once."""
    corpus = [(["x", "x"], ["a"]), (["y"], ["a"])]
    model = PositionalIBMModel1([AlignedSent(w, m) for w, m in corpus], 1)
    assert model.translation_table["x"]["a"] == pytest.approx(2 / 3, rel=1e-12)
    assert model.translation_table["y"][None] == pytest.approx(1 / 3, rel=1e-12)
    nltk_model = IBMModel1([AlignedSent(w, m) for w, m in corpus], 1)
    assert nltk_model.translation_table["x"]["a"] == pytest.approx(1 / 2, rel=1e-12)


def _em_ibm12(corpus, iterations, floor=1e-12):
    """IBM Model 1 (2 x `iterations` EM iterations from t uniform over the target words), then
    Model 2 (`iterations`, a(i | j, l, m) from 1 / (l + 1)), each position's posteriors
    p(i | j) normalised over i, M-steps floored at `floor`; then each position's Viterbi
    source (None: NULL; ties to the later position) -> (t, a, alignments)."""
    t = collections.defaultdict(lambda: 1 / len({w for words, _ in corpus for w in words}))
    a = {}

    def alignment_probability(i, j, source_length, target_length):
        return a.get((i, j, source_length, target_length), 1 / (source_length + 1))

    for iteration in range(3 * iterations):
        model2 = iteration >= 2 * iterations
        t_counts, s_totals = collections.defaultdict(float), collections.defaultdict(float)
        a_counts, j_totals = collections.defaultdict(float), collections.defaultdict(float)
        for words, mots in corpus:
            sources, lengths = [None, *mots], (len(mots), len(words))
            for j, w in enumerate(words, 1):
                joint = [
                    t[w, s] * (alignment_probability(i, j, *lengths) if model2 else 1.0)
                    for i, s in enumerate(sources)
                ]
                for i, s in enumerate(sources):
                    posterior = joint[i] / sum(joint)
                    t_counts[w, s] += posterior
                    s_totals[s] += posterior
                    a_counts[(i, j, *lengths)] += posterior
                    j_totals[(j, *lengths)] += posterior
        for (w, s), count in t_counts.items():
            t[w, s] = max(count / s_totals[s], floor)
        if model2:
            for (i, *position), count in a_counts.items():
                a[(i, *position)] = max(count / j_totals[tuple(position)], floor)
    alignments = []
    for words, mots in corpus:
        lengths, points = (len(mots), len(words)), set()
        for j, w in enumerate(words):
            best, source = max(t[w, None] * alignment_probability(0, j + 1, *lengths), floor), None
            for i, s in enumerate(mots):
                probability = t[w, s] * alignment_probability(i + 1, j + 1, *lengths)
                if probability >= best:
                    best, source = probability, i
            points.add((j, source))
        alignments.append(points)
    return t, a, alignments


@pytest.mark.parametrize("seed", range(6))
def test_ibm_model2_equals_a_transcription_of_em(seed):
    """Random corpora over a few words, so that most sentences repeat one: the translation
    and alignment tables and the Viterbi alignments equal EM's, counted position by
    position."""
    rng = random.Random(seed)
    words = list("abcdef")[: rng.randint(3, 6)]
    corpus = [
        (rng.choices(words, k=rng.randint(1, 6)), rng.choices(words, k=rng.randint(1, 6)))
        for _ in range(15)
    ]
    assert sum(len(set(w)) < len(w) for w, _ in corpus) >= 3
    sentences = [AlignedSent(w, m) for w, m in corpus]
    model = PositionalIBMModel2(sentences, 2)
    t, a, alignments = _em_ibm12(corpus, 2)
    for (w, s), probability in t.items():
        assert model.translation_table[w][s] == pytest.approx(probability, rel=1e-12)
    for (i, j, source_length, target_length), probability in a.items():
        stored = model.alignment_table[i][j][source_length][target_length]
        assert stored == pytest.approx(probability, rel=1e-12)
    assert [set(sentence.alignment) for sentence in sentences] == alignments


def test_word_alignments_symmetrise_em_alignments_of_both_directions():
    """`word_alignments` is grow-diag-final-and of EM's Viterbi alignments each way (on this
    corpus nltk's own IBMModel2, which counts a repeated word once per sentence, gives
    other alignments)."""
    rng = random.Random(7)
    corpus = [
        {"source": rng.choices("abcd", k=rng.randint(2, 6)), "target": rng.choices("wxyz", k=4)}
        for _ in range(20)
    ]
    _, _, forward = _em_ibm12([(p["target"], p["source"]) for p in corpus], 2)
    _, _, backward = _em_ibm12([(p["source"], p["target"]) for p in corpus], 2)
    expected = [
        smt_phrases.grow_diag_final_and(
            len(p["source"]),
            len(p["target"]),
            {(s, t) for t, s in f if s is not None},
            {(s, t) for s, t in b if t is not None},
        )
        for p, f, b in zip(corpus, forward, backward, strict=True)
    ]
    assert smt_phrases.word_alignments(corpus, 2) == expected


def _moses_is_aligned(alignment, source_length, target_length, fi, ei):
    """Moses's `isAligned(sentence, fi, ei)`: the two corners outside the sentence count as
    aligned, any other point outside it does not."""
    if ei == -1 and fi == -1:
        return True
    if ei <= -1 or fi <= -1:
        return False
    if ei == target_length and fi == source_length:
        return True
    if ei >= target_length or fi >= source_length:
        return False
    return (fi, ei) in alignment


def _moses_msd(connected_left_top, connected_right_top):
    """Moses's `getOrientWordModel` for REO_MSD: mono only when the left-top corner alone is
    connected, swap only when the right-top corner alone is, otherwise "other"."""
    if connected_left_top and not connected_right_top:
        return smt_reordering.MONOTONE
    if not connected_left_top and connected_right_top:
        return smt_reordering.SWAP
    return smt_reordering.DISCONTINUOUS


def _moses_orientations(alignment, source_length, target_length, spans):
    """Moses's `extract` (wbe-msd): spans are inclusive there, (startF, endF, startE, endE)."""
    s0, s1, t0, t1 = spans
    start_f, end_f, start_e, end_e = s0, s1 - 1, t0, t1 - 1

    def aligned(fi, ei):
        return _moses_is_aligned(alignment, source_length, target_length, fi, ei)

    previous = _moses_msd(aligned(start_f - 1, start_e - 1), aligned(end_f + 1, start_e - 1))
    following = _moses_msd(aligned(end_f + 1, end_e + 1), aligned(start_f - 1, end_e + 1))
    return previous, following


def test_training_orientations_equal_moses_word_based_extraction():
    """Every consistent phrase pair of random alignments (dense enough that a word before or
    after a phrase often links to source words on both sides of it) gets Moses's orientations.
    Before review 22 a target word linked to the source words on both sides of the phrase
    counted as monotone; Moses counts it as neither monotone nor swap ("other")."""
    rng = random.Random(22)
    both_sides = 0
    for _ in range(300):
        source_length, target_length = rng.randint(1, 7), rng.randint(1, 7)
        alignment = {
            (i, j) for i in range(source_length) for j in range(target_length) if rng.random() < 0.3
        }
        for spans in smt_phrases.consistent_phrase_pairs(
            source_length, target_length, alignment, 4
        ):
            s0, s1, t0, t1 = spans
            both_sides += {(s0 - 1, t0 - 1), (s1, t0 - 1)} <= alignment
            both_sides += {(s1, t1), (s0 - 1, t1)} <= alignment
            got = smt_reordering.training_orientations(
                alignment, source_length, target_length, spans
            )
            assert got == _moses_orientations(alignment, source_length, target_length, spans), (
                alignment,
                spans,
            )
    assert both_sides > 10  # the case that used to differ is exercised


def test_a_word_linked_on_both_sides_of_a_phrase_is_discontinuous():
    """ "did not go" -> "ging nicht": "ging" links to "did" and "go", so "not" -> "nicht" has a
    target word before it linked to the source words on both sides: Moses's "other"."""
    alignment = {(0, 0), (2, 0), (1, 1)}
    D = smt_reordering.DISCONTINUOUS
    backward, _ = smt_reordering.training_orientations(alignment, 3, 2, (1, 2, 1, 2))
    assert backward == D


def test_the_weight_sweep_scores_on_val_not_test(tmp_path):
    """`get_sweep` is a grid to choose the word penalty and LM weight from; the config scores
    test2016, so before review 22 every point of it was scored (and chosen) on test."""
    assert smt_configs.get_config("quick").smt.eval_split == "test"
    runs = plan.plan_runs("experiments/configs/smt_baseline.py:quick", tmp_path)
    assert len(runs) == 6
    for run in runs:
        assert run.overrides["smt.eval_split"] == "valid", run.overrides
        assert run.overrides["smt.mert_iterations"] == 0
        assert "--config.smt.eval_split=valid" in run.command


def test_phrase_probabilities_are_normalised_in_their_own_direction():
    """log φ(e|f) sums to one over the target phrases of each source phrase and log φ(f|e)
    over the source phrases of each target phrase, counted over every consistent pair of
    random alignments (so a swapped direction would not sum to one)."""
    rng = random.Random(5)
    pairs, alignments = [], []
    for _ in range(40):
        source = [rng.choice("abcd") for _ in range(rng.randint(1, 5))]
        target = [rng.choice("wxyz") for _ in range(rng.randint(1, 5))]
        pairs.append({"source": source, "target": target})
        alignments.append(
            {(i, j) for i in range(len(source)) for j in range(len(target)) if rng.random() < 0.4}
        )
    extracted = smt_baseline.extract_phrases(pairs, alignments, 3)
    features = smt_phrases.phrase_features(extracted.counts, extracted.lexical)
    given_source, given_target = {}, {}
    for (source, target), (forward, backward, *_) in features.items():
        given_source[source] = given_source.get(source, 0.0) + math.exp(forward)
        given_target[target] = given_target.get(target, 0.0) + math.exp(backward)
    assert len(given_source) > 10 and len(given_target) > 10
    assert all(abs(total - 1.0) < 1e-12 for total in given_source.values())
    assert all(abs(total - 1.0) < 1e-12 for total in given_target.values())
    assert max(extracted.counts.values()) > 1  # pairs seen more than once


SMOKE = "experiments/configs/smt_baseline.py:smoke"


@pytest.mark.data
@pytest.mark.parametrize("max_length", [3, 4])
def test_a_split_left_empty_by_max_length_is_a_config_error(tmp_path, data_root, max_length):
    """Multi30k has no pair with both sides <= 3 tokens, and none in test2016 with <= 4 (3
    training pairs, 1 val pair): the run stops before training with a message naming the key,
    not a ZeroDivisionError from nltk's aligner or an IndexError from sacrebleu after MERT."""
    config = cli.load_config(
        SMOKE,
        {"data.root": str(data_root), "smt.max_length": max_length},
        smt_baseline.RULES,
        trains=smt_baseline.TRAINS,
    )
    with pytest.raises(smt_baseline.cfg.ConfigError, match=r"smt\.max_length=.*no (train|test)"):
        smt_baseline.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_phrase_table_keeps_the_best_translations_by_weighted_score():
    """`phrase_table` against a hand computation: each option scores weights · (log φ(e|f),
    log φ(f|e), log lex(e|f), log lex(f|e)) + the phrase weight, and of each source phrase
    the best `max_translations` by that score are kept (here the weights, a negative one
    included, reverse the order that log φ(e|f) alone would give)."""
    features = {
        (("a",), ("x",)): (-0.1, -2.0, -0.5, -1.0),
        (("a",), ("y",)): (-1.0, -0.2, -0.5, -1.0),
        (("a",), ("z", "z")): (-2.0, -0.1, -0.4, -3.0),
        (("b", "c"), ("w",)): (-0.7, -0.3, -0.2, -0.1),
    }
    weights, phrase_weight = (0.5, 2.0, 1.0, -0.5), -0.3
    table = smt_phrases.phrase_table(features, 2, weights, phrase_weight)

    def score(f1, f2, f3, f4):
        return 0.5 * f1 + 2.0 * f2 + 1.0 * f3 - 0.5 * f4 - 0.3

    # a -> z z: -1 - 0.2 - 0.4 + 1.5 - 0.3 = -0.4; y: -0.5 - 0.4 - 0.5 + 0.5 - 0.3 = -1.2;
    # x: -0.05 - 4 - 0.5 + 0.5 - 0.3 = -4.35, dropped.
    kept = [(e.trg_phrase, e.log_prob) for e in table.translations_for(("a",))]
    assert [phrase for phrase, _ in kept] == [("z", "z"), ("y",)]
    assert [s for _, s in kept] == pytest.approx([-0.4, -1.2])
    assert kept[0][1] == pytest.approx(score(*features[("a",), ("z", "z")]))
    (only,) = table.translations_for(("b", "c"))
    assert only.trg_phrase == ("w",)
    assert only.log_prob == pytest.approx(score(*features[("b", "c"), ("w",)]))


def test_a_training_target_holding_the_lms_padding_is_named_before_the_run_starts(tmp_path):
    """Line 2's pair is dropped by max_length, so its `<s>` is harmless; line 3's `</s>` is
    kept: named file:line before anything runs (the earlier run's results stay), where
    Kneser-Ney's estimate named "sentence 2" after the alignment, with a traceback."""
    tok = tmp_path / "data" / "multi30k" / "tok"
    tok.mkdir(parents=True)
    lines = {
        "en": ["a b", "a b c d e", "c", "d"],
        "de": ["x y", "<s> z", "y </s>", "z"],
    }
    for name in ("train", "val", "test"):
        for side, text in lines.items():
            (tok / f"{name}.lc.norm.tok.{side}").write_text("".join(f"{t}\n" for t in text))
    config = smt_configs.get_config("smoke")
    config.data.root = str(tmp_path / "data")
    config.smt.max_length, config.smt.mert_iterations = 3, 0
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "results.json").write_text("{}")
    target = tok / "train.lc.norm.tok.de"
    with pytest.raises(DataFormatError, match=rf"^{target}:3: holds </s>, "):
        smt_baseline.run(config, workdir)
    assert (workdir / "results.json").read_text() == "{}"
