"""BLEU from token ids inside jit (rnn_jax.metrics.bleu_statistics) against sacrebleu on the
same sentences as strings: per-sentence and corpus n-gram counts, totals, lengths and score."""

import jax
import numpy as np
import pytest

from rnn_jax import metrics

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
    matches, totals = jax.jit(metrics.bleu_statistics)(hyp, hyp_len, ref, ref_len)
    matches, totals = np.asarray(matches), np.asarray(totals)
    hyp_text, ref_text = _strings(hyp, hyp_len), _strings(ref, ref_len)
    for b in range(len(hyp)):
        one = sacrebleu.corpus_bleu([hyp_text[b]], [[ref_text[b]]], tokenize="none")
        assert list(matches[b]) == list(one.counts), (b, hyp_text[b], ref_text[b])
        assert list(totals[b]) == list(one.totals)
    corpus = sacrebleu.corpus_bleu(hyp_text, [ref_text], tokenize="none")
    assert list(matches.sum(0)) == list(corpus.counts)
    assert (int(hyp_len.sum()), int(ref_len.sum())) == (corpus.sys_len, corpus.ref_len)
    score = metrics.bleu_from_statistics(
        matches.sum(0), totals.sum(0), hyp_len.sum(), ref_len.sum()
    )
    assert score == pytest.approx(corpus.score, abs=1e-9)
    assert score == pytest.approx(metrics.corpus_bleu(hyp_text, ref_text, "none"), abs=1e-9)
    assert 0.0 < score < 100.0


def test_identical_sentences_score_100_and_disjoint_ones_0():
    ids = np.array([[3, 4, 5, 6, 7], [5, 5, 6, 6, 0]], np.int32)
    lengths = np.array([5, 4], np.int32)
    statistics = jax.jit(metrics.bleu_statistics)
    matches, totals = statistics(ids, lengths, ids, lengths)
    score = metrics.bleu_from_statistics(
        np.sum(matches, 0), np.sum(totals, 0), lengths.sum(), lengths.sum()
    )
    assert score == pytest.approx(100.0)
    matches, _ = statistics(ids, lengths, ids + 10, lengths)
    assert not np.any(matches)
    with pytest.raises(ValueError, match="max_order"):
        metrics.bleu_statistics(ids, lengths, ids, lengths, max_order=0)
