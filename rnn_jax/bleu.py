"""BLEU (Papineni et al. 2002) with sacrebleu (Post 2018), and paired significance tests of
the difference between two systems' corpus BLEU on the same sentences.

`corpus_bleu`: sacrebleu's corpus score, one reference each. `paired_bleu_significance`:
approximate randomisation (Noreen 1989; Riezler & Maxwell 2005) or paired bootstrap resampling
(Koehn 2004) on sacrebleu's per-sentence statistics, with sacrebleu's draws and seed
(`significance_seed`) but ties with the real difference counted.

BLEU can also be computed inside a jitted evaluation step: `bleu_statistics` gives each
sentence's clipped n-gram matches and n-gram totals from token ids (summable over batches and
devices, like any other evaluation sum), and `bleu_from_statistics` turns the corpus sums into
sacrebleu's score (the same formula and 'exp' smoothing as `corpus_bleu`).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "bleu_from_statistics",
    "bleu_statistics",
    "corpus_bleu",
]


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a"
) -> float:
    """Corpus BLEU (Papineni et al. 2002) with sacrebleu (Post 2018), one reference each.

    Use tokenize='none' for text that is already tokenised (e.g. Multi30k's tok/ files); then
    sacrebleu's warning that the text looks tokenised is off (`force`), since it is meant to be.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses ({len(hypotheses)}) and references ({len(references)}) differ in number"
        )
    if not hypotheses:  # sacrebleu dies with a bare IndexError
        raise ValueError("corpus BLEU of no sentences: hypotheses and references are empty")
    return float(
        sacrebleu.corpus_bleu(
            list(hypotheses), [list(references)], tokenize=tokenize, force=tokenize == "none"
        ).score
    )


SIGNIFICANCE_TESTS = ("ar", "bs")


def paired_bleu_significance(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[str],
    *,
    test: str = "ar",
    samples: int = 10_000,
    tokenize: str = "13a",
) -> dict:
    """Is `system`'s corpus BLEU different from `baseline`'s on the same sentences? Paired
    tests on sacrebleu's corpus BLEU (Post 2018), one reference each.

    - "ar": approximate randomisation (Noreen 1989; Riezler & Maxwell 2005): each trial swaps
      the two systems' outputs of every sentence with probability 1/2; p = (c + 1) / (n + 1)
      for the c of n trials whose |BLEU difference| is at least the real one. The trials are
      sacrebleu's (`PairedTest`'s draw and seed), but sacrebleu, after Clark et al.'s multeval,
      counts only trials that exceed the real difference strictly: a trial that swaps none or
      all of the k sentences where the systems differ always ties, so its p-value is at least
      2^(1-k) too small (two systems that differ in one sentence of 50 got p = 0.001 where
      the exact test gives 1). Ties count here.
    - "bs": paired bootstrap resampling (Koehn 2004; Moses's
      bootstrap-hypothesis-difference-significance.pl; sacrebleu's `PairedTest`), with the
      system's 95% interval: p = (c + 1) / (n + 1) for the c of n resamples whose |BLEU
      difference| minus the resamples' mean |difference| is at least the real one. The
      resamples are sacrebleu's draw; sacrebleu again counts only those that exceed the real
      difference strictly, so two systems with equal statistics in every sentence (outputs
      that differ only in words matching nothing, or both at BLEU 0) got p = 1 / (n + 1),
      "significant", where every resample ties. Ties count here.

    Two-sided; the trials are seeded (sacrebleu's SACREBLEU_SEED, 12345 unless set), so the
    result repeats. Identical outputs get p = 1.

    Returns:
      {"test", "samples", "seed" (`significance_seed()`: None if unseeded), "baseline_bleu",
      "system_bleu", "difference" (system - baseline), "p_value"}, plus "system_mean" and
      "system_ci" (half-width) for "bs".

    Raises:
      ValueError: for an unknown test, fewer than 1 sample, lists of different lengths, or
        empty ones.
    """
    from sacrebleu.metrics import BLEU

    if test not in SIGNIFICANCE_TESTS:
        raise ValueError(f"test={test!r}: must be one of {SIGNIFICANCE_TESTS}")
    if samples < 1:
        raise ValueError(f"samples={samples}: must be >= 1")
    if not len(baseline) == len(system) == len(references):
        raise ValueError(
            f"baseline ({len(baseline)}), system ({len(system)}) and references "
            f"({len(references)}) differ in number"
        )
    if not references:  # sacrebleu dies with a bare TypeError ("ar") or IndexError ("bs")
        raise ValueError(
            "paired BLEU test on no sentences: baseline, system and references are empty"
        )
    seed = significance_seed()  # named before any work when SACREBLEU_SEED is malformed
    metric = BLEU(tokenize=tokenize, force=tokenize == "none")
    # sacrebleu's per-sentence statistics of both systems; corpus BLEU from summed ones
    stats = [
        np.asarray(metric._extract_corpus_statistics(list(outputs), [list(references)]), np.int64)
        for outputs in (baseline, system)
    ]

    def bleu(summed: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(summed.tolist()).score)

    base_bleu, system_bleu = bleu(stats[0].sum(0)), bleu(stats[1].sum(0))
    test_fn = _approximate_randomisation if test == "ar" else _paired_bootstrap
    p_value, extra = test_fn(stats, bleu, abs(system_bleu - base_bleu), samples, seed)
    return {
        "test": test,
        "samples": samples,
        "seed": seed,
        "baseline_bleu": base_bleu,
        "system_bleu": system_bleu,
        "difference": system_bleu - base_bleu,
        "p_value": 1.0 if list(baseline) == list(system) else float(p_value),
        **extra,
    }


def significance_seed() -> int | None:
    """The seed of the paired tests' draws, read as sacrebleu's `PairedTest` reads it:
    SACREBLEU_SEED (default 12345); "none" or 0 means unseeded (None).

    Raises:
      ValueError: naming SACREBLEU_SEED when it is neither an integer nor "none".
    """
    import os

    text = os.environ.get("SACREBLEU_SEED", "12345")
    if text.strip().lower() == "none":
        return None
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(
            f"SACREBLEU_SEED={text!r}: must be an integer, or 'none' (0 also means unseeded)"
        ) from None
    return None if seed == 0 else seed


def _approximate_randomisation(
    stats: list[np.ndarray], bleu: Any, real: float, samples: int, seed: int | None
) -> tuple[float, dict]:
    """(p, {}) of the "ar" test of `paired_bleu_significance`, from both systems' per-sentence
    statistics `stats` and the real |BLEU difference|: the swaps drawn as sacrebleu's
    `_paired_ar_test` draws them, from `seed` (`significance_seed()`), each trial scored from
    summed statistics, and ties with the real difference counted."""
    swap = np.random.default_rng(seed).integers(2, size=(samples, len(stats[0])), dtype=bool)
    one = swap.astype(np.int64) @ stats[0] + (~swap).astype(np.int64) @ stats[1]
    other = (~swap).astype(np.int64) @ stats[0] + swap.astype(np.int64) @ stats[1]
    trials = np.array([abs(bleu(a) - bleu(b)) for a, b in zip(one, other, strict=True)])
    return _p_value(trials, real), {}


def _paired_bootstrap(
    stats: list[np.ndarray], bleu: Any, real: float, samples: int, seed: int | None
) -> tuple[float, dict]:
    """(p, {"system_mean", "system_ci"}) of the "bs" test of `paired_bleu_significance`
    (arguments as `_approximate_randomisation`'s): the resamples drawn as sacrebleu's
    `_paired_bs_test` draws them, from `seed`, its centred statistic, and ties with the real
    difference counted."""
    from sacrebleu.significance import estimate_ci

    n = len(stats[0])
    picks = np.random.default_rng(seed).choice(n, size=(samples, n), replace=True)
    counts = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.int64)
    base_scores = np.array([bleu(summed) for summed in counts @ stats[0]])
    system_scores = np.array([bleu(summed) for summed in counts @ stats[1]])
    diffs = np.abs(system_scores - base_scores)
    mean, ci = estimate_ci(system_scores)
    return _p_value(diffs - diffs.mean(), real), {
        "system_mean": float(mean),
        "system_ci": float(ci),
    }


def _p_value(trials: np.ndarray, real: float) -> float:
    """(c + 1) / (n + 1) for the c of n trial statistics at least `real`. A trial that
    reproduces the two systems' statistics scores exactly as they do; the tolerance only
    absorbs rounding between equal scores reached through other sums."""
    extreme = int(np.sum(trials >= real - 1e-9 * max(1.0, real)))
    return (extreme + 1) / (len(trials) + 1)


def bleu_statistics(
    hypotheses: jax.Array,
    hypothesis_lengths: jax.Array,
    references: jax.Array,
    reference_lengths: jax.Array,
    max_order: int = 4,
) -> tuple[jax.Array, jax.Array]:
    """Per-sentence BLEU statistics from token ids, jit- and vmap-friendly.

    Args:
      hypotheses: int `[batch, hyp_time]`; positions at or past `hypothesis_lengths` ignored.
      references: int `[batch, ref_time]`, one reference per sentence, likewise with
        `reference_lengths`. Ids are compared as they are: give reference words that are out
        of the model's vocabulary ids the model cannot emit, or they match its `<unk>`.
      hypothesis_lengths, reference_lengths: int `[batch]` (>= 0).

    Returns:
      `(matches, totals)`, int32 `[batch, max_order]`: for n = 1..max_order, the hypothesis
      n-grams whose count is clipped by the reference's count (Papineni et al. 2002), and the
      number of hypothesis n-grams, max(0, length - n + 1). Summed over a corpus together with
      the lengths they are sacrebleu's `counts`, `totals`, `sys_len`, `ref_len`.
    """
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    hyp_time, ref_time = hypotheses.shape[1], references.shape[1]
    same_hh = hypotheses[:, :, None] == hypotheses[:, None, :]  # [batch, hyp, hyp]
    same_hr = hypotheses[:, :, None] == references[:, None, :]  # [batch, hyp, ref]
    equal_hh, equal_hr = same_hh, same_hr
    matches, totals = [], []
    for n in range(1, max_order + 1):
        if n > 1:  # n-grams at (i, j) agree iff (n-1)-grams at (i, j) and tokens i+n-1, j+n-1 do
            equal_hh = equal_hh[:, :-1, :-1] & same_hh[:, n - 1 :, n - 1 :]
            equal_hr = equal_hr[:, :-1, :-1] & same_hr[:, n - 1 :, n - 1 :]
        starts_h = jnp.arange(max(hyp_time - n + 1, 0))
        valid_h = starts_h[None, :] + n <= hypothesis_lengths[:, None]
        valid_r = jnp.arange(max(ref_time - n + 1, 0))[None, :] + n <= reference_lengths[:, None]
        pairs = equal_hh & valid_h[:, :, None] & valid_h[:, None, :]
        count_h = pairs.sum(-1)
        # Clip each distinct n-gram once: at its first occurrence in the hypothesis.
        seen_before = (pairs & (starts_h[None, :] < starts_h[:, None])[None]).any(-1)
        count_r = (equal_hr & valid_r[:, None, :]).sum(-1)
        clipped = jnp.where(valid_h & ~seen_before, jnp.minimum(count_h, count_r), 0)
        matches.append(clipped.sum(-1))
        totals.append(jnp.maximum(hypothesis_lengths - n + 1, 0))
    return jnp.stack(matches, -1).astype(jnp.int32), jnp.stack(totals, -1).astype(jnp.int32)


def bleu_from_statistics(
    matches: Sequence[float],
    totals: Sequence[float],
    hypothesis_length: float,
    reference_length: float,
) -> float:
    """Corpus BLEU in % from summed `bleu_statistics` (sacrebleu's formula, 'exp' smoothing,
    as `corpus_bleu` uses): matches/totals `[max_order]`, lengths in tokens."""
    from sacrebleu.metrics import BLEU

    if len(matches) != len(totals):
        raise ValueError(f"matches ({len(matches)}) and totals ({len(totals)}) differ in order")
    return float(
        BLEU.compute_bleu(
            [int(round(m)) for m in matches],
            [int(round(t)) for t in totals],
            int(round(hypothesis_length)),
            int(round(reference_length)),
            smooth_method="exp",
            max_ngram_order=len(matches),
        ).score
    )
