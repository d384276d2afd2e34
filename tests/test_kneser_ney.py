"""The modified Kneser-Ney LM (`experiments.kneser_ney`) against a direct transcription of
Chen & Goodman's formulas that recounts everything from the padded sentences on every call,
normalisation over the vocabulary, the exactness of its recombination `state`, a hand
computation of a bigram model, discounts estimated as lmplz does, and refused corpora."""

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


def _contexts(vocab, order, rng, sentences, count=34, seen=6):
    """Random contexts of every length up to order + 1: known words, an unknown one, `<s>`
    (first, or inside as the decoder's padding puts it); and `seen` histories cut from the
    corpus, up to order - 1 words before a word or `</s>`. Random words alone seldom made a
    4- or 5-gram's history (0 of 44 on SENTENCES): their highest order went unchecked."""
    words = sorted(vocab - {UNK}) + ["zz"]
    contexts = [(), (BOS,), (BOS, BOS), (BOS, BOS, "a")]
    for _ in range(count):
        length = rng.randint(0, order + 1)
        context = tuple(rng.choice(words) for _ in range(length))
        if context and rng.random() < 0.3:
            context = (BOS, *context[1:])
        contexts.append(context)
    for _ in range(seen):
        padded = (BOS, *rng.choice(sentences))
        end = rng.randint(min(order - 1, len(padded)), len(padded))
        contexts.append(padded[max(end - order + 1, 0) : end])
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
    for context in _contexts(model.vocab, order, rng, sentences):
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


def _score_without_state(model, word, context):
    """p(word | context) interpolated over every suffix of the whole context (as `_context`
    reads it), a context never seen backing off whole: the model's tables, not its `state`."""
    word = word if word in model.vocab else UNK
    history, probability = model._context(context), 1 / len(model.vocab)
    for k in range(len(history) + 1):
        suffix, table = history[len(history) - k :], model._orders[k]
        if suffix in table.contexts:
            inverse, gamma = table.contexts[suffix]
            probability = table.numerators.get((*suffix, word), 0.0) * inverse + gamma * probability
    return probability


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_state_keeps_every_later_probability(order):
    """The history and its `state` score every continuation as the whole history does (what
    recombining the decoder's hypotheses on it needs), and `state` is shorter than the
    history often. (Comparing `score` on the two alone held for a `state` cut too short:
    `score` conditions both on `state`.)"""
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
                    expected = pytest.approx(
                        _score_without_state(model, word, (*history, *seen)), rel=1e-12
                    )
                    assert model.score(word, (*history, *seen)) == expected
                    assert model.score(word, (*state, *seen)) == expected
    assert shortened >= 10


def test_state_memo_is_emptied_at_its_limit_and_answers_the_same(monkeypatch):
    """At `STATE_MEMO_LIMIT` entries the memo is emptied before the next new context (a
    decoder's run asks for millions), and the states it then recomputes are the same."""
    import experiments.kneser_ney as kn

    model = KneserNeyLM.estimate(SENTENCES + _random_corpus(3), 3)
    words = [BOS, *sorted(model.vocab - {UNK}), "zz"]
    histories = list(itertools.product(words, repeat=2))
    unlimited = [model.state(h) for h in histories]
    fresh = KneserNeyLM.estimate(SENTENCES + _random_corpus(3), 3)
    monkeypatch.setattr(kn, "STATE_MEMO_LIMIT", 5)
    sizes = []
    for history, want in zip(histories, unlimited, strict=True):
        assert fresh.state(history) == want
        sizes.append(len(fresh._states))
    assert max(sizes) == 5 and sizes.count(1) >= len(histories) // 5 - 1
    assert len(model._states) == len(histories)


def test_estimate_rejects_bad_orders():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM.estimate(SENTENCES, 0)
    with pytest.raises(ValueError, match="unk_cutoff"):
        KneserNeyLM.estimate(SENTENCES, 3, unk_cutoff=0)


def test_kneser_ney_refuses_an_empty_corpus():
    """No sentences gave a model whose every `score` raised KeyError: ()."""
    with pytest.raises(ValueError, match="no sentences"):
        KneserNeyLM.estimate([], 3)
    assert KneserNeyLM.estimate([[]], 2).score("</s>") > 0.0


def test_kneser_ney_bigram_equals_a_hand_computation():
    """ "a b", "a", "b a" padded as <s> ... </s>, order 2. Bigrams (raw): <s> a 2, a </s> 2,
    a b 1, b </s> 1, <s> b 1, b a 1: no count 3 or 4, so KenLM's fallback D = 0.5, 1, 1.5
    at both orders. Unigrams (distinct left words): a {<s>, b}, b {<s>, a}, </s> {a, b}: 2
    each, total 6, numerators 2 - 1 = 1, gamma = 1 * 3 / 6 = 1/2, so p(w) = 1/6 + 1/2 / 4
    = 7/24 for a, b, </s> and 1/8 for <UNK> (|V| = 4: a, b, </s>, <UNK>).
    p(. | a): a(a .) = 3, gamma = (0.5 + 1) / 3 = 1/2: p(b|a) = 0.5/3 + 7/48 = 15/48,
    p(</s>|a) = 1/3 + 7/48 = 23/48, p(a|a) = 7/48, p(<UNK>|a) = 3/48.
    p(. | b): a(b .) = 2, gamma = (0.5 + 0.5) / 2 = 1/2: p(a|b) = 0.5/2 + 7/48 = 19/48."""
    model = KneserNeyLM.estimate([["a", "b"], ["a"], ["b", "a"]], 2)
    assert model.discounts == [(0.5, 1.0, 1.5)] * 2
    unigram = {"a": 7 / 24, "b": 7 / 24, EOS: 7 / 24, UNK: 1 / 8, "never seen": 1 / 8}
    for word, p in unigram.items():
        assert model.score(word) == pytest.approx(p, rel=1e-12)
    after_a = {"b": 15 / 48, EOS: 23 / 48, "a": 7 / 48, UNK: 3 / 48}
    for word, p in after_a.items():
        assert model.score(word, ["a"]) == pytest.approx(p, rel=1e-12)
    assert model.score("a", ["b"]) == pytest.approx(19 / 48, rel=1e-12)
    assert model.score("a", ["<s>"]) == pytest.approx(2 / 3 - 1 / 3 + 7 / 48, rel=1e-12)


def test_kneser_ney_refuses_padding_symbols_inside_a_sentence():
    """ "a </s> c" was counted with `</s>` as a word (and `<s>` became a predicted word that
    also cut the contexts after it); KenLM's lmplz refuses both in its corpus."""
    for bad in ("<s>", "</s>"):
        with pytest.raises(ValueError, match=f"sentence 2 holds {bad}: the padding symbols"):
            KneserNeyLM.estimate([["a", "b"], ["a", bad, "c"]], 3)
    assert KneserNeyLM.estimate([["a", UNK, "c"]], 3).score("c", ["a", UNK]) > 0.5


def test_discounts_without_an_ngram_seen_four_times_are_estimated_as_lmplz_does():
    """lmplz falls back only when n_1, n_2 or n_3 is 0 (or a discount leaves its range):
    n_4 = 0 gives D3+ = 3 - 0 = 3. Here every order with n_4 = 0 fell back to 0.5, 1, 1.5.
    The bigrams of "a b" x 3 and "c d" / "c d" / "e f": <s> a 3, a b 3, b </s> 3, <s> c 2,
    c d 2, d </s> 2, <s> e 1, e f 1, f </s> 1: n = 3, 3, 3, 0."""
    n1, n2, n3 = 10, 4, 2
    y = n1 / (n1 + 2 * n2)
    expected = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3.0)
    assert kneser_ney.modified_discounts([n1, n2, n3, 0]) == pytest.approx(expected)
    sentences = [["a", "b"]] * 3 + [["c", "d"]] * 2 + [["e", "f"]]
    model = KneserNeyLM.estimate(sentences, 2)
    assert model.discounts[1] == pytest.approx((1 / 3, 1.0, 3.0))  # Y = 3 / (3 + 6)
    # a b seen 3 times: all of it discounted, p(b | a) = gamma(a) p(b) = (3 / 3) p(b).
    assert model.score("b", ["a"]) == pytest.approx(model.score("b"), rel=1e-12)
