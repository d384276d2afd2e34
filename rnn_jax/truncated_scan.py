"""`truncated_unroll`: truncated backpropagation through time (Williams & Peng 1990).

`unroll` in `bptt_length`-step chunks with the carry passed across chunk boundaries through
`jax.lax.stop_gradient`: the forward values are `unroll`'s, gradients flow only within a chunk
(the chunked scan is rnn_jax.scan's `_chunked`, which also serves `remat`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params, carry_dtype
from rnn_jax.predicates import check_positive
from rnn_jax.scan import _chunked, _match_step_dtype, _unroll_factor
from rnn_jax.scan_checks import _validate


def truncated_unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    bptt_length: int,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    unroll: int = 1,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """Truncated BPTT: `unroll` in `bptt_length`-step chunks with the carry passed across chunk
    boundaries through `jax.lax.stop_gradient`.

    The forward values equal `unroll`'s; gradients only flow within a chunk (Williams & Peng
    1990; the usual language-model truncation). The given `initial_carry` gets the first
    chunk's gradient (a learned initial state trains through it; with `bptt_length >= T` the
    gradients are full BPTT's). A sequence that ended in an earlier chunk
    keeps the gradient path from its final carry into the chunk where it ended. Arguments as
    in `unroll`; returns `(ys [batch, time, hidden], final_carry)`.
    """
    check_positive(bptt_length=bptt_length)
    _validate(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        time_major=time_major,
        h_mask=h_mask,
        unroll=unroll,
        implementation="reference",
    )
    lengths = None if lengths is None else jnp.asarray(lengths)
    initial_carry = _match_step_dtype(cell, params, xs, initial_carry)
    return _truncated(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        h_mask,
        int(bptt_length),
        _unroll_factor(unroll),
        time_major,
    )


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _truncated(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None,
    initial_carry: Carry | None,
    h_mask: jax.Array | None,
    bptt_length: int,
    unroll: int,
    time_major: bool,
) -> tuple[jax.Array, Carry]:
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    if initial_carry is None:
        hidden_size = cell.sizes(params)[1]
        initial_carry = cell.zero_carry(
            (xs_tm.shape[1],), hidden_size, carry_dtype(cell, params, xs)
        )
    # A chunk longer than the sequence is the whole sequence: `_chunked` would pad the time
    # axis up to `bptt_length` and scan the padding (bptt_length=1000 on T=35: 28x the steps).
    chunk = min(bptt_length, xs_tm.shape[0])
    carry, ys = _chunked(
        cell, params, initial_carry, xs_tm, lengths, h_mask, unroll, chunk, False, True
    )
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry
