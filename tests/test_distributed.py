"""Many devices and many processes: SLURM start-up with one task per node gives each process
all its node's devices (one task per GPU keeps JAX's one device per process); a coordinator
address without a port is named; a run saved on one device resumes on eight; the shardings
of batches, carries and params, the global batch-size check and stop requests, on an abstract
8-device mesh or with jax's process functions replaced (milliseconds, no devices)."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from rnn_jax.train import train_and_evaluate
from tests.test_train_loop import Regression, _config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


HARD_TIMEOUT = 120  # a hung multi-process start ignores SIGTERM: SIGKILL after this


_SHOW_DEVICES = """
from rnn_jax.train import distributed
distributed.initialize(initialization_timeout=60)
import jax
print("RESULT", jax.process_count(), repr(jax.config.read("jax_cuda_visible_devices")), flush=True)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_python(code, env, *args):
    """`python -c code args` from the repository in a session of its own (so that a hung
    multi-process start, which ignores SIGTERM, can be SIGKILLed as a group)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _slurm_processes(tasks, nodes):
    """Start `tasks` processes as `srun` would on `nodes` nodes (all on this machine) and
    return what each sees: `(process_count, jax_cuda_visible_devices)`."""
    port = _free_port()
    procs = []
    for i in range(tasks):
        env = dict(os.environ)
        for name in [k for k in env if k.startswith("SLURM_")] + ["JAX_LOCAL_DEVICE_IDS"]:
            env.pop(name, None)
        env.update(
            JAX_PLATFORMS="cpu",
            JAX_COORDINATOR_PORT=str(port),
            SLURM_JOB_ID="4242",
            SLURM_STEP_NODELIST="127.0.0.1",
            SLURM_NTASKS=str(tasks),
            SLURM_STEP_NUM_NODES=str(nodes),
            SLURM_NNODES=str(nodes),
            SLURM_PROCID=str(i),
            SLURM_LOCALID=str(i % (tasks // nodes)),
        )
        procs.append(_start_python(_SHOW_DEVICES, env))
    seen = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=HARD_TIMEOUT)
            assert proc.returncode == 0, out[-3000:]
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            count, visible = line.split(" ", 2)[1:]
            seen.append((int(count), visible))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return seen


def test_slurm_one_task_per_node_owns_all_the_nodes_devices():
    """launch/multihost.sh starts one task per node; jax.distributed's SLURM detection would
    restrict each process to the one GPU numbered SLURM_LOCALID (4 nodes x 8 GPUs trained on
    4 GPUs). jax_cuda_visible_devices is what that restriction sets ('all' = none)."""
    assert _slurm_processes(tasks=2, nodes=2) == [(2, "'all'"), (2, "'all'")]


def test_slurm_one_task_per_gpu_keeps_jaxs_one_device_per_process():
    # Several tasks on a node: each must keep its own GPU, not all of them.
    assert _slurm_processes(tasks=2, nodes=1) == [(2, "'0'"), (2, "'1'")]


# what a task of an srun step has besides the counts (jax's SLURM detection reads them)
_STEP = {"SLURM_JOB_ID": "42", "SLURM_STEP_NODELIST": "n1", "SLURM_PROCID": "0"}
_STEP["SLURM_LOCALID"] = "0"

_SLURM_STARTS = [
    # one task per node: every device of the node
    ({**_STEP, "SLURM_NTASKS": "2", "SLURM_NNODES": "2"}, []),
    # ... unless the user restricted them: JAX_LOCAL_DEVICE_IDS is read only for None
    ({**_STEP, "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "JAX_LOCAL_DEVICE_IDS": "0,1"}, None),
    # the step's node count, not the allocation's: one task on each of 2 of 4 nodes ...
    ({**_STEP, "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "2", "SLURM_NNODES": "4"}, []),
    # ... and 2 tasks on one node of 2: jax's one GPU per task
    ({**_STEP, "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "1", "SLURM_NNODES": "2"}, None),
]


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "42"},
            r"SLURM_NTASKS=2 asks for 2 processes, but this is not a task of an srun step "
            r"\(SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID unset\): start it with srun",
        ),
        ({"SLURM_NTASKS": "two"}, r"SLURM_NTASKS='two': expected a number of tasks"),
        # the node counts, read for the device ids: "invalid literal for int()"
        (
            {**_STEP, "SLURM_NTASKS": "2", "SLURM_NNODES": "two"},
            r"SLURM_NNODES='two': expected a number of nodes",
        ),
        (
            {**_STEP, "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "2x"},
            r"SLURM_STEP_NUM_NODES='2x': expected a number",
        ),
    ],
)
def test_a_multi_task_allocation_outside_an_srun_step_is_named(monkeypatch, env, message):
    """`python -m ...` in a 2-task allocation's shell or batch script (no srun): jax's
    detection failed with only "coordinator_address should be defined", and a SLURM_NTASKS
    that is not a number with "invalid literal for int()"."""
    with pytest.raises(ValueError, match=message):
        _initialize_calls(monkeypatch, env)


@pytest.mark.parametrize("env, expected", _SLURM_STARTS)
def test_slurm_local_device_ids_follow_the_steps_tasks_per_node(monkeypatch, env, expected):
    """JAX reads JAX_LOCAL_DEVICE_IDS only when `local_device_ids` is None; the `[]` that lifts
    SLURM's one-GPU restriction silently lifted the user's restriction too (all GPUs used)."""
    calls = _initialize_calls(monkeypatch, env)
    assert calls == [{"local_device_ids": expected, "initialization_timeout": 7}]


def test_explicit_arguments_reach_jax_and_one_slurm_task_starts_nothing(monkeypatch):
    """--coordinator_address/--num_processes/--process_id go to jax.distributed unchanged
    (mix-ups show only in a two-process run); a one-task SLURM job is an ordinary run."""
    assert _initialize_calls(monkeypatch, {"SLURM_NTASKS": "1", "SLURM_NNODES": "1"}) == []
    calls = _initialize_calls(monkeypatch, {}, "node0:12355", 4, 3)
    assert calls == [
        {
            "coordinator_address": "node0:12355",
            "num_processes": 4,
            "process_id": 3,
            "local_device_ids": None,
            "initialization_timeout": 7,
        }
    ]


def test_an_empty_slurm_count_reads_as_unset(monkeypatch):
    """One parser for the SLURM counts: an empty SLURM_NTASKS was "expected a number of tasks"
    at start-up but unset for the device ids; now unset (one task, an ordinary run) for both."""
    assert _initialize_calls(monkeypatch, {"SLURM_NTASKS": "", "SLURM_NNODES": ""}) == []


def _initialize_calls(monkeypatch, env, *args):
    """The keyword arguments `distributed.initialize(*args, initialization_timeout=7)` hands
    jax.distributed.initialize under the environment variables `env` (no other SLURM_*)."""
    import jax

    from rnn_jax.train import distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in [k for k in os.environ if k.startswith("SLURM_")] + ["JAX_LOCAL_DEVICE_IDS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    distributed.initialize(*args, initialization_timeout=7)
    return calls


@pytest.mark.parametrize("address", ["node0", "node0:", ":12355", "node0:port", "node0:\u00b2"])
def test_a_coordinator_address_without_a_port_is_named(address):
    """jax.distributed failed on `--coordinator_address=node0` with "IndexError: list index
    out of range" (it splits off the port); checked before jax is asked to connect."""
    from rnn_jax.train import distributed

    with pytest.raises(ValueError, match=rf"--coordinator_address='{address}': must be host:port"):
        distributed.initialize(address, 2, 0, 5)


_RESUME_ON_EIGHT = """
import json, sys
import jax
from rnn_jax.train import train_and_evaluate
from tests.test_train_loop import Regression, _config
assert jax.device_count() == 8, jax.devices()
config = _config(num_seeds=2, train__num_steps=20, train__checkpoint_every=10)
results = train_and_evaluate(config, sys.argv[1], Regression())
print("RESULT", json.dumps(results["final"]), results["timing"]["resumed_from_step"])
"""


def test_a_run_saved_on_one_device_resumes_on_eight(tmp_path):
    """Checkpoints restore onto another device count (orbax reshards to the new mesh): a run
    of 10 steps on one device, resumed to 20 on eight, ends where 20 steps on one device do."""
    first = _config(num_seeds=2, train__num_steps=10, train__checkpoint_every=10)
    train_and_evaluate(first, tmp_path / "run", Regression())
    (tmp_path / "run" / "results.json").unlink()
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    proc = _start_python(_RESUME_ON_EIGHT, env, str(tmp_path / "run"))
    try:
        # The reference trains here while the resumed run starts up and trains (one core each).
        config = _config(num_seeds=2, train__num_steps=20, train__checkpoint_every=10)
        reference = train_and_evaluate(config, tmp_path / "reference", Regression())["final"]
        out, _ = proc.communicate(timeout=HARD_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    final_json, resumed_from = line[len("RESULT ") :].rsplit(" ", 1)
    final = json.loads(final_json)
    assert int(resumed_from) == 10
    assert final.keys() == reference.keys()
    for name in ("train_loss", "valid_loss"):
        np.testing.assert_allclose(
            final["per_seed"][name], reference["per_seed"][name], rtol=1e-5, err_msg=name
        )
    assert final["step"] == 20 and final["best_step"] == reference["best_step"]


def test_put_global_batch_names_a_leaf_without_the_batch_axis():
    """A per-batch scalar was refused with "must be a multiple of the device count 1" on one
    device (any size is), naming no leaf."""
    from rnn_jax.train import distributed

    mesh = distributed.data_mesh()
    with pytest.raises(ValueError, match=r"batch\['count'\] of shape \(\) has no batch axis 0"):
        distributed.put_global_batch({"inputs": np.zeros((8, 3)), "count": np.int32(3)}, mesh)


def test_shardings_split_batches_and_carries_on_their_batch_axis_and_params_as_asked():
    """On an 8-device mesh (abstract: no devices needed): batches on axis 0, carries
    `[num_seeds, batch, ...]` on axis 1, params replicated unless `train.shard_params`, then
    split along their last axis 8 divides but never the replica axis."""
    import jax
    from jax.sharding import AbstractMesh
    from jax.sharding import PartitionSpec as P

    from rnn_jax.train import distributed
    from rnn_jax.train.steps import _state_shardings

    mesh = AbstractMesh((8,), (distributed.DATA_AXIS,))
    leaf = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
    state = {
        "params": {"w": leaf(8, 16, 24, 5), "b": leaf(8, 3)},
        "others": {},
        "opt_state": {"mu": leaf(8, 16, 24, 5)},
        "carry": {"h": leaf(8, 16, 4)},
        "rng": leaf(8, 2),
        "step": leaf(),
    }
    specs = lambda shard: jax.tree.map(lambda s: s.spec, _state_shardings(state, mesh, shard))
    split = P(None, None, "data", None)
    assert specs(False) == {
        **jax.tree.map(lambda _: P(), state),
        "carry": {"h": P(None, "data")},
    }
    assert specs(True) == {
        **specs(False),
        "params": {"w": split, "b": P()},
        "opt_state": {"mu": split},
    }
    assert distributed.batch_sharded(mesh).spec == P("data")
    # The checks come before any device is touched: on 8 devices a batch of 12 is refused.
    with pytest.raises(ValueError, match=r"batch\['x'\] of shape \(2, 12\): its batch dim"):
        distributed.put_global_batch({"x": np.zeros((2, 12))}, mesh, batch_axis=1)


def test_batch_sizes_must_divide_the_global_device_count(monkeypatch):
    """Two hosts of 8 devices: batch 24 divides each host's 8 but not the 16 it is split
    over (`put_global_batch` would refuse the first batch, after compiling)."""
    import jax

    from rnn_jax.train.config import ConfigError
    from rnn_jax.train.steps import check_divisible

    monkeypatch.setattr(jax, "device_count", lambda: 16)
    monkeypatch.setattr(jax, "local_device_count", lambda: 8)
    with pytest.raises(ConfigError, match=r"batch_size=24: must be a multiple of .* \(16\)"):
        check_divisible(_config(train__batch_size=24, num_seeds=2), Regression())


def test_a_stop_request_on_any_process_stops_every_process(monkeypatch):
    """SIGTERM reaching one process of a multi-process run (a `kill` of one of them) must
    stop all of them at the same step, checkpointed."""
    import jax
    from jax.experimental import multihost_utils

    from rnn_jax.train import distributed

    other = [1]  # the other process's flag
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    gather = lambda x: np.stack([x, np.asarray(other, np.int32)])
    monkeypatch.setattr(multihost_utils, "process_allgather", gather)
    assert distributed.any_process(False) is True
    other[0] = 0
    assert distributed.any_process(False) is False
