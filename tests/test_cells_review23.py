"""Review 23: argument checks of the cells (layer-norm eps, init dtype) and the per-gate
semi-orthogonal init of rectangular input blocks, each against an independent reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_numpy import layer_norm, random_like, sigmoid

from rnn_jax import cells, initializers

KEY = jax.random.key(0)
SIZES = ((5, 3), (2, 4))  # (fan_in, H): taller and wider gate blocks


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
