"""Initialisers: the defining property of each, and how cells place them per gate block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, initializers

KEY = jax.random.key(0)


@pytest.mark.parametrize("shape", [(16, 16), (24, 8), (8, 24)])
def test_orthogonal_has_orthonormal_columns_or_rows(shape):
    w = np.asarray(initializers.get_initializer("orthogonal", scale=2.0)(KEY, shape), np.float64)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(shape)), atol=1e-5)


def test_random_initialisers_have_their_variance():
    shape = (300, 200)
    sample = lambda name, **kw: np.asarray(initializers.get_initializer(name, **kw)(KEY, shape))
    assert abs(sample("normal", scale=0.1).std() - 0.1) < 0.003
    u = sample("uniform", scale=0.3)
    assert u.min() >= -0.3 and u.max() <= 0.3 and abs(u.std() - 0.3 / np.sqrt(3)) < 0.005
    default = sample("uniform")  # PyTorch's RNN default: U(-1/sqrt(hidden), 1/sqrt(hidden))
    assert abs(np.abs(default).max() - 1 / np.sqrt(200)) < 1e-3
    glorot_std = np.sqrt(2.0 / 500)
    assert abs(sample("glorot_uniform").std() - glorot_std) < 0.03 * glorot_std
    assert np.abs(sample("glorot_uniform")).max() <= np.sqrt(6.0 / 500)
    assert abs(sample("glorot_normal").std() - glorot_std) < 0.03 * glorot_std
    assert abs(sample("lecun_normal").std() - 1 / np.sqrt(300)) < 0.03 / np.sqrt(300)
    np.testing.assert_array_equal(sample("zeros"), 0.0)


def test_identity_is_scaled_eye_and_square_only():
    np.testing.assert_array_equal(initializers.identity(0.5)(KEY, (4, 4)), 0.5 * np.eye(4))
    with pytest.raises(ValueError, match=r"square block, got shape=\(3, 4\)"):
        initializers.identity()(KEY, (3, 4))


def test_get_initializer_errors():
    with pytest.raises(ValueError, match=r"name='xavier'; allowed: orthogonal, normal, uniform"):
        initializers.get_initializer("xavier")
    with pytest.raises(ValueError, match=r"bad options \{'stddev': 1.0\} for initialiser 'normal'"):
        initializers.get_initializer("normal", stddev=1.0)


BAD_SCALES = [-0.1, 0.0, float("nan"), float("inf"), -float("inf"), "0.1"]


@pytest.mark.parametrize(
    "name",
    [
        "orthogonal",
        "normal",
        "uniform",
        "glorot_uniform",
        "glorot_normal",
        "lecun_normal",
        "identity",
    ],
)
@pytest.mark.parametrize("scale", BAD_SCALES)
def test_scale_must_be_finite_and_positive(name, scale):
    # U(-s, s) with s < 0 gave a constant matrix (jax.random.uniform clamps minval > maxval),
    # NaN a NaN matrix: every scale is checked when the initialiser is built.
    with pytest.raises(ValueError, match=rf"initialiser '{name}': scale={scale!r} must be"):
        initializers.get_initializer(name, scale=scale)
    with pytest.raises(ValueError, match=rf"scale={scale!r} must be a finite number > 0"):
        getattr(initializers, name)(scale)


def test_bad_scale_is_refused_through_cell_init():
    # Through the library: recurrent_scale=-0.5 gave W_hh = 0.5 everywhere (rank one).
    with pytest.raises(
        ValueError,
        match=r"recurrent_init='uniform', recurrent_scale=-0.5: .*'uniform': scale=-0.5 must be "
        r"a finite number > 0",
    ):
        cells.LSTM().init(KEY, 3, 4, recurrent_init="uniform", recurrent_scale=-0.5)
    with pytest.raises(ValueError, match=r"input_scale=nan: .*'glorot_uniform': scale=nan must be"):
        cells.GRU().init(KEY, 3, 4, input_scale=float("nan"))
    assert initializers.uniform(None)(KEY, (4, 4)).shape == (4, 4)  # None: PyTorch's default


def test_recurrent_init_is_applied_per_gate_block():
    H = 8
    params = cells.LSTM().init(KEY, 5, H, recurrent_init="orthogonal")
    for k in range(4):
        block = np.asarray(params["W_hh"][:, k * H : (k + 1) * H], np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    irnn = cells.get_cell("elman", nonlinearity="relu").init(KEY, 5, H, recurrent_init="identity")
    np.testing.assert_array_equal(irnn["W_hh"], np.eye(H))
    # `input_scale` reaches the initialiser: the same draw, times the scale.
    unit = cells.GRU().init(KEY, 5, H, input_init="normal", input_scale=1.0)
    scaled = cells.GRU().init(KEY, 5, H, input_init="normal", input_scale=0.25)
    np.testing.assert_allclose(scaled["W_ih"], 0.25 * unit["W_ih"], rtol=1e-6)


def test_forget_bias_lands_on_the_keep_gate():
    H = 4
    lstm = cells.LSTM().init(KEY, 3, H)  # default 1.0 (Jozefowicz et al. 2015)
    np.testing.assert_array_equal(lstm["b_ih"], np.repeat([0.0, 1.0, 0.0, 0.0], H))
    np.testing.assert_array_equal(lstm["b_hh"], 0.0)
    gru = cells.GRU().init(KEY, 3, H, forget_bias=2.0)  # z keeps h in h' = (1-z) n + z h
    np.testing.assert_array_equal(gru["b_ih"], np.repeat([0.0, 2.0, 0.0], H))
    cifg = cells.CIFGLSTM().init(KEY, 3, H, forget_bias=0.5)
    np.testing.assert_array_equal(cifg["b_ih"], np.repeat([0.5, 0.0, 0.0], H))
    min_gru = cells.MinGRU().init(KEY, 3, H, forget_bias=2.0)  # keep factor 1 - σ(z)
    np.testing.assert_array_equal(min_gru["b_ih"], np.repeat([-2.0, 0.0], H))
    assert set(min_gru) == {"W_ih", "b_ih"}


def test_chrono_init_spreads_forgetting_times():
    H, T = 256, 100
    b = np.asarray(cells.LSTM().init(KEY, 3, H, chrono_max_length=T)["b_ih"])
    b_i, b_f = b[:H], b[H : 2 * H]
    np.testing.assert_array_equal(b_i, -b_f)
    # b_f = log(u), u ~ U[1, T-1]: exp(b_f) is uniform on [1, T-1].
    u = np.exp(b_f)
    assert u.min() >= 1.0 - 1e-5 and u.max() <= T - 1 + 1e-3
    assert abs(u.mean() - T / 2) < 5.0
    gru = np.asarray(cells.GRU().init(KEY, 3, H, chrono_max_length=T)["b_ih"])
    assert np.all(gru[H : 2 * H] >= 0) and np.all(gru[:H] == 0) and np.all(gru[2 * H :] == 0)


def test_cell_init_errors():
    with pytest.raises(ValueError, match=r"not both"):
        cells.LSTM().init(KEY, 3, 4, forget_bias=1.0, chrono_max_length=10)
    with pytest.raises(ValueError, match=r"Elman has no gates: forget_bias=1.0"):
        cells.Elman().init(KEY, 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match=r"chrono_max_length=2 must be > 2"):
        cells.LSTM().init(KEY, 3, 4, chrono_max_length=2)
    # NaN and inf passed `<= 2` and gave NaN / ±inf input and forget biases.
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"chrono_max_length={bad} must be > 2 and finite"):
            cells.LSTM().init(KEY, 3, 4, chrono_max_length=bad)
        with pytest.raises(ValueError, match=rf"chrono_max_length={bad} must be > 2 and finite"):
            initializers.chrono_bias(KEY, 4, bad)
    with pytest.raises(ValueError, match=r"unknown initialiser name='ortho'"):
        cells.LSTM().init(KEY, 3, 4, input_init="ortho")
    assert jnp.dtype(cells.GRU().init(KEY, 3, 4, dtype=jnp.bfloat16)["W_hh"].dtype) == (
        jnp.bfloat16
    )
