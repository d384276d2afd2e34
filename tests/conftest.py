"""Shared test fixtures.

Real data is read from `RNN_JAX_DATA` (default: `../shared/data` beside the repository);
tests that need it use the `data_root` fixture and skip with a reason when it is absent.
"""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_root() -> pathlib.Path:
    """Where the shared real datasets live (RNN_JAX_DATA or ../shared/data)."""
    env = os.environ.get("RNN_JAX_DATA")
    if env:
        return pathlib.Path(env)
    return REPO_ROOT.parent / "shared" / "data"


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
