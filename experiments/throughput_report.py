"""Issue 7's goals across several throughput runs, and the command line that reports them.

    python -m experiments.throughput_report [--per_run] W1 W2 ...

One run's ratio is not a verdict on a machine whose speed moves by tens of percent between
processes: `across_runs` judges each goal by every run and by the median over runs with its
distribution-free interval (`median_interval`); `floor_across_runs` gives the runs' ratios
to the XLA GEMM floor. One run's own report (throughput.md) is `experiments.
throughput_tables`; the goals and one run's verdicts are `experiments.throughput_goals`.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from absl import app, flags

from experiments.throughput_goals import per_layer_goals, shape_label, speed_goals, unjudged_shapes
from experiments.throughput_tables import FLOOR, PARTIAL, _over, _ratio
from rnn_jax.exits import refuse
from rnn_jax.files import RESULTS_FILE

FLAGS = flags.FLAGS


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """`(median, low, high, coverage)`: a distribution-free confidence interval for the median
    of the population `values` are drawn from, from their order statistics.

    With n independent draws sorted as x(1) <= ... <= x(n), the interval [x(k), x(n+1-k)]
    holds the population median with probability 1 - 2 P(Binomial(n, 1/2) <= k - 1),
    whatever the distribution. k is the largest whose coverage is still >= `level`; with
    too few values for that (n <= 5 at 95%), k = 1 (min to max) and its lower coverage is
    returned as it is.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")

    def coverage(k: int) -> float:
        tail = sum(math.comb(n, i) for i in range(k)) / 2.0**n
        return 1.0 - 2.0 * tail

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return float(np.median(ordered)), ordered[k - 1], ordered[n - k], coverage(k)


# Below this coverage (four runs or fewer: min to max covers the median with 87.5% at four)
# the median verdict is left out.
MIN_COVERAGE = 0.9


def across_runs(runs: list[dict], *, per_run: bool = False) -> str:
    """Every speed goal of several benchmark runs (`results.json` objects; the CPU speed goals
    from the runs on the CPU only, `speed_goals`; a GPU run's per-layer goals in rows of
    their own, "... on gpu"), with two verdicts. "every run": met in every run, missed in
    every run, or split. "median": the median over runs with its
    distribution-free confidence interval (`median_interval`, each run one independent draw
    of the ratio): met when the whole interval is at or above the target, missed when it is
    below, open when it straddles it; "–" with fewer than five runs (`MIN_COVERAGE`). One
    run's ratio is not a verdict on a machine whose speed moves by tens of percent between
    processes.

    Each row shows how many runs measured the goal, in how many it was met and the range of
    their ratios; `per_run=True` shows every run's ratio instead ("–" where a run did not
    measure it)."""
    table: dict[str, list] = {}
    unjudged = []  # groups named like a goal's whose shape is not issue 7's: in no row
    for i, results in enumerate(runs):
        final = results["final"]
        per_layer = final.get("bidirectional", []) + final.get("stacked", [])
        backend = results.get("provenance", {}).get("backend", "cpu")
        speed = speed_goals(final["groups"], backend)
        if backend == "cpu":
            unjudged += [
                f"- NOT JUDGED in run {i + 1}: {x}" for x in unjudged_shapes(final["groups"])
            ]
        # Per-layer goals hold on every backend, but a GPU run's ratio is no draw of the
        # CPU's: it gets its own row, named by its backend.
        where = "" if backend == "cpu" else f" on {backend}"
        per_layer_records = [(what + where, *rest) for what, *rest in per_layer_goals(per_layer)]
        for what, got, goal, _ in speed + per_layer_records:
            table.setdefault(what, [goal, [None] * len(runs)])[1][i] = got
    notes = "".join(f"{line}\n" for line in unjudged)
    if not table:
        # An empty table and "covering the median with probability  (..." before.
        return (
            f"No speed goal in these {len(runs)} run(s): none timed a shape and mode that a "
            "goal names (`speed_goals`) or a bidirectional or stacked group.\n" + notes
        )
    coverages = set()
    if per_run:
        columns = [f"run {i + 1}" for i in range(len(runs))]
    else:
        columns = ["runs", "met in", "min–max"]
    lines = [
        "| goal | target | " + " | ".join(columns) + " | every run | median [interval] "
        "| median verdict |",
        "|---|---|" + "---|" * len(columns) + "---|---|---|",
    ]
    for what, (goal, ratios) in table.items():
        measured = [r for r in ratios if r is not None]
        met = sum(r >= goal for r in measured)
        verdict = "met" if met == len(measured) else "missed" if met == 0 else "split"
        median, low, high, cover = median_interval(measured)
        coverages.add(round(cover, 3))
        if cover < MIN_COVERAGE:
            by_median = "–"  # too few runs for the interval to say anything
        else:
            by_median = "met" if low >= goal else "missed" if high < goal else "open"
        if per_run:
            cells = " | ".join("–" if r is None else f"{r:.2f}×" for r in ratios)
        else:
            cells = f"{len(measured)} | {met} | {min(measured):.2f}–{max(measured):.2f}×"
        lines.append(
            f"| {what} | ≥ {goal}× | {cells} | {verdict} "
            f"| {median:.2f}× [{low:.2f}, {high:.2f}] | {by_median} |"
        )
    levels = ", ".join(f"{c:.1%}" for c in sorted(coverages))
    lines += [
        "",
        f"Interval: order statistics of the per-run ratios, covering the median with "
        f"probability {levels} (distribution-free; `throughput_report.median_interval`).",
    ]
    return "\n".join(lines) + "\n" + (f"\n{notes}" if notes else "")


def floor_across_runs(runs: list[dict], *, per_run: bool = False) -> str:
    """torch's and rnn_jax's throughput over the XLA GEMM floor's across the runs that timed
    the floor, one row per (cell, config, mode): the median and range over those runs, or
    (`per_run=True`) every run's ratio."""
    table: dict[str, list] = {}
    # Runs are numbered by their place in `runs` (as in `across_runs`), not among those timed.
    timed_floor = [any(FLOOR in g["members"] for g in r["final"]["groups"]) for r in runs]
    numbers = [i + 1 for i, timed_it in enumerate(timed_floor) if timed_it]
    timed = [runs[n - 1] for n in numbers]
    for i, results in enumerate(timed):
        # a GPU run's ratios are no draws of the CPU's (as in `across_runs`): rows of their own
        backend = results.get("provenance", {}).get("backend", "cpu")
        where = "" if backend == "cpu" else f" on {backend}"
        for g in results["final"]["groups"]:
            m = g["members"]
            if FLOOR in m:
                what = f"{g['cell']} {shape_label(g)} {g['mode']}{where}"
                row = table.setdefault(what, [[None] * len(timed), [None] * len(timed)])
                row[0][i], row[1][i] = _over(m, "torch", FLOOR), _over(m, "rnn_jax", FLOOR)
    if not table:
        return ""
    if per_run:
        header = "| group | " + " | ".join(
            f"{who} ÷ floor, run {n}" for who in ("torch", "rnn_jax") for n in numbers
        )
        lines = [header + " |", "|---|" + "---|" * (2 * len(timed))]
        for what, (torch, ours) in table.items():
            lines.append(f"| {what} | " + " | ".join(_ratio(v) for v in torch + ours) + " |")
        return "\n".join(lines) + "\n"

    def spread(values: list[float | None]) -> str:
        got = [v for v in values if v is not None]
        if not got:
            return "–"
        return f"{np.median(got):.2f}× ({min(got):.2f}–{max(got):.2f})"

    lines = [
        "| group | runs | torch ÷ floor, median (min–max) | rnn_jax ÷ floor, median (min–max) |",
        "|---|---|---|---|",
    ]
    for what, (torch, ours) in table.items():
        # The runs that timed this group's floor, not those with an rnn_jax ratio (a run
        # without rnn_jax in `backends` counted 0 beside its torch ratios).
        count = sum(t is not None or o is not None for t, o in zip(torch, ours, strict=True))
        lines.append(f"| {what} | {count} | {spread(torch)} | {spread(ours)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    """`python -m experiments.throughput_report [--per_run] W1 W2 ...`: the goal table across
    runs, then the GEMM-floor ratios of the runs that timed the floor. No workdir, or one
    that is not a finished throughput run's, is refused in one line, exit 2 (`rnn_jax.exits`)."""
    if len(argv) < 2:
        refuse(f"give one or more throughput workdirs (each with {RESULTS_FILE})")
    runs = []
    for workdir in map(pathlib.Path, argv[1:]):
        path = workdir / RESULTS_FILE
        if not path.is_file():
            unfinished = (workdir / PARTIAL).is_file()
            why = f"an unfinished run: only {PARTIAL}" if unfinished else "no such file"
            refuse(f"{path}: {why} (not a finished throughput workdir)")
        try:
            run = json.loads(path.read_bytes())
        except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError (a traceback)
            refuse(f"{path}: not JSON ({error})")
        final = run.get("final") if isinstance(run, dict) else None
        if not isinstance(final, dict) or "groups" not in final:
            # Another experiment's workdir: a KeyError traceback in the table.
            refuse(f"{path}: not a throughput run's results (no final.groups)")
        runs.append(run)
    print(across_runs(runs, per_run=FLAGS.per_run), end="")
    floor = floor_across_runs(runs, per_run=FLAGS.per_run)
    if floor:
        print("\nThe XLA GEMM floor (the runs that timed it):\n\n" + floor, end="")


def define_flags() -> None:
    """The command-line flag, defined only when run as a program: a module that other absl
    programs import should not add a flag to theirs (the benchmark's config, which
    `launch.sweep` and `experiments.reproduce` load, imported this one for `GOAL_SHAPES`
    before they moved to `experiments.throughput_goals`)."""
    flags.DEFINE_bool(
        "per_run",
        False,
        "Show every run's ratio in the across-runs tables (default: runs, met-in count and range).",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
