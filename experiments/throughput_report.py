"""The throughput benchmark's report: `throughput.md` tables, goal checks and the length plot."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np
from absl import app, flags

from rnn_jax.exits import refuse

FLAGS = flags.FLAGS

# Written by a throughput run after every finished group, replaced by results.json at its end.
PARTIAL = "partial.json"
PEERS = ("flax", "torch", "rnn_jax_reference")
# Issue 7's shapes (batch, time, input, hidden), the ones its goals are stated for; the
# benchmark's config takes its `shapes.small`, `.medium` and `.long` from here.
GOAL_SHAPES = {
    "small": (32, 64, 128, 256),
    "medium": (64, 128, 256, 512),
    "long": (16, 1024, 64, 128),
}
# Issue 7's goals: (mode, configs, min speed-up over torch, over flax).
SPEED_GOALS = (
    ("fwd_bwd", ("small", "long"), 1.0, 1.3),
    ("fwd_bwd", ("medium",), 1.0, 1.0),
    ("fwd", ("small", "medium", "long"), 1.0, 1.0),
)
# On a GPU: forward+backward at least this fraction of torch's cuDNN nn.LSTM at medium, and
# minGRU's associative scan this many times the sequential one at T = 4096 (issue 7).
GPU_CUDNN_GOAL = 0.9
GPU_ASSOCIATIVE_GOAL = 10.0
MEMORY_GOAL = 1.5  # rnn_jax's XLA temp memory at most this multiple of Flax's (fwd_bwd)
REMAT_MEMORY_GOAL = 1.0  # with remat=True, at most Flax's
# A bidirectional layer at the speed of two unidirectional ones; a stack at its layers' alone.
PER_LAYER_GOAL = 1.0
CELLS = ("lstm", "gru")  # the cells the speed goals are about


def _k(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def _rate(member: dict | None) -> str:
    if member is None:
        return "–"
    r = member["tokens_per_s"]
    return f"{_k(r['median'])} ({_k(r['min'])}–{_k(r['max'])})"


def _pair(a: Any, b: Any, fmt: str) -> str:
    return " / ".join("–" if v is None else format(v, fmt) for v in (a, b))


# Backends that run only on an NVIDIA GPU, with their column labels: their columns appear only
# where a group timed them.
GPU_KERNELS = {"rnn_jax_cudnn": "jax cuDNN", "rnn_jax_pallas": "Pallas kernel"}


def _group_rows(groups: list[dict], mode: str) -> list[str]:
    kernels = [b for b in GPU_KERNELS if any(b in g["members"] for g in groups)]
    rows = [
        "| cell | config (B, T, I, H) | rnn_jax tok/s | flax | torch | reference scan "
        + "".join(f"| {GPU_KERNELS[b]} | vs {GPU_KERNELS[b]} " for b in kernels)
        + "| vs flax | vs torch | CPU time: vs flax | vs torch | rnn_jax GF/s (% peak) "
        "| compile s ours / flax | XLA temp MiB ours / flax | loop ops/step ours / flax | load |",
        "|---" * 6 + "|---" * (2 * len(kernels)) + "|---" * 9 + "|",
    ]
    for g in (g for g in groups if g["mode"] == mode):
        m = g["members"]
        ours, flax = m.get("rnn_jax"), m.get("flax")
        speedup, cpu = g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        gf = (
            "–"
            if ours is None
            else (f"{ours['gflops']['median']:.1f} ({ours['percent_of_peak']:.0f}%)")
        )
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(ours)} "
            f"| {_rate(flax)} | {_rate(m.get('torch'))} | {_rate(m.get('rnn_jax_reference'))} "
            + "".join(f"| {_rate(m.get(b))} | {_ratio(speedup.get(b))} " for b in kernels)
            + f"| {_ratio(speedup.get('flax'))} | {_ratio(speedup.get('torch'))} "
            f"| {_ratio(cpu.get('flax'))} | {_ratio(cpu.get('torch'))} | {gf} "
            f"| {_pair(ours and ours['compile_s'], flax and flax['compile_s'], '.2f')} "
            f"| {_pair(ours and ours['xla_temp_mib'], flax and flax['xla_temp_mib'], '.0f')} "
            f"| {_loop_ops(ours)} / {_loop_ops(flax)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _loop_ops(member: dict | None) -> str:
    """A member's per-step instructions, one term per loop (forward+backward: "12+18"); "–"
    for members without loops or runs from before they were recorded."""
    ops = member and member.get("ops_per_step")
    return "+".join(str(n) for n in ops) if ops else "–"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def goal_shape(group: dict) -> str | None:
    """The name of issue 7's shape (`GOAL_SHAPES`) the group ran, None for any other: a shape
    without a goal (tiny, narrow) or a named one whose values a flag changed (a run with
    `--config.shapes.small=...` did not run issue 7's small, whatever the name says)."""
    name = group["shape_name"]
    return name if tuple(group["shape"]) == GOAL_SHAPES.get(name) else None


def shape_label(group: dict) -> str:
    """The group's shape as goal lines and the across-runs tables name it: issue 7's shapes by
    name, any other with its values too ("small (8, 64, 128, 256)"), so runs whose shapes
    share a name but not their sizes are not pooled into one row."""
    if goal_shape(group) is not None:
        return group["shape_name"]
    return f"{group['shape_name']} {tuple(group['shape'])}"


def _named_goal_groups(groups: list[dict]) -> list[tuple[str, float, float, dict]]:
    """`(mode, vs torch, vs flax, group)` for every CPU speed goal (`SPEED_GOALS`) that names a
    group's cell, mode and shape name (its values may differ: `goal_shape`)."""
    return [
        (mode, vs_torch, vs_flax, g)
        for mode, configs, vs_torch, vs_flax in SPEED_GOALS
        for g in groups
        if g["mode"] == mode and g["shape_name"] in configs and g["cell"] in CELLS
    ]


def _speed_goal_groups(groups: list[dict]) -> list[tuple[str, float, float, dict]]:
    """`_named_goal_groups` whose shape is issue 7's by values as well as name: the goals
    judged."""
    return [goal for goal in _named_goal_groups(groups) if goal_shape(goal[3]) is not None]


def unjudged_shapes(groups: list[dict]) -> list[str]:
    """Why no speed goal is judged for the groups a goal names by cell, mode and shape name
    whose shape's values are not issue 7's, one line each."""
    return [
        f"{g['cell']} {shape_label(g)} {mode}: not issue 7's {g['shape_name']} "
        f"{GOAL_SHAPES[g['shape_name']]}, so no speed goal applies"
        for mode, _, _, g in _named_goal_groups(groups)
        if goal_shape(g) is None
    ]


def speed_goals(
    groups: list[dict], backend: str = "cpu"
) -> list[tuple[str, float, float, float | None]]:
    """`(what, wall-clock ratio, goal, CPU-time ratio)` for every speed goal a group measures;
    none for a run on another `backend` than the CPU (`SPEED_GOALS` are issue 7's CPU goals:
    on a GPU its goal is `GPU_CUDNN_GOAL`, `gpu_checks`)."""
    if backend != "cpu":
        return []
    records = []
    for mode, vs_torch, vs_flax, g in _speed_goal_groups(groups):
        for peer, goal in (("torch", vs_torch), ("flax", vs_flax)):
            got = g["rnn_jax_speedup_over"].get(peer)
            if got is not None:
                cpu = g.get("rnn_jax_cpu_speedup_over", {}).get(peer)
                what = f"{g['cell']} {g['shape_name']} {mode} vs {peer}"
                records.append((what, got, goal, cpu))
    return records


def _per_layer_terms(group: dict) -> tuple[str, str]:
    """`(what the group runs, what its per-layer speed compares it with)`: a stacked group
    (it has a `layers` entry) or a bidirectional one. Decided here only."""
    if "layers" in group:
        return f"{group['layers']}-layer stack", "its layers' run alone"
    return "bidirectional", "two unidirectional layers'"


def per_layer_goals(groups: list[dict]) -> list[tuple[str, float, float, float | None]]:
    """The same records for the per-layer speed of bidirectional and stacked groups."""
    return [
        (
            f"{g['cell']} {shape_label(g)} {_per_layer_terms(g)[0]} per-layer speed",
            g["per_layer_speed"],
            PER_LAYER_GOAL,
            g["cpu_per_layer_speed"],
        )
        for g in groups
    ]


def unmeasured_goals(groups: list[dict], backend: str = "cpu") -> list[str]:
    """The speed goals a group was timed for but could not be judged on: rnn_jax or the peer
    was not a member (torch not installed, a peer left out of `backends`). None off the CPU."""
    if backend != "cpu":
        return []
    lines = []
    for mode, _, _, g in _speed_goal_groups(groups):
        for peer in ("torch", "flax"):
            if g["rnn_jax_speedup_over"].get(peer) is None:
                missing = [m for m in ("rnn_jax", peer) if m not in g["members"]]
                lines.append(
                    f"- NOT MEASURED: {g['cell']} {g['shape_name']} {mode} vs {peer}: "
                    f"no {' or '.join(missing) or 'ratio'} in this run"
                )
    return lines


def goal_checks(groups: list[dict], backend: str = "cpu") -> list[str]:
    """One line per (goal, group): MET or MISSED with the measured ratio, NOT MEASURED where
    the group lacks rnn_jax or the peer (`unmeasured_goals`). On another `backend` than the
    CPU the speed goals against torch and Flax are not judged (they are issue 7's CPU goals),
    and one line says so."""
    lines = []
    for what, got, goal, cpu in speed_goals(groups, backend):
        verdict = "MET" if got >= goal else "MISSED"
        by_cpu = "" if cpu is None else f"; by CPU time {cpu:.2f}×"
        lines.append(f"- {verdict}: {what}: {got:.2f}× wall-clock (goal ≥ {goal}×{by_cpu})")
    lines += unmeasured_goals(groups, backend)
    if backend == "cpu":
        lines += [f"- NOT JUDGED: {line}" for line in unjudged_shapes(groups)]
    elif any(g["cell"] in CELLS for g in groups):
        lines.append(
            f"- NOT JUDGED on {backend}: the speed goals against torch and Flax are issue 7's "
            "CPU goals; the ratios are in the tables above"
        )
    for g in groups:
        m = g["members"]
        if g["mode"] != "fwd_bwd":
            continue
        ours, flax = (m.get(name, {}).get("xla_temp_mib") for name in ("rnn_jax", "flax"))
        if ours is None or not flax:
            if g["cell"] in CELLS:
                lines.append(
                    f"- NOT MEASURED: {g['cell']} {shape_label(g)} fwd_bwd XLA temp memory: "
                    "no rnn_jax or flax figure in this run"
                )
            continue
        verdict = "MET" if ours <= MEMORY_GOAL * flax else "MISSED"
        lines.append(
            f"- {verdict}: {g['cell']} {shape_label(g)} fwd_bwd XLA temp memory "
            f"{ours:.0f} MiB = {ours / flax:.2f}× Flax's {flax:.0f} MiB (goal ≤ {MEMORY_GOAL}×)"
        )
        remat = m.get("rnn_jax_remat", {}).get("xla_temp_mib")
        if remat is not None:
            verdict = "MET" if remat <= REMAT_MEMORY_GOAL * flax else "MISSED"
            lines.append(
                f"- {verdict}: {g['cell']} {shape_label(g)} fwd_bwd XLA temp memory with remat "
                f"{remat:.0f} MiB = {remat / flax:.2f}× Flax's (goal ≤ {REMAT_MEMORY_GOAL}×)"
            )
    return lines


def gpu_checks(groups: list[dict], sweep: list[dict]) -> list[str]:
    """Issue 7's GPU goals: LSTM fwd+bwd vs cuDNN (torch's and jax.experimental.rnn's) at
    medium, and the associative minGRU scan against the sequential one at T = 4096."""
    lines = []
    for g in groups:
        if (g["cell"], goal_shape(g), g["mode"]) != ("lstm", "medium", "fwd_bwd"):
            continue
        for peer in ("torch", "rnn_jax_cudnn"):
            got = g["rnn_jax_speedup_over"].get(peer)
            if got is not None:
                verdict = "MET" if got >= GPU_CUDNN_GOAL else "MISSED"
                lines.append(
                    f"- {verdict}: lstm medium fwd_bwd vs {peer} (cuDNN): {got:.2f}× "
                    f"(goal ≥ {GPU_CUDNN_GOAL}×)"
                )
    rates = {
        r["cell"]: r["tokens_per_s"]["median"]
        for r in sweep
        if r["time"] == 4096 and r["cell"].startswith("min_gru:")
    }
    if {"min_gru:sequential", "min_gru:associative"} <= set(rates):
        ratio = rates["min_gru:associative"] / rates["min_gru:sequential"]
        verdict = "MET" if ratio >= GPU_ASSOCIATIVE_GOAL else "MISSED"
        lines.append(
            f"- {verdict}: minGRU associative scan at T=4096: {ratio:.1f}× the sequential "
            f"scan's fwd+bwd tokens/s (goal ≥ {GPU_ASSOCIATIVE_GOAL}×)"
        )
    return lines


def per_layer_checks(groups: list[dict]) -> list[str]:
    """Per-layer speed of a bidirectional layer against two unidirectional ones, and of a
    stack against its layers run alone."""
    lines = []
    for g, (what, speed, goal, cpu) in zip(groups, per_layer_goals(groups), strict=True):
        than = _per_layer_terms(g)[1]
        verdict = "MET" if speed >= goal else "MISSED"
        lines.append(
            f"- {verdict}: {what} {speed:.2f}× {than} (goal ≥ {goal}×; by CPU time {cpu:.2f}×)"
        )
    return lines


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


FLOOR = "xla_gemm_floor"


def speedup(seconds_a: list[float], seconds_b: list[float]) -> float:
    """a's throughput over b's from their per-round call times: the median of the per-round
    ratios (rounds are interleaved, so each ratio compares calls made side by side)."""
    return float(np.median(np.asarray(seconds_b) / np.asarray(seconds_a)))


def _over(m: dict, a: str, b: str) -> float | None:
    """Member a's throughput over member b's (`speedup`); None if either is missing."""
    if a not in m or b not in m:
        return None
    return speedup(m[a]["seconds"], m[b]["seconds"])


def floor_rows(groups: list[dict]) -> list[str]:
    """The GEMM floor beside rnn_jax, torch and Flax: where torch's throughput over the floor's
    is near or above 1, torch's whole layer runs as fast as XLA runs that layer's matmuls."""
    rows = [
        "| cell | config (B, T, I, H) | mode | XLA GEMM floor tok/s | floor GF/s (% peak) "
        "| rnn_jax ÷ floor | torch ÷ floor | flax ÷ floor | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m = g["members"]
        if FLOOR not in m:
            continue
        floor = m[FLOOR]
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {g['mode']} "
            f"| {_rate(floor)} | {floor['gflops']['median']:.1f} "
            f"({floor['percent_of_peak']:.0f}%) | {_ratio(_over(m, 'rnn_jax', FLOOR))} "
            f"| {_ratio(_over(m, 'torch', FLOOR))} | {_ratio(_over(m, 'flax', FLOOR))} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


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


def _remat_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | config (B, T, I, H) | remat tok/s | time cost (remat time ÷ default) "
        "| CPU time cost | XLA temp MiB remat / default / flax | remat ÷ flax memory | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m = g["members"]
        if g["mode"] != "fwd_bwd" or "rnn_jax_remat" not in m:
            continue
        remat, ours, flax = m["rnn_jax_remat"], m.get("rnn_jax"), m.get("flax")
        temps = [x and x["xla_temp_mib"] for x in (remat, ours, flax)]
        share = "–" if not temps[2] else f"{temps[0] / temps[2]:.2f}×"
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(remat)} "
            f"| {_ratio(g['rnn_jax_speedup_over'].get('rnn_jax_remat'))} "
            f"| {_ratio(g['rnn_jax_cpu_speedup_over'].get('rnn_jax_remat'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} | {share} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _bidirectional_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | config (B, T, I, H) | one scan tok/s | two scans | flax Bidirectional "
        "| unidirectional | per-layer speed | CPU time | vs two scans | vs flax | CPU time: "
        "vs two scans | vs flax | XLA temp MiB one scan / two scans / flax | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m, speedup, cpu = g["members"], g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        temps = [m.get(k, {}).get("xla_temp_mib") for k in ("rnn_jax", "rnn_jax_two_scans", "flax")]
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(m.get('rnn_jax'))} "
            f"| {_rate(m.get('rnn_jax_two_scans'))} | {_rate(m.get('flax'))} "
            f"| {_rate(m.get('unidirectional'))} | {_ratio(g['per_layer_speed'])} "
            f"| {_ratio(g['cpu_per_layer_speed'])} | {_ratio(speedup.get('rnn_jax_two_scans'))} "
            f"| {_ratio(speedup.get('flax'))} | {_ratio(cpu.get('rnn_jax_two_scans'))} "
            f"| {_ratio(cpu.get('flax'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _stacked_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | layers | config (B, T, I, H) | stack tok/s | flax stack | torch stack "
        "| first layer alone | upper layer alone | per-layer speed | CPU time | vs flax "
        "| vs torch | CPU time: vs flax | vs torch | XLA temp MiB stack / flax | load |",
        "|---" * 16 + "|",
    ]
    for g in groups:
        m, speedup, cpu = g["members"], g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        temps = [m.get(k, {}).get("xla_temp_mib") for k in ("rnn_jax", "flax")]
        rows.append(
            f"| {g['cell']} | {g['layers']} | {g['shape_name']} {tuple(g['shape'])} "
            f"| {_rate(m.get('rnn_jax'))} | {_rate(m.get('flax'))} | {_rate(m.get('torch'))} "
            f"| {_rate(m.get('first_layer'))} | {_rate(m.get('upper_layer'))} "
            f"| {_ratio(g['per_layer_speed'])} | {_ratio(g['cpu_per_layer_speed'])} "
            f"| {_ratio(speedup.get('flax'))} | {_ratio(speedup.get('torch'))} "
            f"| {_ratio(cpu.get('flax'))} | {_ratio(cpu.get('torch'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _cpu(prov: dict[str, Any]) -> str:
    """The CPU as the run recorded it: model and widest SIMD extension (runs before the
    provenance had them recorded `platform.processor()` as "cpu")."""
    model = prov.get("cpu_model", prov.get("cpu"))
    simd = prov.get("cpu_simd")
    return f"{model}, {simd}" if simd else str(model)


def _malloc(prov: dict[str, Any]) -> str:
    """How the run's process allocated (runs before the `malloc` option: glibc's default)."""
    if prov.get("malloc", "default") == "retain":
        return (
            "Allocator: freed memory retained in the heap for every member "
            "(`rnn_jax.allocator.retain_freed_memory`, `--config.malloc=retain`)."
        )
    return "Allocator: glibc's default (large buffers mmapped and page-faulted in per call)."


def _section(title: str, text: str, rows: list[str]) -> list[str]:
    """A `## title` section of throughput.md: an explanatory paragraph, then a table."""
    return ["", f"## {title}", "", text, "", *rows]


def markdown(results: dict[str, Any]) -> str:
    final, prov = results["final"], results["provenance"]
    groups = final["groups"]
    unfinished = []
    if not results["timing"].get("complete", True):  # runs before session 7 lack the key
        unfinished = [
            f"**Unfinished run** (`{PARTIAL}`): only the groups measured before it "
            "stopped are below.",
            "",
        ]
    timed = groups + final.get("bidirectional", []) + final.get("stacked", [])
    peaks = [g["matmul_peak_gflops"]["median"] for g in timed]
    if peaks:
        peak = (
            f"Matmul peak (in-process n³ jnp.dot): median {np.median(peaks):.0f} GF/s "
            f"(range over groups {min(peaks):.0f}–{max(peaks):.0f}). "
        )
    else:  # e.g. a sweep-only run (`configs` empty): no group timed the peak
        peak = "Matmul peak: not timed (no groups). "
    packages = prov.get("packages", {})
    lines = [
        "# Throughput: one recurrent layer, float32",
        "",
        f"{prov['cpu_count']} CPUs ({_cpu(prov)}), backend {prov['backend']}; "
        f"jax {packages.get('jax')}, flax {packages.get('flax')}. "
        f"Load average (1, 5, 15 min) before {tuple(round(v, 1) for v in prov['load_before'])}, "
        f"after {tuple(round(v, 1) for v in prov['load_after'])}. " + peak + _malloc(prov),
        "",
        *unfinished,
        "Entries: tokens/s, median (min–max) over interleaved rounds. vs flax / vs torch: "
        "rnn_jax's throughput over the peer's, median of per-round ratios (> 1: rnn_jax is "
        "faster); CPU time: the same ratio from the CPU time this process used per call "
        "(the work done; less disturbed by other processes than the wall clock). "
        "GF/s counts matmul FLOPs against the matmul peak timed in the same rounds. "
        "loop ops/step: the instructions each `while` loop's compiled body runs per step "
        "(forward+backward: forward loop + reverse loop; rnn_jax/loop_ops.py): on XLA:CPU "
        "each is one thunk dispatched per step. "
        f"load: median 1-minute load average over the rounds ({prov['cpu_count']} CPUs: above "
        f"~{prov['cpu_count']} the timings are shared with other processes).",
    ]
    for mode, title in (
        ("fwd_bwd", "forward + backward (grads w.r.t. params and inputs)"),
        ("fwd", "forward"),
    ):
        if any(g["mode"] == mode for g in groups):
            lines += ["", f"## {title}", "", *_group_rows(groups, mode)]
    if any("rnn_jax_remat" in g["members"] for g in groups):
        lines += [
            "",
            "## forward + backward with rematerialisation (`unroll(remat=True)`)",
            "",
            *_remat_rows(groups),
        ]
    if any(FLOOR in g["members"] for g in groups):
        lines += [
            "",
            "## The XLA GEMM floor (experiments.throughput_peers.gemm_floor)",
            "",
            "Only the layer's matmuls (input projection hoisted into one GEMM, the recurrent "
            "and backward GEMMs per step, the weight and input gradients one GEMM each), no "
            "gate arithmetic. ÷ floor: a member's throughput over the floor's, median of "
            "per-round ratios. torch ÷ floor near or above 1: torch's whole layer runs as fast "
            "as XLA runs that layer's matmuls alone, so reaching torch there takes faster "
            "matmuls, not less overhead. It is a reference, not a proven bound: another "
            "arrangement of the same matmuls can be faster (rnn_jax ÷ floor above 1).",
            "",
            *floor_rows(groups),
        ]
    bidirectional = final.get("bidirectional", [])
    if bidirectional:
        lines += _section(
            "bidirectional layer, forward + backward (tokens = batch × time)",
            "per-layer speed: 2 × (unidirectional time) ÷ (bidirectional time), per round "
            "(1.0: a bidirectional layer costs two unidirectional ones). vs: the one-scan "
            "layer's throughput over the peer's.",
            _bidirectional_rows(bidirectional),
        )
    stacked = final.get("stacked", [])
    if stacked:
        lines += _section(
            "stacked layers, forward + backward (tokens = batch × time)",
            "per-layer speed: (first layer's time + (L − 1) × upper layer's time, each run "
            "alone) ÷ (the L-layer stack's time), per round (1.0: a stack costs its layers run "
            "one by one). vs: rnn_jax's stack's throughput over the peer's stack (Flax "
            "`nn.Sequential` of `nn.RNN`s; torch `num_layers=L`).",
            _stacked_rows(stacked),
        )
    checks = goal_checks(groups, prov["backend"]) + per_layer_checks(bidirectional + stacked)
    if prov["backend"] == "gpu":
        checks += gpu_checks(groups, final["sweep"])
    if checks:
        lines += ["", "## Goals (issue 7)", "", *checks]
    failures = [
        f"- {g['cell']} {g['shape_name']} {g['mode']}, {backend}: {message}"
        for g in groups
        for backend, message in g.get("failed", {}).items()
    ]
    if failures:
        lines += ["", "## Members that failed to build or compile (shown as –)", "", *failures]
    if final["rss"]:
        lines += [
            "",
            "## Peak RSS growth of building (compiling, for JAX) and running forward + backward "
            "(one fresh process per implementation)",
            "",
            "| cell | config | backend | MiB |",
            "|---|---|---|---|",
        ]
        for r in final["rss"]:
            mib = "–" if r["peak_rss_delta_mib"] is None else f"{r['peak_rss_delta_mib']:.0f}"
            lines.append(f"| {r['cell']} | {r['shape_name']} | {r['backend']} | {mib} |")
    if final["sweep"]:
        lengths = sorted({r["time"] for r in final["sweep"]})
        tokens = {r["time"]: r["batch"] * r["time"] for r in final["sweep"]}
        lines += [
            "",
            "## Forward + backward tokens/s against sequence length (fixed tokens per call)",
            "",
            "| cell | " + " | ".join(f"T={t} (B={tokens[t] // t})" for t in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for cell in dict.fromkeys(r["cell"] for r in final["sweep"]):
            by_t = {r["time"]: r for r in final["sweep"] if r["cell"] == cell}
            cells = [_k(by_t[t]["tokens_per_s"]["median"]) if t in by_t else "–" for t in lengths]
            lines.append(f"| {cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: list[dict], path: pathlib.Path) -> None:
    """tokens/s (median, min-max bars) against T for every cell of the sweep."""
    if not sweep:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in dict.fromkeys(r["cell"] for r in sweep):
        rows = sorted((r for r in sweep if r["cell"] == cell), key=lambda r: r["time"])
        t = [r["time"] for r in rows]
        med = np.array([r["tokens_per_s"]["median"] for r in rows])
        low = med - np.array([r["tokens_per_s"]["min"] for r in rows])
        high = np.array([r["tokens_per_s"]["max"] for r in rows]) - med
        ax.errorbar(t, med, yerr=[low, high], marker="o", capsize=3, label=cell)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (batch x T fixed)")
    ax.set_ylabel("forward+backward tokens/s")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> None:
    """`python -m experiments.throughput_report [--per_run] W1 W2 ...`: the goal table across
    runs, then the GEMM-floor ratios of the runs that timed the floor. No workdir, or one
    that is not a finished throughput run's, is refused in one line, exit 2 (`rnn_jax.exits`)."""
    if len(argv) < 2:
        refuse("give one or more throughput workdirs (each with results.json)")
    runs = []
    for workdir in map(pathlib.Path, argv[1:]):
        path = workdir / "results.json"
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
    """The command-line flag, defined only when run as a program: this module is imported by
    the benchmark and by its config (`GOAL_SHAPES`), which other absl programs load
    (`launch.sweep`, `experiments.reproduce`), and should not add a flag to theirs."""
    flags.DEFINE_bool(
        "per_run",
        False,
        "Show every run's ratio in the across-runs tables (default: runs, met-in count and range).",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
