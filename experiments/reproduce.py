"""The main job: every experiment's `quick` variant in turn, then one report.

    python -m experiments.reproduce [--workdir=runs/reproduce] [--only=a,b] [--skip=c]

Runs `python -m experiments.<name> --workdir=W/<name> --config=experiments/configs/<name>.py:quick`
for every experiment that has a config file (in the order of `ORDER`, then the rest), with a
progress line per experiment; a finished experiment (W/<name>/results.json) is not re-run, so
an interrupted reproduction continues where it stopped (one finished under another
`--variant`, or under a config whose values have changed since, as recorded in
W/<name>/reproduce_variant.json, stops it before anything runs).
Then writes W/report.md, which answers each of the seed's 20 questions with the numbers just
measured (experiments that have an `answers(workdir) -> {question: markdown}` function supply
the text; every other experiment's tables are included as they are) and links every plot;
an experiment that failed in this run, or that --only/--skip left out, is named as such in the
report's header and in a section of its own (a failed one makes the job exit 1, after the
report is written). A bad flag (an unknown experiment or variant, an empty --workdir) exits
2 before anything is written. SIGTERM and SIGHUP stop the running experiment too (it saves a
checkpoint).
Needs no download: the real corpora come from ../shared/data (RNN_JAX_DATA), everything else
is synthetic.

This module is the command line and the choice of experiments; running one experiment is
`experiments.reproduce_run`, the report `experiments.reproduce_report`, and the record of the
variant a workdir ran `experiments.reproduce_variants`.
"""

from __future__ import annotations

import importlib
import pathlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from absl import app, flags

from experiments.reproduce_report import write_report
from experiments.reproduce_run import REPO, run_experiment
from experiments.reproduce_variants import config_changes, finished_variant
from rnn_jax import exits
from rnn_jax.files import RESULTS_FILE, check_workdir

# The issue-6 experiments first, then the runtime's and the performance work's.
ORDER = (
    "initialization",
    "exposure_bias",
    "rnn_vs_attention",
    "language_model",
    "throughput",
    "data_throughput",
)
NOT_EXPERIMENTS = ("reproduce", "grid")


def experiment_names() -> list[str]:
    """Every `experiments/<name>.py` that has `experiments/configs/<name>.py`, in ORDER."""
    configs = {p.stem for p in (REPO / "experiments" / "configs").glob("[!_]*.py")}
    modules = {p.stem for p in (REPO / "experiments").glob("[!_]*.py")}
    names = sorted((configs & modules) - set(NOT_EXPERIMENTS))
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def select(names: Sequence[str], only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    """The experiments to run: `only` (None: all) without `skip`. An empty `--only=` (say
    `--only=$EXP` with EXP unset) is refused: it parsed to [] and ran all 14."""
    if only is not None and not [name for name in only if name]:
        raise ValueError(f"--only={','.join(only)} names no experiment; leave it out to run all")
    only = only or []
    for flag, values in (("--only", only), ("--skip", skip)):
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{flag}={','.join(values)}: unknown {unknown}; known: {names}")
    both = sorted(set(only) & set(skip))
    if both:
        # --skip would silently win over --only for these (and with nothing else named in
        # --only, nothing would run and an empty report would be written)
        raise ValueError(f"--only and --skip both name {both}")
    selected = [n for n in names if (not only or n in only) and n not in skip]
    if not selected:
        # every experiment skipped: nothing ran, a report of none was written, exit 0 (and
        # --variant went unchecked, with no experiment to check it against)
        raise ValueError(f"--skip={','.join(skip)} leaves no experiment to run")
    return selected


def check_variant(names: Sequence[str], variant: str) -> None:
    """ValueError unless every experiment in `names` has config variant `variant`, so that a
    misspelt --variant stops before any workdir, log or report is written."""
    missing = [
        name
        for name in names
        if variant not in importlib.import_module(f"experiments.configs.{name}").VARIANTS
    ]
    if missing:
        raise ValueError(f"--variant={variant}: unknown to the config of {', '.join(missing)}")


def define_flags() -> None:
    """The command-line flags, defined only when run as a program (importable in tests)."""
    flags.DEFINE_string("workdir", "runs/reproduce", "Where every experiment writes.")
    flags.DEFINE_list("only", None, "Run only these experiments (default: all).")
    flags.DEFINE_list("skip", [], "Experiments not to run.")
    flags.DEFINE_string("variant", "quick", "Config variant to run (tests use smoke).")
    flags.DEFINE_float(
        "stall_minutes",
        2.0,
        "Kill and restart (resuming) an experiment whose process used no CPU for this long "
        "(a guard against stalls such as the XLA:CPU pool deadlock of docs/design.md; "
        "0 disables).",
    )
    flags.DEFINE_integer(
        "max_restarts",
        5,
        "Restarts of a stalled experiment before giving up (each resumes at its next unfinished "
        "point; before rnn_jax/linalg.py, exposure_bias's Multi30k points wedged up to three "
        "times in one run).",
    )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """The handler of SIGTERM and SIGHUP (`main`)."""
    name = signal.Signals(signum).name
    raise SystemExit(f"experiments.reproduce: stopped by {name} (signal {signum})")


def _bad_flags(message: str) -> NoReturn:
    """A flag to fix: one line, exit 2, as the experiments' own CLIs (`rnn_jax.exits`)."""
    exits.refuse(message, "experiments.reproduce")


def main(argv: Sequence[str]) -> None:
    # SIGTERM, and SIGHUP (the terminal or ssh session closing), become SystemExit, so the
    # running experiment is stopped too (`_run_watched`): it runs in a session of its own, so
    # neither reaches it directly, and left running it would go on writing into its workdir.
    # A SIGHUP ignored by the caller (`nohup`) stays ignored.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _exit_on_sigterm)
    if len(argv) > 1:
        _bad_flags(f"unexpected arguments: {argv[1:]}")
    for flag in ("stall_minutes", "max_restarts"):
        if not getattr(flags.FLAGS, flag) >= 0:  # NaN too: it would disable the watchdog
            _bad_flags(f"--{flag}={getattr(flags.FLAGS, flag)} must be >= 0")
    try:
        known = experiment_names()
        names = select(known, flags.FLAGS.only, flags.FLAGS.skip)
        check_variant(names, flags.FLAGS.variant)
        check_workdir(flags.FLAGS.workdir)
        root = pathlib.Path(flags.FLAGS.workdir).resolve()
    except ValueError as error:
        _bad_flags(str(error))
    # A finished run is skipped below: one of another variant would be reported as this one.
    other = {
        name: variant
        for name in names
        if (root / name / RESULTS_FILE).is_file()
        and (variant := finished_variant(root / name)) not in (None, flags.FLAGS.variant)
    }
    if other:
        _bad_flags(
            f"{root} holds finished runs of another variant than "
            f"--variant={flags.FLAGS.variant}: "
            + ", ".join(f"{name} ({variant})" for name, variant in other.items())
            + "; use another --workdir, or delete those runs to redo them"
        )
    changed = {
        name: changes
        for name in names
        if (root / name / RESULTS_FILE).is_file()
        and (changes := config_changes(name, root / name, flags.FLAGS.variant))
    }
    if changed:
        _bad_flags(
            f"{root} holds finished runs whose config has changed since they ran: "
            + "; ".join(
                f"{name} ({', '.join(changes[:3])}{' and more' if len(changes) > 3 else ''})"
                for name, changes in changed.items()
            )
            + "; use another --workdir, or delete those runs to redo them"
        )
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"reproducing {len(names)} experiments ({flags.FLAGS.variant}) into {root}: "
        + ", ".join(names)
    )
    wall, failed, start = {}, {}, time.monotonic()
    for i, name in enumerate(names, 1):
        index = f"[{i}/{len(names)}]"
        if (root / name / RESULTS_FILE).is_file():
            print(f"{index} {name}: finished earlier, not re-run")
            continue
        wall[name], code = run_experiment(
            name,
            root / name,
            flags.FLAGS.variant,
            index,
            stall_s=60 * flags.FLAGS.stall_minutes,
            max_restarts=flags.FLAGS.max_restarts,
        )
        if code:  # NO_RESULTS among them: an exit 0 without results.json (`run_experiment`)
            failed[name] = code
    # Left out this time but finished earlier in this workdir under this variant (e.g. one
    # experiment redone with --only): reported as they stand, so the report stays whole.
    earlier = [
        name
        for name in known
        if name not in names
        and (root / name / RESULTS_FILE).is_file()
        # unrecorded (None): taken as this variant, as the check before the runs takes it
        and finished_variant(root / name) in (None, flags.FLAGS.variant)
        and not config_changes(name, root / name, flags.FLAGS.variant)
    ]
    skipped = [name for name in known if name not in names and name not in earlier]
    write_report(
        root,
        [name for name in known if name in names or name in earlier],
        wall,
        failed=failed,
        skipped=skipped,
        variant=flags.FLAGS.variant,
    )
    print(f"total {(time.monotonic() - start) / 60:.1f} min; report: {root / 'report.md'}")
    if failed:
        sys.exit(f"experiments.reproduce: failed: {', '.join(failed)} (their logs are named above)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
