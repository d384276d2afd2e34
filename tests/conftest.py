"""Shared test fixtures.

Real data is read from `RNN_JAX_DATA` (default: `../shared/data` beside the repository);
tests that need it use the `data_root` fixture and skip with a reason when it is absent.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _share_compiled_programs() -> None:
    """One JAX persistent compilation cache for the whole test run (docs/design.md, "The
    suite runs on two workers"): both pytest-xdist workers and every subprocess a test starts
    (runs of the experiments and the launcher) read it, so a program that one of them has
    compiled is loaded, not compiled again. A fresh folder per run, made by the process that
    loads this file first (the controller, or the one process under `-n 0`) and removed when it
    exits; the workers and subprocesses inherit it through the environment. Set
    `RNN_JAX_TEST_COMPILATION_CACHE=0` to compile everything anew, or `JAX_COMPILATION_CACHE_DIR`
    to a folder of your own to keep it between runs."""
    if os.environ.get("RNN_JAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="rnn_jax-test-jax-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    # Every program: the suite's are small and most compile in well under JAX's 1 s default.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


_share_compiled_programs()  # before any test module imports jax, which reads these


def shared_data_root() -> pathlib.Path:
    """Where the shared real datasets live: the library's own rule
    (`rnn_jax.data.default_data_root`: RNN_JAX_DATA, a leading `~` the home folder, else
    ../shared/data). A copy of it here took `RNN_JAX_DATA="~/data"` literally, so every
    real-data test skipped while the library read the data there."""
    from rnn_jax.data.root import default_data_root  # after the JAX cache is set up above

    return default_data_root()


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set RNN_JAX_DATA to ../shared/data)")
    return root


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh home folder for `~`, and a separate cwd where a literal "~" would appear."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home"
