"""`rnn_jax.interop.from_torch` against PyTorch itself, with the same weights.

Outputs, final states and gradients (w.r.t. inputs, initial states and every parameter) must
agree within 1e-5 relative in float32 (relative to the largest entry of each tensor), across
cell types, layers, directions, layouts, biases and variable lengths (packed sequences).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (the [torch] extra)")

from rnn_jax import interop  # noqa: E402

BATCH, TIME, INPUT, HIDDEN = 3, 7, 4, 5
LENGTHS = [7, 3, 5]
RTOL = 1e-5


def assert_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL}"


def make_module(kind, **options):
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    return cls(INPUT, HIDDEN, **options).float().eval()


def torch_run(module, xs, lengths, initial, out_weights, state_weights):
    """torch outputs, final state and grads of sum(out * w) + sum(state * v)."""
    x = torch.tensor(xs, requires_grad=True)
    init = None
    if initial is not None:
        init = tuple(torch.tensor(s, requires_grad=True) for s in initial)
    module.zero_grad()
    arg = x
    if lengths is not None:
        arg = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
        )
    out, state = module(arg, init if init is None or len(init) == 2 else init[0])
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=module.batch_first, total_length=TIME
        )
    state = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.tensor(out_weights)).sum()
    pairs = zip(state, state_weights, strict=True)
    loss = loss + sum((s * torch.tensor(v)).sum() for s, v in pairs)
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return {
        "ys": out.detach().numpy(),
        "state": [s.detach().numpy() for s in state],
        "d_xs": x.grad.numpy(),
        "d_initial": None if init is None else [s.grad.numpy() for s in init],
        "d_params": grads,
    }


@functools.cache
def jax_grad_fn(apply_fn, is_lstm):
    def loss(params, xs, initial, lengths, out_weights, state_weights):
        ys, state = apply_fn(params, xs, lengths, initial)
        state = state if is_lstm else (state,)
        total = jnp.sum(ys * out_weights)
        total = total + sum(jnp.sum(s * v) for s, v in zip(state, state_weights, strict=True))
        return total, (ys, state)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


CASES = [
    ("lstm", dict(num_layers=2, bidirectional=True, batch_first=True), True, True),
    ("lstm", dict(num_layers=1, batch_first=False, bias=False), False, True),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=False), True, True),
    ("gru", dict(num_layers=1, batch_first=True), True, False),
    ("rnn", dict(num_layers=2, nonlinearity="relu", batch_first=True), True, True),
    ("rnn", dict(num_layers=1, bidirectional=True, nonlinearity="tanh", bias=False), True, False),
]


@pytest.mark.parametrize("kind,options,use_lengths,use_initial", CASES)
def test_outputs_states_and_gradients_match_torch(kind, options, use_lengths, use_initial):
    module = make_module(kind, **options)
    apply_fn, params = interop.from_torch(module)
    assert sorted(params) == sorted(name for name, _ in module.named_parameters())
    rng = np.random.default_rng(1)
    batch_first = options.get("batch_first", False)
    shape = (BATCH, TIME, INPUT) if batch_first else (TIME, BATCH, INPUT)
    xs = rng.standard_normal(shape).astype(np.float32)
    directions = 2 if options.get("bidirectional") else 1
    state_shape = (options["num_layers"] * directions, BATCH, HIDDEN)
    num_states = 2 if kind == "lstm" else 1
    initial = None
    if use_initial:
        initial = tuple(rng.standard_normal(state_shape).astype(np.float32) for _ in range(2))
        initial = initial[:num_states]
    lengths = LENGTHS if use_lengths else None
    out_shape = shape[:2] + (directions * HIDDEN,)
    out_weights = rng.standard_normal(out_shape).astype(np.float32)
    state_weights = [rng.standard_normal(state_shape).astype(np.float32) for _ in range(2)]
    state_weights = state_weights[:num_states]

    want = torch_run(module, xs, lengths, initial, out_weights, state_weights)
    jax_initial = None if initial is None else (initial if kind == "lstm" else initial[0])
    grads, (ys, state) = jax_grad_fn(apply_fn, kind == "lstm")(
        params,
        xs,
        jax_initial,
        None if lengths is None else jnp.array(lengths),
        out_weights,
        state_weights,
    )
    d_params, d_xs, d_initial = grads
    assert_close(ys, want["ys"], "outputs")
    for got, ref in zip(state, want["state"], strict=True):
        assert_close(got, ref, "final state")
    assert_close(d_xs, want["d_xs"], "d inputs")
    for name, ref in want["d_params"].items():
        assert_close(d_params[name], ref, f"d {name}")
    if initial is not None:
        d_initial = d_initial if kind == "lstm" else (d_initial,)
        for got, ref in zip(d_initial, want["d_initial"], strict=True):
            assert_close(got, ref, "d initial state")


def test_params_round_trip_to_torch():
    module = make_module("gru", num_layers=2)
    _, params = interop.from_torch(module)
    state = interop.to_torch_state_dict(jax.tree.map(lambda p: p * 2.0, params))
    module.load_state_dict(state)
    for name, tensor in module.named_parameters():
        np.testing.assert_array_equal(tensor.detach().numpy(), np.asarray(params[name]) * 2.0)


def test_unsupported_options_raise():
    with pytest.raises(ValueError, match="proj_size=3"):
        interop.from_torch(torch.nn.LSTM(INPUT, HIDDEN, proj_size=3))
    with pytest.raises(ValueError, match="module=Linear"):
        interop.from_torch(torch.nn.Linear(INPUT, HIDDEN))
    apply_fn, params = interop.from_torch(make_module("lstm", num_layers=2))
    xs = np.zeros((TIME, BATCH, INPUT), np.float32)
    bad = np.zeros((1, BATCH, HIDDEN), np.float32)
    with pytest.raises(ValueError, match=r"initial_state h_0 has shape \(1, 3, 5\)"):
        apply_fn(params, xs, initial_state=(bad, bad))
    # a batch or width of its own: `unroll` named the per-layer carries' [batch, hidden]
    # shapes, not initial_state; expected as torch's "Expected hidden[0] size (2, 3, 5)"
    good, narrow = np.zeros((2, BATCH, HIDDEN), np.float32), np.zeros((2, 1, HIDDEN), np.float32)
    for h, c, name in ((narrow, good, "h_0"), (good, good[..., :2], "c_0")):
        with pytest.raises(ValueError, match=rf"initial_state {name} has shape .*= \(2, 3, 5\)$"):
            apply_fn(params, xs, initial_state=(h, c))
    # A lone h_0 of the right shape [2, 3, 5]: tuple() split it into a "pair" of [3, 5] arrays
    # and the error named shape (3, 5), not the missing c_0.
    with pytest.raises(ValueError, match=r"pair \(h_0, c_0\); got one array of shape \(2, 3, 5\)"):
        apply_fn(params, xs, initial_state=np.zeros((2, BATCH, HIDDEN), np.float32))
    with pytest.raises(ValueError, match=r"must be \(h_0, c_0\); got 3 arrays"):
        apply_fn(params, xs, initial_state=(bad, bad, bad))
    # named in torch's terms (it was the transposed W_ih's shape, (2, 20))
    with pytest.raises(ValueError, match=rf"\(7, 3, 2\); its last axis must .* input_size={INPUT}"):
        apply_fn(params, np.zeros((TIME, BATCH, 2), np.float32))


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_inputs_are_refused_in_torch_layout(batch_first):
    """torch accepts an unbatched `[time, input]`; apply_fn refuses it naming the caller's
    shape and layout (it named the swapped `(4, 7)` and the batch-major layout before)."""
    apply_fn, params = interop.from_torch(make_module("gru", batch_first=batch_first))
    layout = r"\[batch, time, input\]" if batch_first else r"\[time, batch, input\]"
    with pytest.raises(ValueError, match=rf"xs has shape \(7, 4\); expected {layout}"):
        apply_fn(params, np.zeros((TIME, INPUT), np.float32))


def test_bfloat16_modules_convert_and_round_trip():
    """A bfloat16 torch module: `from_torch` failed in `.numpy()` ("unsupported ScalarType
    BFloat16") and `to_torch_state_dict` in `torch.from_numpy`; both now keep the values."""
    module = make_module("lstm", batch_first=True).to(torch.bfloat16)
    apply_fn, params = interop.from_torch(module)
    assert {p.dtype for p in params.values()} == {jnp.dtype(jnp.bfloat16)}
    xs = torch.randn(BATCH, TIME, INPUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _ = module(xs.to(torch.bfloat16))
    ys, _ = apply_fn(params, jnp.asarray(xs.numpy(), jnp.bfloat16))
    assert ys.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ys, np.float32), want.float().numpy(), atol=2e-2)
    state = interop.to_torch_state_dict(params)
    for name, tensor in module.named_parameters():
        assert state[name].dtype == torch.bfloat16
        assert torch.equal(state[name], tensor.detach())
    # bfloat16's range is float32's: a detour through float16 would flush 1e-30 to 0 and
    # overflow 3e38 to inf; the weights above are too tame to tell.
    extreme = torch.tensor([1e-30, 3e38, -2.5e-5], dtype=torch.bfloat16)
    back = interop.to_torch_state_dict({"w": interop._to_jax(extreme)})["w"]
    assert torch.equal(back, extreme)


def test_a_training_mode_module_with_dropout_warns():
    """apply_fn has evaluation semantics; torch in training mode drops between layers, so a
    comparison would differ with no hint why."""
    import warnings

    module = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    with pytest.warns(UserWarning, match=r"training mode.*module\.eval\(\)"):
        interop.from_torch(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own: dropout with num_layers=1 does nothing
        one_layer = torch.nn.LSTM(3, 4, num_layers=1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interop.from_torch(module.eval())
        interop.from_torch(torch.nn.LSTM(3, 4, num_layers=2))  # no dropout: nothing to warn about
        interop.from_torch(one_layer)  # training mode, but no layer to drop between
