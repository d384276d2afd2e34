"""The fused scan's forward loop as one Pallas kernel (the "pallas" implementation of `unroll`).

On a GPU, XLA runs the fused scan's forward loop as a `while` whose every step launches a
recurrent GEMM and a few elementwise kernels, and reads `W_hh` from HBM each time. For small
hidden sizes a persistent kernel does better (the idea of Diamos et al. 2016, "Persistent
RNNs"): one Pallas program per block of `BLOCK_BATCH` sequences loads `W_hh` once, keeps the
carry on chip and loops over time itself, so a step costs one on-chip matmul and no launch.

    z_x = input_projection(x)                 one [T*B, I] @ [I, G] GEMM, outside the kernel
    kernel, per block of BLOCK_BATCH sequences, for t (reversed with `reverse`):
        z_t     = z_x[t] + recurrent_projection(carry)      (h masked by h_mask first)
        carry, y = pointwise(z_t, 0, carry)                  (the cell's own equations)
        padded steps (t >= length) keep the carry and emit y = 0
        saved for the backward pass: carry_{t-1} and z_t

What it saves is exactly what `rnn_jax.fast_recurrence`'s forward loop saves when every gate
slab is additive, so the backward pass is that module's reverse loop, unchanged: this file
only replaces the forward loop (`recurrence_of(..., forward_loop="pallas")`). The kernel
calls the cell's `recurrent_projection` and `pointwise` (no second copy of the equations).

What it takes (`check_supported` names what rules a call out, before tracing): cells whose
gate slabs are all additive (the LSTM family, Elman; not the GRUs, whose candidate reads
`r * (h @ W_hn)`), a hidden size and gate width that are powers of two (Triton's block
shapes) with `hidden_size <= MAX_HIDDEN` (W_hh must fit on chip), no `remat`. One direction
per call: `bidirectional_unroll` runs two
(`bidirectional_scan.reference_bidirectional(run=pallas_unroll)`).
On an NVIDIA GPU the kernel is compiled by Pallas's Triton back end; elsewhere it runs in
Pallas's interpreter (`interpret=True`), which is exact but slow: that is how the CPU tests
check it, and the tests also lower it for CUDA (Triton) on CPU. Compiled by Triton it is
float32 only (Triton's lowering has no bfloat16 division, which every sigmoid needs): other
dtypes raise when traced, by name; the interpreter takes any. Matmul precision inside the
kernel is the backend default (TF32 for float32 on Ampere and later, as XLA's GPU dots;
`jax.default_matmul_precision("highest")` makes it IEEE float32). Not measured on a GPU yet
(issue 7).

Shapes: batch-major `[batch, time, features]` unless `time_major=True`; `lengths [batch]`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params

Array = jax.Array

BLOCK_BATCH = 16  # sequences per Pallas program: Triton's dots need at least 16 rows
# W_hh [H, G] is loaded once per program and kept on chip: 64 KiB for an LSTM at H = 64,
# 256 KiB at H = 128 (more than one SM's registers: Triton spills, which the GPU run measures).
MAX_HIDDEN = 128
# None: Pallas's interpreter unless JAX's default backend is a GPU. The tests set False to
# lower the Triton kernel for CUDA on a machine without a GPU. Read when a call is traced:
# jit's caches (scan.unroll's own jit included) keep an earlier trace's choice for the same
# shapes, so a change takes effect for new shapes or after `jax.clear_caches()`.
INTERPRET: bool | None = None


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_supported(cell: Cell, params: Params, *, remat: bool = False) -> None:
    """Raise ValueError naming what rules out the Pallas kernel: the cell, a size, an option,
    or the backend."""
    from rnn_jax.fast_recurrence import additive_slabs
    from rnn_jax.fast_scan import fits

    if not (fits(cell, params) and all(additive_slabs(cell, params))):
        raise ValueError(
            f"implementation='pallas' runs cells whose gate slabs are all additive (the LSTM "
            f"family, Elman); cell={cell!r} is not one: use implementation='fused'"
        )
    _, hidden_size = cell.sizes(params)
    gates = params["W_hh"].shape[-1]
    if not (_power_of_two(hidden_size) and _power_of_two(gates)):
        raise ValueError(
            f"implementation='pallas' needs a hidden size and gate width that are powers of "
            f"two (Triton's block shapes); hidden_size={hidden_size}, gates={gates}"
        )
    if hidden_size > MAX_HIDDEN:
        raise ValueError(
            f"implementation='pallas' keeps W_hh on chip: hidden_size={hidden_size} is over "
            f"MAX_HIDDEN={MAX_HIDDEN}; use implementation='fused'"
        )
    if remat:
        raise ValueError("implementation='pallas' does not take remat=True (the reference's)")
    backend = jax.default_backend()
    if backend not in ("gpu", "cpu"):
        raise ValueError(
            f"implementation='pallas' is written for Pallas's Triton back end (NVIDIA GPUs; "
            f"the interpreter on CPU); this process's backend is {backend!r}"
        )


def pallas_unroll(
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
) -> tuple[Array, Carry]:
    """`scan.unroll`'s contract with the forward loop in a Pallas kernel (`unroll` is ignored:
    the kernel runs its own loop). Gradients: the fused scan's reverse loop."""
    from rnn_jax import fast_scan

    del unroll
    check_supported(cell, params, remat=remat)
    return fast_scan.fused_unroll(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        reverse=reverse,
        remat=False,
        time_major=time_major,
        h_mask=h_mask,
        forward_loop="pallas",
    )


def kernel_leaves(cell: Cell, params: Params) -> tuple[int, ...]:
    """Indices (in `jax.tree.leaves(params)` order) of the params the kernel reads: those of
    `recurrent_projection` and `pointwise` (not `W_ih`: the input projection runs outside)."""
    from rnn_jax.fast_recurrence import carry_spec, leaves_read, pointwise_leaves

    recurrent = leaves_read(cell.recurrent_projection, params, carry_spec(cell, params))
    return tuple(sorted(set(recurrent) | set(pointwise_leaves(cell, params))))


def forward_loop(
    cell: Cell,
    params: Params,
    xs: Array,
    carry0: Carry,
    mask: Array | None,
    h_mask: Array | None,
    *,
    reverse: bool,
    save: bool,
) -> tuple[Carry, Array, Carry | None, Array | None]:
    """The forward loop over time-major `xs [T, B, I]`: `(final carry, ys [T, B, H],
    carries [T, B, H] leaves, sums [T, B, G])`, the last two None unless `save`.

    `carries[t]` is the carry step t starts from (`carry_{t-1}`) and `sums[t] = z_x_t + z_h_t`,
    as `fast_recurrence`'s forward loop saves them.
    `mask [T, B]` bool (None: every step valid), `h_mask [B, H]` (None: no mask).
    """
    time, batch, input_size = xs.shape
    z_x = cell.input_projection(params, xs.reshape(time * batch, input_size))
    z_x = z_x.reshape(time, batch, z_x.shape[-1])
    # Whole blocks, at least one: with an empty batch (a zero-size grid) Pallas's interpreter
    # still sliced a full block out of the inputs and failed.
    pad = -batch % BLOCK_BATCH if batch else BLOCK_BATCH
    rows = batch + pad

    def padded(a: Array, axis: int, value: float = 0) -> Array:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, pad)
        return jnp.pad(a, widths, constant_values=value) if pad else a

    carry_leaves, carry_def = jax.tree.flatten(carry0)
    inputs = [padded(z_x, 1)]
    if mask is not None:
        inputs.append(padded(mask.astype(jnp.int32), 1))
    if h_mask is not None:
        inputs.append(padded(h_mask, 0, 1))
    inputs += [padded(c, 0) for c in carry_leaves]
    read = kernel_leaves(cell, params)
    leaves, params_def = jax.tree.flatten(params)
    inputs += [leaves[i] for i in read]
    # The outputs' dtypes are the step's, not `z_x`'s: bfloat16 params under a float32 carry
    # (an LSTM's carry stays float32 there) emit float32 outputs on every other path; stored
    # as bfloat16 here, they failed the backward pass's dtype check and lost precision.
    sum_dtype, y_dtype = _step_dtypes(cell, params, z_x[0], carry0, h_mask)
    interpret = jax.default_backend() != "gpu" if INTERPRET is None else INTERPRET
    if not interpret:
        _check_float32(
            z_x=z_x.dtype,
            carry=[c.dtype for c in carry_leaves],
            params=[leaves[i].dtype for i in read],
            z=sum_dtype,
            y=y_dtype,
        )
    call = _kernel_call(
        cell,
        params_def,
        read,
        tuple(leaves[i].shape for i in read),
        carry_def,
        tuple(jax.ShapeDtypeStruct((rows,) + c.shape[1:], c.dtype) for c in carry_leaves),
        time,
        z_x.shape[-1],
        sum_dtype,
        y_dtype,
        mask is not None,
        h_mask is not None,
        reverse,
        save,
        interpret,
    )
    outputs = [o[:, :batch] if o.ndim == 3 else o[:batch] for o in call(*inputs)]
    count = len(carry_leaves)
    ys, final = outputs[0], carry_def.unflatten(outputs[1 : 1 + count])
    if not save:
        return final, ys, None, None
    carries = carry_def.unflatten(outputs[1 + count : 1 + 2 * count])
    return final, ys, carries, outputs[-1]


def _check_float32(**dtypes: Any) -> None:
    """Raise ValueError unless every dtype the Triton kernel computes in is float32. Pallas's
    Triton lowering (jax 0.10-0.11) has no bfloat16 division, which every sigmoid lowers to
    ("NotImplementedError: unsupported types: tensor<16x8xbf16>"), and float64 dots need
    sizes of 16 and more; the interpreter takes every dtype."""
    found = {name: [str(d) for d in jax.tree.leaves(value)] for name, value in dtypes.items()}
    other = {name: d for name, d in found.items() if any(x != "float32" for x in d)}
    if other:
        raise ValueError(
            f"implementation='pallas' compiles float32 kernels only on a GPU (Pallas's Triton "
            f"lowering has no bfloat16 division); here {other}: use float32 params and "
            "carry, or implementation='fused'"
        )


def _step_dtypes(
    cell: Cell, params: Params, z_x_t: Array, carry: Carry, h_mask: Array | None
) -> tuple[Any, Any]:
    """The dtypes of one step's `z_x_t + z_h_t` and output `y`, as the fused loop makes them."""

    def step(z_x_t: Array, carry: Carry) -> tuple[Array, Array]:
        seen = carry if h_mask is None else cell.mask_hidden(carry, h_mask)
        z = z_x_t + cell.recurrent_projection(params, seen)
        return z, cell.pointwise(params, z, jnp.zeros_like(z), carry)[1]

    z, y = jax.eval_shape(step, z_x_t, carry)
    return z.dtype, y.dtype


@functools.lru_cache(maxsize=64)
def _kernel_call(
    cell: Cell,
    params_def: Any,
    read: tuple[int, ...],
    leaf_shapes: tuple[tuple[int, ...], ...],
    carry_def: Any,
    carry_shapes: tuple[jax.ShapeDtypeStruct, ...],
    time: int,
    gates: int,
    sum_dtype: Any,
    y_dtype: Any,
    has_mask: bool,
    has_h_mask: bool,
    reverse: bool,
    save: bool,
    interpret: bool,
) -> Any:
    """The `pallas_call` for one static configuration (inputs and outputs as `forward_loop`
    passes and reads them)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pallas_triton

    from rnn_jax.fast_recurrence import masked_pointwise

    count = len(carry_shapes)
    rows, hidden = carry_shapes[0].shape
    block = BLOCK_BATCH

    def kernel(*refs: Any) -> None:
        refs = list(refs)
        z_x_ref = refs.pop(0)
        mask_ref = refs.pop(0) if has_mask else None
        h_mask = refs.pop(0)[...] if has_h_mask else None
        carry = carry_def.unflatten([refs.pop(0)[...] for _ in range(count)])
        values = [None] * params_def.num_leaves
        for i in read:
            values[i] = refs.pop(0)[...]
        params = params_def.unflatten(values)
        ys_ref = refs.pop(0)
        final_refs = [refs.pop(0) for _ in range(count)]
        carries_refs = [refs.pop(0) for _ in range(count)] if save else []
        sums_ref = refs.pop(0) if save else None

        def body(t: Array, carry: Carry) -> Carry:
            s = time - 1 - t if reverse else t
            seen = carry if h_mask is None else cell.mask_hidden(carry, h_mask)
            z = z_x_ref[s] + cell.recurrent_projection(params, seen)
            valid = mask_ref[s] > 0 if has_mask else None
            new_carry, y = masked_pointwise(cell, params, z, jnp.zeros_like(z), carry, valid)
            ys_ref[s] = y.astype(ys_ref.dtype)
            if save:
                for ref, leaf in zip(carries_refs, jax.tree.leaves(carry), strict=True):
                    ref[s] = leaf
                sums_ref[s] = z
            return new_carry

        final = jax.lax.fori_loop(0, time, body, carry)
        for ref, leaf in zip(final_refs, jax.tree.leaves(final), strict=True):
            ref[...] = leaf

    def over_time(width: int) -> Any:
        return pl.BlockSpec((time, block, width), lambda i: (0, i, 0))

    def per_row(width: int) -> Any:
        return pl.BlockSpec((block, width), lambda i: (i, 0))

    def whole(shape: tuple[int, ...]) -> Any:
        return pl.BlockSpec(shape, lambda i: (0,) * len(shape))

    in_specs = [over_time(gates)]
    in_specs += [pl.BlockSpec((time, block), lambda i: (0, i))] if has_mask else []
    in_specs += [per_row(hidden)] if has_h_mask else []
    in_specs += [per_row(hidden)] * count + [whole(shape) for shape in leaf_shapes]
    out_shape = [jax.ShapeDtypeStruct((time, rows, hidden), y_dtype)] + list(carry_shapes)
    out_specs = [over_time(hidden)] + [per_row(hidden)] * count
    if save:
        out_shape += [jax.ShapeDtypeStruct((time,) + c.shape, c.dtype) for c in carry_shapes]
        out_shape += [jax.ShapeDtypeStruct((time, rows, gates), sum_dtype)]
        out_specs += [over_time(hidden)] * count + [over_time(gates)]
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(rows // block,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        # W_hh lives in registers: twice the warps (and registers) from H = 128 on.
        compiler_params=pallas_triton.CompilerParams(
            num_warps=4 if hidden < 128 else 8, num_stages=1
        ),
        name=f"rnn_jax_{type(cell).__name__.lower()}_forward",
    )
