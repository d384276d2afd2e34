"""The workloads the throughput benchmark times: rnn_jax's scans and the peers, as users run them.

Each builder returns a `Workload`: one call that runs a forward ("fwd") or a
forward+backward ("fwd_bwd": gradients of sum(outputs) w.r.t. parameters *and* inputs) and
blocks until it is done, plus its FLOPs and, for JAX, compile time and XLA memory estimate.

- rnn_jax:      `scan.unroll(implementation="auto")` (the default path); `rnn_jax_reference`
                is `implementation="reference"` (plain `lax.scan` + autodiff), for context;
                `rnn_jax_remat` is `unroll(remat=True)` (O(sqrt T) memory; fwd_bwd only);
                `rnn_jax_cudnn` is `implementation="cudnn"` (LSTM on cuDNN through
                jax.experimental.rnn) and `rnn_jax_pallas` `implementation="pallas"` (the
                forward loop in a Pallas kernel; LSTM and Elman at power-of-two hidden sizes
                up to pallas_scan.MAX_HIDDEN): both only where JAX runs on an NVIDIA GPU.
- bidirectional (`build_bidirectional`): rnn_jax's `layers.bidirectional` (both directions
                in one scan), the same as two `unroll` scans, and Flax `nn.Bidirectional`.
- stacked (`build_stacked`): an L-layer stack, rnn_jax's `layers.apply_stack` (the default
                scan per layer), Flax `nn.Sequential` of L `nn.RNN`s and torch's
                `nn.LSTM | nn.GRU(num_layers=L)`.
- flax:         `nn.RNN(OptimizedLSTMCell | GRUCell | SimpleCell)`, batch-major (its default),
                the whole gradient under one `jax.jit`.
- torch:        `nn.LSTM | nn.GRU | nn.RNN(batch_first=True)` with its default threads;
                forward under `torch.inference_mode()`; on CUDA (cuDNN) when JAX runs on a
                GPU and torch sees one, synchronised after every call.
- transformer:  one pre-LN causal block (rnn_jax.models.transformer_blocks.Block) with
                d_model chosen so that 12 d^2 ~ the LSTM's 4H(I+H) parameters.
- matmul:       an n x n x n `jnp.dot`, the in-process peak the GF/s are compared with.
- xla_gemm_floor: the matmuls a gated RNN layer must run and nothing else, in the
                arrangement that was fastest in standalone tests (`gemm_floor`): where torch's
                whole layer is as fast, reaching torch takes faster matmuls, not less overhead.
                A reference, not a proven bound (another arrangement can be faster).

FLOPs count the matmuls only (elementwise work is < 2%): an RNN forward is 2·B·T·G·(I+H)
(minGRU: 2·B·T·G·I); forward+backward is 3x that (dW_ih, dW_hh, dh and dx).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import cells, initializers, loop_ops, scan

MODES = ("fwd", "fwd_bwd")
BACKENDS = (
    "rnn_jax",
    "rnn_jax_reference",
    "rnn_jax_remat",
    "rnn_jax_cudnn",
    "rnn_jax_pallas",
    "flax",
    "torch",
    "xla_gemm_floor",
)
RNN_JAX_IMPLEMENTATIONS = {
    "rnn_jax": "auto",
    "rnn_jax_reference": "reference",
    "rnn_jax_remat": "auto",
    "rnn_jax_cudnn": "cudnn",
    "rnn_jax_pallas": "pallas",
}
BIDIRECTIONAL_BACKENDS = ("rnn_jax", "rnn_jax_two_scans", "flax")
STACKED_BACKENDS = ("rnn_jax", "flax", "torch")
# Cell specs: a cell name, optionally ":method" for minGRU's scan.
CELL_SPECS = ("lstm", "gru", "elman", "min_gru", "min_gru:sequential", "min_gru:associative")
FLAX_CELLS = {"lstm": "OptimizedLSTMCell", "gru": "GRUCell", "elman": "SimpleCell"}
TORCH_MODULES = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}


@dataclasses.dataclass
class Workload:
    """One timed call and what is known about it (`inputs`: the arguments a JAX workload's
    compiled function is called with, e.g. `(params, xs)`; for torch `(named parameters,
    input tensor)`, whose `.grad` the forward+backward call fills: for tests to check it)."""

    run: Callable[[], Any]
    flops: float
    tokens: int
    compile_s: float | None = None
    temp_bytes: int | None = None
    inputs: tuple | None = None
    ops_per_step: list[int] | None = None  # per `while` loop: instructions its body runs


def rnn_flops(cell_spec: str, batch: int, time_: int, input_size: int, hidden: int) -> float:
    """Forward matmul FLOPs of one RNN layer (see the module docstring)."""
    name, options = _parse(cell_spec)
    cell = cells.get_cell(name, **options)
    gates = cell.num_gates * hidden
    fan_in = input_size + (hidden if cell.has_recurrent_weights else 0)
    return 2.0 * batch * time_ * gates * fan_in


def supports(backend: str, cell_spec: str) -> bool:
    """Whether `backend` has `cell_spec` here (Flax and torch have no minGRU; cuDNN runs the
    LSTM, the Pallas kernel the LSTM and Elman, on an NVIDIA GPU only)."""
    if backend == "rnn_jax_cudnn":
        return cell_spec == "lstm" and jax.default_backend() == "gpu"
    if backend == "rnn_jax_pallas":
        return cell_spec in ("lstm", "elman") and jax.default_backend() == "gpu"
    if backend == "flax":
        return cell_spec in FLAX_CELLS
    if backend == "torch":
        return cell_spec in TORCH_MODULES
    if backend == "xla_gemm_floor":
        name, options = _parse(cell_spec)
        return cells.get_cell(name, **options).has_recurrent_weights
    return True


def _parse(cell_spec: str) -> tuple[str, dict]:
    name, _, method = cell_spec.partition(":")
    return (name, {"method": method}) if method else (name, {})


def _compiled(fn: Callable, *args: Any) -> tuple[Callable, float, int | None, list[int]]:
    """jit, lower and compile `fn` for `args`: (call, compile seconds, XLA temp bytes, per
    loop the instructions its body runs per step (`loop_ops.ops_per_step`))."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    temp = None if analysis is None else int(analysis.temp_size_in_bytes)
    ops = loop_ops.ops_per_step(compiled.as_text())
    return (lambda: jax.block_until_ready(compiled(*args))), seconds, temp, ops


def _check_mode(mode: str) -> None:
    """Raises ValueError on a mode not in `MODES` (every builder's first step: anything but
    "fwd" would otherwise be built and counted as forward+backward)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")


def _mode_flops(flops: float, mode: str) -> float:
    """A call's FLOPs from the forward's: forward+backward is 3x (see the module docstring)."""
    return flops if mode == "fwd" else 3.0 * flops


def _compiled_workload(
    fn: Callable, params: Any, xs: jax.Array, mode: str, flops: float, tokens: int
) -> Workload:
    """`fn(params, xs)` compiled (`_compiled`) as the `mode` call of a layer whose forward
    does `flops`."""
    run, seconds, temp, ops = _compiled(fn, params, xs)
    return Workload(run, _mode_flops(flops, mode), tokens, seconds, temp, (params, xs), ops)


def _jax_workload(forward: Callable, params: Any, xs: jax.Array, mode: str, flops: float):
    if mode == "fwd":
        fn = forward
    else:
        fn = jax.grad(lambda p, x: jnp.sum(forward(p, x)), argnums=(0, 1))
    return _compiled_workload(fn, params, xs, mode, flops, xs.shape[0] * xs.shape[1])


def build(
    backend: str, cell_spec: str, shape: tuple[int, int, int, int], mode: str, seed: int = 0
) -> Workload | None:
    """The workload of `backend` for `cell_spec` at `shape = (batch, time, input, hidden)`;
    None when that backend has no such cell (e.g. Flax or torch minGRU)."""
    _check_mode(mode)
    batch, time_, input_size, hidden = shape
    name, options = _parse(cell_spec)
    flops = rnn_flops(cell_spec, *shape)
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, time_, input_size), jnp.float32)
    if backend == "rnn_jax_remat" and mode == "fwd":
        return None  # remat changes only the backward pass
    if not supports(backend, cell_spec):
        return None
    if backend in RNN_JAX_IMPLEMENTATIONS:
        cell = cells.get_cell(name, **options)
        params = cell.init(jax.random.key(seed), input_size, hidden)
        implementation = RNN_JAX_IMPLEMENTATIONS[backend]
        remat = backend == "rnn_jax_remat"
        if implementation == "pallas":
            from rnn_jax import pallas_scan

            try:
                pallas_scan.check_supported(cell, params)
            except ValueError:
                return None  # a size the kernel does not take (e.g. H > MAX_HIDDEN)

        def forward(p: Any, x: jax.Array) -> jax.Array:
            return scan.unroll(cell, p, x, implementation=implementation, remat=remat)[0]

        return _jax_workload(forward, params, xs, mode, flops)
    if backend == "flax":
        import flax.linen as nn

        model = nn.RNN(getattr(nn, FLAX_CELLS[name])(hidden))
        variables = model.init(jax.random.key(seed), xs)
        return _jax_workload(model.apply, variables, xs, mode, flops)
    if backend == "torch":
        return _torch_workload(name, shape, mode, flops, np.asarray(xs))
    if backend == "xla_gemm_floor":
        return gemm_floor(cells.get_cell(name).num_gates, shape, mode, seed)
    raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")


def build_bidirectional(
    backend: str, cell_spec: str, shape: tuple[int, int, int, int], mode: str, seed: int = 0
) -> Workload | None:
    """One bidirectional layer (outputs concatenated, `[batch, time, 2 * hidden]`):
    `rnn_jax` is `layers.bidirectional` (both directions in one scan), `rnn_jax_two_scans`
    two `scan.unroll` calls (forward, then `reverse=True`), `flax` `nn.Bidirectional` of two
    `nn.RNN`s. FLOPs are twice one direction's; tokens are batch x time."""
    _check_mode(mode)
    from rnn_jax import layers

    batch, time_, input_size, hidden = shape
    name, options = _parse(cell_spec)
    flops = 2.0 * rnn_flops(cell_spec, *shape)
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, time_, input_size), jnp.float32)
    if backend in ("rnn_jax", "rnn_jax_two_scans"):
        cell = cells.get_cell(name, **options)
        keys = jax.random.split(jax.random.key(seed))
        params = tuple(cell.init(k, input_size, hidden) for k in keys)

        def forward(p: Any, x: jax.Array) -> jax.Array:
            if backend == "rnn_jax":
                return layers.bidirectional(cell, *p, x)[0]
            ys_fw = scan.unroll(cell, p[0], x)[0]
            ys_bw = scan.unroll(cell, p[1], x, reverse=True)[0]
            return jnp.concatenate([ys_fw, ys_bw], axis=-1)

        return _jax_workload(forward, params, xs, mode, flops)
    if backend == "flax" and supports(backend, cell_spec):
        import flax.linen as nn

        flax_cell = getattr(nn, FLAX_CELLS[name])
        model = nn.Bidirectional(nn.RNN(flax_cell(hidden)), nn.RNN(flax_cell(hidden)))
        variables = model.init(jax.random.key(seed), xs)
        return _jax_workload(model.apply, variables, xs, mode, flops)
    if backend in BIDIRECTIONAL_BACKENDS:
        return None
    raise ValueError(f"backend={backend!r}; allowed: {', '.join(BIDIRECTIONAL_BACKENDS)}")


def stacked_flops(cell_spec: str, shape: tuple[int, int, int, int], layers: int) -> float:
    """Forward matmul FLOPs of an L-layer stack: the first layer reads `input`, the others
    the layer below's `hidden` outputs."""
    batch, time_, input_size, hidden = shape
    upper = rnn_flops(cell_spec, batch, time_, hidden, hidden)
    return rnn_flops(cell_spec, *shape) + (layers - 1) * upper


def build_stacked(
    backend: str, cell_spec: str, shape: tuple[int, int, int, int], layers: int, mode: str
) -> Workload | None:
    """An L-layer unidirectional stack at `shape = (batch, time, input, hidden)` (outputs of
    the top layer, `[batch, time, hidden]`): `rnn_jax` is `layers.apply_stack` with the
    default scan, `flax` an `nn.Sequential` of `nn.RNN`s (how Flax users stack them), `torch`
    `nn.LSTM | nn.GRU(num_layers=layers)` (oneDNN runs the whole LSTM stack in one call).
    None where the backend has no such cell."""
    _check_mode(mode)
    from rnn_jax import layers as layers_lib

    if layers < 1:
        raise ValueError(f"layers={layers!r} must be >= 1")
    batch, time_, input_size, hidden = shape
    name, options = _parse(cell_spec)
    flops = stacked_flops(cell_spec, shape, layers)
    xs = jax.random.normal(jax.random.key(1), (batch, time_, input_size), jnp.float32)
    if backend == "rnn_jax":
        cell = cells.get_cell(name, **options)
        params = layers_lib.init_stack(jax.random.key(0), cell, input_size, hidden, layers)

        def forward(p: Any, x: jax.Array) -> jax.Array:
            return layers_lib.apply_stack(cell, p, x)[0]

        return _jax_workload(forward, params, xs, mode, flops)
    if not supports(backend, cell_spec):
        return None
    if backend == "flax":
        import flax.linen as nn

        flax_cell = getattr(nn, FLAX_CELLS[name])
        model = nn.Sequential([nn.RNN(flax_cell(hidden)) for _ in range(layers)])
        variables = model.init(jax.random.key(0), xs)
        return _jax_workload(model.apply, variables, xs, mode, flops)
    if backend == "torch":
        return _torch_workload(name, shape, mode, flops, np.asarray(xs), num_layers=layers)
    raise ValueError(f"backend={backend!r}; allowed: {', '.join(STACKED_BACKENDS)}")


def _torch_workload(
    name: str, shape: tuple, mode: str, flops: float, xs: np.ndarray, num_layers: int = 1
):
    import torch

    if jax.default_backend() == "gpu" and not torch.cuda.is_available():
        # JAX on a GPU against torch on the CPU is no peer comparison (and no cuDNN one):
        # the CPU-only torch wheel of requirements-dev.txt would have run there silently.
        warnings.warn(
            "JAX runs on a GPU but this torch has no CUDA: torch is left out of the GPU "
            "benchmark (install a CUDA torch build to compare against cuDNN)",
            stacklevel=2,
        )
        return None
    torch.manual_seed(0)
    batch, time_, input_size, hidden = shape
    cuda = jax.default_backend() == "gpu"
    device = "cuda" if cuda else "cpu"
    module = getattr(torch.nn, TORCH_MODULES[name])(
        input_size, hidden, num_layers=num_layers, batch_first=True
    )
    module = module.to(device)
    x = torch.tensor(xs, device=device)
    done = torch.cuda.synchronize if cuda else (lambda: None)
    inputs = (dict(module.named_parameters()), x)
    if mode == "fwd":

        def run() -> Any:
            with torch.inference_mode():
                out = module(x)[0]
            done()
            return out

        return Workload(run, flops, batch * time_, inputs=inputs)
    x.requires_grad_(True)

    def run_backward() -> Any:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x)[0].sum().backward()
        done()
        return x.grad

    return Workload(run_backward, _mode_flops(flops, mode), batch * time_, inputs=inputs)


def gemm_floor(gates: int, shape: tuple[int, int, int, int], mode: str, seed: int = 0) -> Workload:
    """The matmuls of one gated RNN layer (`G = gates * H`), each in its fastest XLA form,
    with as little else as keeps them real.

    Forward: the input projection hoisted into one `[T*B, I] @ [I, G]` GEMM (faster than T
    per-step ones here), then T dependent `h @ W_hh [B, H] @ [H, G]` GEMMs in a `lax.scan`
    (the next `h` is the product's first H columns: no gate arithmetic). Forward+backward adds
    T `dz_t @ W_hh^T [B, G] @ [G, H]` GEMMs in a `lax.scan` and, after it, dW_hh, dW_ih and dx
    as one GEMM each over all `T*B` rows (the layout of rnn_jax's fused backward pass), with
    the forward's input projection standing in for `dz`: 3x the forward FLOPs, as for every
    other member. Any glue that mixed a step's whole `[B, G]` product into `h` cost more than
    a cell's gates on XLA:CPU (docs/design.md), so the floor leaves it out.
    """
    _check_mode(mode)
    batch, time_, input_size, hidden = shape
    width = gates * hidden
    keys = jax.random.split(jax.random.key(seed), 3)
    params = {
        "W_ih": jax.random.normal(keys[0], (input_size, width), jnp.float32) / input_size**0.5,
        # Orthogonal blocks: h keeps its norm over any T (a shrinking h would reach the
        # subnormal range, where CPU arithmetic is many times slower).
        "W_hh": initializers.gate_blocks(
            initializers.orthogonal(), keys[1], hidden, hidden, gates, jnp.float32
        ),
    }
    xs = jax.random.normal(keys[2], (time_, batch, input_size), jnp.float32)
    rows = time_ * batch

    def forward(p: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        z_x = x.reshape(rows, input_size) @ p["W_ih"]

        def step(h: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
            h = (h @ p["W_hh"])[:, :hidden]
            return h, h

        _, hs = jax.lax.scan(step, jnp.ones((batch, hidden), jnp.float32), None, time_)
        return hs, z_x

    def forward_backward(p: dict, x: jax.Array) -> tuple[jax.Array, ...]:
        hs, d_z = forward(p, x)
        w_hh_t = p["W_hh"].T

        def step(_: None, d_z_t: jax.Array) -> tuple[None, jax.Array]:
            return None, d_z_t @ w_hh_t

        _, d_hs = jax.lax.scan(step, None, d_z.reshape(time_, batch, width))
        d_w_hh = hs.reshape(rows, hidden).T @ d_z
        d_w_ih = x.reshape(rows, input_size).T @ d_z
        d_x = d_z @ p["W_ih"].T
        return d_hs, d_w_ih, d_w_hh, d_x

    flops = 2.0 * rows * width * (input_size + hidden)
    fn = forward if mode == "fwd" else forward_backward
    return _compiled_workload(fn, params, xs, mode, flops, rows)


def transformer_width(input_size: int, hidden: int, head_size: int = 32) -> int:
    """d_model with 12 d^2 ~ 4H(I+H) (the LSTM's weights), a multiple of `head_size`."""
    d = math.sqrt(4 * hidden * (input_size + hidden) / 12)
    return max(head_size, int(round(d / head_size)) * head_size)


def transformer_block(
    shape: tuple[int, int, int, int], mode: str, seed: int = 0, head_size: int = 32
) -> Workload:
    """One causal pre-LN block (attention + 4d GELU MLP) over `[batch, time, d_model]`.

    FLOPs: per token 24 d^2 (QKV, output and MLP projections) + 4 T d (scores and mixing,
    the full T x T: the causal mask is not exploited).
    """
    _check_mode(mode)
    from flax import nnx

    from rnn_jax.models.transformer_blocks import Block

    batch, time_, input_size, hidden = shape
    d = transformer_width(input_size, hidden, head_size)
    block = Block(d, d // head_size, 4 * d, 0.0, False, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(block)
    mask = jnp.tril(jnp.ones((time_, time_), bool))[None, None]
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, time_, d), jnp.float32)

    def forward(state: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(x, mask)

    flops = 2.0 * batch * time_ * (12 * d * d + 2 * time_ * d)
    return _jax_workload(forward, state, xs, mode, flops)


def matmul_peak(size: int) -> Workload:
    """An n x n x n float32 `jnp.dot`: the matmul rate the GF/s figures are compared with."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    run, seconds, temp, _ = _compiled(jnp.dot, a, a)
    return Workload(run, 2.0 * size**3, 0, seconds, temp)
