"""A scan over time with a hand-organised backward pass (the "fused" implementation of `unroll`).

Autodiff through `lax.scan` accumulates dW_hh inside the reverse loop: every step does a rank-B
update of an [H, G] buffer. On CPU that makes forward+backward cost 2.8-4.6x the forward pass
(perf-anchors.md). The custom VJP here organises the work the way oneDNN does:

    forward:   for t:  z_x_t = input_projection(x_t)
                       z_h_t = recurrent_projection(carry_{t-1})
                       carry_t, y_t = pointwise(z_x_t, z_h_t, carry_{t-1})
                       (saved for the backward pass: carry_{t-1} and, per gate slab,
                        z_x_t + z_h_t where pointwise reads only the sum, else both)
    backward:  for t reversed (carrying only d carry):
                       dz_x_t, dz_h_t, d carry_{t-1} = vjp(pointwise)(d carry_t, dy_t)
                       (dz_x_t = dz_h_t on those additive slabs: emitted once)
                       d carry_{t-1} += vjp(recurrent_projection, wrt carry)(dz_h_t)
               dW_hh, db_hh = vjp(recurrent_projection, wrt params) over all steps at once:
                       one [H, T*B] @ [T*B, G] GEMM
               dW_ih, db_ih, dx = vjp(input_projection) over all steps at once: one 2-D
                       GEMM each.

Both projections run inside the forward loop: on XLA:CPU a step that reads `x_t` into a
matmul is cheaper than one that reads a precomputed `[T, B, G]` projection (a dynamic-slice
fusion per step), and no `[T, B, G]` input projection is ever stored (docs/design.md).

The cell's equations are never re-derived: the reverse loop differentiates the cell's own
`pointwise` and `recurrent_projection` with `jax.vjp`. Any parameter that `pointwise` itself
reads (peepholes, layer-norm scales, ...) gets its gradient accumulated in the reverse loop's
carry, which is correct for every cell and cheap when those parameters are small.

`fused_bidirectional` runs both directions of a bidirectional layer in this one loop. The
recurrence itself and the structure detection live in rnn_jax/fast_recurrence.py.

Shapes: batch-major `[batch, time, features]` unless `time_major=True`; `lengths [batch]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params, carry_dtype
from rnn_jax.fast_recurrence import (
    additive_slabs,
    carry_spec,
    pointwise_leaves,
    recurrence_of,
)

Array = jax.Array


def fused_unroll(
    cell: Cell,
    params: Params,
    xs: Array,
    lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: Array | None = None,
    forward_loop: str = "scan",
) -> tuple[Array, Carry]:
    """Runs `cell` over `xs` with the custom-VJP scan; same contract as `scan.unroll`.

    Args:
      cell: an `rnn_jax.cells.Cell`.
      params: its params dict.
      xs: `[batch, time, input_size]` (`[time, batch, input_size]` with `time_major`).
      lengths: optional `[batch]` ints, 1 <= length <= time; steps past a sequence's end leave
        the carry unchanged and give zero outputs.
      initial_carry: optional carry (leaves `[batch, hidden]`); zeros if None.
      reverse: run each sequence from its last valid step back to step 0; outputs stay
        aligned with the inputs (a reverse scan whose padded steps are no-ops).
      unroll: `lax.scan` unroll factor of the forward loop. The reverse loop always uses 1:
        unrolling it is measured slower on this CPU (perf-anchors.md).
      remat: recompute both projections, `z_x_t` and `z_h_t`, in the backward pass instead
        of saving their sum (saves a `[time, batch, G]` buffer for one extra input and one
        extra recurrent matmul per step; fast_recurrence.py). The O(sqrt T)
        checkpointing of `scan.unroll(remat=True)` is the reference path's (see
        `scan._select_implementation`).
      time_major: `xs` and the returned outputs are `[time, batch, ...]`.
      h_mask: optional `[batch, hidden]` mask multiplying h before the recurrent projection
        at every step (variational recurrent dropout).
      forward_loop: "scan" (`lax.scan`) or "pallas" (rnn_jax.pallas_scan's kernel, reached
        through `pallas_scan.pallas_unroll`, which checks that the cell fits it).

    Returns:
      `(ys [batch, time, hidden], final_carry)` (`ys` time-major with `time_major`).

    Cells whose structure does not fit the custom VJP (no recurrent weights, such as minGRU;
    or a `pointwise` that reads a weight matrix, such as Cho's GRU) run on
    `scan.reference_unroll`, with the same results.
    """
    from rnn_jax import scan, scan_checks

    scan_checks._validate(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        time_major=time_major,
        h_mask=h_mask,
        unroll=unroll,
        implementation="fused",
    )
    if not fits(cell, params):
        return scan.reference_unroll(
            cell,
            params,
            xs,
            lengths,
            initial_carry,
            reverse=reverse,
            unroll=unroll,
            remat=remat,
            time_major=time_major,
            h_mask=h_mask,
        )
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    time, batch, _ = xs_tm.shape
    hidden_size = cell.sizes(params)[1]
    if initial_carry is None:
        initial_carry = cell.zero_carry((batch,), hidden_size, carry_dtype(cell, params, xs))
    # a list or NumPy array passes `_validate`, as for `scan.unroll` (a list crashed here)
    lengths = None if lengths is None else jnp.asarray(lengths)
    mask = None if lengths is None else jnp.arange(time)[:, None] < lengths[None, :]
    h_mask = _float_mask(h_mask, initial_carry)
    recurrence = recurrence_of(
        cell,
        reverse,
        unroll,
        remat,
        pointwise_leaves(cell, params),
        additive_slabs(cell, params),
        None,
        forward_loop,
    )
    carry, (ys,) = recurrence(
        params, (xs_tm,), initial_carry, None if mask is None else (mask,), h_mask
    )
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry


def fused_bidirectional(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: Array,
    lengths: Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[Array, Array] | None = None,
) -> tuple[tuple[Array, Array], tuple[Carry, Carry]]:
    """Both directions of a bidirectional layer in one custom-VJP scan.

    The two directions' params are stacked on a leading axis and the recurrence is `vmap`ped
    over it, so each step runs one batched recurrent matmul and one elementwise update for
    both directions (one loop, half the per-step overhead of two scans). The backward
    direction reads its inputs reversed in time, `x[::-1]`, with the padding mask reversed
    too: its padded steps (now first) leave the carry unchanged, so every sequence starts at
    its last valid step, as `fused_unroll(reverse=True)` does, without a per-sequence gather.

    Arguments as in `fused_unroll`; `initial_carry` and `h_mask` are `(forward, backward)`
    pairs (either may be None). Returns `((ys_fw, ys_bw), (carry_fw, carry_bw))`, outputs
    `[batch, time, hidden]` (time-major with `time_major`) aligned with the inputs.
    Cells that do not fit the custom VJP run as two `scan.reference_unroll` passes.
    """
    # Directions of different dtypes (a bfloat16 backward beside a float32 forward) each keep
    # their own, as in two scans: stacked into one, they were promoted to a common dtype, or
    # the carry (from the forward params) failed the scan's type check naming nothing.
    dtypes = [[leaf.dtype for leaf in jax.tree.leaves(p)] for p in (params_fw, params_bw)]
    if not (fits(cell, params_fw) and fits(cell, params_bw)) or dtypes[0] != dtypes[1]:
        from rnn_jax import bidirectional_scan

        return bidirectional_scan.reference_bidirectional(
            cell,
            params_fw,
            params_bw,
            xs,
            lengths,
            initial_carry,
            unroll=unroll,
            remat=remat,
            time_major=time_major,
            h_mask=h_mask,
        )
    init_fw, init_bw = (None, None) if initial_carry is None else initial_carry
    mask_fw, mask_bw = (None, None) if h_mask is None else h_mask
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    time, batch, _ = xs_tm.shape
    hidden_size = cell.sizes(params_fw)[1]
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), params_fw, params_bw)
    # The backward direction reads its inputs reversed in time.
    zero = cell.zero_carry((batch,), hidden_size, carry_dtype(cell, params_fw, xs))
    carry0 = jax.tree.map(
        lambda a, b: jnp.stack([a, b]),
        zero if init_fw is None else init_fw,
        zero if init_bw is None else init_bw,
    )
    mask = None
    if lengths is not None:
        lengths = jnp.asarray(lengths)  # a list or NumPy array, as `scan.unroll` takes
        valid = jnp.arange(time)[:, None] < lengths[None, :]
        mask = (valid, valid[::-1])
    if mask_fw is None and mask_bw is None:
        h_masks = None
    else:
        ones = jnp.ones((batch, hidden_size), xs.dtype)
        h_masks = jnp.stack(
            [ones if m is None else _float_mask(m, zero) for m in (mask_fw, mask_bw)]
        )
    recurrence = recurrence_of(
        cell,
        False,
        unroll,
        remat,
        pointwise_leaves(cell, params_fw),
        additive_slabs(cell, params_fw),
        2,
    )
    carry, (ys_fw, ys_bw) = recurrence(params, (xs_tm, xs_tm[::-1]), carry0, mask, h_masks)
    ys_bw = ys_bw[::-1]
    if not time_major:
        ys_fw, ys_bw = jnp.swapaxes(ys_fw, 0, 1), jnp.swapaxes(ys_bw, 0, 1)
    carry_fw = jax.tree.map(lambda c: c[0], carry)
    carry_bw = jax.tree.map(lambda c: c[1], carry)
    return (ys_fw, ys_bw), (carry_fw, carry_bw)


def _float_mask(h_mask: Array | None, carry: Carry) -> Array | None:
    """A bool or integer `h_mask [batch, hidden]` in the dtype of the carry's `h`, the dtype
    `h * h_mask` promotes it to on the reference path (a float mask is returned unchanged).
    The custom VJP's backward pass differentiates w.r.t. the mask, which has no float
    cotangent when it is not a float: `jax.grad` through a bool mask failed inside it."""
    if h_mask is None or jnp.issubdtype(jnp.result_type(h_mask), jnp.inexact):
        return h_mask
    return jnp.asarray(h_mask).astype(jax.tree.leaves(carry)[0].dtype)


def fits(cell: Cell, params: Params) -> bool:
    """Whether `cell` has the structure the custom VJP needs.

    A recurrent projection that returns one `[..., G]` array, and a `pointwise` that reads no
    weight matrix (only vectors such as peepholes or layer-norm scales, whose gradients the
    reverse loop accumulates cheaply).
    """
    if not cell.has_recurrent_weights:
        return False
    leaves = jax.tree.leaves(params)
    if any(leaves[i].ndim > 1 for i in pointwise_leaves(cell, params)):
        return False
    z_h = jax.eval_shape(cell.recurrent_projection, params, carry_spec(cell, params))
    return isinstance(z_h, jax.ShapeDtypeStruct) and z_h.shape[-1] % cell.num_gates == 0
