"""rnn_jax.diagnostics against independent references: closed forms for linear and tanh RNNs,
finite differences of per-step numpy cells written from the equations (float64), and the copy
task's ‖∂L/∂h_t‖ against a numpy float64 backpropagation of the recall loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import initialization
from experiments.configs.initialization import get_config
from rnn_jax import diagnostics

RNG = np.random.default_rng(0)
B, T, D_IN, H = 2, 6, 3, 4


def elman(params, h, x, nonlinearity=jnp.tanh):
    """h_t = f(x_t W_ih + h_{t-1} W_hh + b), weights [in, out] (design.md)."""
    h = nonlinearity(x @ params["W_ih"] + h @ params["W_hh"] + params["b"])
    return h, h


def np_elman_trajectory(params, h0, xs):
    hs, h = [], np.asarray(h0, np.float64)
    for t in range(xs.shape[1]):
        h = np.tanh(xs[:, t] @ params["W_ih"] + h @ params["W_hh"] + params["b"])
        hs.append(h)
    return np.stack(hs, 1)


def np_lstm_step(p, h, c, x):
    """LSTM from Hochreiter & Schmidhuber / PyTorch docs, gate order i, f, g, o."""
    z = x @ p["W_ih"] + h @ p["W_hh"] + p["b"]
    i, f, g, o = np.split(z, 4, axis=-1)
    sig = lambda a: 1 / (1 + np.exp(-a))
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


class TinyLSTM:
    """A minimal LSTM with the cell API of design.md (projections + step), carry (h, c)."""

    def input_projection(self, p, x):
        return x @ p["W_ih"] + p["b"]

    def recurrent_projection(self, p, carry):
        return carry[0] @ p["W_hh"]

    def step(self, p, carry, x):
        h, c = carry
        z = self.input_projection(p, x) + self.recurrent_projection(p, carry)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h


def random_params(gates=1, scale=0.8):
    return {
        "W_ih": RNG.normal(0, scale, (D_IN, gates * H)),
        "W_hh": RNG.normal(0, scale / np.sqrt(H), (H, gates * H)),
        "b": RNG.normal(0, 0.1, (gates * H,)),
    }


def to_jax(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


@pytest.fixture(scope="module")
def tanh_case():
    params = random_params()
    xs = RNG.normal(size=(B, T, D_IN))
    h0 = RNG.normal(0, 0.5, (B, H))
    target = RNG.normal(size=(B, T, H))
    return params, xs, h0, target


def test_grad_norms_match_finite_differences(tanh_case):
    params, xs, h0, target = tanh_case
    loss_fn = lambda ys: 0.5 * jnp.sum((ys - target) ** 2)
    got = diagnostics.hidden_state_grad_norms(
        functools.partial(elman, to_jax(params)),
        lambda h: h,
        loss_fn,
        jnp.asarray(h0),
        jnp.asarray(xs, jnp.float32),
    )

    def np_loss(t_perturbed, delta):
        # numpy float64 unroll, adding delta to h_t after step t
        h, total = h0.copy(), 0.0
        for t in range(T):
            h = np.tanh(xs[:, t] @ params["W_ih"] + h @ params["W_hh"] + params["b"])
            if t == t_perturbed:
                h = h + delta
            total += 0.5 * np.sum((h - target[:, t]) ** 2)
        return total

    eps = 1e-6
    want = np.zeros((B, T))
    for t in range(T):
        grad = np.zeros((B, H))
        for b in range(B):
            for i in range(H):
                d = np.zeros((B, H))
                d[b, i] = eps
                grad[b, i] = (np_loss(t, d) - np_loss(t, -d)) / (2 * eps)
        want[:, t] = np.linalg.norm(grad, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("v_scale", [1.0, 1e-22])
def test_grad_norms_closed_form_linear_rnn(v_scale):
    # h_t = h_{t-1} (aQ) + x_t U, L = <v, h_T>  =>  dL/dh_t = v ((aQ)^T)^{T-t}, norm |v| a^{T-t}
    # v_scale 1e-22: a vanishing gradient whose entries square to < 1e-38, the float32 range;
    # the unscaled sqrt(Σ g²) gave norms of exactly 0.
    a, time = 0.7, 12
    q, _ = np.linalg.qr(RNG.normal(size=(H, H)))
    w, u = jnp.asarray(a * q, jnp.float32), jnp.asarray(RNG.normal(size=(D_IN, H)), jnp.float32)
    v = v_scale * RNG.normal(size=(H,))
    step = lambda h, x: (h @ w + x @ u, None)
    xs = jnp.asarray(RNG.normal(size=(1, time, D_IN)), jnp.float32)
    got = diagnostics.hidden_state_grad_norms(
        step,
        lambda h: h,
        lambda ys: ys[0, -1] @ jnp.asarray(v, jnp.float32),
        jnp.zeros((1, H)),
        xs,
    )
    want = np.linalg.norm(v) * a ** np.arange(time - 1, -1, -1)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_state_jacobians_tanh_closed_form(tanh_case):
    params, xs, h0, _ = tanh_case
    got = diagnostics.state_jacobians(
        functools.partial(elman, to_jax(params)),
        jnp.asarray(h0, jnp.float32),
        jnp.asarray(xs, jnp.float32),
    )
    hs = np_elman_trajectory(params, h0, xs)
    # dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh^T for h_t = tanh(... + h_{t-1} W_hh)
    want = (1 - hs**2)[..., :, None] * params["W_hh"].T[None, None]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_state_jacobians_lstm_finite_differences():
    params = random_params(gates=4)
    xs = RNG.normal(size=(1, 3, D_IN))
    h0, c0 = RNG.normal(0, 0.5, (1, H)), RNG.normal(0, 0.5, (1, H))
    cell = TinyLSTM()
    got = diagnostics.state_jacobians(
        functools.partial(cell.step, to_jax(params)),
        (jnp.asarray(h0, jnp.float32), jnp.asarray(c0, jnp.float32)),
        jnp.asarray(xs, jnp.float32),
    )
    assert got.shape == (1, 3, 2 * H, 2 * H)
    h, c, eps = h0[0], c0[0], 1e-6
    for t in range(3):
        state = np.concatenate([h, c])  # ravel_pytree order of the carry (h, c)
        fd = np.zeros((2 * H, 2 * H))
        for j in range(2 * H):
            d = np.zeros(2 * H)
            d[j] = eps
            plus = np.concatenate(np_lstm_step(params, *np.split(state + d, 2), xs[0, t]))
            minus = np.concatenate(np_lstm_step(params, *np.split(state - d, 2), xs[0, t]))
            fd[:, j] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(got[0, t], fd, rtol=1e-3, atol=1e-5)
        h, c = np_lstm_step(params, h, c, xs[0, t])


def test_product_singular_values_closed_form_without_underflow():
    # J = (aQ)^T at every step: every singular value of a k-step product is a^k.
    # a^200 = 1e-60 underflows float32; the rescaled product must still get it.
    a, time = 0.5, 200
    q, _ = np.linalg.qr(RNG.normal(size=(H, H)))
    jacobians = jnp.broadcast_to(jnp.asarray(a * q.T, jnp.float32), (1, time, H, H))
    ks = (1, 10, 200)
    got = diagnostics.jacobian_product_log10_singular_values(jacobians, ks)
    want = np.array(ks)[:, None] * np.log10(a) * np.ones((1, 3, H))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_product_singular_values_match_numpy_product(tanh_case):
    params, xs, h0, _ = tanh_case
    hs = np_elman_trajectory(params, h0, xs)
    jacobians = (1 - hs**2)[..., :, None] * params["W_hh"].T[None, None]
    got = diagnostics.jacobian_product_log10_singular_values(
        jnp.asarray(jacobians, jnp.float32), (3, 1, T)
    )
    for b in range(B):
        for row, k in enumerate((3, 1, T)):
            product = np.eye(H)
            for t in range(T - 1, T - 1 - k, -1):
                product = product @ jacobians[b, t]  # J_T J_{T-1} ... J_{T-k+1}
            want = np.linalg.svd(product, compute_uv=False)
            # float32 gets each singular value to ~1e-6 of the largest one
            np.testing.assert_allclose(10.0 ** got[b, row], want, atol=1e-5 * want[0])


def test_product_rejects_bad_k():
    with pytest.raises(ValueError, match="ks="):
        diagnostics.jacobian_product_log10_singular_values(jnp.zeros((1, 4, 2, 2)), (5,))


def test_gate_saturation_matches_numpy_gates():
    params = random_params(gates=4, scale=3.0)  # large weights: some gates saturate
    xs = RNG.normal(size=(B, T, D_IN))
    cell = TinyLSTM()
    carry0 = (jnp.zeros((B, H)), jnp.zeros((B, H)))
    pre = diagnostics.sigmoid_gate_preactivations(
        cell, to_jax(params), carry0, jnp.asarray(xs, jnp.float32)
    )
    stats = diagnostics.gate_saturation(pre, diagnostics.LSTM_SIGMOID_GATES)
    h, c = np.zeros((B, H)), np.zeros((B, H))
    gates = {"input": [], "forget": [], "output": []}
    for t in range(T):
        z = xs[:, t] @ params["W_ih"] + h @ params["W_hh"] + params["b"]
        i, f, _, o = np.split(1 / (1 + np.exp(-z)), 4, axis=-1)
        gates["input"].append(i), gates["forget"].append(f), gates["output"].append(o)
        h, c = np_lstm_step(params, h, c, xs[:, t])
    for name, values in gates.items():
        values = np.stack(values)
        np.testing.assert_allclose(stats[name]["mean"], values.mean(), rtol=1e-5)
        np.testing.assert_allclose(stats[name]["left"], np.mean(values < 0.1), atol=1e-6)
        np.testing.assert_allclose(stats[name]["right"], np.mean(values > 0.9), atol=1e-6)
    assert 0 < float(stats["input"]["left"] + stats["input"]["right"]) < 1


def test_gate_saturation_rejects_bad_layout():
    with pytest.raises(ValueError, match="gates"):
        diagnostics.gate_saturation(jnp.zeros((2, 10)), {"x": (0, 4)})
    for low, high in ((0.9, 0.1), (0.0, 0.5), (float("nan"), 0.9)):
        with pytest.raises(ValueError, match=rf"low={low}, high={high}: need 0 < low < high < 1"):
            diagnostics.gate_saturation(jnp.zeros((2, 4)), {"x": (0, 2)}, low=low, high=high)
    with pytest.raises(ValueError, match=r"depth=0: expected >= 1"):
        diagnostics.per_layer_grad_norms({"a": jnp.ones(2)}, depth=0)
    with pytest.raises(ValueError, match=r"xs: expected \[batch, time, ...\], got shape \(3,\)"):
        diagnostics.trajectory(lambda carry, x: carry, jnp.zeros(2), jnp.zeros(3))


def test_per_layer_grad_norms():
    grads = {
        "layers": [{"W": np.full((2, 2), 1.0), "b": np.full((2,), 2.0)}, {"W": np.eye(3)}],
        "readout": {"W": np.arange(4.0)},
    }
    got = diagnostics.per_layer_grad_norms(grads, depth=2)
    np.testing.assert_allclose(got["layers/0"], np.sqrt(4 + 8))
    np.testing.assert_allclose(got["layers/1"], np.sqrt(3))
    np.testing.assert_allclose(got["readout/W"], np.sqrt(14))
    top = diagnostics.per_layer_grad_norms(grads)
    np.testing.assert_allclose(top["layers"], np.sqrt(15))
    # float32 gradients whose squares under- or overflow (sqrt(Σ g²) gave 0 and inf); 2e37:
    # entries up to 1.2e38, whose reciprocal XLA flushed to 0 (the norm read 0, not 1.7e38)
    for scale in (1e-25, 1e25, 2e37):
        got = diagnostics.per_layer_grad_norms({"a": [jnp.full((4,), 3 * scale), 6 * scale]})
        np.testing.assert_allclose(got["a"], np.sqrt(72) * scale, rtol=1e-6)


def test_product_singular_values_of_an_exactly_zero_product_are_minus_inf():
    # J_t = I except J_6 = 0 (1-based): products reaching J_6 are exactly 0, so σ = 0 and
    # log10 σ = -inf. The clamped rescaling gave -37.93 per factor from J_6 on (k=7: -75.9).
    time = 12
    jacobians = np.tile(np.eye(3, dtype=np.float32), (1, time, 1, 1))
    jacobians[0, 5] = 0.0
    ks = (1, 6, 7, 8, 12)
    got = np.asarray(diagnostics.jacobian_product_log10_singular_values(jnp.asarray(jacobians), ks))
    for row, k in enumerate(ks):
        product = np.eye(3)
        for t in range(time - 1, time - 1 - k, -1):
            product = product @ jacobians[0, t]
        with np.errstate(divide="ignore"):
            want = np.log10(np.linalg.svd(product, compute_uv=False))
        np.testing.assert_allclose(got[0, row], want, atol=1e-6)  # 0 (k <= 6) or -inf (k >= 7)
    assert np.all(np.isneginf(got[0, 2:]))


def test_product_singular_values_exactly_zero_in_a_relu_rnn():
    # A ReLU RNN whose pre-activations are all negative at one step: J_t = diag(relu') W_hh^T
    # is 0 there, so ∂h_T/∂h_1 is 0, while products not reaching that step are finite.
    time, hidden = 8, 3
    w_hh = jnp.eye(hidden) * 0.9
    step = lambda h, x: (jax.nn.relu(h @ w_hh + x), None)
    xs = np.ones((1, time, hidden), np.float32)
    xs[0, 3] = -100.0  # every unit off at 0-based step 3
    jacobians = diagnostics.state_jacobians(step, jnp.ones((1, hidden)), jnp.asarray(xs))
    got = np.asarray(diagnostics.jacobian_product_log10_singular_values(jacobians, (4, 5, 7)))
    np.testing.assert_allclose(got[0, 0, 0], 4 * np.log10(0.9), rtol=1e-5)  # J_8 … J_5
    assert np.all(np.isneginf(got[0, 1:]))  # products that include J_4 = 0


def test_product_singular_values_of_a_tiny_but_nonzero_product_stay_finite():
    # A factor 1e-20 I: the product's entries square to < 1e-38, so a Frobenius-norm rescaling
    # sees norm 0; σ_max is 1e-20, not 0.
    time = 12
    jacobians = np.tile(np.eye(3, dtype=np.float32), (1, time, 1, 1))
    jacobians[0, 5] *= 1e-20
    jacobians[0, 2] *= 1e-30
    got = diagnostics.jacobian_product_log10_singular_values(jnp.asarray(jacobians), (6, 7, 12))
    np.testing.assert_allclose(got[0, :, 0], [0.0, -20.0, -50.0], atol=1e-5)


def test_product_singular_values_of_a_nan_product_are_nan_not_minus_inf():
    # A diverged trajectory (NaN Jacobian) must not be counted as an exactly-zero product.
    jacobians = np.tile(np.eye(2, dtype=np.float32), (1, 6, 1, 1))
    jacobians[0, 3] = np.nan  # J_4
    jacobians[0, 1] = 0.0  # and a zero factor J_2 after it, in the product order J_6 … J_1
    got = np.asarray(
        diagnostics.jacobian_product_log10_singular_values(jnp.asarray(jacobians), (2, 3, 6))
    )
    np.testing.assert_allclose(got[0, 0], 0.0, atol=1e-6)  # J_6 J_5
    assert np.all(np.isnan(got[0, 1:]))


HIDDEN = 8


def test_copy_task_gradient_norms_are_those_of_the_recall_loss():
    # The copy task's loss scores a blank at every step, so ‖∂L/∂h_1‖ held step 1's own
    # loss: at init the "grad ratio" ‖∂L/∂h_1‖/‖∂L/∂h_T‖ was 10^0.05 for N(0, 0.01²) W_hh,
    # whose recall gradient underflows. Reference: numpy float64 backpropagation of the
    # recall steps' terms of the loss, g_t = ∂ℓ_t/∂h_t + (g_{t+1} ⊙ (1 − h_{t+1}²)) W_hhᵀ.
    # task.diagnostics' norms are hidden_state_grad_norms of `diagnosed_loss`
    # (test_initialization_experiment.py checks that, at these sizes, whose compiled cell init
    # this reuses); here that loss's norms against the reference, jitted: ~0.5 s, not ~3 s.
    config = get_config("smoke")
    config.model.hidden_size, config.data.num_symbols = HIDDEN, 2
    task = initialization.LongRangeTask(config, "copy", 10, "elman_tanh", "orthogonal")
    steps, s = task.steps, 2
    batch = task.eval_data("diagnostics")[0]
    xs, targets = task._inputs(batch)[:3], batch["targets"][:3]
    model = task.init_model(jax.random.key(1))
    cell, params = model.rnn.cell, model.rnn.params[0]
    got = jax.jit(
        lambda xs, targets: diagnostics.hidden_state_grad_norms(
            functools.partial(cell.step, params),
            cell.output,
            lambda hs: task.diagnosed_loss(model, hs, targets).sum(),
            cell.zero_carry((3,), HIDDEN),
            xs,
        )
    )(xs, targets)

    p = {k: np.asarray(v, np.float64) for k, v in model.rnn.params[0].items()}
    w_out = np.asarray(model.readout.kernel[...], np.float64)
    b_out = np.asarray(model.readout.bias[...], np.float64)
    x = np.asarray(xs, np.float64)
    norms = np.zeros((len(x), steps))
    for b in range(len(x)):
        h, hs = np.zeros(HIDDEN), []
        for t in range(steps):
            h = np.tanh(x[b, t] @ p["W_ih"] + p["b_ih"] + h @ p["W_hh"] + p["b_hh"])
            hs.append(h)
        g = np.zeros(HIDDEN)
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                g = (g * (1 - hs[t + 1] ** 2)) @ p["W_hh"].T
            if t >= steps - s:  # a recall step: its term of the mean cross-entropy
                logits = hs[t] @ w_out + b_out
                probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                probs[targets[b, t]] -= 1.0
                g = g + probs @ w_out.T / steps
            norms[b, t] = np.linalg.norm(g)
    np.testing.assert_allclose(got, norms, rtol=1e-4)


@pytest.mark.parametrize("name", ["gru_cho", "min_gru"])
def test_gate_preactivations_refuse_cells_without_a_fused_recurrent_projection(name):
    # gru_cho's recurrent projection is a pair, min_gru's None: `z_x + z_h` failed with a
    # TypeError about `+`, after running the whole trajectory.
    from rnn_jax import cells

    cell = cells.get_cell(name)
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), D_IN, H))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    with pytest.raises(ValueError, match=rf"{type(cell).__name__}\.recurrent_projection"):
        diagnostics.sigmoid_gate_preactivations(
            cell, params, jnp.zeros((B, H)), jnp.zeros((B, T, D_IN))
        )


def test_gru_gate_indices_name_the_cells_reset_and_update_gates():
    """GRU_SIGMOID_GATES against the PyTorch-form GRU cell itself: an update gate saturated at
    1 keeps h (h' = (1 - z) n + z h), whatever the reset gate does; swapped indices would
    report one gate's saturation under the other's name."""
    from rnn_jax import cells

    cell = cells.get_cell("gru")
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), D_IN, H))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    bias = np.zeros(3 * H, np.float32)
    for name, value in (("update", 30.0), ("reset", -30.0)):
        index, chunks = diagnostics.GRU_SIGMOID_GATES[name]
        assert chunks == 3
        bias[index * H : (index + 1) * H] = value
    params["b_ih"] = jnp.asarray(bias)
    h0, x = jnp.full((B, H), 0.5), jnp.ones((B, D_IN))
    h1, _ = cell.step(params, h0, x)
    np.testing.assert_allclose(h1, h0, atol=1e-6)  # swapped: update 0, h' = tanh(0) = 0
    pre = cell.input_projection(params, x) + cell.recurrent_projection(params, h0)
    stats = diagnostics.gate_saturation(pre, diagnostics.GRU_SIGMOID_GATES)
    assert float(stats["update"]["right"]) == float(stats["reset"]["left"]) == 1.0
