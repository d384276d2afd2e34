"""Scans of a cell over time: `unroll` (padding-aware, reversible, rematerialisable) and its
reference, `reference_unroll`.

What `unroll` computes, as pseudo-code (batch-major, `lengths` right-padded):

    carry = initial_carry or zero
    for t in range(T):                       # reverse=True: t over each sequence's valid part
        h_rec = carry with h * h_mask         #   backwards, outputs kept at their positions
        carry', y = cell.pointwise(params, cell.input_projection(params, xs[:, t]),
                                   cell.recurrent_projection(params, h_rec), carry)
        carry = carry' if t < lengths else carry
        ys[:, t] = y if t < lengths else 0
    return ys, carry

The input projection is computed for all steps at once as one 2-D `[time*batch, input]` matmul
(2-D, not a 3-D einsum, whose autodiff transposes the cotangent: perf-anchors.md) and split per
gate before the scan, so each step reads `num_gates` plain `[batch, H]` slabs
(perf-anchors.md: reading one `[T, B, 4H]` slab and splitting it inside the step made the
gate fusion ~6x slower). Linear cells (minGRU) run through rnn_jax.linear_scan instead.

Built on this module: `bidirectional_unroll` (rnn_jax.bidirectional_scan) and
`truncated_unroll` (truncated BPTT, rnn_jax.truncated_scan); the arguments of all three are
checked in rnn_jax.scan_checks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import linear_scan
from rnn_jax.cells import Carry, Cell, MinGRU, Params, carry_dtype
from rnn_jax.scan_checks import _check_kernel_limits, _validate


def _unroll_factor(unroll: int | bool) -> int | bool:
    """A validated `unroll` as `lax.scan` and the static-argument caches take it: True, or a
    Python int (a NumPy integer converted)."""
    return True if unroll is True else int(unroll)


def _match_step_dtype(cell: Cell, params: Params, xs: jax.Array, carry: Carry | None) -> Any:
    """A given initial `carry` cast to the dtypes one step returns from it (None stays None).

    `lax.scan` needs a carry whose dtype the step preserves, and the step's is set by the
    params (`carry_dtype`): a float32 carry into float64 or bfloat16-only params, or a
    bfloat16 one into float32 params, would fail inside the scan with a bare TypeError.
    A carry the step already preserves (the usual case) is returned unchanged.
    """
    if carry is None:
        return None
    leaves = jax.tree.leaves(carry)
    row = jax.ShapeDtypeStruct((leaves[0].shape[0], xs.shape[-1]), xs.dtype)
    spec = jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype), carry)
    out = jax.eval_shape(lambda c, x: cell.step(params, c, x)[0], spec, row)
    return jax.tree.map(lambda c, o: c if c.dtype == o.dtype else c.astype(o.dtype), carry, out)


def flip_sequences(xs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverse each sequence of `xs [time, batch, ...]` over its valid part only.

    Positions `t >= lengths[b]` stay where they are, so the map is its own inverse and
    outputs of a reversed scan, flipped back, line up with the input positions.
    """
    if lengths is None:
        return xs[::-1]
    time = xs.shape[0]
    t = jnp.arange(time)[:, None]
    index = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, index, axis=0)


def _where_valid(valid: jax.Array, new: Any, old: Any) -> Any:
    """`new` where `valid [batch]`, else `old`, leaf by leaf (leaves `[batch, ...]`)."""

    def pick(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _run_chunk(
    cell: Cell,
    params: Params,
    carry: Carry,
    ts: jax.Array,
    xs: jax.Array,
    lengths: jax.Array | None,
    h_mask: jax.Array | None,
    unroll: int,
) -> tuple[Carry, jax.Array]:
    """Scan time-major `xs [chunk, batch, input]` (time indices `ts [chunk]`) from `carry`."""
    chunk, batch, input_size = xs.shape
    z_x = cell.input_projection(params, xs.reshape(chunk * batch, input_size))
    z_x = z_x.reshape(chunk, batch, z_x.shape[-1])
    valid = None if lengths is None else ts[:, None] < lengths[None, :]  # [chunk, batch]

    if isinstance(cell, MinGRU):
        a, b = cell.linear_coefficients(params, z_x)
        if valid is not None:
            # Padded steps become the identity map, so the carry stops at the last valid step.
            a = jnp.where(valid[..., None], a, 1.0)
            b = jnp.where(valid[..., None], b, 0.0)
        hs = linear_scan.linear_recurrence(
            a, b, carry, method=cell.method, time_axis=0, unroll=unroll
        )
        ys = hs if valid is None else jnp.where(valid[..., None], hs, 0.0)
        return hs[-1], ys

    slabs = tuple(jnp.split(z_x, cell.num_gates, axis=-1))

    def body(carry: Carry, inputs: tuple) -> tuple:
        slabs_t, valid_t = inputs
        z_x_t = jnp.concatenate(slabs_t, axis=-1)
        rec_carry = carry if h_mask is None else cell.mask_hidden(carry, h_mask)
        z_h = cell.recurrent_projection(params, rec_carry)
        new_carry, y = cell.pointwise(params, z_x_t, z_h, carry)
        if valid_t is not None:
            new_carry = _where_valid(valid_t, new_carry, carry)
            y = jnp.where(valid_t[:, None], y, 0.0)
        return new_carry, y

    return jax.lax.scan(body, carry, (slabs, valid), unroll=unroll)


def _pad_time(xs: jax.Array, multiple: int) -> jax.Array:
    """Time-major `xs` padded with zeros to a multiple of `multiple` steps."""
    extra = -xs.shape[0] % multiple
    return jnp.pad(xs, ((0, extra),) + ((0, 0),) * (xs.ndim - 1)) if extra else xs


def _chunked(
    cell: Cell,
    params: Params,
    carry: Carry,
    xs: jax.Array,
    lengths: jax.Array | None,
    h_mask: jax.Array | None,
    unroll: int,
    chunk: int,
    checkpoint: bool,
    stop_gradient: bool,
) -> tuple[Carry, jax.Array]:
    """Outer scan over `chunk`-step pieces of time-major `xs`; returns `(carry, ys [T, B, H])`.

    `checkpoint`: each piece is rematerialised in the backward pass (only the carries at piece
    boundaries are stored). `stop_gradient`: no gradient flows from a piece into the carry
    the piece before handed it (the first piece's, the given initial carry, keeps it).
    """
    time, batch = xs.shape[:2]
    if lengths is None and time % chunk:
        lengths = jnp.full((batch,), time, jnp.int32)  # masks the padding steps added below
    padded = _pad_time(xs, chunk)
    pieces = padded.shape[0] // chunk
    xs_pieces = padded.reshape(pieces, chunk, *padded.shape[1:])
    ts_pieces = jnp.arange(pieces * chunk).reshape(pieces, chunk)

    def piece(carry: Carry, inputs: tuple) -> tuple:
        ts, xs_piece = inputs
        if stop_gradient:
            # Cut the carry coming in from the previous piece, not the given initial carry
            # (the first piece's own: a learned initial state trains through it, as in full
            # BPTT), and only for sequences still running: a finished sequence's final carry
            # keeps its gradient path into the piece where it ended.
            cut = jnp.broadcast_to(ts[0] > 0, (batch,))
            if lengths is not None:
                cut = cut & (ts[0] < lengths)
            carry = _where_valid(cut, jax.lax.stop_gradient(carry), carry)
        return _run_chunk(cell, params, carry, ts, xs_piece, lengths, h_mask, unroll)

    if checkpoint:
        piece = jax.checkpoint(piece, prevent_cse=False)
    carry, ys = jax.lax.scan(piece, carry, (ts_pieces, xs_pieces))
    return carry, ys.reshape(pieces * chunk, *ys.shape[2:])[:time]


def reference_unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """`unroll` with `lax.scan` over `cell.pointwise` (arguments as in `unroll`, unvalidated)."""
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    time, batch = xs_tm.shape[:2]
    if initial_carry is None:
        initial_carry = cell.zero_carry(
            (batch,), cell.sizes(params)[1], carry_dtype(cell, params, xs)
        )
    if reverse:
        xs_tm = flip_sequences(xs_tm, lengths)
    if remat:
        # sqrt(T)-step pieces: sqrt(T) stored boundary carries + one recomputed piece = O(sqrt T).
        chunk = max(1, int(np.ceil(np.sqrt(time))))
        carry, ys = _chunked(
            cell, params, initial_carry, xs_tm, lengths, h_mask, unroll, chunk, True, False
        )
    else:
        carry, ys = _run_chunk(
            cell, params, initial_carry, jnp.arange(time), xs_tm, lengths, h_mask, unroll
        )
    if reverse:
        ys = flip_sequences(ys, lengths)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry


def _select_implementation(implementation: str, cell: Cell, *, remat: bool) -> Callable:
    """The unroll function behind `implementation`.

    "auto" is the fused custom-VJP scan (rnn_jax.fast_scan: the weight gradients as one GEMM
    after the reverse loop; 1.2-1.3x the reference's forward+backward speed on this CPU, see
    the README's performance section), except with `remat=True`, whose O(sqrt T) chunked
    checkpointing is the reference path's. Cells the fused scan cannot take (minGRU, Cho's
    GRU) fall back to the reference inside `fused_unroll`. "cudnn" is the plain LSTM on
    cuDNN (rnn_jax.cudnn_scan; NVIDIA GPUs only); "pallas" the fused scan with its forward
    loop in a Pallas kernel (rnn_jax.pallas_scan; Triton on NVIDIA GPUs, the interpreter on
    CPU). The only place that chooses; the fast paths are imported lazily so the core works
    without them.
    """
    del cell
    if implementation == "cudnn":
        from rnn_jax.cudnn_scan import cudnn_unroll

        return cudnn_unroll
    if implementation == "pallas":
        from rnn_jax.pallas_scan import pallas_unroll

        return pallas_unroll
    if implementation == "fused" or (implementation == "auto" and not remat):
        from rnn_jax.fast_scan import fused_unroll

        return fused_unroll
    return reference_unroll


@functools.cache
def _compiled(run: Callable) -> Callable:
    """`run` under `jax.jit` (the cell and layout options static): eager calls of `unroll`
    then hit a compile cache instead of re-tracing and re-compiling the scan every time;
    inside a caller's jit it is simply inlined."""
    return jax.jit(
        run, static_argnums=0, static_argnames=("reverse", "unroll", "remat", "time_major")
    )


def unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
    implementation: str = "auto",
) -> tuple[jax.Array, Carry]:
    """Run `cell` over `xs`; returns `(ys [batch, time, hidden], final_carry)`.

    dtypes: `ys` and the carry have the step's dtype (`cells.carry_dtype`), which the params
    set, not `xs`: all-bfloat16 params give bfloat16 outputs from float32 inputs, float32
    params float32 outputs from bfloat16 inputs, bfloat16 matrices with float32 biases
    float32 (each projection multiplies in its weight's dtype; docs/design.md).

    Args:
      cell: an rnn_jax.cells.Cell. params: its params dict.
      xs: `[batch, time, input]` (`[time, batch, input]` with `time_major=True`; `ys` follows).
      lengths: `[batch]` ints, 1 <= length <= time, for right-padded batches (None: all full).
        Outputs past a sequence's end are exactly zero; the final carry is the carry after
        each sequence's last valid step.
      initial_carry: carry `[batch, hidden]` leaves (None: zeros). A learned initial carry is
        a param broadcast to `[batch, hidden]` by the caller (see rnn_jax.modules.RNN).
      reverse: run each sequence backwards over its valid part only; `ys[:, t]` stays aligned
        with `xs[:, t]` and the final carry is the state after reading position 0.
      unroll: `lax.scan` unroll factor (on CPU >1 helps the forward, hurts the backward).
      remat: rematerialise sqrt(T)-step pieces in the backward pass: O(sqrt T) memory (with
        "auto" or "reference"; with "fused" it recomputes each step's projections instead,
        still O(T) memory, `fast_scan.fused_unroll`).
      h_mask: `[batch, hidden]`, multiplies h before the recurrent projection at every step
        (variational recurrent dropout, Gal & Ghahramani 2016: one mask per sequence).
      implementation: "reference" (lax.scan over `cell.pointwise`), "fused" (custom-VJP scan
        from rnn_jax.fast_scan), "auto", "cudnn" (plain LSTM on an NVIDIA GPU through
        jax.experimental.rnn; no `reverse`, `h_mask` or `remat`; rnn_jax.cudnn_scan), or
        "pallas" (the fused scan with its forward loop in a Pallas kernel: LSTM family and
        Elman at power-of-two sizes up to `pallas_scan.MAX_HIDDEN`, no `remat`;
        rnn_jax.pallas_scan).
    """
    _validate(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        time_major=time_major,
        h_mask=h_mask,
        unroll=unroll,
        implementation=implementation,
    )
    _check_kernel_limits(implementation, cell, params, reverse=reverse, remat=remat, h_mask=h_mask)
    lengths = None if lengths is None else jnp.asarray(lengths)
    run = _compiled(_select_implementation(implementation, cell, remat=remat))
    return run(
        cell,
        params,
        xs,
        lengths,
        _match_step_dtype(cell, params, xs, initial_carry),
        reverse=reverse,
        unroll=_unroll_factor(unroll),
        remat=remat,
        time_major=time_major,
        h_mask=h_mask,
    )
