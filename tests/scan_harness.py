"""What the scan implementations' tests share: a random case per cell and one jitted function
that returns a scan's outputs, final carry and gradients, so two implementations can be
compared leaf by leaf."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from reference_numpy import CASES, random_like

from rnn_jax import cells, scan


def scan_case(case, seed, batch, time, input_size, hidden):
    """`(cell, params, xs [batch, time, input], initial carry, h_mask)` for a CASES entry:
    random params (peepholes and layer-norm scales non-trivial), inputs, carry and a dropout
    mask scaled like inverted dropout."""
    name, options = CASES[case]
    cell = cells.get_cell(name, **options)
    params = random_like(cell.init(jax.random.key(seed), input_size, hidden), seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    xs = rng.standard_normal((batch, time, input_size)).astype(np.float32)
    initial = jax.tree.map(
        lambda z: rng.standard_normal(z.shape).astype(np.float32),
        cell.zero_carry((batch,), hidden),
    )
    h_mask = (rng.uniform(size=(batch, hidden)) > 0.3).astype(np.float32) / 0.7
    return cell, params, xs, initial, h_mask


@functools.cache
def value_and_grads(implementation, **static):
    """jit of `(params, xs, initial, h_mask, cell, lengths) -> ((loss, (ys, carry)), grads)`
    with gradients w.r.t. params, inputs, initial carry and h_mask of a loss that weights
    every output and carry entry differently."""

    def loss(params, xs, initial, h_mask, cell, lengths):
        ys, carry = scan.unroll(
            cell,
            params,
            xs,
            lengths,
            initial,
            h_mask=h_mask,
            implementation=implementation,
            **static,
        )
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        total = jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))
        return total, (ys, carry)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
    return jax.jit(grad, static_argnums=4)
