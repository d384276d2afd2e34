"""rnn_jax.scan with its options together: every option at once against each sequence run
alone, an initial carry of another dtype, locked dropout in a time-major stack, and a full
unroll not served the loop built for unroll 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, layers, scan, truncated_scan

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
            ys, final = truncated_scan.truncated_unroll(cell, params, xs, 2, lengths, carry)
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


@pytest.mark.parametrize(
    "name,bf16_params",
    [
        ("elman", ("W_ih", "b_ih")),  # bfloat16 input side under a float32 W_hh
        ("peephole_lstm", ("W_ih", "W_hh", "b_ih", "b_hh")),  # float32 peepholes
    ],
)
def test_zero_carry_takes_the_dtype_the_step_widens_to(name, bf16_params):
    """The default zero carry has the dtype one step keeps, not just the input projection's:
    these params widen a bfloat16 carry to float32 in the step, and `unroll` without an
    initial carry failed inside lax.scan while an explicit float32 zero carry ran."""
    cell = cells.get_cell(name)
    params = cell.init(jax.random.key(0), INPUT, HIDDEN)
    params = {k: v.astype(jnp.bfloat16) if k in bf16_params else v for k, v in params.items()}
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    assert cells.carry_dtype(cell, params, xs) == jnp.float32
    if name == "peephole_lstm":  # one compile: the default path end to end
        ys, (h, c) = scan.unroll(cell, params, xs)
        assert ys.dtype == h.dtype == c.dtype == jnp.float32


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


@pytest.mark.parametrize("implementation", ["reference", "fused"])
def test_every_option_at_once_matches_each_sequence_run_alone(implementation):
    """lengths (one of them 1), reverse, a given initial carry, h_mask and remat together:
    outputs and final carry equal the numpy reference run on each valid prefix alone, the
    gradients w.r.t. `xs` and the initial carry equal those of that sequence run alone (and
    are exactly zero at padded inputs)."""
    from reference_numpy import as_tuple, run_sequence
    from scan_harness import scan_case

    cell, params, xs, initial, h_mask = scan_case("lstm", 0, 3, 5, INPUT, HIDDEN)
    lengths = np.array([5, 1, 3], np.int32)
    weights = np.sin(np.arange(3 * 5 * HIDDEN)).reshape(3, 5, HIDDEN).astype(np.float32)
    options = dict(reverse=True, remat=True, implementation=implementation)

    def loss(xs, initial, lengths, h_mask, weights):
        ys, carry = scan.unroll(cell, params, xs, lengths, initial, h_mask=h_mask, **options)
        total = jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))
        return total, (ys, carry)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))

    def alone(xs, carry, h_mask, weights):
        """One unpadded sequence, backwards, as a Python loop of `cell.step`."""
        total = 0.0
        for t in reversed(range(xs.shape[0])):
            z_h = cell.recurrent_projection(params, cell.mask_hidden(carry, h_mask))
            carry, y = cell.pointwise(params, cell.input_projection(params, xs[t]), z_h, carry)
            total = total + jnp.sum(y * weights[t])
        return total + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))

    (d_xs, d_initial), (ys, carry) = grad(xs, initial, jnp.asarray(lengths), h_mask, weights)
    for b, n in enumerate(lengths):
        init_b = tuple(np.asarray(c)[b] for c in as_tuple(initial))
        want_ys, want_carry = run_sequence("lstm", params, xs[b, :n][::-1], init_b, h_mask[b])
        np.testing.assert_allclose(ys[b, :n], want_ys[::-1], rtol=2e-5, atol=2e-5)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        for got, want in zip(as_tuple(carry), want_carry, strict=True):
            np.testing.assert_allclose(got[b], want, rtol=2e-5, atol=2e-5)
        want_dx, want_dinit = jax.grad(alone, argnums=(0, 1))(
            xs[b, :n], jax.tree.map(lambda c, b=b: c[b], initial), h_mask[b], weights[b, :n]
        )
        np.testing.assert_allclose(d_xs[b, :n], want_dx, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(d_xs[b, n:], 0.0)
        for got, want in zip(jax.tree.leaves(d_initial), jax.tree.leaves(want_dinit), strict=True):
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_full_unroll_is_not_served_the_loop_built_for_unroll_1():
    """`unroll=True` and `unroll=1` compare and hash equal: the fused path's cache of built
    recurrences gave a full unroll the one-step loop built before it (speed only, but not what
    was asked). The jaxpr's scan carries the factor asked for, on both paths."""
    import re

    cell = cells.get_cell("gru")
    params = cell.init(jax.random.key(0), 3, 4)
    xs = jnp.ones((2, 7, 3))
    for implementation in ("reference", "fused"):
        for factor, expected in ((1, "unroll=1"), (True, "unroll=7")):
            jaxpr = jax.make_jaxpr(
                lambda p, x, f=factor, i=implementation: scan.unroll(
                    cell, p, x, unroll=f, implementation=i
                )
            )(params, xs)
            assert set(re.findall(r"unroll=\w+", str(jaxpr))) == {expected}, implementation
