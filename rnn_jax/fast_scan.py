"""A scan over time with a hand-organised backward pass (the "fused" implementation of `unroll`).

Autodiff through `lax.scan` accumulates dW_hh inside the reverse loop: every step does a rank-B
update of an [H, G] buffer. On CPU that makes forward+backward cost 2.8-4.6x the forward pass
(perf-anchors.md). The custom VJP here organises the work the way oneDNN does:

    forward:   z_x = input_projection(x)           one [T*B, I] @ [I, G] GEMM for all steps
               for t:  z_h_t = recurrent_projection(carry_{t-1})
                       carry_t, y_t = pointwise(z_x_t, z_h_t, carry_{t-1})
                       (saved for the backward pass: z_h_t and carry_{t-1})
    backward:  for t reversed (carrying only d carry):
                       dz_x_t, dz_h_t, d carry_{t-1} = vjp(pointwise)(d carry_t, dy_t)
                       d carry_{t-1} += vjp(recurrent_projection, wrt carry)(dz_h_t)
               dW_hh, db_hh = vjp(recurrent_projection, wrt params) over all steps at once:
                       one [H, T*B] @ [T*B, G] GEMM
               dW_ih, db_ih, dx: autodiff of the 2-D input projection, again one GEMM each.

The cell's equations are never re-derived: the reverse loop differentiates the cell's own
`pointwise` and `recurrent_projection` with `jax.vjp`. Any parameter that `pointwise` itself
reads (peepholes, layer-norm scales, ...) gets its gradient accumulated in the reverse loop's
carry, which is correct for every cell and cheap when those parameters are small.

Shapes: batch-major `[batch, time, features]` unless `time_major=True`; `lengths [batch]`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params

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
      remat: recompute `z_h_t` in the backward pass instead of saving it (saves a
        `[time, batch, G]` buffer for one extra recurrent matmul per step). The O(sqrt T)
        checkpointing of `scan.unroll(remat=True)` is the reference path's (see
        `scan._select_implementation`).
      time_major: `xs` and the returned outputs are `[time, batch, ...]`.
      h_mask: optional `[batch, hidden]` mask multiplying h before the recurrent projection
        at every step (variational recurrent dropout).

    Returns:
      `(ys [batch, time, hidden], final_carry)` (`ys` time-major with `time_major`).

    Cells whose structure does not fit the custom VJP (no recurrent weights, such as minGRU;
    or a `pointwise` that reads a weight matrix, such as Cho's GRU) run on
    `scan.reference_unroll`, with the same results.
    """
    from rnn_jax import scan

    scan._validate(
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
    time, batch, input_size = xs_tm.shape
    hidden_size = cell.sizes(params)[1]
    # One 2-D [time*batch, input] GEMM for all steps; its autodiff gives dW_ih and dx as one
    # GEMM each (a 3-D einsum's autodiff transposes the cotangent: perf-anchors.md).
    z_x = cell.input_projection(params, xs_tm.reshape(time * batch, input_size))
    z_x = z_x.reshape(time, batch, z_x.shape[-1])
    if initial_carry is None:
        initial_carry = cell.zero_carry((batch,), hidden_size, z_x.dtype)
    mask = None if lengths is None else jnp.arange(time)[:, None] < lengths[None, :]
    recurrence = _recurrence(
        cell, reverse, unroll, remat, _pointwise_leaves(cell, params), _additive(cell, params)
    )
    carry, ys = recurrence(params, _to_slabs(z_x, cell.num_gates), initial_carry, mask, h_mask)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry


def fits(cell: Cell, params: Params) -> bool:
    """Whether `cell` has the structure the custom VJP needs.

    A recurrent projection that returns one `[..., G]` array, and a `pointwise` that reads no
    weight matrix (only vectors such as peepholes or layer-norm scales, whose gradients the
    reverse loop accumulates cheaply).
    """
    if not cell.has_recurrent_weights:
        return False
    leaves = jax.tree.leaves(params)
    if any(leaves[i].ndim > 1 for i in _pointwise_leaves(cell, params)):
        return False
    input_size, hidden_size = cell.sizes(params)
    carry = jax.eval_shape(lambda: cell.zero_carry((1,), hidden_size, leaves[0].dtype))
    z_h = jax.eval_shape(cell.recurrent_projection, params, carry)
    return isinstance(z_h, jax.ShapeDtypeStruct) and z_h.shape[-1] % cell.num_gates == 0


def _pointwise_leaves(cell: Cell, params: Params) -> tuple[int, ...]:
    """Indices (in `jax.tree.leaves(params)` order) of the params that `pointwise` reads."""
    leaves, treedef = jax.tree.flatten(params)
    input_size, hidden_size = cell.sizes(params)
    dtype = leaves[0].dtype
    carry = jax.eval_shape(lambda: cell.zero_carry((1,), hidden_size, dtype))
    z_x = jax.ShapeDtypeStruct((1, params["W_ih"].shape[-1]), dtype)
    z_h = jax.eval_shape(cell.recurrent_projection, params, carry)

    def pointwise_of_leaves(leaves: list[Array], z_x: Array, z_h: Any, carry: Carry) -> Any:
        return cell.pointwise(jax.tree.unflatten(treedef, leaves), z_x, z_h, carry)

    jaxpr = jax.make_jaxpr(pointwise_of_leaves)(leaves, z_x, z_h, carry).jaxpr
    read = {v for eqn in jaxpr.eqns for v in eqn.invars if not hasattr(v, "val")}
    read |= {v for v in jaxpr.outvars if not hasattr(v, "val")}
    return tuple(i for i, v in enumerate(jaxpr.invars[: len(leaves)]) if v in read)


def _to_slabs(z: Array, slabs: int) -> tuple[Array, ...]:
    """Splits the gate axis of `z [..., G]` into `slabs` equal pieces.

    Why: a scan body that dynamic-slices a `[T, B, G]` array and then splits it into gates
    gets a fusion about 6x slower per step on XLA:CPU than one reading separate `[T, B, H]`
    slabs (perf-anchors.md); the body concatenates the slabs back, which XLA folds away
    against the cell's own split.
    """
    return tuple(jnp.split(z, slabs, axis=-1))


def _from_slabs(z: tuple[Array, ...]) -> Array:
    return z[0] if len(z) == 1 else jnp.concatenate(z, axis=-1)


def _masked(mask_t: Array | None, new: Carry, old: Carry) -> Carry:
    """`new` where the step is valid (`mask_t [batch]`), else `old`."""
    if mask_t is None:
        return new
    return jax.tree.map(
        lambda n, o: jnp.where(mask_t.reshape(mask_t.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


def _with_h_mask(cell: Cell, carry: Carry, h_mask: Array | None) -> Carry:
    """The carry the recurrent projection sees: h times the dropout mask."""
    return carry if h_mask is None else cell.mask_hidden(carry, h_mask)


def _additive(cell: Cell, params: Params) -> bool:
    """Whether `pointwise` reads `z_x` and `z_h` only through one `z_x + z_h` (LSTM family).

    Then d z_x = d z_h, and the reverse loop emits one `[time, batch, G]` gradient, not two.
    """
    input_size, hidden_size = cell.sizes(params)
    dtype = jax.tree.leaves(params)[0].dtype
    carry = jax.eval_shape(lambda: cell.zero_carry((1,), hidden_size, dtype))
    z = jax.ShapeDtypeStruct((1, params["W_ih"].shape[-1]), dtype)
    pointwise = lambda p, z_x, z_h, c: cell.pointwise(p, z_x, z_h, c)
    jaxpr = jax.make_jaxpr(pointwise)(params, z, z, carry).jaxpr
    z_x, z_h = jaxpr.invars[len(jax.tree.leaves(params)) :][:2]
    readers = [eqn for eqn in jaxpr.eqns if z_x in eqn.invars or z_h in eqn.invars]
    return (
        len(readers) == 1
        and readers[0].primitive.name == "add"
        and set(readers[0].invars) == {z_x, z_h}
        and not {z_x, z_h} & set(jaxpr.outvars)
    )


@functools.lru_cache(maxsize=256)
def _recurrence(
    cell: Cell,
    reverse: bool,
    unroll: int,
    remat: bool,
    pointwise_leaves: tuple[int, ...],
    additive: bool,
) -> Any:
    """The custom-VJP recurrence `(params, z_x_slabs, carry0, mask, h_mask) -> (carry, ys)`.

    `z_x_slabs`: `cell.num_gates` arrays `[time, batch, hidden]`; `mask [time, batch]` bool or
    None; outputs `ys [time, batch, hidden]`. Built once per static configuration.
    """

    def pointwise_params(params: Params) -> list[Array]:
        leaves = jax.tree.leaves(params)
        return [leaves[i] for i in pointwise_leaves]

    def step(
        params: Params, pw: list[Array], z_x_t: Array, z_h_t: Array, carry: Carry, mask_t: Any
    ) -> tuple[Carry, Array]:
        """`pointwise` with its own params `pw` swapped in, and padded steps made no-ops."""
        leaves, treedef = jax.tree.flatten(params)
        for i, leaf in zip(pointwise_leaves, pw, strict=True):
            leaves[i] = leaf
        new_carry, y = cell.pointwise(jax.tree.unflatten(treedef, leaves), z_x_t, z_h_t, carry)
        if mask_t is not None:
            y = jnp.where(mask_t[:, None], y, jnp.zeros_like(y))
        return _masked(mask_t, new_carry, carry), y

    def forward(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any, save: bool):
        pw = pointwise_params(params)

        def body(carry: Carry, inputs: tuple) -> tuple:
            z_x_t, mask_t = inputs
            z_h_t = cell.recurrent_projection(params, _with_h_mask(cell, carry, h_mask))
            new_carry, y = step(params, pw, _from_slabs(z_x_t), z_h_t, carry, mask_t)
            if not save:
                return new_carry, y
            return new_carry, (y, carry, None if remat else _to_slabs(z_h_t, cell.num_gates))

        return jax.lax.scan(body, carry0, (z_x, mask), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def recurrence(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        return forward(params, z_x, carry0, mask, h_mask, save=False)

    def recurrence_fwd(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        carry, (ys, carries, z_h) = forward(params, z_x, carry0, mask, h_mask, save=True)
        return (carry, ys), (params, z_x, carries, z_h, mask, h_mask)

    def recurrence_bwd(residuals: tuple, cotangents: tuple) -> tuple:
        params, z_x, carries, z_h, mask, h_mask = residuals
        d_carry_final, d_ys = cotangents
        pw = pointwise_params(params)

        def project(carry: Carry) -> Array:
            return cell.recurrent_projection(params, _with_h_mask(cell, carry, h_mask))

        def body(state: tuple, inputs: tuple) -> tuple:
            d_carry, d_pw = state
            z_x_t, z_h_t, carry_t, mask_t, d_y_t = inputs
            z_h_t = project(carry_t) if z_h_t is None else _from_slabs(z_h_t)
            _, step_vjp = jax.vjp(
                lambda pw_, zx, zh, c: step(params, pw_, zx, zh, c, mask_t),
                pw,
                _from_slabs(z_x_t),
                z_h_t,
                carry_t,
            )
            d_pw_t, d_z_x_t, d_z_h_t, d_carry_prev = step_vjp((d_carry, d_y_t))
            # Linear in the carry for plain cells, so XLA drops the primal matmul here.
            _, project_vjp = jax.vjp(project, carry_t)
            (d_carry_from_h,) = project_vjp(d_z_h_t)
            d_carry_prev = jax.tree.map(jnp.add, d_carry_prev, d_carry_from_h)
            d_pw = [a + b for a, b in zip(d_pw, d_pw_t, strict=True)]
            return (d_carry_prev, d_pw), (None if additive else d_z_x_t, d_z_h_t)

        d_pw0 = [jnp.zeros_like(p) for p in pw]
        (d_carry0, d_pw), (d_z_x, d_z_h) = jax.lax.scan(
            body, (d_carry_final, d_pw0), (z_x, z_h, carries, mask, d_ys), reverse=not reverse
        )
        if additive:
            d_z_x = d_z_h
        # dW_hh, db_hh: one GEMM / reduction over all steps, not T rank-batch updates.
        time, batch = d_z_h.shape[:2]
        flat_carries = jax.tree.map(lambda c: c.reshape(time * batch, *c.shape[2:]), carries)
        flat_d_z_h = d_z_h.reshape(time * batch, -1)
        flat_h_mask = None if h_mask is None else jnp.tile(h_mask, (time, 1))

        def project_all(p: Params, m: Any) -> Array:
            return cell.recurrent_projection(p, _with_h_mask(cell, flat_carries, m))

        if h_mask is None:
            _, params_vjp = jax.vjp(lambda p: project_all(p, None), params)
            (d_params,) = params_vjp(flat_d_z_h)
            d_h_mask = None
        else:
            _, params_vjp = jax.vjp(project_all, params, flat_h_mask)
            d_params, d_h_mask = params_vjp(flat_d_z_h)
            d_h_mask = d_h_mask.reshape(time, batch, -1).sum(0)
        leaves, treedef = jax.tree.flatten(d_params)
        for i, d in zip(pointwise_leaves, d_pw, strict=True):
            leaves[i] = leaves[i] + d
        d_params = jax.tree.unflatten(treedef, leaves)
        return d_params, _to_slabs(d_z_x, cell.num_gates), d_carry0, None, d_h_mask

    recurrence.defvjp(recurrence_fwd, recurrence_bwd)
    return recurrence
