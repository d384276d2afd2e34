"""Parameter counting, and sizing a baseline to match another model's parameter count.

Comparisons such as "LSTM vs transformer at equal size" are only fair when the sizes match;
`match_size` searches the integer width of a baseline (e.g. a transformer's d_model) whose
parameter count lies within a relative tolerance (default +-5%) of a target count. Models are
built abstractly (`nnx.eval_shape`), so sizing a large model allocates nothing.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from rnn_jax.models.checks import check_positive

__all__ = ["count_params", "match_size"]


def count_params(model_or_tree: Any) -> int:
    """Number of distinct trainable scalars: the `nnx.Param`s of a module, or of any pytree of
    modules or nnx state (a list of models, `nnx.split`'s state), leaving out their other
    variables (RNG keys and counts, batch statistics, caches); a pytree of plain arrays counts
    all its leaves.

    A Param reached twice (weights tied between two modules of a list, or the same model
    listed twice) counts once, as `nnx.state` counts it inside one module: flattening a list
    of modules as a pytree reaches a shared Param once per owner.
    """

    def is_variable(leaf: Any) -> bool:
        return isinstance(leaf, nnx.Variable)

    if isinstance(model_or_tree, nnx.Module):
        model_or_tree = nnx.state(model_or_tree, nnx.Param)
    total, seen = 0, set()
    for leaf in jax.tree.leaves(model_or_tree, is_leaf=is_variable):
        if is_variable(leaf):
            if not isinstance(leaf, nnx.Param) or id(leaf) in seen:
                continue
            seen.add(id(leaf))
            leaf = leaf.value
        total += int(np.prod(np.shape(leaf)))
    return total


def match_size(
    build: Callable[[int], nnx.Module],
    target: int,
    *,
    low: int,
    high: int,
    tolerance: float | None = 0.05,
    multiple_of: int = 1,
) -> tuple[int, int]:
    """Width in [low, high] (a multiple of `multiple_of`) whose model best matches `target`.

    `build(width)` returns the model (it is only traced, with `nnx.eval_shape`); the parameter
    count must grow with width. Returns `(width, count)`; raises ValueError if no width gives
    a count within `tolerance` (relative) of `target`. `tolerance=None`: the closest width,
    however far (for a caller that checks its own tolerance on part of the count).
    """
    if target <= 0:
        raise ValueError(f"target must be a positive parameter count, got {target}")
    if tolerance is not None and not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    check_positive(multiple_of=multiple_of)  # 2.5 gave widths of no multiple
    widths = np.arange(-(-low // multiple_of) * multiple_of, high + 1, multiple_of)
    if widths.size == 0:
        raise ValueError(f"no multiple of {multiple_of} in [low={low}, high={high}]")

    counts: dict[int, int] = {}

    def count(width: int) -> int:
        if width not in counts:
            counts[width] = count_params(nnx.eval_shape(lambda: build(int(width))))
        return counts[width]

    # Binary search for the first width whose count reaches the target, then compare neighbours.
    lo, hi = 0, widths.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if count(widths[mid]) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [int(widths[i]) for i in (lo - 1, lo) if 0 <= i < widths.size]
    best = min(candidates, key=lambda width: abs(count(width) - target))
    if tolerance is not None and abs(count(best) - target) > tolerance * target:
        # The tolerance unrounded: `.0%` printed 0.039 as "within 4%" beside a 4% miss.
        raise ValueError(
            f"no width in [{low}, {high}] gives {target} params within {tolerance * 100:g}%: "
            f"closest is width {best} with {count(best)} params"
        )
    return best, count(best)
