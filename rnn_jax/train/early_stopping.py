"""The best evaluation and early stopping (`train.best_metric`, `best_mode`, `patience`).

`check_best_metric` refuses, before training, a `train.best_metric` that evaluation will not
produce. After each evaluation `track_best` compares the mean over replicas of that metric
with the best so far (a non-finite value never improves) and says whether it improved (the
loop then saves `W/best`, with `train.keep_best`) and whether `train.patience` evaluations
in a row without improvement end the run (`patience_exhausted`, which a resumed run also
asks: a run stopped early is finished, not trained on). The counters live in the
checkpoint's loop record (`best_value`, `best_step`, `bad_evals`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np

from rnn_jax.train import config as config_lib
from rnn_jax.train.task import Task


def check_best_metric(
    config: ml_collections.ConfigDict, task: Task, state: dict, eval_step: Any
) -> None:
    """`train.best_metric` must be one of the metrics evaluation will produce: found before
    training from the shapes of one evaluation batch (`jax.eval_shape`, nothing runs) and the
    task's `eval_metrics` of placeholder sums, instead of failing at the first evaluation
    after a checkpoint has been written.

    Raises:
      ConfigError: naming the key, its value and the metrics there will be.
    """
    split = task.eval_splits[0]
    batch = next(iter(task.eval_data(split)), None)
    if batch is None:
        return
    one = task.init_carry(task.eval_batch_size(split))
    n = config.num_seeds
    carry = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((n, *np.shape(x)), np.asarray(x).dtype), one
    )
    _, sums = jax.eval_shape(eval_step, state["params"], state["others"], batch, carry)
    try:
        names = task.eval_metrics({name: 1.0 for name in sums})
    except Exception:  # noqa: BLE001 - a task whose metrics need real sums: check at evaluation
        return
    available = sorted(f"{s}_{name}" for s in task.eval_splits for name in names)
    if config.train.best_metric not in available:
        raise config_lib.ConfigError(
            f"train.best_metric={config.train.best_metric!r}: must be one of the evaluation "
            f"metrics {available}"
        )


def track_best(
    loop: dict, step: int, scores: dict, config: ml_collections.ConfigDict, n: int
) -> tuple[bool, bool]:
    """(improved, stop early) from the mean over replicas of `train.best_metric`.

    A non-finite value (a replica that diverged) is never an improvement: it counts as an
    evaluation without improvement, and a later finite value can still become the best.
    """
    name = config.train.best_metric
    if name not in scores:
        raise ValueError(
            f"train.best_metric={name!r}: not among the evaluation metrics {sorted(scores)}"
        )
    value = float(np.mean(scores[name]))
    best = loop["best_value"]
    if best is not None and not math.isfinite(best):
        best = None  # a checkpoint written before non-finite values were refused
    better = math.isfinite(value) and (
        best is None or (value < best if config.train.best_mode == "min" else value > best)
    )
    if better:
        loop.update(best_value=value, best_step=step, bad_evals=0)
    else:
        loop["bad_evals"] += 1
    return better, patience_exhausted(loop, config)


def patience_exhausted(loop: dict, config: ml_collections.ConfigDict) -> bool:
    """Early stopping: `train.patience` evaluations in a row without improvement."""
    return bool(config.train.patience) and loop["bad_evals"] >= config.train.patience
