"""Run a module's command line as a user does (`python -m MODULE ARGS`) from the repo root,
capturing its output: what the CLI tests check for exit status, messages and files."""

import pathlib
import subprocess
import sys

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
    from rnn_jax import exits

    assert proc.returncode == exits.REFUSED, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not workdir.exists()
    return proc.stderr


def refused_cli(module: str, config: str, workdir: pathlib.Path, *flags: str) -> str:
    """Runs `python -m module --workdir=workdir --config=config flags`; `check_refused`."""
    proc = run_module(module, f"--workdir={workdir}", f"--config={config}", *flags, timeout=300)
    return check_refused(proc, workdir)
