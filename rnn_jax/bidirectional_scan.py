"""`bidirectional_unroll`: a cell run forwards and backwards over the same inputs, each
direction with its own params, outputs aligned with the inputs.

The forward direction is `unroll`; the backward one is `unroll(reverse=True)`, which reads each
sequence's valid part backwards (rnn_jax.scan). `reference_bidirectional` runs them as two
scans; the fused path runs both in one custom-VJP scan (`fast_scan.fused_bidirectional`) and
"cudnn" as one cuDNN bidirectional layer; the choice is `unroll`'s
(`scan._select_implementation`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params
from rnn_jax.scan import _match_step_dtype, _select_implementation, _unroll_factor, reference_unroll
from rnn_jax.scan_checks import _check_kernel_limits, _validate


def bidirectional_unroll(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[jax.Array, jax.Array] | None = None,
    implementation: str = "auto",
) -> tuple[tuple[jax.Array, jax.Array], tuple[Carry, Carry]]:
    """`unroll` forwards with `params_fw` and `reverse=True` with `params_bw` over the same `xs`.

    Returns `((ys_fw, ys_bw), (carry_fw, carry_bw))`, outputs `[batch, time, hidden]` aligned
    with `xs`. `initial_carry` and `h_mask` are `(forward, backward)` pairs; other arguments
    as in `unroll`. On the fused path ("auto" without remat, or "fused") both directions run
    in one scan (`rnn_jax.fast_scan.fused_bidirectional`); with "cudnn" as one cuDNN
    bidirectional layer; otherwise (with "pallas" two kernel passes) as two scans.
    """
    init_fw, init_bw = _pair("initial_carry", initial_carry)
    mask_fw, mask_bw = _pair("h_mask", h_mask)
    for params, init, mask in ((params_fw, init_fw, mask_fw), (params_bw, init_bw, mask_bw)):
        _validate(
            cell,
            params,
            xs,
            lengths,
            init,
            time_major=time_major,
            h_mask=mask,
            unroll=unroll,
            implementation=implementation,
        )
    if cell.sizes(params_fw) != cell.sizes(params_bw):
        raise ValueError(
            f"params_fw sizes {cell.sizes(params_fw)} differ from params_bw sizes "
            f"{cell.sizes(params_bw)}; both directions need the same (input, hidden)"
        )
    _check_kernel_limits(implementation, cell, params_fw, remat=remat, h_mask=h_mask)
    lengths = None if lengths is None else jnp.asarray(lengths)
    if initial_carry is not None:
        initial_carry = (
            _match_step_dtype(cell, params_fw, xs, init_fw),
            _match_step_dtype(cell, params_bw, xs, init_bw),
        )
    run = _compiled_bidirectional(_select_implementation(implementation, cell, remat=remat))
    return run(
        cell,
        params_fw,
        params_bw,
        xs,
        lengths,
        initial_carry,
        unroll=_unroll_factor(unroll),
        remat=remat,
        time_major=time_major,
        h_mask=h_mask,
    )


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    """The `(forward, backward)` halves of `bidirectional_unroll`'s pair argument `name`
    (None: both None); anything but a 2-tuple or 2-list raises ValueError naming `name`.
    A single carry or mask used to be unpacked along its batch axis ("too many values to
    unpack", or a row per direction when the batch was 2)."""
    if value is None:
        return None, None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    shapes = jax.tree.map(jnp.shape, value)
    raise ValueError(
        f"{name} must be a (forward, backward) pair (either may be None) or None; got "
        f"{type(value).__name__} with shapes {shapes}"
    )


@functools.cache
def _compiled_bidirectional(run: Callable) -> Callable:
    """The jitted bidirectional pass on the path `run` chose (see `scan._compiled`)."""
    from rnn_jax import cudnn_scan, fast_scan, pallas_scan

    passes = {
        reference_unroll: reference_bidirectional,
        fast_scan.fused_unroll: fast_scan.fused_bidirectional,
        cudnn_scan.cudnn_unroll: cudnn_scan.cudnn_bidirectional,
        pallas_scan.pallas_unroll: functools.partial(
            reference_bidirectional, run=pallas_scan.pallas_unroll
        ),
    }
    return jax.jit(passes[run], static_argnums=0, static_argnames=("unroll", "remat", "time_major"))


def reference_bidirectional(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[jax.Array, jax.Array] | None = None,
    run: Callable | None = None,
) -> tuple[tuple[jax.Array, jax.Array], tuple[Carry, Carry]]:
    """`bidirectional_unroll` as two passes of `run` (default `reference_unroll`; arguments
    unvalidated), the second with `reverse=True`."""
    run = reference_unroll if run is None else run
    init_fw, init_bw = (None, None) if initial_carry is None else initial_carry
    mask_fw, mask_bw = (None, None) if h_mask is None else h_mask
    options = dict(unroll=unroll, remat=remat, time_major=time_major)
    ys_fw, carry_fw = run(cell, params_fw, xs, lengths, init_fw, h_mask=mask_fw, **options)
    ys_bw, carry_bw = run(
        cell, params_bw, xs, lengths, init_bw, h_mask=mask_bw, reverse=True, **options
    )
    return (ys_fw, ys_bw), (carry_fw, carry_bw)
