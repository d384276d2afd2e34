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
import scan_harness
from reference_numpy import CASES

from rnn_jax import bidirectional_scan, cells, fast_recurrence, fast_scan, scan

BATCH, TIME, INPUT, HIDDEN = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 4], np.int32)
TOL = dict(rtol=2e-5, atol=2e-5)


def setup(case, seed=0):
    return scan_harness.scan_case(case, seed, BATCH, TIME, INPUT, HIDDEN)


value_and_grads = scan_harness.value_and_grads


def assert_same(fused, reference):
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, **TOL)


# Cho's GRU and minGRU do not fit the custom VJP and run on the reference path itself
# (test_structure_detection checks that routing).
FUSED_CASES = sorted(set(CASES) - {"gru_cho", "min_gru"})


@pytest.mark.parametrize("case", FUSED_CASES)
def test_matches_reference_for_every_cell(case):
    """Lengths, a given initial carry and a recurrent dropout mask. The cell must take the
    custom VJP: one routed to the reference path would be compared with itself."""
    cell, params, xs, initial, h_mask = setup(case)
    assert fast_scan.fits(cell, params), case
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
    # i, f, g, o = split(z_x + z_h): every slab reads only the sum.
    assert fast_recurrence.additive_slabs(lstm, lstm_params) == (True,) * 4
    assert fast_recurrence.additive_slabs(peephole, peephole_params) == (True,) * 4
    # r and u read r_x + r_h, u_x + u_h; the candidate reads n_x + r * n_h.
    assert fast_recurrence.additive_slabs(gru, gru_params) == (True, True, False)
    assert fast_recurrence.pointwise_leaves(lstm, lstm_params) == ()
    names = sorted(peephole_params)  # dict leaves are in sorted key order
    read = [names[i] for i in fast_recurrence.pointwise_leaves(peephole, peephole_params)]
    assert read == ["w_cf", "w_ci", "w_co"]
    assert fast_scan.fits(gru, gru_params)
    # recurrence_of(cell, reverse, unroll, remat, pointwise_leaves, additive, directions, loop)
    with pytest.raises(ValueError, match=r"forward_loop='triton'; allowed: 'scan', 'pallas'"):
        fast_recurrence.recurrence_of(lstm, False, 1, False, (), (True,) * 4, None, "triton")
    for remat, additive, directions in (
        (True, (True,) * 4, None),
        (False, (True, True, False), None),
        (False, (True,) * 4, 2),
    ):
        with pytest.raises(ValueError, match=r"'pallas' takes one direction, additive slabs"):
            fast_recurrence.recurrence_of(lstm, False, 1, remat, (), additive, directions, "pallas")
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


@functools.cache
def bidirectional_value_and_grads(implementation, time_major=False):
    """jit of (outputs, carries, grads w.r.t. both directions' params, inputs, initial carries
    and dropout masks) of `bidirectional_scan.bidirectional_unroll`."""

    def loss(params, xs, initial, h_mask, cell, lengths):
        (ys_fw, ys_bw), carries = bidirectional_scan.bidirectional_unroll(
            cell,
            *params,
            xs,
            lengths,
            initial,
            h_mask=h_mask,
            time_major=time_major,
            implementation=implementation,
        )
        total = 0.0
        for k, leaf in enumerate([ys_fw, ys_bw, *jax.tree.leaves(carries)]):
            weights = jnp.sin(jnp.arange(leaf.size, dtype=leaf.dtype) + k).reshape(leaf.shape)
            total = total + jnp.sum(leaf * weights)
        return total, ((ys_fw, ys_bw), carries)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
    return jax.jit(grad, static_argnums=4)


@pytest.mark.parametrize(
    "case,time_major,masks",
    [("lstm", False, "both"), ("gru", True, "backward"), ("peephole_lstm", False, "none")],
)
def test_one_scan_bidirectional_matches_two_scans(case, time_major, masks):
    """The fused pass (both directions in one vmapped scan) against two reference scans:
    outputs, final carries and every gradient, with lengths, initial carries and masks."""
    cell, params_fw, xs, init_fw, mask_fw = setup(case, seed=4)
    _, params_bw, _, init_bw, mask_bw = setup(case, seed=5)
    if time_major:
        xs = np.swapaxes(xs, 0, 1)
    h_mask = {"both": (mask_fw, mask_bw), "backward": (None, mask_bw), "none": None}[masks]
    args = ((params_fw, params_bw), xs, (init_fw, init_bw), h_mask, cell, LENGTHS)
    fused = bidirectional_value_and_grads("fused", time_major)(*args)
    reference = bidirectional_value_and_grads("reference", time_major)(*args)
    assert_same(fused, reference)


def _count_scans(jaxpr):
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "scan"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_scans(sub)
    return count


def test_bidirectional_runs_one_scan_each_way():
    """Forward: one scan for both directions (two on the reference path); forward+backward:
    one more for the reverse loop of the custom VJP."""
    cell, params_fw, xs, _, _ = setup("lstm")
    params_bw = setup("lstm", seed=1)[1]

    def loss(params, implementation):
        return bidirectional_scan.bidirectional_unroll(
            cell, *params, xs, LENGTHS, implementation=implementation
        )[0][1].sum()

    params = (params_fw, params_bw)

    def scans(fn, implementation):
        return _count_scans(jax.make_jaxpr(fn, static_argnums=1)(params, implementation).jaxpr)

    counts = {
        implementation: (scans(loss, implementation), scans(jax.grad(loss), implementation))
        for implementation in ("fused", "reference")
    }
    assert counts["fused"] == (1, 2)
    assert counts["reference"][0] == 2


_X64_SCRIPT = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from rnn_jax import cells, scan
for name in ("lstm", "gru"):
    cell = cells.get_cell(name)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(0), 3, 4))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
    def loss(p, x, impl):
        return scan.unroll(cell, p, x, jnp.array([5, 3]), implementation=impl)[0].sum()
    fused = jax.grad(loss, (0, 1))(params, xs, "fused")
    reference = jax.grad(loss, (0, 1))(params, xs, "reference")
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(reference), strict=True):
        assert a.dtype == jnp.float64, a.dtype
        assert float(jnp.max(jnp.abs(a - b))) < 1e-12
print("ok")
"""


def test_fused_scan_runs_in_float64_under_jax_enable_x64():
    """With x64 on, the trace-time probe of additive gate slabs used float64 tangents for
    float32 primals and every fused forward failed; float64 gradients now equal the
    reference scan's (a subprocess: x64 is a process-wide switch)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _X64_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_pointwise_param_gradients_sum_over_time_in_float32():
    """With bfloat16 params, the gradients of the params `pointwise` reads (peepholes here)
    are summed over the T steps of the reverse loop. Summed in bfloat16 they were 0.010 (at
    T=128, relative) from the gradient computed in float32 from the same rounded params;
    summed in float32 and rounded once, as the weight gradients' GEMM after the loop does,
    at most 0.0035."""
    cell, params, xs, _, _ = scan_harness.scan_case("peephole_lstm", 0, 2, 128, INPUT, 8)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params16)

    def loss(params, implementation):
        ys, _ = scan.unroll(cell, params, xs, implementation=implementation)
        return jnp.sum(ys.astype(jnp.float32))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    got, want = grad(params16, "fused"), grad(params32, "reference")
    for name in ("w_ci", "w_cf", "w_co"):
        assert got[name].dtype == jnp.bfloat16
        error = np.linalg.norm(np.float32(got[name]) - want[name]) / np.linalg.norm(want[name])
        assert error < 5e-3, (name, error)


def test_fused_entry_points_take_lengths_as_a_list_like_scan_unroll():
    """`_validate` accepts a list or NumPy array (the contract of `scan.unroll`), but the fused
    entry points then indexed `lengths[None, :]` and a list raised TypeError."""
    cell, params, xs, _, _ = setup("lstm")
    params_bw = setup("lstm", seed=1)[1]
    as_list = LENGTHS.tolist()
    assert_same(
        fast_scan.fused_unroll(cell, params, xs, as_list), scan.unroll(cell, params, xs, LENGTHS)
    )
    assert_same(
        fast_scan.fused_bidirectional(cell, params, params_bw, xs, as_list),
        bidirectional_scan.bidirectional_unroll(cell, params, params_bw, xs, LENGTHS),
    )
