"""Many devices and many hosts: `jax.distributed` start-up and data-parallel shardings.

Data parallelism: one mesh axis `"data"` over every device of every process. Batches are
sharded along their batch axis, parameters and optimiser state are replicated. Each process
builds the *global* batch on the host (our data is small and deterministic) and hands
`jax.make_array_from_callback` the slices its devices hold, so results do not depend on the
device or process count. Random numbers are drawn inside jit for the global shape; with
`jax_threefry_partitionable` (the default) they are the same however the array is sharded.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_jax.predicates import is_decimal

DATA_AXIS = "data"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Start `jax.distributed` when this is a multi-process run; a no-op otherwise.

    Explicit arguments win; without them, SLURM (`SLURM_NTASKS` > 1) and Cloud TPU pods are
    detected by `jax.distributed.initialize()` itself. Must run before any JAX computation.

    Raises:
      ValueError: when only some of the three explicit arguments are given, or
        `coordinator_address` is not host:port.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError(
                "--coordinator_address, --num_processes and --process_id go together; got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}"
            )
        host, colon, port = coordinator_address.rpartition(":")
        if not (colon and host and is_decimal(port)):
            # jax would fail on a missing port with "IndexError: list index out of range".
            raise ValueError(
                f"--coordinator_address={coordinator_address!r}: must be host:port (process "
                "0's host name or address and a port free on it, e.g. node0:12355)"
            )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=_slurm_local_device_ids(),
            initialization_timeout=initialization_timeout,
        )
    elif _slurm_tasks() > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
        jax.distributed.initialize(
            local_device_ids=_slurm_local_device_ids(),
            initialization_timeout=initialization_timeout,
        )
    else:
        return
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


# What jax's SLURM detection reads (jax._src.clusters.slurm_cluster): a task of an `srun` step
_SLURM_STEP_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)


def _slurm_tasks() -> int:
    """SLURM_NTASKS (1 when unset or empty); ValueError naming it when it is not a number, or
    when it asks for several processes outside an `srun` step (jax's detection then fails with
    only "coordinator_address should be defined", and a bad number was "invalid literal for
    int()")."""
    tasks = _slurm_count("SLURM_NTASKS") or 1
    missing = [v for v in _SLURM_STEP_VARIABLES if v not in os.environ]
    if tasks > 1 and missing:
        raise ValueError(
            f"SLURM_NTASKS={tasks} asks for {tasks} processes, but this is not a task of an "
            f"srun step ({', '.join(missing)} unset): start it with srun (launch/multihost.sh "
            "slurm), pass --coordinator_address, --num_processes and --process_id, or set "
            "SLURM_NTASKS=1 to train in this one process"
        )
    return tasks


def _slurm_local_device_ids() -> list[int] | None:
    """`local_device_ids` for `jax.distributed.initialize`: `[]` (no restriction: every
    device of the node) when SLURM runs one task per node, else None (jax decides).

    Under SLURM jax gives each process only the GPU numbered by its `SLURM_LOCALID`, which
    suits one task per GPU; with one task per node (`launch/multihost.sh slurm`) every
    process would own GPU 0 alone and 4 nodes x 8 GPUs would train on 4 of them. An empty
    list is what jax's auto-detection leaves alone and its device restriction ignores.
    None too when `JAX_LOCAL_DEVICE_IDS` is set: jax reads it only for `local_device_ids=None`,
    and a user's device restriction must not be lifted.
    """
    if os.environ.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    tasks = _slurm_count("SLURM_NTASKS")
    nodes = _slurm_count("SLURM_STEP_NUM_NODES") or _slurm_count("SLURM_NNODES")
    if tasks is None or nodes is None or tasks != nodes:
        return None
    return []


# What each SLURM count the start-up reads counts, for its error message.
_SLURM_COUNTS = {"SLURM_NTASKS": "tasks", "SLURM_STEP_NUM_NODES": "nodes", "SLURM_NNODES": "nodes"}


def _slurm_count(name: str) -> int | None:
    """The number in SLURM variable `name` (None when unset or empty), the one parser of the
    counts `_slurm_tasks` and `_slurm_local_device_ids` read; ValueError naming it when it is
    not a plain decimal number (it was "invalid literal for int()", naming no variable). These
    counts are plain numbers; the "2(x2)" form is SLURM_TASKS_PER_NODE's, read by no one here."""
    text = os.environ.get(name)
    if not text:
        return None
    if not is_decimal(text.strip()):
        raise ValueError(f"{name}={text!r}: expected a number of {_SLURM_COUNTS[name]}")
    return int(text)


def data_mesh() -> Mesh:
    """A 1-D mesh over all global devices, axis name `"data"`.

    The axis is `Auto`: XLA propagates shardings through the model (the task's code needs no
    sharding annotations), unlike `Explicit` axes, make_mesh's default.
    """
    return jax.make_mesh(
        (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shard axis `batch_axis` over the data axis (replicas of vmapped seeds lead with axis 0)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def parameter_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Shard a state leaf `[num_seeds, ...]` over the data axis along its last axis that the
    device count divides (not the replica axis); replicate it when there is none."""
    for axis in reversed(range(1, len(shape))):
        if shape[axis] % mesh.size == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def put_global_batch(batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
    """Place a host pytree of global-batch numpy arrays on the mesh, sharded on `batch_axis`.

    Every process passes the same global values and keeps only its devices' slices, so no
    cross-process communication happens here.

    Raises:
      ValueError: naming the leaf, when it has no axis `batch_axis` or its size there is
        not divisible by the device count.
    """
    sharding = batch_sharded(mesh, batch_axis)

    def put(path: tuple, x: Any) -> jax.Array:
        x = np.asarray(x)
        name = f"batch{jax.tree_util.keystr(path)}"
        if x.ndim <= batch_axis:
            # Reported as "must be a multiple of the device count 1" on one device, which any
            # size is: the leaf has no batch axis at all (a per-batch scalar, say).
            raise ValueError(
                f"{name} of shape {x.shape} has no batch axis {batch_axis}: every leaf of a "
                "batch is an array with the global batch along that axis"
            )
        if x.shape[batch_axis] % mesh.size:
            raise ValueError(
                f"{name} of shape {x.shape}: its batch dimension (axis {batch_axis}) "
                f"must be a multiple of the device count {mesh.size}"
            )
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map_with_path(put, batch)


def to_host(tree: Any) -> Any:
    """Fetch a pytree of (possibly multi-process) arrays to numpy on every process."""

    def fetch(x: Any) -> np.ndarray:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any of them (used for stop requests)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([flag], dtype=np.int32))
    return bool(np.any(flags))
