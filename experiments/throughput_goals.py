"""Issue 7's throughput goals, and one benchmark run's verdicts on them.

Issue 7 states its goals for three shapes (`GOAL_SHAPES`, which the benchmark's config takes
its `shapes.small`, `.medium` and `.long` from): speed-ups over torch and Flax on the CPU
(`SPEED_GOALS`), XLA temp memory against Flax's, the per-layer speed of bidirectional and
stacked layers, and on a GPU 0.9x cuDNN at medium and minGRU's associative scan against the
sequential one. Each check is one line: MET or MISSED with the measured ratio, NOT MEASURED
where a member is missing, NOT JUDGED where a group's shape is not issue 7's.
"""

from __future__ import annotations

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
