"""The custom-VJP recurrence behind `rnn_jax.fast_scan` and how it reads a cell's structure.

`recurrence_of(...)` builds, once per static configuration, the `jax.custom_vjp` function that
runs the loop over time on precomputed input projections (see rnn_jax/fast_scan.py for the
whole algorithm); `pointwise_leaves` and `additive_slabs` trace a cell to find which params
its `pointwise` reads and in which gate slabs it reads `z_x` and `z_h` only through their sum.

Shapes: time-major inside, `[time, batch, ...]`; gate slabs `[time, batch, hidden]`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import Carry, Cell, Params

Array = jax.Array


def pointwise_leaves(cell: Cell, params: Params) -> tuple[int, ...]:
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


def to_slabs(z: Array, slabs: int) -> tuple[Array, ...]:
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


def additive_slabs(cell: Cell, params: Params) -> tuple[bool, ...]:
    """Per gate slab k: whether `pointwise` reads `z_x` and `z_h` there only through their sum.

    Then the backward pass needs only `z_x_k + z_h_k` (saved instead of both) and
    `d z_x_k = d z_h_k` (one gradient emitted, not two): every slab of the LSTM family and
    Elman, the reset and update slabs of the GRU (its candidate reads `r * n_h`).

    Decided by tracing, not by class name: the directional derivative of `pointwise` along
    `(+delta_k, -delta_k)` (delta_k non-zero on slab k only) is exactly zero when the first
    thing `pointwise` does with those entries is add them (`delta - delta` is exactly 0 in
    floating point), and non-zero at a random point otherwise.
    """
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
                jnp.zeros((2, gates))
                .at[:, k * hidden_size : (k + 1) * hidden_size]
                .set(draw((2, hidden_size)))
            )
            _, tangent = jax.jvp(
                lambda a, b: cell.pointwise(probe_params, a, b, carry), (z_x, z_h), (delta, -delta)
            )
            flags.append(all(bool(jnp.all(t == 0)) for t in jax.tree.leaves(tangent)))
    return tuple(flags)


@functools.lru_cache(maxsize=256)
def recurrence_of(
    cell: Cell,
    reverse: bool,
    unroll: int,
    remat: bool,
    pointwise_leaves: tuple[int, ...],
    additive: tuple[bool, ...],
    directions: int | None,
) -> Any:
    """The custom-VJP recurrence `(params, z_x, carry0, mask, h_mask) -> (carry, ys)`.

    `directions=None`: one direction. `z_x`: a one-tuple holding `cell.num_gates` slabs
    `[time, batch, hidden]`; `mask`: None or a one-tuple `([time, batch] bool,)`;
    `ys`: a one-tuple `([time, batch, hidden],)`. `directions=D`: D independent recurrences
    in one loop (a bidirectional layer; the caller reverses the backward direction's
    inputs): params, carry and `h_mask` leaves have a leading `[D]` axis, `z_x`, `mask` and
    `ys` are D-tuples, and each step `vmap`s the cell over the direction axis (one batched
    recurrent matmul). Per-direction arrays stay separate outside the loop, so the weight
    gradients after it are plain 2-D GEMMs on contiguous rows.

    Saved for the backward pass, per step: the carry and, per gate slab, `z_x + z_h` where
    `pointwise` reads only the sum (`additive[k]`), else `z_h` (z_x is an input already).
    Emitted by the reverse loop: `d z_h [batch, G]`, plus `d z_x` for non-additive slabs.
    Built once per static configuration.
    """
    num_gates = len(additive)
    count = 1 if directions is None else directions
    lift = (lambda f: f) if directions is None else jax.vmap

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
        new_carry, y = cell.pointwise(jax.tree.unflatten(treedef, leaves), z_x_t, z_h_t, carry)
        if mask_t is not None:
            y = jnp.where(mask_t[:, None], y, jnp.zeros_like(y))
        return _masked(mask_t, new_carry, carry), y

    def forward(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any, save: bool):
        """`(carry, ys)`; with `save`, `(carry, (ys, carries, saved))` for the backward pass.

        `saved[d][k]`: `z_x + z_h` of additive slab k, else `z_h`. The sums are written into
        the z_x slabs themselves, carried through the loop and updated in place at each step
        (`z_x_k` is not needed after its step), so saving them costs no new buffer.
        """
        pw = pointwise_params(params)
        in_place = tuple(save and a and not remat for a in additive)
        time = z_x[0][0].shape[0]
        streamed = tuple(
            tuple(None if kept else x for kept, x in zip(in_place, slabs, strict=True))
            for slabs in z_x
        )
        buffers = tuple(
            tuple(x if kept else None for kept, x in zip(in_place, slabs, strict=True))
            for slabs in z_x
        )

        def body(state: tuple, inputs: tuple) -> tuple:
            carry, buffers = state
            t, z_x_t, mask_t = inputs
            mask_t = None if mask_t is None else stack(list(mask_t))
            z_h_t = lift(project)(params, carry, h_mask)
            z_h_slabs = [unstack(h) for h in to_slabs(z_h_t, num_gates)]  # [slab][direction]
            x_parts, h_parts, new_buffers = [], [], []
            for d, (streamed_d, buffers_d) in enumerate(zip(z_x_t, buffers, strict=True)):
                x_d, h_d, b_d = [], [], []
                for k, (x, b) in enumerate(zip(streamed_d, buffers_d, strict=True)):
                    h = z_h_slabs[k][d]
                    if b is None:
                        x_d.append(x)
                        h_d.append(h)
                        b_d.append(None)
                        continue
                    # z_x_k <- z_x_k + z_h_k in place (a read-modify-write XLA does without
                    # copying the buffer); pointwise then reads the sum, with z_h_k = 0.
                    old = jax.lax.dynamic_index_in_dim(b, t, keepdims=False)
                    b = jax.lax.dynamic_update_index_in_dim(b, old + h, t, 0)
                    x_d.append(jax.lax.dynamic_index_in_dim(b, t, keepdims=False))
                    h_d.append(jnp.zeros_like(h))
                    b_d.append(b)
                x_parts.append(_from_slabs(tuple(x_d)))
                h_parts.append(_from_slabs(tuple(h_d)))
                new_buffers.append(tuple(b_d))
            new_carry, y = lift(step)(params, pw, stack(x_parts), stack(h_parts), carry, mask_t)
            buffers = tuple(new_buffers)
            if not save:
                return (new_carry, buffers), unstack(y)
            slabs = zip(additive, to_slabs(z_h_t, num_gates), strict=True)
            z_h_kept = None if remat else tuple(None if a else h for a, h in slabs)
            return (new_carry, buffers), (unstack(y), unstack(carry), unstack(z_h_kept))

        ts = jnp.arange(time) if any(in_place) else None  # indexes the in-place buffers
        (carry, buffers), outputs = jax.lax.scan(
            body, (carry0, buffers), (ts, streamed, mask), reverse=reverse, unroll=unroll
        )
        if not save:
            return carry, outputs
        ys, carries, z_h_kept = outputs
        saved = None
        if not remat:
            saved = tuple(
                tuple(b if h is None else h for b, h in zip(b_d, h_d, strict=True))
                for b_d, h_d in zip(buffers, z_h_kept, strict=True)
            )
        return carry, (ys, carries, saved)

    @jax.custom_vjp
    def recurrence(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        return forward(params, z_x, carry0, mask, h_mask, save=False)

    def recurrence_fwd(params: Params, z_x: tuple, carry0: Carry, mask: Any, h_mask: Any) -> tuple:
        carry, (ys, carries, saved) = forward(params, z_x, carry0, mask, h_mask, save=True)
        # The backward reads z_x only where it cannot use a saved sum: the rest dies here.
        z_x_kept = tuple(
            tuple(x if remat or not a else None for a, x in zip(additive, slabs, strict=True))
            for slabs in z_x
        )
        return (carry, ys), (params, z_x_kept, carries, saved, mask, h_mask)

    def recurrence_bwd(residuals: tuple, cotangents: tuple) -> tuple:
        params, z_x, carries, saved, mask, h_mask = residuals
        d_carry_final, d_ys = cotangents
        pw = pointwise_params(params)

        def body(state: tuple, inputs: tuple) -> tuple:
            d_carry, d_pw = state
            z_x_t, saved_t, carry_t, mask_t, d_y_t = inputs
            carry_t = stack(list(carry_t))
            mask_t = None if mask_t is None else stack(list(mask_t))
            if remat:
                z_x_full = stack([_from_slabs(slabs) for slabs in z_x_t])
                z_h_full = lift(project)(params, carry_t, h_mask)
            else:
                x_parts, h_parts = [], []
                for k, a in enumerate(additive):
                    kept = stack([saved_t[d][k] for d in range(count)])
                    x_parts.append(kept if a else stack([z_x_t[d][k] for d in range(count)]))
                    h_parts.append(jnp.zeros_like(kept) if a else kept)
                z_x_full, z_h_full = _from_slabs(tuple(x_parts)), _from_slabs(tuple(h_parts))
            _, step_vjp = jax.vjp(
                lambda pw_, zx, zh, c: lift(step)(params, pw_, zx, zh, c, mask_t),
                pw,
                z_x_full,
                z_h_full,
                carry_t,
            )
            d_pw_t, d_z_x_t, d_z_h_t, d_carry_prev = step_vjp((d_carry, stack(list(d_y_t))))
            # Linear in the carry for plain cells, so XLA drops the primal matmul here.
            _, project_vjp = jax.vjp(lambda c: lift(project)(params, c, h_mask), carry_t)
            (d_carry_from_h,) = project_vjp(d_z_h_t)
            d_carry_prev = jax.tree.map(jnp.add, d_carry_prev, d_carry_from_h)
            d_pw = [a + b for a, b in zip(d_pw, d_pw_t, strict=True)]
            # Where the slab is additive, d z_x = d z_h: only the other slabs emit d z_x.
            d_z_x_slabs = zip(additive, to_slabs(d_z_x_t, num_gates), strict=True)
            d_z_x_t = tuple(None if a else s for a, s in d_z_x_slabs)
            return (d_carry_prev, d_pw), (unstack(d_z_h_t), unstack(d_z_x_t))

        d_pw0 = [jnp.zeros_like(p) for p in pw]
        (d_carry0, d_pw), (d_z_h, d_z_x_own) = jax.lax.scan(
            body,
            (d_carry_final, d_pw0),
            (z_x, saved, carries, mask, d_ys),
            reverse=not reverse,
        )
        d_params, d_z_x, d_h_mask = [], [], []
        for d in range(count):
            params_d = unstack(params)[d]
            mask_d = None if h_mask is None else unstack(h_mask)[d]
            grads = _weight_gradients(cell, params_d, carries[d], d_z_h[d], mask_d)
            leaves, treedef = jax.tree.flatten(grads[0])
            for i, g in zip(pointwise_leaves, unstack(d_pw)[d], strict=True):
                leaves[i] = leaves[i] + g
            d_params.append(jax.tree.unflatten(treedef, leaves))
            d_h_mask.append(grads[1])
            slabs = zip(additive, to_slabs(d_z_h[d], num_gates), d_z_x_own[d], strict=True)
            d_z_x.append(tuple(h if a else x for a, h, x in slabs))
        d_h_mask = None if h_mask is None else stack(d_h_mask)
        return stack(d_params), tuple(d_z_x), d_carry0, None, d_h_mask

    recurrence.defvjp(recurrence_fwd, recurrence_bwd)
    return recurrence


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
    flat_d_z_h = d_z_h.reshape(time * batch, -1)

    def project_all(p: Params, m: Any) -> Array:
        return cell.recurrent_projection(p, _with_h_mask(cell, flat_carries, m))

    if h_mask is None:
        _, params_vjp = jax.vjp(lambda p: project_all(p, None), params)
        (d_params,) = params_vjp(flat_d_z_h)
        return d_params, None
    _, params_vjp = jax.vjp(project_all, params, jnp.tile(h_mask, (time, 1)))
    d_params, d_h_mask = params_vjp(flat_d_z_h)
    return d_params, d_h_mask.reshape(time, batch, -1).sum(0)
