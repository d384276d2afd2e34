"""Seed replicas: `num_seeds` copies of a run (seeds `seed .. seed+n-1`) trained under vmap.

Replica i of a vmapped run draws exactly the random numbers of a single run with seed
`seed + i` (same base key, same streams); the data order is shared by all replicas.
Each base key has two streams: `init_key` (parameters) and `step_key` (dropout at a step).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_INIT_STREAM, _STEP_STREAM = 0, 1


def base_keys(seed: int, num_seeds: int) -> jax.Array:
    """Raw uint32 keys `[num_seeds, 2]` for seeds `seed .. seed+num_seeds-1`."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


def init_key(base_key: jax.Array) -> jax.Array:
    """The key a replica initialises its model with."""
    return jax.random.fold_in(base_key, _INIT_STREAM)


def step_key(base_key: jax.Array, step: jax.Array) -> jax.Array:
    """The key of training step `step`: a pure function of (base key, step), so a resumed
    run draws the same dropout masks as an uninterrupted one."""
    return jax.random.fold_in(jax.random.fold_in(base_key, _STEP_STREAM), step)


def summarize(per_seed: dict[str, Any], num_seeds: int) -> dict[str, Any]:
    """Collapse per-replica lists: one seed -> the value itself; many -> mean, `<name>_std`
    (population std over replicas) and the lists under `per_seed`."""
    out: dict[str, Any] = {}
    lists = {}
    for name, value in per_seed.items():
        if isinstance(value, list) and len(value) == num_seeds:
            lists[name] = value
            out[name] = float(np.mean(value)) if num_seeds > 1 else float(value[0])
            if num_seeds > 1:
                out[f"{name}_std"] = float(np.std(value))
        else:
            out[name] = value
    if num_seeds > 1:
        out["per_seed"] = lists
    return out


def replica(tree: Any, index: int) -> Any:
    """Replica `index` of a stacked state pytree (leading `[num_seeds]` axis)."""
    return jax.tree.map(lambda x: x[index], tree)
