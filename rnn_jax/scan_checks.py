"""The scans' argument checks: what `unroll`, `bidirectional_unroll` and `truncated_unroll`
(and the fused scan, rnn_jax.fast_scan) refuse before anything is traced.

Each check raises ValueError naming the argument, its value and what is allowed: a mis-sized
param, an `xs` of the wrong rank or feature size, lengths out of range or of a float dtype,
an `h_mask` or initial carry of the wrong shape, an unknown implementation, and what the
"cudnn" and "pallas" kernels cannot take. `check_length_range` is also the models' rule for
their other lengths (rnn_jax.models).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import Carry, Cell, MinGRU, Params
from rnn_jax.predicates import is_int

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
