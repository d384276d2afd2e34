"""Report files of a single-run experiment (one `train_and_evaluate` run, e.g. language_model,
sentiment, sequence_labelling): `W/<name>.md`, the final metrics per split as mean ± std over
seeds beside the run's trivial baseline, and `W/learning_curves.png`, train and validation
loss against step from `W/metrics.jsonl`.

Grid experiments (initialization, exposure_bias, ...) write their own tables through
`experiments.grid`; this module reuses its formatting so that every table reads alike.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np

from experiments import grid
from rnn_jax.train import config_keys
from rnn_jax.train import metrics as run_metrics

if TYPE_CHECKING:
    from rnn_jax.train.task import Task

CURVES_FILE = "learning_curves.png"
RESULTS_FILE = run_metrics.RESULTS_FILE
# The train NLL per token over each logging window, where batches hold unequal token counts:
# `loss_fn` logs it as (the batch's summed NLL, its real tokens) and the runtime logs the
# ratio of their sums over the window (`Task.loss_fn`), as valid's loss is per token.
TRAIN_NLL_PER_TOKEN = "train_nll_per_token"
CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman RNN"}
# results.json objects of runs whose reports are being written, by resolved run directory:
# the reports come before results.json, the runtime's "done" marker (see `train_and_report`).
_UNPUBLISHED_RESULTS: dict[pathlib.Path, dict] = {}


def train_and_report(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    *,
    name: str,
    report: Callable[[pathlib.Path], str],
    train_key: str = "train_loss",
) -> dict:
    """`train_and_evaluate`, with `W/<name>.md` (`report(W)`) and `W/learning_curves.png`
    written before results.json.

    The `cli.main(..., run=...)` of an experiment; the training itself is untouched, so
    results.json is what `train_and_evaluate` alone writes. The reports are written on
    process 0 just before results.json, the "done" marker: a report that fails leaves the
    run unfinished (rerunning it resumes from the last checkpoint and retries the reports),
    never a finished-looking run without them. While they are written, `read_json(W,
    "results.json")` returns the results about to be written.
    """
    from rnn_jax.train import train_and_evaluate

    workdir = pathlib.Path(workdir)

    def write_reports(results: dict) -> None:
        with _unpublished_results(workdir, results):
            run_metrics.write_text_atomic(workdir / f"{name}.md", report(workdir))
            plot_learning_curves(workdir, workdir / CURVES_FILE, name, train_key)

    return train_and_evaluate(config, workdir, task, before_done=write_reports)


@contextlib.contextmanager
def _unpublished_results(workdir: pathlib.Path, results: dict) -> Iterator[None]:
    key = workdir.resolve()
    _UNPUBLISHED_RESULTS[key] = json.loads(json.dumps(results, default=run_metrics.json_default))
    try:
        yield
    finally:
        del _UNPUBLISHED_RESULTS[key]


def read_json(workdir: pathlib.Path, filename: str) -> Any:
    """`W/<filename>` parsed; for results.json, the results of a run whose reports are being
    written before the file itself (see `train_and_report`)."""
    if filename == RESULTS_FILE and pathlib.Path(workdir).resolve() in _UNPUBLISHED_RESULTS:
        return _UNPUBLISHED_RESULTS[pathlib.Path(workdir).resolve()]
    return json.loads((workdir / filename).read_text())


def seed_values(final: dict, key: str) -> list[float] | None:
    """The per-seed values of `final[key]` (results.json); None if not measured.

    With num_seeds > 1 the runtime stores them under `final["per_seed"][key]`, else the one
    value under `final[key]`. A seed stored as null (JSON's form of a non-finite value where a
    writer used `grid.finite_or_none`) reads as NaN, counted by `summary_text`.
    """
    values = final.get("per_seed", {}).get(key)
    if values is None and isinstance(final.get(key), int | float):
        values = [final[key]]
    return None if values is None else [math.nan if v is None else float(v) for v in values]


def cell(value: list[float] | float | str | None) -> str:
    """A table cell: per-seed list -> `mean ± std` (one seed: the value), number -> 4
    significant digits, None -> '–'."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        # mean_std for one seed too: grid.fmt printed a one-seed NaN as "nan", two as "–"
        return grid.mean_std(value)
    return grid.fmt(float(value))


def metric_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Markdown table whose cells go through `cell` (per-seed lists become mean ± std)."""
    return grid.markdown_table(header, [[cell(v) for v in row] for row in rows])


def split_table(
    final: dict,
    metrics: Sequence[str],
    baseline: dict[str, Any],
    baseline_name: str,
    baseline_metrics: Sequence[str],
    splits: Sequence[str] = ("train", "valid", "test"),
) -> str:
    """One row per split measured: the run's `<split>_<metric>` (mean ± std over seeds) and
    the baseline's `<split>_<metric>` from baselines.json."""
    header = ["split", *metrics, *(f"{baseline_name} {m}" for m in baseline_metrics)]
    rows = []
    for split in splits:
        measured = [seed_values(final, f"{split}_{m}") for m in metrics]
        if any(v is not None for v in measured):
            base = [baseline.get(f"{split}_{m}") for m in baseline_metrics]
            rows.append([split, *measured, *base])
    return metric_table(header, rows)


def protocol_text(config: dict, final: dict) -> str:
    """How the table's numbers were measured (the runtime's contract), for its caption."""
    seeds = config["num_seeds"]
    train = config["train"]
    if train.get("keep_best", True) and final.get("best_step") is not None:
        scored = (
            f"the best-validation checkpoint (by {train['best_metric']}, step "
            f"{final.get('best_step')} of {final.get('step')})"
        )
        if seeds > 1:
            # The runtime keeps one best step for all replicas, where the mean over them was
            # best (docs/design.md, "Seeds are a vmapped leading axis"), not each seed's own.
            scored += f", one step for all seeds, where their mean {train['best_metric']} was best"
    else:  # what the runtime evaluates then: the last state
        why = "train.keep_best=False" if not train.get("keep_best", True) else "no best checkpoint"
        scored = f"the final state (step {final.get('step')}; {why})"
    # "dropout on" was said of models without any dropout (the smoke configs).
    mode = "training mode, dropout on" if has_dropout(config.get("model", {})) else "training mode"
    return f"Train: the mean over the last logging window ({mode}); valid/test: {scored}. " + (
        f"Mean ± std over {seeds} seeds." if seeds > 1 else "One seed."
    )


def has_dropout(model: dict) -> bool:
    """Whether a config.json model drops anything in training mode: a `*dropout*` rate (the
    classifiers' `dropout_rate`, the language model's `dropout_input`, `recurrent_dropout`,
    ...) or `weight_drop` above 0."""
    return any(
        ("dropout" in key or key == "weight_drop")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        for key, value in model.items()
    )


def summary_text(
    values: list[float] | None, digits: int = 3, seeds: bool = True, unit: str = ""
) -> str:
    """`0.913 ± 0.002 (3 seeds)` / `0.913 (1 seed)` for answers (without the count if not
    `seeds`); 'not measured' if None. Over the finite seeds, as `grid.mean_std`: with a seed
    that is not finite (null or NaN) the count reads `2/3 seeds` (always shown then), and
    'no finite value (3 seeds)' when none is. `unit` (e.g. ' %', ' nats/word') goes on the
    number, before the count (appended to the whole text it followed the count, and the words
    of a run without a finite value)."""
    if not values:
        return "not measured"
    finite, total = grid.finite_seeds(values)
    if finite.size == 0:
        return f"no finite value ({total} seed{'s' if total > 1 else ''})"
    if finite.size < total:
        count = f" ({finite.size}/{total} seeds)"
    else:
        count = f" ({total} seed{'s' if total > 1 else ''})" if seeds else ""
    if finite.size == 1:
        return f"{finite[0]:.{digits}f}{unit}{count}"
    return f"{finite.mean():.{digits}f} ± {finite.std():.{digits}f}{unit}{count}"


def describe_model(model: dict) -> str:
    """`BiLSTM 64` / `2-layer LSTM 256` / `transformer encoder 64` from a config.json model."""
    if model.get("kind") == "transformer":
        return f"{model.get('num_layers', 1)}-layer transformer encoder {model['hidden_size']}"
    layers = model.get("num_layers", 1)
    prefix = f"{layers}-layer " if layers > 1 else ""
    direction = "Bi" if model.get("bidirectional") else ""
    cell_name = CELL_NAMES.get(model["cell"], model["cell"])
    return f"{prefix}{direction}{cell_name} {model['hidden_size']}"


def config_name(workdir: pathlib.Path, name: str) -> str:
    """The config a run used: `experiments/configs/<name>.py:<variant>` whose values W/config.json
    equals, else the nearest variant followed by the keys that differ (`with k=v, ...`). A run
    written before a key of `ADDED_KEYS` existed equals a variant holding its older value."""
    configs = importlib.import_module(f"experiments.configs.{name}")
    run = config_keys.flatten(read_json(workdir, "config.json"))
    nearest: tuple[str, list[str]] | None = None
    for variant in configs.VARIANTS:
        reference = config_keys.flatten(
            json.loads(configs.get_config(variant).to_json_best_effort())
        )
        differ = config_keys.changed_keys(run, reference)
        if nearest is None or len(differ) < len(nearest[1]):
            nearest = (variant, differ)
    variant, differ = nearest
    spec = f"experiments/configs/{name}.py:{variant}"
    return spec + (" with " + ", ".join(f"{k}={run.get(k)}" for k in differ) if differ else "")


def read_curve(workdir: pathlib.Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps [n], values [n, seeds]) of `key` in W/metrics.jsonl, one row per step (a run
    resumed after a kill logs some steps twice, identically: the last record is kept; a torn
    last line is skipped, see `rnn_jax.train.metrics.metric_series`)."""
    steps, values = grid.read_metric_curve(workdir, key)
    if not steps:
        return np.zeros(0, np.int64), np.zeros((0, 1))
    return np.asarray(steps, np.int64), values


def curve_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [steps], population std [steps]) of a curve's `values [steps, seeds]` over each
    step's finite seeds (`grid.finite_seeds`, as the tables); NaN (a gap) at a step with none.
    Over every seed, one diverged seed blanked the curve of the others from its step on."""
    finite = [grid.finite_seeds(row)[0] for row in values]
    mean = np.array([f.mean() if f.size else np.nan for f in finite])
    std = np.array([f.std() if f.size else np.nan for f in finite])
    return mean, std


def plot_learning_curves(
    workdir: pathlib.Path,
    path: pathlib.Path,
    title: str,
    train_key: str = "train_loss",
) -> None:
    """Train (`train_key` as logged over each logging window, training mode) and validation
    loss against step; mean over seeds
    with a ± std band when there are several (over each step's finite seeds:
    `curve_mean_std`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    labels = {train_key: "train (per logging window, training mode)", "valid_loss": "validation"}
    some_left_out = False
    for key, label in labels.items():
        steps, values = read_curve(workdir, key)
        if not steps.size:
            continue
        mean, std = curve_mean_std(values)
        some_left_out |= not np.isfinite(values).all()
        (line,) = ax.plot(steps, mean, marker="o" if steps.size < 20 else None, label=label)
        if values.shape[1] > 1:
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    seeds = read_json(workdir, "config.json").get("num_seeds", 1)
    over = f"finite seeds (of {seeds})" if some_left_out else f"{seeds} seeds"
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)" + (f", mean ± std over {over}" if seeds > 1 else ""))
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
