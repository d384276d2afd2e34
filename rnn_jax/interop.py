"""PyTorch interop: run a `torch.nn.RNN` / `nn.LSTM` / `nn.GRU` as a pure JAX function.

    apply_fn, params = from_torch(torch_module)
    ys, final_state = apply_fn(params, xs, lengths=None, initial_state=None)

`params` mirrors the module's state dict: one array per torch parameter, same name and same
shape (`weight_ih_l{k}[_reverse] [G, in]`, `weight_hh_l{k}[_reverse] [G, H]`,
`bias_ih_l{k}[_reverse] [G]`, `bias_hh_l{k}[_reverse] [G]`; biases never merged), so gradients
w.r.t. `params` line up with torch's `.grad` one for one. `apply_fn` transposes each weight to
rnn_jax's `[in, out]` layout (torch's gate orders are already ours) and runs
`rnn_jax.layers.apply_stack` on the default scan, in evaluation mode (torch's inter-layer
dropout is not applied). Torch is imported only inside `from_torch`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import cells, layers

# torch module class name -> rnn_jax cell name (gate orders match: LSTM i,f,g,o; GRU r,z,n).
CELL_OF_MODULE = {"RNN": "elman", "LSTM": "lstm", "GRU": "gru"}


def from_torch(module: Any) -> tuple[Callable[..., Any], dict[str, jax.Array]]:
    """Convert a `torch.nn.RNN`, `torch.nn.LSTM` or `torch.nn.GRU` to `(apply_fn, params)`.

    Supported options: any `num_layers`, `bidirectional`, `batch_first`, `nonlinearity`
    (RNN), `bias`; `dropout` is accepted and not applied (evaluation semantics). `params`
    keep the module's dtype (bfloat16 included); float64 only with JAX's x64 mode on
    (`jax_enable_x64`): without it JAX makes them float32, and `from_torch` warns.

    `apply_fn(params, xs, lengths=None, initial_state=None) -> (ys, final_state)` is pure,
    jittable and differentiable, with torch's semantics:
      xs: `[batch, time, input]` if the module is `batch_first`, else `[time, batch, input]`.
      lengths: `[batch]` ints, 1 <= length <= time; behaves like `pack_padded_sequence`
        followed by `pad_packed_sequence(..., total_length=time)`: zero outputs past each
        sequence's end, final state at its last valid step, the backward direction starting
        there.
      initial_state: `h_0 [num_layers * num_directions, batch, hidden]` (LSTM: `(h_0, c_0)`),
        or None for zeros.
      ys: `[batch, time, num_directions * hidden]` (time-major if not `batch_first`).
      final_state: `h_n` shaped like `h_0` (LSTM: `(h_n, c_n)`).

    Raises:
      ValueError: a module other than those three, or an option rnn_jax does not implement
        (`proj_size > 0`), naming it and what is allowed.
    """
    import torch

    kind = type(module).__name__
    if not isinstance(module, torch.nn.RNNBase) or kind not in CELL_OF_MODULE:
        raise ValueError(
            f"module={kind} is not supported; allowed: torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"proj_size={module.proj_size} is not supported (LSTM with projections); "
            "allowed: proj_size=0"
        )
    if module.dropout and module.num_layers > 1 and module.training:
        # torch would drop between layers in this mode; apply_fn never does
        warnings.warn(
            f"from_torch: {kind}(dropout={module.dropout}) is in training mode, but apply_fn "
            "has evaluation semantics (no dropout between layers); call module.eval() first "
            "to compare like with like",
            stacklevel=2,
        )
    options = {"nonlinearity": module.nonlinearity} if kind == "RNN" else {}
    cell = cells.get_cell(CELL_OF_MODULE[kind], **options)
    num_layers, hidden_size = module.num_layers, module.hidden_size
    directions = ("", "_reverse") if module.bidirectional else ("",)
    batch_first, has_bias = module.batch_first, module.bias
    params = {name: _to_jax(tensor) for name, tensor in module.named_parameters()}
    narrowed = sorted(
        name
        for name, tensor in module.named_parameters()
        if tensor.dtype == torch.float64 and params[name].dtype != jnp.float64
    )
    if narrowed:
        # jnp.asarray drops float64 to float32 silently when x64 is off
        warnings.warn(
            f"from_torch: {kind} has float64 parameters ({', '.join(narrowed)}) but JAX's "
            "x64 mode is off, so params and apply_fn are float32; set "
            "jax.config.update('jax_enable_x64', True) first to keep float64",
            stacklevel=2,
        )
    gates = cell.num_gates * hidden_size

    def cell_params(params: dict[str, jax.Array], layer: int, suffix: str) -> dict:
        """rnn_jax layout: `W [in, G]` is torch's `weight [G, in]` transposed."""
        key = f"l{layer}{suffix}"
        w_ih, w_hh = params[f"weight_ih_{key}"], params[f"weight_hh_{key}"]
        zeros = jnp.zeros((gates,), w_ih.dtype)
        return {
            "W_ih": w_ih.T,
            "W_hh": w_hh.T,
            "b_ih": params[f"bias_ih_{key}"] if has_bias else zeros,
            "b_hh": params[f"bias_hh_{key}"] if has_bias else zeros,
        }

    def apply_fn(
        params: dict[str, jax.Array],
        xs: jax.Array,
        lengths: jax.Array | None = None,
        initial_state: Any = None,
    ) -> tuple[jax.Array, Any]:
        if jnp.ndim(xs) != 3:
            # Checked here, in torch's terms: `unroll` would name the batch-major array it is
            # given (swapped from a time-major `xs`), not the caller's.
            layout = "[batch, time, input]" if batch_first else "[time, batch, input]"
            raise ValueError(
                f"xs has shape {jnp.shape(xs)}; expected {layout} (batch_first={batch_first}; "
                "unbatched inputs are not supported)"
            )
        batch = jnp.shape(xs)[0 if batch_first else 1]
        if jnp.shape(xs)[-1] != module.input_size:
            # likewise: `unroll` named the transposed W_ih [in, G], a shape torch never shows
            raise ValueError(
                f"xs has shape {jnp.shape(xs)}; its last axis must be the module's "
                f"input_size={module.input_size}"
            )
        stack = []
        for layer in range(num_layers):
            per_direction = [cell_params(params, layer, suffix) for suffix in directions]
            stack.append(
                {"fw": per_direction[0], "bw": per_direction[1]}
                if module.bidirectional
                else per_direction[0]
            )
        xs_bm = xs if batch_first else jnp.swapaxes(xs, 0, 1)
        ys, carries = layers.apply_stack(
            cell,
            stack,
            xs_bm,
            lengths,
            _initial_carries(
                initial_state, num_layers, len(directions), kind == "LSTM", batch, hidden_size
            ),
            bidirectional=module.bidirectional,
        )
        return (ys if batch_first else jnp.swapaxes(ys, 0, 1)), _final_state(
            carries, module.bidirectional, kind == "LSTM"
        )

    return apply_fn, params


def _initial_carries(
    state: Any, num_layers: int, directions: int, is_lstm: bool, batch: int, hidden: int
) -> Any:
    """torch `h_0 [L*D, B, H]` (LSTM `(h_0, c_0)`) -> per-layer carries (pairs if D = 2)."""
    if state is None:
        return None
    if is_lstm and not isinstance(state, (tuple, list)):
        # tuple(array) split a lone h_0 [L*D, B, H] along its first axis: with L*D = 2 it
        # passed as a pair and failed naming a [B, H] shape the caller never gave
        raise ValueError(
            f"initial_state for an LSTM must be a pair (h_0, c_0); got one array of shape "
            f"{jnp.shape(state)}"
        )
    parts = tuple(state) if is_lstm else (state,)
    if is_lstm and len(parts) != 2:
        raise ValueError(f"initial_state for an LSTM must be (h_0, c_0); got {len(parts)} arrays")
    shape = (num_layers * directions, batch, hidden)
    for name, part in zip(("h_0", "c_0") if is_lstm else ("h_0",), parts, strict=True):
        if tuple(jnp.shape(part)) != shape:
            # the whole shape, in torch's terms: a batch or hidden size that did not match
            # was named by `unroll` as the per-layer carries' [batch, hidden] shapes
            raise ValueError(
                f"initial_state {name} has shape {tuple(jnp.shape(part))}; expected "
                f"[num_layers * num_directions, batch, hidden_size] = {shape}"
            )

    def carry(index: int) -> Any:
        return tuple(p[index] for p in parts) if is_lstm else parts[0][index]

    carries = [
        [carry(layer * directions + d) for d in range(directions)] for layer in range(num_layers)
    ]
    return [tuple(c) if directions == 2 else c[0] for c in carries]


def _final_state(carries: list, bidirectional: bool, is_lstm: bool) -> Any:
    """Per-layer final carries -> torch `h_n [L*D, B, H]` (LSTM `(h_n, c_n)`)."""
    flat = [c for layer in carries for c in (layer if bidirectional else (layer,))]
    if is_lstm:
        return jnp.stack([c[0] for c in flat]), jnp.stack([c[1] for c in flat])
    return jnp.stack(flat)


def _to_jax(tensor: Any) -> jax.Array:
    """A torch tensor as a JAX array of the same dtype. NumPy has no bfloat16, so `.numpy()`
    refuses one: it goes through float32, which holds every bfloat16 value exactly."""
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return jnp.asarray(tensor.float().numpy(), jnp.bfloat16)
    return jnp.asarray(tensor.numpy())


def to_torch_state_dict(params: dict[str, jax.Array]) -> dict[str, Any]:
    """`params` (from `from_torch`, maybe trained in JAX) as a torch state dict to load back."""
    import torch

    def to_torch(value: jax.Array) -> Any:
        if value.dtype == jnp.bfloat16:  # torch.from_numpy refuses ml_dtypes' bfloat16
            return torch.from_numpy(np.array(value, np.float32)).to(torch.bfloat16)
        return torch.from_numpy(np.array(value))

    return {name: to_torch(value) for name, value in params.items()}
