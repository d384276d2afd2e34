"""Per-step numpy references for every cell, written from the papers' equations.

Independent of rnn_jax.cells: only the parameter layout (the documented contract: `[in, out]`
weights, gates fused in PyTorch order) is shared. Each gate is sliced out and computed on its
own, in float64, one sequence at a time, with no padding.
"""

from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def layer_norm(v, scale, bias, eps=1e-5):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + eps) * scale + bias


def _gate(p, name, k, H):
    """The k-th `[., H]` block of weight/bias `name`."""
    return np.asarray(p[name], np.float64)[..., k * H : (k + 1) * H]


def _pre(p, x, h, k, H, h_rec=None):
    """x W_ih^k + b_ih^k + h W_hh^k + b_hh^k for gate k."""
    h_rec = h if h_rec is None else h_rec
    return (
        x @ _gate(p, "W_ih", k, H)
        + _gate(p, "b_ih", k, H)
        + h_rec @ _gate(p, "W_hh", k, H)
        + _gate(p, "b_hh", k, H)
    )


def elman_step(p, state, x, mask, nonlinearity):
    (h,) = state
    H = h.shape[-1]
    v = _pre(p, x, h, 0, H, h * mask)
    h = np.tanh(v) if nonlinearity == "tanh" else np.maximum(v, 0.0)
    return (h,), h


def lstm_step(p, state, x, mask):
    h, c = state
    H = h.shape[-1]
    hm = h * mask
    i = sigmoid(_pre(p, x, h, 0, H, hm))
    f = sigmoid(_pre(p, x, h, 1, H, hm))
    g = np.tanh(_pre(p, x, h, 2, H, hm))
    o = sigmoid(_pre(p, x, h, 3, H, hm))
    c = f * c + i * g
    h = o * np.tanh(c)
    return (h, c), h


def peephole_lstm_step(p, state, x, mask):
    """Gers & Schmidhuber 2000 / Graves 2013 eqs. 7-11 (input/forget peep at c_{t-1},
    output peeps at c_t)."""
    h, c_prev = state
    H = h.shape[-1]
    hm = h * mask
    w_ci, w_cf, w_co = (np.asarray(p[n], np.float64) for n in ("w_ci", "w_cf", "w_co"))
    i = sigmoid(_pre(p, x, h, 0, H, hm) + w_ci * c_prev)
    f = sigmoid(_pre(p, x, h, 1, H, hm) + w_cf * c_prev)
    c = f * c_prev + i * np.tanh(_pre(p, x, h, 2, H, hm))
    o = sigmoid(_pre(p, x, h, 3, H, hm) + w_co * c)
    h = o * np.tanh(c)
    return (h, c), h


def layer_norm_lstm_step(p, state, x, mask):
    """Ba et al. 2016: gates = LN(W_x x) + LN(W_h h) + b, h = o * tanh(LN(c))."""
    h, c = state
    H = h.shape[-1]
    f64 = lambda n: np.asarray(p[n], np.float64)
    zero = np.zeros(4 * H)
    gates = (
        layer_norm(x @ f64("W_ih"), f64("ln_ih_scale"), zero)
        + layer_norm((h * mask) @ f64("W_hh"), f64("ln_hh_scale"), zero)
        + f64("b_ih")
        + f64("b_hh")
    )
    i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(layer_norm(c, f64("ln_c_scale"), f64("ln_c_bias")))
    return (h, c), h


def cifg_lstm_step(p, state, x, mask):
    """Greff et al. 2017 CIFG: i = 1 - f; gates ordered f, g, o."""
    h, c = state
    H = h.shape[-1]
    hm = h * mask
    f = sigmoid(_pre(p, x, h, 0, H, hm))
    g = np.tanh(_pre(p, x, h, 1, H, hm))
    o = sigmoid(_pre(p, x, h, 2, H, hm))
    c = f * c + (1.0 - f) * g
    h = o * np.tanh(c)
    return (h, c), h


def gru_step(p, state, x, mask):
    """PyTorch nn.GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    (h,) = state
    H = h.shape[-1]
    hm = h * mask
    r = sigmoid(_pre(p, x, h, 0, H, hm))
    z = sigmoid(_pre(p, x, h, 1, H, hm))
    n = np.tanh(
        x @ _gate(p, "W_ih", 2, H)
        + _gate(p, "b_ih", 2, H)
        + r * (hm @ _gate(p, "W_hh", 2, H) + _gate(p, "b_hh", 2, H))
    )
    h = (1.0 - z) * n + z * h
    return (h,), h


def gru_cho_step(p, state, x, mask):
    """Cho et al. 2014 eqs. 5-8: h~ = tanh(W x + U (r * h)), reset before the matmul."""
    (h,) = state
    H = h.shape[-1]
    hm = h * mask
    r = sigmoid(_pre(p, x, h, 0, H, hm))
    z = sigmoid(_pre(p, x, h, 1, H, hm))
    n = np.tanh(
        x @ _gate(p, "W_ih", 2, H)
        + _gate(p, "b_ih", 2, H)
        + (r * hm) @ _gate(p, "W_hh", 2, H)
        + _gate(p, "b_hh", 2, H)
    )
    h = z * h + (1.0 - z) * n
    return (h,), h


def min_gru_step(p, state, x, mask):
    """Feng et al. 2024: z = σ(Linear_z(x)), h~ = Linear_h(x), h = (1 - z) h + z h~."""
    (h,) = state
    H = h.shape[-1]
    z = sigmoid(x @ _gate(p, "W_ih", 0, H) + _gate(p, "b_ih", 0, H))
    candidate = x @ _gate(p, "W_ih", 1, H) + _gate(p, "b_ih", 1, H)
    h = (1.0 - z) * h + z * candidate
    return (h,), h


STEPS = {
    "elman": lambda p, s, x, m: elman_step(p, s, x, m, "tanh"),
    "elman_relu": lambda p, s, x, m: elman_step(p, s, x, m, "relu"),
    "lstm": lstm_step,
    "peephole_lstm": peephole_lstm_step,
    "layer_norm_lstm": layer_norm_lstm_step,
    "cifg_lstm": cifg_lstm_step,
    "gru": gru_step,
    "gru_cho": gru_cho_step,
    "min_gru": min_gru_step,
}
LSTM_LIKE = ("lstm", "peephole_lstm", "layer_norm_lstm", "cifg_lstm")


def run_sequence(name, params, xs, initial=None, mask=None):
    """Run reference cell `name` over one unpadded sequence `xs [time, input]`.

    `initial`: tuple of state vectors `(h,)` or `(h, c)` (None: zeros). Returns
    `(ys [time, hidden], final_state_tuple)` in float64.
    """
    H = np.asarray(params["W_ih"]).shape[1] // {
        "elman": 1, "elman_relu": 1, "lstm": 4, "peephole_lstm": 4, "layer_norm_lstm": 4,
        "cifg_lstm": 3, "gru": 3, "gru_cho": 3, "min_gru": 2,
    }[name]  # fmt: skip
    parts = 2 if name in LSTM_LIKE else 1
    state = (
        tuple(np.zeros(H) for _ in range(parts))
        if initial is None
        else tuple(np.asarray(s, np.float64) for s in initial)
    )
    mask = np.ones(H) if mask is None else np.asarray(mask, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        state, y = STEPS[name](params, state, x, mask)
        ys.append(y)
    return np.stack(ys), state


# Test cases: id -> (cell name in rnn_jax.cells.CELL_NAMES, cell options). The id names the
# reference step above.
CASES = {
    "elman": ("elman", {}),
    "elman_relu": ("elman", {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}),
    "peephole_lstm": ("peephole_lstm", {}),
    "layer_norm_lstm": ("layer_norm_lstm", {}),
    "cifg_lstm": ("cifg_lstm", {}),
    "gru": ("gru", {}),
    "gru_cho": ("gru_cho", {}),
    "min_gru": ("min_gru", {"method": "sequential"}),
}


def random_like(params, seed, scale=0.5):
    """Random float32 params with the shapes of `params` (so peepholes, layer-norm scales and
    biases are all non-trivial); layer-norm scales are drawn around 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in params.items():
        sample = scale * rng.standard_normal(np.shape(value))
        out[name] = (1.0 + sample if name.endswith("_scale") else sample).astype(np.float32)
    return out


def as_tuple(carry):
    """A cell carry (`h` or `(h, c)`) as a tuple of arrays."""
    return tuple(carry) if isinstance(carry, tuple | list) else (carry,)
