"""Review tests for rnn_jax.cells / rnn_jax.initializers: argument checks of `Cell.init` and
distributional properties of the initialisers checked against their papers."""

import jax
import numpy as np
import pytest

from rnn_jax import cells, initializers

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


def test_orthogonal_is_haar_distributed():
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
    # bfloat16 weights are still float32 draws rounded once (same values as before).
    w32 = initializers.glorot_uniform()(KEY, (8, 8), jax.numpy.float32)
    w16 = initializers.glorot_uniform()(KEY, (8, 8), jax.numpy.bfloat16)
    np.testing.assert_array_equal(np.asarray(w16), np.asarray(w32.astype(jax.numpy.bfloat16)))
