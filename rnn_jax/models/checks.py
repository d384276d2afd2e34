"""Argument checks the models share: id ranges against vocabulary sizes, choices by name.

Checks on array *values* run only when the array is concrete (not traced), i.e. on the first
eager call or on the host before a jitted step; under `jax.jit` they are skipped, not wrong.
Checks on shapes and dtypes are static and run under `jax.jit` too (session 33: a `[1]`
lengths or `[batch, 1]` tags were broadcast there silently).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# check_positive is re-exported: the models import their checks from here.
from rnn_jax.predicates import check_positive as check_positive


def check_choice(name: str, value: object, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {', '.join(map(repr, allowed))}")


def check_rates(**rates: float) -> None:
    """Dropout rates must lie in [0, 1) (NaN neither): a rate of 1 zeroes every unit."""
    for name, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name}={rate!r}; allowed: 0 <= rate < 1")


def check_sequences(name: str, ids: jax.Array) -> None:
    """Raise unless `ids` is `[batch, time]` with time >= 1 (static: fine under jit). A 1-D
    array failed unpacking `batch, time = ids.shape` or indexing `ids.shape[1]`, naming
    nothing, and a transformer LM returned `[batch, 0, vocab]` logits for time 0."""
    if jnp.ndim(ids) != 2 or jnp.shape(ids)[1] < 1:
        raise ValueError(
            f"{name} has shape {jnp.shape(ids)}; expected int [batch, time] with time >= 1"
        )


def check_ids(name: str, ids: jax.Array, size: int, size_name: str, mask: jax.Array = None) -> None:
    """Raise if `ids` is not of an integer dtype (bool neither; static), if a concrete id array
    holds ids outside [0, size) (where `mask` is True), or if `mask` has another shape than
    `ids` (checked traced too: shapes are static)."""
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        # float ids reached nnx.Embed ("Input type must be an integer") or optax unnamed
        raise ValueError(f"{name} has dtype {dtype}; expected integer ids")
    if mask is not None and jnp.shape(mask) != jnp.shape(ids):
        # it was broadcast under jit and an unnamed IndexError eagerly
        raise ValueError(
            f"{name} has shape {jnp.shape(ids)} but its mask {jnp.shape(mask)} (from the lengths)"
        )
    if isinstance(ids, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        return
    values = np.asarray(ids)
    if mask is not None:
        values = values[np.asarray(mask).astype(bool)]
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ValueError(
            f"{name} holds ids in [{values.min()}, {values.max()}] but {size_name}={size}: "
            f"the data's vocabulary does not match the model's"
        )


def length_mask(lengths: jax.Array, time: int) -> jax.Array:
    """[batch] -> [batch, time] bool, True inside each sequence."""
    return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def check_same_batch(source: jax.Array, target_inputs: jax.Array) -> None:
    """A sequence-to-sequence model's source and target batches must agree: a source batch
    of 1 against target inputs of 3 was broadcast (transformer) or a TypeError (RNN)."""
    if jnp.shape(source)[0] != jnp.shape(target_inputs)[0]:
        raise ValueError(
            f"source {list(jnp.shape(source))} and target_inputs "
            f"{list(jnp.shape(target_inputs))} must have the same batch size"
        )


def check_step_tokens(tokens: jax.Array, state: object, name: str = "tokens") -> None:
    """A streaming `step`'s tokens must be `int [batch]`, one per sequence of `state` (a
    pytree whose leaves all have the batch as axis 0): a `[batch, 1]` token or a state of
    another batch was broadcast silently (logits `[batch, batch, vocab]`, or a transformer
    cache whose position and layers disagree on the batch)."""
    batch = jax.tree.leaves(state)[0].shape[0]
    if jnp.shape(tokens) != (batch,):
        raise ValueError(
            f"{name} has shape {jnp.shape(tokens)}; expected int [batch]=({batch},), one token "
            "per sequence of the state"
        )
