"""The Pallas forward kernel (rnn_jax.pallas_scan) against the reference scan.

On CPU the kernel runs in Pallas's interpreter, which executes the kernel body as written
(block specs, the in-kernel time loop, padding of the batch to whole blocks), so outputs,
final carries and gradients (the fused scan's reverse loop over what the kernel saved) must
equal the reference scan's. That the same kernel compiles for an NVIDIA GPU is checked by
lowering it for CUDA through Pallas's Triton back end, which needs no GPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_harness
from reference_numpy import random_like

from rnn_jax import bidirectional_scan, cells, pallas_scan, scan

# A batch that is not a whole number of kernel blocks, sizes that are powers of two.
BATCH, TIME, INPUT, HIDDEN = 5, 6, 3, 8
LENGTHS = np.array([6, 2, 4, 1, 5], np.int32)
ON_GPU = jax.default_backend() == "gpu"
# On a GPU the comparisons run at "highest" matmul precision (IEEE float32 in Triton's and
# XLA's dots): at the default (TF32) the two paths' roundings differ by up to 7x this
# tolerance here (emulated on CPU for elman_relu and layer_norm_lstm), which is not a bug.
TOL = dict(rtol=2e-3, atol=2e-3) if ON_GPU else dict(rtol=2e-5, atol=2e-5)
KERNEL_CASES = ["elman", "elman_relu", "lstm", "peephole_lstm", "layer_norm_lstm"]


@pytest.fixture(autouse=True)
def _float32_matmuls_on_gpu():
    if not ON_GPU:
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


def setup(case, seed=0):
    return scan_harness.scan_case(case, seed, BATCH, TIME, INPUT, HIDDEN)


value_and_grads = scan_harness.value_and_grads


def assert_same(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_matches_reference_for_every_cell_it_takes(case):
    """Mixed lengths, a given initial carry and a recurrent dropout mask."""
    cell, params, xs, initial, h_mask = setup(case)
    args = (params, xs, initial, h_mask, cell, LENGTHS)
    assert_same(value_and_grads("pallas")(*args), value_and_grads("reference")(*args))


@pytest.mark.parametrize(
    "static", [dict(reverse=True), dict(time_major=True)], ids=["reverse", "time_major"]
)
def test_options_match_reference(static):
    cell, params, xs, initial, h_mask = setup("lstm", seed=3)
    if static.get("time_major"):
        xs = np.swapaxes(xs, 0, 1)
    args = (params, xs, initial, h_mask, cell, LENGTHS)
    assert_same(
        value_and_grads("pallas", **static)(*args), value_and_grads("reference", **static)(*args)
    )


def test_without_lengths_or_masks_and_in_the_bidirectional_layer():
    cell, params, xs, _, _ = setup("lstm", seed=5)
    params_bw = random_like(params, seed=9)
    ys, carry = scan.unroll(cell, params, xs, implementation="pallas")
    ys_ref, carry_ref = scan.unroll(cell, params, xs, implementation="reference")
    assert_same((ys, carry), (ys_ref, carry_ref))
    got = bidirectional_scan.bidirectional_unroll(
        cell, params, params_bw, xs, LENGTHS, implementation="pallas"
    )
    want = bidirectional_scan.bidirectional_unroll(
        cell, params, params_bw, xs, LENGTHS, implementation="reference"
    )
    assert_same(got, want)


def test_forward_saves_what_the_fused_loop_saves():
    """`carries[t]` is the carry step t read and `sums[t] = z_x_t + z_h_t`. Over two kernel
    blocks, the second part padding: every other test's batch fits one block, where block
    index maps that always read block 0 passed everything."""
    batch = pallas_scan.BLOCK_BATCH + 3
    cell, params, xs, initial, h_mask = scan_harness.scan_case(
        "lstm", 7, batch, TIME, INPUT, HIDDEN
    )
    xs_tm = jnp.swapaxes(xs, 0, 1)
    lengths = np.resize(LENGTHS, batch)
    mask = jnp.arange(TIME)[:, None] < lengths[None, :]
    final, ys, carries, sums = pallas_scan.forward_loop(
        cell, params, xs_tm, initial, mask, h_mask, reverse=False, save=True
    )
    carry = initial
    for t in range(TIME):
        assert_same(jax.tree.map(lambda c, t=t: c[t], carries), carry)
        seen = cell.mask_hidden(carry, h_mask)
        z = cell.input_projection(params, xs_tm[t]) + cell.recurrent_projection(params, seen)
        np.testing.assert_allclose(sums[t], z, **TOL)
        new, y = cell.pointwise(params, z, jnp.zeros_like(z), carry)
        valid = mask[t][:, None]
        carry = jax.tree.map(lambda n, o, v=valid: jnp.where(v, n, o), new, carry)
        np.testing.assert_allclose(ys[t], jnp.where(valid, y, 0), **TOL)
    assert_same(final, carry)


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_kernel_lowers_for_cuda_through_triton(case, monkeypatch):
    """Forward and backward lower for CUDA with the kernel compiled by Pallas's Triton back
    end (block shapes, the in-kernel loop and every op the cell uses must lower there)."""
    monkeypatch.setattr(pallas_scan, "INTERPRET", False)
    cell, params, xs, initial, h_mask = setup(case, seed=11)

    def loss(params, xs):
        ys, _ = scan.unroll(cell, params, xs, LENGTHS, implementation="pallas")
        return ys.sum()

    lowered = (
        jax.jit(jax.grad(loss, argnums=(0, 1)))
        .trace(params, xs)
        .lower(lowering_platforms=("cuda",))
    )
    text = lowered.as_text()
    assert "triton" in text.lower()
    assert f"rnn_jax_{type(cell).__name__.lower()}_forward" in text


def test_what_it_does_not_take_is_named_before_tracing(monkeypatch):
    gru, gru_params, xs, _, _ = setup("gru")
    with pytest.raises(ValueError, match="all additive"):
        scan.unroll(gru, gru_params, xs, implementation="pallas")
    lstm = cells.get_cell("lstm")
    odd = lstm.init(jax.random.key(0), INPUT, 6)
    with pytest.raises(ValueError, match="powers of two.*hidden_size=6"):
        scan.unroll(lstm, odd, xs, implementation="pallas")
    params = lstm.init(jax.random.key(0), INPUT, HIDDEN)
    # hidden_size <= MAX_HIDDEN: the bound itself is taken (a `>=` refused it unseen).
    monkeypatch.setattr(pallas_scan, "MAX_HIDDEN", HIDDEN)
    pallas_scan.check_supported(lstm, params)
    monkeypatch.setattr(pallas_scan, "MAX_HIDDEN", HIDDEN // 2)
    with pytest.raises(ValueError, match=f"hidden_size={HIDDEN} is over MAX_HIDDEN={HIDDEN // 2}"):
        scan.unroll(lstm, params, xs, implementation="pallas")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="remat"):
        scan.unroll(lstm, params, xs, remat=True, implementation="pallas")
    cifg = cells.get_cell("cifg_lstm")  # three gate slabs: a gate width of 24
    with pytest.raises(ValueError, match="gates=24"):
        scan.unroll(cifg, cifg.init(jax.random.key(0), INPUT, HIDDEN), xs, implementation="pallas")


def test_bfloat16_params_under_a_float32_carry(monkeypatch):
    """bfloat16 params with a float32 initial carry: an LSTM's step keeps the carry, and so
    its outputs, in float32 there. The kernel stored its outputs in `z_x`'s dtype (bfloat16),
    so they differed from the fused scan's and the backward pass failed on their dtype.
    (The backward pass is the fused scan's, over what the kernel saved.) In the interpreter
    on every backend: compiled by Triton, bfloat16 is refused by name (it failed in Triton's
    lowering of the sigmoid's division, "unsupported types: tensor<16x8xbf16>")."""
    cell, params, xs, initial, _ = setup("lstm", seed=13)
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    monkeypatch.setattr(pallas_scan, "INTERPRET", False)
    run = jax.jit(lambda p: scan.unroll(cell, p, xs, LENGTHS, initial, implementation="pallas"))
    with pytest.raises(ValueError, match=r"float32 kernels only.*'z': \['bfloat16'\]"):
        run.trace(params).lower(lowering_platforms=("cuda",))
    monkeypatch.setattr(pallas_scan, "INTERPRET", True)

    def loss(params, implementation):
        ys, carry = scan.unroll(cell, params, xs, LENGTHS, initial, implementation=implementation)
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + jnp.sum(carry[1]), ys

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, ys), grads = grad(params, "pallas")
    (_, ys_fused), grads_fused = grad(params, "fused")
    assert ys.dtype == ys_fused.dtype == jnp.float32
    got, want = jax.tree.leaves((ys, grads)), jax.tree.leaves((ys_fused, grads_fused))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=1e-2, atol=1e-2)
