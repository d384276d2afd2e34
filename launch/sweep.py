"""Expand an experiment config's sweep into runs and execute them, locally or on SLURM.

    python -m launch.sweep --config=experiments/configs/<name>.py:<variant> --workdir=ROOT \
        [--launcher=local|slurm|submitit_local] [--parallel=N] [--set=key=value ...]

The config file's `get_sweep(variant)` returns either a grid `{dotted_key: [values, ...]}`
(the Cartesian product is taken) or a list of override dicts. Each point becomes one run in
`ROOT/<run_name>/`, executed as

    python -m experiments.<name> --workdir=ROOT/<run_name> \
        --config=experiments/configs/<name>.py:<variant> --config.<key>=<value> ...

This module knows nothing about models: it relies only on the entry-point contract of
docs/design.md ("Training runtime"): `W/results.json` is written once, atomically, when a run
completes, and a run restarted in the same workdir resumes from its latest checkpoint. So a
sweep is resumable by running the same command again: finished runs (results.json present)
are skipped, interrupted ones restart in place and resume. A finished run whose recorded
command or config (ROOT/sweep.json) differs from the one planned now (another `--set` or
variant into the same root, or a config file edited since) stops the sweep before anything
runs, instead of being reported as the new one.
A run being executed holds an exclusive lock (`flock` on ROOT/<run_name>/run.lock, released by
the kernel when its processes exit): a second sweep into the same root refuses to start while
any of its runs is locked, and never executes a locked run.

Everything is checked before anything runs: the experiment module exists, the variant is
known to the config, every sweep key is a key of the config, and every point passes the
experiment's value rules (`--set` values are command-line text, checked by each run). A
refusal (a flag, the config, the root, a finished run planned anew) is one line on stderr,
exit status 2 (`rnn_jax.exits`); absl's own flag errors exit 1, as do failed runs.
"""

from __future__ import annotations

import ast
import concurrent.futures
import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
from absl import app, flags

from rnn_jax.exits import refuse
from rnn_jax.files import LOCK_FILE, check_workdir, lock_run, run_in_use, write_text_atomic
from rnn_jax.predicates import is_int
from rnn_jax.train import config as config_lib
from rnn_jax.train import config_file

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_FILE = "results.json"
SWEEP_FILE = "sweep.json"
LAUNCHERS = ("local", "slurm", "submitit_local")
# Each `--slurm_*` flag -> the submitit parameter it sets, and the launcher-specific flags
# each launcher reads (`--parallel` and the `--slurm_*` ones): a flag given to a launcher that
# does not read it is refused (`check_launcher_flags`), not silently ignored
# (`--launcher=local --slurm_mem_gb=64` ran with no limit at all, `--launcher=slurm
# --parallel=2` submitted every run at once).
SLURM_PARAMETERS = {
    "slurm_time_min": "timeout_min",
    "slurm_partition": "slurm_partition",
    "slurm_cpus_per_task": "cpus_per_task",
    "slurm_mem_gb": "mem_gb",
    "slurm_gpus_per_node": "gpus_per_node",
}
LAUNCHER_FLAGS = {
    "local": ("parallel",),
    "submitit_local": ("slurm_time_min",),
    "slurm": tuple(SLURM_PARAMETERS),
}
# Every flag some launchers read and others ignore.
LAUNCHER_SPECIFIC_FLAGS = tuple(
    dict.fromkeys(f for names in LAUNCHER_FLAGS.values() for f in names)
)
# The longest run directory name, in bytes: NAME_MAX of Linux's common filesystems (ext4, XFS,
# Btrfs, NFS, Lustre). Names up to it are kept as they were, so existing roots still resume.
MAX_RUN_NAME = 255
RUN_IN_USE = -75  # execute's code for a run another process is executing (no process exits so)
# The experiments `execute` is running in this process, and whether `run_local` was told to
# stop (SIGTERM): its handler forwards the signal to them (`_forward_sigterm`).
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep: where it runs and which config overrides it applies."""

    name: str
    workdir: pathlib.Path
    overrides: dict[str, Any]
    command: tuple[str, ...]
    # The flat config (`config_lib.flat_config`) the run is planned with: the variant's config with
    # the point's overrides and the `--set` values the plan could read; None when not known.
    config: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return (self.workdir / RESULTS_FILE).is_file()


def parse_config_arg(config_arg: str) -> tuple[pathlib.Path, str, str]:
    """`experiments/configs/<name>.py:<variant>` -> (config path, experiment name, variant)."""
    # A file whose folder holds a ':' given without a variant was split at that ':' and
    # reported as a missing file ('/scratch/run' for '/scratch/run:2/.../x.py').
    if not config_arg or ":" not in config_arg or pathlib.Path(config_arg).is_file():
        raise ValueError(
            f"--config={config_arg!r}: expected experiments/configs/<name>.py:<variant>, "
            "e.g. experiments/configs/initialization.py:smoke"
        )
    path_str, variant = config_arg.rsplit(":", 1)
    path = pathlib.Path(path_str)
    if not path.is_absolute():
        path = (pathlib.Path.cwd() / path).resolve()
    if not path.is_file():
        known = sorted(p.stem for p in (REPO_ROOT / "experiments" / "configs").glob("[!_]*.py"))
        raise ValueError(f"--config: no config file {path_str!r}; known experiments: {known}")
    name = path.stem
    # A stem that is no module name (`my.exp.py`) raised ModuleNotFoundError from find_spec
    # (it imports `experiments.my`): a traceback instead of this message.
    if not name.isidentifier() or importlib.util.find_spec(f"experiments.{name}") is None:
        raise ValueError(
            f"--config={config_arg!r}: config {name!r} has no experiment module "
            f"experiments/{name}.py (the module is named after its config file)"
        )
    return path, name, variant


def expand_sweep(sweep: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """A grid `{key: [values]}` (Cartesian product, keys in order) or a list of override dicts
    -> a list of override dicts. An empty grid (the product of no axes) is one run with no
    overrides; an empty list (no runs) is refused, as are a point that is not a dict and a key
    that is not a string."""
    if isinstance(sweep, Mapping):
        keys = list(sweep)
        for key in keys:
            values = sweep[key]
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ValueError(
                    f"get_sweep: grid key {key!r} maps to {values!r}; expected a non-empty list"
                )
        points = [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())
        ]
    elif isinstance(sweep, Sequence) and not isinstance(sweep, str | bytes):
        if not sweep:
            # It ran one run of the config as it is, as if the sweep had asked for that.
            raise ValueError(
                "get_sweep returned an empty list: no runs (return [{}] for one run of the "
                "config as it is)"
            )
        for index, point in enumerate(sweep):
            if not isinstance(point, Mapping):
                raise ValueError(
                    f"get_sweep: point {index} is {type(point).__name__} {point!r}, not a dict "
                    "of overrides {dotted_key: value}"
                )
        points = [dict(point) for point in sweep]
    else:
        raise ValueError(
            f"get_sweep returned {type(sweep).__name__}; "
            "expected a dict of lists or a list of dicts"
        )
    for index, point in enumerate(points):
        for key in point:
            if not isinstance(key, str):  # was an AttributeError traceback (`key.split`)
                raise ValueError(
                    f"get_sweep: point {index} has key {key!r} ({type(key).__name__}); "
                    "keys are dotted config field names (str)"
                )
    points = [{key: _plain(value) for key, value in point.items()} for point in points]
    seen: dict[tuple, int] = {}
    for index, point in enumerate(points):
        # The same combination in another key order (or 1 vs 1.0, also as two values of one
        # grid key, which run_name spells differently) is the same run twice, which the report
        # would pool as two seeds or show as two settings.
        key = setting_key(point)
        if key in seen:
            raise ValueError(
                f"get_sweep: points {seen[key]} and {index} are the same overrides {point}"
            )
        seen[key] = index
    return points or [{}]


def _plain(value: Any) -> Any:
    """Numpy scalars (a grid written as `list(np.logspace(...))`) as Python numbers, also
    inside tuples and lists: their repr (`np.float64(0.001)`) was passed as the flag value,
    which every run then failed to parse, and named the run `learning_rate=np.float64_0.001_`;
    an `np.int64` was refused for an int field."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    return value


def setting_key(value: Any) -> Any:
    """A hashable form of an override value (or a dict of them) in which equal numbers are
    equal, also inside lists and dicts (1 == 1.0, [1, 2] == [1.0, 2.0]), but True is not 1:
    how `get_sweep` finds duplicate points and `launch.report` groups runs."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", "nan" if value != value else value)
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), setting_key(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("sequence", tuple(setting_key(v) for v in value))
    return ("text", json.dumps(value, sort_keys=True, default=str))


def _lookup(config: Any, key: str, what: str = "sweep key") -> Any:
    node = config
    for i, part in enumerate(key.split(".")):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            parent = ".".join(key.split(".")[:i]) or "<config>"
            choices = sorted(node.keys()) if hasattr(node, "keys") else []
            raise ValueError(
                f"{what} {key!r} is not in the config: {parent} has no field {part!r} "
                f"(fields: {choices})"
            ) from None
    return node


def check_overrides(config: Any, overrides: Mapping[str, Any]) -> None:
    """Every override names an existing config field of a compatible type, or ValueError.
    None is allowed for any field (`--config.k=None`, rnn_jax.train.cli); whether the
    experiment accepts it is `check_rules`'s question."""
    for key, value in overrides.items():
        current = _lookup(config, key)
        if current is None or value is None:
            continue
        if isinstance(current, bool) != isinstance(value, bool):
            ok = False
        elif isinstance(current, float):
            ok = isinstance(value, int | float)
        elif isinstance(current, tuple | list):
            ok = isinstance(value, tuple | list)
        else:
            ok = isinstance(value, type(current))
        if not ok:
            raise ValueError(
                f"sweep key {key!r}: value {value!r} ({type(value).__name__}) does not match "
                f"the config's {type(current).__name__} field (now {current!r})"
            )


def check_rules(config: Any, name: str, overrides: Mapping[str, Any]) -> Any:
    """The config with `overrides` applied passes the runtime's and experiment `name`'s value
    rules and the experiment's `check_grid(config)` where it has one (what the run itself
    checks at start, before reading data), or ValueError naming the point: a sweep value the
    experiment refuses stops the sweep before any run, not one run in the middle. Returns
    that config (a copy; `config` is unchanged)."""
    config = copy.deepcopy(config)  # keeps FieldReferences, so dependent fields follow
    for key, value in overrides.items():
        parent, _, field = key.rpartition(".")
        try:
            setattr(_lookup(config, parent) if parent else config, field, value)
        except TypeError as error:
            # A placeholder field (None now, so `check_overrides` had no type to compare)
            # refuses a value of another type than it was declared with.
            raise ValueError(f"sweep point {dict(overrides)}: {key}={value!r}: {error}") from None
    experiment = importlib.import_module(f"experiments.{name}")
    try:
        config_lib.validate(
            config, getattr(experiment, "RULES", None), trains=getattr(experiment, "TRAINS", True)
        )
        # A grid experiment's own checks of its grid axes (`grid.cells="lstm,bogus"`), which
        # need the config alone: without them each run of such a sweep failed on its own.
        check_grid = getattr(experiment, "check_grid", None)
        if check_grid is not None:
            check_grid(config)
    except ValueError as error:
        raise ValueError(f"sweep point {dict(overrides)}: {error}") from None
    return config


_UNPARSED = object()  # a `--set` value of a field whose type does not say how to read it


def _set_value(config: Any, key: str, text: str) -> Any:
    """A `--set key=text` value as config_flags parses `--config.key=text` (by the field's
    type; "None" is None for any field, as rnn_jax.train.cli reads it), or ValueError naming
    it; `_UNPARSED` for list, tuple and placeholder (None) fields and a dict for a section,
    left to the run."""
    current = _lookup(config, key)
    if text == "None":
        return None
    if hasattr(current, "keys"):
        # A section takes a dict literal (config_flags' ConfigDict parser), left to the run:
        # other text passed the plan as a placeholder's, and every run failed at start
        # ("Failed to parse '5' as a ConfigDict").
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise ValueError(
                f"--set {key}={text}: {key} is a section of the config (fields "
                f"{sorted(current.keys())}): set one of its fields, or give a dict"
            )
        return _UNPARSED
    # absl's parsers, which config_flags uses for these types: our own reading refused text
    # the run accepts (`t`/`f` for a bool, `0x10` for an int), e.g. "must be true or false".
    for kind, parser, wanted in (
        (bool, flags.BooleanParser(), "true or false"),  # before int: a bool is an int
        (int, flags.IntegerParser(), "an integer"),
        (float, flags.FloatParser(), "a number"),
    ):
        if isinstance(current, kind):
            try:
                return parser.parse(text)
            except ValueError as error:  # absl's bool error's args are (message, text)
                detail = error.args[0] if error.args else error
                raise ValueError(f"--set {key}={text}: must be {wanted} ({detail})") from None
    return text if isinstance(current, str) else _UNPARSED


def format_override(value: Any) -> str:
    """A value as `--config.k=<here>` expects it (config_flags parses by the field's type;
    rnn_jax.train.cli reads "None" as None for any field)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


def run_name(overrides: Mapping[str, Any]) -> str:
    """`{model.hidden_size: 64, seed: 1}` -> `hidden_size=64,seed=1` (filesystem-safe).

    A name longer than `MAX_RUN_NAME` bytes (long values, many axes) keeps its first
    characters and ends in `+` and 12 hex digits of the SHA-256 of every full key and value:
    the whole name made ROOT/<name> fail with "File name too long" when the run started,
    mid-sweep. Only the directory's name is shortened; ROOT/sweep.json keeps each run's
    overrides, which is what launch.report groups by (it never parses a name).
    """
    if not overrides:
        return "default"
    parts = []
    for key, value in overrides.items():
        text = format_override(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={text}")
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))
    if len(name) <= MAX_RUN_NAME:  # ASCII only: characters are bytes
        return name
    full = ",".join(f"{key}={format_override(value)}" for key, value in overrides.items())
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    return f"{name[: MAX_RUN_NAME - len(digest) - 1]}+{digest}"


def parse_set_flags(assignments: Sequence[str]) -> dict[str, Any]:
    """`["train.num_steps=50"]` -> `{"train.num_steps": "50"}` (strings; the runner passes
    them through unchanged). A key given twice is a ValueError."""
    overrides = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set={assignment!r}: expected key=value")
        key, value = assignment.split("=", 1)
        if key in overrides:
            # The last one used to win silently (and a mistyped repeat went unnoticed).
            raise ValueError(f"--set {key} given twice ({overrides[key]!r} and {value!r})")
        overrides[key] = value
    return overrides


def plan_runs(
    config_arg: str, root: str | os.PathLike, common: Mapping[str, str] | None = None
) -> list[Run]:
    """Validates the config and its sweep and returns the runs, before anything runs."""
    path, name, variant = parse_config_arg(config_arg)
    try:
        # Read as the experiment's CLI reads it (`config_file`: one line naming the file for
        # a syntax error, no get_config, a get_config that raises or returns no ConfigDict).
        module = config_file.load_config_file(path)
        config = config_file.config_of(module, path, (variant,), variant_optional=False)
        sweep = config_file.call_config_function(
            module, "get_sweep", path, (variant,), variant_optional=False
        )
        return _plan(path, name, variant, config, expand_sweep(sweep), root, common)
    except ValueError as error:
        text = str(error)
        if repr(str(path)) in text:
            raise
        raise ValueError(f"config file {str(path)!r}, variant {variant!r}: {text}") from None


def _plan(
    path: pathlib.Path,
    name: str,
    variant: str,
    config: Any,
    points: list[dict],
    root: str | os.PathLike,
    common: Mapping[str, str] | None,
) -> list[Run]:
    """`plan_runs` once the config and the sweep's points are read."""
    common = dict(common or {})
    for key in common:
        _lookup(config, key, "--set key")  # not "sweep key": not in get_sweep
    swept = sorted({key for point in points for key in point} & set(common))
    if swept:
        # A common override of a swept key would give every run the same value while the
        # runs stay named (and reported) by their sweep values.
        raise ValueError(
            f"--set {', '.join(swept)}: the sweep varies "
            f"{'this key' if len(swept) == 1 else 'these keys'}; change it in get_sweep instead"
        )
    check_seed_replicas(config, points, common)
    # `--set` values as each run's command line will read them, so that they meet the rules
    # with every point (they reached the runs unchecked: --set=train.num_steps=-5 started every
    # run, each to fail with exit 2).
    parsed = {key: _set_value(config, key, text) for key, text in common.items()}
    checked = {key: value for key, value in parsed.items() if value is not _UNPARSED}
    root = pathlib.Path(root).resolve()
    runs, names = [], set()
    for point in points:
        check_overrides(config, point)
        planned = check_rules(config, name, {**point, **checked})
        name_ = run_name(point)
        if name_ in names:
            raise ValueError(f"get_sweep: two sweep points give the same run {name_!r}")
        names.add(name_)
        workdir = root / name_
        args = {**{k: format_override(v) for k, v in point.items()}, **common}
        command = (
            sys.executable,
            "-m",
            f"experiments.{name}",
            f"--workdir={workdir}",
            f"--config={path}:{variant}",
            *(f"--config.{k}={v}" for k, v in args.items()),
        )
        runs.append(Run(name_, workdir, dict(point), command, config_lib.flat_config(planned)))
    return runs


def check_seed_replicas(
    config: Any, points: Sequence[Mapping[str, Any]], common: Mapping[str, str]
) -> None:
    """Points that differ only in `seed` train disjoint replica seeds, or ValueError.

    A run trains the replicas `seed .. seed+num_seeds-1` (rnn_jax.train.seeds), and
    launch.report pools the runs of one setting as seeds: `seed: [0, 1]` with `num_seeds=2`
    trained seed 1 twice and reported it as two samples of the seed spread.
    """

    def value(key: str, point: Mapping[str, Any]) -> Any:
        if key in point:
            return point[key]
        if key in common:
            # As the run reads it (`_set_value`: absl's parser): `int()` refused `0x3`, which
            # the run reads as 3, and the overlap went unchecked.
            try:
                return _set_value(config, key, common[key])
            except ValueError:
                return None  # not an int: plan_runs refuses it, naming the flag
        return config.get(key) if hasattr(config, "get") else None

    spans: dict[Any, list[tuple[dict, int, int]]] = {}
    for point in points:
        seed, count = value("seed", point), value("num_seeds", point)
        if not (is_int(seed) and is_int(count)):  # numpy ints too (sweeps may hold them)
            continue
        setting = setting_key({k: v for k, v in point.items() if k != "seed"})
        for other, start, stop in spans.get(setting, []):
            if seed < stop and start < seed + count:
                via = f" (--set num_seeds={common['num_seeds']})" if "num_seeds" in common else ""
                raise ValueError(
                    f"get_sweep: points {other} and {dict(point)} train replica seeds "
                    f"{start}..{stop - 1} and {seed}..{seed + count - 1} overlap with "
                    f"num_seeds={count}{via}; the report would pool the shared seeds twice. "
                    f"Space the seed values at least num_seeds apart"
                )
        spans.setdefault(setting, []).append((dict(point), seed, seed + count))


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
            changed = config_lib.config_changes(configs[run.name], run.config)
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


def execute(command: Sequence[str], workdir: str, env_update: Mapping[str, str]) -> int:
    """Runs one experiment command, output to workdir/log.txt; returns its exit code, or
    RUN_IN_USE without running it when another process holds the run's lock (`_lock_run`):
    two sweeps in one root trained the same run in one workdir at once. The experiment
    inherits the lock, so it stays held while the experiment lives, even if the sweep is
    killed. Module-level so that submitit can pickle it."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_update}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    lock = lock_run(workdir)
    if lock is None:
        return RUN_IN_USE
    try:
        if _STOPPING.is_set():  # submitted just before the sweep was told to stop
            return -signal.SIGTERM
        with open(workdir / "log.txt", "a") as log:
            process = subprocess.Popen(
                list(command), cwd=REPO_ROOT, env=env, stdout=log, stderr=log, pass_fds=(lock,)
            )
            with _CHILDREN_LOCK:
                _CHILDREN.add(process)
            try:
                if _STOPPING.is_set():  # the handler ran before it was registered
                    process.terminate()
                return process.wait()
            finally:
                with _CHILDREN_LOCK:
                    _CHILDREN.discard(process)
    finally:
        os.close(lock)


def _forward_sigterm(signum: int, frame: Any) -> None:
    """`run_local`'s SIGTERM handler: start no more runs and pass the signal on to the running
    experiments (each saves a checkpoint and exits; a rerun resumes it). Without it, `kill`
    of the sweep left its experiments running on, unsupervised, for the rest of their runs."""
    _STOPPING.set()
    with _CHILDREN_LOCK:
        for process in _CHILDREN:
            process.send_signal(signum)


def _slots(parallel: int) -> list[dict[str, str]]:
    """Per-slot environments: one GPU each when CUDA_VISIBLE_DEVICES lists several; no
    preallocation where runs may share a GPU (more runs than listed GPUs, or none listed)."""
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if parallel < 0:
        raise ValueError(f"--parallel={parallel}: expected >= 0 (0 = automatic)")
    if gpus:
        count = parallel or len(gpus)
        slots = [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(count)]
        if count > len(gpus):
            # Several runs per GPU: JAX's default preallocation (75% of the GPU's memory per
            # process) would make the second one fail with out-of-memory.
            for slot in slots:
                slot["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        return slots
    count = parallel or _cpu_cores()
    # No GPU listed: on a GPU machine with CUDA_VISIBLE_DEVICES unset every run uses the same
    # GPU, and each preallocating 75% of its memory made all runs but one fail (harmless on CPU).
    return [{"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if count > 1 else {} for _ in range(count)]


def _cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity: a SLURM allocation, `taskset`, a
    container's cpuset), not `os.cpu_count()`, the machine's: with 4 cores of a 64-core node
    allotted, the sweep started 64 runs at once on them."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _failure(run: Run, code: int) -> str:
    """'FAILED (exit N, log PATH): <the log's last line>', the line that usually names the
    error (absl and Python both end with it)."""
    if code == RUN_IN_USE:
        return (
            f"NOT RUN: {run.workdir} is in use by another process (it holds "
            f"{run.workdir / LOCK_FILE}); rerun this sweep once that one has ended"
        )
    log = run.workdir / "log.txt"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = f": {lines[-1].strip()[:300]}" if lines else ""
    return f"FAILED (exit {code}, log {log}){last}"


def run_local(runs: Sequence[Run], parallel: int = 0) -> list[Run]:
    """Runs the unfinished runs as parallel subprocesses; returns the runs that failed.

    Called from the main thread, it forwards a SIGTERM to the running experiments (each saves
    a checkpoint and exits), starts no further run and then exits (SystemExit) saying so; the
    same command later resumes them."""
    todo = [r for r in runs if not r.finished]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; {len(todo)} to run")
    slots = _slots(parallel)
    _STOPPING.clear()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _forward_sigterm)
    try:
        failed, queue = _run_pool(todo, slots)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if _STOPPING.is_set():
        _STOPPING.clear()
        sys.exit(
            f"launch.sweep: stopped by SIGTERM ({len(queue)} run(s) not started); running the "
            "same command again resumes the unfinished runs"
        )
    return failed


def _run_pool(todo: Sequence[Run], slots: Sequence[Mapping[str, str]]) -> tuple[list, list]:
    """`run_local`'s pool: (the runs that failed, those never started after a SIGTERM)."""
    free = list(range(len(slots)))
    failed, done = [], 0
    queue = list(todo)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(slots)) as pool:
        pending = {}

        def submit(run: Run) -> None:
            slot = free.pop()
            future = pool.submit(execute, run.command, str(run.workdir), slots[slot])
            pending[future] = (run, slot, time.monotonic())

        while queue and free:
            submit(queue.pop(0))
        while pending:
            finished, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                run, slot, start = pending.pop(future)
                free.append(slot)
                try:
                    code, error = future.result(), None
                except OSError as exc:
                    # The run's folder or log could not be made (a file of that name in the
                    # root, a full disk): a traceback that ended the sweep, the other runs
                    # never started.
                    code, error = None, exc
                done += 1
                ok = error is None and code == 0 and run.finished
                if ok:
                    status = "done"
                elif error is not None:
                    status = f"FAILED (not started: {error})"
                elif _STOPPING.is_set():
                    status = f"stopped (SIGTERM; log {run.workdir / 'log.txt'})"
                else:
                    status = _failure(run, code)
                print(
                    f"[{done}/{len(todo)}] {run.name}: {status} in {time.monotonic() - start:.0f}s",
                    flush=True,
                )
                if not ok:
                    failed.append(run)
                if queue and not _STOPPING.is_set():
                    submit(queue.pop(0))
    return failed, queue


def run_submitit(runs: Sequence[Run], cluster: str, parameters: Mapping[str, Any]) -> list[Run]:
    """One submitit job per unfinished run (cluster "slurm" or "local"); waits for them all.

    ValueError when submitit cannot submit from here (no SLURM on this machine, a parameter it
    refuses): a traceback ('Could not detect "srun"'). A submission the scheduler refuses (a
    partition it does not know, a time over the limit) ends the submissions: that run and the
    ones after it are failed (NOT SUBMITTED, with the error), and the jobs already submitted
    are waited for (it was a traceback that left them running unwatched)."""
    import submitit

    todo = [r for r in runs if not r.finished]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; {len(todo)} to submit")
    if not todo:
        return []
    root = todo[0].workdir.parent
    try:
        executor = submitit.AutoExecutor(folder=root / ".submitit" / "%j", cluster=cluster)
        executor.update_parameters(**parameters)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"submitit cannot submit {cluster!r} jobs from here: {error}") from None
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    # The importable `launch.sweep.execute`, which cloudpickle pickles by reference: run as
    # `python -m launch.sweep` this module is `__main__`, whose functions it pickles by value
    # with the globals they use (`_STOPPING`'s lock), and every submission failed with
    # "TypeError: cannot pickle '_thread.lock' object".
    target = importlib.import_module("launch.sweep").execute
    jobs, unsubmitted = [], []
    for index, run in enumerate(todo):
        executor.update_parameters(name=run.name)
        try:
            jobs.append((run, executor.submit(target, run.command, str(run.workdir), {})))
        except Exception as error:  # noqa: BLE001 - sbatch's refusal, reported by run
            unsubmitted = todo[index:]
            reason = " ".join(str(error).split())[:300]
            print(
                f"{run.name}: NOT SUBMITTED ({type(error).__name__}: {reason}); nor the "
                f"{len(unsubmitted) - 1} run(s) after it",
                flush=True,
            )
            break
    failed = []
    for i, (run, job) in enumerate(jobs, 1):
        try:
            code = job.result()
        except Exception as error:  # noqa: BLE001 - a job's failure is reported, not raised
            print(f"{run.name}: job {job.job_id} raised {error!r}")
            code = -1
        ok = code == 0 and run.finished
        print(f"[{i}/{len(jobs)}] {run.name}: {'done' if ok else _failure(run, code)}")
        if not ok:
            failed.append(run)
    return failed + unsubmitted


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command-line flags (defined only when run as a program, so that importing this
    module next to another absl program does not clash over `--workdir`/`--config`), in
    `flag_values` (absl's FLAGS; a test's own FlagValues)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string(
        "config",
        None,
        "experiments/configs/<name>.py:<variant>, as for the experiment itself.",
        **fv,
    )
    flags.DEFINE_string("workdir", None, "Sweep root; each run gets ROOT/<run_name>/.", **fv)
    flags.DEFINE_enum(
        "launcher",
        "local",
        LAUNCHERS,
        "local: parallel subprocesses on this machine; slurm: one SLURM job per run via submitit; "
        "submitit_local: submitit's local executor (what the tests use in place of SLURM).",
        **fv,
    )
    flags.DEFINE_integer(
        "parallel",
        0,
        "local launcher: runs at once (refused with another launcher). 0 = one per GPU listed "
        "in CUDA_VISIBLE_DEVICES, else one per CPU core this process may use.",
        lower_bound=0,  # refused when parsed: `_slots` refused it only after sweep.json
        **fv,
    )
    flags.DEFINE_multi_string(
        "set",
        [],
        "key=value config override applied to every run (e.g. --set=train.num_steps=50).",
        **fv,
    )
    flags.DEFINE_boolean(
        "dry_run", False, "Print the planned runs and exit, writing nothing.", **fv
    )
    slurm_only = " (--launcher=slurm only; refused with another launcher)"
    flags.DEFINE_string("slurm_partition", None, "SLURM partition" + slurm_only, **fv)
    flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per run" + slurm_only, lower_bound=0, **fv)
    flags.DEFINE_integer(
        "slurm_cpus_per_task", 4, "CPU cores per run" + slurm_only, lower_bound=1, **fv
    )
    flags.DEFINE_integer(
        "slurm_time_min",
        240,
        "Wall-clock limit per run, minutes (slurm and submitit_local; refused with local).",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_integer(
        "slurm_mem_gb", 32, "Memory per run, GiB" + slurm_only, lower_bound=1, **fv
    )


def check_launcher_flags(launcher: str, given: Sequence[str]) -> None:
    """The launcher-specific flags (`--parallel`, `--slurm_*`) `given` on the command line are
    all read by `launcher` (`LAUNCHER_FLAGS`), or ValueError naming the first that is not and
    the launcher."""
    for name in given:
        if name in LAUNCHER_SPECIFIC_FLAGS and name not in LAUNCHER_FLAGS[launcher]:
            readers = [f"--launcher={k}" for k, names in LAUNCHER_FLAGS.items() if name in names]
            raise ValueError(
                f"--{name} is not used by --launcher={launcher}, which would ignore it (it is "
                f"read by {' and '.join(readers)}); drop the flag or use such a launcher"
            )


def launcher_parameters(launcher: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The submitit parameters of `launcher` from the `--slurm_*` flag values it reads."""
    parameters = {
        SLURM_PARAMETERS[name]: values[name]
        for name in LAUNCHER_FLAGS[launcher]
        if name in SLURM_PARAMETERS
    }
    if parameters.get("gpus_per_node") == 0:
        del parameters["gpus_per_node"]  # '--gpus-per-node=0' is refused by some sites
    return parameters


def _refuse(message: str) -> NoReturn:
    """A setting to fix (a flag, the config, the root): one line, exit 2 (`rnn_jax.exits`)."""
    refuse(message, "launch.sweep")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        _refuse(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.config or not flags.FLAGS.workdir:
        _refuse("--config and --workdir are required")
    try:
        given = [name for name in LAUNCHER_SPECIFIC_FLAGS if flags.FLAGS[name].present]
        check_launcher_flags(flags.FLAGS.launcher, given)
    except ValueError as error:
        _refuse(str(error))
    root = pathlib.Path(flags.FLAGS.workdir).resolve()
    try:
        check_workdir(flags.FLAGS.workdir)  # a file there was a FileExistsError traceback
        runs = plan_runs(flags.FLAGS.config, flags.FLAGS.workdir, parse_set_flags(flags.FLAGS.set))
        check_finished_runs(root, runs)
        busy = [run.name for run in runs if not run.finished and run_in_use(run.workdir)]
        if busy:
            # before sweep.json is rewritten with this plan's commands
            raise ValueError(
                f"runs {busy} are being executed by another process (another sweep into "
                f"{root}, or experiments a killed sweep left running); wait for it to end"
            )
    except ValueError as error:
        _refuse(str(error))
    for run in runs:
        print(f"{'done ' if run.finished else 'to do'}  {run.name}")
    if flags.FLAGS.dry_run:
        # before sweep.json: a dry run into a finished root rewrote it with the planned runs,
        # and launch.report then grouped that root's finished runs by a plan that never ran
        return
    write_sweep_file(root, flags.FLAGS.config, runs)
    if flags.FLAGS.launcher == "local":
        failed = run_local(runs, flags.FLAGS.parallel)
    else:
        values = {name: flags.FLAGS[name].value for name in SLURM_PARAMETERS}
        parameters = launcher_parameters(flags.FLAGS.launcher, values)
        cluster = "slurm" if flags.FLAGS.launcher == "slurm" else "local"
        try:
            failed = run_submitit(runs, cluster, parameters)
        except ValueError as error:
            # no SLURM here, or a --slurm_* value submitit refuses: before any run is submitted
            _refuse(f"--launcher={flags.FLAGS.launcher}: {error}")
    if failed:
        sys.exit(f"launch.sweep: {len(failed)} run(s) failed: {[r.name for r in failed]}")
    print(f"all {len(runs)} runs finished; aggregate with: python -m launch.report {root}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
