"""LSTM layers on cuDNN through `jax.experimental.rnn` (the "cudnn" implementation of `unroll`).

On an NVIDIA GPU, `jax.experimental.rnn.lstm` runs cuDNN's fused LSTM kernels, forward and
backward: the kernels PyTorch's `nn.LSTM` runs on CUDA, so this is the GPU peer to measure
the fused scan against (issue 7). It takes the weights as one flat vector in cuDNN's layout:
for every layer and direction `W_ih [4H, I]` then `W_hh [4H, H]`, then for every layer and
direction `b_ih [4H]` then `b_hh [4H]`, gates in PyTorch's order i, f, g, o.
`pack_lstm_weights` lays rnn_jax's LSTM params out that way (our `W_ih [I, 4H]` is the
transpose, same gate order); it is differentiable, so gradients reach the params dict.

Only the plain LSTM (`cells.LSTM`) maps onto cuDNN, and only without `reverse` (a
bidirectional layer's backward direction is cuDNN's own), `h_mask` (cuDNN has no recurrent
dropout mask) and `remat`; `check_supported` says which argument rules it out before anything
is traced. The kernel is float32 only (cuDNN's descriptors are set to CUDNN_DATA_FLOAT):
other params or carry dtypes raise when traced, by name. On other backends
`jax.experimental.rnn` has no kernel, so "cudnn" raises there;
the layout and this module's handling of lengths and carries are tested on CPU against
`jax.experimental.rnn.lstm_ref`, its pure-JAX reference (tests/test_cudnn_scan.py).
Matmul precision is cuDNN's default for the dtype (`precision=None`).

Shapes: batch-major `[batch, time, features]` unless `time_major=True`; `lengths [batch]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.extend
import jax.numpy as jnp

from rnn_jax.cells import LSTM, Carry, Cell, Params, carry_dtype

Array = jax.Array


def lstm_kernel(
    x: Array,
    h_0: Array,
    c_0: Array,
    weights: Array,
    seq_lengths: Array,
    *,
    input_size: int,
    hidden_size: int,
    bidirectional: bool,
) -> tuple[Array, Array, Array]:
    """One cuDNN LSTM layer: `x [B, T, I]`, `h_0, c_0 [D, B, H]` -> `(y [B, T, D*H], h_n, c_n)`."""
    from jax.experimental import rnn

    return rnn.lstm(
        x,
        h_0,
        c_0,
        weights,
        seq_lengths,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=1,
        dropout=0.0,
        bidirectional=bidirectional,
    )


def pack_lstm_weights(layers: Sequence[Params]) -> Array:
    """cuDNN's flat weight vector for LSTM params, one dict per layer and direction in cuDNN's
    order (layer 0 forward, layer 0 backward if bidirectional, layer 1 forward, ...)."""
    matrices = [m for p in layers for m in (p["W_ih"].T.ravel(), p["W_hh"].T.ravel())]
    biases = [b for p in layers for b in (p["b_ih"], p["b_hh"])]
    return jnp.concatenate(matrices + biases)


def check_supported(
    cell: Cell, *, reverse: bool = False, remat: bool = False, h_mask: object = None
) -> None:
    """Raise ValueError naming what rules out cuDNN: the cell, an option, or the backend."""
    if type(cell) is not LSTM:
        raise ValueError(
            f"implementation='cudnn' runs the plain LSTM (cells.LSTM) only; cell={cell!r}"
        )
    for name, value in (("reverse", reverse), ("remat", remat)):
        if value:
            raise ValueError(
                f"implementation='cudnn' does not take {name}={value!r} (a reversed direction "
                "runs through bidirectional_unroll; remat is the reference path's)"
            )
    if h_mask is not None and any(m is not None for m in jax.tree.leaves(h_mask)):
        raise ValueError("implementation='cudnn' does not take h_mask: cuDNN has no such mask")
    backend = jax.default_backend()
    if backend != "gpu":
        raise ValueError(
            "implementation='cudnn' needs an NVIDIA GPU (jax.experimental.rnn runs cuDNN); "
            f"this process's backend is {backend!r}: use implementation='auto'"
        )
    version = gpu_platform_version()
    if "rocm" in version.lower():
        # jax.experimental.rnn lowers to MIOpen on ROCm, whose weight layout and gate order
        # pack_lstm_weights has not been checked against: refuse rather than risk wrong sums.
        raise ValueError(
            "implementation='cudnn' runs on NVIDIA GPUs only; this GPU's platform is "
            f"{version!r} (ROCm: MIOpen, whose weight layout is not checked here): use "
            "implementation='auto'"
        )


def gpu_platform_version() -> str:
    """The default backend's platform version ("cuda 12040", "rocm 60000", ...)."""
    return jax.extend.backend.get_backend().platform_version


def cudnn_unroll(
    cell: Cell,
    params: Params,
    xs: Array,
    lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: Array | None = None,
) -> tuple[Array, Carry]:
    """`scan.unroll`'s contract on cuDNN (`unroll` is ignored: cuDNN runs its own loop)."""
    del unroll
    check_supported(cell, reverse=reverse, remat=remat, h_mask=h_mask)
    ys, (h_n, c_n) = _run(cell, [params], xs, lengths, [initial_carry], time_major)
    return ys, (h_n[0], c_n[0])


def cudnn_bidirectional(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: Array,
    lengths: Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[Array, Array] | None = None,
) -> tuple[tuple[Array, Array], tuple[Carry, Carry]]:
    """`bidirectional_scan.bidirectional_unroll`'s contract on one cuDNN bidirectional layer."""
    del unroll
    check_supported(cell, remat=remat, h_mask=h_mask)
    carries = [None, None] if initial_carry is None else list(initial_carry)
    ys, (h_n, c_n) = _run(cell, [params_fw, params_bw], xs, lengths, carries, time_major)
    hidden = h_n.shape[-1]
    return (ys[..., :hidden], ys[..., hidden:]), ((h_n[0], c_n[0]), (h_n[1], c_n[1]))


def _run(
    cell: Cell,
    layers: list[Params],
    xs: Array,
    lengths: Array | None,
    carries: list[Carry | None],
    time_major: bool,
) -> tuple[Array, tuple[Array, Array]]:
    """One cuDNN layer over `len(layers)` directions: `(ys, (h_n [D, B, H], c_n [D, B, H]))`,
    outputs exactly zero past each sequence's end (the `unroll` contract)."""
    x = jnp.swapaxes(xs, 0, 1) if time_major else xs
    batch, time, input_size = x.shape
    hidden_size = cell.sizes(layers[0])[1]
    # One dtype for the kernel, the step's (`carry_dtype`, which a given initial carry was
    # cast to): bfloat16 inputs under float32 params ran with a bfloat16 zero carry and
    # failed ("carry input and carry output must have equal types"), where every other path
    # computes in float32 as the cell's own projection does.
    dtype = carry_dtype(cell, layers[0], x)
    x = x.astype(dtype)
    zero = cell.zero_carry((batch,), hidden_size, dtype)
    h_0 = jnp.stack([(zero if c is None else c)[0] for c in carries])
    c_0 = jnp.stack([(zero if c is None else c)[1] for c in carries])
    # Each param by name before packing: the flat vector is their promotion, so a bfloat16
    # direction (or param) beside float32 ones passed as float32 and ran silently in float32.
    names = ["params"] if len(layers) == 1 else ["params_fw", "params_bw"]
    _check_float32(
        x=x,
        h_0=h_0,
        c_0=c_0,
        **{
            f"{name}[{key!r}]": p[key]
            for name, p in zip(names, layers, strict=True)
            for key in ("W_ih", "W_hh", "b_ih", "b_hh")
        },
    )
    weights = pack_lstm_weights(layers)
    seq_lengths = (
        jnp.full((batch,), time, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    )
    y, h_n, c_n = lstm_kernel(
        x,
        h_0,
        c_0,
        weights,
        seq_lengths,
        input_size=input_size,
        hidden_size=hidden_size,
        bidirectional=len(layers) == 2,
    )
    valid = jnp.arange(time)[None, :] < seq_lengths[:, None]
    y = jnp.where(valid[..., None], y, jnp.zeros_like(y))
    return (jnp.swapaxes(y, 0, 1) if time_major else y), (h_n, c_n)


def _check_float32(**arrays: Array) -> None:
    """Raise ValueError unless every array is float32: jax.experimental.rnn's cuDNN kernel
    describes every buffer as CUDNN_DATA_FLOAT, whatever the arrays hold (its lowering
    rejects bfloat16 with "Unknown output type" and takes float64 buffers as float32 ones)."""
    other = {name: str(a.dtype) for name, a in arrays.items() if a.dtype != jnp.float32}
    if other:
        raise ValueError(
            f"implementation='cudnn' runs cuDNN's float32 LSTM only (jax.experimental.rnn); "
            f"here {other} (the step's dtype comes from the params, the carry's from "
            "initial_carry): use float32 params and carry, or implementation='fused'"
        )
