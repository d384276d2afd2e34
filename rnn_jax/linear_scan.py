"""The diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t, sequential or in O(log T) depth.

Behind one signature, `linear_recurrence(a, b, h0, method=...)`:

- `"sequential"`: `lax.scan`, T steps of depth 1. On CPU this is the fastest at every T we
  measured (/work/shared/notes/perf-anchors.md: associative_scan is 2-6x slower forward and
  ~3x slower forward+backward on 2 cores; it does twice the work in log T memory passes).
- `"associative"`: `lax.associative_scan` with the composition of affine maps
  (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2): O(log T) depth, which pays on GPU/TPU.
- `"auto"`: sequential on CPU, associative on GPU/TPU (by `jax.default_backend()`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

METHODS = ("auto", "sequential", "associative")


def resolve_method(method: str) -> str:
    """`"sequential"` or `"associative"`; `"auto"` is decided by `jax.default_backend()`."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(METHODS)}")
    if method == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "associative"
    return method


def _compose(left: tuple, right: tuple) -> tuple:
    a_left, b_left = left
    a_right, b_right = right
    return a_left * a_right, a_right * b_left + b_right


def linear_recurrence(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    method: str = "auto",
    time_axis: int = 1,
    unroll: int = 1,
) -> jax.Array:
    """All states `h [batch, time, features]` of h_t = a_t ⊙ h_{t-1} + b_t from `h0`.

    Args:
      a, b: `[batch, time, features]` coefficients (`[time, batch, features]` with
        `time_axis=0`, the layout scans use internally).
      h0: `[batch, features]` state before the first step. The states come out in the
        promoted dtype of `a`, `b` and `h0`, whichever the method.
      method: `"sequential"`, `"associative"` or `"auto"` (see the module docstring).
      time_axis: 1 (batch-major) or 0 (time-major).
      unroll: `lax.scan` unroll factor of the sequential method.
    """
    method = resolve_method(method)
    if time_axis not in (0, 1):
        raise ValueError(f"time_axis={time_axis!r}; allowed: 0 (time-major), 1 (batch-major)")
    a, b, h0 = (jnp.asarray(v) for v in (a, b, h0))
    state_shape = a.shape[:time_axis] + a.shape[time_axis + 1 :]
    if a.ndim < 2 or b.shape != a.shape or h0.shape != state_shape:
        # The two methods must not differ here: the associative one broadcast a [1, features]
        # h0 over the batch without a word, where the sequential one failed inside lax.scan.
        raise ValueError(
            f"a and b must have one shape with a time axis {time_axis} and h0 that shape "
            f"without it; got a {tuple(a.shape)}, b {tuple(b.shape)}, h0 {tuple(h0.shape)}"
        )
    # Both methods compute in the promoted dtype (sequential failed in lax.scan, whose carry
    # must keep its dtype, on e.g. a float32 h0 with float64 a and b; associative gave b's).
    dtype = jnp.result_type(a, b, h0)
    a, b, h0 = (v.astype(dtype) for v in (a, b, h0))
    if method == "sequential":

        def body(h: jax.Array, ab: tuple) -> tuple:
            h = ab[0] * h + ab[1]
            return h, h

        a_t, b_t = (jnp.moveaxis(v, time_axis, 0) for v in (a, b))
        _, hs = jax.lax.scan(body, h0, (a_t, b_t), unroll=unroll)
        return jnp.moveaxis(hs, 0, time_axis)
    if a.shape[time_axis] == 0:
        return b  # no steps, no states (as the sequential method returns)
    # Fold h0 into the first step: h_1 = a_1 h0 + b_1 is then the affine map (0, h_1).
    first = (slice(None),) * time_axis + (0,)
    b = b.at[first].add(a[first] * h0)
    _, hs = jax.lax.associative_scan(_compose, (a, b), axis=time_axis)
    return hs
