"""Initialisers: the defining property of each, and how cells place them per gate block;
statistical checks against their papers (Haar-distributed orthogonal matrices, variances per
gate block, chrono biases) and float64 weights drawn in float64."""

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
    assert abs(sample("normal").std() - 0.01) < 0.0003  # the documented default scale
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
    zeros = jax.nn.initializers.zeros
    assert initializers.get_initializer(zeros) is zeros
    with pytest.raises(ValueError, match=r"options \{'scale': 2.0\} given with a callable"):
        initializers.get_initializer(zeros, scale=2.0)


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


def test_orthogonal_4x4_is_haar_distributed():
    """Haar measure on O(n) is invariant under sign flips of rows, so every entry has mean 0
    and E[w_ij^2] = 1/n. Without the sign correction, LAPACK's QR gives diag(q) a mean
    near -0.42 for n = 4 (measured)."""
    w = np.asarray(initializers.orthogonal()(KEY, (4000, 4, 4)), np.float64)
    diag = np.diagonal(w, axis1=-2, axis2=-1)
    assert np.all(np.abs(diag.mean(0)) < 0.03)  # std of the mean: 0.5 / sqrt(4000) = 0.008
    assert abs(np.mean(w**2) - 0.25) < 0.005
    assert abs(np.mean(np.linalg.det(w))) < 0.05  # both components of O(n) equally likely


def test_glorot_fans_are_per_gate_block_of_the_fused_layout():
    """`W_ih [I, 4H]`: glorot's fans are (I, H) of one gate block (design.md, "Init"), not
    (I, 4H) of the fused matrix nor the axes swapped."""
    IN, H = 64, 16
    w = np.asarray(cells.LSTM().init(KEY, IN, H, input_init="glorot_uniform")["W_ih"])
    assert np.abs(w).max() <= np.sqrt(6.0 / (IN + H))
    assert np.abs(w).max() > np.sqrt(6.0 / (IN + 4 * H)) + 0.01
    w = np.asarray(cells.GRU().init(KEY, IN, H, input_init="lecun_normal")["W_ih"])
    assert abs(w.std() - 1 / np.sqrt(IN)) < 0.05 / np.sqrt(IN)  # fan_in is the input axis


def test_float64_weights_are_drawn_in_float64():
    # Every initialiser drew float32 numbers and cast them: a float64 orthogonal matrix was
    # orthogonal only to ~4e-7 and every float64 weight had float32's 24-bit mantissa.
    with jax.enable_x64(True):
        q = np.asarray(initializers.orthogonal()(KEY, (3, 64, 64), jax.numpy.float64))
        assert q.dtype == np.float64
        assert np.abs(np.einsum("gij,gik->gjk", q, q) - np.eye(64)).max() < 1e-12
        for name in ("normal", "uniform", "glorot_uniform", "glorot_normal", "lecun_normal"):
            w = np.asarray(initializers.get_initializer(name)(KEY, (64, 64), jax.numpy.float64))
            assert np.any(w != w.astype(np.float32)), name  # more than float32's mantissa
        eye = initializers.identity(0.9)(KEY, (2, 2), jax.numpy.float64)  # was float32's 0.9
        np.testing.assert_array_equal(np.asarray(eye), 0.9 * np.eye(2))
        # The keep gate's bias too: built in float32, a float64 forget_bias=0.9 held 0.89999998.
        b = cells.LSTM().init(KEY, 2, 3, forget_bias=0.9, dtype=jax.numpy.float64)["b_ih"]
        np.testing.assert_array_equal(np.asarray(b)[3:6], 0.9)
        chrono = np.asarray(initializers.chrono_bias(KEY, 64, 100.0, jax.numpy.float64))
        assert chrono.dtype == np.float64 and np.any(chrono != chrono.astype(np.float32))
    # bfloat16 weights are still float32 draws rounded once (same values as before).
    w32 = initializers.glorot_uniform()(KEY, (8, 8), jax.numpy.float32)
    w16 = initializers.glorot_uniform()(KEY, (8, 8), jax.numpy.bfloat16)
    np.testing.assert_array_equal(np.asarray(w16), np.asarray(w32.astype(jax.numpy.bfloat16)))


SIZES = ((5, 3), (2, 4))  # (fan_in, H): taller and wider gate blocks


def test_orthogonal_gate_blocks_of_rectangular_input_weights():
    """`W_ih [I, 3H]` with orthogonal init: each `[I, H]` gate block has orthonormal columns
    (I >= H) or rows (I < H), checked in float64, and the blocks are distinct draws."""
    init = initializers.orthogonal(scale=2.0)
    draw = jax.jit(
        lambda key: [initializers.gate_blocks(init, key, i, h, 3, jnp.float32) for i, h in SIZES]
    )
    for (fan_in, H), w in zip(SIZES, draw(KEY), strict=True):
        w = np.asarray(w, np.float64) / 2.0
        assert w.shape == (fan_in, 3 * H)
        blocks = [w[:, k * H : (k + 1) * H] for k in range(3)]
        for block in blocks:
            gram = block.T @ block if fan_in >= H else block @ block.T
            np.testing.assert_allclose(gram, np.eye(min(fan_in, H)), atol=1e-6)
        assert not np.allclose(blocks[0], blocks[1])


def _ks_uniform(u: np.ndarray, low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance of `u` from U[low, high]."""
    u = np.sort((u - low) / (high - low))
    n = len(u)
    return max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n))


def test_chrono_bias_is_log_of_uniform_and_lands_on_each_cells_gates():
    """b = log u, u ~ U[1, T - 1] (Tallec & Ollivier 2018): KS distance of exp(b) from that
    uniform on 20000 draws (fixed key; the 0.001 critical value is 0.0138). LSTM-family
    input gates get -b; GRU's z gets +b, minGRU's z (keep = 1 - sigmoid(z)) gets -b."""
    H, T = 20000, 50.0
    b = np.asarray(initializers.chrono_bias(jax.random.key(3), H, T), np.float64)
    assert _ks_uniform(np.exp(b), 1.0, T - 1.0) < 0.0138
    h = 16
    for name, keep, sign, input_gate in (
        ("lstm", 1, 1.0, 0),
        ("peephole_lstm", 1, 1.0, 0),
        ("layer_norm_lstm", 1, 1.0, 0),
        ("cifg_lstm", 0, 1.0, None),
        ("gru", 1, 1.0, None),
        ("gru_cho", 1, 1.0, None),
        ("min_gru", 0, -1.0, None),
    ):
        cell = cells.get_cell(name)
        params = cell.init(jax.random.key(1), 3, h, chrono_max_length=T)
        blocks = np.asarray(params["b_ih"]).reshape(cell.num_gates, h)
        keep_bias = sign * blocks[keep]
        assert np.all(keep_bias >= 0) and np.all(keep_bias <= np.log(T - 1) + 1e-6), name
        assert len(np.unique(keep_bias)) == h, name  # drawn per unit
        for g in range(cell.num_gates):
            if g == input_gate:
                np.testing.assert_array_equal(blocks[g], -blocks[keep])
            elif g != keep:
                np.testing.assert_array_equal(blocks[g], 0.0)
        if "b_hh" in params:
            np.testing.assert_array_equal(params["b_hh"], 0.0)


@pytest.mark.parametrize(
    "name,variance",
    [
        ("glorot_uniform", lambda fan_in, fan_out: 2.0 / (fan_in + fan_out)),
        ("glorot_normal", lambda fan_in, fan_out: 2.0 / (fan_in + fan_out)),
        ("lecun_normal", lambda fan_in, fan_out: 1.0 / fan_in),
        ("uniform", lambda fan_in, fan_out: 1.0 / (3.0 * fan_out)),
    ],
)
def test_initialiser_variance_per_gate_block(name, variance):
    """Per-block fans on a `[gates, fan_in, fan_out]` draw of 4 * 300 * 100 = 120000 entries
    (fixed key): the sample variance of an i.i.d. sample of that size is within 2% of the
    true one with overwhelming margin (its relative s.d. is <= sqrt(2 / n) = 0.4%); with
    scale 0.5 the variance is a quarter."""
    shape = (4, 300, 100)
    for scale in (1.0, 0.5):
        w = np.asarray(
            initializers.get_initializer(name, scale=scale if name != "uniform" else None)(
                jax.random.key(11), shape, jnp.float32
            ),
            np.float64,
        )
        want = variance(300, 100) * (scale**2 if name != "uniform" else 1.0)
        for block in w:
            assert abs(block.var() / want - 1.0) < 0.02, (name, scale)
            assert abs(block.mean()) < 0.02 * np.sqrt(want)


def test_orthogonal_is_orthogonal_per_gate_block_in_float64_and_bfloat16():
    w = np.asarray(initializers.orthogonal(1.5)(jax.random.key(2), (3, 12, 7)), np.float64)
    for block in w:
        np.testing.assert_allclose(block.T @ block, 2.25 * np.eye(7), atol=1e-5)
    wide = np.asarray(initializers.orthogonal()(jax.random.key(2), (2, 4, 9)), np.float64)
    for block in wide:
        np.testing.assert_allclose(block @ block.T, np.eye(4), atol=1e-5)
    assert len({block.tobytes() for block in w}) == 3  # independent per block
    half = initializers.orthogonal()(jax.random.key(2), (8, 8), jnp.bfloat16)
    assert half.dtype == jnp.bfloat16
    half = np.asarray(half, np.float64)
    np.testing.assert_allclose(half.T @ half, np.eye(8), atol=2e-2)


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)])
def test_orthogonal_is_haar_distributed(shape):
    """Over 4000 independent blocks (fixed key) each entry has mean 0 and variance
    1/max(rows, cols), as for a Haar-random (semi-)orthogonal matrix. QR's sign convention
    alone biases the diagonal to about -0.4 (measured): the sign fix by diag(R) removes it.
    Bounds are 5 standard errors of the mean (s.e. <= sqrt(1/3/4000) = 0.0091) and 5% of the
    variance (its relative s.e. is about sqrt(2/4000) = 2.2%, pooled over entries much less)."""
    n = 4000
    w = np.asarray(initializers.orthogonal()(jax.random.key(0), (n, *shape)), np.float64)
    entry_var = 1.0 / max(shape)
    assert np.max(np.abs(w.mean(0))) < 5 * np.sqrt(entry_var / n)
    assert abs(w.var(0).mean() / entry_var - 1.0) < 0.05


def test_foreign_initialisers_are_applied_per_gate_block():
    """Given `[G, fan_in, H]`, `jax.nn.initializers` fold G into their fans (`glorot_uniform`
    drew a 4x smaller variance for an LSTM) and `orthogonal` orthogonalised the stacked
    `[G * fan_in, H]` matrix, so each block's columns had norm 1/sqrt(G) = 0.5 here.
    `gate_blocks` calls them once per block, as `Cell.init` documents, each with its own key
    (one key for all would give every gate the same weights)."""
    H = 3
    w = initializers.gate_blocks(jax.nn.initializers.orthogonal(), KEY, 5, H, 4, jnp.float32)
    blocks = [np.asarray(w[:, k * H : (k + 1) * H], np.float64) for k in range(4)]
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    assert len({block.tobytes() for block in blocks}) == 4
