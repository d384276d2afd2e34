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

The parts: `launch.plan` (the runs a config's sweep gives, checked), `launch.record`
(ROOT/sweep.json, and which finished runs a rerun may reuse) and `launch.executors` (running
them, locally or through submitit); this module is the command line (flags, launcher checks,
`main`).
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from absl import app, flags

from launch.executors import run_local, run_submitit
from launch.plan import parse_set_flags, plan_runs
from launch.record import check_finished_runs, write_sweep_file
from rnn_jax.exits import refuse
from rnn_jax.files import check_workdir, run_in_use

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
