"""The scan engine on inputs the other scan tests do not reach: a bool or integer
recurrent-dropout mask under `jax.grad`, an empty batch, malformed arguments, a truncated
unroll at the sequence's end, bfloat16 inputs on the cuDNN path under float32 params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import bidirectional_scan, cells, scan, truncated_scan

BATCH, TIME, INPUT, HIDDEN = 2, 2, 3, 4


def _elman(batch=BATCH):
    """Elman cell, random params (drawn in numpy: `Cell.init` would compile) and inputs."""
    rng = np.random.default_rng(0)
    shapes = {
        "W_ih": (INPUT, HIDDEN),
        "W_hh": (HIDDEN, HIDDEN),
        "b_ih": (HIDDEN,),
        "b_hh": (HIDDEN,),
    }
    params = {k: jnp.asarray(rng.standard_normal(s) * 0.7, jnp.float32) for k, s in shapes.items()}
    xs = jnp.asarray(rng.standard_normal((batch, TIME, INPUT)), jnp.float32)
    return cells.get_cell("elman"), params, xs


def test_bool_and_integer_h_mask_differentiate_on_the_default_path():
    """A 0/1 recurrent-dropout mask given as bool or int multiplies `h` as the float mask
    does. On the fused (default) path `jax.grad` failed inside the custom VJP's backward
    pass ("a bytes-like object is required"), which differentiated w.r.t. the mask; the
    reference path took it. Gradients w.r.t. params, inputs and the initial carry now equal
    those of a per-step Python loop with the float mask, in one direction and in both."""
    cell, params, xs = _elman()
    keep = np.array([[1, 0, 1, 1], [0, 1, 1, 0]])
    initial = jnp.full((BATCH, HIDDEN), 0.5)

    def loss(ys, carry, ys_fw, ys_bw):
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(carry**2) + jnp.sum(ys_fw * ys_bw)

    def fused(params, xs, initial, masks):
        ys, carry = scan.unroll(cell, params, xs, None, initial, h_mask=masks[0])
        (ys_fw, ys_bw), _ = bidirectional_scan.bidirectional_unroll(
            cell, params, params, xs, None, (initial, initial), h_mask=masks
        )
        return loss(ys, carry, ys_fw, ys_bw)

    def loop(params, xs, initial, mask, steps):
        h, ys = initial, [None] * TIME
        for t in steps:
            z_h = cell.recurrent_projection(params, cell.mask_hidden(h, mask))
            h, ys[t] = cell.pointwise(params, cell.input_projection(params, xs[:, t]), z_h, h)
        return jnp.stack(ys, axis=1), h

    def python(params, xs, initial, mask):
        ys, carry = loop(params, xs, initial, mask, range(TIME))
        return loss(ys, carry, ys, loop(params, xs, initial, mask, reversed(range(TIME)))[0])

    mask = jnp.asarray(keep, jnp.float32)
    want = jax.jit(jax.grad(python, argnums=(0, 1, 2)))(params, xs, initial, mask)
    masks = (jnp.asarray(keep, bool), jnp.asarray(keep))
    got = jax.jit(jax.grad(fused, argnums=(0, 1, 2)))(params, xs, initial, masks)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_empty_batch_runs_and_differentiates():
    """`xs [0, time, input]` passes validation; its forward and gradient failed with
    ZeroDivisionError (a `reshape(..., -1)` of a zero-size array) on the reference path
    (remat and truncated BPTT share its line) and the gradient on the fused path, and the
    Pallas interpreter sliced a block out of an empty batch. Now outputs are
    `[0, time, hidden]` and every gradient is exactly zero."""
    cell, params, xs = _elman(batch=0)
    lengths, h_mask = jnp.zeros((0,), jnp.int32), jnp.ones((0, HIDDEN))

    def loss(params, implementation):
        ys, _ = scan.unroll(cell, params, xs, lengths, h_mask=h_mask, implementation=implementation)
        return jnp.sum(ys), ys.shape

    for implementation in ("reference", "fused"):
        grads, shape = jax.grad(loss, has_aux=True)(params, implementation)
        assert shape == (0, TIME, HIDDEN), implementation
        for g in jax.tree.leaves(grads):
            np.testing.assert_array_equal(g, 0.0, err_msg=implementation)
    assert loss(params, "pallas")[1] == (0, TIME, HIDDEN)


def test_malformed_arguments_are_named():
    """A single carry or mask where `bidirectional_unroll` takes a (forward, backward) pair
    failed with "too many values to unpack" (or, with a batch of 2, was split into rows);
    params of another size failed inside the scan with dot_general's or broadcasting's
    message; a bool `bptt_length` ran as 1."""
    gru = cells.get_cell("gru")
    gru_params = {"W_ih": jnp.zeros((INPUT, 12)), "W_hh": jnp.zeros((HIDDEN, 12))}
    gru_params.update({name: jnp.zeros(12) for name in ("b_ih", "b_hh")})
    xs = jnp.ones((3, TIME, INPUT))
    with pytest.raises(ValueError, match=r"initial_carry must be a \(forward, backward\) pair"):
        bidirectional_scan.bidirectional_unroll(
            gru, gru_params, gru_params, xs, initial_carry=jnp.zeros((3, 4))
        )
    with pytest.raises(ValueError, match=r"h_mask must be a \(forward, backward\) pair"):
        bidirectional_scan.bidirectional_unroll(
            gru, gru_params, gru_params, xs, h_mask=jnp.ones((2, HIDDEN))
        )
    wider = {"W_ih": jnp.zeros((INPUT, 15)), "W_hh": jnp.zeros((5, 15))}
    wider.update({name: jnp.zeros(15) for name in ("b_ih", "b_hh")})
    with pytest.raises(
        ValueError, match=r"params_fw sizes \(3, 4\) differ from params_bw sizes \(3, 5\)"
    ):
        bidirectional_scan.bidirectional_unroll(gru, gru_params, wider, xs)
    with pytest.raises(
        ValueError, match=r"params\['W_ih'\] has shape \(3, 13\); expected \(3, 12\)"
    ):
        scan.unroll(gru, {**gru_params, "W_ih": jnp.zeros((INPUT, 13))}, xs)
    cell, params, xs = _elman()
    for name, value, shape in (
        ("W_hh", jnp.ones((5, 5)), r"\(5, 5\); expected \(4, 4\)"),
        ("b_hh", params["b_hh"][:3], r"\(3,\); expected \(4,\)"),
    ):
        with pytest.raises(ValueError, match=rf"params\['{name}'\] has shape {shape}"):
            scan.unroll(cell, {**params, name: value}, xs)
    with pytest.raises(ValueError, match="bptt_length=True"):
        truncated_scan.truncated_unroll(cell, params, xs, True)
    # A cell's own params: a (1,) or batch-shaped peephole was broadcast silently, a (5,) one
    # failed naming no parameter, and a missing one was a bare KeyError.
    peephole = cells.get_cell("peephole_lstm")
    lstm_params = {"W_ih": jnp.zeros((INPUT, 4 * HIDDEN)), "W_hh": jnp.zeros((HIDDEN, 4 * HIDDEN))}
    lstm_params.update({name: jnp.zeros(4 * HIDDEN) for name in ("b_ih", "b_hh")})
    lstm_params.update({name: jnp.zeros(HIDDEN) for name in ("w_ci", "w_cf", "w_co")})
    for shape in ((1,), (BATCH, HIDDEN), (5,)):
        with pytest.raises(ValueError, match=rf"params\['w_ci'\] has shape \({shape[0]},"):
            scan.unroll(peephole, {**lstm_params, "w_ci": jnp.zeros(shape)}, xs)
    del lstm_params["w_co"]
    with pytest.raises(ValueError, match=r"params has no 'w_co', which PeepholeLSTM needs"):
        scan.unroll(peephole, lstm_params, xs)
    # The fused four too: a missing b_hh passed the checks (they were made only where
    # present) and failed inside the scan as a bare KeyError; min_gru has no W_hh or b_hh.
    for name in ("W_hh", "b_hh", "b_ih"):
        with pytest.raises(ValueError, match=rf"params has no '{name}', which Elman needs"):
            scan.unroll(cell, {k: v for k, v in params.items() if k != name}, xs)
    min_gru = cells.get_cell("min_gru")
    min_params = min_gru.init(jax.random.key(0), INPUT, HIDDEN)
    assert "W_hh" not in min_params
    scan.unroll(min_gru, min_params, xs)


def test_bidirectional_directions_keep_their_own_dtypes():
    """The one-scan pass stacked the two directions' params: a bfloat16 backward direction
    beside a float32 forward one ran in float32, and the other way round failed the scan's
    carry type check naming nothing. Each keeps its own dtype, as with two scans."""
    cell, params, xs = _elman()
    half = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    for fw, bw in ((params, half), (half, params)):
        (ys_fw, ys_bw), (h_fw, h_bw) = bidirectional_scan.bidirectional_unroll(cell, fw, bw, xs)
        assert [a.dtype for a in (ys_fw, h_fw)] == [fw["W_ih"].dtype] * 2
        assert [a.dtype for a in (ys_bw, h_bw)] == [bw["W_ih"].dtype] * 2


def test_truncated_unroll_does_not_scan_past_the_sequence():
    """`bptt_length >= T` is full BPTT (the docstring's own case), but the time axis was
    padded up to `bptt_length` and the padding scanned: bptt_length=1000 on T=2 ran a
    1000-step loop for 2 steps of work. The loop now has the sequence's length."""
    import re

    cell, params, xs = _elman()
    jaxpr = jax.make_jaxpr(lambda p: truncated_scan.truncated_unroll(cell, p, xs, 1000))(params)
    assert set(re.findall(r"length=(\d+)", str(jaxpr))) == {"1", str(TIME)}


def test_cudnn_path_takes_bfloat16_inputs_under_float32_params(monkeypatch):
    """bfloat16 inputs with float32 params run in float32 on every path (the carry takes the
    step's dtype); the "cudnn" path made its zero carry in the inputs' dtype and failed
    ("carry input and carry output must have equal types"). On CPU the kernel is
    `jax.experimental.rnn.lstm_ref`, as in test_cudnn_scan.py; outputs, final carry and
    gradients w.r.t. params and inputs now equal the reference scan's."""
    from test_cudnn_scan import ON_GPU, _lstm_ref_kernel

    from rnn_jax import cudnn_scan

    if ON_GPU:
        pytest.skip("CPU stand-in for the cuDNN kernel")
    rng = np.random.default_rng(1)
    shapes = {"W_ih": (INPUT, 16), "W_hh": (HIDDEN, 16), "b_ih": (16,), "b_hh": (16,)}
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    xs = jnp.asarray(rng.standard_normal((BATCH, TIME, INPUT)), jnp.bfloat16)
    lstm, lengths = cells.get_cell("lstm"), jnp.array([TIME, 1])
    monkeypatch.setattr(cudnn_scan, "lstm_kernel", _lstm_ref_kernel)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

    def loss(params, xs, implementation):
        ys, (h, c) = scan.unroll(lstm, params, xs, lengths, implementation=implementation)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(h * c), (ys, h, c)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
    got, want = grad(params, xs, "cudnn"), grad(params, xs, "reference")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-5
        )


def test_numpy_integer_unroll_and_bptt_length_are_ints():
    """A NumPy integer (`lengths.max()`, a size read from a config) is an int in every check of
    the library (`rnn_jax.predicates.is_int`); `unroll` and `bptt_length` refused it as not
    "a positive int". It now runs as the Python int would, on every entry point."""
    cell, params, xs = _elman()
    lengths = np.array([TIME, 1])
    runs = {
        "unroll": lambda p: scan.unroll(cell, p, xs, lengths, unroll=np.int64(2)),
        "bidirectional": lambda p: bidirectional_scan.bidirectional_unroll(
            cell, p, p, xs, lengths, unroll=np.int32(2)
        ),
        "truncated": lambda p: truncated_scan.truncated_unroll(
            cell, p, xs, lengths.max() // 2, lengths, unroll=np.int64(2)
        ),
    }
    for name, run in runs.items():
        jaxpr = str(jax.make_jaxpr(run)(params))
        assert "unroll=2" in jaxpr, name
    with pytest.raises(ValueError, match=r"unroll=np.int64\(0\) must be a positive int"):
        scan.unroll(cell, params, xs, unroll=np.int64(0))
    with pytest.raises(ValueError, match=r"bptt_length=np.True_ must be a positive int"):
        truncated_scan.truncated_unroll(cell, params, xs, np.True_)


def test_truncated_unroll_time_major_and_a_sequence_ending_at_a_window_boundary():
    """`truncated_unroll(time_major=True)` against a per-step Python loop that cuts the carry
    (`stop_gradient`) at each window start, for running sequences only: outputs, final carry
    and the gradient w.r.t. `xs`. Sequence 1 ends exactly at the first boundary, so its final
    carry keeps the gradient path into window 0 (cutting it there too would zero that part);
    `time_major` is not ignored (T=4 != batch=2); without lengths, the steps that pad
    the last window do not run."""
    cell, params, _ = _elman()
    time, bptt, lengths = 4, 2, np.array([4, 2])
    xs = jnp.asarray(np.random.default_rng(5).standard_normal((time, BATCH, INPUT)), jnp.float32)
    weights = jnp.cos(jnp.arange(time * BATCH * HIDDEN, dtype=jnp.float32)).reshape(
        time, BATCH, HIDDEN
    )

    def loss(ys, h):
        return jnp.sum(ys * weights) + jnp.sum(jnp.sin(h)), (ys, h)

    def loop(xs):
        h, ys, running = jnp.zeros((BATCH, HIDDEN)), [], jnp.asarray(lengths)
        for t in range(time):
            valid = (t < running)[:, None]
            if t and t % bptt == 0:
                h = jnp.where(valid, jax.lax.stop_gradient(h), h)
            new, y = cell.step(params, h, xs[t])
            h, ys = jnp.where(valid, new, h), ys + [jnp.where(valid, y, 0.0)]
        return loss(jnp.stack(ys), h)

    def truncated(xs):
        return loss(
            *truncated_scan.truncated_unroll(cell, params, xs, bptt, lengths, time_major=True)
        )

    (d_xs, (ys, h)), (want_d_xs, (want_ys, want_h)) = (
        jax.jit(jax.grad(f, has_aux=True))(xs) for f in (truncated, loop)
    )
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_xs, want_d_xs, rtol=1e-5, atol=1e-6)
    # No lengths, T=4 not a multiple of bptt_length=3: the steps padding the last window must
    # not run (the final carry is the one after step T-1).
    ys, h = truncated_scan.truncated_unroll(cell, params, xs, 3, time_major=True)
    want_h = jnp.zeros((BATCH, HIDDEN))
    for t in range(time):
        want_h, y = cell.step(params, want_h, xs[t])
        np.testing.assert_allclose(ys[t], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
