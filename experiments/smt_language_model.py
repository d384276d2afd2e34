"""The phrase-based SMT's target language model (`experiments.smt_baseline`, seed Q16).

An n-gram LM on the training targets (`smt.lm_smoothing`, `smt.lm_order`): interpolated
Witten-Bell (`witten_bell`: nltk's `WittenBellInterpolated`, padded as KenLM pads) or
interpolated modified Kneser-Ney (`experiments.kneser_ney`); `DecoderLanguageModel`, the
interface nltk's `StackDecoder` calls, in weighted natural-log units with its scores
memoised; and the LM's perplexity on the reference translations (`reference_perplexity`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

from nltk.lm import Vocabulary, WittenBellInterpolated

from experiments.kneser_ney import BOS, EOS, KneserNeyLM

LM_NAMES = {"witten-bell": "Witten-Bell", "modified-kneser-ney": "modified Kneser-Ney"}


def witten_bell(
    sentences: Sequence[Sequence[str]], order: int, unk_cutoff: int
) -> WittenBellInterpolated:
    """nltk's interpolated Witten-Bell `order`-gram LM fitted on tokenised `sentences`, each
    padded as `experiments.kneser_ney` (and KenLM) pads it: one `<s>` and one `</s>`, with
    `<s>` a context only, never counted as a word (nothing predicts it). nltk's
    `padded_everygram_pipeline` pads order - 1 of each and counts every one as a unigram: at
    order 3 `<s>` held ~14% of the unigram mass, so the probabilities of the words that can
    follow a context summed to 0.86 at the unigram level (0.98-0.997 after longer contexts),
    and `</s>` was counted twice per sentence; at order 1 it pads nothing, so `</s>` had
    probability 0. A context of more `<s>` than one (the decoder pads its histories with
    order - 1) is never seen and backs off to the shorter one, as in Kneser-Ney."""
    padded = [(BOS, *sentence, EOS) for sentence in sentences]
    ngrams = (
        [
            sentence[start : start + k]
            for k in range(1, order + 1)
            for start in range(len(sentence) - k + 1)
            if k > 1 or start > 0  # the first unigram is <s>
        ]
        for sentence in padded
    )
    words = (word for sentence in padded for word in sentence)
    model = WittenBellInterpolated(order, vocabulary=Vocabulary(unk_cutoff=unk_cutoff))
    model.fit(ngrams, words)
    return model


# The log-probability `DecoderLanguageModel` gives a word of probability 0 (finite, so that
# translations that all hold such a word still rank by their other scores).
LOG_PROBABILITY_FLOOR = math.log(1e-300)


class DecoderLanguageModel:
    """An `nltk.lm` model behind the interface `StackDecoder` calls, in weighted natural-log
    units: `probability(phrase)` (no history: the future-cost estimate) and
    `probability_change(hypothesis, phrase)` (the phrase after the hypothesis's output,
    sentence start padded with `<s>`). Scores are memoised: nltk.lm computes each from its
    count tables on every call (~26 µs), and the decoder asks for the same ones many times.
    So is Witten-Bell's weight γ(context) of each context, which nltk recounts over all the
    context's continuations for every new word after it: most of a decode's time before (the
    model must not be refitted once wrapped)."""

    def __init__(self, model: WittenBellInterpolated | KneserNeyLM, weight: float) -> None:
        self.model, self.weight = model, weight
        self.history = model.order - 1
        # Unweighted natural-log probabilities: MERT changes `weight` between decodes.
        self._log_probabilities: dict[tuple[str, tuple[str, ...]], float] = {}
        # A model with `state` (Kneser-Ney) is memoised on the state of the context: the same
        # probability (`KneserNeyLM.score` conditions on it), and far more hits on 4 words.
        self._state = getattr(model, "state", None)
        estimator = getattr(model, "estimator", None)
        gamma = getattr(estimator, "_gamma", None)  # nltk.lm.smoothing.WittenBell's (and others')
        if gamma is not None and not hasattr(gamma, "cache_info"):  # not already memoised
            estimator._gamma = functools.lru_cache(maxsize=None)(gamma)

    def log_probability(self, word: str, context: tuple[str, ...]) -> float:
        """Unweighted natural-log P(word | context), floored at 1e-300 (`LOG_PROBABILITY_FLOOR`)."""
        if self._state is not None:  # its own state: the same probability, found once
            context = self._state(context)
        key = (word, context)
        if key not in self._log_probabilities:
            probability = self.model.score(word, context)
            self._log_probabilities[key] = math.log(max(probability, 1e-300))
        return self._log_probabilities[key]

    def word_score(self, word: str, context: tuple[str, ...]) -> float:
        return self.weight * self.log_probability(word, context)

    def _phrase_score(self, history: list[str], phrase: Iterable[str]) -> float:
        words, total = list(history), 0.0
        for word in phrase:
            # At most the last `self.history` words; all of them while fewer (`probability`:
            # a phrase without history; a negative start would cut that context short).
            context = tuple(words[max(len(words) - self.history, 0) :]) if self.history else ()
            total += self.word_score(word, context)
            words.append(word)
        return total

    def token_log_probabilities(self, output: Sequence[str]) -> list[float]:
        """Unweighted log P(w | context) of each word of `output` and of `</s>`, `<s>`-padded."""
        words, scores = ["<s>"] * self.history, []
        for word in [*output, "</s>"]:
            context = tuple(words[len(words) - self.history :]) if self.history else ()
            scores.append(self.log_probability(word, context))
            words.append(word)
        return scores

    def sentence_log_probability(self, output: Sequence[str]) -> float:
        """Unweighted log P(output </s>), `<s>`-padded: the LM feature of a whole translation."""
        return sum(self.token_log_probabilities(output))

    def probability(self, phrase: Sequence[str]) -> float:
        return self._phrase_score([], phrase)

    def state(self, output: tuple[str, ...]) -> tuple[str, ...]:
        """What the LM's later scores can see of `output`: its last order - 1 words
        (`<s>`-padded), cut by the model's own `state` where it has one (Kneser-Ney: the
        longest suffix seen as a context)."""
        words = ("<s>",) * self.history + output
        history = words[len(words) - self.history :]
        return history if self._state is None else self._state(history)

    def probability_change(self, hypothesis: object, phrase: Sequence[str]) -> float:
        history = ["<s>"] * self.history + hypothesis.translation_so_far()
        return self._phrase_score(history, phrase)

    def end_probability(self, output: Sequence[str]) -> float:
        """The sentence end `</s>` after a whole translation `output`."""
        return self._phrase_score(["<s>"] * self.history + list(output), ["</s>"])


def reference_perplexity(
    language_model: DecoderLanguageModel, pairs: Sequence[dict]
) -> tuple[float, int]:
    """The target LM's perplexity on the reference translations of `pairs` -> (exp of the
    mean negative log-probability per token, `</s>` included, a word outside the LM's
    vocabulary scored as `<UNK>`; the number of tokens left out of it). A token the LM gives
    probability 0 is left out and counted, as SRILM's `-ppl` leaves out its "zeroprobs":
    Witten-Bell (nltk) gives `<UNK>` no mass when no training word was cut to it
    (`smt.lm_unk_cutoff=1`), and each such token, scored at the decoder's floor of 1e-300,
    would add 690.8 to the summed negative log-probability (perplexity 1e75 for one unknown
    word among four tokens). Kneser-Ney gives every word mass: nothing is left out. Two LMs'
    perplexities compare only where their vocabularies are the same (not across
    `smt.lm_unk_cutoff` values)."""
    scores = [s for p in pairs for s in language_model.token_log_probabilities(p["target"])]
    scored = [s for s in scores if s > LOG_PROBABILITY_FLOOR]
    perplexity = math.exp(-math.fsum(scored) / len(scored)) if scored else math.nan
    return perplexity, len(scores) - len(scored)
