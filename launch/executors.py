"""Executing a sweep's runs: parallel subprocesses on this machine (`run_local`), or one submitit
job per run, on SLURM or submitit's local executor (`run_submitit`).

A run is `execute`: its experiment command in its workdir, output to log.txt, holding the run's
lock (`rnn_jax.files.lock_run`) so that two sweeps never execute one run at once. Both launchers
count a run done only when it exited 0 and wrote results.json; a rerun of the sweep resumes the
others. `run_local` gives each of its slots one GPU of CUDA_VISIBLE_DEVICES (or shares the
machine, one run per CPU core) and forwards a SIGTERM to the running experiments. The jobs
submitted run this module's `execute`, which cloudpickle pickles by reference because the module
is imported by its name, never run as `__main__` (`python -m launch.sweep` runs the CLI).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from launch.plan import REPO_ROOT, Run
from rnn_jax.files import LOCK_FILE, lock_run

RUN_IN_USE = -75  # execute's code for a run another process is executing (no process exits so)
# The experiments `execute` is running in this process, and whether `run_local` was told to
# stop (SIGTERM): its handler forwards the signal to them (`_forward_sigterm`).
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


def execute(command: Sequence[str], workdir: str, env_update: Mapping[str, str]) -> int:
    """Runs one experiment command, output to workdir/log.txt; returns its exit code, or
    RUN_IN_USE without running it when another process holds the run's lock (`lock_run`):
    two sweeps in one root trained the same run in one workdir at once. The experiment
    inherits the lock, so it stays held while the experiment lives, even if the sweep is
    killed. Module-level so that submitit can pickle it."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_update}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    lock = lock_run(workdir)
    if lock is None:
        return RUN_IN_USE
    try:
        if _STOPPING.is_set():  # submitted just before the sweep was told to stop
            return -signal.SIGTERM
        with open(workdir / "log.txt", "a") as log:
            process = subprocess.Popen(
                list(command), cwd=REPO_ROOT, env=env, stdout=log, stderr=log, pass_fds=(lock,)
            )
            with _CHILDREN_LOCK:
                _CHILDREN.add(process)
            try:
                if _STOPPING.is_set():  # the handler ran before it was registered
                    process.terminate()
                return process.wait()
            finally:
                with _CHILDREN_LOCK:
                    _CHILDREN.discard(process)
    finally:
        os.close(lock)


def _forward_sigterm(signum: int, frame: Any) -> None:
    """`run_local`'s SIGTERM handler: start no more runs and pass the signal on to the running
    experiments (each saves a checkpoint and exits; a rerun resumes it). Without it, `kill`
    of the sweep left its experiments running on, unsupervised, for the rest of their runs."""
    _STOPPING.set()
    with _CHILDREN_LOCK:
        for process in _CHILDREN:
            process.send_signal(signum)


def _slots(parallel: int) -> list[dict[str, str]]:
    """Per-slot environments: one GPU each when CUDA_VISIBLE_DEVICES lists several; no
    preallocation where runs may share a GPU (more runs than listed GPUs, or none listed)."""
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if parallel < 0:
        raise ValueError(f"--parallel={parallel}: expected >= 0 (0 = automatic)")
    if gpus:
        count = parallel or len(gpus)
        slots = [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(count)]
        if count > len(gpus):
            # Several runs per GPU: JAX's default preallocation (75% of the GPU's memory per
            # process) would make the second one fail with out-of-memory.
            for slot in slots:
                slot["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        return slots
    count = parallel or _cpu_cores()
    # No GPU listed: on a GPU machine with CUDA_VISIBLE_DEVICES unset every run uses the same
    # GPU, and each preallocating 75% of its memory made all runs but one fail (harmless on CPU).
    return [{"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if count > 1 else {} for _ in range(count)]


def _cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity: a SLURM allocation, `taskset`, a
    container's cpuset), not `os.cpu_count()`, the machine's: with 4 cores of a 64-core node
    allotted, the sweep started 64 runs at once on them."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _failure(run: Run, code: int) -> str:
    """'FAILED (exit N, log PATH): <the log's last line>', the line that usually names the
    error (absl and Python both end with it)."""
    if code == RUN_IN_USE:
        return (
            f"NOT RUN: {run.workdir} is in use by another process (it holds "
            f"{run.workdir / LOCK_FILE}); rerun this sweep once that one has ended"
        )
    log = run.workdir / "log.txt"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = f": {lines[-1].strip()[:300]}" if lines else ""
    return f"FAILED (exit {code}, log {log}){last}"


def run_local(runs: Sequence[Run], parallel: int = 0) -> list[Run]:
    """Runs the unfinished runs as parallel subprocesses; returns the runs that failed.

    Called from the main thread, it forwards a SIGTERM to the running experiments (each saves
    a checkpoint and exits), starts no further run and then exits (SystemExit) saying so; the
    same command later resumes them."""
    todo = [r for r in runs if not r.finished]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; {len(todo)} to run")
    slots = _slots(parallel)
    _STOPPING.clear()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _forward_sigterm)
    try:
        failed, queue = _run_pool(todo, slots)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if _STOPPING.is_set():
        _STOPPING.clear()
        sys.exit(
            f"launch.sweep: stopped by SIGTERM ({len(queue)} run(s) not started); running the "
            "same command again resumes the unfinished runs"
        )
    return failed


def _run_pool(todo: Sequence[Run], slots: Sequence[Mapping[str, str]]) -> tuple[list, list]:
    """`run_local`'s pool: (the runs that failed, those never started after a SIGTERM)."""
    free = list(range(len(slots)))
    failed, done = [], 0
    queue = list(todo)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(slots)) as pool:
        pending = {}

        def submit(run: Run) -> None:
            slot = free.pop()
            future = pool.submit(execute, run.command, str(run.workdir), slots[slot])
            pending[future] = (run, slot, time.monotonic())

        while queue and free:
            submit(queue.pop(0))
        while pending:
            finished, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                run, slot, start = pending.pop(future)
                free.append(slot)
                try:
                    code, error = future.result(), None
                except OSError as exc:
                    # The run's folder or log could not be made (a file of that name in the
                    # root, a full disk): a traceback that ended the sweep, the other runs
                    # never started.
                    code, error = None, exc
                done += 1
                ok = error is None and code == 0 and run.finished
                if ok:
                    status = "done"
                elif error is not None:
                    status = f"FAILED (not started: {error})"
                elif _STOPPING.is_set():
                    status = f"stopped (SIGTERM; log {run.workdir / 'log.txt'})"
                else:
                    status = _failure(run, code)
                print(
                    f"[{done}/{len(todo)}] {run.name}: {status} in {time.monotonic() - start:.0f}s",
                    flush=True,
                )
                if not ok:
                    failed.append(run)
                if queue and not _STOPPING.is_set():
                    submit(queue.pop(0))
    return failed, queue


def run_submitit(runs: Sequence[Run], cluster: str, parameters: Mapping[str, Any]) -> list[Run]:
    """One submitit job per unfinished run (cluster "slurm" or "local"); waits for them all.

    ValueError when submitit cannot submit from here (no SLURM on this machine, a parameter it
    refuses): a traceback ('Could not detect "srun"'). A submission the scheduler refuses (a
    partition it does not know, a time over the limit) ends the submissions: that run and the
    ones after it are failed (NOT SUBMITTED, with the error), and the jobs already submitted
    are waited for (it was a traceback that left them running unwatched)."""
    import submitit

    todo = [r for r in runs if not r.finished]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; {len(todo)} to submit")
    if not todo:
        return []
    root = todo[0].workdir.parent
    try:
        executor = submitit.AutoExecutor(folder=root / ".submitit" / "%j", cluster=cluster)
        executor.update_parameters(**parameters)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"submitit cannot submit {cluster!r} jobs from here: {error}") from None
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    # The importable `launch.executors.execute`, which cloudpickle pickles by reference: the
    # functions of a module run under a name it cannot be imported by (`__main__`, as `python -m
    # launch.sweep` ran this code while it was in launch/sweep.py) it pickles by value with the
    # globals they use (`_STOPPING`'s lock), and every submission failed with
    # "TypeError: cannot pickle '_thread.lock' object".
    target = importlib.import_module("launch.executors").execute
    jobs, unsubmitted = [], []
    for index, run in enumerate(todo):
        executor.update_parameters(name=run.name)
        try:
            jobs.append((run, executor.submit(target, run.command, str(run.workdir), {})))
        except Exception as error:  # noqa: BLE001 - sbatch's refusal, reported by run
            unsubmitted = todo[index:]
            reason = " ".join(str(error).split())[:300]
            print(
                f"{run.name}: NOT SUBMITTED ({type(error).__name__}: {reason}); nor the "
                f"{len(unsubmitted) - 1} run(s) after it",
                flush=True,
            )
            break
    failed = []
    for i, (run, job) in enumerate(jobs, 1):
        try:
            code = job.result()
        except Exception as error:  # noqa: BLE001 - a job's failure is reported, not raised
            print(f"{run.name}: job {job.job_id} raised {error!r}")
            code = -1
        ok = code == 0 and run.finished
        print(f"[{i}/{len(jobs)}] {run.name}: {'done' if ok else _failure(run, code)}")
        if not ok:
            failed.append(run)
    return failed + unsubmitted
