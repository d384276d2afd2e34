"""The cuDNN LSTM path (rnn_jax.cudnn_scan): weight layout and the `unroll` contract.

cuDNN itself needs an NVIDIA GPU. On CPU the wrapper runs on `jax.experimental.rnn.lstm_ref`,
the pure-JAX reference of what `jax.experimental.rnn.lstm` computes on cuDNN (same flat weight
layout, same length semantics), and must equal our reference scan: outputs, final carries and
gradients. The last test compares the real cuDNN kernel with the fused scan and runs only on
a GPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn
from reference_numpy import random_like

from rnn_jax import bidirectional_scan, cells, cudnn_scan, scan

BATCH, TIME, INPUT, HIDDEN = 3, 7, 4, 5
LENGTHS = np.array([7, 3, 5], np.int32)
LSTM = cells.get_cell("lstm")
ON_GPU = jax.default_backend() == "gpu"


def lstm_params(seed, input_size=INPUT):
    return random_like(LSTM.init(jax.random.key(seed), input_size, HIDDEN), seed=seed + 10)


def inputs(seed=0, time_major=False):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    carry = tuple(rng.standard_normal((BATCH, HIDDEN)).astype(np.float32) for _ in range(2))
    return (np.swapaxes(xs, 0, 1) if time_major else xs), carry


def test_packing_is_jax_experimental_rnns_layout():
    """Two bidirectional layers: every matrix and bias lands where unpack_lstm_weights looks."""
    layers = [lstm_params(0), lstm_params(1)]
    layers += [lstm_params(2, 2 * HIDDEN), lstm_params(3, 2 * HIDDEN)]
    packed = cudnn_scan.pack_lstm_weights(layers)
    assert packed.shape == (rnn.get_num_params_in_lstm(INPUT, HIDDEN, 2, True),)
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, INPUT, HIDDEN, 2, True)
    for k, params in enumerate(layers):
        np.testing.assert_array_equal(W_ih[k], params["W_ih"].T)
        np.testing.assert_array_equal(W_hh[k], params["W_hh"].T)
        np.testing.assert_array_equal(b_ih[k], params["b_ih"])
        np.testing.assert_array_equal(b_hh[k], params["b_hh"])


def _lstm_ref_kernel(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, bidirectional):
    """lstm_ref, with outputs past each sequence's end non-zero: lstm_ref zeroes them itself,
    so the zeros `unroll` promises there would not show whether cudnn_scan makes them."""
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, bidirectional)
    y, h_n, c_n = rnn.lstm_ref(
        x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, 1, 0.0, bidirectional
    )
    valid = jnp.arange(x.shape[1])[None, :, None] < seq_lengths[:, None, None]
    return jnp.where(valid, y, 7.0), h_n, c_n


@pytest.fixture
def reference_kernel(monkeypatch):
    """cudnn_scan on lstm_ref, with the GPU check answered 'gpu' (CPU only)."""
    if ON_GPU:
        pytest.skip("on a GPU the real kernel is tested instead")
    monkeypatch.setattr(cudnn_scan, "lstm_kernel", _lstm_ref_kernel)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


def _loss(run, params, xs, initial):
    ys, carry = run(params, xs, initial)
    weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    total = jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))
    return total, (ys, carry)


@functools.cache
def _unroll_grads(implementation, time_major):
    def run(params, xs, initial):
        return scan.unroll(
            LSTM, params, xs, LENGTHS, initial, time_major=time_major, implementation=implementation
        )

    return jax.value_and_grad(functools.partial(_loss, run), argnums=(0, 1, 2), has_aux=True)


def assert_close(got, want, **tol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, **(tol or dict(rtol=2e-5, atol=2e-5)))


@pytest.mark.parametrize("time_major", [False, True])
def test_unroll_equals_the_reference_scan(reference_kernel, time_major):
    """Lengths (outputs zero past each end, carry at the last valid step), a given initial
    carry, and gradients through the packed weights back to the params dict."""
    params = lstm_params(0)
    xs, initial = inputs(time_major=time_major)
    got = _unroll_grads("cudnn", time_major)(params, xs, initial)
    want = _unroll_grads("reference", time_major)(params, xs, initial)
    assert_close(got, want)
    ys = got[0][1][0]
    padded = np.swapaxes(ys, 0, 1) if time_major else np.asarray(ys)
    assert np.all(padded[1, 3:] == 0)


def test_bidirectional_equals_two_reference_scans(reference_kernel):
    """cuDNN's backward direction reads each sequence from its last valid step, as ours.
    Each direction gets its own initial carry (the same one for both hid a swap)."""
    params = (lstm_params(0), lstm_params(1))
    xs, initial = inputs(seed=1)
    initial_bw = inputs(seed=2)[1]

    def loss(params, implementation):
        (ys_fw, ys_bw), carries = bidirectional_scan.bidirectional_unroll(
            LSTM, *params, xs, LENGTHS, (initial, initial_bw), implementation=implementation
        )
        total = jnp.sum(jnp.sin(ys_fw)) + jnp.sum(jnp.cos(ys_bw))
        return total + sum(jnp.sum(c) for c in jax.tree.leaves(carries)), (ys_fw, ys_bw, carries)

    grad = jax.value_and_grad(loss, has_aux=True)
    assert_close(grad(params, "cudnn"), grad(params, "reference"))


def test_without_lengths_every_step_is_valid(reference_kernel):
    """No lengths: the kernel is given every sequence's full length (forward values only)."""
    xs, initial = inputs(seed=3)
    got, want = (
        scan.unroll(LSTM, lstm_params(0), xs, None, initial, implementation=implementation)
        for implementation in ("cudnn", "reference")
    )
    assert_close(got, want)


def test_unsupported_cells_options_and_backends_are_named():
    xs, _ = inputs()
    params = lstm_params(0)
    if not ON_GPU:
        with pytest.raises(ValueError, match="needs an NVIDIA GPU.*'cpu'"):
            scan.unroll(LSTM, params, xs, implementation="cudnn")
    peephole = cells.get_cell("peephole_lstm")
    peephole_params = peephole.init(jax.random.key(0), INPUT, HIDDEN)
    with pytest.raises(ValueError, match="plain LSTM"):
        scan.unroll(peephole, peephole_params, xs, implementation="cudnn")
    with pytest.raises(ValueError, match="reverse=True"):
        scan.unroll(LSTM, params, xs, reverse=True, implementation="cudnn")
    with pytest.raises(ValueError, match="remat=True"):
        scan.unroll(LSTM, params, xs, remat=True, implementation="cudnn")
    with pytest.raises(ValueError, match="h_mask"):
        scan.unroll(LSTM, params, xs, h_mask=np.ones((BATCH, HIDDEN)), implementation="cudnn")


@pytest.mark.skipif(not ON_GPU, reason="cuDNN needs an NVIDIA GPU (jax.experimental.rnn)")
def test_cudnn_kernel_equals_the_fused_scan_on_gpu():
    """The real cuDNN kernel against our fused scan, both in IEEE float32 ("highest": cuDNN
    without TF32, `jax.experimental.rnn`'s `cudnn_allow_tf32=False`, and XLA's dots alike),
    so the tolerance covers summation order, not two TF32 roundings."""
    params = lstm_params(0)
    xs, initial = inputs()
    with jax.default_matmul_precision("highest"):
        got = _unroll_grads("cudnn", False)(params, xs, initial)
        want = _unroll_grads("fused", False)(params, xs, initial)
    assert_close(got, want, rtol=2e-3, atol=2e-3)


def test_dtypes_other_than_float32_are_refused_by_name(reference_kernel):
    """jax.experimental.rnn's cuDNN kernel is float32 only (CUDNN_DATA_FLOAT descriptors):
    bfloat16 params reached it and failed in its lowering ("Unknown output type"), float64
    ones would be read as float32. The stand-in kernel here takes any dtype, so the refusal
    must come from cudnn_scan itself. Each direction's params are checked before packing: a
    bfloat16 backward direction beside a float32 forward one was promoted to float32 in the
    packed vector, passed, and ran in float32 (the reference keeps it bfloat16)."""
    xs, initial = inputs()
    params = lstm_params(0)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"float32 LSTM only.*'x': 'bfloat16'"):
        scan.unroll(LSTM, params16, xs, LENGTHS, implementation="cudnn")
    with pytest.raises(ValueError, match=r"float32 LSTM only.*\"params_bw\['W_hh'\]\": 'bfloat16'"):
        bidirectional_scan.bidirectional_unroll(LSTM, params, params16, xs, implementation="cudnn")


def test_a_rocm_gpu_is_refused(reference_kernel, monkeypatch):
    """jax.experimental.rnn lowers to MIOpen on ROCm, whose layout pack_lstm_weights does not
    claim: the backend check names the platform instead of running it."""
    xs, _ = inputs()
    monkeypatch.setattr(cudnn_scan, "gpu_platform_version", lambda: "PJRT C API\nrocm 60300")
    with pytest.raises(ValueError, match="NVIDIA GPUs only.*rocm 60300"):
        scan.unroll(LSTM, lstm_params(0), xs, implementation="cudnn")
