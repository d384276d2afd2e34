"""The command line every experiment shares (absl + ml_collections `config_flags`).

An experiment module ends with

    if __name__ == "__main__":
        cli.main(make_task, rules=RULES)

and is run as

    python -m experiments.<name> --workdir=W --config=experiments/configs/<name>.py:<variant> \
        [--config.train.num_steps=200 ...] \
        [--coordinator_address=host:port --num_processes=N --process_id=i]

The variant after ':' is passed to the config file's `get_config(variant)`. Configs are
locked: an unknown or mistyped key, a value of the wrong type, or a value out of range stops
the run before anything is compiled, with a message naming the key, the value and what is
allowed, and exit status 1 (absl flag errors) or 2 (config values, data, arguments:
`rnn_jax.exits`).
"""

from __future__ import annotations

import logging as std_logging
import pathlib
import sys
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from rnn_jax import allocator
from rnn_jax.data.data_files import DataFormatError, DataNotFoundError
from rnn_jax.exits import refuse
from rnn_jax.files import check_workdir
from rnn_jax.train import config as config_lib
from rnn_jax.train import config_checks, config_file, config_keys, distributed, saved_config
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.task import Task


def define_flags() -> None:
    """Define `--config`, `--workdir` and the multi-host flags (once per process)."""
    if "workdir" in flags.FLAGS:
        return
    try:
        config_flags.DEFINE_config_file(
            "config",
            None,
            "experiments/configs/<name>.py:<variant>; override keys with --config.<key>=<value>",
            lock_config=True,
        )
    except flags.Error as error:
        # config_flags reads sys.argv, its --flagfile expanded, when the flag is defined: a
        # flag file that cannot be opened was a traceback from there
        _flag_error_exit(str(error))
    # config_flags' own loading reported a config file without get_config, or whose
    # get_config raised a KeyError/AttributeError, as an unknown override key, and a syntax
    # error or any other failure in it as a traceback (exit 1): load it with ours.
    flags.FLAGS["config"].parser = _ConfigFileParser()
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, results.json.")
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0 (multi-host without SLURM/TPU)."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
    flags.DEFINE_integer(
        "initialization_timeout", 300, "Seconds to wait for all processes to join."
    )
    flags.mark_flags_as_required(["config", "workdir"])


def main(
    make_task: Callable[[ml_collections.ConfigDict], Task],
    rules: Mapping | None = None,
    run: Callable[[ml_collections.ConfigDict, str, Task], Any] = train_and_evaluate,
    trains: bool = True,
    reads_only: Callable[[], bool] | None = None,
) -> None:
    """Parse the command line, validate the config, then `run(config, workdir, task)`.

    Args:
      make_task: builds the experiment's `Task` from the validated config.
      rules: the experiment's value rules (`rnn_jax.train.rules.Rules`), checked with the
        runtime's own before anything is compiled.
      run: what to do with them (default: `train_and_evaluate`; a benchmark passes its own).
      trains: False for an experiment that trains nothing: its config need not carry the
        training runtime's keys (`rnn_jax.train.config_checks.validate`).
      reads_only: called once the flags are parsed; True when this invocation only reads a
        finished run (the language model's `--sample`): the resume check, whose advice is
        about resuming, is left to the run's own restore (it said "resuming would mix two
        runs ... use a new --workdir" of a run that was to be sampled, not resumed).
    """
    define_flags()

    def _main(argv: list[str]) -> None:
        logging.get_absl_handler().addFilter(_QuietLibraries())
        if len(argv) > 1:
            refuse(f"unexpected arguments: {argv[1:]}")
        config = flags.FLAGS.config
        workdir = flags.FLAGS.workdir
        try:
            check_workdir(workdir)
            config_checks.validate(config, rules, trains=trains)
            if reads_only is None or not reads_only():
                saved_config.check_resumable(workdir, config)
            allocator.configure(config.malloc)  # before anything allocates XLA buffers
        except ValueError as error:
            refuse(str(error))
        try:
            distributed.initialize(
                flags.FLAGS.coordinator_address,
                flags.FLAGS.num_processes,
                flags.FLAGS.process_id,
                flags.FLAGS.initialization_timeout,
            )
        except ValueError as error:  # partial or malformed multi-host flags
            refuse(str(error))
        try:
            try:
                task = make_task(config)
            except FileNotFoundError as error:
                # The task's data (a config's data.root or dataset path) is missing: a
                # setting to fix, named by the error, not a traceback.
                raise config_lib.ConfigError(f"task data not found: {error}") from error
            run(config, workdir, task)
        except config_lib.ConfigError as error:
            # Raised by the task's constructor (its data) or before the run writes anything
            # (e.g. train.best_metric, checked against the metrics evaluation will give).
            refuse(str(error))
        except DataNotFoundError as error:
            # Grid experiments load each point's data inside `run`: the same setting to fix.
            refuse(f"task data not found: {error}")
        except DataFormatError as error:
            # A malformed data line, named file:line by the reader: the data to fix, in one
            # line (it was a traceback, exit 1, in every experiment that reads files).
            refuse(f"data error: {error}")

    app.run(_main, flags_parser=_parse_flags)


class _QuietLibraries(std_logging.Filter):
    """Drop INFO chatter of orbax (several lines per save) so the progress line stays readable."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


NONE_TEXT = "None"


def _none_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split off `--config.<key>=None`: -> (argv without them, the keys to set to None).

    config_flags parses an override by the field's type, so "None" fails on a float or int
    field ("could not convert string to float") and is the text 'None' in a str field; a
    researcher turning clipping off (`--config.optimizer.clip_global_norm=None`) means None.
    The last assignment of a key wins, as on any command line: every `=None` is taken out
    (an earlier one that a later value overrides too, which config_flags would fail to
    parse), and so is every `=` assignment before a last `=None`. absl also takes a flag's
    value as the next argument (`--config.k None`) and one leading dash (`-config.k=None`):
    both are read here as `--config.k=None` too. Any later spelling of the key overrides an
    earlier None: a bare boolean `--config.k` or `--noconfig.k`, and `--config.k -5` (a value
    starting with '-', which absl takes as the value: it was set to None after it). After a
    `--` every argument is positional (absl's "unexpected arguments"), never an override."""
    argv = _joined_overrides(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    last: dict[str, int] = {}
    for i, arg in enumerate(argv[:end]):
        key = _override_key(arg)
        if key is not None:
            last[key] = i
    none_keys = [key for key, i in last.items() if argv[i] == f"--config.{key}={NONE_TEXT}"]
    drop = {f"--config.{key}" for key in none_keys}

    def dropped(arg: str) -> bool:
        name, eq, value = arg.partition("=")
        return bool(eq) and name.startswith("--config.") and (name in drop or value == NONE_TEXT)

    return [arg for i, arg in enumerate(argv) if i >= end or not dropped(arg)], none_keys


def _override_key(arg: str) -> str | None:
    """The config key an argument assigns (`--config.<key>[=v]`, `--noconfig.<key>`, after
    `_joined_overrides`), else None."""
    name = arg.partition("=")[0]
    for prefix in ("--config.", "--noconfig.", "-noconfig."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def _joined_overrides(argv: list[str]) -> list[str]:
    """`--config.k=v` for every `-config.k=v` and `--config.k v` (a next argument that is not
    a flag) up to a `--`, so that `_none_overrides` sees each assignment in one argument."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("-config."):
            arg = "-" + arg
        if arg.startswith("--config.") and "=" not in arg and i + 1 < len(argv):
            value = argv[i + 1]
            if value != "--" and not value.startswith("-"):
                out.append(f"{arg}={value}")
                i += 2
                continue
        out.append(arg)
        i += 1
    return out


def _set_none(config: ml_collections.ConfigDict, key: str) -> None:
    config_keys.lookup(config, key)  # KeyError(key) when the config has no such field
    section, _, name = key.rpartition(".")
    setattr(config_keys.lookup(config, section) if section else config, name, None)


def _parse_flags(argv: list[str]) -> list[str]:
    # absl's --flagfile expanded first (as flags.FLAGS(argv) would): the `=None` overrides,
    # the unknown-key naming and the config-file check read the arguments themselves, so a
    # `--config.k=None` in a flag file failed to parse, and one on the command line before a
    # flag file that set the key won over it.
    try:
        argv = flags.FlagValues().read_flags_from_files(argv, force_gnu=False)
    except flags.Error as error:
        _flag_error_exit(str(error))
    # A --config file that does not exist makes config_flags report every other flag as
    # missing (dozens of lines, the file never named): check it first.
    _check_config_file(argv)
    # config_flags reads the overrides from sys.argv, `=None` ones included: an unknown key
    # is named from all of them (from those left below it was the bare 'nm_steps').
    given = _joined_overrides(argv)
    argv, none_keys = _none_overrides(argv)
    # config_flags reports an unknown override key (`--config.train.nm_steps=3`) as an
    # AttributeError from deep inside; turn it into one line that names the key.
    try:
        rest = flags.FLAGS(argv)
        for key in none_keys:
            _set_none(flags.FLAGS.config, key)
        return rest
    except (AttributeError, KeyError) as error:
        message = _unknown_key(error, given)
        refuse(f"config error: unknown key in the command line overrides: {message}")
    except flags.Error as error:
        # config_flags wraps a ConfigError of `get_config` (an unknown variant) in a flag error
        # whose text is a traceback; report the innermost one's own line, as for rule errors.
        cause, config_error = error, None
        while cause is not None:
            if isinstance(cause, config_lib.ConfigError):
                config_error = cause
            cause = cause.__cause__ or cause.__context__
        if config_error is not None:
            refuse(f"config error: {config_error}")
        message = str(error)
        if message.startswith("flag --config."):
            # A config override whose value does not parse as its field's type
            # (`--config.seed=abc`): a config error like any other (exit 2), not a usage one.
            refuse(f"config error: {message}")
        _flag_error_exit(message)


def _flag_error_exit(message: str) -> NoReturn:
    """Exit 1 with a flag error as `app.parse_flags_with_usage` reports it (parsing again
    would define the override flags twice)."""
    if "\n" in message:
        message = "\n" + textwrap.indent(message, "  ")
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def _unknown_key(error: BaseException, argv: list[str]) -> str:
    """The dotted key of the override config_flags could not set, with ml_collections' hint:
    `'train.nm_steps' (Did you mean "num_steps" instead of "nm_steps"?)`. Its error is an
    AttributeError holding a KeyError holding the bare key; printed as it came, the message
    was the escaped repr of the innermost text, without the key's section."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    texts = [e.args[0] for e in chain if isinstance(e, KeyError) and e.args]
    texts = [t for t in texts if isinstance(t, str)]
    if not texts:
        return str(chain[0])
    bare = texts[-1].split("\n")[0].strip("'")
    hint = next((t.split("\n", 1)[1] for t in texts if "\n" in t), "")
    # The overrides naming the bare key (`--config.model.hidden_size=64` and
    # `--config.train.hidden_size=3` both do): the unknown one is the one the config lacks (the
    # first used to be named, a key that exists).
    matches = [o for a in argv if (o := _override_key(a)) and bare in o.split(".")]
    config = _given_config(argv)
    if config is not None:
        matches = [o for o in matches if not _has_key(config, o)] or matches
    key = matches[0] if matches else bare
    return repr(key) + (f" ({hint})" if hint else "")


def _given_config(argv: list[str]) -> ml_collections.ConfigDict | None:
    """The config of the (last) `--config` in `argv`, without overrides; None if there is
    none or it cannot be read."""
    specs = _config_specs(argv)
    if not specs:
        return None
    try:
        return config_file.read_config_spec(specs[-1])
    except config_lib.ConfigError:
        return None


def _has_key(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether the dotted `key` is a field of `config`."""
    try:
        config_keys.lookup(config, key)
    except KeyError:
        return False
    return True


def _config_specs(argv: list[str]) -> list[str]:
    """The values given to `--config` in `argv` (`--config=<spec>`, `--config <spec>`, one
    leading dash too), up to a `--`."""
    specs = []
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in ("--config", "-config"):
            if eq:
                specs.append(value)
            elif i + 1 < len(argv):
                specs.append(argv[i + 1])
    return specs


def _check_config_file(argv: list[str]) -> None:
    """Exit with status 2, naming the file, when `--config=<file>[:variant]` is not a file."""
    for spec in _config_specs(argv):
        path = config_file.split_config_arg(spec)[0]
        if not pathlib.Path(path).is_file():
            refuse(
                f"config error: --config={spec}: config file {path!r} not found (expected "
                "experiments/configs/<name>.py:<variant>, relative to the current directory)"
            )


class _ConfigFileParser(flags.ArgumentParser):
    """The parser of `--config=<file>[:variant]` (the variant, when given, passed to
    `get_config` as config_flags' own parser does; split by `config_file.split_config_arg`,
    so that a folder with ':' in its name is read), loading the file with
    `config_file.read_config_file`:
    a file that cannot give a config is a `ConfigError` naming it, reported in one line (exit
    status 2). The result is locked (`lock_config=True`)."""

    def parse(self, argument: str) -> ml_collections.ConfigDict:
        config = config_file.read_config_spec(argument)
        config.lock()
        return config

    def flag_type(self) -> str:
        return "config object"


def load_config(
    spec: str,
    overrides: Mapping[str, Any] | None = None,
    rules: Mapping | None = None,
    trains: bool = True,
) -> ml_collections.ConfigDict:
    """Load `path.py:variant`, apply dotted overrides and validate (for tests and sweeps).

    Args:
      spec: `experiments/configs/<name>.py:<variant>`.
      overrides: `{"train.num_steps": 20, ...}`; unknown keys and wrong types raise.
      rules: the experiment's rules (see `main`).
      trains: False for an experiment that trains nothing (see `main`).

    Raises:
      ValueError: an unknown variant, key or out-of-range value (naming it), or a config
        file that gives no config (`ConfigError`, naming the file:
        `config_file.read_config_file`).
    """
    # `x.py:` passes '' as the CLI (config_flags) and launch.sweep do: it gave get_config()'s
    # default variant here while the run of the same spec was refused.
    config = config_file.read_config_spec(spec)
    config.lock()
    for key, value in (overrides or {}).items():
        try:
            config.update_from_flattened_dict({key: value})
        except (AttributeError, KeyError) as error:
            raise ValueError(
                f"config key {key!r} (value {value!r}) does not exist: {error}"
            ) from None
        except TypeError as error:
            raise ValueError(
                f"config key {key!r}: value {value!r} has the wrong type: {error}"
            ) from None
    config_checks.validate(config, rules, trains=trains)
    logging.debug("loaded config %s", spec)
    return config
