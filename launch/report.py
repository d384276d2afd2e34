"""Aggregate a sweep's runs into mean ± std tables and plots.

    python -m launch.report ROOT

Reads ROOT/sweep.json (written by launch.sweep) and each ROOT/<run>/results.json `final`
object; runs that differ only in their seed form one group. A `final` value may be a number
(one seed) or a list of numbers (one per vmapped seed, `num_seeds` > 1); either way every seed
is one sample. Prints the table, writes ROOT/report.md, one PNG per metric
(ROOT/<metric>.png, against the first numeric sweep axis when there is one) and, where the runs
logged `train_loss` to metrics.jsonl, ROOT/train_loss_curves.png. A rerun removes the plots
the previous ROOT/report.md showed that it no longer draws; no other file is touched.
Not one ROOT, a ROOT that is no sweep's, or a file that cannot be read or written is one line
on stderr, exit status 2 (`rnn_jax.exits`).
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from launch.points import setting_key
from launch.record import SWEEP_FILE
from rnn_jax.exits import refuse
from rnn_jax.files import RESULTS_FILE, write_text_atomic

CURVE_KEY = "train_loss"


def _is_seed_key(key: str) -> bool:
    """Only the top-level `seed` names a replica (runs train `seed..seed+num_seeds-1`,
    rnn_jax.train.seeds; `launch.plan.check_seed_replicas` checks the same key). Any key
    ending in `.seed` used to be pooled too: runs differing in a data seed (other data) would
    have been averaged as replicas of one setting."""
    return key == "seed"


def seed_samples(value: Any) -> list[float] | None:
    """A `final` value -> its per-seed samples, or None if it is not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Mapping) and "per_seed" in value:
        return seed_samples(value["per_seed"])
    if (
        isinstance(value, list)
        and value
        and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value
        )
        and any(v is not None for v in value)
    ):
        # A seed whose value was not finite is written as null: it stays, as NaN, so the
        # group's seed count shows it (`count_text`) instead of the seed vanishing.
        return [math.nan if v is None else float(v) for v in value]
    return None


def _all_null(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(v is None for v in value)


def flatten_final(final: Mapping[str, Any], prefix: str = "") -> dict[str, list[float]]:
    """A flat `final` -> `{metric: per-seed samples}`; nested dicts become dotted names.

    The runtime's multi-seed form (`name` = mean, `name_std`, `per_seed: {name: [...]}`) is
    read as the per-seed samples of `name`; non-numeric leaves are dropped. A list of nulls
    only (every seed non-finite) is kept as NaN samples, one per seed.
    """
    per_seed = final.get("per_seed") if isinstance(final.get("per_seed"), Mapping) else {}
    metrics = {}
    for key, value in final.items():
        if key == "per_seed" or (key.endswith("_std") and key[: -len("_std")] in per_seed):
            continue
        name = f"{prefix}{key}"
        samples = seed_samples(per_seed.get(key, value))
        if samples is None and _all_null(per_seed.get(key, value)):
            # Every seed diverged (each written as null): the metric stays in the table,
            # saying so, instead of vanishing from the report.
            samples = [math.nan] * len(per_seed.get(key, value))
        if samples is not None:
            metrics[name] = samples
        elif isinstance(value, Mapping):
            metrics.update(flatten_final(value, f"{name}."))
    return metrics


def final_rows(final: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """`final` -> `{row: {metric: samples}}`. A grid experiment's `final` maps each grid point
    to its metrics (every value a dict): one row per point; otherwise one row, named ""."""
    if final and all(isinstance(v, Mapping) for v in final.values()) and "per_seed" not in final:
        return {row: flatten_final(metrics) for row, metrics in final.items()}
    return {"": flatten_final(final)}


def load_runs(root: pathlib.Path) -> tuple[str, list[dict]]:
    """(config string, [{name, overrides, final metrics or None, workdir}]) for a sweep root."""
    # A missing root, or a file, used to be reported as a folder without sweep.json
    if not root.exists():
        raise ValueError(f"sweep folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder (a launch.sweep --workdir)")
    sweep_path = root / SWEEP_FILE
    if not sweep_path.is_file():
        raise ValueError(f"{sweep_path}: no sweep.json; is {root} a launch.sweep --workdir?")
    try:
        sweep = json.loads(sweep_path.read_text())
        entries = sweep["runs"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{sweep_path}: not a launch.sweep record ({error!r})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{sweep_path}: `runs` is {type(entries).__name__}, not a list")
    runs = []
    for index, entry in enumerate(entries):
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("overrides"), Mapping)
        ):
            raise ValueError(
                f"{sweep_path}: runs[{index}] = {entry!r} is not a launch.sweep run record "
                "(a `name` string and an `overrides` object)"
            )
        workdir = root / entry["name"]
        results_path = workdir / RESULTS_FILE
        metrics = None
        if results_path.is_file():
            try:
                final = json.loads(results_path.read_text())["final"]
            # ValueError: invalid JSON, and bytes that are not UTF-8 (a UnicodeDecodeError,
            # which named no file)
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{results_path}: no readable `final` object ({error!r})"
                ) from None
            if not isinstance(final, Mapping):
                raise ValueError(f"{results_path}: `final` is {final!r}, not a JSON object")
            metrics = final_rows(final)
        runs.append(
            {
                "name": entry["name"],
                "overrides": entry["overrides"],
                "metrics": metrics,
                "workdir": workdir,
            }
        )
    return sweep.get("config", ""), runs


def group_runs(runs: Sequence[dict]) -> list[dict]:
    """Finished runs' rows grouped by (overrides without the seed, row name), in sweep order;
    each group holds every seed's sample of every metric."""
    groups: dict[str, dict] = {}
    for run in runs:
        for row, metrics in (run["metrics"] or {}).items():
            setting = {k: v for k, v in run["overrides"].items() if not _is_seed_key(k)}
            if row:
                setting["row"] = row
            key = setting_key(setting)
            group = groups.setdefault(key, {"setting": setting, "samples": {}, "runs": []})
            group["runs"].append(run)
            for metric, values in metrics.items():
                group["samples"].setdefault(metric, []).extend(values)
    return list(groups.values())


def mean_std(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single sample, which the table
    prints as the value alone) of the finite
    samples; (NaN, NaN) when none is. A seed that diverged (stored as null, read as NaN)
    used to turn its whole group's cell into `nan ± nan`; `count_text` says it is left out."""
    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def _finite_count(samples: Sequence[float]) -> int:
    return int(np.isfinite(np.asarray(samples, dtype=np.float64)).sum())


def count_text(samples: Sequence[float]) -> str:
    """The number of seeds behind a cell: `3`, or `2 of 3 finite` when some were not."""
    finite = _finite_count(samples)
    return str(len(samples)) if finite == len(samples) else f"{finite} of {len(samples)} finite"


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"


def axis_names(keys: Sequence[str]) -> dict[str, str]:
    """Each config key's name in tables and legends: its last part (`hidden_size`) where no
    other key ends the same way, else the whole key (`model.hidden_size` beside
    `decoder.hidden_size` both read `hidden_size`)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {
        k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last, strict=True)
    }


def markdown_table(groups: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """One row per group: its sweep settings, then `mean ± std (n)` for each metric (mean and
    std over the finite seeds, `n` as `count_text` gives it), or `no finite value (0 of n)`
    when none of its n seeds' values was finite."""
    if not groups:
        return "(no finished runs)\n"
    axes = list(dict.fromkeys(k for g in groups for k in g["setting"]))
    if metrics is None:
        metrics = list(dict.fromkeys(m for g in groups for m in g["samples"]))
    names = axis_names(axes)
    header = [names[a] for a in axes] + list(metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [str(group["setting"].get(a, "")) for a in axes]
        for metric in metrics:
            samples = group["samples"].get(metric)
            if not samples:
                cells.append("")
                continue
            mean, std = mean_std(samples)
            if math.isnan(mean):
                cells.append(f"no finite value (0 of {len(samples)})")
                continue
            # One finite seed has no spread: the value alone, not "x ± 0" (seeds that agreed).
            spread = f" ± {format_number(std)}" if _finite_count(samples) > 1 else ""
            cells.append(f"{format_number(mean)}{spread} ({count_text(samples)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _has_finite(samples: Sequence[float]) -> bool:
    return bool(np.isfinite(np.asarray(samples, dtype=np.float64)).any())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a True/False axis is categorical: bars, not a line's x
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot_metric(groups: Sequence[dict], metric: str, path: pathlib.Path) -> None:
    """Mean ± std of one metric: a line per setting of the other axes against the first
    numeric sweep axis, or one bar per group when no axis is numeric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in groups if _has_finite(g["samples"].get(metric, []))]
    axes = list(dict.fromkeys(k for g in groups for k in g["setting"]))
    numeric = [a for a in axes if all(_is_number(g["setting"].get(a)) for g in groups)]
    fig, ax = plt.subplots(figsize=(6, 4))
    if numeric:
        x_axis = numeric[0]
        names = axis_names(axes)
        series: dict[str, list] = {}
        for g in groups:
            label = (
                ", ".join(f"{names[k]}={v}" for k, v in g["setting"].items() if k != x_axis)
                or metric
            )
            stats = mean_std(g["samples"][metric])
            series.setdefault(label, []).append((g["setting"][x_axis], *stats))
        for label, points in series.items():
            x, mean, std = np.array(sorted(points)).T
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
        ax.set_xlabel(x_axis)
        ax.legend(fontsize="small")
    else:
        labels = [",".join(f"{v}" for v in g["setting"].values()) or "default" for g in groups]
        stats = [mean_std(g["samples"][metric]) for g in groups]
        ax.bar(range(len(groups)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3)
        ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_curve(workdir: pathlib.Path, key: str = CURVE_KEY) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over the finite seeds of `key`) from a run's metrics.jsonl, one per step
    (a step a resumed run logged twice keeps its last record; a step no seed logged a finite
    value for has no point); empty when absent. A last line still being written (or torn by
    a kill) is skipped; a corrupt line elsewhere raises naming file:line
    (`rnn_jax.train.metrics.metric_series`)."""
    from rnn_jax.train import metrics

    steps, values = [], []
    for step, value in metrics.metric_series(workdir / "metrics.jsonl", key):
        samples = seed_samples(value)
        if samples:
            steps.append(step)
            # over the finite seeds, as the tables (`mean_std`): one diverged seed (null)
            # no longer blanks the curve of the others; NaN (a gap) when none is finite
            values.append(mean_std(samples)[0])
    return np.asarray(steps), np.asarray(values)


def plot_curves(groups: Sequence[dict], path: pathlib.Path) -> bool:
    """Training-loss curves, one line per metrics.jsonl under each run's workdir; False (and
    no file) when none were logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    runs = {run["name"]: run for group in groups for run in group["runs"]}
    for run in runs.values():
        # a grid experiment logs one metrics.jsonl per grid point, under its workdir
        for log in sorted(run["workdir"].glob("**/metrics.jsonl")):
            steps, values = read_curve(log.parent)
            if steps.size:
                label = str(log.parent.relative_to(run["workdir"].parent))
                ax.plot(steps, values, label=label, linewidth=1)
                drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel(CURVE_KEY)
        ax.legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def report_plots(root: pathlib.Path) -> list[str]:
    """The plots ROOT/report.md shows (its `![name](name)` lines): the files a report wrote
    into ROOT, which the next report removes where it does not rewrite them. Only lines in
    the form a report writes count (the same name twice, a `.png` name that `_safe` leaves as
    it is, so one in ROOT itself): a figure added by hand (`![Figure 1](fig1.png)`, a name with
    a space, a link to another folder) is never taken for one of its own."""
    try:
        text = (root / "report.md").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    names = re.findall(r"^!\[([^\]]*)\]\(\1\)$", text, re.MULTILINE)
    return [n for n in names if n.endswith(".png") and _safe(n) == n]


def write_report(root: str | pathlib.Path) -> str:
    """Aggregates ROOT's runs; writes ROOT/report.md and PNGs; returns the markdown table.
    The plots the previous report.md showed and this one does not are removed (a rerun with
    fewer metrics left their old PNGs beside the new ones); other files are left alone."""
    root = pathlib.Path(root)
    config, runs = load_runs(root)
    previous = report_plots(root)
    groups = group_runs(runs)
    finished = sum(r["metrics"] is not None for r in runs)
    table = markdown_table(groups)
    # The curves first: they read every metrics.jsonl, and a corrupt line failed the report
    # after the metric plots were rewritten, leaving new plots beside the old report.md.
    curves = plot_curves(groups, root / "train_loss_curves.png")
    plots = []
    metrics = list(dict.fromkeys(m for g in groups for m in g["samples"]))
    for metric in metrics:
        if not any(_has_finite(g["samples"].get(metric, [])) for g in groups):
            continue  # nothing to draw; the table says 'no finite value'
        name = f"{_safe(metric)}.png"
        plot_metric(groups, metric, root / name)
        plots.append(name)
    if curves:
        plots.append("train_loss_curves.png")
    missing = [r["name"] for r in runs if r["metrics"] is None]
    lines = [
        f"# Sweep report: `{config}`",
        "",
        f"{finished} of {len(runs)} runs finished"
        + (f"; not finished: {', '.join(missing)}" if missing else "")
        + ". Cells are mean ± sample std over the finite seeds (number of seeds; "
        "'k of n finite' where some seed's value was not finite, 'no finite value' where "
        "none was).",
        "",
        table,
        *(f"![{p}]({p})" for p in plots),
        "",
    ]
    write_text_atomic(root / "report.md", "\n".join(lines))
    for name in set(previous) - set(plots):
        (root / name).unlink(missing_ok=True)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) in (["--help"], ["-h"]):  # was "sweep folder --help does not exist"
        print(__doc__.strip())
        return
    if len(argv) != 1:
        refuse("usage: python -m launch.report ROOT")
    try:
        table = write_report(argv[0])
    except (ValueError, OSError) as error:
        # An OSError (ROOT not writable, report.md a folder, a file that cannot be read) was a
        # traceback; its text names the path. Each is a folder or file to fix: exit 2.
        refuse(str(error), "launch.report")
    print(table)
    print(f"wrote {pathlib.Path(argv[0]) / 'report.md'}")


if __name__ == "__main__":
    main()
