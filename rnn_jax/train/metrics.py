"""Run outputs: `metrics.jsonl`, TensorBoard events, the console progress line, `results.json`.

Only the primary process (process 0) writes files; the others get a writer that does nothing.

- `W/metrics.jsonl`: one JSON object per logged step, `{"step": s, "train_loss": ..., ...}`,
  appended with one `write` call per whole line so that the file can be tailed during a
  run. A crash can still cut the last line short; reopening the file for a resumed run
  truncates such a torn line, and `read_metrics` skips one at the end of the file.
- `W/tensorboard/`: the same scalars as tensorboardX event files.
- `W/results.json`: written once, atomically (temporary file + `os.replace`), when the run is
  complete; its presence means the run is done. `{"final": {...}, "timing": {...},
  "provenance": {...}}`: `final` holds deterministic metrics at full float precision.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import jax
import numpy as np
from absl import logging

from rnn_jax.files import RESULTS_FILE, write_bytes_atomic, write_text_atomic
from rnn_jax.hardware import cpu_description

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy")


class MetricsWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; prints the progress line.

    Args:
      workdir: the run directory.
      enabled: False on processes other than 0 (they write nothing).
      start: the step the run starts from. 0 (no checkpoint to resume): the records an
        earlier attempt left (one killed before its first checkpoint, under any config) are
        removed, not appended to. s > 0 (resumed from the checkpoint of step s): the records
        of steps after s are removed, in metrics.jsonl and (TensorBoard's `purge_step`) in
        the event files; the killed attempt logged them, and a resumed run that does not take
        those steps again (a lower `train.num_steps`, an earlier stop) left curves with
        validation losses better than its reported best, from steps it never took. None:
        appended to as they are.
      drop_at_start: with s > 0, which records of step s go too (`record -> True`): those
        the run's loop state has not seen (`resume.redone_at`). In the event files, step s is
        then purged as well and its kept records are written again.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        enabled: bool = True,
        start: int | None = None,
        *,
        drop_at_start: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.enabled = enabled
        self.workdir = pathlib.Path(workdir)
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            path = self.workdir / "metrics.jsonl"
            if start == 0:
                path.unlink(missing_ok=True)
                for events in (self.workdir / "tensorboard").glob("events.out.tfevents.*"):
                    events.unlink()
            _truncate_torn_line(path)
            kept_at_start, purge = [], None  # TensorBoard hides events at steps >= purge
            if start:
                kept_at_start, dropped = _drop_records(path, start, drop_at_start)
                purge = start if dropped else start + 1
            # Unbuffered, append-only: each record goes to the file in one write() call.
            self._jsonl = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=purge)
            if purge == start:  # the purge hid the kept records of step `start` too
                for record in kept_at_start:
                    self._add_scalars(start, record)
                self._tb.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """One record: `{"step": step, **scalars}` (floats at full precision)."""
        if not self.enabled:
            return
        scalars = {k: _json_float(v) for k, v in scalars.items()}
        record = {"step": int(step), **scalars}
        line = (json.dumps(record) + "\n").encode()
        while line:  # write() may take part of it (signals, full disks): send the rest
            line = line[os.write(self._jsonl, line) :]
        # The converted values: a numpy float32 (not a Python float) was in metrics.jsonl but
        # silently missing from TensorBoard.
        self._add_scalars(step, scalars)
        self._tb.flush()

    def _add_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        """The finite numbers of a record (not its step) to TensorBoard."""
        for name, value in scalars.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            os.close(self._jsonl)
            self._tb.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl`, in file order ([] when the file does not exist).

    A last line without its newline that is not valid JSON was cut short by a crash (the
    writer appends whole lines): it is skipped. Any other line that is not a JSON object is
    corruption.

    Raises:
      ValueError: naming `file:line` of a line that is not a JSON object.
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # Decoded line by line: bytes that are not UTF-8 were a UnicodeDecodeError naming a byte
    # offset of no file. The last item is b'' after a final newline, else a torn line (which
    # may end inside a character).
    lines = data.split(b"\n")
    records = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode()
            if not line.strip():
                continue
            record = json.loads(line)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            line = raw.decode(errors="replace")
            if number == len(lines):
                logging.warning("%s:%d: skipping a torn last line (%s)", path, number, error)
                continue
            raise ValueError(
                f"{path}:{number}: not a JSON object ({error}): {line[:80]!r}"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {line[:80]!r}")
        records.append(record)
    return records


def metric_series(path: str | pathlib.Path, key: str) -> list[tuple[int, Any]]:
    """(step, value) of `key` in a `metrics.jsonl`, one per step in step order; the value is
    `<key>_per_seed` (a list) when logged, else `key`.

    A run resumed after a kill replays the steps after its last checkpoint and logs them
    again (identically): the last record of a step is kept, so curves neither double back nor
    count a step twice. Torn and corrupt lines as in `read_metrics`.
    """
    last: dict[int, Any] = {}
    for record in read_metrics(path):
        value = record.get(f"{key}_per_seed", record.get(key))
        if value is not None and "step" in record:
            last[int(record["step"])] = value
    return sorted(last.items())


def _drop_records(
    path: pathlib.Path, step: int, drop_at_step: Callable[[dict[str, Any]], bool] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Rewrite `path` (atomically, and only when it changes) without the records of steps
    after `step` and those of `step` that `drop_at_step` picks. A line that is not a record
    with an integer step is kept as it is: it is for the readers to name, not for a resumed
    run to fail on or to remove.

    Returns:
      `(kept, dropped)`: the kept records of `step`, and whether one of `step` was dropped.
    """
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return [], False
    kept, kept_at_step, dropped_at_step = [], [], False
    for line in lines:
        record = _record(line)
        at = None if record is None else record["step"]
        if at is not None and at == step and drop_at_step is not None and drop_at_step(record):
            dropped_at_step = True
        elif at is None or at <= step:
            kept.append(line)
            if at == step:
                kept_at_step.append(record)
    if len(kept) < len(lines):
        write_bytes_atomic(path, b"".join(kept))
    return kept_at_step, dropped_at_step


def _record(line: bytes) -> dict[str, Any] | None:
    """The record of a metrics.jsonl line, or None for a line that is not one (a JSON object
    with an integer step)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    value = record.get("step") if isinstance(record, dict) else None
    return record if isinstance(value, int) and not isinstance(value, bool) else None


def _truncate_torn_line(path: pathlib.Path) -> None:
    """Cut a last line that lacks its newline (a write cut short by a crash), so that the
    next record starts on a line of its own."""
    try:
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 4096)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            logging.warning("%s: truncating a torn last line (%d bytes)", path, size - end)
            f.truncate(end)


class Progress:
    """The console progress line: step, loss, steps/s, tokens/s and ETA.

    Rates are measured between consecutive calls, so the first call after compilation gives
    the compile-inclusive rate and later ones the steady state.
    """

    def __init__(self, num_steps: int, start_step: int) -> None:
        self.num_steps = num_steps
        self._last = (start_step, time.perf_counter(), 0)

    def line(self, step: int, loss: float, tokens_seen: int) -> str:
        last_step, last_time, last_tokens = self._last
        now = time.perf_counter()
        elapsed = max(now - last_time, 1e-9)
        steps_per_s = (step - last_step) / elapsed
        tokens_per_s = (tokens_seen - last_tokens) / elapsed
        eta = (self.num_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
        self._last = (step, now, tokens_seen)
        eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        return (
            f"step {step}/{self.num_steps} | loss {loss:.4f} | {steps_per_s:.2f} steps/s | "
            f"{tokens_per_s:,.0f} tokens/s | ETA {eta_text}"
        )

    def log(self, step: int, loss: float, tokens_seen: int) -> None:
        logging.info("%s", self.line(step, loss, tokens_seen))


def remove_done_marker(workdir: str | pathlib.Path) -> None:
    """Remove `workdir/results.json` (if any) before a run redoes its work in `workdir`.

    results.json is the "done" marker (reproduce and launch.sweep skip a workdir holding
    one): a rerun, under another config or extended to more steps, that is killed midway
    must not leave the previous run's results to be read as its own. The one place this
    rule lives; each caller removes it at its own moment (after its config and data checks,
    from the primary process).
    """
    (pathlib.Path(workdir) / RESULTS_FILE).unlink(missing_ok=True)


def write_json_atomic(path: str | pathlib.Path, obj: Any) -> None:
    """Write JSON so that readers see either nothing or the whole file."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=json_default))


def training_rates(timing: dict[str, Any]) -> dict[str, Any]:
    """The training speed a run's results.json `timing` reports: `{"steps_per_s",
    "tokens_per_s", "earlier_invocation"}`, the rates of the invocation that trained the
    run's steps. An invocation that only finished the run (it trained none: `steps_run` 0)
    measured none; its `timing["earlier_invocation"]` holds those of the one that trained
    (`loop.train_and_evaluate`), taken then. A rate no invocation measured (fewer than 2 steps
    trained, a checkpoint from before session 37) is None. `earlier_invocation` is True when
    a rate returned was measured by an earlier invocation than this one (it may have run on
    another host or under another load): a report marks such a rate; none is marked where
    none was measured. The one reading of this rule for every report of a run's speed."""
    earlier = timing.get("earlier_invocation")
    from_earlier = timing.get("steps_run") == 0 and isinstance(earlier, dict)
    source = earlier if from_earlier else timing
    rates = {key: source.get(key) for key in ("steps_per_s", "tokens_per_s")}
    measured = any(rate is not None for rate in rates.values())
    return {**rates, "earlier_invocation": from_earlier and measured}


def provenance() -> dict[str, Any]:
    """Git commit, package versions, devices and host of this run (`git_sha` and `git_dirty`
    are None where git cannot tell)."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git(repo, "rev-parse", "HEAD"),
        # None when git could not tell (no git, not a repository): not a claim of a clean tree
        "git_dirty": None if status is None else bool(status),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        **cpu_description(),
        "argv": sys.argv,
        "utc_time": datetime.datetime.now(datetime.UTC).isoformat(),
    }


def _git(repo: pathlib.Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _json_float(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    return value


def json_default(value: Any) -> Any:
    """`json.dump(..., default=json_default)`: numpy arrays and scalars as lists and numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
