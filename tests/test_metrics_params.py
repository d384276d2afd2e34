"""Review 24 of rnn_jax/metrics.py and rnn_jax/models/params.py: parameter counts of the
library's models against counts derived by hand from each cell's equations, shared Params
counted once, and corpus BLEU against nltk and against the definition written out here."""

import collections
import math

import jax
import numpy as np
import pytest
from flax import nnx

from rnn_jax import metrics
from rnn_jax.bleu import bleu_from_statistics, bleu_statistics, corpus_bleu
from rnn_jax.models.lm import RNNLanguageModel
from rnn_jax.models.params import count_params
from rnn_jax.models.tagger import Tagger

# --- parameter counts -------------------------------------------------------------------------


def _cell_params(cell: str, input_size: int, hidden: int) -> int:
    """Scalars of one cell from its equations (PyTorch layout: W_ih, W_hh, b_ih, b_hh)."""
    gates = {"elman": 1, "lstm": 4, "peephole_lstm": 4, "layer_norm_lstm": 4, "cifg_lstm": 3}
    gates |= {"gru": 3, "gru_cho": 3}
    if cell == "min_gru":  # z and h~ from x alone (Feng et al. 2024): no W_hh
        return 2 * hidden * input_size + 2 * hidden
    g = gates[cell]
    count = g * hidden * (input_size + hidden) + 2 * g * hidden
    if cell == "peephole_lstm":  # diagonal peepholes w_ci, w_cf, w_co
        count += 3 * hidden
    if cell == "layer_norm_lstm":  # LN scales on both 4H pre-activations, LN(c) scale + bias
        count += 2 * 4 * hidden + 2 * hidden
    return count


def _stack_params(cell, input_size, hidden, layers, directions):
    count, size = 0, input_size
    for _ in range(layers):
        count += directions * _cell_params(cell, size, hidden)
        size = directions * hidden
    return count


@pytest.mark.parametrize(
    "cell",
    ["elman", "lstm", "gru", "gru_cho", "peephole_lstm", "layer_norm_lstm", "cifg_lstm"]
    + ["min_gru"],
)
def test_language_model_params_equal_hand_count(cell):
    vocab, hidden, embed = 11, 6, 4
    for tie, embed_size, layers in ((False, embed, 2), (True, hidden, 1)):
        model = nnx.eval_shape(
            lambda c=cell, t=tie, e=embed_size, n=layers: RNNLanguageModel(
                vocab,
                hidden,
                embed_size=e,
                num_layers=n,
                cell=c,
                tie_embeddings=t,
                rngs=nnx.Rngs(0),
            )
        )
        expected = vocab * embed_size + _stack_params(cell, embed_size, hidden, layers, 1)
        expected += vocab + (0 if tie else hidden * vocab)  # output bias (+ kernel untied)
        assert count_params(model) == expected, (cell, tie)


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_bidirectional_stacked_tagger_params_equal_hand_count(head):
    vocab, tags, embed, hidden = 13, 5, 4, 3
    model = nnx.eval_shape(
        lambda: Tagger(
            vocab,
            tags,
            head=head,
            embed_size=embed,
            hidden_size=hidden,
            num_layers=2,
            bidirectional=True,
            cell="lstm",
            rngs=nnx.Rngs(0),
        )
    )
    expected = vocab * embed + _stack_params("lstm", embed, hidden, 2, 2)
    expected += 2 * hidden * tags + tags  # emissions from [forward; backward]
    expected += (tags * tags + 2 * tags) if head == "crf" else 0  # transitions, start, end
    assert count_params(model) == expected


def test_a_param_shared_by_modules_of_a_list_counts_once():
    """A list of modules is flattened as a pytree, which reaches a Param once per owner: an
    embedding tied between an encoder and a decoder was counted twice, and a model listed
    twice double (nnx.state, inside one module, counts it once)."""
    encoder = nnx.eval_shape(lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    decoder = nnx.eval_shape(lambda: nnx.Linear(4, 3, rngs=nnx.Rngs(1)))
    decoder.kernel = encoder.kernel  # tied; decoder's own bias stays
    distinct = 3 * 4 + 4 + 3
    assert count_params([encoder, decoder]) == distinct
    assert count_params({"enc": encoder, "dec": [decoder, encoder]}) == distinct
    assert count_params([encoder, encoder]) == count_params(encoder) == 16
    whole = nnx.Module()
    whole.encoder, whole.decoder = encoder, decoder
    assert count_params(whole) == distinct  # the same answer as nnx.state gives


# --- BLEU ---------------------------------------------------------------------------------


def _ngrams(tokens, n):
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_by_definition(hypotheses, references, max_order=4):
    """Papineni et al. (2002): clipped n-gram precisions summed over the corpus, geometric
    mean, corpus brevity penalty exp(1 - r/c) for c < r; a zero count's precision taken as
    1 / (2^k total_n) for the k-th zero (mteval-v13a's smoothing, sacrebleu's 'exp')."""
    matches, totals = [0] * max_order, [0] * max_order
    for hyp, ref in zip(hypotheses, references, strict=True):
        for n in range(1, max_order + 1):
            h, r = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(c, r[g]) for g, c in h.items())
            totals[n - 1] += sum(h.values())
    c, r = sum(map(len, hypotheses)), sum(map(len, references))
    if c == 0:
        return 0.0
    log_precision, zeros = 0.0, 0
    for m, t in zip(matches, totals, strict=True):
        if t == 0:  # no n-grams at all: precision 0 (log taken as -inf)
            return 0.0
        if m == 0:
            zeros += 1
            m = 1 / 2**zeros
        log_precision += math.log(m / t) / max_order
    brevity = 1.0 if c >= r else math.exp(1 - r / c)
    return 100 * brevity * math.exp(log_precision)


def _corpus(seed, sentences=12, vocab=4, min_hyp=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    refs = [list(rng.choice(words, rng.integers(1, 10))) for _ in range(sentences)]
    hyps = [list(rng.choice(words, rng.integers(min_hyp, 12))) for _ in range(sentences)]
    return hyps, refs


def test_corpus_bleu_equals_the_definition_with_empty_and_short_hypotheses():
    """Corpus sums (not a mean of sentence scores), clipping of repeated n-grams (4 words),
    hypotheses shorter than 4 tokens or empty, the brevity penalty on both sides of r = c,
    and the statistics route from token ids (bleu_statistics -> bleu_from_statistics)."""
    sides, statistics = set(), jax.jit(bleu_statistics)  # one shape: one compile
    for seed in range(6):
        hyps, refs = _corpus(seed)
        expected = _bleu_by_definition(hyps, refs)
        joined = ([" ".join(s) for s in hyps], [" ".join(s) for s in refs])
        assert corpus_bleu(*joined, tokenize="none") == pytest.approx(expected, rel=1e-9)
        ids = (
            lambda sentences, width: np.array(  # noqa: E731
                [[int(w[1:]) + 1 for w in s] + [0] * (width - len(s)) for s in sentences], np.int32
            )
        )
        hyp_len = np.array([len(s) for s in hyps], np.int32)
        ref_len = np.array([len(s) for s in refs], np.int32)
        matches, totals = statistics(ids(hyps, 12), hyp_len, ids(refs, 10), ref_len)
        from_ids = bleu_from_statistics(
            np.sum(matches, 0), np.sum(totals, 0), hyp_len.sum(), ref_len.sum()
        )
        assert from_ids == pytest.approx(expected, rel=1e-9)
        sides.add(hyp_len.sum() >= ref_len.sum())
        assert 0 < expected < 100
    assert sides == {True, False}  # both branches of the brevity penalty were checked


def test_corpus_bleu_equals_nltk_where_nltk_does_not_smooth():
    """nltk's corpus_bleu as a second implementation. It agrees where every order has a match
    and every hypothesis has 4+ tokens (nltk divides by max(1, n-grams) per sentence, so a
    hypothesis shorter than n counts one phantom n-gram there; sacrebleu does not)."""
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    for seed in range(4):
        hyps, refs = _corpus(seed, sentences=15, vocab=3, min_hyp=4)
        ours = corpus_bleu([" ".join(s) for s in hyps], [" ".join(s) for s in refs], "none")
        theirs = 100 * nltk_bleu.corpus_bleu([[r] for r in refs], hyps)
        assert ours == pytest.approx(theirs, rel=1e-9)


def test_corpus_bleu_of_no_sentences_is_refused_by_name():
    """sacrebleu raised a bare IndexError (e.g. a test split filtered down to nothing)."""
    with pytest.raises(ValueError, match="corpus BLEU of no sentences"):
        corpus_bleu([], [], "none")


def test_majority_tag_baseline_ties_to_the_first_tag_seen_and_refuses_empty_training():
    train = [
        {"tokens": ["a", "b", "a"], "tags": ["X", "Y", "Y"]},
        {"tokens": ["b", "c"], "tags": ["X", "X"]},
    ]
    test = [{"tokens": ["a", "b", "c", "unseen"]}]
    # a: X once, Y once -> X (seen first); b: Y, X -> Y; unseen: X (3 of 5 overall).
    assert metrics.majority_tag_per_word(train, test) == [["X", "Y", "X", "X"]]
    # The overall default ties to the tag seen first as well: Y (not the smaller X).
    tied = [{"tokens": ["a", "b"], "tags": ["Y", "X"]}]
    assert metrics.majority_tag_per_word(tied, [{"tokens": ["unseen"]}]) == [["Y"]]
    with pytest.raises(ValueError, match="train has no tagged token"):
        metrics.majority_tag_per_word([{"tokens": [], "tags": []}], test)
