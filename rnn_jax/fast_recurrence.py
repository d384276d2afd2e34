"""The custom-VJP recurrence behind `rnn_jax.fast_scan` and how it reads a cell's structure.

`recurrence_of(...)` builds, once per static configuration, the `jax.custom_vjp` function that
runs the loop over time, both projections included (see rnn_jax/fast_scan.py for the
whole algorithm); `pointwise_leaves` and `additive_slabs` trace a cell to find which params
its `pointwise` reads and in which gate slabs it reads `z_x` and `z_h` only through their sum.

Shapes: time-major inside, `[time, batch, ...]`; gate slabs `[..., hidden]`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import Carry, Cell, Params

Array = jax.Array


def leaves_read(function: Any, params: Params, *args: Any) -> tuple[int, ...]:
    """Indices (in `jax.tree.leaves(params)` order) of the params `function(params, *args)`
    reads (`args`: arrays or `jax.ShapeDtypeStruct`s), found by tracing it."""
    leaves, treedef = jax.tree.flatten(params)

    def of_leaves(leaves: list[Array], *args: Any) -> Any:
        return function(jax.tree.unflatten(treedef, leaves), *args)

    jaxpr = jax.make_jaxpr(of_leaves)(leaves, *args).jaxpr
    read = {v for eqn in jaxpr.eqns for v in eqn.invars if not hasattr(v, "val")}
    read |= {v for v in jaxpr.outvars if not hasattr(v, "val")}
    return tuple(i for i, v in enumerate(jaxpr.invars[: len(leaves)]) if v in read)


def carry_spec(cell: Cell, params: Params) -> Any:
    """The shapes and dtypes (`jax.ShapeDtypeStruct` leaves) of a batch-of-one carry."""
    _, hidden_size = cell.sizes(params)
    dtype = jax.tree.leaves(params)[0].dtype
    return jax.eval_shape(lambda: cell.zero_carry((1,), hidden_size, dtype))


def pointwise_leaves(cell: Cell, params: Params) -> tuple[int, ...]:
    """Indices (in `jax.tree.leaves(params)` order) of the params that `pointwise` reads."""
    carry = carry_spec(cell, params)
    z_x = jax.ShapeDtypeStruct((1, params["W_ih"].shape[-1]), jax.tree.leaves(carry)[0].dtype)
    z_h = jax.eval_shape(cell.recurrent_projection, params, carry)
    return leaves_read(cell.pointwise, params, z_x, z_h, carry)


def _slabs(z: Array, slabs: int) -> list[Array]:
    """The gate axis of `z [..., G]` split into `slabs` equal pieces."""
    return jnp.split(z, slabs, axis=-1)


def _joined(parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _masked(mask_t: Array | None, new: Carry, old: Carry) -> Carry:
    """`new` where the step is valid (`mask_t [batch]`), else `old`."""
    if mask_t is None:
        return new
    return jax.tree.map(
        lambda n, o: jnp.where(mask_t.reshape(mask_t.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


def masked_pointwise(
    cell: Cell, params: Params, z_x: Array, z_h: Any, carry: Carry, mask_t: Array | None
) -> tuple[Carry, Array]:
    """`cell.pointwise`, with the steps where `mask_t [batch]` (bool) is False made no-ops:
    they keep the old carry and emit zeros. The one definition of a padded step, for the
    `lax.scan` loop here and the Pallas kernel (rnn_jax/pallas_scan.py)."""
    new_carry, y = cell.pointwise(params, z_x, z_h, carry)
    if mask_t is not None:
        y = jnp.where(mask_t[:, None], y, jnp.zeros_like(y))
    return _masked(mask_t, new_carry, carry), y


def _with_h_mask(cell: Cell, carry: Carry, h_mask: Array | None) -> Carry:
    """The carry the recurrent projection sees: h times the dropout mask."""
    return carry if h_mask is None else cell.mask_hidden(carry, h_mask)


def additive_slabs(cell: Cell, params: Params) -> tuple[bool, ...]:
    """Per gate slab k: whether `pointwise` reads `z_x` and `z_h` there only through their sum.

    Then the backward pass needs only `z_x_k + z_h_k` (saved instead of both) and
    `d z_x_k = d z_h_k` (one gradient emitted, not two): every slab of the LSTM family and
    Elman, the reset and update slabs of the GRU (its candidate reads `r * n_h`).

    Decided by tracing, not by class name: the directional derivative of `pointwise` along
    `(+delta_k, -delta_k)` (delta_k non-zero on slab k only) is exactly zero when the first
    thing `pointwise` does with those entries is add them (`delta - delta` is exactly 0 in
    floating point), and non-zero at a random point otherwise. The answer depends only on the
    cell and the params' structure and shapes, so it is computed once per those (its eager
    probe then runs once per process, not at every trace).
    """
    leaves, treedef = jax.tree.flatten(params)
    return _additive_slabs(cell, treedef, tuple(tuple(leaf.shape) for leaf in leaves))


@functools.lru_cache(maxsize=256)
def _additive_slabs(cell: Cell, treedef: Any, shapes: tuple[tuple[int, ...], ...]) -> tuple:
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
    input_size, hidden_size = cell.sizes(params)
    gates = params["W_ih"].shape[-1]
    with jax.ensure_compile_time_eval():
        rng = np.random.default_rng(0)

        def draw(shape: tuple[int, ...]) -> Array:
            return jnp.asarray(rng.standard_normal(shape), jnp.float32)

        probe_params = jax.tree.map(lambda p: draw(p.shape), params)
        carry = jax.tree.map(
            lambda z: draw(z.shape), cell.zero_carry((2,), hidden_size, jnp.float32)
        )
        z_x, z_h = draw((2, gates)), draw((2, gates))
        flags = []
        for k in range(cell.num_gates):
            delta = (
                jnp.zeros((2, gates), jnp.float32)
                .at[:, k * hidden_size : (k + 1) * hidden_size]
                .set(draw((2, hidden_size)))
            )
            _, tangent = jax.jvp(
                lambda a, b: cell.pointwise(probe_params, a, b, carry), (z_x, z_h), (delta, -delta)
            )
            flags.append(all(bool(jnp.all(t == 0)) for t in jax.tree.leaves(tangent)))
    return tuple(flags)


# typed: `unroll=True` (full) and `unroll=1` (none) are equal and hash alike, so an untyped
# cache handed whichever came first to the other.
@functools.lru_cache(maxsize=256, typed=True)
def recurrence_of(
    cell: Cell,
    reverse: bool,
    unroll: int,
    remat: bool,
    pointwise_leaves: tuple[int, ...],
    additive: tuple[bool, ...],
    directions: int | None,
    forward_loop: str = "scan",
) -> Any:
    """The custom-VJP recurrence `(params, xs, carry0, mask, h_mask) -> (carry, ys)`.

    `directions=None`: one direction. `xs`: a one-tuple `([time, batch, input],)`; `mask`:
    None or a one-tuple `([time, batch] bool,)`; `ys`: a one-tuple `([time, batch, hidden],)`.
    `directions=D`: D independent recurrences in one loop (a bidirectional layer; the caller
    reverses the backward direction's inputs): params, carry and `h_mask` leaves have a
    leading `[D]` axis, `xs`, `mask` and `ys` are D-tuples, and each step `vmap`s the cell
    over the direction axis (one batched matmul per projection). Per-direction arrays stay
    separate outside the loop, so the weight gradients after it are plain 2-D GEMMs on
    contiguous rows.

    Each step computes both projections, `z_x_t = input_projection(x_t)` and
    `z_h_t = recurrent_projection(carry)`: reading `x_t [batch, input]` into a matmul is the
    cheapest per-step input on XLA:CPU (a precomputed `[time, batch, G]` slab costs a
    dynamic-slice fusion per step; docs/design.md). Saved for the backward pass, per step:
    the carry and `z_x + z_h` (one `[batch, G]` array when every gate slab is additive), or
    per slab the sum where `pointwise` reads only the sum and `z_x`, `z_h` otherwise; with
    `remat`, only the carry (the backward recomputes both projections). Emitted by the
    reverse loop: `d z_h [batch, G]`, plus `d z_x` for non-additive slabs. After it: the
    weight and input gradients as one GEMM each over all `time * batch` rows.
    `forward_loop="pallas"`: the forward loop is rnn_jax.pallas_scan's kernel (one direction,
    every slab additive, no remat), which saves the same arrays; the reverse loop is this one.
    Built once per static configuration.
    """
    num_gates = len(additive)
    whole = all(additive)
    if forward_loop not in ("scan", "pallas"):
        raise ValueError(f"forward_loop={forward_loop!r}; allowed: 'scan', 'pallas'")
    if forward_loop == "pallas" and not (whole and directions is None and not remat):
        raise ValueError("forward_loop='pallas' takes one direction, additive slabs, no remat")
    count = 1 if directions is None else directions
    lift = (lambda f: f) if directions is None else jax.vmap
    matrix_ndim = 2 if directions is None else 3  # params leaves carry a [D] axis

    def stack(parts: list) -> Any:
        if directions is None:
            return parts[0]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *parts)

    def unstack(tree: Any) -> tuple:
        if directions is None:
            return (tree,)
        return tuple(jax.tree.map(functools.partial(_index, d), tree) for d in range(count))

    def pointwise_params(params: Params) -> list[Array]:
        leaves = jax.tree.leaves(params)
        return [leaves[i] for i in pointwise_leaves]

    def project(params: Params, carry: Carry, h_mask: Any) -> Array:
        return cell.recurrent_projection(params, _with_h_mask(cell, carry, h_mask))

    def step(
        params: Params, pw: list[Array], z_x_t: Array, z_h_t: Array, carry: Carry, mask_t: Any
    ) -> tuple[Carry, Array]:
        """`pointwise` with its own params `pw` swapped in, and padded steps made no-ops."""
        leaves, treedef = jax.tree.flatten(params)
        for i, leaf in zip(pointwise_leaves, pw, strict=True):
            leaves[i] = leaf
        params = jax.tree.unflatten(treedef, leaves)
        return masked_pointwise(cell, params, z_x_t, z_h_t, carry, mask_t)

    def combine(z_x_t: Array, z_h_t: Array) -> tuple[Array, Array, tuple]:
        """`(z_x', z_h', kept)`: what `pointwise` is given (the sum as `z_x'` and zeros as
        `z_h'` on additive slabs: it reads only their sum) and what the backward keeps."""
        if whole:
            total = z_x_t + z_h_t
            return total, jnp.zeros_like(total), (total,)
        x_parts, h_parts, kept = [], [], []
        slabs = zip(additive, _slabs(z_x_t, num_gates), _slabs(z_h_t, num_gates), strict=True)
        for a, x, h in slabs:
            if a:
                total = x + h
                x_parts.append(total)
                h_parts.append(jnp.zeros_like(h))
                kept.append(total)
            else:
                x_parts.append(x)
                h_parts.append(h)
                kept += [x, h]
        return _joined(x_parts), _joined(h_parts), tuple(kept)

    def uncombine(kept: tuple) -> tuple[Array, Array]:
        """Inverse of `combine`'s `kept`: the `(z_x', z_h')` that `pointwise` was given."""
        if whole:
            return kept[0], jnp.zeros_like(kept[0])
        x_parts, h_parts, rest = [], [], list(kept)
        for a in additive:
            if a:
                x_parts.append(rest.pop(0))
                h_parts.append(jnp.zeros_like(x_parts[-1]))
            else:
                x_parts.append(rest.pop(0))
                h_parts.append(rest.pop(0))
        return _joined(x_parts), _joined(h_parts)

    def forward(params: Params, xs: tuple, carry0: Carry, mask: Any, h_mask: Any, save: bool):
        """`(carry, ys)`; with `save`, `(carry, (ys, carries, kept))` for the backward pass."""
        if forward_loop == "pallas":
            from rnn_jax import pallas_scan

            carry, ys, carries, sums = pallas_scan.forward_loop(
                cell,
                params,
                xs[0],
                carry0,
                None if mask is None else mask[0],
                h_mask,
                reverse=reverse,
                save=save,
            )
            return (carry, (ys,)) if not save else (carry, ((ys,), (carries,), ((sums,),)))
        pw = pointwise_params(params)

        def body(carry: Carry, inputs: tuple) -> tuple:
            x_t, mask_t = inputs
            mask_t = None if mask_t is None else stack(list(mask_t))
            z_x_t = lift(cell.input_projection)(params, stack(list(x_t)))
            z_h_t = lift(project)(params, carry, h_mask)
            if save and not remat:
                z_x_t, z_h_t, kept = combine(z_x_t, z_h_t)
            new_carry, y = lift(step)(params, pw, z_x_t, z_h_t, carry, mask_t)
            if not save:
                return new_carry, unstack(y)
            kept = None if remat else unstack(kept)
            return new_carry, (unstack(y), unstack(carry), kept)

        return jax.lax.scan(body, carry0, (xs, mask), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def recurrence(params: Params, xs: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        return forward(params, xs, carry0, mask, h_mask, save=False)

    def recurrence_fwd(params: Params, xs: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        carry, (ys, carries, kept) = forward(params, xs, carry0, mask, h_mask, save=True)
        return (carry, ys), (params, xs, carries, kept, mask, h_mask)

    def recurrence_bwd(residuals: tuple, cotangents: tuple) -> tuple:
        params, xs, carries, kept, mask, h_mask = residuals
        d_carry_final, d_ys = cotangents
        pw = pointwise_params(params)
        # The loop's matmul d z_h @ W_hh^T reads W_hh transposed; XLA:CPU runs that dot
        # 1.07-1.35x slower than a plain one, so the loop gets the weight matrices
        # transposed once here and transposes them back (a transpose XLA folds into the dot).
        transposed = jax.tree.map(_swap_matrix(matrix_ndim), params)
        # When every slab is additive, step t's d z_h overwrites step t's saved sum, which it
        # no longer needs: the loop carries those `[time, batch, G]` buffers and updates them
        # in place (read, then write what was computed from the read) instead of filling a
        # new zeroed output as big as them.
        in_place = whole and not remat
        time = jax.tree.leaves(carries)[0].shape[0]

        def body(state: tuple, inputs: tuple) -> tuple:
            d_carry, d_pw, buffers = state
            t, x_t, kept_t, carry_t, mask_t, d_y_t = inputs
            if in_place:
                kept_t = tuple(
                    (jax.lax.dynamic_index_in_dim(b, t, keepdims=False),) for b in buffers
                )
            params = jax.tree.map(_swap_matrix(matrix_ndim), transposed)
            carry_t = stack(list(carry_t))
            mask_t = None if mask_t is None else stack(list(mask_t))
            if remat:
                z_x_t = lift(cell.input_projection)(params, stack(list(x_t)))
                z_h_t = lift(project)(params, carry_t, h_mask)
            else:
                z_x_t, z_h_t = uncombine(stack(list(kept_t)))
            _, step_vjp = jax.vjp(
                lambda pw_, zx, zh, c: lift(step)(params, pw_, zx, zh, c, mask_t),
                pw,
                z_x_t,
                z_h_t,
                carry_t,
            )
            d_pw_t, d_z_x_t, d_z_h_t, d_carry_prev = step_vjp((d_carry, stack(list(d_y_t))))
            # Linear in the carry for plain cells, so XLA drops the primal matmul here.
            _, project_vjp = jax.vjp(lambda c: lift(project)(params, c, h_mask), carry_t)
            (d_carry_from_h,) = project_vjp(d_z_h_t)
            d_carry_prev = jax.tree.map(jnp.add, d_carry_prev, d_carry_from_h)
            d_pw = [a + b.astype(a.dtype) for a, b in zip(d_pw, d_pw_t, strict=True)]
            # Where the slab is additive, d z_x = d z_h: only the other slabs emit d z_x.
            d_z_x_slabs = zip(additive, _slabs(d_z_x_t, num_gates), strict=True)
            d_z_x_t = None if whole else tuple(None if a else s for a, s in d_z_x_slabs)
            if not in_place:
                return (d_carry_prev, d_pw, buffers), (unstack(d_z_h_t), unstack(d_z_x_t))
            buffers = tuple(
                jax.lax.dynamic_update_index_in_dim(b, d, t, 0)
                for b, d in zip(buffers, unstack(d_z_h_t), strict=True)
            )
            return (d_carry_prev, d_pw, buffers), (None, None)

        # Summed over T steps in float32 at least (one rounding to a bfloat16 param's dtype at
        # the end), as the weight gradients' one GEMM after the loop accumulates.
        d_pw0 = [jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)) for p in pw]
        buffers = tuple(k[0] for k in kept) if in_place else ()
        (d_carry0, d_pw, buffers), (d_z_h, d_z_x_own) = jax.lax.scan(
            body,
            (d_carry_final, d_pw0, buffers),
            (jnp.arange(time), xs, None if in_place else kept, carries, mask, d_ys),
            reverse=not reverse,
        )
        if in_place:
            d_z_h = buffers
        d_params, d_xs, d_h_mask = [], [], []
        for d in range(count):
            params_d = unstack(params)[d]
            mask_d = None if h_mask is None else unstack(h_mask)[d]
            if whole:
                d_z_x = d_z_h[d]
            else:
                slabs = zip(additive, _slabs(d_z_h[d], num_gates), d_z_x_own[d], strict=True)
                d_z_x = _joined([h if a else x for a, h, x in slabs])
            grads, d_mask = _weight_gradients(cell, params_d, carries[d], d_z_h[d], mask_d)
            d_inputs, d_x = _input_gradients(cell, params_d, xs[d], d_z_x)
            grads = jax.tree.map(jnp.add, grads, d_inputs)
            leaves, treedef = jax.tree.flatten(grads)
            for i, g in zip(pointwise_leaves, unstack(d_pw)[d], strict=True):
                leaves[i] = (leaves[i].astype(g.dtype) + g).astype(leaves[i].dtype)
            d_params.append(jax.tree.unflatten(treedef, leaves))
            d_xs.append(d_x)
            d_h_mask.append(d_mask)
        d_h_mask = None if h_mask is None else stack(d_h_mask)
        return stack(d_params), tuple(d_xs), d_carry0, None, d_h_mask

    recurrence.defvjp(recurrence_fwd, recurrence_bwd)
    return recurrence


def _swap_matrix(matrix_ndim: int) -> Any:
    """`leaf -> leaf` with its last two axes swapped when it is a weight matrix."""

    def swap(leaf: Array) -> Array:
        return jnp.swapaxes(leaf, -1, -2) if leaf.ndim == matrix_ndim else leaf

    return swap


def _index(d: int, leaf: Array) -> Array:
    return leaf[d]


def _weight_gradients(
    cell: Cell, params: Params, carries: Carry, d_z_h: Array, h_mask: Array | None
) -> tuple[Params, Array | None]:
    """Gradients of the recurrent projection's params (and of `h_mask`) over all steps at once.

    `carries` leaves and `d_z_h` are `[time, batch, ...]`: dW_hh is one `[H, T*B] @ [T*B, G]`
    GEMM and db_hh one reduction, not T rank-batch updates inside the loop.
    """
    time, batch = d_z_h.shape[:2]
    flat_carries = jax.tree.map(lambda c: c.reshape(time * batch, *c.shape[2:]), carries)
    flat_d_z_h = d_z_h.reshape(time * batch, d_z_h.shape[-1])

    def project_all(p: Params, m: Any) -> Array:
        return cell.recurrent_projection(p, _with_h_mask(cell, flat_carries, m))

    if h_mask is None:
        _, params_vjp = jax.vjp(lambda p: project_all(p, None), params)
        (d_params,) = params_vjp(flat_d_z_h)
        return d_params, None
    _, params_vjp = jax.vjp(project_all, params, jnp.tile(h_mask, (time, 1)))
    d_params, d_h_mask = params_vjp(flat_d_z_h)
    return d_params, d_h_mask.reshape(time, batch, d_h_mask.shape[-1]).sum(0)


def _input_gradients(cell: Cell, params: Params, xs: Array, d_z_x: Array) -> tuple[Params, Array]:
    """Gradients of the input projection's params and of its input over all steps at once.

    `xs [time, batch, input]`, `d_z_x [time, batch, G]`: dW_ih and dx are one 2-D GEMM each
    (a 3-D einsum's autodiff would transpose the cotangent first: perf-anchors.md), db_ih one
    reduction. Returns `(d_params, d_xs [time, batch, input])`.
    """
    time, batch, input_size = xs.shape
    _, vjp = jax.vjp(cell.input_projection, params, xs.reshape(time * batch, input_size))
    d_params, d_xs = vjp(d_z_x.reshape(time * batch, d_z_x.shape[-1]))
    return d_params, d_xs.reshape(time, batch, input_size)
