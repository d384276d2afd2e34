"""Review 21 of the composition layer and small utilities: a per-sequence loop reference for
bidirectional layers and stacks on every cell and scan path (given initial carries, recurrent
masks, time-major, remat), the NNX `RNN`'s step API against its scanned call, statistical
checks of the initialisers, and the argument checks of layers, allocator and linalg."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from reference_numpy import CASES, LSTM_LIKE, as_tuple, random_like, run_sequence

from rnn_jax import allocator, cells, initializers, layers, linalg
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
    for t in range(TIME):
        carries, y = model.step(carries, XS[:, t])
        np.testing.assert_allclose(y, ys[:, t], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---- argument checks --------------------------------------------------------------------------


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
    # one mask per sequence, shared over time
    np.testing.assert_array_equal(out, jnp.broadcast_to(out[:, :1], out.shape))


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


def test_trim_threshold_follows_the_librarys_integer_rule(monkeypatch):
    """`True` was a 1-byte trim threshold; a NumPy integer was refused. (libc is reported as
    not glibc here, so nothing is applied to this process, even with the check removed.)"""
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", ""))
    with pytest.raises(ValueError, match="trim_threshold=True"):
        allocator.retain_freed_memory(True)
    assert allocator.retain_freed_memory(np.int64(2**20)) is False


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 3, 3)])
def test_qr_and_singular_values_take_batches_of_empty_matrices(shape):
    """A batch of empty matrices failed with ZeroDivisionError (a reshape to `(-1, 0, n)`)."""
    a = jnp.zeros(shape)
    for got, want in zip(
        jax.tree.leaves((linalg.qr(a), linalg.singular_values(a))),
        jax.tree.leaves((jnp.linalg.qr(a), jnp.linalg.svd(a, compute_uv=False))),
        strict=True,
    ):
        assert got.shape == want.shape


# ---- initialisers: statistics with fixed keys and large samples ---------------------------------


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
