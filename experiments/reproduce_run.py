"""One experiment of the main job, run as a supervised subprocess.

`run_experiment` runs `python -m experiments.<name>` in the checkout under its workdir's run
lock, its output in W/<name>/log.txt, with a progress line while it runs. A watchdog kills
and restarts (resuming) a run whose CPU time stops moving; the experiment runs in a process
group of its own, which is stopped whole (SIGTERM, then SIGKILL after a grace period) when
the main job is stopped, and gets SIGTERM on Linux when the main job dies. The exit statuses
below name the ways a run can fail without an exit status of its own.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

from experiments.reproduce_variants import record_variant, variant_config
from rnn_jax.files import LOCK_FILE, RESULTS_FILE, lock_run

REPO = pathlib.Path(__file__).resolve().parents[1]

STALLED = -1000  # exit status reported for a run the watchdog killed
NO_RESULTS = -1001  # reported for a run that exited 0 without writing its results.json
IN_USE = -1002  # reported for an experiment not run: another process holds its workdir's lock
NOT_STARTED = -1003  # reported for an experiment whose workdir could not be made
STOP_GRACE_S = 60.0  # how long a stopped experiment gets to save its checkpoint


def run_experiment(
    name: str,
    workdir: pathlib.Path,
    variant: str,
    index: str,
    stall_s: float = 0.0,
    max_restarts: int = 5,
) -> tuple[float, int]:
    """Runs one experiment as a subprocess, printing a progress line while it runs; returns
    (wall time, exit status). Its output goes to W/<name>/log.txt.

    Watchdog (`stall_s` > 0, Linux): a process can stall with its CPUs idle (the wedge of
    sessions 1-3 was jaxlib 0.10's batched LAPACK kernels deadlocking the XLA:CPU pool at a
    model's init, fixed by rnn_jax/linalg.py; docs/design.md). A run whose CPU time has not
    moved for `stall_s` seconds is killed and started again, at most `max_restarts` times;
    experiments resume from their finished points and checkpoints, so little is redone.

    The experiment runs holding an exclusive lock on W/<name>/run.lock (`rnn_jax.files.
    lock_run`, as `launch.sweep` runs do): two main jobs on one workdir trained one run side
    by side and wedged each other's checkpoints; the second now leaves it (IN_USE). On Linux
    the experiment gets SIGTERM when the main job dies, even by SIGKILL (it saves its
    checkpoint), instead of training on with nothing watching it. A workdir that cannot be
    made is NOT_STARTED (the other experiments still run); an exit 0 without results.json is
    NO_RESULTS."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        lock = lock_run(workdir)
        if lock is not None:
            record_variant(workdir, variant, variant_config(name, variant))
    except OSError as error:  # a file of the experiment's name in W, a full disk
        print(f"{index} {name}: FAILED (not started: {error})", flush=True)
        return 0.0, NOT_STARTED
    if lock is None:
        print(
            f"{index} {name}: NOT RUN: {workdir} is in use by another process (it holds "
            f"{workdir / LOCK_FILE}); rerun once that one has ended",
            flush=True,
        )
        return 0.0, IN_USE
    try:
        return _run_locked(name, workdir, variant, index, stall_s, max_restarts, lock)
    finally:
        os.close(lock)


def _run_locked(
    name: str,
    workdir: pathlib.Path,
    variant: str,
    index: str,
    stall_s: float,
    max_restarts: int,
    lock: int,
) -> tuple[float, int]:
    """`run_experiment`'s attempts, with `lock` held (and passed on to the experiment)."""
    command = [
        sys.executable,
        "-m",
        f"experiments.{name}",
        f"--workdir={workdir}",
        f"--config=experiments/configs/{name}.py:{variant}",
    ]
    start = time.monotonic()
    for attempt in range(max_restarts + 1):
        code = _run_watched(command, workdir, f"{index} {name}", start, stall_s, lock=lock)
        if code != STALLED:
            break
        message = f"no CPU time used for {stall_s:.0f}s: killed (attempt {attempt + 1})"
        with open(workdir / "log.txt", "a") as log:
            log.write(f"experiments.reproduce: {message}\n")
        print(f"\r{index} {name}: {message}{' ' * 40}", flush=True)
    elapsed = time.monotonic() - start
    if code == 0 and not (workdir / RESULTS_FILE).is_file():
        # "done" was printed, and the job's last line said its log was named above
        code = NO_RESULTS
    why = (
        f"stalled {max_restarts + 1} times"
        if code == STALLED
        else f"exit 0 without {RESULTS_FILE}"
        if code == NO_RESULTS
        else f"exit {code}"
    )
    status = "done" if code == 0 else f"FAILED ({why}; see {workdir / 'log.txt'})"
    print(f"\r{index} {name}: {status} in {elapsed:.0f}s{' ' * 80}", flush=True)
    return elapsed, code


def _run_watched(
    command: list[str],
    workdir: pathlib.Path,
    label: str,
    start: float,
    stall_s: float,
    poll_s: float = 5.0,
    lock: int | None = None,
) -> int:
    """One attempt: the exit status, or STALLED after killing a run that stopped using CPU.
    Either way no process of the experiment's group outlives the attempt. `lock`: a
    descriptor the experiment inherits (the run lock, held while it lives)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if env.get("RNN_JAX_DATA"):
        # The experiment runs in the checkout: a relative data root means the caller's
        # directory, as it does for an experiment run directly.
        env["RNN_JAX_DATA"] = os.path.abspath(env["RNN_JAX_DATA"])
    with open(workdir / "log.txt", "a") as log:
        # Its own process group, so that the watchdog measures and stops the experiment
        # together with any processes it starts (throughput's spawned measurements).
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            pass_fds=() if lock is None else (lock,),
            preexec_fn=_die_with_parent(),
        )
        try:
            code = _watch(process, workdir, label, start, stall_s, poll_s)
        except BaseException:
            # SIGTERM (made SystemExit by `main`), Ctrl-C or an error here: an experiment left
            # running would go on writing into its workdir with nothing watching it, and a
            # rerun would start a second trainer on the same directory.
            _stop(process)
            raise
    # The experiment has exited, but processes it started may not have: one killed (the OOM
    # killer's SIGKILL) or crashed past its cleanup leaves its children running, beside the
    # next experiment (its memory, its CPU, its timings) and writing into this workdir.
    _kill_group(process, signal.SIGKILL)
    return code


def _die_with_parent() -> Any:
    """A `preexec_fn` that asks Linux to SIGTERM the experiment when the main job dies
    (`PR_SET_PDEATHSIG`): killed by SIGKILL or SIGQUIT, which no handler sees, the main job
    left its experiment training on, and a rerun started a second one beside it. None
    elsewhere. prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the main job died before the call
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the experiment and its children (it saves a checkpoint and exits), SIGKILL them
    after `grace_s`, or at once when a second Ctrl-C or SIGTERM cuts the grace period short."""
    if process.poll() is not None:
        _kill_group(process, signal.SIGKILL)  # children it left behind
        return
    _kill_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill_group(process, signal.SIGKILL)  # a wedged XLA process ignores SIGTERM
    process.wait()


def _kill_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the experiment's process group (its session: `_run_watched`)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _watch(
    process: subprocess.Popen,
    workdir: pathlib.Path,
    label: str,
    start: float,
    stall_s: float,
    poll_s: float,
) -> int:
    """Wait for `process`, printing progress; kill it and return STALLED if it stops using CPU."""
    cpu, since = _cpu_seconds(process.pid), time.monotonic()
    while True:
        try:
            return process.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        last = _last_line(workdir / "log.txt")
        elapsed = time.monotonic() - start
        print(f"\r{label}: {elapsed:5.0f}s | {last[:90]:<90}", end="", flush=True)
        now_cpu = _cpu_seconds(process.pid)
        if now_cpu is None or cpu is None or now_cpu > cpu + 0.5:
            cpu, since = now_cpu, time.monotonic()
        elif now_cpu < cpu:  # an orphan in the group exited: its time left the sum
            cpu = now_cpu
        elif stall_s > 0 and time.monotonic() - since > stall_s:
            _kill_group(process, signal.SIGKILL)  # a wedged XLA process ignores SIGTERM
            process.wait()
            return STALLED


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` and, when it leads a process group (an
    experiment: `_run_watched`), of every other process in that group, each with its children
    already reaped: an experiment waiting on a busy child is not stalled. From /proc; None
    elsewhere or when `pid` is gone."""
    ticks, found = 0, False
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if stat.parent.name == str(pid) or int(fields[2]) == pid:  # fields[2]: pgrp
            found |= stat.parent.name == str(pid)
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def _last_line(path: pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2000))
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
