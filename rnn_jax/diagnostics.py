"""Gradient-flow diagnostics of a recurrent cell along a trajectory.

What the vanishing/exploding-gradient literature measures (Bengio et al. 1994; Pascanu,
Mikolov & Bengio 2013; Le et al. 2015), computed from the *actual* cell, not from W_hh alone:

- `hidden_state_grad_norms`: ‖∂L/∂h_t‖ for every t, the total gradient reaching the state at
  step t (through all later steps), i.e. the "vanishing-gradient picture" when plotted against
  the distance T − t from the loss.
- `state_jacobians`: J_t = ∂h_t/∂h_{t−1} of the cell's step along a trajectory (`jax.jacrev`).
- `jacobian_product_log10_singular_values`: the singular values of ∂h_T/∂h_{T−k} = J_T ⋯ J_{T−k+1}
  for several k; ‖∂L/∂h_{T−k}‖ ≤ σ_max(∂h_T/∂h_{T−k}) ‖∂L/∂h_T‖ is the bound those papers use.
  A product that is exactly 0 (a ReLU RNN with every unit off at one step) gives -inf.
- `sigmoid_gate_preactivations` + `gate_saturation`: how often gates sit near 0 or 1
  (Karpathy, Johnson & Fei-Fei 2015 count a gate as saturated below 0.1 / above 0.9).
- `per_layer_grad_norms`: the global norm of each sub-tree of a gradient pytree.

"State" h_t is the cell's whole recurrent carry (for an LSTM both h and c), flattened with
`jax.flatten_util.ravel_pytree`: that is the quantity gradients flow through. Functions take a
`step_fn(carry, x) -> (carry, y)` over a batch (e.g. `functools.partial(cell.step, params)`), so
they work for any cell of `rnn_jax.cells` and for hand-written test cells alike. Arrays are
batch-major: `xs [batch, time, features]`, carries with a leading batch axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnn_jax import linalg

Carry = Any
StepFn = Callable[[Carry, jax.Array], tuple[Carry, jax.Array]]

# Sigmoid gates of the fused pre-activation `z_x + z_h`, in PyTorch gate order (design.md):
# name -> (chunk index, number of chunks). Exact for the plain LSTM and PyTorch-form GRU cells.
LSTM_SIGMOID_GATES = {"input": (0, 4), "forget": (1, 4), "output": (3, 4)}
GRU_SIGMOID_GATES = {"reset": (0, 3), "update": (1, 3)}


def _time_major(xs: jax.Array) -> jax.Array:
    if xs.ndim < 2:
        raise ValueError(f"xs: expected [batch, time, ...], got shape {xs.shape}")
    return jnp.swapaxes(xs, 0, 1)


def trajectory(step_fn: StepFn, carry0: Carry, xs: jax.Array) -> Carry:
    """The carries h_1 … h_T of `step_fn` run over `xs [batch, time, features]`.

    Returns a pytree like `carry0` with a time axis after the batch axis: `[batch, time, ...]`.
    """

    def body(carry: Carry, x: jax.Array) -> tuple[Carry, Carry]:
        carry, _ = step_fn(carry, x)
        return carry, carry

    _, carries = jax.lax.scan(body, carry0, _time_major(xs))
    return jax.tree.map(lambda c: jnp.swapaxes(c, 0, 1), carries)


def hidden_state_grad_norms(
    step_fn: StepFn,
    output_fn: Callable[[Carry], jax.Array],
    loss_fn: Callable[[jax.Array], jax.Array],
    carry0: Carry,
    xs: jax.Array,
) -> jax.Array:
    """‖∂L/∂h_t‖ for every example and step: `[batch, time]`.

    The loss is `loss_fn(ys)` with `ys [batch, time, ...]` = `output_fn(h_t)` stacked over t.
    The gradient is the total one: through h_t's own output and through every later step.
    Computed by adding a zero perturbation ε_t to each h_t and differentiating w.r.t. ε.
    """
    batch, time = xs.shape[:2]
    zeros = jax.tree.map(lambda c: jnp.zeros((time, *c.shape), c.dtype), carry0)

    def perturbed_loss(eps: Carry) -> jax.Array:
        def body(carry: Carry, inputs: tuple[jax.Array, Carry]) -> tuple[Carry, jax.Array]:
            x, e = inputs
            carry, _ = step_fn(carry, x)
            carry = jax.tree.map(jnp.add, carry, e)
            return carry, output_fn(carry)

        _, ys = jax.lax.scan(body, carry0, (_time_major(xs), eps))
        return loss_fn(jnp.swapaxes(ys, 0, 1))

    grads = jax.grad(perturbed_loss)(zeros)
    return _l2_norm([g.reshape(time, batch, -1) for g in jax.tree.leaves(grads)]).T


def _l2_norm(parts: list[jax.Array]) -> jax.Array:
    """‖·‖₂ of `parts` joined along their last axis, scaled by the largest |entry| first.

    The plain sqrt(Σ x²) underflows to 0 in float32 once every entry is below ~1e-19 (their
    squares are below 1e-38), and overflows to inf above ~1e19, though the norm itself is
    representable: a vanishing gradient of 1e-24 would read as exactly 0.

    XLA computes `x / scale` as `x * (1 / scale)`, and `1 / scale` flushes to 0 once it is
    subnormal (scale above ~8.5e37 in float32): an exploding gradient read as a norm of 0.
    So the scale is clamped to [2^-e, 2^e], e = maxexp - 28 (100 in float32), where it and its
    reciprocal are normal; the scaled entries stay within 2^±49 of 1, whose squares do too.
    Computed in float32 or wider (float16 has too few exponent bits for that), returned in
    the parts' dtype.
    """
    dtype = jnp.result_type(*parts)
    wide = jnp.promote_types(jnp.float32, dtype)
    parts = [p.astype(wide) for p in parts]
    bound = 2.0 ** (jnp.finfo(wide).maxexp - 28)
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(p), axis=-1, initial=0) for p in parts]), axis=0)
    # inf, NaN: 1 (inf is restored below, NaN stays in the squares); 0 gives 0 at any scale.
    safe = jnp.where(jnp.isfinite(scale), jnp.clip(scale, 1 / bound, bound), 1)
    squares = sum(jnp.sum(jnp.square(p / safe[..., None]), axis=-1) for p in parts)
    norm = jnp.where(jnp.isposinf(scale), jnp.inf, jnp.sqrt(squares) * safe)
    return norm.astype(dtype)


def _flat_step(step_fn: StepFn, carry_example: Carry) -> Callable:
    """h_{t−1} (flat, one example) , x_t -> h_t (flat): the step as a map R^D -> R^D."""
    _, unravel = ravel_pytree(carry_example)

    def flat(h_prev: jax.Array, x: jax.Array) -> jax.Array:
        carry = jax.tree.map(lambda c: c[None], unravel(h_prev))
        carry, _ = step_fn(carry, x[None])
        return ravel_pytree(jax.tree.map(lambda c: c[0], carry))[0]

    return flat


def state_jacobians(step_fn: StepFn, carry0: Carry, xs: jax.Array) -> jax.Array:
    """J_t = ∂h_t/∂h_{t−1} along the trajectory from `carry0`: `[batch, time, D, D]`.

    `J[b, t, i, j] = ∂h_{t+1}[i] / ∂h_t[j]` in 0-based time (h_0 = carry0), D = flattened state
    size (LSTM: 2·hidden, in the carry's pytree order).
    """
    carries = trajectory(step_fn, carry0, xs)
    previous = jax.tree.map(
        lambda c0, c: jnp.concatenate([c0[:, None], c[:, :-1]], axis=1), carry0, carries
    )
    flat_previous = jax.vmap(jax.vmap(lambda c: ravel_pytree(c)[0]))(previous)
    example = jax.tree.map(lambda c: c[0], carry0)
    jac = jax.jacrev(_flat_step(step_fn, example))
    return jax.vmap(jax.vmap(jac))(flat_previous, xs)


def jacobian_product_log10_singular_values(jacobians: jax.Array, ks: tuple[int, ...]) -> jax.Array:
    """log10 of the singular values of ∂h_T/∂h_{T−k} = J_T J_{T−1} ⋯ J_{T−k+1}, for each k.

    Args:
      jacobians: `[batch, time, D, D]` from `state_jacobians`.
      ks: product lengths, each in 1 … time.

    Returns:
      `[batch, len(ks), D]`, descending. The product is rescaled after every factor (its log
      scale tracked separately), so products of hundreds of contracting factors do not
      underflow float32. A singular value that is exactly 0 gives -inf; in particular a
      product that is exactly 0 (some factor J_t = 0, e.g. a ReLU RNN whose units are all off
      at step t) gives -inf for every singular value, σ_max included.
    """
    time = jacobians.shape[1]
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > time:
        raise ValueError(f"ks={ks}: each k must be in 1..{time} (the trajectory length)")
    reversed_jacobians = jnp.flip(jacobians, axis=1)  # J_T first

    def multiply(state: tuple[jax.Array, jax.Array], j: jax.Array) -> tuple[Any, None]:
        product, log_scale = state
        product = product @ j
        # Rescaled by its largest |entry|, not its Frobenius norm: the squares in the norm
        # underflow float32 for entries below ~1e-19, which would make a small product look
        # like 0. The product is exactly 0 iff that entry is 0; it then stays 0 (0 / 1) and
        # its log scale -inf for good (clamping the divisor instead added log10(tiny) = -37.9
        # per later factor: a finite, made-up value).
        largest = jnp.max(jnp.abs(product))
        zero = largest == 0  # not `~(largest > 0)`: a NaN product stays NaN, not "σ = 0"
        divisor = jnp.where(zero, 1.0, largest)
        log_divisor = jnp.where(zero, -jnp.inf, jnp.log10(divisor))
        return (product / divisor, log_scale + log_divisor), None

    def one_example(js: jax.Array) -> jax.Array:
        state = (jnp.eye(js.shape[-1], dtype=js.dtype), jnp.zeros((), js.dtype))
        done, rows = 0, {}
        for k in sorted(set(ks)):  # scan segment by segment; an SVD only at the requested k
            state, _ = jax.lax.scan(multiply, state, js[done:k])
            done = k
            sv = linalg.singular_values(state[0])  # rnn_jax/linalg.py: no pool deadlock
            log_scale = state[1]
            rows[k] = jnp.where(jnp.isneginf(log_scale), -jnp.inf, jnp.log10(sv) + log_scale)
        return jnp.stack([rows[k] for k in ks])

    return jax.vmap(one_example)(reversed_jacobians)


def sigmoid_gate_preactivations(cell: Any, params: Any, carry0: Carry, xs: jax.Array) -> jax.Array:
    """The fused gate pre-activations z_x + z_h at every step: `[batch, time, G]`.

    Uses the cell's own `input_projection`, `recurrent_projection` and `step` (design.md), so
    the gates are those of the trained cell; the recurrent projection is taken of h_{t−1}.

    Raises:
      ValueError: for a cell whose `recurrent_projection` is not one `[..., G]` array to add
        to the input projection (`gru_cho`: a pair; `min_gru`: None), which has no such fused
        pre-activation (those failed with a TypeError about `+` after the whole trajectory).
    """
    z_h_shape = jax.eval_shape(cell.recurrent_projection, params, carry0)
    if not isinstance(z_h_shape, jax.ShapeDtypeStruct):
        raise ValueError(
            f"sigmoid_gate_preactivations: {type(cell).__name__}.recurrent_projection gives "
            f"{type(z_h_shape).__name__}, not one [..., G] array, so its gates are not "
            "sigmoids of z_x + z_h (supported: cells like the plain LSTM and PyTorch-form GRU)"
        )
    carries = trajectory(lambda c, x: cell.step(params, c, x), carry0, xs)
    previous = jax.tree.map(
        lambda c0, c: jnp.concatenate([c0[:, None], c[:, :-1]], axis=1), carry0, carries
    )
    z_x = cell.input_projection(params, xs)
    z_h = jax.vmap(lambda c: cell.recurrent_projection(params, c), in_axes=1, out_axes=1)(previous)
    return z_x + z_h


def gate_saturation(
    preactivations: jax.Array,
    gates: Mapping[str, tuple[int, int]],
    low: float = 0.1,
    high: float = 0.9,
) -> dict[str, dict[str, jax.Array]]:
    """Saturation statistics of sigmoid gates.

    Args:
      preactivations: `[..., G]` fused pre-activations (e.g. from `sigmoid_gate_preactivations`).
      gates: name -> (chunk index, number of chunks), e.g. `LSTM_SIGMOID_GATES`.
      low, high: a gate value below `low` / above `high` counts as left / right saturated.

    Returns:
      `{gate: {"mean": mean activation, "left": fraction < low, "right": fraction > high}}`,
      fractions over every unit, step and example.
    """
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"low={low}, high={high}: need 0 < low < high < 1")
    stats = {}
    for name, (index, chunks) in gates.items():
        width, rem = divmod(preactivations.shape[-1], chunks)
        if rem or not 0 <= index < chunks:
            raise ValueError(
                f"gates[{name!r}]={(index, chunks)}: preactivation size "
                f"{preactivations.shape[-1]} is not {chunks} chunks or index out of range"
            )
        values = jax.nn.sigmoid(preactivations[..., index * width : (index + 1) * width])
        stats[name] = {
            "mean": jnp.mean(values),
            "left": jnp.mean(values < low),
            "right": jnp.mean(values > high),
        }
    return stats


def per_layer_grad_norms(grads: Any, depth: int = 1) -> dict[str, jax.Array]:
    """Global L2 norm of each sub-tree of `grads`, grouped by the first `depth` path keys.

    `{"encoder": {"W_ih": a, "W_hh": b}, "readout": {"W": c}}` with depth 1 ->
    `{"encoder": sqrt(|a|² + |b|²), "readout": |c|}`; list indices count as keys.
    """
    if depth < 1:
        raise ValueError(f"depth={depth}: expected >= 1")
    groups: dict[str, list[jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name = "/".join(_key_name(k) for k in path[:depth]) or "<root>"
        groups.setdefault(name, []).append(jnp.ravel(leaf))
    # scaled: the plain sqrt(Σ g²) read float32 gradients below ~1e-19 as a norm of exactly 0
    return {name: _l2_norm(leaves) for name, leaves in groups.items()}


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)
