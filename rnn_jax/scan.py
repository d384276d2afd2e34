"""Scans of a cell over time: `unroll` (padding-aware, reversible, rematerialisable) and
`truncated_unroll` (truncated BPTT).

What `unroll` computes, as pseudo-code (batch-major, `lengths` right-padded):

    carry = initial_carry or zero
    for t in range(T):                       # reverse=True: t over each sequence's valid part
        h_rec = carry with h * h_mask         #   backwards, outputs kept at their positions
        carry', y = cell.pointwise(params, cell.input_projection(params, xs[:, t]),
                                   cell.recurrent_projection(params, h_rec), carry)
        carry = carry' if t < lengths else carry
        ys[:, t] = y if t < lengths else 0
    return ys, carry

The input projection is computed for all steps at once as one 2-D `[time*batch, input]` matmul
(2-D, not a 3-D einsum, whose autodiff transposes the cotangent: perf-anchors.md) and split per
gate before the scan, so each step reads `num_gates` plain `[batch, H]` slabs
(perf-anchors.md: reading one `[T, B, 4H]` slab and splitting it inside the step made the
gate fusion ~6x slower). Linear cells (minGRU) run through rnn_jax.linear_scan instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import linear_scan
from rnn_jax.cells import Carry, Cell, MinGRU, Params, carry_dtype
from rnn_jax.predicates import check_positive, is_int

IMPLEMENTATIONS = ("auto", "reference", "fused", "cudnn", "pallas")


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_length_range(
    lengths: Any,
    time: int,
    *,
    name: str = "lengths",
    low: int = 1,
    time_name: str = "time",
    batch: int | None = None,
) -> None:
    """Raise ValueError unless `lengths` has an integer dtype (and shape `[batch]` when `batch`
    is given; both checked traced too, they are static) and every concrete length is in
    [low, time] (traced values cannot be checked and are trusted): the rule of every scan
    here, and of the models' other lengths (`Seq2Seq.loss`'s `target_lengths`;
    `CharEncoder`'s `char_lengths`, where 0 is a padded word's), each error naming the
    argument and what bounds it. A float length 2.5 kept 3 states and divided by 2.5."""
    if not isinstance(lengths, jax.Array):  # a list or numpy array (tracers are Arrays)
        lengths = np.asarray(lengths)
    if batch is not None and jnp.shape(lengths) != (batch,):
        raise ValueError(f"{name} has shape {jnp.shape(lengths)}; expected [batch]=({batch},)")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"{name} has dtype {lengths.dtype}; expected integers")
    if _is_traced(lengths):
        return
    values = np.asarray(lengths)
    bad = values[(values < low) | (values > time)]
    if bad.size:
        raise ValueError(
            f"{name} contains {bad.tolist()}; allowed: {low} <= length <= {time_name}={time}"
        )


def _validate(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None,
    initial_carry: Carry | None,
    *,
    time_major: bool,
    h_mask: jax.Array | None,
    unroll: int,
    implementation: str,
) -> None:
    """Raise ValueError (argument, value, allowed) before anything is traced."""
    if not isinstance(cell, Cell):
        raise ValueError(f"cell={cell!r} must be an rnn_jax.cells.Cell (see get_cell)")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation={implementation!r}; allowed: {', '.join(IMPLEMENTATIONS)}"
        )
    # A NumPy integer (e.g. `lengths.max()`) is an int here, as everywhere in the library
    # (rnn_jax.predicates.is_int); it was refused as not "a positive int".
    if not (unroll is True or (is_int(unroll) and unroll >= 1)):
        raise ValueError(f"unroll={unroll!r} must be a positive int or True")
    layout = "[time, batch, features]" if time_major else "[batch, time, features]"
    if jnp.ndim(xs) != 3:
        raise ValueError(f"xs has shape {jnp.shape(xs)}; expected {layout}")
    input_size, hidden_size = cell.sizes(params)
    gates = cell.num_gates * hidden_size
    # Every param's expected shape and what it follows from, checked in one pass: a mis-sized
    # matrix or bias (e.g. params of another hidden size) otherwise fails inside the scan with
    # dot_general's or broadcasting's message, which names no parameter. Every param the
    # cell's `init` makes must be present: the fused four (W_hh, b_hh only for a cell with
    # recurrent weights; min_gru has none) and the cell's own (peepholes, layer-norm gains).
    # A `(1,)` or batch-shaped peephole was broadcast silently, a mis-sized one failed naming
    # no parameter, and a missing b_hh passed here to fail inside the scan as a KeyError.
    source = f"from params['W_ih'].shape={jnp.shape(params['W_ih'])}"
    fused = f"input_size={input_size}, hidden_size={hidden_size} ({cell.num_gates} gates, {source})"
    expected = {
        name: (shape, fused)
        for name, shape in (
            ("W_ih", (input_size, gates)),
            ("W_hh", (hidden_size, gates)),
            ("b_ih", (gates,)),
            ("b_hh", (gates,)),
        )
        if cell.has_recurrent_weights or name in ("W_ih", "b_ih")
    }
    extra = jax.eval_shape(lambda: cell.extra_params(jax.random.key(0), hidden_size, jnp.float32))
    expected.update(
        {
            name: (spec.shape, f"hidden_size={hidden_size} ({source})")
            for name, spec in extra.items()
        }
    )
    for name, (shape, follows_from) in expected.items():
        if name not in params:
            raise ValueError(
                f"params has no {name!r}, which {type(cell).__name__} needs (its params: "
                f"{sorted(params)})"
            )
        if jnp.shape(params[name]) != shape:
            raise ValueError(
                f"params[{name!r}] has shape {jnp.shape(params[name])}; expected {shape} for "
                f"{follows_from}"
            )
    batch, time = (xs.shape[1], xs.shape[0]) if time_major else xs.shape[:2]
    if xs.shape[-1] != input_size:
        raise ValueError(
            f"xs feature size {xs.shape[-1]} (xs.shape={xs.shape}) does not match the cell's "
            f"input_size={input_size} (params['W_ih'].shape={params['W_ih'].shape})"
        )
    if time < 1:
        raise ValueError(f"xs has an empty time axis: xs.shape={xs.shape}; expected {layout}")
    if lengths is not None:
        check_length_range(lengths, time, batch=batch)
    if h_mask is not None:
        if isinstance(cell, MinGRU):
            raise ValueError("h_mask is not allowed for min_gru: it has no recurrent matmul")
        if jnp.shape(h_mask) != (batch, hidden_size):
            raise ValueError(
                f"h_mask has shape {jnp.shape(h_mask)}; expected [batch, hidden]="
                f"({batch}, {hidden_size})"
            )
    if initial_carry is not None:
        expected = cell.zero_carry((batch,), hidden_size)
        got = jax.tree.map(jnp.shape, initial_carry)
        want = jax.tree.map(jnp.shape, expected)
        if jax.tree.structure(initial_carry) != jax.tree.structure(expected) or got != want:
            raise ValueError(f"initial_carry has shapes {got}; expected {want}")


def _unroll_factor(unroll: int | bool) -> int | bool:
    """A validated `unroll` as `lax.scan` and the static-argument caches take it: True, or a
    Python int (a NumPy integer converted)."""
    return True if unroll is True else int(unroll)


def _match_step_dtype(cell: Cell, params: Params, xs: jax.Array, carry: Carry | None) -> Any:
    """A given initial `carry` cast to the dtypes one step returns from it (None stays None).

    `lax.scan` needs a carry whose dtype the step preserves, and the step's is set by the
    params (`carry_dtype`): a float32 carry into float64 or bfloat16-only params, or a
    bfloat16 one into float32 params, would fail inside the scan with a bare TypeError.
    A carry the step already preserves (the usual case) is returned unchanged.
    """
    if carry is None:
        return None
    leaves = jax.tree.leaves(carry)
    row = jax.ShapeDtypeStruct((leaves[0].shape[0], xs.shape[-1]), xs.dtype)
    spec = jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype), carry)
    out = jax.eval_shape(lambda c, x: cell.step(params, c, x)[0], spec, row)
    return jax.tree.map(lambda c, o: c if c.dtype == o.dtype else c.astype(o.dtype), carry, out)


def flip_sequences(xs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverse each sequence of `xs [time, batch, ...]` over its valid part only.

    Positions `t >= lengths[b]` stay where they are, so the map is its own inverse and
    outputs of a reversed scan, flipped back, line up with the input positions.
    """
    if lengths is None:
        return xs[::-1]
    time = xs.shape[0]
    t = jnp.arange(time)[:, None]
    index = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, index, axis=0)


def _where_valid(valid: jax.Array, new: Any, old: Any) -> Any:
    """`new` where `valid [batch]`, else `old`, leaf by leaf (leaves `[batch, ...]`)."""

    def pick(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _run_chunk(
    cell: Cell,
    params: Params,
    carry: Carry,
    ts: jax.Array,
    xs: jax.Array,
    lengths: jax.Array | None,
    h_mask: jax.Array | None,
    unroll: int,
) -> tuple[Carry, jax.Array]:
    """Scan time-major `xs [chunk, batch, input]` (time indices `ts [chunk]`) from `carry`."""
    chunk, batch, input_size = xs.shape
    z_x = cell.input_projection(params, xs.reshape(chunk * batch, input_size))
    z_x = z_x.reshape(chunk, batch, z_x.shape[-1])
    valid = None if lengths is None else ts[:, None] < lengths[None, :]  # [chunk, batch]

    if isinstance(cell, MinGRU):
        a, b = cell.linear_coefficients(params, z_x)
        if valid is not None:
            # Padded steps become the identity map, so the carry stops at the last valid step.
            a = jnp.where(valid[..., None], a, 1.0)
            b = jnp.where(valid[..., None], b, 0.0)
        hs = linear_scan.linear_recurrence(
            a, b, carry, method=cell.method, time_axis=0, unroll=unroll
        )
        ys = hs if valid is None else jnp.where(valid[..., None], hs, 0.0)
        return hs[-1], ys

    slabs = tuple(jnp.split(z_x, cell.num_gates, axis=-1))

    def body(carry: Carry, inputs: tuple) -> tuple:
        slabs_t, valid_t = inputs
        z_x_t = jnp.concatenate(slabs_t, axis=-1)
        rec_carry = carry if h_mask is None else cell.mask_hidden(carry, h_mask)
        z_h = cell.recurrent_projection(params, rec_carry)
        new_carry, y = cell.pointwise(params, z_x_t, z_h, carry)
        if valid_t is not None:
            new_carry = _where_valid(valid_t, new_carry, carry)
            y = jnp.where(valid_t[:, None], y, 0.0)
        return new_carry, y

    return jax.lax.scan(body, carry, (slabs, valid), unroll=unroll)


def _pad_time(xs: jax.Array, multiple: int) -> jax.Array:
    """Time-major `xs` padded with zeros to a multiple of `multiple` steps."""
    extra = -xs.shape[0] % multiple
    return jnp.pad(xs, ((0, extra),) + ((0, 0),) * (xs.ndim - 1)) if extra else xs


def _chunked(
    cell: Cell,
    params: Params,
    carry: Carry,
    xs: jax.Array,
    lengths: jax.Array | None,
    h_mask: jax.Array | None,
    unroll: int,
    chunk: int,
    checkpoint: bool,
    stop_gradient: bool,
) -> tuple[Carry, jax.Array]:
    """Outer scan over `chunk`-step pieces of time-major `xs`; returns `(carry, ys [T, B, H])`.

    `checkpoint`: each piece is rematerialised in the backward pass (only the carries at piece
    boundaries are stored). `stop_gradient`: no gradient flows from a piece into the carry
    the piece before handed it (the first piece's, the given initial carry, keeps it).
    """
    time, batch = xs.shape[:2]
    if lengths is None and time % chunk:
        lengths = jnp.full((batch,), time, jnp.int32)  # masks the padding steps added below
    padded = _pad_time(xs, chunk)
    pieces = padded.shape[0] // chunk
    xs_pieces = padded.reshape(pieces, chunk, *padded.shape[1:])
    ts_pieces = jnp.arange(pieces * chunk).reshape(pieces, chunk)

    def piece(carry: Carry, inputs: tuple) -> tuple:
        ts, xs_piece = inputs
        if stop_gradient:
            # Cut the carry coming in from the previous piece, not the given initial carry
            # (the first piece's own: a learned initial state trains through it, as in full
            # BPTT), and only for sequences still running: a finished sequence's final carry
            # keeps its gradient path into the piece where it ended.
            cut = jnp.broadcast_to(ts[0] > 0, (batch,))
            if lengths is not None:
                cut = cut & (ts[0] < lengths)
            carry = _where_valid(cut, jax.lax.stop_gradient(carry), carry)
        return _run_chunk(cell, params, carry, ts, xs_piece, lengths, h_mask, unroll)

    if checkpoint:
        piece = jax.checkpoint(piece, prevent_cse=False)
    carry, ys = jax.lax.scan(piece, carry, (ts_pieces, xs_pieces))
    return carry, ys.reshape(pieces * chunk, *ys.shape[2:])[:time]


def reference_unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """`unroll` with `lax.scan` over `cell.pointwise` (arguments as in `unroll`, unvalidated)."""
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    time, batch = xs_tm.shape[:2]
    if initial_carry is None:
        initial_carry = cell.zero_carry(
            (batch,), cell.sizes(params)[1], carry_dtype(cell, params, xs)
        )
    if reverse:
        xs_tm = flip_sequences(xs_tm, lengths)
    if remat:
        # sqrt(T)-step pieces: sqrt(T) stored boundary carries + one recomputed piece = O(sqrt T).
        chunk = max(1, int(np.ceil(np.sqrt(time))))
        carry, ys = _chunked(
            cell, params, initial_carry, xs_tm, lengths, h_mask, unroll, chunk, True, False
        )
    else:
        carry, ys = _run_chunk(
            cell, params, initial_carry, jnp.arange(time), xs_tm, lengths, h_mask, unroll
        )
    if reverse:
        ys = flip_sequences(ys, lengths)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry


def _select_implementation(implementation: str, cell: Cell, *, remat: bool) -> Callable:
    """The unroll function behind `implementation`.

    "auto" is the fused custom-VJP scan (rnn_jax.fast_scan: the weight gradients as one GEMM
    after the reverse loop; 1.2-1.3x the reference's forward+backward speed on this CPU, see
    the README's performance section), except with `remat=True`, whose O(sqrt T) chunked
    checkpointing is the reference path's. Cells the fused scan cannot take (minGRU, Cho's
    GRU) fall back to the reference inside `fused_unroll`. "cudnn" is the plain LSTM on
    cuDNN (rnn_jax.cudnn_scan; NVIDIA GPUs only); "pallas" the fused scan with its forward
    loop in a Pallas kernel (rnn_jax.pallas_scan; Triton on NVIDIA GPUs, the interpreter on
    CPU). The only place that chooses; the fast paths are imported lazily so the core works
    without them.
    """
    del cell
    if implementation == "cudnn":
        from rnn_jax.cudnn_scan import cudnn_unroll

        return cudnn_unroll
    if implementation == "pallas":
        from rnn_jax.pallas_scan import pallas_unroll

        return pallas_unroll
    if implementation == "fused" or (implementation == "auto" and not remat):
        from rnn_jax.fast_scan import fused_unroll

        return fused_unroll
    return reference_unroll


def _check_kernel_limits(
    implementation: str,
    cell: Cell,
    params: Params,
    *,
    remat: bool,
    h_mask: Any,
    reverse: bool = False,
) -> None:
    """Before tracing: what the "cudnn" and "pallas" kernels cannot take raises ValueError,
    by name (rnn_jax.cudnn_scan / rnn_jax.pallas_scan `check_supported`); other paths take all."""
    if implementation == "cudnn":
        from rnn_jax.cudnn_scan import check_supported

        check_supported(cell, reverse=reverse, remat=remat, h_mask=h_mask)
    elif implementation == "pallas":
        from rnn_jax.pallas_scan import check_supported

        check_supported(cell, params, remat=remat)


@functools.cache
def _compiled(run: Callable) -> Callable:
    """`run` under `jax.jit` (the cell and layout options static): eager calls of `unroll`
    then hit a compile cache instead of re-tracing and re-compiling the scan every time;
    inside a caller's jit it is simply inlined."""
    return jax.jit(
        run, static_argnums=0, static_argnames=("reverse", "unroll", "remat", "time_major")
    )


def unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
    implementation: str = "auto",
) -> tuple[jax.Array, Carry]:
    """Run `cell` over `xs`; returns `(ys [batch, time, hidden], final_carry)`.

    dtypes: `ys` and the carry have the step's dtype (`cells.carry_dtype`), which the params
    set, not `xs`: all-bfloat16 params give bfloat16 outputs from float32 inputs, float32
    params float32 outputs from bfloat16 inputs, bfloat16 matrices with float32 biases
    float32 (each projection multiplies in its weight's dtype; docs/design.md).

    Args:
      cell: an rnn_jax.cells.Cell. params: its params dict.
      xs: `[batch, time, input]` (`[time, batch, input]` with `time_major=True`; `ys` follows).
      lengths: `[batch]` ints, 1 <= length <= time, for right-padded batches (None: all full).
        Outputs past a sequence's end are exactly zero; the final carry is the carry after
        each sequence's last valid step.
      initial_carry: carry `[batch, hidden]` leaves (None: zeros). A learned initial carry is
        a param broadcast to `[batch, hidden]` by the caller (see rnn_jax.modules.RNN).
      reverse: run each sequence backwards over its valid part only; `ys[:, t]` stays aligned
        with `xs[:, t]` and the final carry is the state after reading position 0.
      unroll: `lax.scan` unroll factor (on CPU >1 helps the forward, hurts the backward).
      remat: rematerialise sqrt(T)-step pieces in the backward pass: O(sqrt T) memory (with
        "auto" or "reference"; with "fused" it recomputes each step's projections instead,
        still O(T) memory, `fast_scan.fused_unroll`).
      h_mask: `[batch, hidden]`, multiplies h before the recurrent projection at every step
        (variational recurrent dropout, Gal & Ghahramani 2016: one mask per sequence).
      implementation: "reference" (lax.scan over `cell.pointwise`), "fused" (custom-VJP scan
        from rnn_jax.fast_scan), "auto", "cudnn" (plain LSTM on an NVIDIA GPU through
        jax.experimental.rnn; no `reverse`, `h_mask` or `remat`; rnn_jax.cudnn_scan), or
        "pallas" (the fused scan with its forward loop in a Pallas kernel: LSTM family and
        Elman at power-of-two sizes up to `pallas_scan.MAX_HIDDEN`, no `remat`;
        rnn_jax.pallas_scan).
    """
    _validate(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        time_major=time_major,
        h_mask=h_mask,
        unroll=unroll,
        implementation=implementation,
    )
    _check_kernel_limits(implementation, cell, params, reverse=reverse, remat=remat, h_mask=h_mask)
    lengths = None if lengths is None else jnp.asarray(lengths)
    run = _compiled(_select_implementation(implementation, cell, remat=remat))
    return run(
        cell,
        params,
        xs,
        lengths,
        _match_step_dtype(cell, params, xs, initial_carry),
        reverse=reverse,
        unroll=_unroll_factor(unroll),
        remat=remat,
        time_major=time_major,
        h_mask=h_mask,
    )


def bidirectional_unroll(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[jax.Array, jax.Array] | None = None,
    implementation: str = "auto",
) -> tuple[tuple[jax.Array, jax.Array], tuple[Carry, Carry]]:
    """`unroll` forwards with `params_fw` and `reverse=True` with `params_bw` over the same `xs`.

    Returns `((ys_fw, ys_bw), (carry_fw, carry_bw))`, outputs `[batch, time, hidden]` aligned
    with `xs`. `initial_carry` and `h_mask` are `(forward, backward)` pairs; other arguments
    as in `unroll`. On the fused path ("auto" without remat, or "fused") both directions run
    in one scan (`rnn_jax.fast_scan.fused_bidirectional`); with "cudnn" as one cuDNN
    bidirectional layer; otherwise (with "pallas" two kernel passes) as two scans.
    """
    init_fw, init_bw = _pair("initial_carry", initial_carry)
    mask_fw, mask_bw = _pair("h_mask", h_mask)
    for params, init, mask in ((params_fw, init_fw, mask_fw), (params_bw, init_bw, mask_bw)):
        _validate(
            cell,
            params,
            xs,
            lengths,
            init,
            time_major=time_major,
            h_mask=mask,
            unroll=unroll,
            implementation=implementation,
        )
    if cell.sizes(params_fw) != cell.sizes(params_bw):
        raise ValueError(
            f"params_fw sizes {cell.sizes(params_fw)} differ from params_bw sizes "
            f"{cell.sizes(params_bw)}; both directions need the same (input, hidden)"
        )
    _check_kernel_limits(implementation, cell, params_fw, remat=remat, h_mask=h_mask)
    lengths = None if lengths is None else jnp.asarray(lengths)
    if initial_carry is not None:
        initial_carry = (
            _match_step_dtype(cell, params_fw, xs, init_fw),
            _match_step_dtype(cell, params_bw, xs, init_bw),
        )
    run = _compiled_bidirectional(_select_implementation(implementation, cell, remat=remat))
    return run(
        cell,
        params_fw,
        params_bw,
        xs,
        lengths,
        initial_carry,
        unroll=_unroll_factor(unroll),
        remat=remat,
        time_major=time_major,
        h_mask=h_mask,
    )


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    """The `(forward, backward)` halves of `bidirectional_unroll`'s pair argument `name`
    (None: both None); anything but a 2-tuple or 2-list raises ValueError naming `name`.
    A single carry or mask used to be unpacked along its batch axis ("too many values to
    unpack", or a row per direction when the batch was 2)."""
    if value is None:
        return None, None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    shapes = jax.tree.map(jnp.shape, value)
    raise ValueError(
        f"{name} must be a (forward, backward) pair (either may be None) or None; got "
        f"{type(value).__name__} with shapes {shapes}"
    )


@functools.cache
def _compiled_bidirectional(run: Callable) -> Callable:
    """The jitted bidirectional pass on the path `run` chose (see `_compiled`)."""
    from rnn_jax import cudnn_scan, fast_scan, pallas_scan

    passes = {
        reference_unroll: reference_bidirectional,
        fast_scan.fused_unroll: fast_scan.fused_bidirectional,
        cudnn_scan.cudnn_unroll: cudnn_scan.cudnn_bidirectional,
        pallas_scan.pallas_unroll: functools.partial(
            reference_bidirectional, run=pallas_scan.pallas_unroll
        ),
    }
    return jax.jit(passes[run], static_argnums=0, static_argnames=("unroll", "remat", "time_major"))


def reference_bidirectional(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carry: tuple[Carry, Carry] | None = None,
    *,
    unroll: int = 1,
    remat: bool = False,
    time_major: bool = False,
    h_mask: tuple[jax.Array, jax.Array] | None = None,
    run: Callable | None = None,
) -> tuple[tuple[jax.Array, jax.Array], tuple[Carry, Carry]]:
    """`bidirectional_unroll` as two passes of `run` (default `reference_unroll`; arguments
    unvalidated), the second with `reverse=True`."""
    run = reference_unroll if run is None else run
    init_fw, init_bw = (None, None) if initial_carry is None else initial_carry
    mask_fw, mask_bw = (None, None) if h_mask is None else h_mask
    options = dict(unroll=unroll, remat=remat, time_major=time_major)
    ys_fw, carry_fw = run(cell, params_fw, xs, lengths, init_fw, h_mask=mask_fw, **options)
    ys_bw, carry_bw = run(
        cell, params_bw, xs, lengths, init_bw, h_mask=mask_bw, reverse=True, **options
    )
    return (ys_fw, ys_bw), (carry_fw, carry_bw)


def truncated_unroll(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    bptt_length: int,
    lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    *,
    unroll: int = 1,
    time_major: bool = False,
    h_mask: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """Truncated BPTT: `unroll` in `bptt_length`-step chunks with the carry passed across chunk
    boundaries through `jax.lax.stop_gradient`.

    The forward values equal `unroll`'s; gradients only flow within a chunk (Williams & Peng
    1990; the usual language-model truncation). The given `initial_carry` gets the first
    chunk's gradient (a learned initial state trains through it; with `bptt_length >= T` the
    gradients are full BPTT's). A sequence that ended in an earlier chunk
    keeps the gradient path from its final carry into the chunk where it ended. Arguments as
    in `unroll`; returns `(ys [batch, time, hidden], final_carry)`.
    """
    check_positive(bptt_length=bptt_length)
    _validate(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        time_major=time_major,
        h_mask=h_mask,
        unroll=unroll,
        implementation="reference",
    )
    lengths = None if lengths is None else jnp.asarray(lengths)
    initial_carry = _match_step_dtype(cell, params, xs, initial_carry)
    return _truncated(
        cell,
        params,
        xs,
        lengths,
        initial_carry,
        h_mask,
        int(bptt_length),
        _unroll_factor(unroll),
        time_major,
    )


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _truncated(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    lengths: jax.Array | None,
    initial_carry: Carry | None,
    h_mask: jax.Array | None,
    bptt_length: int,
    unroll: int,
    time_major: bool,
) -> tuple[jax.Array, Carry]:
    xs_tm = xs if time_major else jnp.swapaxes(xs, 0, 1)
    if initial_carry is None:
        hidden_size = cell.sizes(params)[1]
        initial_carry = cell.zero_carry(
            (xs_tm.shape[1],), hidden_size, carry_dtype(cell, params, xs)
        )
    # A chunk longer than the sequence is the whole sequence: `_chunked` would pad the time
    # axis up to `bptt_length` and scan the padding (bptt_length=1000 on T=35: 28x the steps).
    chunk = min(bptt_length, xs_tm.shape[0])
    carry, ys = _chunked(
        cell, params, initial_carry, xs_tm, lengths, h_mask, unroll, chunk, False, True
    )
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry
