"""Where the real datasets live: `default_data_root()`.

Order: an explicit `root` (config `data.root`), else the `RNN_JAX_DATA` environment
variable, else `../shared/data` beside the repository checkout. A leading `~` is the home
folder (as for the TFDS `data_dir`/`manual_dir`): a config value, a `--data_root=~/data`
flag or a quoted variable reach us unexpanded by the shell.
"""

from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def default_data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The data root: `root` if given, else `$RNN_JAX_DATA`, else `<repo>/../shared/data`."""
    if root:
        return pathlib.Path(root).expanduser()
    env = os.environ.get("RNN_JAX_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data"
