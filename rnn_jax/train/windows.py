"""Train metrics between two logs: one window per replica, closed into means at each log.

Every step's metrics (`loss`, `grad_norm` and `Task.loss_fn`'s logs) are added to the open
window of each replica whose update was applied (`accumulate`); a log closes the window into
per-replica means (`close_window`: the maximum for `grad_norm_max`, the ratio of the sums
for a `(numerator, denominator)` pair) and logs their mean over replicas, with
`<name>_per_seed` lists (`mean_over_replicas`). The window is plain JSON in the checkpoint's
loop record (`window`, `window_steps`), so a resumed run logs what an uninterrupted one does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def per_replica(count: int | list[int], n: int) -> list[int]:
    """A loop record's per-replica count; older checkpoints stored one int for all replicas
    (for `consecutive_nonfinite`: the steps in a row where any replica failed, at least each
    replica's own count)."""
    return list(count) if isinstance(count, list) else [count] * n


def accumulate(loop: dict, m: dict) -> None:
    """Add one step's metrics to the log window of each replica whose update was applied: a
    step skipped under 'skip' (non-finite) stays out of the means, which would all be NaN.
    A `(numerator, denominator)` pair (`Task.loss_fn`) is summed apart: `[num, den]` per
    replica."""
    window = loop["window"]
    applied = np.asarray(m["finite"], bool)
    n = applied.shape[0]
    for name, value in m.items():
        if name in ("finite", "update_finite"):
            continue
        _check_logged(name, value, n)
        if isinstance(value, tuple):  # [2, n]: the window's ratio is that of its sums
            parts = np.where(applied, np.asarray(value, np.float64), 0.0)
            old = window.get(name, [[0.0, 0.0]] * n)
            sums = zip(old, *parts, strict=True)
            window[name] = [[a + float(x), b + float(y)] for (a, b), x, y in sums]
            continue
        value = np.where(applied, np.asarray(value, np.float64), 0.0)
        window.setdefault(name, [0.0] * n)
        window[name] = [float(a + b) for a, b in zip(window[name], value, strict=True)]
        if name == "grad_norm":  # norms are >= 0: the 0 of a skipped step changes no maximum
            old = window.get("grad_norm_max", [0.0] * n)
            window["grad_norm_max"] = [float(max(a, b)) for a, b in zip(old, value, strict=True)]
    # Applied steps per replica (a plain int, shared by all replicas, in older checkpoints).
    counts = per_replica(loop["window_steps"], n)
    loop["window_steps"] = [c + int(a) for c, a in zip(counts, applied, strict=True)]


def _check_logged(name: str, value: Any, n: int) -> None:
    """A value of `Task.loss_fn`'s logs, as one step's metrics hold it over `n` replicas: one
    scalar per replica (shape `(n,)`), or a `(numerator, denominator)` tuple of two such.

    Raises:
      ValueError: naming the logged value and what it was (a tuple of three was "too many
        values to unpack", a list of two arrays "only 0-dimensional arrays can be converted
        to Python scalars", naming neither the value nor what a log may hold).
    """
    expected = f"one scalar per replica (shape ({n},)) or a tuple (numerator, denominator) of two"
    if isinstance(value, tuple) and len(value) != 2:
        raise ValueError(f"Task.loss_fn logged {name!r} as a tuple of {len(value)}: {expected}")
    for part in value if isinstance(value, tuple) else (value,):
        if np.shape(part) != (n,):
            raise ValueError(
                f"Task.loss_fn logged {name!r} with shape {np.shape(part)} over {n} replicas: "
                f"{expected}"
            )


def close_window(loop: dict) -> dict[str, Any]:
    """Window means over the applied steps (max for grad_norm_max; for a `[num, den]` pair
    the ratio of its sums, NaN where den is 0), per replica; NaN for a replica without one.
    The window starts afresh."""

    def value(name: str, total: float | list[float], count: int) -> float:
        if not count:
            return math.nan
        if isinstance(total, list):
            numerator, denominator = total
            return numerator / denominator if denominator else math.nan
        return total if name == "grad_norm_max" else total / count

    n = len(next(iter(loop["window"].values()), []))
    counts = per_replica(loop["window_steps"], n)
    per_seed = {
        ("train_" + name if name == "loss" else name): [
            value(name, v, c) for v, c in zip(values, counts, strict=True)
        ]
        for name, values in loop["window"].items()
    }
    loop["window"], loop["window_steps"] = {}, 0
    loop["last_train"] = per_seed
    return mean_over_replicas(per_seed)


def mean_over_replicas(per_seed: dict[str, list[float]]) -> dict[str, Any]:
    """Scalars (means over replicas) for logging, plus `<name>_per_seed` lists when n > 1."""
    logged: dict[str, Any] = {name: float(np.mean(v)) for name, v in per_seed.items()}
    for name, values in per_seed.items():
        if len(values) > 1:
            logged[f"{name}_per_seed"] = values
    return logged
