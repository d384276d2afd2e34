"""Writing a file so that readers, and a crash mid-write, see the old file or the whole new one.

The one definition for the library (vocabularies, run records, reports), the experiments and
the launcher; `rnn_jax.train.metrics` re-exports it beside `write_json_atomic`.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import secrets
import stat


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`write_bytes_atomic` of `text` in UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it and rename it over
    `path`, so that readers (and a crash) see either the old file or the whole new one; a
    failed write leaves no temporary behind.

    A file that exists keeps its permission bits (a new one gets `open`'s, from the umask);
    when `path` is a symbolic link its target is replaced and the link stays a link.
    Concurrent writers (threads, processes) each write their own temporary; the last rename
    wins.
    """
    # The rename must happen beside the file itself: renaming over the link would put a
    # regular file in its place and leave its target stale.
    path = pathlib.Path(os.path.realpath(path))
    # One temporary per call, not per process: two threads writing the same file shared it,
    # so one renamed the other's half-written text into place and then failed (or deleted
    # the other's temporary) with a FileNotFoundError naming the temporary.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    try:
        with open(tmp, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: leave no half-written temporary behind
        tmp.unlink(missing_ok=True)
        raise


def check_workdir(workdir: str) -> None:
    """`--workdir` must name a directory, or a path where one can be created (the runtime's
    command line and the main job, `experiments.reproduce`).

    Raises:
      ValueError: for an empty value (checkpoints and results would land in the current
        directory, the checkout when run as the README says), or when the path or one of its
        parents is a file (the run failed with a traceback once compiled, at its first
        checkpoint directory), or a symbolic link to a missing path (`runs` linking to an
        unmounted disk: creating the run directory failed in the same place), or when the
        nearest existing folder on the path cannot be written in.
    """
    if not workdir.strip():
        raise ValueError(f"--workdir={workdir!r}: must name a run directory")
    path = pathlib.Path(workdir)
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not os.path.exists(existing):
        raise ValueError(
            f"--workdir={workdir!r}: {str(existing)!r} is a symbolic link to a missing path "
            f"({os.readlink(existing)!r})"
        )
    if not os.path.isdir(existing):
        raise ValueError(f"--workdir={workdir!r}: {str(existing)!r} is a file, not a directory")
    # A folder nothing can be written in (read-only, another user's, /sys) was a
    # PermissionError traceback, for the training command line once compiled. A file is
    # created and removed: os.access says yes to root wherever the mode bits do.
    probe = existing / f".rnn_jax_write_test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--workdir={workdir!r}: cannot write in {str(existing)!r} ({error.strerror or error})"
        ) from None


RESULTS_FILE = "results.json"  # a run's results; its presence means the run is done
LOCK_FILE = "run.lock"  # flock'ed while a launcher's experiment runs in a workdir (`lock_run`)


def lock_run(workdir: pathlib.Path) -> int | None:
    """An open descriptor of workdir/LOCK_FILE holding an exclusive `flock`, None if another
    process holds it: what `launch.sweep` and the main job (`experiments.reproduce`) take
    before they start an experiment in `workdir`, and pass on to it, so that two of them never
    train in one workdir at once. The kernel drops the lock when every descriptor of it is
    closed, i.e. when the launcher and the experiment it started have both exited (killed
    included), so no stale lock is left behind and the file itself is never removed. On a
    filesystem without `flock` (e.g. Lustre mounted without `-o flock`) runs are not guarded."""
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # ENOLCK, EOPNOTSUPP, ...: no locking here
        pass
    return fd


def run_in_use(workdir: pathlib.Path) -> bool:
    """Whether another process (a launcher, or an experiment a killed launcher left running)
    holds workdir's run lock now."""
    if not (workdir / LOCK_FILE).is_file():
        return False
    fd = lock_run(workdir)
    if fd is None:
        return True
    os.close(fd)  # releases it
    return False


def not_a_file(path: str | os.PathLike) -> str:
    """Why `path`, which `os.path.isfile` refuses, is not a data file: a directory, another
    kind of path that exists (a FIFO, a socket, `/dev/fd/N`) or nothing at all."""
    if os.path.isdir(path):
        return "is a directory, not a file"
    return "is not a regular file" if os.path.exists(path) else "does not exist"
