"""Review 21 of many devices / many hosts and checkpoints: SLURM start-up with one task per
node gives each process all its node's devices; a coordinator address without a port is named;
a best checkpoint left ahead of the periodic ones by a killed run is not taken as the resumed
run's best, and the best one a resume needs is still on disk; a periodic checkpoint is never
complete before the best one its loop state names; a run saved on one device resumes on eight."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rnn_jax.train import train_and_evaluate
from rnn_jax.train.checkpoint import Checkpointer, abstract_like
from tests.test_train_loop import Regression, Stream, _config

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
        for name in [k for k in env if k.startswith("SLURM_")]:
            del env[name]
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


class _Crash(RuntimeError):
    pass


class _CrashingStream(Stream):
    """Stream that dies at its `at`-th batch (0-based, counted over epochs), as a killed
    process would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            if self.epoch * self.batches + index == self.at:
                raise _Crash(f"killed at step {self.at + 1}")
            yield batch


class _CrashingRegression(Regression):
    def train_data(self):
        return _CrashingStream(at=16)  # step 17


def test_best_checkpoint_left_ahead_of_the_periodic_ones_is_not_the_resumed_runs_best(tmp_path):
    """Killed at step 17 (best saved at 15, periodic at 10), the run resumes from step 10;
    resumed with train.num_steps=10 it must report and evaluate the best of steps <= 10, as a
    run of 10 steps does, not the step-15 model the dead segment left in W/best."""
    config = _config(train__num_steps=20, train__checkpoint_every=10)
    with pytest.raises(_Crash):
        train_and_evaluate(config, tmp_path / "run", _CrashingRegression())
    run = tmp_path / "run"
    reader = Checkpointer(run, 2, read_only=True)
    assert reader.latest.all_steps() == [10] and reader.latest_step(best=True) == 15
    reader.close()
    shorter = _config(train__num_steps=10, train__checkpoint_every=10)
    resumed = train_and_evaluate(shorter, run, Regression())
    fresh = train_and_evaluate(shorter, tmp_path / "fresh", Regression())
    assert resumed["timing"]["resumed_from_step"] == 10
    assert resumed["final"]["best_step"] == 10
    assert resumed["final"] == fresh["final"]
    reader = Checkpointer(run, 2, read_only=True)
    assert reader.best.all_steps() == [10]
    reader.close()


def _tiny_state():
    return {"w": jax.numpy.arange(4.0), "step": jax.numpy.zeros((), jax.numpy.int32)}


def test_best_checkpoints_a_resume_needs_are_kept_and_stale_ones_dropped(tmp_path):
    """Best at 5, periodic at 10, best at 15, killed before the periodic save of 20: the
    resumed run (from 10, whose loop says best_step=5) needs best 5, which orbax's
    max_to_keep=1 deleted when 15 was saved; best 15 is stale."""
    state = _tiny_state()
    checkpointer = Checkpointer(tmp_path, 2)
    checkpointer.save(5, state, {"best_step": 5}, best=True)
    checkpointer.save(10, state, {"best_step": 5})
    checkpointer.save(15, state, {"best_step": 15}, best=True)
    checkpointer.close()
    resumed = Checkpointer(tmp_path, 2)
    assert resumed.best.all_steps() == [5]
    assert resumed.restore(abstract_like(state), best=True)[1] == {"best_step": 5}
    # Pruning: once a periodic save after step 15 is complete, best 5 is never needed again.
    resumed.save(15, state, {"best_step": 15}, best=True)
    resumed.save(20, state, {"best_step": 15})
    assert resumed.best.all_steps() == [5, 15]  # periodic 20 may still be in flight
    resumed.save(30, state, {"best_step": 15})
    assert resumed.best.all_steps() == [15]
    resumed.close()


def test_a_reader_leaves_a_live_runs_best_checkpoint_alone(tmp_path):
    """restore_model may read a run that is still training, whose newest best checkpoint is
    ahead of its newest periodic one: a read-only Checkpointer deletes and creates nothing."""
    config = _config(train__num_steps=20, train__checkpoint_every=10)
    train_and_evaluate(config, tmp_path, Regression())
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    reader = Checkpointer(tmp_path, 2, read_only=True)
    assert reader.best.all_steps() == [20]
    reader.close()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    Checkpointer(tmp_path / "nothing", 2, read_only=True).close()
    assert not (tmp_path / "nothing").exists()


def test_periodic_save_waits_for_the_pending_best_save(tmp_path, monkeypatch):
    """The loop saves the best checkpoint of a step, then the periodic one, both
    asynchronously: a kill after the periodic one is complete but before the best one is
    would resume into a loop whose best_step names a best checkpoint that is not on disk."""
    checkpointer = Checkpointer(tmp_path, 2)
    best = checkpointer.best
    finalize = best._finalize

    def slow_finalize(*args, **kwargs):  # the best save's background work takes a while
        time.sleep(0.5)
        return finalize(*args, **kwargs)

    monkeypatch.setattr(best, "_finalize", slow_finalize)
    best_in_flight = []
    latest_save = checkpointer.latest.save

    def recording_save(*args, **kwargs):
        best_in_flight.append(best.is_saving_in_progress())
        return latest_save(*args, **kwargs)

    monkeypatch.setattr(checkpointer.latest, "save", recording_save)
    state = _tiny_state()
    checkpointer.save(5, state, {"best_step": 5}, best=True)
    checkpointer.save(5, state, {"best_step": 5})
    checkpointer.wait()
    assert best_in_flight == [False]
    restored, loop = checkpointer.restore(abstract_like(state), best=True)
    np.testing.assert_array_equal(restored["w"], np.arange(4.0))
    assert loop == {"best_step": 5}
    checkpointer.close()


@pytest.mark.parametrize("address", ["node0", "node0:", ":12355", "node0:port"])
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


def test_multihost_manual_run_fails_when_a_host_fails(tmp_path):
    """`RUN=1 launch/multihost.sh manual ...` starts one ssh per host in the background: a
    bare `wait` returned 0 whatever they returned, so a run whose processes all failed (a
    wrong path, an unreachable coordinator) looked like a success to its caller."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text(
        '#!/usr/bin/env bash\necho "$1" >> "$SSH_LOG"\n[ "$1" = bad ] && exit 7\nexit 0\n'
    )
    (fake / "ssh").chmod(0o755)

    def launch(hosts):
        env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
        env.update(
            PATH=f"{fake}:{env['PATH']}", HOSTS=hosts, RUN="1", SSH_LOG=str(tmp_path / "log")
        )
        return subprocess.run(
            ["bash", os.path.join(REPO, "launch/multihost.sh"), "manual", "exposure_bias"]
            + ["full", "/shared/eb"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = launch("good0 good1")
    assert ok.returncode == 0, ok.stderr
    failed = launch("good0 bad good1")
    assert failed.returncode == 7, (failed.returncode, failed.stderr)
    assert "bad" in failed.stderr
    assert sorted((tmp_path / "log").read_text().split()) == sorted(
        ["good0", "good1", "good0", "bad", "good1"]
    )


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--coordinator_address=node0", "--num_processes=2", "--process_id=0"), "host:port"),
        (("--num_processes=2",), "num_processes=2"),
    ],
)
def test_bad_multihost_flags_exit_2_naming_them(tmp_path, flags, named):
    """An experiment's command line turned these into a traceback and exit 1: the multi-host
    start-up ran outside the check that gives bad flags exit 2 and one line."""
    from tests.module_cli import refused_cli

    config = "experiments/configs/language_model.py:smoke"
    assert named in refused_cli("experiments.language_model", config, tmp_path / "run", *flags)


def test_multihost_passes_arguments_with_spaces_and_quotes_through_unchanged(tmp_path):
    """The command was assembled as `'${base[*]}'` and eval'ed: an override holding a space or
    a single quote was split or broke the quoting. A fake srun runs the command it is given,
    and a fake python records the argv it receives; a relative workdir is the caller's."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/usr/bin/env bash\nshift\nexec "$@"\n')
    (fake / "python").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "open(os.environ['ARGV_LOG'], 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    for name in ("srun", "python"):
        (fake / name).chmod(0o755)
    overrides = ["--config.model.name=a b", '--config.note=it\'s "x" $HOME']
    caller = tmp_path / "caller"
    caller.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    env.update(
        PATH=f"{fake}:{env['PATH']}", PYTHON=str(fake / "python"), ARGV_LOG=str(tmp_path / "a")
    )
    result = subprocess.run(
        ["bash", os.path.join(REPO, "launch/multihost.sh"), "slurm", "exposure_bias", "full"]
        + ["runs/eb", *overrides],
        cwd=caller,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "a").read_text()) == [
        "-m",
        "experiments.exposure_bias",
        f"--workdir={caller / 'runs/eb'}",
        "--config=experiments/configs/exposure_bias.py:full",
        *overrides,
    ]
