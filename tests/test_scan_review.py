"""Review tests for rnn_jax.scan: edge cases the main scan tests do not reach."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, layers, scan

BATCH, TIME, INPUT, HIDDEN = 2, 4, 3, 4


@pytest.mark.parametrize(
    "name,params_dtype,carry_dtype",
    [
        ("elman", jnp.bfloat16, jnp.float32),  # Elman's h' does not read h's dtype at all
        ("lstm", jnp.float32, jnp.bfloat16),
    ],
)
@pytest.mark.parametrize("path", ["reference", "fused", "bidirectional", "truncated"])
def test_initial_carry_of_another_dtype_takes_the_steps_dtype(
    name, params_dtype, carry_dtype, path
):
    """A given initial carry whose dtype the step does not keep (bfloat16 into float32 params,
    float32 into bfloat16-only params) runs as if given in the step's dtype; it used to fail
    inside lax.scan ("carry input and carry output must have equal types")."""
    cell = cells.get_cell(name)
    params = cell.init(jax.random.key(0), INPUT, HIDDEN, dtype=params_dtype)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT)).astype(params_dtype)
    lengths = jnp.array([TIME, 2])
    step_dtype = cells.carry_dtype(cell, params, xs)
    draw = lambda z, k: jax.random.normal(jax.random.key(k), z.shape)  # noqa: E731
    initial = jax.tree.map(lambda z: draw(z, 2), cell.zero_carry((BATCH,), HIDDEN))

    def run(carry):
        if path == "bidirectional":
            ys, (c_fw, c_bw) = layers.bidirectional(
                cell, params, params, xs, lengths, initial_carry=(carry, carry)
            )
            return ys, jax.tree.leaves((c_fw, c_bw))
        if path == "truncated":
            ys, final = scan.truncated_unroll(cell, params, xs, 2, lengths, carry)
        else:
            ys, final = scan.unroll(cell, params, xs, lengths, carry, implementation=path)
        return ys, jax.tree.leaves(final)

    given = jax.tree.map(lambda c: c.astype(carry_dtype), initial)
    ys, final = run(given)
    want_ys, want_final = run(jax.tree.map(lambda c: c.astype(step_dtype), given))
    np.testing.assert_array_equal(np.asarray(ys, np.float32), np.asarray(want_ys, np.float32))
    for got, want in zip(final, want_final, strict=True):
        assert got.dtype == step_dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    # The gradient comes back in the given carry's dtype.
    grads = jax.grad(lambda c: jnp.sum(run(c)[0].astype(jnp.float32)))(given)
    for g in jax.tree.leaves(grads):
        assert g.dtype == carry_dtype
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32)))) > 0


def test_locked_dropout_in_a_time_major_stack_is_one_mask_per_sequence():
    """`apply_stack(..., time_major=True)` passes `time_major` to `unroll`; its locked
    inter-layer mask must still be per sequence and constant over time, so the stack equals the
    batch-major one transposed. It was drawn as `[time, 1, features]`: shared by the whole
    batch and changing every step."""
    cell = cells.get_cell("gru")
    params = layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, 2)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    options = dict(dropout_rate=0.5, locked=True, rng=jax.random.key(2))
    want, _ = layers.apply_stack(cell, params, xs, **options)
    got, _ = layers.apply_stack(cell, params, jnp.swapaxes(xs, 0, 1), time_major=True, **options)
    np.testing.assert_allclose(jnp.swapaxes(got, 0, 1), want, rtol=1e-6, atol=1e-6)
