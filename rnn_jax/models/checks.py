"""Argument checks the models share: id ranges against vocabulary sizes, choices by name.

Checks on arrays run only when the array is concrete (not traced), i.e. on the first eager
call or on the host before a jitted step; under `jax.jit` they are skipped, not wrong.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.predicates import is_int


def check_choice(name: str, value: object, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {', '.join(map(repr, allowed))}")


def check_positive(**sizes: int) -> None:
    for name, size in sizes.items():
        if not is_int(size) or size < 1:
            raise ValueError(f"{name}={size!r} must be a positive int")


def check_ids(name: str, ids: jax.Array, size: int, size_name: str, mask: jax.Array = None) -> None:
    """Raise if a concrete id array holds ids outside [0, size) (where `mask` is True)."""
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
