"""What a run reads back from its run directory: where it starts, and what it is scored on.

Rerunning the same command resumes bit-identically from the newest checkpoint, whose loop
record holds the data position, the open log window and the early-stopping counters.

- `resume`: the state, loop record, first and end step and training data a run starts from;
- `redone_at`: which `metrics.jsonl` records of that step the resumed run writes again;
- `recorded_results`: a finished run's `results.json`, which a rerun with nothing to train
  returns as it is;
- `final_state`: at the end, the state the final scores are of (the best checkpoint).

A checkpoint that does not fit the run or is damaged is a `ConfigError` naming the run
directory (one line on the command line, exit status 2), not a traceback.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from rnn_jax.train import config as config_lib
from rnn_jax.train import metrics, saved_config
from rnn_jax.train.checkpoint import Checkpointer, abstract_like
from rnn_jax.train.early_stopping import patience_exhausted
from rnn_jax.train.task import Task


def resume(
    checkpointer: Checkpointer,
    state: dict,
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    task: Task,
) -> tuple[dict, dict, int, int, Any]:
    """The state, loop state, first and end step and training data a run starts from.

    A fresh run starts at step 0 from `state`; a run with checkpoints in `workdir` starts at
    the newest one, its data stream at the position saved there. A run that ended there and
    now trains on starts from the loop state before its last step's extras (`ongoing`).

    Raises:
      ConfigError: naming `workdir`, when the newest checkpoint does not fit the model (another
        model, vocabulary, optimiser or dtype), is damaged (an item folder or file missing or
        unreadable), is of a step past `train.num_steps`, or saved a data position this run's
        data refuses. Nothing in `workdir` has been changed by then.
    """
    loop = {
        "window": {},
        "window_steps": 0,
        "best_value": None,
        "best_step": None,
        "bad_evals": 0,
        "consecutive_nonfinite": [0] * config.num_seeds,  # per replica
        "last_train": None,
        "evaluated_step": None,  # the step of the last evaluation
    }
    try:
        restored = checkpointer.restore(abstract_like(state))
    except ValueError as error:  # it does not fit this run's state, or it is damaged
        raise config_lib.ConfigError(f"cannot resume in {workdir}: {error}") from error
    if restored is None:
        return state, loop, 0, config.train.num_steps, task.train_data()
    state, loop = restored
    start = checkpointer.latest_step()
    end = config.train.num_steps
    # Checkpoints written before the key existed: taken as evaluated (as they were read).
    loop.setdefault("evaluated_step", start)
    if config.train.num_steps < start:
        raise config_lib.ConfigError(
            f"train.num_steps={config.train.num_steps}: the newest checkpoint in "
            f"{workdir / 'checkpoints'} is of step {start}, and a run cannot be shortened "
            f"to before it; use train.num_steps >= {start} or a new --workdir"
        )
    ongoing = loop.pop("ongoing", None)
    if ongoing is not None and config.train.num_steps > start:
        # The run ended here and this one trains on: it goes on from the loop state before
        # the last step's extra log and evaluation, as a run trained straight on does
        # (`end_run`); the best checkpoint of that evaluation is dropped by the caller. The
        # checkpoint's own entries stay: its data position and the timing of the invocation
        # that saved it (carried by an early stop resumed, which trains none).
        own = {key: loop[key] for key in ("data", "timing") if key in loop}
        loop = {**ongoing, **own}
    if patience_exhausted(loop, config):
        # The run stopped early here (its last checkpoint is the stopping step) and ended
        # before results.json: finish it, do not train on past the stop.
        end = start
    data = task.train_data()
    try:
        data.load_state_dict(loop.pop("data"))
    except ValueError as error:  # e.g. a corpus that changed under the checkpoints
        raise config_lib.ConfigError(
            f"cannot resume in {workdir} at step {start}: the data position saved there "
            f"does not fit this run's data: {error}"
        ) from error
    logging.info("resumed from %s at step %d", workdir / "checkpoints", start)
    return state, loop, start, end, data


def redone_at(loop: dict, step: int) -> Callable[[dict[str, Any]], bool]:
    """Which metrics.jsonl records of `step`, the checkpoint a run resumes from with loop
    state `loop`, it drops (`MetricsWriter(drop_at_start=...)`): those that state has not
    seen. They are the extras of a run that ended at `step` (`end_run`: a log of its open
    window, an evaluation off the schedule, and the `final_*` record), which a run trained
    straight on past `step` does not have, and which a run that ends there writes again.
    A log keeps the window open in `loop["window"]` exactly when it was such an extra, and an
    evaluation is one exactly when `loop["evaluated_step"]` is not `step`."""

    def redone(record: dict[str, Any]) -> bool:
        if any(name.startswith("final_") for name in record):
            return True
        if "learning_rate" in record:  # every log of a window has it; no evaluation does
            return bool(loop["window"])
        return loop["evaluated_step"] != step

    return redone


def recorded_results(workdir: pathlib.Path) -> dict[str, Any] | None:
    """The results a finished run recorded (`workdir/results.json`), or None when there is
    none or it cannot be read as a results object (it is then written again)."""
    try:
        recorded = saved_config.read_json_object(workdir / metrics.RESULTS_FILE)
    except (OSError, ValueError):
        return None
    return recorded if {"final", "timing"} <= recorded.keys() else None


def final_state(
    checkpointer: Checkpointer,
    state: dict,
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    loop: dict,
) -> tuple[dict, int | None]:
    """The state the run's final scores are of, and the `best_step` its results record: its
    best checkpoint and that checkpoint's step (`train.keep_best`, when one was saved), else
    the state it ended with and the loop's `best_step` (`train.keep_best` off: the best
    evaluation, whose model was not kept).

    The loop's best checkpoint removed by hand (the fallback that a damaged checkpoint's
    message offers) scores an older best checkpoint, or the state the run ended with when none
    is left: `best_step` is then the step scored (None for the last state), with a warning,
    not the loop's (which named a model the scores are not of).

    Raises:
      ConfigError: naming `workdir` and the best checkpoint's folder, when that checkpoint is
        damaged (changed from outside while the run trained, or before a rerun finishes it),
        as a resume reports a damaged periodic checkpoint (`resume`). The run's training is
        saved in its newest periodic checkpoint; results.json is not written, so a rerun
        finishes the run once the folder is mended or removed.
    """
    if not config.train.keep_best:
        return state, loop["best_step"]
    scored = checkpointer.latest_step(best=True)
    if scored != loop["best_step"]:
        logging.warning(
            "%s: the best checkpoint of step %s is not there; the final scores are of %s",
            workdir,
            loop["best_step"],
            "the state at the run's last step" if scored is None else f"best/{scored}",
        )
    if scored is None:
        return state, None
    try:
        best, _ = checkpointer.restore(abstract_like(state), best=True)
    except ValueError as error:  # damaged (it was a traceback ending in this message)
        raise config_lib.ConfigError(
            f"cannot finish the run in {workdir}: {error} Its training is saved in the "
            f"checkpoint of step {checkpointer.latest_step()}; results.json was not written: "
            "rerun the same command to finish it"
        ) from error
    return best, scored
