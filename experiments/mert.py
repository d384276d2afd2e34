"""Minimum error rate training (Och 2003): a log-linear model's weights tuned for corpus BLEU.

A phrase-based decoder outputs, for each source sentence f, the candidate e maximising
w · h(e, f), a weighted sum of K feature values (log translation probabilities, the LM's log
probability, word and phrase counts, distortion). MERT chooses w to maximise corpus BLEU of
those outputs on a tuning set. BLEU is piecewise constant in w, so instead of gradients it
uses Och's exact line search: along a direction d, candidate i of a sentence scores
a_i + γ b_i (a = H w, b = H d), a line in γ; the sentence's output changes only where the
upper envelope of its lines changes, so the corpus BLEU along the whole line follows from
sweeping all sentences' envelope breakpoints in order, adding each one's change of BLEU
statistics (`line_search`). `optimise` repeats such searches, along every coordinate
direction from the current point and from a few random starting points, until no search
improves BLEU by more than `tolerance`. `tune` wraps it in Och's outer loop: decode the tuning
set with the current weights into n-best lists, merge them with the lists of earlier
iterations (the envelope only sees candidates it was given), optimise, and repeat until an
iteration adds no new candidate or `iterations` runs out; it returns the weights whose decode
scored best on the tuning set (the starting weights included, so tuning never returns weights
that decoded worse there than the ones it was given).

BLEU here is sacrebleu's corpus BLEU (4-gram, one reference, 'exp' smoothing, whitespace
tokens as with tokenize='none'), computed from per-candidate sufficient statistics
(`bleu_statistics`, `bleu`) so that a line search never re-reads the strings;
tests/test_mert.py checks both against sacrebleu and the line search against a dense grid.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

MAX_ORDER = 4
# Per candidate: hypothesis length, reference length, then (matched, total) n-grams for
# n = 1..MAX_ORDER, the statistics corpus BLEU is a function of once summed over sentences.
NUM_STATISTICS = 2 + 2 * MAX_ORDER


def _ngrams(words: Sequence[str], order: int) -> collections.Counter:
    return collections.Counter(tuple(words[i : i + order]) for i in range(len(words) - order + 1))


def bleu_statistics(hypothesis: str, reference: str) -> np.ndarray:
    """[NUM_STATISTICS] BLEU sufficient statistics of one whitespace-tokenised hypothesis
    against its reference: lengths, then clipped n-gram matches and hypothesis n-grams."""
    hyp, ref = hypothesis.split(), reference.split()
    stats = [len(hyp), len(ref)]
    for order in range(1, MAX_ORDER + 1):
        hyp_counts, ref_counts = _ngrams(hyp, order), _ngrams(ref, order)
        stats += [sum((hyp_counts & ref_counts).values()), max(len(hyp) - order + 1, 0)]
    return np.asarray(stats, dtype=np.float64)


def bleu(statistics: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0-100) from summed statistics [..., NUM_STATISTICS], vectorised over the
    leading axes: sacrebleu's `compute_bleu` with smooth_method='exp' (an order with no match
    counts 1 / (2^k · total) for its k-th such order), 0 when nothing matches or an order has
    no n-gram at all."""
    statistics = np.asarray(statistics, dtype=np.float64)
    sys_len, ref_len = statistics[..., 0], statistics[..., 1]
    correct, total = statistics[..., 2::2], statistics[..., 3::2]
    zero = correct == 0
    smoothing = 2.0 ** np.cumsum(zero, axis=-1)  # 2^k for the k-th order without a match
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(zero, 1.0 / (smoothing * total), correct / total)
        log_precision = np.log(precision).mean(axis=-1)
        log_brevity = np.where(sys_len < ref_len, 1.0 - ref_len / sys_len, 0.0)
        score = 100.0 * np.exp(log_precision + log_brevity)
    defined = (total > 0).all(axis=-1) & (correct > 0).any(axis=-1) & (sys_len > 0)
    return np.where(defined, score, 0.0)


@dataclasses.dataclass
class NBest:
    """One tuning sentence's candidates: features [n, K] and BLEU statistics
    [n, NUM_STATISTICS] row by row, and their strings (to merge lists without duplicates).
    A string appears once per decode but may appear again in a merged list with other
    features: another derivation of it, found by a later decode."""

    features: np.ndarray
    statistics: np.ndarray
    hypotheses: list[str]

    @classmethod
    def build(cls, candidates: Sequence[tuple[str, Sequence[float]]], reference: str) -> NBest:
        """From (hypothesis, feature vector) pairs; a repeated hypothesis is kept once."""
        seen: dict[str, Sequence[float]] = {}
        for hypothesis, features in candidates:
            seen.setdefault(hypothesis, features)
        if not seen:
            raise ValueError("an n-best list needs at least one candidate")
        hypotheses = list(seen)
        return cls(
            np.asarray([seen[h] for h in hypotheses], dtype=np.float64),
            np.stack([bleu_statistics(h, reference) for h in hypotheses]),
            hypotheses,
        )

    def merge(self, other: NBest) -> tuple[NBest, int]:
        """This list plus `other`'s candidates it lacks -> (merged list, how many were new).
        A candidate is new unless the same string with the same features is held: a known
        string reached by another derivation (other phrases, so other features) stays beside
        the old one, since under some weights it scores higher and the decoder outputs the
        string where the old features would not; Moses's mert likewise drops only entries
        with equal features and scores (`Data::removeDuplicates`)."""
        known = set(zip(self.hypotheses, map(tuple, self.features.tolist()), strict=True))
        new = [
            i
            for i, key in enumerate(
                zip(other.hypotheses, map(tuple, other.features.tolist()), strict=True)
            )
            if key not in known
        ]
        merged = NBest(
            np.concatenate([self.features, other.features[new]]),
            np.concatenate([self.statistics, other.statistics[new]]),
            self.hypotheses + [other.hypotheses[i] for i in new],
        )
        return merged, len(new)


def corpus_statistics(nbests: Sequence[NBest], weights: np.ndarray) -> np.ndarray:
    """Summed statistics of each sentence's best candidate under `weights` (the first best
    on a tie, as a decoder's stable ranking would keep)."""
    return sum(
        (nb.statistics[int(np.argmax(nb.features @ weights))] for nb in nbests),
        np.zeros(NUM_STATISTICS),
    )


def upper_envelope(intercepts: np.ndarray, slopes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lines a_i + γ b_i on top somewhere, left to right: (indices [m], starts [m]) where
    line indices[j] is the maximum for γ in [starts[j], starts[j + 1]) (starts[0] = -inf).
    Of lines with equal slope only the highest can be on top (the first of equal ones)."""
    order = np.lexsort((np.arange(len(slopes)), -intercepts, slopes))
    hull: list[int] = []
    starts: list[float] = []
    previous_slope = None
    for i in order:
        if previous_slope is not None and slopes[i] == previous_slope:
            continue  # lower (or later) line of the same slope
        previous_slope = slopes[i]
        start = -math.inf
        while hull:
            j = hull[-1]
            start = (intercepts[j] - intercepts[i]) / (slopes[i] - slopes[j])
            if start <= starts[-1]:
                hull.pop()
                starts.pop()
                start = -math.inf
            else:
                break
        hull.append(int(i))
        starts.append(start)
    return np.asarray(hull), np.asarray(starts)


def line_search(
    nbests: Sequence[NBest], weights: np.ndarray, direction: np.ndarray
) -> tuple[float, float]:
    """Och's exact line search: the step γ maximising corpus BLEU of weights + γ·direction
    over the n-best lists -> (γ, BLEU). Of the best interval of γ (the leftmost on a tie) the
    midpoint is taken (for an unbounded one, one unit past its finite end; γ = 0 when no
    sentence's best candidate changes along the line). BLEU flat along a line that has
    breakpoints gives the leftmost interval, not γ = 0: `optimise` moves only on a gain."""
    base = np.zeros(NUM_STATISTICS)
    points, changes = [], []
    for nb in nbests:
        hull, starts = upper_envelope(nb.features @ weights, nb.features @ direction)
        base += nb.statistics[hull[0]]
        points.append(starts[1:])
        changes.append(nb.statistics[hull[1:]] - nb.statistics[hull[:-1]])
    points_all = np.concatenate(points)
    changes_all = np.concatenate(changes) if points_all.size else np.zeros((0, NUM_STATISTICS))
    order = np.argsort(points_all, kind="stable")
    points_all, changes_all = points_all[order], changes_all[order]
    # Interval j covers [points[j - 1], points[j]) with the statistics of all changes before it.
    statistics = base + np.concatenate([np.zeros((1, NUM_STATISTICS)), np.cumsum(changes_all, 0)])
    scores = bleu(statistics)
    # Breakpoints at the same γ leave an empty interval between them: it is never chosen.
    bounds = np.concatenate([[-math.inf], points_all, [math.inf]])
    valid = bounds[1:] > bounds[:-1]
    scores = np.where(valid, scores, -math.inf)
    best = int(np.argmax(scores))
    if not np.isfinite(bounds[best]) and not np.isfinite(bounds[best + 1]):
        return 0.0, float(scores[best])
    if not np.isfinite(bounds[best]):
        return float(bounds[best + 1] - 1.0), float(scores[best])
    if not np.isfinite(bounds[best + 1]):
        return float(bounds[best] + 1.0), float(scores[best])
    return float((bounds[best] + bounds[best + 1]) / 2), float(scores[best])


def normalise(weights: np.ndarray, scale: float) -> np.ndarray:
    """`weights` rescaled to L1 norm `scale` (the argmax, hence BLEU, is unchanged)."""
    norm = np.abs(weights).sum()
    return weights * (scale / norm) if norm > 0 else weights


def optimise(
    nbests: Sequence[NBest],
    weights: np.ndarray,
    *,
    restarts: int,
    rng: np.random.Generator,
    tolerance: float = 1e-4,
    max_sweeps: int = 50,
) -> tuple[np.ndarray, float]:
    """Coordinate-wise line searches from `weights` and from `restarts` random points (each
    weight uniform in ±2× the largest starting magnitude) until a sweep over all coordinates
    gains at most `tolerance` BLEU -> (best weights, normalised to the starting L1 norm, and
    their n-best BLEU)."""
    weights = np.asarray(weights, dtype=np.float64)
    scale = float(np.abs(weights).sum()) or 1.0
    spread = 2.0 * (float(np.abs(weights).max()) or 1.0)
    starts = [weights] + [rng.uniform(-spread, spread, weights.shape) for _ in range(restarts)]
    best_weights, best_score = weights, float(bleu(corpus_statistics(nbests, weights)))
    for point in starts:
        score = float(bleu(corpus_statistics(nbests, point)))
        for _ in range(max_sweeps):
            before = score
            for k in range(len(point)):
                direction = np.zeros_like(point)
                direction[k] = 1.0
                step, found = line_search(nbests, point, direction)
                if found > score:
                    point, score = point + step * direction, found
            if score - before <= tolerance:
                break
        if score > best_score + tolerance:
            best_weights, best_score = point, score
    return normalise(best_weights, scale), best_score


Decode = Callable[[np.ndarray], list[list[tuple[str, Sequence[float]]]]]


def tune(
    decode: Decode,
    references: Sequence[str],
    weights: np.ndarray,
    *,
    iterations: int,
    restarts: int,
    seed: int,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, list[dict]]:
    """Och's outer loop. `decode(weights)` returns, per tuning sentence, its n-best list as
    (hypothesis, feature vector) pairs, best first under `weights` -> (the weights whose
    decode scored the best tuning BLEU, one record per iteration: the decoded 1-best BLEU
    with the weights it decoded with, the candidates added, the n-best BLEU optimise found)."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(weights, dtype=np.float64)
    merged: list[NBest] | None = None
    history: list[dict] = []
    best_weights, best_bleu = weights, -math.inf
    for iteration in range(iterations + 1):
        lists = decode(weights)
        if len(lists) != len(references):
            raise ValueError(f"decode gave {len(lists)} n-best lists for {len(references)} refs")
        nbests = [NBest.build(c, r) for c, r in zip(lists, references, strict=True)]
        # The decoded 1-best of each sentence is its list's first candidate (row 0).
        decoded = float(bleu(sum((nb.statistics[0] for nb in nbests), np.zeros(NUM_STATISTICS))))
        if merged is None:
            merged, added = nbests, sum(len(nb.hypotheses) for nb in nbests)
        else:
            pairs = [old.merge(new) for old, new in zip(merged, nbests, strict=True)]
            merged, added = [p[0] for p in pairs], sum(p[1] for p in pairs)
        record = {
            "iteration": iteration,
            "weights": weights.tolist(),
            "decoded_bleu": decoded,
            "candidates_added": added,
            "candidates": sum(len(nb.hypotheses) for nb in merged),
        }
        if decoded > best_bleu:
            best_weights, best_bleu = weights, decoded
        if iteration == iterations or (iteration > 0 and added == 0):
            history.append(record)
            log(f"MERT iteration {iteration}: tuning BLEU {decoded:.2f} (stop)")
            break
        weights, found = optimise(merged, weights, restarts=restarts, rng=rng)
        record["nbest_bleu"] = found
        history.append(record)
        log(
            f"MERT iteration {iteration}: tuning BLEU {decoded:.2f}, {added} new candidates, "
            f"n-best optimum {found:.2f}"
        )
    return best_weights, history
