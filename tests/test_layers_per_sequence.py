"""The composition layer against a per-sequence loop reference: bidirectional layers and
stacks on every cell and scan path (given initial carries, recurrent masks, time-major,
remat), the NNX `RNN`'s step API against its scanned call; and the layers' argument checks
(layer counts, dropout rates and shapes, stack carries and params, half-precision dropout
scaled once from float32)."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from reference_numpy import CASES, LSTM_LIKE, as_tuple, random_like, run_sequence

from rnn_jax import cells, layers
from rnn_jax.modules import RNN

BATCH, TIME, INPUT, HIDDEN = 3, 6, 5, 5


LENGTHS = np.array([6, 2, 4], np.int32)


XS = np.random.default_rng(0).standard_normal((BATCH, TIME, INPUT)).astype(np.float32)


TOL = dict(rtol=1e-5, atol=1e-5)


def _cell(case):
    name, options = CASES[case]
    return cells.get_cell(name, **options)


def _random_carry(case, seed):
    """A random `[batch, hidden]` carry in the cell's layout, and the same as a state tuple."""
    rng = np.random.default_rng(seed)
    parts = tuple(
        rng.standard_normal((BATCH, HIDDEN)).astype(np.float32)
        for _ in range(2 if case in LSTM_LIKE else 1)
    )
    return (parts if len(parts) == 2 else parts[0]), parts


def loop_direction(case, params, xs, lengths, reverse, initial=None, mask=None):
    """One sequence at a time, unpadded: the backward direction reads `xs[b, :n]` reversed,
    starting from its initial state at position n - 1; its outputs are written back at the
    positions they read. Outputs past `n` stay zero."""
    ys = np.zeros((xs.shape[0], xs.shape[1], HIDDEN))
    finals = []
    for b in range(xs.shape[0]):
        n = int(lengths[b])
        seq = xs[b, :n][::-1] if reverse else xs[b, :n]
        start = None if initial is None else tuple(part[b] for part in initial)
        out, state = run_sequence(
            case, params, seq, initial=start, mask=None if mask is None else mask[b]
        )
        ys[b, :n] = out[::-1] if reverse else out
        finals.append(state)
    return ys, finals


def assert_finals(got, want):
    for b, state in enumerate(want):
        for g, w in zip(as_tuple(got), state, strict=True):
            np.testing.assert_allclose(np.asarray(g)[b], w, **TOL)


@pytest.mark.parametrize("implementation", ["reference", "fused"])
@pytest.mark.parametrize("case", ["elman_relu", "peephole_lstm", "cifg_lstm", "gru_cho", "min_gru"])
def test_bidirectional_with_initial_carries_and_masks_equals_a_per_sequence_loop(
    case, implementation
):
    """Both merges, both scan paths, given initial carries (the backward one enters at each
    sequence's own last position, not at the padded end) and per-sequence recurrent masks."""
    cell = _cell(case)
    fw = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), 1)
    bw = random_like(cell.init(jax.random.key(0), INPUT, HIDDEN), 2)
    (carry_fw, init_fw), (carry_bw, init_bw) = _random_carry(case, 3), _random_carry(case, 4)
    masks = None
    if cell.has_recurrent_weights:
        rng = np.random.default_rng(5)
        masks = tuple((rng.random((BATCH, HIDDEN)) > 0.3).astype(np.float32) / 0.7 for _ in "ab")
    y_fw, f_fw = loop_direction(case, fw, XS, LENGTHS, False, init_fw, masks and masks[0])
    y_bw, f_bw = loop_direction(case, bw, XS, LENGTHS, True, init_bw, masks and masks[1])
    for merge, want in (("concat", np.concatenate([y_fw, y_bw], -1)), ("sum", y_fw + y_bw)):
        ys, (got_fw, got_bw) = layers.bidirectional(
            cell, fw, bw, XS, LENGTHS, merge=merge, initial_carry=(carry_fw, carry_bw),
            h_mask=masks, implementation=implementation,
        )  # fmt: skip
        np.testing.assert_allclose(ys, want, **TOL)
        for b, n in enumerate(LENGTHS):
            np.testing.assert_array_equal(np.asarray(ys)[b, n:], 0.0)
        assert_finals(got_fw, f_fw)
        assert_finals(got_bw, f_bw)


@pytest.mark.parametrize(
    "bidirectional,merge,time_major,remat",
    [(True, "concat", True, False), (True, "sum", False, True), (False, "concat", True, True)],
)
def test_stack_with_per_layer_initial_carries_equals_a_per_sequence_loop(
    bidirectional, merge, time_major, remat
):
    """Three layers, residual from layer 1 up, each layer starting from its own given carry."""
    case = "lstm"
    cell = _cell(case)
    params = layers.init_stack(
        jax.random.key(0), cell, INPUT, HIDDEN, 3, bidirectional=bidirectional, merge=merge
    )
    params = [
        {d: random_like(p[d], 10 * k + i) for i, d in enumerate(p)}
        if bidirectional
        else random_like(p, 10 * k)
        for k, p in enumerate(params)
    ]
    carries = [
        (_random_carry(case, 2 * k), _random_carry(case, 2 * k + 1))
        if bidirectional
        else _random_carry(case, 2 * k)
        for k in range(3)
    ]
    given = [(c[0][0], c[1][0]) if bidirectional else c[0] for c in carries]
    xs = np.swapaxes(XS, 0, 1) if time_major else XS
    ys, finals = layers.apply_stack(
        cell, params, xs, LENGTHS, given, bidirectional=bidirectional, merge=merge,
        residual=True, time_major=time_major, remat=remat,
    )  # fmt: skip
    ys = np.swapaxes(np.asarray(ys), 0, 1) if time_major else np.asarray(ys)
    x = XS.astype(np.float64)
    for k, (p, carry) in enumerate(zip(params, carries, strict=True)):
        if bidirectional:
            y_fw, f_fw = loop_direction(case, p["fw"], x, LENGTHS, False, carry[0][1])
            y_bw, f_bw = loop_direction(case, p["bw"], x, LENGTHS, True, carry[1][1])
            y = np.concatenate([y_fw, y_bw], -1) if merge == "concat" else y_fw + y_bw
            assert_finals(finals[k][0], f_fw)
            assert_finals(finals[k][1], f_bw)
        else:
            y, f = loop_direction(case, p, x, LENGTHS, False, carry[1])
            assert_finals(finals[k], f)
        x = y + x if k > 0 and y.shape == x.shape else y
    np.testing.assert_allclose(ys, x, **TOL)


@pytest.mark.parametrize("cell", ["elman", "gru_cho", "layer_norm_lstm", "cifg_lstm"])
def test_rnn_step_by_step_equals_the_scanned_call_with_a_learned_initial_carry(cell):
    model = RNN(
        cell, INPUT, HIDDEN, num_layers=3, residual=True, learned_initial_carry=True,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    rng = np.random.default_rng(1)
    for p in model.initial_carry:
        p[...] = jnp.asarray(rng.standard_normal(p[...].shape), jnp.float32)
    ys, finals = model(XS)
    carries = model.zero_carry(BATCH)
    # The learned carry is what both paths start from (ignored in both, they still agree).
    for got, p in zip(jax.tree.leaves(carries), model.initial_carry, strict=True):
        np.testing.assert_array_equal(got, np.broadcast_to(p[...], (BATCH, HIDDEN)))
    for t in range(TIME):
        carries, y = model.step(carries, XS[:, t])
        np.testing.assert_allclose(y, ys[:, t], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_num_layers_follows_the_librarys_integer_rule():
    """`True` was a one-layer stack, a NumPy integer (a size read from a config or a shape)
    was refused: `rnn_jax.predicates.is_int` is the one rule."""
    cell = cells.get_cell("gru")
    with pytest.raises(ValueError, match="num_layers=True must be a positive int"):
        layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, True)
    with pytest.raises(ValueError, match="num_layers=True must be a positive int"):
        RNN("gru", INPUT, HIDDEN, num_layers=True, rngs=nnx.Rngs(0))
    params = layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, np.int64(2))
    assert len(params) == 2
    assert RNN("gru", INPUT, HIDDEN, num_layers=np.int32(2), rngs=nnx.Rngs(0)).num_layers == 2


@pytest.mark.parametrize("rate", [-0.2, 1.0, 1.5, float("nan")])
def test_dropout_refuses_a_rate_outside_0_1(rate):
    """A negative rate scaled every element down by 1/(1 - rate) and dropped none; rate 1
    gave zeros whose gradient was NaN (0 * 1/0)."""
    x = jnp.ones((4, 3, 2))
    with pytest.raises(ValueError, match=rf"dropout rate={rate!r}; allowed: 0 <= rate < 1"):
        layers.dropout(jax.random.key(0), rate, x)
    with pytest.raises(ValueError, match=rf"dropout rate={rate!r}; allowed: 0 <= rate < 1"):
        layers.locked_dropout(jax.random.key(0), rate, x)


def test_locked_dropout_needs_batch_time_features():
    """A `[batch, features]` input broadcast against the `[batch, 1, features]` mask to
    `[batch, batch, features]`, silently."""
    with pytest.raises(ValueError, match=r"locked_dropout needs x \[batch, time, features\]"):
        layers.locked_dropout(jax.random.key(0), 0.5, jnp.ones((4, 8)))
    out = layers.locked_dropout(jax.random.key(0), 0.5, jnp.ones((4, 3, 8)))
    assert out.shape == (4, 3, 8)
    # one mask per sequence, shared over time (and not one mask shared by the whole batch)
    np.testing.assert_array_equal(out, jnp.broadcast_to(out[:, :1], out.shape))
    assert len({tuple(np.asarray(row) != 0) for row in out[:, 0]}) > 1


def test_stack_step_names_a_carry_count_that_does_not_match_the_stack():
    cell = cells.get_cell("gru")
    params = layers.init_stack(jax.random.key(0), cell, INPUT, HIDDEN, 2)
    carries = [cell.zero_carry((BATCH,), HIDDEN)]
    with pytest.raises(ValueError, match="stack_step: 1 carries for a stack of 2 layers"):
        layers.stack_step(cell, params, carries, jnp.ones((BATCH, INPUT)))


def test_an_empty_stack_is_refused():
    """`apply_stack` with no layers returned `xs` itself as the stack's output."""
    cell = cells.get_cell("gru")
    with pytest.raises(ValueError, match="apply_stack: params is empty"):
        layers.apply_stack(cell, [], jnp.ones((BATCH, TIME, INPUT)))
    with pytest.raises(ValueError, match="stack_step: params is empty"):
        layers.stack_step(cell, [], [], jnp.ones((BATCH, INPUT)))


def test_recurrent_dropout_on_a_cell_without_recurrent_weights_is_refused_when_built():
    """minGRU has no recurrent matmul for a mask on h: the module was built and failed only on
    its first training call, naming `h_mask`, an argument the user never gave."""
    with pytest.raises(ValueError, match=r"recurrent_dropout=0.3 needs a cell with recurrent"):
        RNN("min_gru", INPUT, HIDDEN, recurrent_dropout=0.3, rngs=nnx.Rngs(0))
    RNN("min_gru", INPUT, HIDDEN, dropout=0.3, num_layers=2, rngs=nnx.Rngs(0))


def test_bfloat16_dropout_rounds_the_scaled_value_once():
    """Kept units are `x / (1 - rate)` rounded once to bfloat16 (numpy float32, then one
    cast). The factor was computed in bfloat16, 1/bf16(0.9) = 1/0.8984375: 33% of the kept
    units one ulp off and their mean 0.18% high at rate 0.1 (float16 had the same flaw);
    locked dropout multiplied by a bfloat16 mask."""
    rate = 0.1
    x32 = np.random.default_rng(0).standard_normal((4, 8, 64)).astype(np.float32)
    x = jnp.asarray(x32, jnp.bfloat16)
    exact = np.asarray(x, np.float32) / np.float32(1.0 - rate)
    want = exact.astype(ml_dtypes.bfloat16).astype(np.float32)
    for drop in (layers.dropout, layers.locked_dropout):
        got = jax.jit(drop, static_argnums=1)(jax.random.key(1), rate, x)
        assert got.dtype == jnp.bfloat16
        got = np.asarray(got, np.float32)
        kept = got != 0.0
        assert 0.8 < kept.mean() < 0.97
        np.testing.assert_array_equal(got[kept], want[kept])


def test_a_single_cells_params_dict_is_refused_as_a_stack():
    """`apply_stack(cell, cell.init(...), xs)` iterated the dict's keys as layers and failed
    inside the scan with "string indices must be integers"; `stack_step` counted its four
    entries as four layers."""
    cell = cells.get_cell("gru")
    params = {"W_ih": np.zeros((3, 12)), "W_hh": np.zeros((4, 12)), "b_ih": np.zeros(12)}
    xs = np.ones((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"apply_stack: params is one cell's params dict"):
        layers.apply_stack(cell, params, xs)
    with pytest.raises(ValueError, match=r"apply_stack: params is one cell's params dict"):
        layers.apply_stack(cell, {"fw": params, "bw": params}, xs, bidirectional=True)
    with pytest.raises(ValueError, match=r"stack_step: params is one cell's params dict"):
        layers.stack_step(cell, params, [np.zeros((2, 4))], xs[:, 0])
