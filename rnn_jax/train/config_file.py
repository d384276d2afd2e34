"""Reading a config file: execute it, call its functions, and name the file in every failure.

A config file (`experiments/configs/<name>.py`) defines `get_config(variant)`, which returns
the run's `ml_collections.ConfigDict`, and, for `launch.sweep`, `get_sweep(variant)`. The
training CLI's `--config` flag, `cli.load_config` and `launch.sweep` all read files through
this module, so a file that cannot give what is asked (a syntax or import error, a missing
function, a signature that does not take the variant, an exception inside it, a result of
the wrong type) is one `ConfigError` naming the file, the call and the line in the file,
wherever it is read.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import pathlib
import sys
import traceback
import types
from typing import Any

import ml_collections

from rnn_jax.train.config import ConfigError


def split_config_arg(argument: str) -> tuple[str, str | None]:
    """`<file>[:<variant>]` -> (file, variant; None without a ':'), as the training CLI's
    `--config` and `cli.load_config` read it.

    config_flags splits at the first ':', which cut a file in a folder whose name holds a ':'
    (`/scratch/run:2/experiments/configs/x.py:smoke`, as `launch.sweep` passes the resolved
    path) at that folder: every run refused. The split is at the first ':' before which a
    file exists, else the whole argument when it is a file, else at the first ':' (the missing
    file is named as before); wherever config_flags' split found a file, it is the same."""
    start = 0
    while (colon := argument.find(":", start)) >= 0:
        if pathlib.Path(argument[:colon]).is_file():
            return argument[:colon], argument[colon + 1 :]
        start = colon + 1
    if pathlib.Path(argument).is_file():
        return argument, None
    file, colon, variant = argument.partition(":")
    return file, variant if colon else None


def load_config_file(path: str | pathlib.Path) -> types.ModuleType:
    """Execute the config file at `path` (any suffix, as config_flags) and return it as a
    module, registered in `sys.modules` as config_flags registers it (dataclasses defined in
    the file look their module up there).

    Raises:
      ConfigError: naming the file when it does not exist or cannot be executed (a syntax
        error, a failed import, an exception at module level).
    """
    path = str(path)
    if not pathlib.Path(path).is_file():
        raise ConfigError(f"config file {path!r} not found")
    # One name per file (its stem and a digest of its resolved path): two files sharing a
    # stem (`a/quick.py`, `b/quick.py`) shared one name, and loading the second replaced the
    # first in `sys.modules`, so a dataclass instance of the first no longer pickled.
    resolved = str(pathlib.Path(path).resolve())
    stem = "".join(c if c.isalnum() else "_" for c in pathlib.Path(path).stem)
    name = f"_config_file_{stem}_{hashlib.sha256(resolved.encode()).hexdigest()[:12]}"
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ConfigError(
            f"config file {path!r} failed to load: {error_line(error, path)}"
        ) from None
    return module


def call_config_function(
    module: types.ModuleType,
    function: str,
    path: str | pathlib.Path,
    args: tuple = (),
    *,
    variant_optional: bool = True,
) -> Any:
    """`module.<function>(*args)` of the config file at `path`. `variant_optional`: whether
    the caller may leave the variant out (the training CLI may, `launch.sweep` may not), so
    that a signature mismatch can suggest giving or dropping `:<variant>`.

    Raises:
      ConfigError: naming the file and the call when the file defines no such function, its
        signature cannot take `args`, or it raises; a `ConfigError` of the function itself
        (an unknown variant, `config.select_variant`) as it came.
    """
    path = str(path)
    target = getattr(module, function, None)
    if not callable(target):
        raise ConfigError(
            f"config file {path!r} defines no {function} function (a config file's "
            f"{function}(variant) gives the run's "
            f"{'ml_collections.ConfigDict' if function == 'get_config' else 'sweep points'})"
        )
    call = _call_text(function, args)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to check (a builtin): just call it
        signature = None
    if signature is not None:
        try:
            signature.bind(*args)
        except TypeError as error:
            if not variant_optional:
                hint = f"define {function}(variant)"
            elif args:
                hint = f"give the file without ':{args[0]}'"
            else:
                hint = f"give {path}:<variant>"
            raise ConfigError(
                f"config file {path!r}: {function}{signature} cannot be called as {call} "
                f"({error}); {hint}"
            ) from None
    try:
        return target(*args)
    except ConfigError:
        raise  # the config's own message (an unknown variant lists the allowed ones)
    except Exception as error:
        raise ConfigError(
            f"config file {path!r}: {call} raised {error_line(error, path)}"
        ) from None


def config_of(
    module: types.ModuleType,
    path: str | pathlib.Path,
    args: tuple = (),
    *,
    variant_optional: bool = True,
) -> ml_collections.ConfigDict:
    """The config file's `get_config(*args)`, checked to be a ConfigDict (`call_config_function`
    names every other failure)."""
    config = call_config_function(
        module, "get_config", path, args, variant_optional=variant_optional
    )
    if not isinstance(config, ml_collections.ConfigDict):
        got = "None (a missing return statement?)" if config is None else _short_repr(config)
        call = _call_text("get_config", args)
        raise ConfigError(
            f"config file {str(path)!r}: {call} returned {got}, not an ml_collections.ConfigDict"
        )
    return config


def read_config_file(path: str | pathlib.Path, args: tuple = ()) -> ml_collections.ConfigDict:
    """Execute the config file at `path` and return its `get_config(*args)` (unlocked); every
    failure is a `ConfigError` naming the file (`load_config_file`, `config_of`)."""
    return config_of(load_config_file(path), path, args)


def read_config_spec(spec: str) -> ml_collections.ConfigDict:
    """`<file>[:<variant>]` (split by `split_config_arg`) -> the file's `get_config(variant)`,
    or `get_config()` without a ':' (unlocked; `read_config_file`). `x.py:` passes the empty
    variant '', as config_flags does."""
    file, variant = split_config_arg(spec)
    return read_config_file(file, () if variant is None else (variant,))


def error_line(error: BaseException, path: str | pathlib.Path) -> str:
    """`Type: message (file, line N)`: where in the file at `path` `error` was raised (its last
    frame there; a SyntaxError names its line itself)."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError):
        return text
    target = pathlib.Path(path).resolve()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if pathlib.Path(frame.filename).resolve() == target
    ]
    return text + (f" ({path}, line {lines[-1]})" if lines else "")


def _call_text(function: str, args: tuple) -> str:
    """`get_config('smoke')`: the call as messages name it."""
    return f"{function}({', '.join(map(repr, args))})"


def _short_repr(value: Any, limit: int = 60) -> str:
    """`type repr`, the repr cut to `limit` characters."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"
