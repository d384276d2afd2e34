"""The phrase-based SMT's log-linear model (`experiments.smt_baseline`, seed Q16): its ten
FEATURES, the config's weights over them (`config_weights`) and `System`, a trained system
that translates under a weight vector and gives each n-best candidate's feature vector, as
MERT (`experiments.mert`, Och 2003) needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import ml_collections
import numpy as np
from nltk.translate import PhraseTable

from experiments.smt_decoder import DistortionLimitedDecoder, Hypothesis
from experiments.smt_language_model import DecoderLanguageModel
from experiments.smt_phrases import PhraseFeatures, phrase_table
from experiments.smt_reordering import ReorderingModel

# The log-linear model's features, in the order of a weight vector (`config_weights`): a
# candidate's model score is weights · features (`System.features`).
FEATURES = (
    "log φ(e|f)",
    "log φ(f|e)",
    "log lex(e|f)",
    "log lex(f|e)",
    "LM",
    "words",
    "distortion",
    "reordering (backward)",
    "reordering (forward)",
    "phrases",
)
TRANSLATION = slice(0, 4)  # the phrase table's features (`phrase_features`)
PHRASES = FEATURES.index("phrases")


def config_weights(smt: ml_collections.ConfigDict) -> np.ndarray:
    """The config's weights as a vector over FEATURES. nltk subtracts `word_penalty` per
    output word and a jump of d words scores d · log(distortion_factor); the phrase penalty
    is subtracted per phrase, as the word penalty is."""
    weights = [
        smt.weight_forward,
        smt.weight_backward,
        smt.weight_lexical_forward,
        smt.weight_lexical_backward,
        smt.weight_lm,
        -smt.word_penalty,
        math.log(max(smt.distortion_factor, 1e-9)),
        smt.weight_reordering_backward,
        smt.weight_reordering_forward,
        -smt.phrase_penalty,
    ]
    return np.array(weights) + 0.0  # -0.0 + 0.0 = 0.0: no negative zeros in the reports


@dataclasses.dataclass
class System:
    """A trained phrase-based system: `translate(words) -> words` under `weights` (over
    FEATURES; `set_weights` rebuilds the phrase table, whose per-source pruning and option
    scores depend on them). Without a `reordering` model (`smt.reordering='distance'`) its
    two features stay 0."""

    features_of_phrases: PhraseFeatures
    language_model: DecoderLanguageModel
    smt: ml_collections.ConfigDict
    sizes: dict
    reordering: ReorderingModel | None = None
    weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(FEATURES)))
    table: PhraseTable = dataclasses.field(default_factory=PhraseTable)
    decoder: DistortionLimitedDecoder | None = None

    def set_weights(self, weights: Sequence[float]) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(FEATURES),):
            raise ValueError(f"weights must be one per feature {FEATURES}, got {weights.shape}")
        self.weights = weights
        *_, lm, words, distortion, backward, forward, phrases = map(float, weights)
        self.table = phrase_table(
            self.features_of_phrases, self.smt.max_translations, weights[TRANSLATION], phrases
        )
        self.language_model.weight = lm
        self.decoder = DistortionLimitedDecoder(
            self.table, self.language_model, 0.5, self.smt.distortion_limit, self.reordering
        )
        self.decoder.reordering_weights = (backward, forward)
        self.decoder.distortion_weight = distortion
        self.decoder.word_penalty = -words
        self.decoder.stack_size = self.smt.stack_size

    def _pass_through_unknown(self, source: Sequence[str]) -> None:
        """Words without a phrase-table entry pass through: a one-word phrase to itself whose
        translation features are log 1 = 0 (the LM scores it as <UNK>)."""
        for word in source:
            if (word,) not in self.table:
                self.table.add((word,), (word,), float(self.weights[PHRASES]))

    def translate(self, source: Sequence[str]) -> list[str]:
        """Best translation of a tokenised sentence (unknown words pass through)."""
        self._pass_through_unknown(source)
        return self.decoder.translate(list(source))

    def nbest(self, source: Sequence[str], size: int) -> list[tuple[str, np.ndarray]]:
        """The best `size` different translations, best first, each with its feature vector."""
        self._pass_through_unknown(source)
        return [
            (" ".join(h.output), self.features(source, h))
            for h in self.decoder.decode_nbest(list(source), size)
        ]

    def features(self, source: Sequence[str], hypothesis: Hypothesis) -> np.ndarray:
        """The FEATURES of a complete hypothesis, from its derivation (phrase by phrase): the
        summed log φ and log lex both ways (0 for a passed-through word), the LM's
        log-probability of the output with its sentence end, the output length, the source
        words jumped (counted from the sentence start for the first phrase), the summed
        reordering log-probabilities both ways (0 without a reordering model) and the phrase
        count. Its model score `hypothesis.raw_score` is `weights @ features`
        (tests/test_smt_baseline.py checks it)."""
        steps = []
        node = hypothesis
        while node is not None and node.src_phrase_span:
            steps.append(node)
            node = node.previous
        translation, distortion, reordering = np.zeros(4), 0.0, np.zeros(2)
        for step in reversed(steps):
            start, end = step.src_phrase_span
            logs = self.features_of_phrases.get((tuple(source[start:end]), step.trg_phrase))
            if logs is not None:
                translation += logs
            before = step.previous.src_phrase_span
            distortion += abs(start - (before[1] if before else 0))
            if self.reordering is not None:
                reordering += self.reordering.expansion_scores(
                    source, step.previous, step.src_phrase_span, step.trg_phrase, step is hypothesis
                )
        lm = self.language_model.sentence_log_probability(hypothesis.output)
        return np.array(
            [*translation, lm, len(hypothesis.output), distortion, *reordering, len(steps)],
            dtype=np.float64,
        )
