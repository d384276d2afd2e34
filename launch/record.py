"""A sweep's record on disk, ROOT/sweep.json, and which finished runs a rerun may reuse.

The record holds the latest plan's runs (name, overrides, command: what `launch.report` groups
by) and, for every run any plan has put in the root, its last command (`history`) and planned
flat config (`configs`). A rerun into the same root skips a finished run (ROOT/<run>/results.json)
only when the record has it under the settings planned now, and refuses it otherwise
(`check_finished_runs`; docs/design.md, "A finished run is reused only under the settings it
ran with").
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

from launch.plan import Run
from rnn_jax.files import write_text_atomic
from rnn_jax.train import config_keys

SWEEP_FILE = "sweep.json"


def _settings(command: Sequence[str]) -> set[str]:
    """What a run's results depend on in its command: the experiment module, the config file's
    name and variant and the overrides (not the interpreter, the workdir or the config's
    absolute path, which may differ between machines sharing the sweep root)."""
    settings = set()
    for arg in command[2:]:
        if arg.startswith("--workdir="):
            continue
        if arg.startswith("--config="):
            arg = f"--config={pathlib.PurePath(arg.split('=', 1)[1]).name}"
        settings.add(arg)
    return settings


def check_finished_runs(root: pathlib.Path, runs: Sequence[Run]) -> None:
    """A finished run that ROOT/sweep.json records under other settings is refused; one it
    records under the same settings is skipped, and so is one it does not record at all (a
    root whose sweep.json was lost or that was put together by hand: no record to compare).

    Runs are named by their sweep values alone, so rerunning into the same root with another
    `--set` or variant would otherwise skip every finished run and report it under the new
    settings. The settings are the run's command and, where the record has it, its planned
    config (`Run.config`): the command names the config file and variant only, so a run
    finished before the file's values were edited was skipped and reported under the new
    values. The record is the file's `runs` (the latest plan) over its `history` (every run
    any earlier plan put in this root), so a plan with other run names in between does not
    erase what a finished run ran with. Raises ValueError naming the run and the differing
    arguments or config keys.
    """
    recorded, configs = _recorded_commands(root), _recorded_configs(root)
    for run in runs:
        if not run.finished:
            continue
        if run.name in recorded:
            old, new = _settings(recorded[run.name]), _settings(run.command)
            if old != new:
                raise ValueError(
                    f"{run.workdir} finished under other settings than this sweep gives it "
                    f"(ran with {sorted(old - new)}, now {sorted(new - old)}); use a new "
                    "--workdir, or delete that run's directory to redo it"
                )
        if run.name in configs and run.config is not None:
            changed = config_keys.config_changes(configs[run.name], run.config)
            if changed:
                shown = ", ".join(changed[:4])
                more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
                raise ValueError(
                    f"{run.workdir} finished under another config than this sweep gives it "
                    f"({shown}{more}; its config file, or the defaults it builds on, changed "
                    "since it ran); use a new --workdir, or delete that run's directory to "
                    "redo it"
                )


def _read_record(root: pathlib.Path) -> dict[str, Any] | None:
    """ROOT/sweep.json parsed (None when there is none), or ValueError naming it."""
    path = root / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not a launch.sweep record ({error!r})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a launch.sweep record (a JSON {type(record).__name__})")
    return record


def _recorded_commands(root: pathlib.Path) -> dict[str, list[str]]:
    """Run name -> the command ROOT/sweep.json last recorded for it (`history`, then `runs`)."""
    record = _read_record(root)
    if record is None:
        return {}
    try:
        recorded = {name: list(command) for name, command in record.get("history", {}).items()}
        recorded.update({r["name"]: r["command"] for r in record["runs"]})
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        path = root / SWEEP_FILE
        raise ValueError(f"{path}: not a launch.sweep record ({error!r})") from None
    return recorded


def _recorded_configs(root: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Run name -> the flat config ROOT/sweep.json last recorded for it (`configs`; a record
    written before configs were recorded has none)."""
    configs = (_read_record(root) or {}).get("configs", {})
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        raise ValueError(f"{root / SWEEP_FILE}: `configs` is not a map of run name to config")
    return configs


def write_sweep_file(root: pathlib.Path, config_arg: str, runs: Sequence[Run]) -> None:
    """ROOT/sweep.json: what launch.report needs to group runs by their overrides (`runs`, this
    plan), and `history` and `configs`: the command and the planned config of every run any
    plan has put in this root, for `check_finished_runs`."""
    history = _recorded_commands(root)
    history.update({r.name: list(r.command) for r in runs})
    configs = _recorded_configs(root)
    configs.update({r.name: r.config for r in runs if r.config is not None})
    root.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config_arg,
        "runs": [{"name": r.name, "overrides": r.overrides, "command": r.command} for r in runs],
        "history": history,
        "configs": configs,
    }
    write_text_atomic(root / SWEEP_FILE, json.dumps(record, indent=2, default=str))
