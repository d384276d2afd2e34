"""rnn_jax.loop_ops on compiled programs, and the structure of the fused scan's loops it shows.

Not timings: what each loop body runs per step. The fused scan must keep every `[time, ...]`
buffer it carries updated in place (one regression of that in session 1 made the reverse loop
copy a whole buffer every step, 3x slower at long), and on CPU its loops must run no more
instructions per step than Flax's `nn.RNN` of the same cell.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import throughput_peers
from rnn_jax import cells, layers, loop_ops, scan

BATCH, TIME, INPUT, HIDDEN = 8, 16, 32, 64  # TIME differs from every other dimension
LENGTHS = np.array([16, 3, 9, 16, 1, 12, 5, 16], np.int32)


def compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def grad_of_sum(forward):
    return jax.grad(lambda p, x: jnp.sum(forward(p, x)), argnums=(0, 1))


@functools.cache
def inputs():
    return jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))


def program(name, mode):
    """Compiled HLO text of rnn_jax's default scan, `mode` "fwd" or "fwd_bwd" (gradients of
    sum(outputs) w.r.t. params and inputs, as the benchmark)."""
    cell = cells.get_cell(name)
    params = cell.init(jax.random.key(0), INPUT, HIDDEN)

    def ours(p, x):
        return scan.unroll(cell, p, x)[0]

    return compiled_text(ours if mode == "fwd" else grad_of_sum(ours), params, inputs())


def test_reads_a_scan_and_finds_a_whole_buffer_rewrite():
    """A scan's outputs are written in place (no finding); a loop that rewrites its whole
    `[time, ...]` buffer every step is found, with its shape."""

    def scanned(xs):
        return jax.lax.scan(lambda c, x: (c + x, jnp.tanh(c * x)), xs[0], xs)[1]

    def rewrites(xs):
        return jax.lax.fori_loop(0, TIME, lambda t, buf: buf * 0.5 + buf[t], xs)

    xs = jnp.swapaxes(inputs(), 0, 1)  # [time, batch, input]
    good = compiled_text(scanned, xs)
    (body,) = loop_ops.loop_bodies(good)
    assert any(i.root == "dynamic-update-slice" and i.shapes == (xs.shape,) for i in body)
    assert loop_ops.whole_buffer_writes(good, TIME) == []
    assert loop_ops.ops_per_step(good) == [len(body)]
    found = loop_ops.whole_buffer_writes(compiled_text(rewrites, xs), TIME)
    assert found and all(i.shapes == (xs.shape,) for i in found)
    assert any(i.root == "add" for i in found)  # buf * 0.5 + buf[t], fused


# Hand-written HLO with what XLA:CPU's programs here do not show: a multi-output fusion whose
# tuple shape has TPU-tiled layouts, a fusion whose computation is not in the text, and a line
# that reads as no instruction. Nothing raises; what cannot be read is left out or has root "".
ODD_PROGRAM = """HloModule odd

%fused (p: f32[16,8]) -> (f32[16,8], f32[8]) {
  %p = f32[16,8]{1,0:T(8,128)} parameter(0)
  %s = f32[8]{0} reduce(%p), dimensions={0}
  ROOT %t = (f32[16,8]{1,0:T(8,128)}, f32[8]{0}) tuple(%p, %s)
}

%body (arg: (s32[], f32[16,8])) -> (s32[], f32[16,8]) {
  %arg = (s32[], f32[16,8]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %b = f32[16,8]{1,0} get-tuple-element(%arg), index=1
  %both = (f32[16,8]{1,0:T(8,128)}, f32[8]{0}) fusion(%b), kind=kLoop, calls=%fused
  %lost = f32[16,8]{1,0} fusion(%b), kind=kLoop, calls=%not_in_this_text
  %what is this line
  ROOT %r = (s32[], f32[16,8]{1,0}) tuple(%i, %lost)
}

ENTRY %main (a: f32[16,8]) -> f32[16,8] {
  %w = (s32[], f32[16,8]{1,0}) while(%t0), condition=%cond, body=%body
}
"""


def test_reads_what_it_can_of_an_unfamiliar_program():
    (body,) = loop_ops.loop_bodies(ODD_PROGRAM)
    assert body == [
        loop_ops.Instruction("both", ((16, 8), (8,)), "fusion", "tuple"),
        loop_ops.Instruction("lost", ((16, 8),), "fusion", ""),
    ]
    assert loop_ops.ops_per_step(ODD_PROGRAM) == [2]
    assert [i.name for i in loop_ops.whole_buffer_writes(ODD_PROGRAM, 16)] == ["both", "lost"]


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_fused_scan_updates_its_time_buffers_in_place(name, mode):
    ours = program(name, mode)
    assert len(loop_ops.loop_bodies(ours)) == (1 if mode == "fwd" else 2)
    assert loop_ops.whole_buffer_writes(ours, TIME) == []


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_padded_and_bidirectional_scans_update_in_place(name):
    cell = cells.get_cell(name)
    params = [cell.init(jax.random.key(k), INPUT, HIDDEN) for k in (0, 1)]

    def padded(p, x):
        return scan.unroll(cell, p[0], x, LENGTHS)[0]

    def bidirectional(p, x):
        return layers.bidirectional(cell, p[0], p[1], x, LENGTHS)[0]

    for forward in (padded, bidirectional):
        text = compiled_text(grad_of_sum(forward), params, inputs())
        assert loop_ops.whole_buffer_writes(text, TIME) == [], forward.__name__


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="per-step thunks are XLA:CPU's")
@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_no_more_ops_per_step_than_flax(name, mode):
    """On XLA:CPU each loop-body instruction is a thunk dispatched every step; the forward
    loops of both are two dots plus the gate fusions (LSTM: the same count), and the fused
    backward runs about half of Flax's autodiff per step. Counted on the benchmark's own
    workloads (Flax as its users call it)."""
    shape = (BATCH, TIME, INPUT, HIDDEN)
    ours, flax = (
        throughput_peers.build(backend, name, shape, mode).ops_per_step
        for backend in ("rnn_jax", "flax")
    )
    assert sum(ours) <= sum(flax), (ours, flax)
    if mode == "fwd_bwd":
        assert sum(ours) < 0.75 * sum(flax), (ours, flax)
