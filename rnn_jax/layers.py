"""Bidirectional and stacked recurrent layers as pure functions built on `rnn_jax.scan.unroll`
(and `rnn_jax.bidirectional_scan.bidirectional_unroll`).

A stack's params are a list with one entry per layer: the cell's params dict, or
`{"fw": params, "bw": params}` for a bidirectional layer. Layer k > 0 reads the previous
layer's output (`2 * hidden_size` wide for a concatenating bidirectional stack).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.bidirectional_scan import bidirectional_unroll
from rnn_jax.cells import Carry, Cell, Params
from rnn_jax.predicates import check_positive
from rnn_jax.scan import _where_valid, unroll

MERGES = ("concat", "sum")


def _check_merge(merge: str) -> None:
    if merge not in MERGES:
        raise ValueError(f"merge={merge!r}; allowed: {', '.join(MERGES)}")


def bidirectional(
    cell: Cell,
    params_fw: Params,
    params_bw: Params,
    xs: jax.Array,
    lengths: jax.Array | None = None,
    *,
    merge: str = "concat",
    initial_carry: tuple[Carry, Carry] | None = None,
    h_mask: tuple[jax.Array, jax.Array] | None = None,
    **unroll_options: Any,
) -> tuple[jax.Array, tuple[Carry, Carry]]:
    """Forward and padding-aware backward pass over `xs [batch, time, input]`, merged.

    Returns `(ys, (carry_fw, carry_bw))`: `ys [batch, time, 2*hidden]` for `merge="concat"`
    (forward features first), `[batch, time, hidden]` for `"sum"`; zero past `lengths`.
    `initial_carry` and `h_mask` are `(forward, backward)` pairs; `unroll_options` go to
    `rnn_jax.bidirectional_scan.bidirectional_unroll` (`unroll`, `remat`, `implementation`):
    on the default fused path both directions run in one scan.
    """
    _check_merge(merge)
    (ys_fw, ys_bw), carries = bidirectional_unroll(
        cell, params_fw, params_bw, xs, lengths, initial_carry, h_mask=h_mask, **unroll_options
    )
    ys = jnp.concatenate([ys_fw, ys_bw], axis=-1) if merge == "concat" else ys_fw + ys_bw
    return ys, carries


# `apply_stack` has an argument called `bidirectional`; it calls the function through this name.
_bidirectional_pass = bidirectional


def layer_input_sizes(
    input_size: int, hidden_size: int, num_layers: int, *, bidirectional: bool, merge: str
) -> list[int]:
    """Input width of each layer of a stack."""
    output_size = 2 * hidden_size if bidirectional and merge == "concat" else hidden_size
    return [input_size] + [output_size] * (num_layers - 1)


def init_stack(
    key: jax.Array,
    cell: Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
    **init_options: Any,
) -> list[Params | dict[str, Params]]:
    """Per-layer params of a stack (`init_options` go to `cell.init`)."""
    _check_merge(merge)
    check_positive(num_layers=num_layers)
    num_layers = int(num_layers)
    sizes = layer_input_sizes(
        input_size, hidden_size, num_layers, bidirectional=bidirectional, merge=merge
    )
    params = []
    for layer_key, size in zip(jax.random.split(key, num_layers), sizes, strict=True):
        if bidirectional:
            k_fw, k_bw = jax.random.split(layer_key)
            params.append(
                {
                    "fw": cell.init(k_fw, size, hidden_size, **init_options),
                    "bw": cell.init(k_bw, size, hidden_size, **init_options),
                }
            )
        else:
            params.append(cell.init(layer_key, size, hidden_size, **init_options))
    return params


def _check_dropout_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate={rate!r}; allowed: 0 <= rate < 1")


def dropout(rng: jax.Array | None, rate: float, x: jax.Array) -> jax.Array:
    """Inverted dropout: zero with probability `rate`, scale the rest by 1/(1-rate).

    `rng=None` or `rate=0` is the identity (evaluation). Raises ValueError unless
    0 <= rate < 1 (rate 1 gave zeros with NaN gradients, a negative rate a down-scaling)."""
    _check_dropout_rate(rate)
    if rng is None or rate == 0.0:
        return x
    # Drawn flat: XLA:CPU compiles a 1-D threefry draw several times faster than an N-D one.
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.size,)).reshape(x.shape)
    # Scaled in float32 (or wider) and rounded once: in bfloat16 the factor 1/bf16(1 - rate)
    # was off by up to 0.2% (rate 0.1), a bias every kept unit carried.
    wide = jnp.promote_types(jnp.float32, x.dtype)
    return jnp.where(keep, x.astype(wide) / (1.0 - rate), 0.0).astype(x.dtype)


def recurrent_dropout_masks(
    rng: jax.Array,
    rate: float,
    batch_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    bidirectional: bool = False,
    dtype: jnp.dtype = jnp.float32,
) -> list[jax.Array | tuple[jax.Array, jax.Array]]:
    """Variational recurrent-dropout masks (Gal & Ghahramani 2016) for `apply_stack`'s
    `h_masks`: one `[batch, hidden]` inverted-dropout mask per sequence, layer and direction,
    kept fixed over time. `dtype` is the carry's: the masks take it or float32, whichever is
    wider, as `broadcast_dropout`'s do (a bfloat16 mask holds bf16(1/(1 - rate)), 0.16% low
    at rate 0.1, on every kept unit); `Cell.mask_hidden` rounds the product to `h`'s dtype."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"recurrent dropout rate={rate!r}; allowed: 0 <= rate < 1")
    directions = 2 if bidirectional else 1
    keys = jax.random.split(rng, num_layers * directions)
    ones = jnp.ones((batch_size, hidden_size), jnp.promote_types(jnp.float32, dtype))
    masks = [dropout(k, rate, ones) for k in keys]
    if bidirectional:
        return [(masks[2 * k], masks[2 * k + 1]) for k in range(num_layers)]
    return masks


def locked_dropout(rng: jax.Array | None, rate: float, x: jax.Array) -> jax.Array:
    """Dropout of `x [batch, time, features]` with one `[batch, 1, features]` mask per
    sequence, the same at every time step (inverted scaling 1/(1-rate); Gal & Ghahramani
    2016's variational dropout, AWD-LSTM's `LockedDropout`)."""
    if x.ndim != 3:
        # A [batch, features] x broadcast against the mask to [batch, batch, features].
        raise ValueError(f"locked_dropout needs x [batch, time, features]; got shape {x.shape}")
    _check_dropout_rate(rate)
    return broadcast_dropout(rng, rate, x, (x.shape[0], 1, x.shape[-1]))


def broadcast_dropout(
    rng: jax.Array | None, rate: float, x: jax.Array, mask_shape: tuple[int, ...]
) -> jax.Array:
    """Dropout of `x` with one inverted-dropout mask of `mask_shape` broadcast over it (a unit
    of `mask_shape` kept or dropped everywhere it reaches): `locked_dropout`'s mask per
    sequence, `regularizers.embedding_dropout`'s per word type. The mask is built in float32
    (or wider) and the product rounded once, as in `dropout`: a bfloat16 mask is
    1/bf16(1 - rate) (1.4296875 for 1/0.7), a bias on every kept unit."""
    if rng is None or rate == 0.0:
        return x
    wide = jnp.promote_types(jnp.float32, x.dtype)
    mask = dropout(rng, rate, jnp.ones(mask_shape, wide))
    return (x * mask).astype(x.dtype)


def _check_layers(params: list, caller: str) -> None:
    # One cell's params dict iterates as its key strings, each taken for a layer: the scan
    # failed on them with "string indices must be integers".
    if isinstance(params, dict):
        raise ValueError(
            f"{caller}: params is one cell's params dict (keys {sorted(params)}); a stack's "
            "params are a list with one entry per layer (init_stack), e.g. [params]"
        )
    # An empty list would hand back the input unchanged, as if it were a stack's output.
    if len(params) == 0:
        raise ValueError(f"{caller}: params is empty; a stack has at least one layer (init_stack)")


def _residual_applies(layer: int, x: jax.Array, y: jax.Array) -> bool:
    # Residual connections join hidden representations: from layer 1 up, when widths match.
    return layer > 0 and x.shape[-1] == y.shape[-1]


def apply_stack(
    cell: Cell,
    params: list[Params | dict[str, Params]],
    xs: jax.Array,
    lengths: jax.Array | None = None,
    initial_carries: list | None = None,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    locked: bool = False,
    residual: bool = False,
    rng: jax.Array | None = None,
    h_masks: list | None = None,
    **unroll_options: Any,
) -> tuple[jax.Array, list]:
    """Run a stack of recurrent layers over `xs [batch, time, input]`.

    Returns `(ys [batch, time, out], final_carries)` with one final carry per layer
    (`(forward, backward)` pairs when bidirectional). Dropout with `dropout_rate` is applied
    to each layer's input from layer 1 up (PyTorch's inter-layer dropout), only when `rng` is
    given: a fresh mask per element, or with `locked=True` one `[batch, 1, features]`
    mask per sequence and layer, shared over time (`locked_dropout`; AWD-LSTM's
    `dropouth`). With `residual=True`, layer k > 0 adds its input to its output where the widths
    match (Wu et al. 2016, GNMT). `initial_carries`/`h_masks`: per-layer lists (pairs when
    bidirectional) or None. `unroll_options` go to `rnn_jax.scan.unroll`.
    """
    _check_merge(merge)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate!r}; allowed: 0 <= rate < 1")
    _check_layers(params, "apply_stack")
    num_layers = len(params)
    for layer, layer_params in enumerate(params):
        if (set(layer_params) == {"fw", "bw"}) != bidirectional:
            expected = "{'fw': ..., 'bw': ...}" if bidirectional else "one cell's params dict"
            raise ValueError(
                f"params[{layer}] has keys {sorted(layer_params)}; bidirectional={bidirectional} "
                f"expects {expected} per layer (see init_stack)"
            )
    for name, value in (("initial_carries", initial_carries), ("h_masks", h_masks)):
        if value is not None and len(value) != num_layers:
            raise ValueError(f"{name} has {len(value)} entries; expected num_layers={num_layers}")
    rngs = [None] * num_layers if rng is None else list(jax.random.split(rng, num_layers))
    final_carries = []
    x = xs
    for layer, layer_params in enumerate(params):
        initial = None if initial_carries is None else initial_carries[layer]
        mask = None if h_masks is None else h_masks[layer]
        layer_in = x
        if layer > 0 and locked and unroll_options.get("time_major", False):
            # One mask per sequence: `locked_dropout` takes batch-major `[batch, time, ...]`.
            swapped = locked_dropout(rngs[layer], dropout_rate, jnp.swapaxes(x, 0, 1))
            layer_in = jnp.swapaxes(swapped, 0, 1)
        elif layer > 0:
            drop = locked_dropout if locked else dropout
            layer_in = drop(rngs[layer], dropout_rate, x)
        if bidirectional:
            y, carry = _bidirectional_pass(
                cell,
                layer_params["fw"],
                layer_params["bw"],
                layer_in,
                lengths,
                merge=merge,
                initial_carry=initial,
                h_mask=mask,
                **unroll_options,
            )
        else:
            y, carry = unroll(
                cell, layer_params, layer_in, lengths, initial, h_mask=mask, **unroll_options
            )
        x = y + x if residual and _residual_applies(layer, x, y) else y
        final_carries.append(carry)
    return x, final_carries


def stack_step(
    cell: Cell,
    params: list[Params],
    carries: list[Carry],
    x: jax.Array,
    *,
    residual: bool = False,
    dropout_rate: float = 0.0,
    rng: jax.Array | None = None,
    active: jax.Array | None = None,
) -> tuple[list[Carry], jax.Array]:
    """One time step of a unidirectional stack.

    `x [batch, input]` -> `(carries', y [batch, hidden])`; without `rng` (evaluation),
    stepping through a sequence gives the same outputs as `apply_stack` over it. With `rng`,
    dropout with `dropout_rate` on each layer's input from layer 1 up, as in `apply_stack`
    (fresh masks each step, like `apply_stack`'s per-element masks): a decoder that runs step
    by step in training (rnn_jax.models.seq2seq) gets the same inter-layer dropout.

    `active [batch]` (bool; None: every row): rows where it is False keep their carries and
    give zeros, as `apply_stack` does past each row's `lengths`: stepping a padded batch with
    `active = t < lengths` gives `apply_stack(..., lengths)`'s outputs and final carries.
    """
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate!r}; allowed: 0 <= rate < 1")
    _check_layers(params, "stack_step")
    for layer, layer_params in enumerate(params):
        if set(layer_params) == {"fw", "bw"}:
            raise ValueError(
                f"stack_step: layer {layer} is bidirectional ({{'fw', 'bw'}} params); a "
                "backward pass reads the whole sequence and cannot stream"
            )
    if len(carries) != len(params):
        raise ValueError(
            f"stack_step: {len(carries)} carries for a stack of {len(params)} layers; "
            "one carry per layer"
        )
    # A carry of batch 1 beside x of batch 3 was broadcast to 3 rows silently.
    batches = {leaf.shape[:1] for leaf in jax.tree.leaves(carries)}
    if jnp.ndim(x) != 2 or batches != {jnp.shape(x)[:1]}:
        raise ValueError(
            f"stack_step: x has shape {jnp.shape(x)} and the carries' leaves batch "
            f"{sorted(batches)}; needs x [batch, input] and every carry leaf [batch, ...]"
        )
    if active is not None:
        active = jnp.asarray(active)
        if active.dtype != jnp.bool_ or active.shape != x.shape[:1]:
            raise ValueError(
                f"stack_step: active has shape {active.shape} and dtype {active.dtype}; "
                f"needs a bool [batch] = {x.shape[:1]} array (True: step that row)"
            )
    rngs = [None] * len(params) if rng is None else list(jax.random.split(rng, len(params)))
    new_carries = []
    for layer, (layer_params, carry) in enumerate(zip(params, carries, strict=True)):
        layer_in = dropout(rngs[layer], dropout_rate, x) if layer > 0 else x
        new_carry, y = cell.step(layer_params, carry, layer_in)
        if active is not None:  # as unroll keeps a carry past `lengths`
            new_carry = _where_valid(active, new_carry, carry)
        x = y + x if residual and _residual_applies(layer, x, y) else y
        new_carries.append(new_carry)
    if active is not None:
        x = _where_valid(active, x, jnp.zeros_like(x))
    return new_carries, x
