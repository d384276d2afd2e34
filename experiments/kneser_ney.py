"""Interpolated modified Kneser-Ney n-gram language model, as KenLM's `lmplz` estimates it.

The smoothing Moses's documentation recommends for its LMs (SRILM's `-interpolate
-kndiscount`; KenLM's `lmplz`, Heafield et al. 2013), for the phrase-based SMT baseline
(`experiments.smt_baseline`, `smt.lm_smoothing`; a 5-gram there). Chen & Goodman (1998):

    p(w | h) = max(a(h w) - D_k(a(h w)), 0) / a(h •)  +  γ(h) p(w | h'),
    γ(h) = (D_k1 N1(h •) + D_k2 N2(h •) + D_k3+ N3+(h •)) / a(h •),

where h' is h without its first word, k = |h| + 1 is the n-gram's order, a(h •) the sum of
a(h w) over w, and N_j(h •) the number of words w with a(h w) = j (3+: at least 3). The
adjusted count a is the raw count at the highest order and for an n-gram that starts with
`<s>` (nothing can precede it), and otherwise the continuation count: the number of
different words seen before it. The unigrams interpolate with the uniform distribution over
the vocabulary (every word seen, `</s>` and `<UNK>`; not `<s>`, which is never predicted), so
every word, `<UNK>` included, has mass. A context never seen (a(h •) = 0) backs off whole:
p(w | h) = p(w | h'). The discounts of each order come from that order's counts of adjusted
counts n_1..n_4: Y = n_1 / (n_1 + 2 n_2), D_j = j - (j + 1) Y n_{j+1} / n_j; where those are
not defined (n_1, n_2 or n_3 is 0, lmplz's rule) or not in (0, j] (too little data), KenLM's
`--discount_fallback` values 0.5, 1, 1.5.

Sentences are padded as KenLM pads them, with one `<s>` and one `</s>`; a context that holds
`<s>` keeps only what follows its last one (so the decoder's `<s>`-padded histories score as
KenLM scores sentence starts).

Pure Python dictionaries, a 5-gram estimated in ~5 s on Multi30k's 29,000 sentences; the
decoder memoises the probabilities it asks for on `state`, and `state` itself is memoised.
`tests/test_kneser_ney.py` checks the estimate against a direct transcription of the
formulas above, that every context's distribution sums to one over the vocabulary, and
`state` against the probabilities it claims to preserve.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence

BOS, EOS, UNK = "<s>", "</s>", "<UNK>"
# KenLM's `--discount_fallback` (lmplz's default values for it): D1, D2, D3+.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

Ngram = tuple[str, ...]


def padding_symbols(sentence: Sequence[str]) -> list[str]:
    """The padding symbols (`<s>`, `</s>`) that `sentence` holds as words, sorted: a training
    sentence may hold none (`KneserNeyLM.estimate`)."""
    return sorted({BOS, EOS} & set(sentence))


def modified_discounts(count_of_counts: Sequence[int]) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from n_1..n_4 (how many n-grams have adjusted count 1..4);
    KenLM's fallback (0.5, 1, 1.5) where, as in lmplz's `CalculateDiscounts`, n_1, n_2 or n_3
    is 0 (the formulas divide by them) or a D_j falls outside (0, j] (lmplz allows D_j = 0,
    which can leave a context no mass to back off with: every word it never preceded would
    get probability 0). No n-gram seen 4 times (n_4 = 0) is no reason to fall back: D3+ = 3
    then, as lmplz estimates it."""
    n1, n2, n3, n4 = count_of_counts
    if min(n1, n2, n3) <= 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d <= j for j, d in enumerate(discounts, 1)):
        return FALLBACK_DISCOUNTS
    return discounts


def adjusted_counts(sentences: Iterable[Sequence[str]], order: int) -> list[dict[Ngram, int]]:
    """Per order k = 1..`order` (index k - 1), each n-gram's adjusted count: raw at `order`
    and for n-grams starting with `<s>`, else the number of distinct words seen before it.
    Sentences are `<s>`/`</s>`-padded here; `<s>` alone is not a unigram."""
    raw: list[collections.Counter] = [collections.Counter() for _ in range(order)]
    for sentence in sentences:
        tokens = (BOS, *sentence, EOS)
        for k in range(1, order + 1):
            for start in range(len(tokens) - k + 1):
                raw[k - 1][tokens[start : start + k]] += 1
    del raw[0][(BOS,)]
    adjusted: list[dict[Ngram, int]] = [dict(raw[order - 1])]
    for k in range(order - 1, 0, -1):
        continuations = collections.Counter(ngram[1:] for ngram in raw[k])
        adjusted.insert(
            0,
            {
                ngram: count if ngram[0] == BOS else continuations[ngram]
                for ngram, count in raw[k - 1].items()
            },
        )
    return adjusted


@dataclasses.dataclass(frozen=True)
class _Order:
    """One order's tables: the discounted numerator of each n-gram, and per context (the
    n-gram less its last word) (1 / a(h •), γ(h))."""

    numerators: dict[Ngram, float]
    contexts: dict[Ngram, tuple[float, float]]
    discounts: tuple[float, float, float]


# Entries of the memo of `KneserNeyLM.state` before it starts afresh (bounds its memory).
STATE_MEMO_LIMIT = 1 << 21


class KneserNeyLM:
    """An estimated model: `score(word, context)` is p(word | context), the `nltk.lm`
    interface the SMT decoder calls; `state(context)` the shortest context that scores every
    continuation alike (KenLM's state minimisation, for hypothesis recombination)."""

    def __init__(self, order: int, orders: list[_Order], vocabulary: frozenset[str]) -> None:
        self.order, self._orders, self.vocab = order, orders, vocabulary
        self._uniform = 1.0 / len(vocabulary)
        self._states: dict[Ngram, Ngram] = {}

    @classmethod
    def estimate(
        cls, sentences: Iterable[Sequence[str]], order: int, unk_cutoff: int = 1
    ) -> KneserNeyLM:
        """Fit on tokenised `sentences` (no padding; at least one, possibly empty). Words seen
        fewer than `unk_cutoff` times become `<UNK>` first (as `nltk.lm.Vocabulary(unk_cutoff=...)`
        does).

        Raises:
          ValueError: a bad order or cutoff, no sentences, or a sentence holding `<s>` or
            `</s>` (KenLM's lmplz refuses them too: counted as words, they would be predicted
            and `<s>` would cut contexts mid-sentence), naming the sentence (1-based).
        """
        if order < 1 or unk_cutoff < 1:
            raise ValueError(f"order and unk_cutoff must be >= 1, got {order}, {unk_cutoff}")
        sentences = [tuple(sentence) for sentence in sentences]
        if not sentences:
            # Nothing to count: every later `score` would fail with KeyError: ().
            raise ValueError("no sentences to estimate the language model from")
        for number, sentence in enumerate(sentences, 1):
            padding = padding_symbols(sentence)
            if padding:
                raise ValueError(
                    f"sentence {number} holds {', '.join(padding)}: the padding symbols are "
                    "added here and may not be words of the corpus"
                )
        frequencies = collections.Counter(word for sentence in sentences for word in sentence)
        known = {word for word, count in frequencies.items() if count >= unk_cutoff}
        sentences = [tuple(w if w in known else UNK for w in s) for s in sentences]
        vocabulary = frozenset(known | {EOS, UNK})
        orders = []
        for counts in adjusted_counts(sentences, order):
            count_of_counts = collections.Counter(min(c, 5) for c in counts.values())
            discounts = modified_discounts([count_of_counts[j] for j in (1, 2, 3, 4)])
            totals: dict[Ngram, float] = collections.defaultdict(float)
            kinds: dict[Ngram, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
            numerators = {}
            for ngram, count in counts.items():
                numerators[ngram] = count - discounts[min(count, 3) - 1]
                totals[ngram[:-1]] += count
                kinds[ngram[:-1]][min(count, 3) - 1] += 1
            contexts = {
                context: (
                    1.0 / total,
                    sum(d * n for d, n in zip(discounts, kinds[context], strict=True)) / total,
                )
                for context, total in totals.items()
            }
            orders.append(_Order(numerators, contexts, discounts))
        return cls(order, orders, vocabulary)

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """D1, D2, D3+ per order, unigrams first."""
        return [table.discounts for table in self._orders]

    def _context(self, context: Sequence[str]) -> Ngram:
        """The part of `context` the model conditions on: words outside the vocabulary as
        `<UNK>`, nothing before its last `<s>`, at most order - 1 words."""
        context = tuple(w if w in self.vocab or w == BOS else UNK for w in context)
        if BOS in context:
            context = context[len(context) - 1 - context[::-1].index(BOS) :]
        return context[max(len(context) - self.order + 1, 0) :] if self.order > 1 else ()

    def score(self, word: str, context: Sequence[str] = ()) -> float:
        """p(word | context); a word outside the vocabulary (and `<s>`) is scored as `<UNK>`.
        Conditioned on `state(context)`, which gives the same probability: the interpolation
        stops at the first suffix never seen as a context."""
        word = word if word in self.vocab else UNK
        history = self.state(context)
        probability = self._uniform
        for k, table in enumerate(self._orders[: len(history) + 1]):
            suffix = history[len(history) - k :]
            inverse, gamma = table.contexts[suffix]  # seen: a suffix of a seen context
            probability = table.numerators.get((*suffix, word), 0.0) * inverse + gamma * probability
        return probability

    def state(self, context: Sequence[str]) -> Ngram:
        """The longest suffix of `context` (as `score` reads it) seen as a context. Every later
        probability depends on `context` only through it: a longer suffix v s never seen as a
        context stays unseen after more words (were v s w a context, v s w would be an
        n-gram, and v s a context), so scoring never reaches it. Memoised: the decoder asks
        for the same few contexts millions of times."""
        context = tuple(context)
        state = self._states.get(context)
        if state is None:
            if len(self._states) >= STATE_MEMO_LIMIT:
                self._states.clear()
            reduced, state = self._context(context), ()
            for k in range(len(reduced), 0, -1):
                if reduced[len(reduced) - k :] in self._orders[k].contexts:
                    state = reduced[len(reduced) - k :]
                    break
            self._states[context] = state
        return state
