"""A sweep's plan: the runs a config file's sweep gives, every one checked before anything runs.

`plan_runs("experiments/configs/<name>.py:<variant>", ROOT, common)` reads the config file as the
experiment's CLI reads it and expands `get_sweep(variant)` (`launch.points`). Each point's keys
must be config fields of a compatible type (`check_overrides`), the config with the point must
pass the experiment's value rules (`check_rules`), and the `--set key=value` values
(`parse_set_flags`, `common`) are read as each run's command line will read them. Points that
differ only in `seed` must train disjoint replica seeds (`check_seed_replicas`). Each point
becomes a `Run`: its directory ROOT/<run_name>, its command `python -m experiments.<name>
--config.<key>=<value> ...` and its planned flat config. A refusal is a ValueError naming the
config file, variant, key or point.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags

from launch.points import expand_sweep, setting_key
from rnn_jax.files import RESULTS_FILE
from rnn_jax.predicates import is_int
from rnn_jax.train import config_checks, config_file, config_keys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The longest run directory name, in bytes: NAME_MAX of Linux's common filesystems (ext4, XFS,
# Btrfs, NFS, Lustre). Names up to it are kept as they were, so existing roots still resume.
MAX_RUN_NAME = 255


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep: where it runs and which config overrides it applies."""

    name: str
    workdir: pathlib.Path
    overrides: dict[str, Any]
    command: tuple[str, ...]
    # The flat config (`config_keys.flat_config`) the run is planned with: the variant's config with
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
        config_checks.validate(
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
        runs.append(Run(name_, workdir, dict(point), command, config_keys.flat_config(planned)))
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
