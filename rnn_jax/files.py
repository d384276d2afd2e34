"""Writing a file so that readers, and a crash mid-write, see the old file or the whole new one.

The one definition for the library (vocabularies, run records, reports), the experiments and
the launcher; `rnn_jax.train.metrics` re-exports it beside `write_json_atomic`.
"""

from __future__ import annotations

import os
import pathlib


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, fsync it and rename it over
    `path`, so that readers (and a crash) see either the old file or the whole new one; a
    failed write leaves no temporary behind."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: leave no half-written temporary behind
        tmp.unlink(missing_ok=True)
        raise
