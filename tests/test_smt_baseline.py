"""experiments.smt_baseline and its modules (smt_phrases, smt_reordering, smt_language_model,
smt_decoder, smt_system, smt_baseline_report): the pieces written here (grow-diag-final-and,
the distortion limit, the LM adapter, the decoder's search: recombination, stacks, Moses's
reordering constraint) against hand-worked values, brute force, nltk.lm and nltk's own
search; a tiny corpus whose seen sentence must come back exactly; the smoke run end to end; a
bad config value; phrase extraction against brute force (and nltk's, which breaks
consistency); the lexical weights against hand-worked values and their matrix form."""

import functools
import itertools
import json
import math
import os
import random

import numpy as np
import pytest
from nltk.lm import Vocabulary, WittenBellInterpolated
from nltk.lm.preprocessing import padded_everygram_pipeline
from nltk.translate import PhraseTable, StackDecoder
from nltk.translate.gdfa import grow_diag_final_and as nltk_grow_diag_final_and
from nltk.translate.phrase_based import phrase_extraction
from nltk.translate.stack_decoder import _Hypothesis, _Stack

from experiments import (
    smt_baseline,
    smt_baseline_report,
    smt_decoder,
    smt_language_model,
    smt_phrases,
    smt_reordering,
    smt_system,
)
from experiments.configs import smt_baseline as smt_configs
from experiments.kneser_ney import KneserNeyLM
from rnn_jax.train import cli
from tests.module_cli import StartedModule

SMOKE = "experiments/configs/smt_baseline.py:smoke"


def _pharaoh(points):
    return " ".join(f"{i}-{j}" for i, j in sorted(points))


def test_grow_diag_final_and_by_hand():
    # Intersection {(0,0),(1,1)}. Growing from (1,1): (1,2) (target 2 unaligned) and (2,2)
    # (source 2 unaligned). (3,0) is no neighbour, and final-and needs both its words
    # unaligned: target 0 is aligned, so it stays out.
    forward = {(0, 0), (1, 1), (3, 0)}
    backward = {(0, 0), (1, 1), (2, 2), (1, 2)}
    expected = {(0, 0), (1, 1), (1, 2), (2, 2)}
    assert smt_phrases.grow_diag_final_and(4, 3, forward, backward) == expected
    # Why it is written here: nltk 3.10.4's returns the union (its "not aligned" tests always
    # pass), (3, 0) included.
    union = sorted(forward | backward)
    assert nltk_grow_diag_final_and(4, 3, _pharaoh(forward), _pharaoh(backward)) == union
    # The "diag": (1,1) only neighbours (0,0) diagonally and has target 1 aligned (by (3,1)),
    # so only diagonal growth adds it (final-and needs both words unaligned).
    forward, backward = {(0, 0), (3, 1), (1, 1)}, {(0, 0), (3, 1)}
    assert smt_phrases.grow_diag_final_and(4, 2, forward, backward) == forward


def test_final_and_adds_only_points_whose_words_are_both_unaligned():
    # (2,2) joins in the final step (no neighbour of (0,0)); (2,3) then has source 2 aligned.
    forward, backward = {(0, 0), (2, 2), (2, 3)}, {(0, 0)}
    assert smt_phrases.grow_diag_final_and(3, 4, forward, backward) == {(0, 0), (2, 2)}


def test_grow_diag_final_and_properties_on_random_alignments():
    """Brute-force checks on random alignments: the result lies between the intersection and
    the union; every union point left out has its source or its target word aligned (else
    final-and would have added it); and nothing a neighbour of the grown intersection could
    add is left out while both its words are unaligned."""
    rng = random.Random(0)
    for _ in range(300):
        source_length, target_length = rng.randint(1, 7), rng.randint(1, 7)
        grid = [(i, j) for i in range(source_length) for j in range(target_length)]
        forward = {p for p in grid if rng.random() < 0.3}
        backward = {p for p in grid if rng.random() < 0.3}
        result = smt_phrases.grow_diag_final_and(source_length, target_length, forward, backward)
        assert forward & backward <= result <= forward | backward
        sources, targets = {i for i, _ in result}, {j for _, j in result}
        for i, j in (forward | backward) - result:
            assert i in sources or j in targets, (forward, backward, result)


def _brute_force_phrase_pairs(source_length, target_length, alignment, max_length):
    """The definition, span pair by span pair: at most max_length words a side, a point
    inside, no point with one end inside and the other outside."""
    return {
        (s0, s1, t0, t1)
        for s0 in range(source_length)
        for s1 in range(s0 + 1, min(source_length, s0 + max_length) + 1)
        for t0 in range(target_length)
        for t1 in range(t0 + 1, min(target_length, t0 + max_length) + 1)
        if any(s0 <= i < s1 and t0 <= j < t1 for i, j in alignment)
        and all((s0 <= i < s1) == (t0 <= j < t1) for i, j in alignment)
    }


@pytest.mark.parametrize("max_length", [1, 2, 4, 7])
def test_consistent_phrase_pairs_equal_brute_force(max_length):
    rng = random.Random(max_length)
    for _ in range(300):
        source_length, target_length = rng.randint(1, 9), rng.randint(1, 9)
        alignment = {
            (i, j)
            for i in range(source_length)
            for j in range(target_length)
            if rng.random() < 0.25
        }
        got = smt_phrases.consistent_phrase_pairs(
            source_length, target_length, alignment, max_length
        )
        assert len(got) == len(set(got))
        assert set(got) == _brute_force_phrase_pairs(
            source_length, target_length, alignment, max_length
        ), alignment


# A training pair of quick's with its symmetrised alignment: "justin bieber ." links to
# "aussehe wie justin bieber ." (five target words), longer than four.
BIEBER = (
    "you know i am looking like justin bieber .",
    "du weißt , dass ich aussehe wie justin bieber .",
    {(0, 0), (1, 1), (2, 2), (5, 4), (6, 8), (7, 5), (7, 6), (7, 7), (7, 8), (8, 9)},
)


def test_nltk_phrase_extraction_returns_inconsistent_pairs_and_ours_does_not():
    """Why `consistent_phrase_pairs` is written here: nltk cuts the five-word target span of
    "justin bieber ." to four words and returns the pair without the "." it links to."""
    source, target, alignment = BIEBER
    nltk_pairs = {
        (s0, s1, t0, t1)
        for (s0, s1), (t0, t1), _, _ in phrase_extraction(source, target, sorted(alignment), 4)
    }
    expected = _brute_force_phrase_pairs(len(source.split()), len(target.split()), alignment, 4)
    assert (6, 9, 5, 9) in nltk_pairs - expected  # "justin bieber ." -> "... bieber" (no ".")
    ours = smt_phrases.consistent_phrase_pairs(
        len(source.split()), len(target.split()), alignment, 4
    )
    assert set(ours) == expected


# Hand-worked lexical weighting (Koehn et al. 2003, section 3.3): "haus" links to "the" as
# well as "house" in the second pair; "ein" and "a" link to nothing in the third.
LEXICAL_PAIRS = [
    ({"source": ["das", "haus"], "target": ["the", "house"]}, {(0, 0), (1, 1)}),
    ({"source": ["das", "haus"], "target": ["the", "house"]}, {(0, 0), (1, 0), (1, 1)}),
    ({"source": ["ein", "haus"], "target": ["a", "house"]}, {(1, 1)}),
]


def test_lexical_translation_by_hand():
    """Links: das-the 2, haus-house 3, haus-the 1, ein-NULL 1, NULL-a 1, so w(e|f) divides
    by das 2, haus 4, ein 1, NULL 1 and w(f|e) by the 3, house 3, a 1, NULL 1."""
    pairs, alignments = zip(*LEXICAL_PAIRS, strict=True)
    e_given_f, f_given_e = smt_phrases.lexical_translation(pairs, alignments)
    NULL = smt_phrases.NULL
    assert e_given_f == pytest.approx(
        {("das", "the"): 1.0, ("haus", "house"): 0.75, ("haus", "the"): 0.25, (NULL, "a"): 1.0}
    )
    assert f_given_e == pytest.approx(
        {("the", "das"): 2 / 3, ("the", "haus"): 1 / 3, ("house", "haus"): 1.0, (NULL, "ein"): 1.0}
    )


def test_extract_phrases_lexical_weights_by_hand():
    """("das haus", "the house") twice: lex(e|f) is 1 * 3/4 with the first pair's alignment
    and (1 + 1/4)/2 * 3/4 with the second's, lex(f|e) 2/3 * 1 and 2/3 * (1/3 + 1)/2; the
    larger of each is kept. ("ein haus", "a house"): "a" and "ein" take w(.|NULL) = 1."""
    pairs, alignments = zip(*LEXICAL_PAIRS, strict=True)
    extracted = smt_baseline.extract_phrases(pairs, alignments, 2)
    counts, lexical = extracted.counts, extracted.lexical
    both = (("das", "haus"), ("the", "house"))
    assert counts[both] == 2
    assert lexical[both] == pytest.approx((math.log(0.75), math.log(2 / 3)))
    assert lexical[("ein", "haus"), ("a", "house")] == pytest.approx((math.log(0.75), 0.0))
    assert set(lexical) == set(counts)
    features = smt_phrases.phrase_features(counts, lexical)
    assert features[both] == pytest.approx((0.0, 0.0, math.log(0.75), math.log(2 / 3)))


def test_lexical_weight_equals_the_link_matrix_formula():
    """log lex against its matrix form on random alignments: with A the 0/1 link matrix
    (given x words) and W[j, i] = w(words_i | given_j), word i contributes
    A[:, i] . W[:, i] / sum(A[:, i]), or w(words_i | NULL) when its column is empty."""
    rng = np.random.default_rng(0)
    vocabulary = [f"w{k}" for k in range(6)]
    for _ in range(200):
        words = list(rng.choice(vocabulary, rng.integers(1, 6)))
        given = list(rng.choice(vocabulary, rng.integers(1, 6)))
        links = rng.random((len(given), len(words))) < 0.35
        table = {
            (g, w): float(rng.uniform(0.05, 1.0)) for g in [*vocabulary, None] for w in vocabulary
        }
        alignment = [(j, i) for j, i in zip(*np.nonzero(links), strict=True)]
        W = np.array([[table[g, w] for w in words] for g in given])
        expected = sum(
            math.log((links[:, i] @ W[:, i]) / links[:, i].sum())
            if links[:, i].any()
            else math.log(table[None, words[i]])
            for i in range(len(words))
        )
        got = smt_phrases.lexical_weight(words, given, alignment, table)
        assert got == pytest.approx(expected)


def test_training_orientations_by_hand():
    """a b c d -> w x y z with b and c crossed (b-y, c-x): read off the alignment, b -> y
    swaps backward (c, after b, links to x, before y) and is discontinuous forward; c -> x is
    discontinuous backward and swaps forward (b, before c, links to y, after x); a -> w opens
    both sentences (monotone backward); d -> z closes them (monotone forward); "b c" -> "x y"
    is monotone both ways (a-w before, d-z after)."""
    pair = {"source": "a b c d".split(), "target": "w x y z".split()}
    alignment = {(0, 0), (1, 2), (2, 1), (3, 3)}
    M, S, D = smt_reordering.MONOTONE, smt_reordering.SWAP, smt_reordering.DISCONTINUOUS
    expected = {
        (("a",), ("w",)): (M, D),
        (("b",), ("y",)): (S, D),
        (("c",), ("x",)): (D, S),
        (("d",), ("z",)): (D, M),
        (("b", "c"), ("x", "y")): (M, M),
    }
    for key, (backward, forward) in expected.items():
        s0 = pair["source"].index(key[0][0])
        t0 = pair["target"].index(key[1][0])
        spans = (s0, s0 + len(key[0]), t0, t0 + len(key[1]))
        assert smt_reordering.training_orientations(alignment, 4, 4, spans) == (backward, forward)
    orientations = smt_baseline.extract_phrases([pair], [alignment], 4).orientations
    for key, (backward, forward) in expected.items():
        want = np.zeros((2, 3))
        want[0, backward] = want[1, forward] = 1
        np.testing.assert_array_equal(orientations[key], want)


def test_decoding_orientation_cases():
    M, S, D = smt_reordering.MONOTONE, smt_reordering.SWAP, smt_reordering.DISCONTINUOUS
    cases = {
        ((), (0, 2)): M,  # the first phrase opens the sentence
        ((), (1, 2)): D,
        ((2, 4), (4, 5)): M,
        ((2, 4), (0, 2)): S,
        ((2, 4), (0, 1)): D,
        ((2, 4), (5, 6)): D,
    }
    for (previous, span), orientation in cases.items():
        assert smt_reordering.decoding_orientation(previous, span) == orientation


def test_reordering_model_estimate_by_hand():
    """Two pairs' counts; priors (summed counts + 0.5 each): backward 2.5, 0.5, 1.5 of 4.5,
    forward a third each. The first pair's backward monotone: (2 + 0.5 * 2.5 / 4.5) / 2.5."""
    counts = {"one": np.array([[2.0, 0, 0], [0, 1, 1]]), "two": np.array([[0.0, 0, 1], [1, 0, 0]])}
    model = smt_reordering.ReorderingModel.estimate(counts, smoothing=0.5)
    assert np.exp(model.prior_backward) == pytest.approx([2.5 / 4.5, 0.5 / 4.5, 1.5 / 4.5])
    assert np.exp(model.prior_forward) == pytest.approx([1 / 3] * 3)
    assert np.exp(model.backward["one"]) == pytest.approx([0.91111111, 0.02222222, 0.06666667])
    assert np.exp(model.forward["two"]) == pytest.approx(
        [(1 + 0.5 / 3) / 1.5, (0.5 / 3) / 1.5, (0.5 / 3) / 1.5]
    )
    for table in (model.backward, model.forward):
        for logs in table.values():
            assert np.exp(logs).sum() == pytest.approx(1.0)
    assert model.backward_score("unseen", smt_reordering.SWAP) == model.prior_backward[1]


def _hypothesis(span):
    return _Hypothesis(src_phrase_span=span, previous=_Hypothesis() if span else None)


def test_distortion_score_limit_and_first_phrase():
    table = PhraseTable()
    decoder = smt_decoder.DistortionLimitedDecoder(table, None, 0.5, distortion_limit=2)
    log_half = math.log(0.5)
    assert decoder.distortion_score(_hypothesis(()), (0, 1)) == 0.0
    assert decoder.distortion_score(_hypothesis(()), (2, 3)) == pytest.approx(2 * log_half)
    assert decoder.distortion_score(_hypothesis((0, 2)), (2, 4)) == 0.0  # monotone
    assert decoder.distortion_score(_hypothesis((0, 1)), (3, 4)) == pytest.approx(2 * log_half)
    assert decoder.distortion_score(_hypothesis((0, 1)), (4, 5)) == -math.inf  # 3 > 2
    assert decoder.distortion_score(_hypothesis((3, 5)), (0, 2)) == -math.inf  # back 5
    decoder.distortion_limit = 6
    assert decoder.distortion_score(_hypothesis((3, 5)), (0, 2)) == pytest.approx(5 * log_half)


# e is seen once: with unk_cutoff 2 it is counted as <UNK>, which gets mass.
SENTENCES = [s.split() for s in ("a b c d", "a b d e", "b c a", "c d a b", "a a b")]


def _trigram_model(unk_cutoff=2):
    model = WittenBellInterpolated(3, vocabulary=Vocabulary(unk_cutoff=unk_cutoff))
    model.fit(*padded_everygram_pipeline(3, SENTENCES))
    return model


def test_decoder_language_model_matches_nltk_lm():
    model = _trigram_model()
    weight = 0.7
    adapter = smt_language_model.DecoderLanguageModel(model, weight)
    previous = _Hypothesis(trg_phrase=("a",), previous=_Hypothesis())
    hypothesis = _Hypothesis(trg_phrase=("b",), previous=previous)  # output so far: a b
    phrase = ("c", "d", "zz")  # zz: unseen, the LM's <UNK>
    expected = weight * sum(
        math.log(model.score(w, c))
        for w, c in (("c", ("a", "b")), ("d", ("b", "c")), ("zz", ("c", "d")))
    )
    assert adapter.probability_change(hypothesis, phrase) == pytest.approx(expected)
    assert adapter.probability_change(hypothesis, phrase) == pytest.approx(expected)  # cached
    start = weight * (math.log(model.score("a", ("<s>", "<s>"))))
    assert adapter.probability_change(_Hypothesis(), ("a",)) == pytest.approx(start)
    no_history = weight * (math.log(model.score("c")) + math.log(model.score("d", ("c",))))
    assert adapter.probability(("c", "d")) == pytest.approx(no_history)
    # A probability of 0 (nltk.lm gives it to <UNK> when no training word became <UNK>) is
    # floored, so that a passed-through word costs much but not -inf.
    strict = _trigram_model(unk_cutoff=1)
    assert strict.score("zz") == 0.0
    floored = smt_language_model.DecoderLanguageModel(strict, 1.0).probability(("zz",))
    assert floored == pytest.approx(math.log(1e-300))


@pytest.mark.parametrize("order", [3, 4, 5])
def test_phrase_probability_without_history_conditions_on_every_earlier_word(order):
    """`probability(phrase)` (the future-cost estimate: a target phrase scored alone) gives
    word i the phrase's words before it, up to order - 1 of them. It had sliced
    `words[len(words) - (order - 1):]`, whose negative start cut the context of the third
    word of a phrase to one word under a 4-gram (and of the fourth under a 5-gram)."""
    model = KneserNeyLM.estimate(SENTENCES, order)
    phrase = ("c", "d", "a", "b", "c")
    adapter = smt_language_model.DecoderLanguageModel(model, 0.7)
    assert adapter.probability(phrase) == pytest.approx(0.7 * _alone_log_probability(model, phrase))


def _alone_log_probability(model, words):
    """log P(words) scored alone, from the n-gram definition: word i given the (up to)
    order - 1 words of `words` before it, no `<s>` and no `</s>`."""
    history = model.order - 1
    return sum(
        math.log(model.score(word, tuple(words[max(i - history, 0) : i])))
        for i, word in enumerate(words)
    )


def test_reference_perplexity_is_the_lms_per_token_perplexity():
    model = KneserNeyLM.estimate(SENTENCES, 3)
    pairs = [{"source": ["x"], "target": ["a", "b", "c"]}, {"source": ["y"], "target": ["d", "zz"]}]
    log_probability = 0.0
    for pair in pairs:
        words = ["<s>", *pair["target"], "</s>"]
        log_probability += sum(
            math.log(model.score(words[i], tuple(words[max(i - 2, 0) : i])))
            for i in range(1, len(words))
        )
    perplexity, left_out = smt_language_model.reference_perplexity(
        smt_language_model.DecoderLanguageModel(model, 0.3), pairs
    )
    assert perplexity == pytest.approx(math.exp(-log_probability / 7)) and left_out == 0
    # nltk's Witten-Bell gives <UNK> probability 0 when no training word was cut to it: "zz"
    # is left out (SRILM's zeroprobs), not scored at the floor of 1e-300 (perplexity 1e75).
    ngrams, words = padded_everygram_pipeline(3, SENTENCES)
    witten_bell = WittenBellInterpolated(3, vocabulary=Vocabulary(unk_cutoff=1))
    witten_bell.fit(ngrams, words)
    pair = {"source": ["x"], "target": ["a", "zz", "b"]}
    scored = [("a", ("<s>", "<s>")), ("b", ("a", "zz")), ("</s>", ("zz", "b"))]
    expected = math.exp(-sum(math.log(witten_bell.score(w, c)) for w, c in scored) / 3)
    perplexity, left_out = smt_language_model.reference_perplexity(
        smt_language_model.DecoderLanguageModel(witten_bell, 1.0), [pair]
    )
    assert perplexity == pytest.approx(expected) and left_out == 1


def test_witten_bell_unigram_counts_the_sentence_end_as_kneser_ney_does():
    """nltk's `padded_everygram_pipeline(1, ...)` pads nothing: `</s>` had probability 0, the
    decoder's sentence end scored at the floor (log 1e-300), one token per sentence left out
    of the perplexity. Now one `</s>` per sentence is counted: P(</s>) = 5 / (18 words + 5)."""
    unigram = smt_language_model.witten_bell(SENTENCES, 1, 1)
    assert unigram.score("</s>") == pytest.approx(5 / 23)
    pair = {"source": ["x"], "target": ["a", "b"]}
    perplexity, left_out = smt_language_model.reference_perplexity(
        smt_language_model.DecoderLanguageModel(unigram, 1.0), [pair]
    )
    assert left_out == 0 and perplexity == pytest.approx((6 / 23 * 5 / 23 * 5 / 23) ** (-1 / 3))


@pytest.mark.parametrize("order", [2, 3, 4])
def test_witten_bell_pads_one_start_and_end_and_sums_to_one_over_what_it_predicts(order):
    """Every order pads as Kneser-Ney does: one `</s>` per sentence (P(</s>) = 5 / 23 with no
    context, as at order 1) and one `<s>`, a context only. nltk's `padded_everygram_pipeline`
    counted order - 1 of each as unigrams: `<s>`, which nothing predicts, took 5 (order - 1)
    of the 18 + 10 (order - 1) unigram counts, so the words a context can be followed by
    summed to 0.41-0.97 here. A history of order - 1 `<s>` (the decoder's padding) backs off
    to one."""
    model = smt_language_model.witten_bell(SENTENCES, order, 2)
    assert model.score("</s>") == pytest.approx(5 / 23) and model.score("<s>") == 0.0
    predictable = sorted(set(model.vocab) - {"<s>"})  # <UNK> (e, seen once) included
    contexts = [(), ("<s>",), ("<s>",) * 3, ("<s>", "a"), ("a", "b"), ("zz", "c"), ("d",)]
    for context in contexts + [("b", "c", "d"), ("<s>", "a", "b")]:
        total = sum(model.score(word, context) for word in predictable)
        assert total == pytest.approx(1.0, abs=1e-12), context
    for word in predictable:
        assert model.score(word, ("<s>",) * (order - 1)) == model.score(word, ("<s>",))


def test_memoised_witten_bell_weights_leave_scores_unchanged():
    """The adapter memoises nltk's γ(context) on the model it wraps: every score stays a fresh
    model's, and wrapping the model again does not memoise twice."""
    wrapped, fresh = _trigram_model(), _trigram_model()
    smt_language_model.DecoderLanguageModel(wrapped, 1.0)
    gamma = wrapped.estimator._gamma
    assert hasattr(gamma, "cache_info")
    smt_language_model.DecoderLanguageModel(wrapped, 0.5)
    assert wrapped.estimator._gamma is gamma
    words = [*"abcde", "zz", "</s>"]
    for context in [(), ("<s>", "<s>"), ("<s>", "a"), ("a", "b"), ("zz", "c"), ("d",)] * 2:
        for word in words:
            assert wrapped.score(word, context) == fresh.score(word, context)
    assert gamma.cache_info().hits > 0


def test_sentence_end_is_scored_when_an_expansion_completes_the_translation():
    model = _trigram_model()
    weight = 0.5
    language_model = smt_language_model.DecoderLanguageModel(model, weight)
    table = PhraseTable()
    table.add(("x",), ("a",), -1.0)
    table.add(("y",), ("b",), -2.0)
    decoder = smt_decoder.DistortionLimitedDecoder(table, language_model, 0.5, 6)
    decoder.sentence_length = 2
    start = _Hypothesis()
    partial = decoder.expansion_score(start, table.translations_for(("x",))[0], (0, 1))
    assert partial == pytest.approx(-1.0 + weight * math.log(model.score("a", ("<s>", "<s>"))))
    first = _Hypothesis(
        raw_score=partial, src_phrase_span=(0, 1), trg_phrase=("a",), previous=start
    )
    complete = decoder.expansion_score(first, table.translations_for(("y",))[0], (1, 2))
    expected = (
        partial
        - 2.0
        + weight * math.log(model.score("b", ("<s>", "a")) * model.score("</s>", ("a", "b")))
    )
    assert complete == pytest.approx(expected)


TINY = [
    ("das haus ist klein", "the house is small"),
    ("das haus ist ja groß", "the house is big"),
    ("das buch ist ja klein", "the book is small"),
    ("das haus", "the house"),
    ("das buch", "the book"),
    ("ein buch", "a book"),
    ("ein haus ist klein", "a house is small"),
]


def test_tiny_corpus_translates_a_seen_sentence_and_passes_unknown_words():
    config = smt_configs.get_config("smoke")
    with config.unlocked():
        config.smt.ibm2_iterations = 5
    pairs = [{"source": s.split(), "target": t.split()} for s, t in TINY]
    system, _ = smt_baseline.train_system(pairs, config.smt)
    assert system.translate("das buch ist ja klein".split()) == "the book is small".split()
    assert system.translate("ein haus".split()) == "a house".split()  # unseen, composed
    assert system.translate("das auto".split()) == "the auto".split()  # auto passes through


@pytest.fixture(scope="module")
def smoke_run(data_root, tmp_path_factory):
    config = cli.load_config(
        SMOKE, {"data.root": str(data_root)}, smt_baseline.RULES, trains=smt_baseline.TRAINS
    )
    workdir = tmp_path_factory.mktemp("smt_baseline")
    smt_baseline.run(config, workdir)
    return config, workdir


@pytest.mark.data
def test_smoke_run_writes_results_table_and_answer(smoke_run):
    config, workdir = smoke_run
    from rnn_jax.bleu import corpus_bleu

    outputs = (workdir / smt_baseline_report.TRANSLATIONS_FILE).read_text().split("\n")[:-1]
    references = (workdir / smt_baseline_report.REFERENCES_FILE).read_text().split("\n")[:-1]
    assert len(outputs) == len(references) == 20
    bleu = json.loads((workdir / "results.json").read_text())["final"]["bleu"]
    assert corpus_bleu(outputs, references, "none") == pytest.approx(bleu)
    results = json.loads((workdir / "results.json").read_text())
    final = results["final"]
    assert all(math.isfinite(v) for v in final.values()), final
    assert 0 < final["bleu"] <= 100 and final["copy_source_bleu"] < final["bleu"]
    assert results["pairs"] == {"train": 300, "scored": 20}
    assert len(results["examples"]) == 20
    table = (workdir / "smt_baseline.md").read_text()
    assert "|---|" in table and f"{final['bleu']:.4g}" in table
    answer = smt_baseline.answers(workdir)[16]
    assert f"{final['bleu']:.2f} BLEU" in answer and "300 Multi30k pairs" in answer
    lm = f"{smt_language_model.LM_NAMES[config.smt.lm_smoothing]} {config.smt.lm_order}-gram"
    assert f"{lm} LM" in answer and f"{lm} LM over" in table
    # The smoke variant tunes (one MERT iteration on 10 val pairs): two decodes, the kept
    # weights those of the better one, and the run's test outputs decoded with them.
    tuning = results["tuning"]
    assert tuning["pairs"] == 10 and len(tuning["history"]) == 2
    decoded = [r["decoded_bleu"] for r in tuning["history"]]
    assert tuning["tuned_bleu"] == max(decoded) and tuning["initial_bleu"] == decoded[0]
    best = tuning["history"][decoded.index(max(decoded))]["weights"]
    assert tuning["weights"] == pytest.approx(best)
    assert "MERT" in table and "MERT on 10 val pairs" in answer


@pytest.fixture(scope="module", autouse=True)
def bad_config_run(tmp_path_factory):
    """test_bad_config_value_exits_2_naming_the_key's command line, started with the module's
    first test: it runs (mostly imports, on one core) beside the others."""
    workdir = tmp_path_factory.mktemp("smt_bad_config") / "run"
    run = StartedModule(
        "experiments.smt_baseline",
        f"--workdir={workdir}",
        f"--config={SMOKE}",
        "--config.smt.max_phrase_length=0",
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    yield workdir, run
    run.close()


def test_bad_config_value_exits_2_naming_the_key(bad_config_run):
    workdir, run = bad_config_run
    proc = run.result()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "smt.max_phrase_length=0: must be an integer >= 1" in proc.stderr
    assert not workdir.exists()


@pytest.mark.data
def test_answer_compares_with_the_nmt_run_beside_it_on_the_same_pairs(smoke_run, tmp_path):
    """In the main job's layout (W/smt_baseline beside W/exposure_bias) the answer quotes the
    best NMT regime trained and scored on as many pairs; other NMT points are ignored."""
    _, workdir = smoke_run
    (tmp_path / "smt_baseline").mkdir()
    (tmp_path / "smt_baseline" / "results.json").write_text((workdir / "results.json").read_text())
    same = {"train": 300, "valid": 7, "test": 20}
    points = {
        "multi30k-teacher_forcing": {
            "corpus": "multi30k",
            "regime": "teacher_forcing",
            "pairs": same,
            "metrics": {"test_greedy_bleu": [1.0, None], "test_beam_bleu": [2.0, 3.0]},
        },
        "multi30k-free_running": {
            "corpus": "multi30k",
            "regime": "free_running",
            "pairs": same,
            "metrics": {"test_greedy_bleu": [0.5, 0.5], "test_beam_bleu": [0.5, 1.5]},
        },
        "multi30k-other-data": {
            "corpus": "multi30k",
            "regime": "linear",
            "pairs": {"train": 10_000, "valid": 720, "test": 749},
            "metrics": {"test_greedy_bleu": [90.0], "test_beam_bleu": [90.0]},
        },
        "markov-teacher_forcing": {"corpus": "markov", "regime": "teacher_forcing"},
    }
    (tmp_path / "exposure_bias").mkdir()
    (tmp_path / "exposure_bias" / "results.json").write_text(json.dumps({"points": points}))
    answer = smt_baseline.answers(tmp_path / "smt_baseline")[16]
    bleu = json.loads((workdir / "results.json").read_text())["final"]["bleu"]
    assert "(teacher_forcing) scores 2.50 beam / 1.00 greedy" in answer
    assert f"SMT is {bleu - 2.5:.1f} BLEU ahead" in answer and "90.00" not in answer
    assert "approximate randomisation" not in answer  # no NMT output files to test with
    above = json.loads(json.dumps(points))  # an NMT ahead of the SMT: the other sentence
    above["multi30k-teacher_forcing"]["metrics"]["test_beam_bleu"] = [bleu + 1.0, bleu + 3.0]
    (tmp_path / "exposure_bias" / "results.json").write_text(json.dumps({"points": above}))
    answer = smt_baseline.answers(tmp_path / "smt_baseline")[16]
    message = (
        f"(teacher_forcing) scores {bleu + 2.0:.2f} beam / 1.00 greedy (mean of 1 of 2 seeds), "
        "2.0 BLEU above SMT."
    )
    assert message in answer
    assert "ahead" not in answer and "not reproduced" not in answer

    # With the NMT point's outputs beside it (seed 0: the references themselves; seed 1: the
    # SMT's own output), the answer adds a paired test per seed; on other references, none.
    smt_dir = tmp_path / "smt_baseline"
    for name in (smt_baseline_report.TRANSLATIONS_FILE, smt_baseline_report.REFERENCES_FILE):
        (smt_dir / name).write_text((workdir / name).read_text())
    references = (workdir / smt_baseline_report.REFERENCES_FILE).read_text()
    assert len(references.splitlines()) == 20
    point_dir = tmp_path / "exposure_bias" / "points" / "multi30k-teacher_forcing"
    point_dir.mkdir(parents=True)
    (point_dir / "refs.txt").write_text(references)
    (point_dir / "beam0.txt").write_text(references)
    (point_dir / "beam1.txt").write_text(
        (workdir / smt_baseline_report.TRANSLATIONS_FILE).read_text()
    )
    points["multi30k-teacher_forcing"]["translations"] = {
        "references": "refs.txt",
        "beam": ["beam0.txt", "beam1.txt"],
    }
    (tmp_path / "exposure_bias" / "results.json").write_text(json.dumps({"points": points}))
    answer = smt_baseline.answers(smt_dir)[16]
    assert "Paired approximate randomisation (10,000 trials" in answer
    assert f"{100 - bleu:+.2f} BLEU, p = 0.0001, +0.00 BLEU, p = 1.0000." in answer
    (point_dir / "refs.txt").write_text(references.replace("\n", " x\n", 1))
    assert "approximate randomisation" not in smt_baseline.answers(smt_dir)[16]


def _fake_runs(root, smt_bleu, greedy, beam):
    """W/smt_baseline/results.json (a test-split SMT run on 300 + 20 pairs, only the keys
    `answers` reads) beside W/exposure_bias/results.json with one Multi30k point on the same
    pairs whose per-seed test BLEU are `greedy` and `beam`; the SMT run's folder."""
    smt = root / "smt_baseline"
    smt.mkdir()
    (smt / "results.json").write_text(
        json.dumps(
            {
                "final": {"bleu": smt_bleu, "copy_source_bleu": 1.0},
                "pairs": {"train": 300, "scored": 20},
                "split": "test",
                "config": {"smt": {"lm_order": 3}},
            }
        )
    )
    point = {
        "corpus": "multi30k",
        "regime": "teacher_forcing",
        "pairs": {"train": 300, "valid": 7, "test": 20},
        "metrics": {"test_greedy_bleu": greedy, "test_beam_bleu": beam},
    }
    (root / "exposure_bias").mkdir()
    (root / "exposure_bias" / "results.json").write_text(
        json.dumps({"points": {"multi30k-teacher_forcing": point}})
    )
    return smt


@pytest.mark.parametrize(
    "beam, verdict",
    [
        (
            20.0,
            "19.00 greedy, level with SMT (less than 0.05 BLEU apart), so 'NMT significantly "
            "outperformed phrase-based SMT' is not reproduced at this NMT budget.",
        ),
        (20.04, "19.00 greedy, level with SMT"),  # 0.04 above prints 0.0: level
        (19.96, "19.00 greedy, level with SMT"),  # 0.04 below too
        (20.1, "19.00 greedy, 0.1 BLEU above SMT."),
        (19.9, "19.00 greedy: at this budget SMT is 0.1 BLEU ahead, so"),
    ],
)
def test_answer_calls_a_margin_that_prints_as_0_0_level(tmp_path, beam, verdict):
    """The margin prints to 0.1 BLEU and the verdict goes by the printed value: a tie (exact,
    or < 0.05 either way) read "0.0 BLEU above SMT" or "SMT is 0.0 BLEU ahead"."""
    answer = smt_baseline_report.answers(_fake_runs(tmp_path, 20.0, [19.0, 19.0], [beam, beam]))
    assert verdict in answer[16] and " 0.0 BLEU" not in answer[16]


def test_answer_says_how_many_seeds_the_nmt_mean_covers(tmp_path):
    """A seed whose BLEU is not finite is dropped from the NMT's mean (`grid.nan_mean`), and
    the answer says how many seeds the mean covers; with every seed finite it says nothing."""
    (tmp_path / "dropped").mkdir()
    smt = _fake_runs(tmp_path / "dropped", 20.0, [19.0, 19.0, None], [22.0, None, math.nan])
    regime, greedy, beam = smt_baseline_report.nmt_bleu(smt, {"train": 300, "scored": 20})
    assert regime == "teacher_forcing"
    assert (greedy.mean, greedy.finite, greedy.seeds) == (19.0, 2, 3)
    assert (beam.mean, beam.finite, beam.seeds) == (22.0, 1, 3)
    answer = smt_baseline_report.answers(smt)[16]
    assert (
        "scores 22.00 beam (mean of 1 of 3 seeds) / 19.00 greedy (mean of 2 of 3 seeds), "
        "2.0 BLEU above SMT." in answer
    )
    (tmp_path / "finite").mkdir()
    answer = smt_baseline_report.answers(_fake_runs(tmp_path / "finite", 20.0, [19.0], [22.0]))
    assert "scores 22.00 beam / 19.00 greedy, 2.0 BLEU above SMT." in answer[16]
    assert "seeds" not in answer[16]


def test_answer_prints_a_tiny_p_value_by_p_value_text(tmp_path, monkeypatch):
    """The per-seed paired tests' p-values print by `significance.p_value_text`: at 100,000
    trials the smallest p, 1 / 100,001, read "p = 0.0000"."""
    tests = [{"samples": 100_000, "difference": 2.0, "p_value": 1 / 100_001}]
    monkeypatch.setattr(smt_baseline_report, "nmt_significance", lambda workdir, regime: tests)
    answer = smt_baseline_report.answers(_fake_runs(tmp_path, 20.0, [19.0], [22.0]))[16]
    assert "per NMT seed: +2.00 BLEU, p = 1.0e-05." in answer and "0.0000" not in answer


# The stack decoder's search: brute force, recombination, the old (nltk) search.


def _brute_force_best(
    sentence, table, model, weight, limit, factor, word_penalty, reordering=None, weights=None
):
    """(score, output, order of source spans) of the best complete translation, enumerating
    every order of source phrases and every translation of each, scored from the model's
    definition rather than the decoder's code: phrase log-probabilities + weight * log P(output
    </s>) under the n-gram `model` with order - 1 <s> before it + log(factor) * |start -
    previous end| per phrase (end 0 before the first) - word_penalty per output word; with a
    `reordering` model, + `_reordering_score` of the whole derivation. The orders allowed are
    Moses's: each jump within `limit`, and a phrase that leaves the first untranslated word
    behind ends within `limit` of it."""
    length, best = len(sentence), (-math.inf, None, None)

    def lm(output):
        history = model.order - 1
        words = ["<s>"] * history + [*output, "</s>"]
        return sum(
            math.log(model.score(words[i], tuple(words[i - history : i])))
            for i in range(history, len(words))
        )

    def extend(covered, end, score, output, order, phrases=()):
        nonlocal best
        if len(covered) == length:
            score += weight * lm(output)
            if reordering is not None:
                score += _reordering_score(sentence, order, phrases, reordering, weights)
            if score > best[0]:
                best = (score, output, order)
            return
        first_gap = min(set(range(length)) - covered)
        for start in range(length):
            for stop in range(start + 1, length + 1):
                span, phrase = set(range(start, stop)), tuple(sentence[start:stop])
                if span & covered or phrase not in table or abs(start - end) > limit:
                    continue
                if start != first_gap and abs(stop - first_gap) > limit:
                    continue
                for option in table.translations_for(phrase):
                    extend(
                        covered | span,
                        stop,
                        score
                        + option.log_prob
                        + abs(start - end) * math.log(factor)
                        - word_penalty * len(option.trg_phrase),
                        output + option.trg_phrase,
                        (*order, (start, stop)),
                        (*phrases, option.trg_phrase),
                    )

    extend(frozenset(), 0, 0.0, (), ())
    return best


def _reordering_score(sentence, order, phrases, model, weights):
    """weights . (sum of backward, sum of forward) log-probabilities of a derivation (source
    spans `order` translated as `phrases`), from the definitions: phrase k's orientation is
    monotone if it starts where phrase k-1 ends (0 for k = 0), swap if it ends where phrase
    k-1 starts, else discontinuous; phrase k's pair scores it backward, phrase k-1's pair
    forward; the last pair scores the sentence end forward (monotone iff it ends the
    sentence)."""
    pairs = [(tuple(sentence[a:b]), phrase) for (a, b), phrase in zip(order, phrases, strict=True)]
    backward = forward = 0.0
    for k, (start, stop) in enumerate(order):
        before = order[k - 1] if k else None
        if start == (before[1] if before else 0):
            orientation = smt_reordering.MONOTONE
        elif before is not None and stop == before[0]:
            orientation = smt_reordering.SWAP
        else:
            orientation = smt_reordering.DISCONTINUOUS
        backward += model.backward.get(pairs[k], model.prior_backward)[orientation]
        if k:
            forward += model.forward.get(pairs[k - 1], model.prior_forward)[orientation]
    end = smt_reordering.MONOTONE if order[-1][1] == len(sentence) else smt_reordering.DISCONTINUOUS
    forward += model.forward.get(pairs[-1], model.prior_forward)[end]
    return weights[0] * backward + weights[1] * forward


@functools.cache
def _random_case(seed):
    """5 source words, each with 1-2 translations of 1-3 target words (the tiny LM's words and
    an unknown one, or only two of them), some spans of 2-3 words too; a random distortion
    limit, factor and word penalty."""
    rng = random.Random(seed)
    # Often one or two target words: outputs that end alike, so that recombination matters.
    targets = [*"abcde", "zz"][: rng.choice([1, 2, 6])]
    sentence, table = [f"s{i}" for i in range(5)], PhraseTable()
    for start in range(5):
        for stop in range(start + 1, min(start + 3, 5) + 1):
            if stop - start > 1 and rng.random() < 0.5:
                continue
            for option in {tuple(rng.choices(targets, k=rng.randint(1, 3))) for _ in range(2)}:
                table.add(tuple(sentence[start:stop]), option, -rng.uniform(0.0, 3.0))
    limit, factor = rng.choice([1, 2, 6]), rng.choice([0.3, 0.5, 0.9])
    return sentence, table, limit, factor, rng.choice([-0.5, 0.0, 0.5])


BRUTE_FORCE_SEEDS = range(40)


@functools.cache
def _random_case_best(seed):
    sentence, table, limit, factor, word_penalty = _random_case(seed)
    return _brute_force_best(sentence, table, _trigram_model(), 0.7, limit, factor, word_penalty)


@pytest.mark.parametrize("seed", BRUTE_FORCE_SEEDS)
def test_decoder_with_a_large_stack_finds_the_brute_force_best(seed):
    """With stacks too large to prune, the decoder (with recombination and without) returns
    the brute-force argmax and its score: the search and its scoring (nltk's phrase, LM,
    distortion and word-penalty terms, the sentence end, the distortion limit) are exact."""
    sentence, table, limit, factor, word_penalty = _random_case(seed)
    model, weight, expected = _trigram_model(), 0.7, _random_case_best(seed)
    decoder = smt_decoder.DistortionLimitedDecoder(
        table, smt_language_model.DecoderLanguageModel(model, weight), factor, limit
    )
    decoder.word_penalty = word_penalty
    _assert_unpruned_search_finds(decoder, sentence, expected)


@pytest.mark.parametrize("seed", range(20))
def test_decoder_with_a_kneser_ney_4gram_finds_the_brute_force_best(seed):
    """The same with the modified Kneser-Ney 4-gram, whose recombination state is KenLM's
    minimal one (`KneserNeyLM.state`, often shorter than three words): still exact."""
    sentence, table, limit, factor, word_penalty = _random_case(seed)
    model, weight = KneserNeyLM.estimate(SENTENCES, 4, unk_cutoff=2), 0.7
    expected = _brute_force_best(sentence, table, model, weight, limit, factor, word_penalty)
    decoder = smt_decoder.DistortionLimitedDecoder(
        table, smt_language_model.DecoderLanguageModel(model, weight), factor, limit
    )
    decoder.word_penalty = word_penalty
    _assert_unpruned_search_finds(decoder, sentence, expected)


def _assert_unpruned_search_finds(decoder, sentence, expected):
    """With and without recombination, at a stack too large to prune, `decoder` returns the
    brute-force best (score, output) `expected`."""
    decoder.stack_size = 100_000
    for recombination in (True, False):
        decoder.recombination = recombination
        best = decoder.decode(sentence)
        assert best.raw_score == pytest.approx(expected[0], abs=1e-9)
        assert tuple(best.translation_so_far()) == expected[1]
        assert decoder.translate(sentence) == list(expected[1])


def _random_reordering(seed, table, sentence):
    """(model, weights): random log-probabilities of the orientations for most of `table`'s
    pairs (the rest take random priors), strongly uneven so that they move the argmax, and
    random weights for its two features."""
    rng = np.random.default_rng(seed)

    def logs():
        return tuple(np.log(rng.dirichlet([0.3, 0.3, 0.3]) + 1e-3).tolist())

    backward, forward = {}, {}
    for start in range(len(sentence)):
        for stop in range(start + 1, len(sentence) + 1):
            phrase = tuple(sentence[start:stop])
            if phrase not in table:
                continue
            for option in table.translations_for(phrase):
                if rng.random() < 0.8:
                    backward[phrase, option.trg_phrase] = logs()
                if rng.random() < 0.8:
                    forward[phrase, option.trg_phrase] = logs()
    model = smt_reordering.ReorderingModel(backward, forward, logs(), logs())
    weights = tuple(np.random.default_rng(seed + 100).uniform(0.2, 1.5, size=2).tolist())
    return model, weights


@pytest.mark.parametrize("seed", range(40))
def test_decoder_with_lexicalised_reordering_finds_the_brute_force_best(seed):
    """The same with a random lexicalised reordering model at random weights: the decoder's
    orientation scores and its finer recombination state (the last phrase pair) are exact."""
    sentence, table, limit, factor, word_penalty = _random_case(seed)
    reordering, weights = _random_reordering(seed, table, sentence)
    model, weight = _trigram_model(), 0.7
    expected = _brute_force_best(
        sentence, table, model, weight, limit, factor, word_penalty, reordering, weights
    )
    decoder = smt_decoder.DistortionLimitedDecoder(
        table, smt_language_model.DecoderLanguageModel(model, weight), factor, limit, reordering
    )
    decoder.reordering_weights, decoder.word_penalty = weights, word_penalty
    _assert_unpruned_search_finds(decoder, sentence, expected)


def test_lexicalised_reordering_changes_some_brute_force_argmaxes():
    """The reordering cases above are not the distance-only ones in disguise."""
    changed = 0
    for seed in range(20):
        sentence, table, limit, factor, word_penalty = _random_case(seed)
        reordering, weights = _random_reordering(seed, table, sentence)
        with_reordering = _brute_force_best(
            sentence, table, _trigram_model(), 0.7, limit, factor, word_penalty, reordering, weights
        )
        changed += with_reordering[1:] != _random_case_best(seed)[1:]
    assert changed >= 3


def test_brute_force_cases_reorder():
    """The cases above are not all monotone: some argmaxes translate the phrases out of order."""
    orders = [_random_case_best(seed)[2] for seed in BRUTE_FORCE_SEEDS]
    assert sum(list(order) != sorted(order) for order in orders) >= 2


def _chain(*steps):
    """A `smt_decoder.Hypothesis` built from (span, target phrase, raw score) steps."""
    hypothesis = smt_decoder.Hypothesis()
    for span, phrase, score in steps:
        hypothesis = smt_decoder.Hypothesis(score, span, tuple(phrase.split()), hypothesis)
    return hypothesis


def test_hypothesis_caches_agree_with_nltk_chain_walk():
    hypothesis = _chain(((2, 4), "c d", -1.0), ((0, 1), "a", -2.0))
    assert hypothesis.coverage == 0b1101
    assert sorted(hypothesis.translated_positions()) == [0, 2, 3]
    assert hypothesis.total_translated_words() == 3
    assert hypothesis.translation_so_far() == ["c", "d", "a"]
    assert hypothesis.untranslated_spans(5) == [(1, 2), (4, 5)]
    plain = _Hypothesis(-2.0, (0, 1), ("a",), _Hypothesis(-1.0, (2, 4), ("c", "d"), _Hypothesis()))
    assert sorted(plain.translated_positions()) == [0, 2, 3]
    assert plain.translation_so_far() == hypothesis.translation_so_far()


def test_recombination_state_is_coverage_lm_history_and_last_end():
    decoder = smt_decoder.DistortionLimitedDecoder(
        PhraseTable(), smt_language_model.DecoderLanguageModel(_trigram_model(), 1.0), 0.5, 6
    )
    two_phrases = _chain(((0, 1), "x a", -1.0), ((1, 2), "b", -2.0))
    one_phrase = _chain(((0, 2), "y a b", -5.0))
    assert decoder.recombination_state(two_phrases) == (0b11, ("a", "b"), 2)
    assert decoder.recombination_state(one_phrase) == decoder.recombination_state(two_phrases)
    # The same coverage and last words, but the next jump counts from another end.
    swapped = _chain(((1, 2), "x a", -1.0), ((0, 1), "b", -2.0))
    assert decoder.recombination_state(swapped) == (0b11, ("a", "b"), 1)
    # A short output's history is <s>-padded, so "b" alone differs from "... a b".
    short = _chain(((0, 2), "b", -1.0))
    assert decoder.recombination_state(short) == (0b11, ("<s>", "b"), 2)
    assert decoder.recombination_state(_chain()) == (0, ("<s>", "<s>"), 0)
    # Kneser-Ney: the longest suffix of the last words seen as a context, so outputs that
    # differ only where the model cannot see recombine.
    kneser_ney = KneserNeyLM.estimate(SENTENCES, 4)
    decoder.language_model = smt_language_model.DecoderLanguageModel(kneser_ney, 1.0)
    assert decoder.recombination_state(two_phrases) == (0b11, ("a", "b"), 2)  # "x a b" unseen
    assert decoder.recombination_state(_chain(((0, 2), "e e a b", -1.0))) == (0b11, ("a", "b"), 2)
    assert decoder.recombination_state(_chain(((0, 2), "c d a b", -1.0))) == (
        0b11,
        ("d", "a", "b"),
        2,
    )
    assert decoder.recombination_state(short) == (0b11, ("<s>", "b"), 2)
    assert decoder.recombination_state(_chain()) == (0, ("<s>",), 0)


def test_recombining_stack_keeps_the_better_of_two_equivalent_hypotheses():
    worse, better = _chain(((0, 2), "a b", -5.0)), _chain(((0, 2), "a b", -3.0))
    other = _chain(((0, 2), "c b", -9.0))
    for first, second in ((worse, better), (better, worse)):
        stack = smt_decoder.RecombiningStack()
        stack.push("state", first)
        stack.push("state", second)
        stack.push("other state", other)
        assert stack.pruned(10) == [better, other]
        assert stack.pruned(1) == [better]
    # Ties keep the first pushed; ranking uses score() = raw + future score.
    tied, late = _chain(((0, 2), "a b", -3.0)), _chain(((0, 2), "a b", -4.0))
    late.future_score = 2.0
    stack = smt_decoder.RecombiningStack()
    for hypothesis in (better, tied, late):
        stack.push("state", hypothesis)
    assert stack.pruned(10) == [late]
    stack = smt_decoder.RecombiningStack()
    stack.push("state", better)
    stack.push("state", tied)
    assert stack.pruned(10) == [better]


def test_recombining_stack_prunes_like_nltk_stack():
    """Histogram pruning to `size` and nltk's beam threshold (dropping hypotheses scoring below
    threshold x the best, in probability) give nltk `_Stack`'s hypotheses, in its order."""
    rng = random.Random(1)
    for size, threshold in ((3, 0.0), (5, 0.2), (100, 0.5), (1, 0.0)):
        hypotheses = [_chain(((0, 1), "a", -rng.choice([0.5, 1.0, 2.0, 3.0]))) for _ in range(20)]
        stack, reference = smt_decoder.RecombiningStack(), _Stack(size, threshold)
        for hypothesis in hypotheses:
            stack.push(hypothesis, hypothesis)  # every hypothesis its own state
            reference.push(hypothesis)
        assert stack.pruned(size, threshold) == list(reference)


def test_reorderable_is_the_distortion_limit_and_moses_first_gap_rule():
    decoder = smt_decoder.DistortionLimitedDecoder(PhraseTable(), None, 0.5, distortion_limit=2)
    start = _chain()
    assert decoder.reorderable(start, (1, 2))  # jump 1, then 2 back to word 0
    assert not decoder.reorderable(start, (2, 3))  # jump 2, but 3 back to word 0: dead end
    assert not decoder.reorderable(start, (3, 4))  # jump 3
    assert decoder.reorderable(start, (0, 4))  # starts at the first gap: any length
    one = _chain(((1, 2), "b", -1.0))
    assert decoder.reorderable(one, (0, 1)) and not decoder.reorderable(one, (2, 3))
    gap = _chain(((0, 1), "a", -1.0), ((2, 3), "c", -1.0))  # first gap 1, last end 3
    assert decoder.reorderable(gap, (1, 2))
    assert not decoder.reorderable(gap, (3, 4))  # jump 0, but 3 back to word 1
    filled = _chain(((0, 1), "a", -1.0), ((2, 3), "c", -1.0), ((1, 2), "b", -1.0))
    assert decoder.reorderable(filled, (3, 4)) and decoder.reorderable(filled, (4, 5))
    assert not decoder.reorderable(filled, (5, 6))  # jump 3


def _future_cost_reference(sentence, table, model, weight, word_penalty):
    """The future-cost table from its definition (Koehn, *Statistical Machine Translation*,
    2010, section 6.3.3; Moses's translation options' future scores): for each source span,
    the best over its segmentations into phrases of the table of the summed best estimate per
    phrase, an option's estimate being its phrase score, the weighted LM log-probability of
    its *target* words scored alone (no context before the first) and the word penalty per
    target word. Segmentations by brute force over every set of cut points."""

    def estimate(option):
        words = option.trg_phrase
        lm = _alone_log_probability(model, words)
        return option.log_prob + weight * lm - word_penalty * len(words)

    costs = {}
    for start in range(len(sentence)):
        for end in range(start + 1, len(sentence) + 1):
            inner, best = range(start + 1, end), -math.inf
            for cuts in itertools.product((False, True), repeat=len(inner)):
                bounds = [start, *(p for p, cut in zip(inner, cuts, strict=True) if cut), end]
                total = 0.0
                for a, b in itertools.pairwise(bounds):
                    phrase = tuple(sentence[a:b])
                    if phrase not in table:
                        total = -math.inf
                        break
                    total += max(map(estimate, table.translations_for(phrase)))
                best = max(best, total)
            costs[start, end] = best
    return costs


@pytest.mark.parametrize("seed", range(20))
def test_future_cost_table_scores_target_phrases_by_their_definition(seed):
    """The decoder's future-cost estimate of every source span against its definition. nltk's
    `StackDecoder.compute_future_scores` (3.10.4) scored the *source* phrase with the target
    LM (source words are `<UNK>` to it, so a span's cost depended on which source words the
    target language happens to share) beside the best option by phrase score alone, and left
    out the word penalty that every expansion pays."""
    sentence, table, _, factor, word_penalty = _random_case(seed)
    for model in (_trigram_model(), KneserNeyLM.estimate(SENTENCES, 4, unk_cutoff=2)):
        decoder = smt_decoder.DistortionLimitedDecoder(
            table, smt_language_model.DecoderLanguageModel(model, 0.7), factor, 6
        )
        decoder.word_penalty = word_penalty
        got = decoder.compute_future_scores(tuple(sentence))
        expected = _future_cost_reference(sentence, table, model, 0.7, word_penalty)
        for (start, end), cost in expected.items():
            assert got[start][end] == pytest.approx(cost, abs=1e-9), (start, end)


@pytest.mark.data
def test_decoder_scores_at_least_nltk_search_at_equal_stack_size(data_root, monkeypatch):
    """On the smoke system (300 training pairs) and its 20 test2016 sentences, at stack 5, the
    decoder's best model score against nltk's own search (`StackDecoder.translate`, the old
    decoder) with the same scoring. Nothing guarantees >= sentence by sentence (both prune,
    and nltk's search also reaches orders that Moses's first-gap rule forbids); measured: >=
    on all 20 here, and on 198 of the first 200 val pairs for the quick system at stacks 10
    and 30 (session 16). Since the lexical weights and the lexicalised reordering (session
    18): >= on 19 of the 20, higher in sum; on the one below, -70.27 against -69.99, the
    decoder's stack of 5 pruned the better derivations (at stack 50 it finds -61.73: a search
    error, not a forbidden order). Where nltk's best is -inf (a dead end past the distortion
    limit, which nltk still returns; 2 of the 20), the decoder's is finite. Since the future
    cost estimates target phrases (`compute_future_scores`, used by both searches here): >=
    on all 20, and nltk's search returned no -inf (before it: 19 of 20, -94.82 against -94.40
    on the one below, with 2 -inf). Since IBM Models' EM counts every position
    (`experiments.ibm_models`, session 36): >= on all 20, equal on the 19 where nltk's search
    is finite, -inf from it on one."""
    config = smt_configs.get_config("smoke")
    with config.unlocked():
        config.data.root = str(data_root)
    pairs = smt_baseline.load_pairs(config)
    system, _ = smt_baseline.train_system(pairs["train"], config.smt)
    decoder = system.decoder
    assert decoder.stack_size == 5
    returned = []
    best = _Stack.best
    monkeypatch.setattr(_Stack, "best", lambda stack: returned.append(best(stack)) or best(stack))
    ours, nltk_search = [], []
    for pair in pairs["test"]:
        system.translate(pair["source"])  # adds the pass-through words to the table
        ours.append(decoder.decode(pair["source"]).raw_score)
        decoder.sentence_length = len(pair["source"])
        StackDecoder.translate(decoder, pair["source"])
        nltk_search.append(returned[-1].raw_score)
    assert all(math.isfinite(score) for score in ours)
    at_least = [a >= b - 1e-9 for a, b in zip(ours, nltk_search, strict=True)]
    assert sum(at_least) >= 19
    assert all(ours[i] > -math.inf for i, b in enumerate(nltk_search) if b == -math.inf)
    both_finite = [(a, b) for a, b in zip(ours, nltk_search, strict=True) if b > -math.inf]
    assert sum(a for a, _ in both_finite) >= sum(b for _, b in both_finite)


@pytest.fixture(
    scope="module", params=[("witten-bell", 3), ("modified-kneser-ney", 5)], ids=["wb3", "kn5"]
)
def tiny_system(request):
    config = smt_configs.get_config("smoke")
    with config.unlocked():
        config.smt.ibm2_iterations, config.smt.stack_size = 5, 1000
        config.smt.lm_smoothing, config.smt.lm_order = request.param
    pairs = [{"source": s.split(), "target": t.split()} for s, t in TINY]
    system, _ = smt_baseline.train_system(pairs, config.smt)
    return system


@pytest.mark.parametrize(
    "weights",
    [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, math.log(0.5), 1.0, 1.0, 0.0],  # the config's defaults
        [0.3, 1.7, 0.4, 0.9, 0.6, 0.8, -0.9, 0.5, 1.4, -1.3],  # every feature weighted
        [1.2, -0.4, 0.7, -0.3, 1.5, -0.5, 0.2, -0.6, 0.3, 0.7],  # negative weights, jumps rewarded
    ],
)
def test_nbest_features_reproduce_the_model_score_and_the_one_best(tiny_system, weights):
    """An n-best entry's features, recomputed from its derivation, give the decoder's own
    score: raw_score == weights · features (MERT's line search relies on it); the list holds
    different outputs, best first, and its first is `translate`'s output."""
    system = tiny_system
    system.set_weights(weights)
    for sentence in ("das haus ist ja klein", "ein buch ist groß", "das auto ist ein haus"):
        source = sentence.split()
        system._pass_through_unknown(source)
        hypotheses = system.decoder.decode_nbest(source, 50)
        assert len(hypotheses) > 1
        outputs = [h.output for h in hypotheses]
        assert len(set(outputs)) == len(outputs)
        scores = [h.raw_score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        for hypothesis in hypotheses:
            features = system.features(source, hypothesis)
            assert float(np.dot(weights, features)) == pytest.approx(hypothesis.raw_score)
        nbest = system.nbest(source, 50)
        assert [h for h, _ in nbest] == [" ".join(o) for o in outputs]
        assert nbest[0][0].split() == system.translate(source)


def test_set_weights_rejects_a_vector_of_the_wrong_length(tiny_system):
    with pytest.raises(ValueError, match="one per feature"):
        tiny_system.set_weights([1.0, 1.0])


def test_config_weights_are_the_decoders_defaults():
    smt = smt_configs.get_config("quick").smt
    weights = smt_system.config_weights(smt)
    assert dict(zip(smt_system.FEATURES, weights, strict=True)) == pytest.approx(
        {
            "log φ(e|f)": smt.weight_forward,
            "log φ(f|e)": smt.weight_backward,
            "log lex(e|f)": smt.weight_lexical_forward,
            "log lex(f|e)": smt.weight_lexical_backward,
            "LM": smt.weight_lm,
            "words": -smt.word_penalty,
            "distortion": math.log(smt.distortion_factor),
            "reordering (backward)": smt.weight_reordering_backward,
            "reordering (forward)": smt.weight_reordering_forward,
            "phrases": -smt.phrase_penalty,
        }
    )


@pytest.mark.data
def test_tuning_on_the_scored_split_is_refused(tmp_path, data_root):
    config = cli.load_config(
        SMOKE,
        {"data.root": str(data_root), "smt.eval_split": "valid", "smt.mert_iterations": 1},
        smt_baseline.RULES,
        trains=smt_baseline.TRAINS,
    )
    with pytest.raises(smt_baseline.cfg.ConfigError, match="MERT tunes on val"):
        smt_baseline.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_data_root_without_multi30k_is_named(tmp_path):
    config = smt_configs.get_config("smoke")
    config.data.root = str(tmp_path)
    with pytest.raises(ValueError, match=rf"data\.root='{tmp_path}': no {tmp_path}/multi30k/tok"):
        smt_baseline.load_pairs(config)
