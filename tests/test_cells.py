"""Every cell's `step` against the numpy per-step reference written from its paper."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_numpy import CASES, as_tuple, random_like, run_sequence

from rnn_jax import cells

BATCH, TIME, INPUT, HIDDEN = 3, 4, 5, 6


def make_cell(case):
    name, options = CASES[case]
    return cells.get_cell(name, **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_matches_numpy_reference(case):
    cell = make_cell(case)
    params = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), seed=1)
    xs = np.random.default_rng(2).standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    step = jax.jit(cell.step)
    carry = cell.zero_carry((BATCH,), HIDDEN)
    ys = []
    for t in range(TIME):
        carry, y = step(params, carry, xs[:, t])
        ys.append(y)
    ys = np.stack(ys, axis=1)
    for b in range(BATCH):
        ref_ys, ref_state = run_sequence(case, params, xs[b])
        np.testing.assert_allclose(ys[b], ref_ys, rtol=1e-5, atol=1e-5)
        for got, want in zip(as_tuple(carry), ref_state, strict=True):
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)
    # The output is the carry's h.
    np.testing.assert_array_equal(cell.output(carry), ys[:, -1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_is_pointwise_of_projections(case):
    """`step` = `pointwise(input_projection, recurrent_projection)`, and the input projection
    applies to any leading shape (what scans rely on to hoist it over time)."""
    cell = make_cell(case)
    params = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), seed=3)
    xs = jnp.asarray(np.random.default_rng(4).standard_normal((TIME, BATCH, INPUT)), jnp.float32)
    z_all = cell.input_projection(params, xs.reshape(TIME * BATCH, INPUT)).reshape(TIME, BATCH, -1)
    assert z_all.shape[-1] == cell.num_gates * HIDDEN
    carry = jax.tree.map(lambda v: v + 0.3, cell.zero_carry((BATCH,), HIDDEN))
    z_x = cell.input_projection(params, xs[1])
    np.testing.assert_allclose(z_all[1], z_x, rtol=1e-6, atol=1e-6)
    via_parts = cell.pointwise(params, z_x, cell.recurrent_projection(params, carry), carry)
    direct = cell.step(params, carry, xs[1])
    for a, b in zip(jax.tree.leaves(via_parts), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cells_are_hashable_static_options():
    a, b = cells.get_cell("elman", nonlinearity="relu"), cells.Elman(nonlinearity="relu")
    assert a == b and hash(a) == hash(b)
    assert cells.get_cell("elman") != a
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.nonlinearity = "tanh"
    assert set(cells.CELL_NAMES) == {c for c, _ in CASES.values()}


def test_cho_and_pytorch_gru_differ():
    """The two GRU forms are different functions of the same params (guards a mix-up)."""
    params = random_like(cells.GRU().init(jax.random.key(0), INPUT, HIDDEN), seed=5)
    x = jnp.ones((1, INPUT))
    h = jnp.full((1, HIDDEN), 0.5)
    _, y_torch = cells.GRU().step(params, h, x)
    _, y_cho = cells.ChoGRU().step(params, h, x)
    assert float(jnp.max(jnp.abs(y_torch - y_cho))) > 1e-3


def test_get_cell_errors():
    with pytest.raises(ValueError, match=r"name='lstmm'.*allowed: elman, lstm"):
        cells.get_cell("lstmm")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hidden'\].*allowed"):
        cells.get_cell("lstm", hidden=3)
    with pytest.raises(ValueError, match=r"nonlinearity='sigmoid'.*'tanh', 'relu'"):
        cells.get_cell("elman", nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"method='parallel'.*auto, sequential, associative"):
        cells.get_cell("min_gru", method="parallel")
    with pytest.raises(ValueError, match="hidden_size=0"):
        cells.LSTM().init(jax.random.key(0), 3, 0)
