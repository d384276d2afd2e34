"""The phrase-based SMT's lexicalised reordering model (Koehn et al. 2005; Moses's
msd-bidirectional-fe, `smt.reordering` of `experiments.smt_baseline`, seed Q16).

p(monotone | swap | discontinuous | phrase pair) for the orientation of a phrase after the
previous one (backward) and of the next phrase after it (forward): read off the word
alignment at extraction, word-based as Moses's `extract` reads it (`training_orientations`),
estimated with Moses's smoothing towards the priors (`ReorderingModel.estimate`) and scored in
the search, phrase-based as Moses's decoder reads it (`decoding_orientation`,
`ReorderingModel.expansion_scores`, which `experiments.smt_decoder` adds per expansion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from nltk.translate.stack_decoder import _Hypothesis

from experiments.smt_phrases import Alignment, PhraseKey

# Lexicalised reordering (Koehn et al. 2005, Moses's msd-bidirectional-fe): the orientation
# of a phrase relative to the one translated before it.
ORIENTATIONS = ("monotone", "swap", "discontinuous")
MONOTONE, SWAP, DISCONTINUOUS = range(3)


def training_orientations(
    alignment: Alignment, source_length: int, target_length: int, spans: tuple[int, int, int, int]
) -> tuple[int, int]:
    """(backward, forward) orientations of an extracted phrase pair, word-based as Moses's
    `wbe-msd` extraction reads them off the alignment (`getOrientWordModel`). Backward (the
    previous target phrase): monotone when a point links the words just before both spans (or
    both spans open their sentences), swap when one links the source word just after the span
    to the target word just before it, discontinuous when neither or both do (a target word
    linked to source words on both sides of the span: Moses's "other"). Forward (the next
    target phrase) mirrors it at the ends: monotone when a point links the words just after
    both spans (or both close their sentences), swap when one links the source word just
    before the span to the target word just after it."""
    s0, s1, t0, t1 = spans
    backward = _orientation(
        (s0 == 0 and t0 == 0) or (s0 - 1, t0 - 1) in alignment, (s1, t0 - 1) in alignment
    )
    forward = _orientation(
        (s1 == source_length and t1 == target_length) or (s1, t1) in alignment,
        (s0 - 1, t1) in alignment,
    )
    return backward, forward


def _orientation(monotone_corner: bool, swap_corner: bool) -> int:
    """Moses's msd orientation from the two corners: one of them alone linked decides it."""
    if monotone_corner and not swap_corner:
        return MONOTONE
    if swap_corner and not monotone_corner:
        return SWAP
    return DISCONTINUOUS


def decoding_orientation(previous: tuple[int, int] | tuple[()], span: tuple[int, int]) -> int:
    """The orientation of source `span` translated right after source span `previous` (`()`:
    nothing yet, the sentence start, which ends at 0), phrase-based as Moses's decoder reads
    it: monotone when `span` starts where `previous` ends, swap when it ends where `previous`
    starts, else discontinuous."""
    previous_start, previous_end = previous if previous else (None, 0)
    if span[0] == previous_end:
        return MONOTONE
    if span[1] == previous_start:
        return SWAP
    return DISCONTINUOUS


@dataclasses.dataclass
class ReorderingModel:
    """p(orientation | source phrase, target phrase) both ways, as natural logs: `backward`
    scores a phrase's orientation after the previous one, `forward` the next phrase's
    orientation after it (the sentence end counts as a next phrase: monotone when the phrase
    closes the source sentence). A pair without counts (a passed-through word) takes the
    priors, the orientations' relative frequencies over all extracted pairs."""

    backward: dict[PhraseKey, tuple[float, float, float]]
    forward: dict[PhraseKey, tuple[float, float, float]]
    prior_backward: tuple[float, float, float]
    prior_forward: tuple[float, float, float]

    @classmethod
    def estimate(
        cls, counts: dict[PhraseKey, np.ndarray], smoothing: float = 0.5
    ) -> ReorderingModel:
        """From each pair's orientation counts (`[backward, forward] x ORIENTATIONS`), smoothed
        towards the priors: p(o | pair) = (count(o, pair) + smoothing * p(o)) /
        (count(pair) + smoothing), Moses's smoothing with counts (0.5 its default); the priors
        p(o) are the summed counts plus `smoothing` each, so that no orientation gets
        probability 0 (log -inf) where training never saw it."""
        totals = sum(counts.values(), np.zeros((2, len(ORIENTATIONS)))) + smoothing
        priors = totals / totals.sum(axis=1, keepdims=True)
        tables: tuple[dict, dict] = ({}, {})
        for key, count in counts.items():
            probabilities = (count + smoothing * priors) / (
                count.sum(axis=1, keepdims=True) + smoothing
            )
            for direction in (0, 1):
                tables[direction][key] = tuple(np.log(probabilities[direction]).tolist())
        backward_prior, forward_prior = (tuple(np.log(p).tolist()) for p in priors)
        return cls(tables[0], tables[1], backward_prior, forward_prior)

    def backward_score(self, key: PhraseKey, orientation: int) -> float:
        return self.backward.get(key, self.prior_backward)[orientation]

    def forward_score(self, key: PhraseKey, orientation: int) -> float:
        return self.forward.get(key, self.prior_forward)[orientation]

    def expansion_scores(
        self,
        source: Sequence[str],
        previous: _Hypothesis,
        span: tuple[int, int],
        trg_phrase: tuple[str, ...],
        complete: bool,
    ) -> tuple[float, float]:
        """(backward, forward) log-probabilities that translating `source[span]` as
        `trg_phrase` right after `previous` (a hypothesis; its last phrase pair, none at the
        sentence start) adds: the new pair's backward score of its `decoding_orientation`,
        the previous pair's forward score of the same orientation and, when this completes
        the translation, the new pair's forward score of the sentence end (monotone when
        `span` closes the source sentence). The decoder adds them per expansion and
        `System.features` sums them over a derivation."""
        orientation = decoding_orientation(previous.src_phrase_span, span)
        key = (tuple(source[span[0] : span[1]]), tuple(trg_phrase))
        backward, forward = self.backward_score(key, orientation), 0.0
        if previous.src_phrase_span:
            start, end = previous.src_phrase_span
            before = (tuple(source[start:end]), tuple(previous.trg_phrase))
            forward = self.forward_score(before, orientation)
        if complete:
            final = MONOTONE if span[1] == len(source) else DISCONTINUOUS
            forward += self.forward_score(key, final)
        return backward, forward
