"""Run a module's command line as a user does (`python -m MODULE ARGS`) from the repo root,
capturing its output: what the CLI tests check for exit status, messages and files."""

import atexit
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]


class StartedModule:
    """`python -m MODULE ARGS` started in the background (most of such a run is imports, on
    one core: the tests go on beside it); `result()` waits for it as `run_module` does, up to
    `timeout` seconds from the call."""

    def __init__(self, module: str, *args: str, timeout: float = 120, env=None) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def result(self) -> subprocess.CompletedProcess:
        """The finished run (killed, and TimeoutExpired raised, past its timeout)."""
        try:
            stdout, stderr = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_refused(proc: subprocess.CompletedProcess, workdir: pathlib.Path) -> str:
    """Checks that a run exited with the config-error status, without a traceback and without
    creating `workdir`; returns its stderr (for the caller to check that the message names
    the bad value)."""
    from rnn_jax.train import cli

    assert proc.returncode == cli.CONFIG_EXIT_STATUS, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not workdir.exists()
    return proc.stderr


def refused_cli(module: str, config: str, workdir: pathlib.Path, *flags: str) -> str:
    """Runs `python -m module --workdir=workdir --config=config flags`; `check_refused`."""
    proc = run_module(module, f"--workdir={workdir}", f"--config={config}", *flags, timeout=300)
    return check_refused(proc, workdir)


class _LoggedModule(StartedModule):
    """A StartedModule whose output goes to files in `logs` (a pipe nobody reads while the
    tests go on would fill up and stop a long run)."""

    def __init__(self, module: str, *args: str, logs: pathlib.Path, timeout: float) -> None:
        self.timeout = timeout
        self.logs = logs
        with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args], cwd=REPO, stdout=out, stderr=err
            )

    def result(self) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise
        out, err = ((self.logs / name).read_text() for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_in_background(module: str, *args: str, timeout: float = 900) -> tuple:
    """`python -m MODULE --workdir=W ARGS` started now, W a fresh folder (for a test module's
    `start_in_background`, see conftest.py): `(W, StartedModule)`; killed, and its folders
    removed, when the test session's process exits."""
    top = pathlib.Path(tempfile.mkdtemp(prefix=module.rsplit(".", 1)[-1] + "_"))
    workdir = top / "workdir"
    run = _LoggedModule(module, f"--workdir={workdir}", *args, logs=top, timeout=timeout)
    atexit.register(shutil.rmtree, top, ignore_errors=True)
    atexit.register(run.close)
    return workdir, run
