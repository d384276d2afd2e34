"""Writing a file so that readers, and a crash mid-write, see the old file or the whole new one.

The one definition for the library (vocabularies, run records, reports), the experiments and
the launcher; `rnn_jax.train.metrics` re-exports it beside `write_json_atomic`.
"""

from __future__ import annotations

import os
import pathlib
import stat


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, fsync it and rename it over
    `path`, so that readers (and a crash) see either the old file or the whole new one; a
    failed write leaves no temporary behind.

    A file that exists keeps its permission bits (a new one gets `open`'s, from the umask);
    when `path` is a symbolic link its target is replaced and the link stays a link.
    """
    # The rename must happen beside the file itself: renaming over the link would put a
    # regular file in its place and leave its target stale.
    path = pathlib.Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: leave no half-written temporary behind
        tmp.unlink(missing_ok=True)
        raise
