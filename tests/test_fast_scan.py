"""The custom-VJP scan (rnn_jax.fast_scan) against the reference `lax.scan` and autodiff.

The reference path (`scan.reference_unroll`) is itself checked against per-step numpy
references in test_scan.py; here the fused path must give the same outputs, final carries and
gradients (w.r.t. params, inputs, initial carry and dropout mask) for every cell and option.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from reference_numpy import CASES, random_like

from rnn_jax import cells, fast_scan, scan

BATCH, TIME, INPUT, HIDDEN = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 4], np.int32)
TOL = dict(rtol=2e-5, atol=2e-5)


def setup(case, seed=0):
    name, options = CASES[case]
    cell = cells.get_cell(name, **options)
    params = random_like(cell.init(jax.random.key(seed), INPUT, HIDDEN), seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    xs = rng.standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    initial = jax.tree.map(
        lambda z: rng.standard_normal(z.shape).astype(np.float32),
        cell.zero_carry((BATCH,), HIDDEN),
    )
    h_mask = (rng.uniform(size=(BATCH, HIDDEN)) > 0.3).astype(np.float32) / 0.7
    return cell, params, xs, initial, h_mask


@functools.cache
def value_and_grads(implementation, **static):
    """jit of (ys, carry, grads of a loss that weights every output and carry entry)."""

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


def assert_same(fused, reference):
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, **TOL)


# Cho's GRU and minGRU do not fit the custom VJP and run on the reference path itself
# (test_structure_detection checks that routing).
FUSED_CASES = sorted(set(CASES) - {"gru_cho", "min_gru", "elman_relu"})


@pytest.mark.parametrize("case", FUSED_CASES)
def test_matches_reference_for_every_cell(case):
    """Lengths, a given initial carry and a recurrent dropout mask."""
    cell, params, xs, initial, h_mask = setup(case)
    args = (params, xs, initial, h_mask, cell, LENGTHS)
    assert_same(value_and_grads("fused")(*args), value_and_grads("reference")(*args))


@pytest.mark.parametrize(
    "static",
    [dict(reverse=True), dict(reverse=True, remat=True), dict(time_major=True, unroll=2)],
    ids=["reverse", "reverse_remat", "time_major_unroll"],
)
@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_options_match_reference(case, static):
    cell, params, xs, initial, h_mask = setup(case, seed=3)
    if static.get("time_major"):
        xs = np.swapaxes(xs, 0, 1)
    args = (params, xs, initial, h_mask, cell, LENGTHS)
    assert_same(
        value_and_grads("fused", **static)(*args), value_and_grads("reference", **static)(*args)
    )


def test_structure_detection():
    """Which cells take the custom VJP, and what the reverse loop differentiates."""
    params_of = {case: setup(case)[:2] for case in ("lstm", "gru", "peephole_lstm", "gru_cho")}
    lstm, lstm_params = params_of["lstm"]
    gru, gru_params = params_of["gru"]
    peephole, peephole_params = params_of["peephole_lstm"]
    assert fast_scan._additive(lstm, lstm_params)  # i,f,g,o = split(z_x + z_h)
    assert not fast_scan._additive(gru, gru_params)  # r * n_h: z_h read on its own
    assert fast_scan._pointwise_leaves(lstm, lstm_params) == ()
    names = sorted(peephole_params)  # dict leaves are in sorted key order
    read = [names[i] for i in fast_scan._pointwise_leaves(peephole, peephole_params)]
    assert read == ["w_cf", "w_ci", "w_co"]
    assert fast_scan.fits(gru, gru_params)
    assert not fast_scan.fits(*params_of["gru_cho"])  # pointwise reads W_hh
    min_gru = cells.get_cell("min_gru")
    assert not fast_scan.fits(min_gru, min_gru.init(jax.random.key(0), INPUT, HIDDEN))


def _dots_in_loops(jaxpr, inside=False):
    """Output shapes of every dot_general, with whether it sits inside a scan body."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(eqn.outvars[0].aval.shape), inside))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dots_in_loops(sub, inside or eqn.primitive.name == "scan")
    return found


def test_weight_gradient_is_one_gemm_after_the_loop():
    """The point of the custom VJP: no [H, G] weight-gradient update inside any loop."""
    cell, params, xs, _, _ = setup("lstm")

    def loss(params, implementation):
        return scan.unroll(cell, params, xs, implementation=implementation)[0].sum()

    grad = jax.grad(loss)

    shapes = {params["W_hh"].shape, params["W_hh"].shape[::-1]}  # dW_hh or its transpose
    for implementation, in_loop in (("fused", False), ("reference", True)):
        jaxpr = jax.make_jaxpr(grad, static_argnums=1)(params, implementation).jaxpr
        weight_dots = {inside for shape, inside in _dots_in_loops(jaxpr) if shape in shapes}
        assert weight_dots == {in_loop}, implementation
