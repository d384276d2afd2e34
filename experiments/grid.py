"""What every grid experiment shares: the absl entry point, running grid points, tables.

An experiment's `quick` variant is a sub-grid of its `full` one, and `launch.sweep` splits a
grid into one-point runs; both go through `run_points`, which trains each point with
`rnn_jax.train.train_and_evaluate` in `W/points/<point>/` (so each point checkpoints and
resumes on its own, and a finished point, whose summary.json exists and whose recorded
experiment config is the current one, is not redone).

Grid axes are comma-separated strings in the config (`grid.cells = "lstm,gru"`), so that a
sweep overrides them with plain `--config.grid.cells=lstm`.

The experiment's own `W/results.json` has `final = {point_name: {metric: value}}`, where a
value is a float or a list with one float per seed (launch.report reads both).
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from rnn_jax import predicates
from rnn_jax.train import config as config_lib
from rnn_jax.train import config_keys, saved_config
from rnn_jax.train import metrics as run_metrics
from rnn_jax.train.rules import Rule

RESULTS_FILE = run_metrics.RESULTS_FILE


def split_axis(
    config: ml_collections.ConfigDict,
    key: str,
    allowed: Sequence[str] | None = None,
    section: str = "grid",
) -> list[str]:
    """`config.<section>.<key>` "a,b" -> ["a", "b"], checked against `allowed`.

    Raises:
      ConfigError: naming the key (the command line reports it in one line, exit status 2).
    """
    text = config[section][key]
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    name = f"{section}.{key}"
    if not values:
        raise config_lib.ConfigError(f"{name}={text!r}: expected a comma-separated non-empty list")
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise config_lib.ConfigError(
                f"{name}={text!r}: unknown {bad}; allowed: {', '.join(allowed)}"
            )
    check_distinct(name, text, values)
    return values


def check_distinct(name: str, text: object, values: Sequence[Any]) -> None:
    """ConfigError when a grid axis lists a value twice ("lstm,lstm", "10,010"): the point
    would be counted twice and run once, under one name."""
    repeated = _repeated(values)
    if repeated:
        raise config_lib.ConfigError(f"{name}={text!r}: {repeated} listed more than once")


def _repeated(values: Sequence[Any]) -> list[str]:
    """The values that occur more than once in `values`, as sorted strings."""
    return sorted({str(v) for i, v in enumerate(values) if v in values[:i]})


def value_name(value: float) -> str:
    """A grid value as it goes into a point's name: `:g` (1, 0.5, 2.5e-05) when that reads
    back as the same number, else all its digits. `:g` keeps 6 significant digits, so
    thresholds 1 and 1.0000001 shared a name: the second found the first's summary and was
    never trained (a point's results depend on its name and the recorded config only, and
    the recorded config leaves the `grid.*` keys out)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def distinct_names(allowed: Sequence[str]) -> Rule:
    """Config rule: a comma-separated list of distinct names from `allowed` (e.g. the points of
    `grid.points`)."""

    def rule(value: object) -> str | None:
        names = [v.strip() for v in str(value).split(",")]
        ok = all(n in allowed for n in names) and len(set(names)) == len(names)
        return None if ok else f"distinct names from {', '.join(allowed)}, comma-separated"

    return rule


def point_names(config: ml_collections.ConfigDict) -> list[str]:
    """`grid.points` as a list (a `distinct_names` rule has checked the names)."""
    return [v.strip() for v in config.grid.points.split(",")]


def split_ints(config: ml_collections.ConfigDict, key: str, section: str = "grid") -> list[int]:
    """`config.<section>.<key>` "50,100" -> [50, 100] (each >= 1); ConfigError otherwise."""
    text = config[section][key]
    # split_axis's own errors (empty list, a value listed twice) pass through as they are:
    # caught below with int()'s, "5,5" was reported as "expected integers".
    values = split_axis(config, key, section=section)
    if not all(predicates.is_decimal(v.removeprefix("-")) for v in values):
        # int() alone read '٣' as 3, '1_0' as 10 and '+5' as 5
        raise config_lib.ConfigError(f"{section}.{key}={text!r}: expected integers")
    numbers = [int(v) for v in values]
    if min(numbers) < 1:
        raise config_lib.ConfigError(f"{section}.{key}={text!r}: values must be >= 1")
    check_distinct(f"{section}.{key}", text, numbers)
    return numbers


class TaskStream:
    """Training batches `task.batch(seed, step, batch_size)` of a synthetic task: batch i is a
    pure function of (seed, i), so the iterator state is just the index (exact resume)."""

    def __init__(self, draw: Callable[[int], dict], start: int = 0) -> None:
        self._draw = draw
        self._index = start

    def __iter__(self) -> TaskStream:
        return self

    def __next__(self) -> dict:
        batch = self._draw(self._index)
        self._index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"index": self._index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._index = int(state["index"])


POINT_CONFIG_FILE = "experiment_config.json"


def point_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What a grid point's results depend on: the experiment's flattened config without its
    `grid.*` keys, which only select points (each point's name carries its own axis values)."""
    flat = config_keys.flat_config(config)
    return {k: v for k, v in flat.items() if not k.startswith(saved_config.SELECTION_PREFIXES)}


def run_points(
    workdir: pathlib.Path,
    points: Sequence[tuple[str, Callable[[pathlib.Path], dict]] | tuple[str, Callable, dict]],
    config: ml_collections.ConfigDict,
) -> dict[str, dict]:
    """Runs `fn(point_dir)` for each `(name, fn)` not finished yet; returns name -> results.

    A point may be `(name, fn, labels)`: `labels` (e.g. which seed questions the point
    answers) are what this run's grid asks of the point, not results, so they go into its
    summary whether it is run or loaded (a summary loaded from an earlier run with another
    grid kept the labels of that grid: regularization's point answering Q12 now was left out
    of Q12's table). A point whose *results* depend on a grid key carries that key's value in
    its name instead (rnn_vs_attention's cost point: `cost-lstm-transformer`).

    `fn` must train (train_and_evaluate writes point_dir/results.json) and return the
    point's summary dict, which is stored, with its wall time `point_wall_s`, as
    point_dir/summary.json. Before `fn` runs, `point_config(config)` is stored as
    point_dir/experiment_config.json; a point whose summary exists is loaded instead of re-run
    only when that record equals the current `point_config(config)` (so `full` run in a
    `quick` workdir redoes the points the two share instead of reporting quick's numbers as
    full's). A point redone under another config resumes from its checkpoints only if
    `rnn_jax.train.saved_config.check_resumable` allows it (train_and_evaluate checks it and
    raises `ConfigError` naming the changed keys). `workdir/results.json`, the grid's "done"
    marker, is removed before a point trains (a run killed then must not read as finished);
    a rerun that only loads summaries leaves it to be rewritten. Prints one progress line per
    point.
    """
    repeated = _repeated([point[0] for point in points])
    if repeated:  # the second would load the first's summary as its own
        raise config_lib.ConfigError(f"grid points share a name: {repeated}")
    summaries = {}
    current = point_config(config)
    start = time.perf_counter()
    for i, (name, fn, *rest) in enumerate(points, 1):
        labels = rest[0] if rest else {}
        point_dir = workdir / "points" / name
        summary_path = point_dir / "summary.json"
        changed = _changed_keys(point_dir / POINT_CONFIG_FILE, current)
        if summary_path.is_file() and not changed:
            summaries[name] = {**json.loads(summary_path.read_text()), **labels}
            status = "done earlier"
        else:
            redone = f"redone: {changed}; " if summary_path.is_file() else ""
            t0 = time.perf_counter()
            point_dir.mkdir(parents=True, exist_ok=True)
            if jax.process_index() == 0:  # multi-host runs: one writer, as the runtime does
                # The grid's "done" marker goes while a point trains.
                run_metrics.remove_done_marker(workdir)
                summary_path.unlink(missing_ok=True)  # a stale summary never outlives its run
                run_metrics.write_json_atomic(point_dir / POINT_CONFIG_FILE, current)
            summaries[name] = {**fn(point_dir), **labels, "point_wall_s": time.perf_counter() - t0}
            if jax.process_index() == 0:
                run_metrics.write_json_atomic(summary_path, summaries[name])
            status = f"{redone}{time.perf_counter() - t0:.0f}s"
        elapsed = time.perf_counter() - start
        print(f"  [{i}/{len(points)}] {name}: {status} (elapsed {elapsed:.0f}s)", flush=True)
    return summaries


def _changed_keys(record_path: pathlib.Path, current: dict[str, Any]) -> str:
    """'' when `record_path` holds `current`; otherwise what differs, for the progress line."""
    if not record_path.is_file():
        return f"no {POINT_CONFIG_FILE} (written before points recorded their config)"
    try:
        stored = json.loads(record_path.read_text())
    except ValueError:
        return f"{record_path} is not valid JSON"
    keys = config_keys.changed_keys(stored, current)
    if not keys:
        return ""
    shown = ", ".join(
        f"{k}: {stored.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in keys[:4]
    )
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return f"its summary was for another config ({shown}{more})"


def read_metric_curve(point_dir: pathlib.Path, key: str) -> tuple[list[int], np.ndarray]:
    """(steps, values [steps, seeds]) of a metric logged in metrics.jsonl (the runtime logs
    `<key>_per_seed` beside the mean when num_seeds > 1), one row per step: steps a resumed
    run logged twice keep their last record. A torn last line (a crash while it was written)
    is skipped; a corrupt line elsewhere raises naming file:line
    (`rnn_jax.train.metrics.metric_series`)."""
    from rnn_jax.train import metrics

    series = metrics.metric_series(point_dir / "metrics.jsonl", key)
    steps = [step for step, _ in series]
    values = [value if isinstance(value, list) else [value] for _, value in series]
    return steps, np.asarray(values, np.float64)


def mean_std(values: Any, *notes: str) -> str:
    """`mean ± std` (population std over seeds) of the finite values (the value alone when only
    one is finite), then in parentheses 'k/n seeds' when some seeds' values are not finite (a
    diverged seed must not vanish from a table) and any `notes`, joined by '; '; '–' when no
    value is finite. Stored per-seed
    values may hold null (`finite_or_none`): those count as not finite."""
    finite, total = finite_seeds(values)
    if finite.size == 0:
        return "–"
    # One value has no spread: "x ± 0" would read as seeds that agreed exactly.
    text = fmt(finite[0]) if finite.size == 1 else f"{fmt(finite.mean())} ± {fmt(finite.std())}"
    notes = ((f"{finite.size}/{total} seeds",) if finite.size < total else ()) + notes
    return f"{text} ({'; '.join(notes)})" if notes else text


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4g}"


def number_text(value: float, spec: str) -> str:
    """`value` formatted by `spec`, or 'n/a' when it is not finite (no seed had a finite
    value): answers printed 'nan' and '+nan' there."""
    return format(value, spec) if math.isfinite(value) else "n/a"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(workdir: pathlib.Path, final: dict, extra: dict | None = None) -> None:
    """W/results.json: `final` plus timing/provenance, atomically, once at the end. `timing`
    gets `points_wall_s`, the summed wall time of the points (whenever they were run)."""
    extra = dict(extra or {})
    points = extra.get("points", {})
    walls = [s.get("point_wall_s") for s in points.values() if isinstance(s, dict)]
    if walls and all(w is not None for w in walls):
        extra["timing"] = {**extra.get("timing", {}), "points_wall_s": float(sum(walls))}
    results = {"final": final, **extra, "provenance": run_metrics.provenance()}
    if jax.process_index() == 0:
        run_metrics.write_json_atomic(workdir / RESULTS_FILE, results)


def write_grid_outputs(
    workdir: pathlib.Path, name: str, final: dict, summaries: dict, report: Any, wall_s: float
) -> None:
    """A grid experiment's outputs: `W/<name>.md` (`report.markdown`) and `report.plot`'s
    PNGs, then results.json (`final`, every point's summary under `points`, the wall time),
    the "done" marker: a report that fails leaves the run unfinished, so the next invocation
    (which reuses the finished points) writes it again, instead of a finished-looking run
    that reproduce and launch.sweep skip without its tables (docs/design.md, "Reports before
    the done marker")."""
    if jax.process_index() == 0:
        run_metrics.write_text_atomic(workdir / f"{name}.md", report.markdown(summaries))
        report.plot(summaries, workdir)
    write_results(workdir, final, {"points": summaries, "timing": {"wall_s": wall_s}})


def run_grid(
    name: str,
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    points: Sequence[tuple[str, Callable[[pathlib.Path], dict]] | tuple[str, Callable, dict]],
    report: Any,
    final: Sequence[str] | Callable[[dict], dict],
    start: float | None = None,
) -> dict:
    """A grid experiment's `run` after its points are built: `run_points`, then
    `write_grid_outputs`. `final`: the summary keys that go into results.json's `final`
    per point, or a function summary -> that point's `final` entry. `start`: the
    `time.perf_counter()` the recorded wall time counts from (default: now). Returns `final`.
    """
    start = time.perf_counter() if start is None else start
    print(f"{name}: {len(points)} points, {config.num_seeds} seeds each", flush=True)
    summaries = run_points(workdir, points, config)
    pick = final if callable(final) else (lambda s: {key: s[key] for key in final})
    out = {point: pick(summary) for point, summary in summaries.items()}
    write_grid_outputs(workdir, name, out, summaries, report, time.perf_counter() - start)
    return out


def main(
    run: Callable[[ml_collections.ConfigDict, pathlib.Path], Any], rules: Any, trains: bool = True
) -> None:
    """The absl entry point of an experiment whose `run(config, workdir)` builds its own
    tasks (a grid experiment): `rnn_jax.train.cli.main` with no Task of its own; `trains`
    False for one that trains nothing (its module's `TRAINS`)."""
    from rnn_jax.train import cli  # absl flags are defined only by an entry point

    cli.main(
        lambda config: None,
        rules,
        run=lambda config, workdir, task: run(config, pathlib.Path(workdir)),
        trains=trains,
    )


def read_results(workdir: pathlib.Path) -> dict:
    """A finished run's W/results.json."""
    return json.loads((pathlib.Path(workdir) / RESULTS_FILE).read_text())


def grid_answers(workdir: pathlib.Path, report: Any) -> dict[int, str]:
    """`report.answers` over the point summaries a finished run stored in results.json."""
    return report.answers(read_results(workdir)["points"])


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a missing measurement is null."""
    return float(value) if value is not None and math.isfinite(value) else None


def final_per_seed(final: dict, key: str, num_seeds: int) -> list[float | None]:
    """One value per seed of a metric in the runtime's `final` (it stores lists, under
    `per_seed`, only when num_seeds > 1); not finite -> None."""
    values = final["per_seed"][key] if num_seeds > 1 else [final[key]]
    return [finite_or_none(v) for v in values]


def none_to_nan(values: Any) -> np.ndarray:
    """float64 array of stored measurements (lists, or lists of rows), null -> NaN: the
    inverse of `finite_or_none` for results read back from JSON."""
    array = np.asarray(values, dtype=object)
    return np.where(np.equal(array, None), np.nan, array).astype(np.float64)


def finite_seeds(values: Any) -> tuple[np.ndarray, int]:
    """(the finite per-seed values, flattened, null and NaN and inf dropped; how many values
    there were): what every seed summary starts from, so that a diverged seed is counted."""
    array = none_to_nan(values).ravel()
    return array[np.isfinite(array)], array.size


def some_seed_diverged(values: Any) -> bool:
    """Some stored per-seed value is not finite (null, NaN or inf): `finite_seeds` dropped it."""
    finite, total = finite_seeds(values)
    return finite.size < total


def nan_mean(values: Any) -> float:
    """Mean of the finite stored measurements; NaN when none is."""
    finite, _ = finite_seeds(values)
    return float(finite.mean()) if finite.size else float("nan")


def finite_seeds_below(a: Any, b: Any) -> bool:
    """Every finite per-seed value of `a` below every finite one of `b`, each having at least
    two: a difference beyond the seed spread (a mean difference with overlapping seeds is
    within it). One seed has no spread to be beyond (session 23: one seed against one was
    claimed as beyond it). Seeds that are not finite are left to the caller to report."""
    (x, _), (y, _) = finite_seeds(a), finite_seeds(b)
    return bool(x.size >= 2 and y.size >= 2 and x.max() < y.min())


def all_seeds_below(a: Any, b: Any) -> bool:
    """`finite_seeds_below` with every seed of both finite: the difference a verdict may claim
    where a seed that is not finite makes the comparison inconclusive (docs/design.md, session
    21: such a seed is above or below nothing; a regulariser whose finite seeds beat early
    stopping beside a diverged third was "better than early stopping alone")."""
    return not (some_seed_diverged(a) or some_seed_diverged(b)) and finite_seeds_below(a, b)


WITHIN_SPREAD = "within the seed spread"


def unranked_reason(a: Any, b: Any) -> str:
    """Why two per-seed value lists, neither beyond the other's seed spread
    (`finite_seeds_below`), are not ranked: a seed that is not finite ("a seed diverged: not
    compared seed by seed"), one seed a side ("one seed: no seed spread to compare"), or
    overlapping seeds (`WITHIN_SPREAD`). Answers said "within the seed spread" for all three,
    which claimed a spread one seed or a diverged seed does not have."""
    (x, n), (y, m) = finite_seeds(a), finite_seeds(b)
    if x.size < n or y.size < m:
        return "a seed diverged: not compared seed by seed"
    if min(n, m) < 2:
        return "one seed: no seed spread to compare"
    return WITHIN_SPREAD


def spread_phrase(best: Any, level: Mapping[str, Any]) -> str:
    """'within the seed spread of a, b; not ranked against c (one seed: ...)': how the keys
    `best_within_spread` left level with the best stand against it, each by
    `unranked_reason` (a level key with a diverged seed or one seed was called "within the
    seed spread" while the answer's detail sentence said why it was not)."""
    reasons = {r: unranked_reason(best, values) for r, values in level.items()}
    within = [r for r, why in reasons.items() if why == WITHIN_SPREAD]
    rest = [f"{r} ({why})" for r, why in reasons.items() if why != WITHIN_SPREAD]
    return "; ".join(
        ([f"within the seed spread of {', '.join(within)}"] if within else [])
        + ([f"not ranked against {', '.join(rest)}"] if rest else [])
    )


def ranking_mean(values: Any, higher_is_better: bool = False) -> float:
    """A key for ranking runs by their per-seed values, lowest first: the mean of the finite
    seeds (negated when higher is better), inf when no seed is finite, so a diverged run ranks
    last and never first by accident of order (NaN compares false both ways)."""
    value = nan_mean(values)
    if not math.isfinite(value):
        return math.inf
    return -value if higher_is_better else value


def best_within_spread(
    per_seed: Mapping[Hashable, Any], higher_is_better: bool = False
) -> tuple[Hashable | None, list[Hashable]]:
    """(the key whose finite seeds have the best mean, the other keys it does not beat beyond
    the seed spread: not every finite seed of the best better than every one of theirs), in
    `per_seed`'s order. A key with no finite seed ranks last and is never within the spread;
    when no key has one there is no best: `(None, [])` (the first key was named best)."""
    best = min(per_seed, key=lambda k: ranking_mean(per_seed[k], higher_is_better))
    if not math.isfinite(ranking_mean(per_seed[best], higher_is_better)):
        return None, []

    def beaten(k: Hashable) -> bool:
        if higher_is_better:
            return finite_seeds_below(per_seed[k], per_seed[best])
        return finite_seeds_below(per_seed[best], per_seed[k])

    tied = [
        k
        for k in per_seed
        if k != best and math.isfinite(ranking_mean(per_seed[k])) and not beaten(k)
    ]
    return best, tied


def random_windows(
    stream: np.ndarray, seed: int, index: int, batch_size: int, length: int
) -> np.ndarray:
    """int32 `[batch_size, length]` windows at random offsets of a token `stream`, batch
    `index` of the stream seeded by `seed` (deterministic, so resumable without state).
    Starts are uniform over [0, len(stream) - length): the one window that ends exactly at the
    stream's end is never drawn; kept, since including it would redraw every published
    window for a 1-in-len(stream) difference."""
    if len(stream) <= length:
        raise ValueError(f"stream of {len(stream)} tokens is too short for windows of {length}")
    starts = np.random.default_rng([seed, index]).integers(0, len(stream) - length, batch_size)
    return stream[starts[:, None] + np.arange(length)].astype(np.int32)
