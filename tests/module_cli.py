"""Run a module's command line as a user does (`python -m MODULE ARGS`) from the repo root,
capturing its output: what the CLI tests check for exit status, messages and files."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused_cli(module: str, config: str, workdir: pathlib.Path, *flags: str) -> str:
    """Runs `python -m module --workdir=workdir --config=config flags`; checks it exits with
    the config-error status, without a traceback and without creating `workdir`; returns
    its stderr (for the caller to check that the message names the bad value)."""
    from rnn_jax.train import cli

    proc = run_module(module, f"--workdir={workdir}", f"--config={config}", *flags, timeout=300)
    assert proc.returncode == cli.CONFIG_EXIT_STATUS, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not workdir.exists()
    return proc.stderr
