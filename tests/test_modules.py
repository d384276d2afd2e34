"""The Flax NNX `RNN` module: same numbers as the pure core and the numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from reference_numpy import run_sequence

from rnn_jax import layers, scan
from rnn_jax.modules import RNN

BATCH, TIME, INPUT, HIDDEN = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 4], np.int32)
XS = np.random.default_rng(0).standard_normal((BATCH, TIME, INPUT)).astype(np.float32)


def test_single_layer_matches_numpy_reference():
    model = RNN("gru_cho", INPUT, HIDDEN, forget_bias=0.5, rngs=nnx.Rngs(0))
    ys, (final,) = model(XS, LENGTHS)
    (params,) = model.params
    for b in range(BATCH):
        n = LENGTHS[b]
        ref_ys, (ref_h,) = run_sequence("gru_cho", params, XS[b, :n])
        np.testing.assert_allclose(ys[b, :n], ref_ys, rtol=2e-5, atol=2e-5)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        np.testing.assert_allclose(final[b], ref_h, rtol=2e-5, atol=2e-5)


def test_module_calls_the_pure_stack():
    model = RNN(
        "lstm", INPUT, HIDDEN, num_layers=2, bidirectional=True, merge="sum", residual=True,
        rngs=nnx.Rngs(1),
    )  # fmt: skip
    ys, finals = nnx.jit(lambda m, xs, lengths: m(xs, lengths))(model, XS, LENGTHS)
    want, want_finals = layers.apply_stack(
        model.cell, model.params, XS, LENGTHS, bidirectional=True, merge="sum", residual=True
    )
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(finals), jax.tree.leaves(want_finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert ys.shape == (BATCH, TIME, HIDDEN)


@pytest.mark.parametrize("cell", ["lstm", "min_gru"])
def test_streaming_step_equals_full_forward(cell):
    model = RNN(cell, INPUT, HIDDEN, num_layers=2, residual=True, rngs=nnx.Rngs(2))
    ys, finals = model(XS)
    step = nnx.jit(lambda m, carries, x: m.step(carries, x))
    carries = model.zero_carry(BATCH)
    for t in range(TIME):
        carries, y = step(model, carries, XS[:, t])
        np.testing.assert_allclose(y, ys[:, t], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_stepping_a_padded_batch_with_active_rows_equals_the_call_with_lengths():
    """`step` had no lengths: stepping a padded batch advanced each row past its end, so its
    carry was not `__call__(xs, lengths)`'s final carry. `active = t < lengths` keeps it."""
    model = RNN("lstm", INPUT, HIDDEN, num_layers=2, residual=True, rngs=nnx.Rngs(2))
    ys, finals = model(XS, LENGTHS)
    step = nnx.jit(lambda m, carries, x, active: m.step(carries, x, active=active))
    carries = model.zero_carry(BATCH)
    for t in range(TIME):
        carries, y = step(model, carries, XS[:, t], t < LENGTHS)
        np.testing.assert_allclose(y, ys[:, t], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"active has shape \(2,\).*bool \[batch\]"):
        model.step(carries, XS[:, 0], active=np.array([True, False]))
    with pytest.raises(ValueError, match="dtype int"):
        model.step(carries, XS[:, 0], active=LENGTHS)


def test_learned_initial_carry_is_trained_and_used():
    model = RNN("lstm", INPUT, HIDDEN, learned_initial_carry=True, rngs=nnx.Rngs(3))
    assert [p[...].shape for p in model.initial_carry] == [(HIDDEN,)] * 2  # h0, c0
    for p in model.initial_carry:  # it starts at zero (documented)
        np.testing.assert_array_equal(p[...], 0.0)
    model.initial_carry[0][...] = jnp.linspace(-1, 1, HIDDEN)  # h0
    model.initial_carry[1][...] = jnp.linspace(1, -1, HIDDEN)  # c0
    ys, _ = model(XS, LENGTHS)
    h0 = jnp.broadcast_to(jnp.linspace(-1, 1, HIDDEN), (BATCH, HIDDEN))
    c0 = jnp.broadcast_to(jnp.linspace(1, -1, HIDDEN), (BATCH, HIDDEN))
    want, _ = scan.unroll(model.cell, model.params[0], XS, LENGTHS, (h0, c0))
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    # A given initial carry (a window of truncated BPTT) replaces the learned one.
    given, _ = model(XS, LENGTHS, [(c0, h0)])
    want, _ = scan.unroll(model.cell, model.params[0], XS, LENGTHS, (c0, h0))
    np.testing.assert_allclose(given, want, rtol=1e-6, atol=1e-6)
    grads = nnx.grad(lambda m: jnp.sum(m(XS, LENGTHS)[0] ** 2))(model)
    assert all(float(jnp.max(jnp.abs(g[...]))) > 0 for g in grads["initial_carry"].values())


def test_dropouts_need_an_rng_and_train_step_runs(monkeypatch):
    model = RNN(
        "gru", INPUT, HIDDEN, num_layers=2, dropout=0.3, recurrent_dropout=0.3, rngs=nnx.Rngs(4)
    )
    eval_a, _ = model(XS, LENGTHS)
    eval_b, _ = model(XS, LENGTHS)
    np.testing.assert_array_equal(eval_a, eval_b)
    train, _ = model(XS, LENGTHS, rng=jax.random.key(0))
    assert float(jnp.max(jnp.abs(train - eval_a))) > 1e-3
    np.testing.assert_array_equal(np.asarray(train)[1, 2:], 0.0)
    # The inter-layer dropout acts on its own (recurrent masks all ones): the rng reached it.
    masks = layers.recurrent_dropout_masks
    ones = lambda *a, **k: jax.tree.map(jnp.ones_like, masks(*a, **k))  # noqa: E731
    monkeypatch.setattr(layers, "recurrent_dropout_masks", ones)
    inter_layer_only, _ = model(XS, LENGTHS, rng=jax.random.key(0))
    assert float(jnp.max(jnp.abs(inter_layer_only - eval_a))) > 1e-3
    monkeypatch.undo()

    # The training runtime's pattern: split, jit a pure function of the state, merge.
    graphdef, state = nnx.split(model)

    def loss(state, xs, rng):
        return jnp.mean(nnx.merge(graphdef, state)(xs, LENGTHS, rng=rng)[0] ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = value_and_grad(state, XS, jax.random.key(1))
    state = jax.tree.map(lambda p, g: p - 0.5 * g, state, grads)
    assert float(value_and_grad(state, XS, jax.random.key(1))[0]) < float(value)


def test_module_errors():
    with pytest.raises(ValueError, match="unknown cell name='lstn'"):
        RNN("lstn", INPUT, HIDDEN, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"dropout=1.5; allowed"):
        RNN("lstm", INPUT, HIDDEN, dropout=1.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown initialiser name='orthogonl'"):
        RNN("lstm", INPUT, HIDDEN, recurrent_init="orthogonl", rngs=nnx.Rngs(0))
    model = RNN("lstm", INPUT, HIDDEN, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="step needs bidirectional=False"):
        model.step(model.zero_carry(BATCH), XS[:, 0])


@pytest.mark.parametrize("learned", [False, True])
def test_zero_and_learned_carries_take_the_params_dtype(learned):
    """`zero_carry` (and the learned initial carry) in the dtype the step computes: with
    bfloat16-only params, float32 zeros made `step` run in float32 beside a bfloat16
    `__call__`; under float64 params a float32 learned carry failed inside lax.scan."""
    model = RNN(
        "lstm", INPUT, HIDDEN, num_layers=2, learned_initial_carry=learned,
        dtype=jnp.bfloat16, rngs=nnx.Rngs(5),
    )  # fmt: skip
    xs = jnp.asarray(XS, jnp.bfloat16)
    ys, finals = model(xs)
    assert model(XS)[0].dtype == jnp.bfloat16  # the params set the dtype, not xs (documented)
    carries = model.zero_carry(BATCH)
    assert {c.dtype for c in jax.tree.leaves(carries)} == {jnp.dtype(jnp.bfloat16)}
    for t in range(TIME):
        carries, y = model.step(carries, xs[:, t])
        assert y.dtype == ys.dtype == jnp.bfloat16
        got, want = np.asarray(y, np.float32), np.asarray(ys[:, t], np.float32)
        np.testing.assert_allclose(got, want, rtol=0, atol=8e-3)  # one bfloat16 ulp at 1
    with jax.enable_x64(True):
        model = RNN(
            "gru", INPUT, HIDDEN, bidirectional=True, learned_initial_carry=learned,
            dtype=jnp.float64, rngs=nnx.Rngs(6),
        )  # fmt: skip
        ys, finals = model(jnp.asarray(XS, jnp.float64), LENGTHS)
        assert ys.dtype == jnp.float64
        assert {c.dtype for c in jax.tree.leaves(finals)} == {jnp.dtype(jnp.float64)}


def test_recurrent_dropout_mask_has_the_carry_dtype(monkeypatch):
    """float32 params over bfloat16 inputs keep a float32 carry; the mask was drawn in the
    inputs' bfloat16, scaling kept units by 1.4296875 instead of 1/0.7 = 1.4285714. A
    bidirectional stack draws one mask per direction (a flat list of masks reached the
    backward scan as one array, refused there), from a key of its own: the inter-layer
    dropout's rng is another split of the call's rng (the same key would draw correlated
    masks)."""
    drawn, keys = [], {}
    original, original_stack = layers.recurrent_dropout_masks, layers.apply_stack

    def spy(*args, **kwargs):
        keys["masks"] = args[0]
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    def stack_spy(*args, **kwargs):
        keys["stack"] = kwargs["rng"]
        return original_stack(*args, **kwargs)

    monkeypatch.setattr(layers, "recurrent_dropout_masks", spy)
    monkeypatch.setattr(layers, "apply_stack", stack_spy)
    rnn = RNN("lstm", 3, 4, bidirectional=True, recurrent_dropout=0.3, rngs=nnx.Rngs(0))
    xs = jnp.ones((2, 5, 3), jnp.bfloat16)
    ys, _ = rnn(xs, rng=jax.random.key(1))
    ((mask_fw, mask_bw),) = drawn[0]
    assert not np.array_equal(mask_fw, mask_bw)
    for mask in (mask_fw, mask_bw):
        assert mask.dtype == jnp.float32
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0.0, float(np.float32(1 / 0.7))}
    masks_key, stack_key = (jax.random.key_data(keys[k]) for k in ("masks", "stack"))
    assert not np.array_equal(masks_key, stack_key)
    # The drawn masks reach the stack (a mask drawn but not passed on left h unmasked).
    want, _ = original_stack(rnn.cell, rnn.params, xs, h_masks=drawn[0], bidirectional=True)
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ys, rnn(xs)[0], rtol=1e-3, atol=1e-3)
