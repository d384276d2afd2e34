"""Many devices and many processes: SLURM start-up with one task per node gives each process
all its node's devices (one task per GPU keeps JAX's one device per process); a coordinator
address without a port is named; a run saved on one device resumes on eight."""

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


@pytest.mark.parametrize("local_ids, expected", [(None, []), ("0,1", None)])
def test_slurm_one_task_per_node_keeps_a_users_jax_local_device_ids(
    monkeypatch, local_ids, expected
):
    """JAX reads JAX_LOCAL_DEVICE_IDS only when `local_device_ids` is None; the `[]` that lifts
    SLURM's one-GPU restriction silently lifted the user's restriction too (all GPUs used)."""
    import jax

    from rnn_jax.train import distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("JAX_LOCAL_DEVICE_IDS", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NNODES", "2")
    if local_ids is not None:
        monkeypatch.setenv("JAX_LOCAL_DEVICE_IDS", local_ids)
    distributed.initialize(initialization_timeout=7)
    assert calls == [{"local_device_ids": expected, "initialization_timeout": 7}]


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
