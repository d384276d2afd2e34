"""`unroll`, `truncated_unroll` and the linear scan against independent references; the linear
recurrence's methods agree on dtypes and refuse mismatched shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference_numpy import CASES, as_tuple, random_like, run_sequence

from rnn_jax import cells, linear_scan, scan, truncated_scan

BATCH, TIME, INPUT, HIDDEN = 3, 5, 4, 5
LENGTHS = np.array([5, 2, 4], np.int32)
TOL = dict(rtol=2e-5, atol=2e-5)


def setup(case, seed=0):
    name, options = CASES[case]
    cell = cells.get_cell(name, **options)
    params = random_like(cell.init(jax.random.key(seed), INPUT, HIDDEN), seed=seed + 1)
    xs = np.random.default_rng(seed + 2).standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    return cell, params, xs


@functools.cache
def jitted_unroll(**static):
    return jax.jit(
        lambda cell, params, xs, lengths, initial, h_mask: scan.unroll(
            cell, params, xs, lengths, initial, h_mask=h_mask, **static
        ),
        static_argnums=0,
    )


def check_against_reference(case, ys, carry, params, xs, lengths, reverse, initial=None, mask=None):
    """Each sequence run alone, unpadded (reversed if `reverse`), by the numpy reference."""
    for b in range(BATCH):
        n = int(lengths[b])
        seq = xs[b, :n][::-1] if reverse else xs[b, :n]
        init_b = None if initial is None else tuple(s[b] for s in as_tuple(initial))
        mask_b = None if mask is None else mask[b]
        ref_ys, ref_state = run_sequence(case, params, seq, init_b, mask_b)
        np.testing.assert_allclose(ys[b, :n], ref_ys[::-1] if reverse else ref_ys, **TOL)
        np.testing.assert_array_equal(ys[b, n:], 0.0)  # exactly zero past the end
        for got, want in zip(as_tuple(carry), ref_state, strict=True):
            np.testing.assert_allclose(got[b], want, **TOL)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("implementation", ["reference", "auto"])
def test_lengths_and_reverse_match_one_by_one_reference(case, reverse, implementation):
    """Both the reference scan and the default ("auto") one, for every cell."""
    cell, params, xs = setup(case)
    run = jitted_unroll(reverse=reverse, implementation=implementation)
    ys, carry = run(cell, params, xs, LENGTHS, None, None)
    check_against_reference(case, np.asarray(ys), carry, params, xs, LENGTHS, reverse)


def test_flip_sequences_reverses_each_valid_part_and_keeps_padding_in_place():
    """`[time, batch, ...]` with non-zero padding: each sequence's valid part reversed, the
    positions past it unmoved (so the map is its own inverse); inside `unroll` the padding is
    masked, so a padding position read from the wrong place would not show there."""
    xs = np.arange(1, TIME * BATCH * 2 + 1, dtype=np.float32).reshape(TIME, BATCH, 2)
    flipped = np.asarray(scan.flip_sequences(jnp.asarray(xs), jnp.asarray(LENGTHS)))
    for b, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(flipped[:, b], np.concatenate([xs[:n, b][::-1], xs[n:, b]]))
    np.testing.assert_array_equal(scan.flip_sequences(flipped, jnp.asarray(LENGTHS)), xs)
    np.testing.assert_array_equal(scan.flip_sequences(xs, None), xs[::-1])


@pytest.mark.parametrize("case", ["lstm", "gru_cho", "min_gru"])
def test_initial_carry_and_full_lengths(case):
    cell, params, xs = setup(case, seed=3)
    initial = jax.tree.map(
        lambda z: jnp.asarray(np.random.default_rng(9).standard_normal(z.shape), jnp.float32),
        cell.zero_carry((BATCH,), HIDDEN),
    )
    full = np.full((BATCH,), TIME, np.int32)
    ys, carry = jitted_unroll()(cell, params, xs, None, initial, None)
    check_against_reference(case, np.asarray(ys), carry, params, xs, full, False, initial)


@pytest.mark.parametrize("case", ["lstm", "gru", "gru_cho", "elman"])
def test_h_mask_is_variational_dropout_on_recurrent_input(case):
    cell, params, xs = setup(case, seed=4)
    rng = np.random.default_rng(11)
    mask = ((rng.random((BATCH, HIDDEN)) > 0.3) / 0.7).astype(np.float32)
    ys, carry = jitted_unroll()(cell, params, xs, LENGTHS, None, mask)
    check_against_reference(case, np.asarray(ys), carry, params, xs, LENGTHS, False, mask=mask)


@pytest.mark.parametrize("case", ["lstm", "min_gru"])
def test_unroll_options_do_not_change_results(case):
    """unroll factor, time-major layout and remat give the same values and gradients."""
    cell, params, xs = setup(case, seed=5)

    def loss(params, xs, **options):
        time_major = options.get("time_major", False)
        xs_in = jnp.swapaxes(xs, 0, 1) if time_major else xs
        ys, carry = scan.unroll(cell, params, xs_in, LENGTHS, reverse=True, **options)
        ys = jnp.swapaxes(ys, 0, 1) if time_major else ys
        weights = jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) / ys.size
        return jnp.sum(ys * weights) + jnp.sum(cell.output(carry))

    base_value, base_grads = jax.jit(jax.value_and_grad(loss, (0, 1)))(params, xs)
    for options in [dict(unroll=3, time_major=True), dict(remat=True)]:
        value, grads = jax.jit(jax.value_and_grad(functools.partial(loss, **options), (0, 1)))(
            params, xs
        )
        np.testing.assert_allclose(value, base_value, rtol=1e-5, err_msg=str(options))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(base_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=str(options))


@pytest.mark.parametrize("case", ["lstm", "gru_cho", "min_gru"])
def test_gradients_match_finite_differences(case):
    """check_grads in float64 (x64 enabled only inside this test) through lengths + reverse."""
    with jax.enable_x64(True):
        cell, params32, xs32 = setup(case, seed=6)
        params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params32)
        xs = jnp.asarray(xs32, jnp.float64)[:, :4]
        lengths = jnp.array([4, 1, 3])
        f = jax.jit(
            lambda params, xs: scan.unroll(cell, params, xs, lengths, reverse=True, remat=True)[0]
        )
        check_grads(f, (params, xs), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_linear_scan_associative_equals_sequential(monkeypatch):
    rng = np.random.default_rng(7)
    a = jnp.asarray(rng.uniform(0.2, 1.0, (2, 13, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((2, 13, 3)), jnp.float32)
    h0 = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    ref = np.zeros((2, 13, 3))
    h = np.asarray(h0, np.float64)
    for t in range(13):
        h = np.asarray(a[:, t]) * h + np.asarray(b[:, t])
        ref[:, t] = h

    @functools.partial(jax.jit, static_argnums=0)
    def run(method, a, b, h0):
        """States batch-major and time-major, and gradients of a nonlinear loss."""
        hs = linear_scan.linear_recurrence(a, b, h0, method=method)
        swap = lambda v: jnp.swapaxes(v, 0, 1)
        hs_tm = linear_scan.linear_recurrence(swap(a), swap(b), h0, method=method, time_axis=0)
        loss = lambda *args: jnp.sum(jnp.sin(linear_scan.linear_recurrence(*args, method=method)))
        return hs, swap(hs_tm), jax.grad(loss, (0, 1, 2))(a, b, h0)

    hs_seq, tm_seq, g_seq = run("sequential", a, b, h0)
    hs_assoc, tm_assoc, g_assoc = run("associative", a, b, h0)
    for hs, tm in ((hs_seq, tm_seq), (hs_assoc, tm_assoc)):
        np.testing.assert_allclose(hs, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tm, hs, rtol=1e-6)
    for x, y in zip(g_seq, g_assoc, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # "auto" by backend, each backend answered here (on CPU alone an "auto" that always
    # chose "sequential" passed).
    for backend, expected in (
        ("cpu", "sequential"),
        ("gpu", "associative"),
        ("tpu", "associative"),
    ):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert linear_scan.resolve_method("auto") == expected, backend


@pytest.mark.parametrize("reverse", [False, True])
def test_min_gru_associative_unroll_equals_sequential(reverse):
    cell_seq, params, xs = setup("min_gru", seed=8)
    cell_assoc = cells.get_cell("min_gru", method="associative")

    def run(cell, params):
        return scan.unroll(cell, params, xs, LENGTHS, reverse=reverse)

    (ys_s, c_s), (ys_a, c_a) = run(cell_seq, params), run(cell_assoc, params)
    np.testing.assert_allclose(ys_a, ys_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_a, c_s, rtol=1e-5, atol=1e-6)
    grads = [
        jax.grad(lambda p, c=c: jnp.sum(run(c, p)[0] ** 2))(params) for c in (cell_seq, cell_assoc)
    ]
    for x, y in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_truncated_bptt_matches_chunk_by_chunk_reference():
    cell, params, xs = setup("lstm", seed=9)
    xs = np.concatenate([xs, xs[:, ::-1]], axis=1)  # T = 10, bptt 4 -> chunks 4, 4, 2
    lengths = jnp.array([10, 3, 7])
    bptt = 4
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((BATCH, 10, HIDDEN)))

    def loss(params):
        ys, carry = truncated_scan.truncated_unroll(cell, params, xs, bptt, lengths)
        return jnp.sum(ys * weights) + jnp.sum(cell.output(carry)), ys

    (value, ys), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    full_ys, _ = scan.unroll(cell, params, xs, lengths)
    np.testing.assert_allclose(ys, full_ys, rtol=1e-5, atol=1e-6)

    # Reference: chunk k's loss from its (constant) incoming carry, run with an unpadded
    # Python loop of cell.step per sequence, gradients summed over chunks.
    total = jax.tree.map(jnp.zeros_like, params)
    carries = [cell.zero_carry((), HIDDEN) for _ in range(BATCH)]
    for start in range(0, 10, bptt):
        for b in range(BATCH):
            stop = min(start + bptt, int(lengths[b]))
            if stop <= start:
                continue

            def chunk_loss(params, b=b, start=start, stop=stop):
                carry, out = carries[b], 0.0
                for t in range(start, stop):
                    carry, y = cell.step(params, carry, xs[b, t])
                    out = out + jnp.sum(y * weights[b, t])
                if stop == int(lengths[b]):
                    out = out + jnp.sum(cell.output(carry))
                return out, carry

            chunk_grads, carries[b] = jax.grad(chunk_loss, has_aux=True)(params)
            total = jax.tree.map(jnp.add, total, chunk_grads)
    for name in params:
        np.testing.assert_allclose(grads[name], total[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # Truncation matters: the full-BPTT gradient differs.
    full = jax.grad(lambda p: jnp.sum(scan.unroll(cell, p, xs, lengths)[0] * weights))(params)
    assert float(jnp.max(jnp.abs(full["W_hh"] - grads["W_hh"]))) > 1e-4


def test_truncated_bptt_trains_the_given_initial_carry_through_the_first_chunk():
    """Only carries passed from chunk to chunk are cut: the given initial carry gets the first
    chunk's gradient (a learned initial state), and with one chunk truncation is full BPTT."""
    cell, params, xs = setup("gru", seed=10)
    initial = jnp.asarray(np.random.default_rng(3).standard_normal((BATCH, HIDDEN)), jnp.float32)
    lengths = jnp.asarray(LENGTHS)

    def grads(run):
        return jax.grad(lambda p, x, c: jnp.sum(run(p, x, c)[0] ** 2), argnums=(0, 1, 2))(
            params, xs, initial
        )

    full = grads(lambda p, x, c: scan.unroll(cell, p, x, lengths, c))
    whole = grads(lambda p, x, c: truncated_scan.truncated_unroll(cell, p, x, TIME, lengths, c))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    bptt = 2
    _, _, d_initial = grads(
        lambda p, x, c: truncated_scan.truncated_unroll(cell, p, x, bptt, lengths, c)
    )
    first = jax.grad(
        lambda c: jnp.sum(
            scan.unroll(cell, params, xs[:, :bptt], lengths.clip(max=bptt), c)[0] ** 2
        )
    )(initial)
    np.testing.assert_allclose(d_initial, first, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(d_initial))) > 1e-3


@pytest.mark.parametrize(
    "path",
    ["reference", "remat", "truncated", "bidirectional_reference"],
)
def test_low_precision_inputs_with_float32_params_on_every_path(path):
    """bfloat16 inputs with float32 params: the carry takes the step's dtype (float32) on every
    path, as on the default one; a zero carry in the inputs' dtype failed inside lax.scan."""
    from rnn_jax import layers

    cell, params, xs = setup("lstm", seed=11)
    xs16 = jnp.asarray(xs, jnp.bfloat16)
    lengths = jnp.asarray(LENGTHS)
    if path == "bidirectional_reference":
        expected = layers.bidirectional(cell, params, params, xs16, lengths)[0]
        ys = layers.bidirectional(cell, params, params, xs16, lengths, implementation="reference")[
            0
        ]
    else:
        expected = scan.unroll(cell, params, xs16, lengths)[0]
        if path == "truncated":
            ys = truncated_scan.truncated_unroll(cell, params, xs16, 2, lengths)[0]
        else:
            options = {"remat": True} if path == "remat" else {"implementation": "reference"}
            ys = scan.unroll(cell, params, xs16, lengths, **options)[0]
    assert expected.dtype == ys.dtype == jnp.float32
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-6)


def test_remat_cuts_backward_temp_memory_at_4096_steps():
    """XLA's temp buffer estimate of forward+backward at T = 4096 falls >= 4x with remat
    against plain autodiff of the scan, and >= 3x against the fused default (which itself
    keeps only one [T, B, 4H] buffer, reused for the gate gradients: 3.6x measured)."""
    cell = cells.get_cell("lstm")
    params = cell.init(jax.random.key(0), 8, 32)
    xs = jax.ShapeDtypeStruct((4, 4096, 8), jnp.float32)

    def temp_bytes(remat, implementation="auto"):
        def loss(p, xs):
            ys, _ = scan.unroll(cell, p, xs, remat=remat, implementation=implementation)
            return jnp.sum(ys**2)

        compiled = jax.jit(jax.grad(loss)).lower(params, xs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    remat = temp_bytes(True)
    for implementation, factor in (("auto", 3), ("reference", 4)):
        plain = temp_bytes(False, implementation)
        assert plain >= factor * remat, (implementation, plain, remat)


def test_bad_arguments_raise_before_tracing():
    cell, params, xs = setup("lstm")
    cases = [
        (dict(xs=xs[..., :3]), r"feature size 3 .* input_size=4"),
        (dict(xs=xs[0]), r"shape \(5, 4\); expected \[batch, time, features\]"),
        (dict(lengths=np.array([5, 0, 2])), r"lengths contains \[0\]; allowed: 1 <= length"),
        (dict(lengths=np.array([5, -1, 2])), r"lengths contains \[-1\]"),
        (dict(lengths=np.array([6, 2, 2])), r"lengths contains \[6\].*time=5"),
        (dict(lengths=np.array([5, 2])), r"lengths has shape \(2,\); expected \[batch\]"),
        (dict(lengths=np.array([5.0, 2, 2])), "lengths has dtype float"),
        (
            dict(implementation="triton"),
            r"implementation=.triton.; allowed: auto, reference, fused, cudnn, pallas",
        ),
        (dict(unroll=0), "unroll=0"),
        (dict(xs=xs[:, :0]), r"xs has an empty time axis: xs.shape=\(3, 0, 4\)"),
        (dict(h_mask=np.ones((3, 4))), r"h_mask has shape \(3, 4\); expected"),
        (dict(initial_carry=np.zeros((3, 5))), "initial_carry has shapes"),
    ]
    for override, message in cases:
        args = dict(xs=xs, lengths=None) | override
        with pytest.raises(ValueError, match=message):
            scan.unroll(cell, params, **args)
    with pytest.raises(ValueError, match="h_mask is not allowed for min_gru"):
        min_cell, min_params, _ = setup("min_gru")
        scan.unroll(min_cell, min_params, xs, h_mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match="bptt_length=0"):
        truncated_scan.truncated_unroll(cell, params, xs, 0)
    with pytest.raises(ValueError, match="must be an rnn_jax.cells.Cell"):
        scan.unroll("lstm", params, xs)
    # Plain Python lengths are fine.
    np.testing.assert_array_equal(
        scan.unroll(cell, params, xs, [5, 2, 4])[0], scan.unroll(cell, params, xs, LENGTHS)[0]
    )


def test_linear_recurrence_methods_agree_on_dtypes_and_refuse_mismatched_shapes():
    """A float32 h0 under float64 a, b failed inside lax.scan for "sequential" and ran for
    "associative"; a [1, features] h0 was broadcast over the batch by "associative" only."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.2, 1.0, (2, 5, 3)), rng.standard_normal((2, 5, 3))
    h0 = rng.standard_normal((2, 3)).astype(np.float32)
    h, reference = h0.astype(np.float64), []
    for t in range(5):
        h = a[:, t] * h + b[:, t]
        reference.append(h)
    with jax.enable_x64(True):
        for method in ("sequential", "associative"):
            hs = linear_scan.linear_recurrence(a, b, h0, method=method)
            assert hs.dtype == jnp.float64
            np.testing.assert_allclose(hs, np.stack(reference, axis=1), rtol=1e-12)
            with pytest.raises(ValueError, match=r"h0 \(1, 3\)"):
                linear_scan.linear_recurrence(a, b, h0[:1], method=method)
            with pytest.raises(ValueError, match=r"time_axis=2; allowed: 0 \(time-major\)"):
                linear_scan.linear_recurrence(a, b, h0, method=method, time_axis=2)
            with pytest.raises(ValueError, match="method='parallel'; allowed: auto, sequential"):
                linear_scan.linear_recurrence(a, b, h0, method="parallel")
            empty = linear_scan.linear_recurrence(a[:, :0], b[:, :0], h0, method=method)
            assert empty.shape == (2, 0, 3)
            # h0 the widest of the three: its dtype is the states' (h0 is not rounded to a
            # and b's float32 first).
            a32, b32, h64 = a.astype(np.float32), b.astype(np.float32), h0 / np.float64(3)
            wide = linear_scan.linear_recurrence(a32, b32, h64, method=method)
            assert wide.dtype == jnp.float64
            np.testing.assert_allclose(wide[:, 0], a32[:, 0] * h64 + b32[:, 0], rtol=1e-12)
