"""BLEU from token ids inside jit (rnn_jax.bleu.bleu_statistics) against sacrebleu on the
same sentences as strings: per-sentence and corpus n-gram counts, totals, lengths and score."""

import jax
import numpy as np
import pytest

from rnn_jax.bleu import bleu_from_statistics, bleu_statistics, corpus_bleu

sacrebleu = pytest.importorskip("sacrebleu", reason="BLEU reference implementation")


def _random_corpus(seed, batch=40, hyp_time=12, ref_time=10, vocab=5):
    """Small vocabulary, so n-grams repeat within and across sentences (clipping matters);
    lengths include 0 (empty hypothesis) and the full padded width."""
    rng = np.random.default_rng(seed)
    hyp = rng.integers(1, vocab + 1, (batch, hyp_time)).astype(np.int32)
    ref = rng.integers(1, vocab + 1, (batch, ref_time)).astype(np.int32)
    hyp_len = rng.integers(0, hyp_time + 1, batch).astype(np.int32)
    ref_len = rng.integers(1, ref_time + 1, batch).astype(np.int32)
    hyp_len[:2], ref_len[:2] = (0, hyp_time), (ref_time, 1)
    return hyp, hyp_len, ref, ref_len


def _strings(ids, lengths):
    return [" ".join(f"w{t}" for t in row[:n]) for row, n in zip(ids, lengths, strict=True)]


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_statistics_equal_sacrebleu_counts(seed):
    hyp, hyp_len, ref, ref_len = _random_corpus(seed)
    matches, totals = jax.jit(bleu_statistics)(hyp, hyp_len, ref, ref_len)
    matches, totals = np.asarray(matches), np.asarray(totals)
    hyp_text, ref_text = _strings(hyp, hyp_len), _strings(ref, ref_len)
    for b in range(len(hyp)):
        one = sacrebleu.corpus_bleu([hyp_text[b]], [[ref_text[b]]], tokenize="none")
        assert list(matches[b]) == list(one.counts), (b, hyp_text[b], ref_text[b])
        assert list(totals[b]) == list(one.totals)
    corpus = sacrebleu.corpus_bleu(hyp_text, [ref_text], tokenize="none")
    assert list(matches.sum(0)) == list(corpus.counts)
    assert (int(hyp_len.sum()), int(ref_len.sum())) == (corpus.sys_len, corpus.ref_len)
    score = bleu_from_statistics(matches.sum(0), totals.sum(0), hyp_len.sum(), ref_len.sum())
    assert score == pytest.approx(corpus.score, abs=1e-9)
    assert score == pytest.approx(corpus_bleu(hyp_text, ref_text, "none"), abs=1e-9)
    assert 0.0 < score < 100.0


def test_identical_sentences_score_100_and_disjoint_ones_0():
    ids = np.array([[3, 4, 5, 6, 7], [5, 5, 6, 6, 0]], np.int32)
    lengths = np.array([5, 4], np.int32)
    statistics = jax.jit(bleu_statistics)
    matches, totals = statistics(ids, lengths, ids, lengths)
    score = bleu_from_statistics(
        np.sum(matches, 0), np.sum(totals, 0), lengths.sum(), lengths.sum()
    )
    assert score == pytest.approx(100.0)
    matches, _ = statistics(ids, lengths, ids + 10, lengths)
    assert not np.any(matches)
    with pytest.raises(ValueError, match="max_order"):
        bleu_statistics(ids, lengths, ids, lengths, max_order=0)
    with pytest.raises(ValueError, match=r"matches \(2\) and totals \(1\) differ in order"):
        bleu_from_statistics([1, 1], [1], 1, 1)
    with pytest.raises(ValueError, match=r"hypotheses \(1\) and references \(0\) differ"):
        corpus_bleu(["a b"], [])


def _corrupt(sentences, rate, rng, vocabulary):
    return [
        " ".join(
            w if rng.random() > rate else vocabulary[rng.integers(len(vocabulary))]
            for w in s.split()
        )
        for s in sentences
    ]


def _two_systems(seed, sentences, words, vocabulary_size, rates):
    """Random references of `words` words and two systems that replace each word with a
    random one at `rates[0]` (the baseline) and `rates[1]` (the system)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(vocabulary_size)]
    references = [" ".join(rng.choice(vocabulary, size=words)) for _ in range(sentences)]
    return references, *(_corrupt(references, rate, rng, vocabulary) for rate in rates)


def test_paired_randomisation_matches_exact_enumeration():
    """The approximate randomisation p-value against the exact one: every one of the 2^10 ways
    to swap the two systems' outputs of 10 sentences, each scored by corpus BLEU, counting the
    swaps at least as extreme as the real difference."""
    import itertools

    from rnn_jax.bleu import corpus_bleu, paired_bleu_significance

    rng = np.random.default_rng(4)
    vocabulary = [f"w{i}" for i in range(12)]
    references = [" ".join(rng.choice(vocabulary, size=8)) for _ in range(10)]
    baseline = _corrupt(references, 0.45, rng, vocabulary)
    system = _corrupt(references, 0.35, rng, vocabulary)
    real = abs(corpus_bleu(system, references, "none") - corpus_bleu(baseline, references, "none"))
    exceed = 0
    for mask in itertools.product((False, True), repeat=len(references)):
        a = [s if m else b for m, s, b in zip(mask, system, baseline, strict=True)]
        b = [b if m else s for m, s, b in zip(mask, system, baseline, strict=True)]
        exceed += (
            abs(corpus_bleu(a, references, "none") - corpus_bleu(b, references, "none"))
            >= real - 1e-9
        )
    exact = exceed / 2 ** len(references)
    assert 0.05 < exact < 0.95  # a case where the test has something to decide
    samples = 20_000
    result = paired_bleu_significance(
        baseline, system, references, samples=samples, tokenize="none"
    )
    assert result["test"] == "ar" and result["samples"] == samples
    assert result["system_bleu"] == pytest.approx(corpus_bleu(system, references, "none"))
    assert result["difference"] == pytest.approx(result["system_bleu"] - result["baseline_bleu"])
    assert abs(result["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / samples) + 1e-3


def _sacrebleu_paired_test(test_type, samples, baseline, system, references):
    """sacrebleu's own result for `system` against `baseline` (score, p_value, mean, ci)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    return PairedTest(
        [("baseline", baseline), ("system", system)],
        {"BLEU": BLEU(tokenize="none", force=True)},
        [references],
        test_type=test_type,
        n_samples=samples,
    )()[1]["BLEU"][1]


def test_paired_randomisation_counts_ties_when_few_sentences_differ():
    """Systems that differ in k sentences have 2^k distinct swaps, and swapping none or all of
    them reproduces the real difference. Counting only strictly larger differences (sacrebleu,
    after multeval) gave one differing sentence of 50 p = 1/(n+1), 'significant'; the exact
    test gives 1. With most sentences differing there are no ties, and the p-value is
    sacrebleu's, trial for trial (the same draws)."""
    from rnn_jax.bleu import paired_bleu_significance

    rng = np.random.default_rng(5)
    vocabulary = [f"w{i}" for i in range(12)]
    references = [" ".join(rng.choice(vocabulary, size=8)) for _ in range(50)]
    baseline = _corrupt(references, 0.4, rng, vocabulary)
    one_differs = list(baseline)
    one_differs[7] = references[7]
    result = paired_bleu_significance(baseline, one_differs, references, tokenize="none")
    assert result["difference"] > 0 and result["p_value"] == 1.0
    system = _corrupt(references, 0.39, rng, vocabulary)
    ours = paired_bleu_significance(baseline, system, references, samples=500, tokenize="none")
    theirs = _sacrebleu_paired_test("ar", 500, baseline, system, references)
    assert ours["system_bleu"] == pytest.approx(theirs.score)
    assert 0.01 < ours["p_value"] == pytest.approx(theirs.p_value, abs=1e-12)


def test_paired_bootstrap_counts_ties_and_otherwise_equals_sacrebleu():
    """Two systems whose outputs differ only in words that match nothing (or that both score
    BLEU 0) have equal statistics in every sentence: every resample ties with the real
    difference, and counting only strictly larger ones (sacrebleu) gave p = 1/(n+1),
    'significant'. Without ties the p-value, mean and interval are sacrebleu's (its draws)."""
    from rnn_jax.bleu import paired_bleu_significance

    references = ["the cat sat on the mat today", "a dog ran in the park fast", "we eat jam"]
    baseline = ["the cat sat on the rug today", "a dog ran in the yard fast", "we eat jam"]
    system = ["the cat sat on the sofa today", "a dog ran in the lane fast", "we eat jam"]
    short = (["a b c", "d e x"], ["a b x", "d e f"], ["a b c", "d e f"])  # BLEU 0 both
    for base, other, refs in ((baseline, system, references), short):
        for test in ("ar", "bs"):
            result = paired_bleu_significance(base, other, refs, test=test, samples=99)
            assert result["difference"] == 0.0 and result["p_value"] == 1.0, (test, refs)
    references, baseline, system = _two_systems(6, 30, 8, 12, (0.4, 0.37))
    ours = paired_bleu_significance(
        baseline, system, references, test="bs", samples=300, tokenize="none"
    )
    theirs = _sacrebleu_paired_test("bs", 300, baseline, system, references)
    assert 0.01 < ours["p_value"] == pytest.approx(theirs.p_value, abs=1e-12)
    assert ours["system_bleu"] == pytest.approx(theirs.score)
    # sacrebleu sums float32 statistics: its scores differ from the int64 ones in the 8th digit
    assert ours["system_mean"] == pytest.approx(theirs.mean, abs=1e-6)
    assert ours["system_ci"] == pytest.approx(theirs.ci, abs=1e-6)


def test_paired_bootstrap_separates_a_much_better_system_and_checks_inputs():
    from rnn_jax.bleu import paired_bleu_significance

    references, worse, better = _two_systems(0, 200, 10, 30, (0.6, 0.2))
    result = paired_bleu_significance(
        worse, better, references, test="bs", samples=300, tokenize="none"
    )
    assert result["difference"] > 10 and result["p_value"] < 0.01
    assert abs(result["system_mean"] - result["system_bleu"]) < result["system_ci"]
    for test in ("ar", "bs"):  # sacrebleu alone would give 1 / (samples + 1)
        same = paired_bleu_significance(worse, worse, references, test=test, samples=50)
        assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="test='t': must be one of"):
        paired_bleu_significance(worse, better, references, test="t")
    with pytest.raises(ValueError, match="samples=0: must be >= 1"):
        paired_bleu_significance(worse, better, references, samples=0)
    with pytest.raises(ValueError, match=r"baseline \(200\), system \(199\)"):
        paired_bleu_significance(worse, better[1:], references)
    for test in ("ar", "bs"):  # sacrebleu died with a bare TypeError / IndexError
        with pytest.raises(ValueError, match="paired BLEU test on no sentences"):
            paired_bleu_significance([], [], [], test=test, samples=5)
