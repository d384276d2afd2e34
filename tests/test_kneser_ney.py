"""The modified Kneser-Ney LM (`experiments.kneser_ney`) against a direct transcription of
Chen & Goodman's formulas that recounts everything from the padded sentences on every call,
normalisation over the vocabulary, and the exactness of its recombination `state`."""

import collections
import itertools
import random

import pytest

from experiments import kneser_ney
from experiments.kneser_ney import BOS, EOS, UNK, KneserNeyLM

# "e" is seen once (with unk_cutoff 2 it becomes <UNK>); "a b" recurs, so counts reach 3+.
SENTENCES = [
    s.split()
    for s in (
        "a b c d",
        "a b d e",
        "b c a",
        "c d a b",
        "a a b",
        "a b c",
        "d a b c d",
        "b b a b",
    )
]


def _random_corpus(seed):
    rng = random.Random(seed)
    words = list("abcdefg")[: rng.randint(3, 7)]
    return [rng.choices(words, k=rng.randint(1, 8)) for _ in range(rng.randint(4, 30))]


class _Naive:
    """p(w | h) straight from the definitions, recounting the padded sentences each time."""

    def __init__(self, sentences, order, unk_cutoff=1):
        frequencies = collections.Counter(w for s in sentences for w in s)
        known = {w for w, c in frequencies.items() if c >= unk_cutoff}
        self.padded = [(BOS, *(w if w in known else UNK for w in s), EOS) for s in sentences]
        self.vocab = known | {EOS, UNK}
        self.order = order

    def occurrences(self, ngram):
        """(sentence, start) of every occurrence of `ngram`."""
        k = len(ngram)
        return [(s, i) for s in self.padded for i in range(len(s) - k + 1) if s[i : i + k] == ngram]

    def adjusted(self, ngram):
        if ngram == (BOS,):
            return 0
        if len(ngram) == self.order or ngram[0] == BOS:
            return len(self.occurrences(ngram))
        return len({s[i - 1] for s, i in self.occurrences(ngram)})

    def types(self, k):
        """Every distinct k-gram with a positive adjusted count."""
        grams = {s[i : i + k] for s in self.padded for i in range(len(s) - k + 1)}
        return [g for g in grams if self.adjusted(g) > 0]

    def discount(self, k, count):
        if count == 0:
            return 0.0
        n = collections.Counter(self.adjusted(g) for g in self.types(k))
        n1, n2, n3, n4 = (n[j] for j in (1, 2, 3, 4))
        fallback = {1: 0.5, 2: 1.0, 3: 1.5}
        if 0 in (n1, n2, n3):  # lmplz's rule: n4 = 0 gives D3+ = 3
            return fallback[min(count, 3)]
        y = n1 / (n1 + 2 * n2)
        d = {1: 1 - 2 * y * n2 / n1, 2: 2 - 3 * y * n3 / n2, 3: 3 - 4 * y * n4 / n3}
        if not all(0 < d[j] <= j for j in (1, 2, 3)):
            return fallback[min(count, 3)]
        return d[min(count, 3)]

    def probability(self, word, history):
        k = len(history) + 1
        lower = self.probability(word, history[1:]) if history else 1 / len(self.vocab)
        continuations = [g for g in self.types(k) if g[:-1] == history]
        total = sum(self.adjusted(g) for g in continuations)
        if total == 0:
            return lower
        gamma = sum(self.discount(k, self.adjusted(g)) for g in continuations) / total
        count = self.adjusted((*history, word))
        return max(count - self.discount(k, count), 0) / total + gamma * lower

    def score(self, word, context):
        word = word if word in self.vocab else UNK
        context = [w if w in self.vocab or w == BOS else UNK for w in context]
        if BOS in context:
            context = context[len(context) - 1 - context[::-1].index(BOS) :]
        context = tuple(context[max(len(context) - self.order + 1, 0) :]) if self.order > 1 else ()
        return self.probability(word, context)


def _contexts(vocab, order, rng, count=40):
    """Random contexts of every length up to order + 1: known words, an unknown one, `<s>`
    (first, or inside as the decoder's padding puts it)."""
    words = sorted(vocab - {UNK}) + ["zz"]
    contexts = [(), (BOS,), (BOS, BOS), (BOS, BOS, "a")]
    for _ in range(count):
        length = rng.randint(0, order + 1)
        context = tuple(rng.choice(words) for _ in range(length))
        if context and rng.random() < 0.3:
            context = (BOS, *context[1:])
        contexts.append(context)
    return contexts


@pytest.mark.parametrize(
    "sentences, order, unk_cutoff",
    [(SENTENCES, order, cutoff) for order in (1, 2, 3, 4, 5) for cutoff in (1, 2)]
    + [(_random_corpus(seed), 1 + seed % 5, 1 + seed % 2) for seed in range(6)],
)
def test_probabilities_equal_the_direct_transcription_and_sum_to_one(sentences, order, unk_cutoff):
    model = KneserNeyLM.estimate(sentences, order, unk_cutoff)
    naive = _Naive(sentences, order, unk_cutoff)
    assert model.vocab == naive.vocab
    rng = random.Random(order * 10 + unk_cutoff)
    for context in _contexts(model.vocab, order, rng):
        total = 0.0
        for word in sorted(model.vocab):
            probability = model.score(word, context)
            assert probability == pytest.approx(naive.score(word, context), rel=1e-12)
            total += probability
        assert total == pytest.approx(1.0, abs=1e-12), context
        assert model.score("zz", context) == model.score(UNK, context)
        assert model.score(BOS, context) == model.score(UNK, context)


def test_seen_ngrams_are_likelier_than_backed_off_ones():
    model = KneserNeyLM.estimate(SENTENCES, 3)
    assert model.score("b", ("<s>", "a")) > model.score("d", ("<s>", "a"))
    assert model.score("c", ("a", "b")) > model.score("a", ("a", "b"))
    # Unigrams use continuation counts, not frequencies: "b" is the commonest word (10 times
    # against 9) but follows only 3 different words (<s>, a, b) where "a" follows 5.
    assert model.score("a") > model.score("b")


def test_modified_discounts_formula_and_fallback():
    n1, n2, n3, n4 = 100, 40, 20, 12
    y = n1 / (n1 + 2 * n2)
    assert kneser_ney.modified_discounts([n1, n2, n3, n4]) == pytest.approx(
        (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    )
    assert kneser_ney.modified_discounts([5, 0, 1, 1]) == kneser_ney.FALLBACK_DISCOUNTS
    # n3 large against n2: D2 = 2 - 3 * (1/3) * 100/10 would be negative.
    assert kneser_ney.modified_discounts([10, 10, 100, 1]) == kneser_ney.FALLBACK_DISCOUNTS


def test_adjusted_counts_by_hand():
    counts = kneser_ney.adjusted_counts([["a", "b"], ["c", "b"], ["a", "b"]], 2)
    # Bigrams: raw counts. Unigrams: distinct left neighbours ("b" after a and c; "</s>"
    # after b only), and <s> is no unigram.
    assert counts[1] == {
        (BOS, "a"): 2,
        (BOS, "c"): 1,
        ("a", "b"): 2,
        ("c", "b"): 1,
        ("b", EOS): 3,
    }
    assert counts[0] == {("a",): 1, ("b",): 2, ("c",): 1, (EOS,): 1}


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_state_keeps_every_later_probability(order):
    """Two histories with the same `state` score every continuation alike (what recombining
    the decoder's hypotheses on it needs), and `state` is shorter than the history often."""
    sentences = SENTENCES + _random_corpus(order)
    model = KneserNeyLM.estimate(sentences, order)
    rng = random.Random(order)
    words = sorted(model.vocab - {UNK}) + ["zz"]
    shortened = 0
    for _ in range(60):
        history = tuple(rng.choice([BOS, *words]) for _ in range(order - 1))
        state = model.state(history)
        assert len(state) <= order - 1
        shortened += len(state) < len(model._context(history))
        for continuation in itertools.islice(itertools.product(words, repeat=2), 0, None, 7):
            for k in range(len(continuation) + 1):
                seen = continuation[:k]
                for word in ("a", EOS, "zz"):
                    assert model.score(word, (*history, *seen)) == pytest.approx(
                        model.score(word, (*state, *seen)), rel=1e-12
                    )
    assert shortened >= 10


def test_estimate_rejects_bad_orders():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM.estimate(SENTENCES, 0)
    with pytest.raises(ValueError, match="unk_cutoff"):
        KneserNeyLM.estimate(SENTENCES, 3, unk_cutoff=0)
