"""Bidirectional and stacked layers against manual passes of the numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_numpy import as_tuple, random_like, run_sequence

from rnn_jax import cells, layers
from tests.layer_spy import layer_one_input_mask

BATCH, TIME, INPUT, HIDDEN = 3, 5, 4, 5
LENGTHS = np.array([5, 2, 4], np.int32)
TOL = dict(rtol=2e-5, atol=2e-5)
XS = np.random.default_rng(0).standard_normal((BATCH, TIME, INPUT)).astype(np.float32)


def random_stack(cell, input_size, num_layers, bidirectional, merge="concat", seed=0):
    params = layers.init_stack(
        jax.random.key(seed), cell, input_size, HIDDEN, num_layers,
        bidirectional=bidirectional, merge=merge,
    )  # fmt: skip
    return jax.tree.map(
        lambda leaf: jnp.asarray(leaf),
        [
            {d: random_like(p[d], seed + 10 * k + i) for i, d in enumerate(p)}
            if bidirectional
            else random_like(p, seed + 10 * k)
            for k, p in enumerate(params)
        ],
    )


def reference_direction(case, params, xs, lengths, reverse, mask=None):
    """Padded `[batch, time, hidden]` outputs and final states, one unpadded sequence at a
    time; the backward direction reads each sequence's valid part reversed."""
    ys = np.zeros((xs.shape[0], xs.shape[1], HIDDEN))
    finals = []
    for b in range(xs.shape[0]):
        n = int(lengths[b])
        seq = xs[b, :n][::-1] if reverse else xs[b, :n]
        out, state = run_sequence(case, params, seq, mask=None if mask is None else mask[b])
        ys[b, :n] = out[::-1] if reverse else out
        finals.append(state)
    return ys, finals


def reference_stack(case, params, xs, lengths, bidirectional, merge, residual):
    x = np.asarray(xs, np.float64)
    finals = []
    for k, p in enumerate(params):
        if bidirectional:
            y_fw, f_fw = reference_direction(case, p["fw"], x, lengths, False)
            y_bw, f_bw = reference_direction(case, p["bw"], x, lengths, True)
            y = np.concatenate([y_fw, y_bw], -1) if merge == "concat" else y_fw + y_bw
            finals.append((f_fw, f_bw))
        else:
            y, f = reference_direction(case, p, x, lengths, False)
            finals.append(f)
        x = y + x if residual and k > 0 and y.shape == x.shape else y
    return x, finals


def assert_finals(got, want):
    """got: jax carry with batch axis; want: list over batch of reference state tuples."""
    for b, state in enumerate(want):
        for g, w in zip(as_tuple(got), state, strict=True):
            np.testing.assert_allclose(g[b], w, **TOL)


@pytest.mark.parametrize(
    "case,merge,masked", [("lstm", "concat", False), ("gru", "sum", False), ("lstm", "sum", True)]
)
def test_bidirectional_equals_two_manual_passes(case, merge, masked):
    cell = cells.get_cell(case)
    fw = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), 1)
    bw = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), 2)
    masks = (
        tuple(
            layers.recurrent_dropout_masks(
                jax.random.key(3), 0.4, BATCH, HIDDEN, 1, bidirectional=True
            )[0]
        )
        if masked
        else (None, None)
    )
    ys, (c_fw, c_bw) = jax.jit(
        lambda fw, bw, xs, lengths, h_mask: layers.bidirectional(
            cell, fw, bw, xs, lengths, merge=merge, h_mask=h_mask
        )
    )(fw, bw, XS, LENGTHS, masks if masked else None)
    y_fw, f_fw = reference_direction(case, fw, XS, LENGTHS, False, masks[0])
    y_bw, f_bw = reference_direction(case, bw, XS, LENGTHS, True, masks[1])
    want = np.concatenate([y_fw, y_bw], -1) if merge == "concat" else y_fw + y_bw
    np.testing.assert_allclose(ys, want, **TOL)
    assert_finals(c_fw, f_fw)
    assert_finals(c_bw, f_bw)


@pytest.mark.parametrize(
    "case,bidirectional,merge,residual",
    [("lstm", True, "concat", False), ("gru", False, "concat", True), ("lstm", True, "sum", True)],
)
def test_stack_matches_layer_by_layer_reference(case, bidirectional, merge, residual):
    cell = cells.get_cell(case)
    params = random_stack(cell, INPUT, 3, bidirectional, merge)
    ys, finals = jax.jit(
        lambda params, xs, lengths: layers.apply_stack(
            cell, params, xs, lengths, bidirectional=bidirectional, merge=merge, residual=residual
        )
    )(params, XS, LENGTHS)
    want, ref_finals = reference_stack(case, params, XS, LENGTHS, bidirectional, merge, residual)
    np.testing.assert_allclose(ys, want, **TOL)
    for got, ref in zip(finals, ref_finals, strict=True):
        if bidirectional:
            assert_finals(got[0], ref[0])
            assert_finals(got[1], ref[1])
        else:
            assert_finals(got, ref)


def test_dropout_acts_between_layers_only_with_rng():
    cell = cells.get_cell("gru")
    params = random_stack(cell, INPUT, 2, False)
    rng, rate = jax.random.key(7), 0.5
    run = lambda rng: layers.apply_stack(cell, params, XS, LENGTHS, dropout_rate=rate, rng=rng)
    plain, _ = layers.apply_stack(cell, params, XS, LENGTHS)
    np.testing.assert_array_equal(run(None)[0], plain)
    # With an rng: layer 1 reads layer 0's output through an inverted-dropout mask.
    y0, _ = layers.apply_stack(cell, params[:1], XS, LENGTHS)
    keep = jax.random.bernoulli(jax.random.split(rng, 2)[1], 1 - rate, (y0.size,))
    keep = keep.reshape(y0.shape)
    y1, _ = layers.apply_stack(cell, params[1:], jnp.where(keep, y0 / (1 - rate), 0.0), LENGTHS)
    np.testing.assert_allclose(run(rng)[0], y1, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(run(rng)[0] - plain))) > 1e-3


def test_dropout_and_recurrent_masks_statistics():
    x = jnp.ones((200, 100))
    dropped = layers.dropout(jax.random.key(0), 0.3, x)
    values = np.unique(np.asarray(dropped))
    np.testing.assert_allclose(values, [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float(jnp.mean(dropped == 0)) - 0.3) < 0.02
    masks = layers.recurrent_dropout_masks(jax.random.key(1), 0.25, 4, 8, 2, bidirectional=True)
    assert len(masks) == 2 and all(len(pair) == 2 for pair in masks)
    flat = [m for pair in masks for m in pair]
    for m in flat:
        assert m.shape == (4, 8)
        assert set(np.unique(np.asarray(m)).tolist()) <= {0.0, np.float32(1 / 0.75)}
    assert len({np.asarray(m).tobytes() for m in flat}) == 4  # independent per layer/direction


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_bfloat16_recurrent_dropout_rounds_the_scaled_h_once(cell_name):
    """A bfloat16 carry's recurrent-dropout mask is float32 and `mask_hidden` gives a bfloat16
    h of bf16(h / (1 - rate)) computed in float32 (the mask was bfloat16: bf16(1/0.9) =
    1.109375, 0.16% low on every kept unit); dropped units are 0."""
    import ml_dtypes

    cell, rate = cells.get_cell(cell_name), 0.1
    (mask,) = layers.recurrent_dropout_masks(jax.random.key(0), rate, 64, 32, 1, dtype=jnp.bfloat16)
    assert mask.dtype == jnp.float32
    h = jax.random.normal(jax.random.key(1), (64, 32), jnp.bfloat16)
    masked = cell.output(cell.mask_hidden((h, h) if cell.is_lstm else h, mask))
    assert masked.dtype == jnp.bfloat16  # the recurrent matmul reads h's dtype, as unmasked
    kept = np.asarray(mask) != 0
    assert 0 < kept.sum() < kept.size and not np.asarray(masked, np.float32)[~kept].any()
    x = np.asarray(h, np.float32)[kept]
    expected = (x / np.float32(1 - rate)).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(masked)[kept], expected)


def test_stack_step_streams_the_stack():
    cell = cells.get_cell("lstm")
    params = random_stack(cell, INPUT, 2, False)
    ys, finals = layers.apply_stack(cell, params, XS, residual=True)
    carries = [cell.zero_carry((BATCH,), HIDDEN)] * 2
    step = jax.jit(lambda carries, x: layers.stack_step(cell, params, carries, x, residual=True))
    for t in range(TIME):
        carries, y = step(carries, XS[:, t])
        np.testing.assert_allclose(y, ys[:, t], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_stack_step_applies_apply_stacks_inter_layer_dropout():
    """With an rng, one step of `stack_step` is `apply_stack` over a one-step sequence with the
    same rng (the same per-layer masks: dropout draws flat); the first layer's input is
    never dropped, so a one-layer stack ignores the rng."""
    cell = cells.get_cell("gru")
    params = random_stack(cell, INPUT, 3, False)
    carries = [cell.zero_carry((BATCH,), HIDDEN)] * 3
    key = jax.random.key(5)
    ys, finals = layers.apply_stack(
        cell, params, XS[:, :1], dropout_rate=0.5, residual=True, rng=key
    )
    stepped, y = layers.stack_step(
        cell, params, carries, XS[:, 0], residual=True, dropout_rate=0.5, rng=key
    )
    np.testing.assert_allclose(y, ys[:, 0], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(stepped), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    _, evaluated = layers.stack_step(cell, params, carries, XS[:, 0], residual=True)
    assert float(jnp.max(jnp.abs(evaluated - y))) > 1e-3
    one = params[:1]
    _, a = layers.stack_step(cell, one, carries[:1], XS[:, 0], dropout_rate=0.5, rng=key)
    _, b = layers.stack_step(cell, one, carries[:1], XS[:, 0])
    np.testing.assert_array_equal(a, b)


def test_layer_errors():
    cell = cells.get_cell("lstm")
    params = random_stack(cell, INPUT, 2, False)
    with pytest.raises(ValueError, match=r"merge='mean'; allowed: concat, sum"):
        layers.apply_stack(cell, params, XS, merge="mean")
    with pytest.raises(ValueError, match=r"dropout_rate=1.0; allowed"):
        layers.apply_stack(cell, params, XS, dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"dropout_rate=-0.1; allowed: 0 <= rate < 1"):
        layers.stack_step(cell, params, [None, None], XS[:, 0], dropout_rate=-0.1)
    with pytest.raises(ValueError, match=r"recurrent dropout rate=1.0; allowed: 0 <= rate < 1"):
        layers.recurrent_dropout_masks(jax.random.key(0), 1.0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"h_masks has 1 entries; expected num_layers=2"):
        layers.apply_stack(cell, params, XS, h_masks=[None])
    with pytest.raises(ValueError, match=r"params\[0\] has keys \['W_hh'.*bidirectional=True"):
        layers.apply_stack(cell, params, XS, bidirectional=True)
    with pytest.raises(ValueError, match=r"num_layers=0"):
        layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, 0)


@pytest.mark.parametrize("locked", [False, True])
def test_locked_dropout_between_layers_draws_one_mask_per_sequence(monkeypatch, locked):
    """`locked=True`: layer 1 reads layer 0's output times one `[batch, 1, features]`
    inverted-dropout mask, the same at every step (Gal & Ghahramani 2016, AWD-LSTM's
    `dropouth`), different across sequences and features; without it the mask changes over
    time."""
    cell = cells.get_cell("lstm")
    params = random_stack(cell, INPUT, 2, False)
    xs = np.random.default_rng(1).standard_normal((6, 12, INPUT)).astype(np.float32)
    run = lambda: layers.apply_stack(
        cell, params, xs, dropout_rate=0.5, locked=locked, rng=jax.random.key(3)
    )
    mask = layer_one_input_mask(monkeypatch, run)
    assert set(np.unique(mask).tolist()) == {0.0, 2.0}
    constant_over_time = np.all(mask == mask[:, :1])
    assert constant_over_time == locked
    first = mask[:, 0]
    assert len({row.tobytes() for row in first}) > 1  # differs across sequences
    assert len({col.tobytes() for col in first.T}) > 1  # ... and across features
    # Without an rng (evaluation) nothing is dropped, locked or not.
    plain, _ = layers.apply_stack(cell, params, xs)
    evaluated, _ = layers.apply_stack(cell, params, xs, dropout_rate=0.5, locked=True)
    np.testing.assert_array_equal(evaluated, plain)


def test_rnn_step_refuses_a_locked_inter_layer_mask():
    from flax import nnx

    from rnn_jax.modules import RNN

    rnn = RNN(
        "gru", INPUT, HIDDEN, num_layers=2, dropout=0.5, locked_dropout=True, rngs=nnx.Rngs(0)
    )
    carries = rnn.zero_carry(BATCH)
    rnn.step(carries, XS[:, 0])  # evaluation: no mask, allowed
    with pytest.raises(ValueError, match="locked_dropout"):
        rnn.step(carries, XS[:, 0], rng=jax.random.key(0))


def test_step_refuses_what_it_cannot_stream():
    """A bidirectional layer in `stack_step` (it used to fail inside the cell with a KeyError)
    and `RNN.step` with an rng under recurrent dropout (its per-sequence mask on h was
    silently left out, so a stack trained step by step got none)."""
    from flax import nnx

    from rnn_jax.modules import RNN

    cell = cells.get_cell("lstm")
    params = layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, 2, bidirectional=True)
    carries = [cell.zero_carry((BATCH,), HIDDEN)] * 2
    with pytest.raises(ValueError, match="layer 0 is bidirectional"):
        layers.stack_step(cell, params, carries, jnp.ones((BATCH, INPUT)))
    rnn = RNN("gru", INPUT, HIDDEN, num_layers=2, recurrent_dropout=0.3, rngs=nnx.Rngs(0))
    x = jnp.ones((BATCH, INPUT))
    with pytest.raises(ValueError, match="recurrent_dropout=0 \\(got 0.3\\)"):
        rnn.step(rnn.zero_carry(BATCH), x, rng=jax.random.key(1))
    rnn.step(rnn.zero_carry(BATCH), x)  # evaluation streams as before


def test_init_stack_draws_each_layer_and_direction_from_its_own_key():
    """A key shared by the two directions (or by layers of one shape) gave them identical
    weights: a bidirectional layer whose halves start as one function."""
    cell = cells.get_cell("lstm")
    params = layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, 3, bidirectional=True)
    recurrent = [np.asarray(p[d]["W_hh"]) for p in params for d in ("fw", "bw")]
    assert len({w.tobytes() for w in recurrent}) == 6
