"""The README's Python blocks run as they stand (a user copies them first)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    source = BLOCKS[index]
    if "import torch" in source and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (the dev set-up installs torch 2.13.0 CPU)")
    exec(compile(source, f"README.md python block {index}", "exec"), {"__name__": "readme"})
