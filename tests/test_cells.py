"""Every cell's `step` against the numpy per-step reference written from its paper, and the
argument checks of `Cell.init` (sizes, forget bias, chrono, layer-norm eps, dtype, options
given as zero-dimensional arrays)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_numpy import CASES, as_tuple, layer_norm, random_like, run_sequence, sigmoid

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
    lstm = cells.LSTM()
    assert cells.get_cell(lstm) is lstm
    with pytest.raises(
        ValueError, match=r"options \{'method': 'scan'\} given with a cell instance"
    ):
        cells.get_cell(lstm, method="scan")
    with pytest.raises(ValueError, match="hidden_size=0"):
        cells.LSTM().init(jax.random.key(0), 3, 0)


KEY = jax.random.key(0)


def test_init_accepts_numpy_integer_sizes():
    # Sizes often come from array shapes or numpy config values: np.int64(3) was refused with
    # "input_size=np.int64(3) must be a positive int".
    want = cells.LSTM().init(KEY, 3, 4)
    got = cells.LSTM().init(KEY, np.int64(3), np.int32(4))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    for bad in (0, -1, 2.0, True, np.int64(0)):
        with pytest.raises(ValueError, match=r"hidden_size=.* must be a positive int"):
            cells.LSTM().init(KEY, 3, bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1.0"])
def test_forget_bias_must_be_a_finite_number(bad):
    # forget_bias=nan gave a NaN forget-gate bias (and NaN losses from the first step), while
    # NaN scales and chrono lengths were already refused.
    with pytest.raises(ValueError, match=r"forget_bias=.* must be a finite number"):
        cells.LSTM().init(KEY, 3, 4, forget_bias=bad)
    np.testing.assert_array_equal(
        cells.LSTM().init(KEY, 3, 2, forget_bias=-2)["b_ih"][2:4], [-2.0, -2.0]
    )


def test_chrono_on_a_gateless_cell_is_refused_whatever_its_value():
    # `forget_bias or chrono_max_length` let chrono_max_length=0 through on Elman, silently
    # ignored, where every other value raised.
    with pytest.raises(ValueError, match=r"Elman has no gates.*chrono_max_length=0"):
        cells.Elman().init(KEY, 3, 4, chrono_max_length=0)


def test_layer_norm_lstm_eps_must_be_finite_and_positive_and_is_used():
    # eps=0 (or < 0, NaN) was accepted and every step from the zero state was NaN: the
    # recurrent LN of h = 0 is 0 * rsqrt(0 + eps).
    for bad in (0.0, -1e-5, float("nan"), float("inf"), "1e-5"):
        with pytest.raises(ValueError, match=r"eps=.* must be a finite number > 0"):
            cells.LayerNormLSTM(eps=bad)
    with pytest.raises(ValueError, match=r"eps=0 must be a finite number > 0"):
        cells.get_cell("layer_norm_lstm", eps=0)
    # A legal eps reaches all three LNs: one step against a float64 transcription of
    # Ba et al. 2016 (eq. 20-22) with the same eps, from a non-zero carry.
    eps, H = 0.5, 3
    cell = cells.LayerNormLSTM(eps=eps)
    shapes = {"W_ih": (2, 4 * H), "W_hh": (H, 4 * H), "b_ih": (4 * H,), "b_hh": (4 * H,)}
    shapes.update(ln_ih_scale=(4 * H,), ln_hh_scale=(4 * H,), ln_c_scale=(H,), ln_c_bias=(H,))
    p = random_like({k: np.zeros(s) for k, s in shapes.items()}, seed=0)
    f64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
    rng = np.random.default_rng(1)
    x, h, c = rng.standard_normal(2), rng.standard_normal(H), rng.standard_normal(H)
    zero = np.zeros(4 * H)
    gates = (
        layer_norm(x @ f64["W_ih"], f64["ln_ih_scale"], zero, eps)
        + layer_norm(h @ f64["W_hh"], f64["ln_hh_scale"], zero, eps)
        + f64["b_ih"]
        + f64["b_hh"]
    )
    i, f, g, o = np.split(gates, 4)
    c_want = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_want = sigmoid(o) * np.tanh(layer_norm(c_want, f64["ln_c_scale"], f64["ln_c_bias"], eps))
    as32 = lambda v: jnp.asarray(v, jnp.float32)
    (h_got, c_got), _ = jax.jit(cell.step)(p, (as32(h), as32(c)), as32(x))
    np.testing.assert_allclose(h_got, h_want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_got, c_want, rtol=1e-5, atol=1e-6)


def test_init_refuses_a_non_floating_dtype():
    # dtype=int32 cast every draw to an integer without a word: W_hh (orthogonal, entries in
    # (-1, 1)) came out all zeros, W_ih nearly so.
    for bad in (jnp.int32, "int8", bool):
        with pytest.raises(ValueError, match=r"dtype=.* must be a floating dtype"):
            cells.LSTM().init(KEY, 3, 2, dtype=bad)


def test_cell_options_may_be_zero_dimensional_arrays():
    """is_finite_number accepts a 0-d array, which then failed as an unhashable jit static
    argument; a NumPy integer batch size failed in `zero_carry` ('not iterable'), and a 0-d
    layer-norm `eps` left the cell unhashable ('Non-hashable static arguments' in `init`)."""
    cell = cells.get_cell("min_gru", method="sequential")
    key = jax.random.key(0)
    plain = cell.init(key, 3, 2, forget_bias=0.5, input_scale=2.0)
    arrays = cell.init(key, 3, 2, forget_bias=np.array(0.5), input_scale=jnp.array(2.0))
    jax.tree.map(np.testing.assert_array_equal, arrays, plain)
    chrono = cell.init(key, 3, 2, chrono_max_length=np.array(10.0))
    assert np.all(np.asarray(chrono["b_ih"][:2]) < 0)  # keep factor 1 - σ(z) = σ(-b_z) > 1/2
    assert cell.zero_carry(np.int64(4), 2).shape == (4, 2)
    plain_ln = cells.LayerNormLSTM(eps=0.5)
    for eps in (np.array(0.5), jnp.array(0.5, jnp.float32)):
        ln = cells.get_cell("layer_norm_lstm", eps=eps)
        assert ln == plain_ln and hash(ln) == hash(plain_ln) and type(ln.eps) is float


def test_cell_extras_start_neutral():
    """As documented: peepholes start at zero, so a fresh PeepholeLSTM is the plain LSTM of
    the same key, and the layer norms start as identities (scales 1, cell-state shift 0)."""
    peephole = cells.PeepholeLSTM().init(KEY, INPUT, HIDDEN)
    plain = cells.LSTM().init(KEY, INPUT, HIDDEN)
    assert set(peephole) == set(plain) | {"w_ci", "w_cf", "w_co"}
    for name, value in peephole.items():
        np.testing.assert_array_equal(value, plain[name] if name in plain else 0.0)
    ln = cells.LayerNormLSTM().init(KEY, INPUT, HIDDEN)
    for name, size, value in (
        ("ln_ih_scale", 4 * HIDDEN, 1.0),
        ("ln_hh_scale", 4 * HIDDEN, 1.0),
        ("ln_c_scale", HIDDEN, 1.0),
        ("ln_c_bias", HIDDEN, 0.0),
    ):
        assert ln[name].shape == (size,), name
        np.testing.assert_array_equal(ln[name], value, err_msg=name)
