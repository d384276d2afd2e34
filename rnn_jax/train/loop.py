"""`train_and_evaluate(config, workdir, task)`: the one training loop every experiment uses.

Read top to bottom: build the mesh and the seed replicas, restore the newest checkpoint if
there is one, then `for step: batch -> jitted step -> (log, evaluate, checkpoint)`, and at the
end evaluate the best-validation checkpoint and write `results.json`.

State layout (a dict pytree; every leaf but `step` has a leading `[num_seeds]` replica axis):
  params      nnx.State of the model's nnx.Param variables (optimised)
  others      nnx.State of every other model variable (carried unchanged)
  opt_state   the optax state
  carry       the task's carried state, `[num_seeds, batch, ...]` (sharded on batch)
  rng         `[num_seeds, 2]` uint32 base keys; step s uses `seeds.step_key(rng, s)`
  step        int32 scalar, steps taken (kept on the device: nothing is sent per step)
"""

from __future__ import annotations

import contextlib
import copy
import math
import pathlib
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from rnn_jax.data.batching import repeat_epochs
from rnn_jax.train import config as config_lib
from rnn_jax.train import distributed, metrics, optim, seeds
from rnn_jax.train.checkpoint import Checkpointer, abstract_like
from rnn_jax.train.task import Task


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient norm, or updated parameters / optimiser state; the message
    names the step and the last good checkpoint."""


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    *,
    before_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `task` as configured, resuming from `workdir` when it holds a checkpoint.

    Args:
      config: a validated config (`rnn_jax.train.config.validate`).
      workdir: the run directory (checkpoints, metrics.jsonl, tensorboard/, results.json).
      task: the experiment's model, data, loss and evaluation.
      before_done: called on process 0 with the results object once training, evaluation
        and metrics.jsonl are complete, just before `results.json` (the "done" marker) is
        written: reports written here are in place before the run counts as finished, and
        an exception here leaves the run unfinished (rerunning resumes and retries it).
        A finished run (its `results.json` there, no step left to train) calls it with the
        recorded results, which it leaves as they are.

    Returns:
      The `results.json` object (`final`, `timing`, `provenance`): for a finished run, the
      one recorded when it finished (the run directory is left as it was). `timing` is this
      invocation's; one that trained no step (it only finished the run) also carries, as
      `timing["earlier_invocation"]`, the timing and host of the invocation that saved the
      checkpoint it finished from (None for a checkpoint from before session 37).

    Raises:
      ConfigError: `workdir` holds checkpoints written under a config that differs in a key
        outside `RESUMABLE_CHANGES` (`rnn_jax.train.config.check_resumable`); or a checkpoint
        to restore (the newest at the start, the best at the end) is damaged.
      NonFiniteError: a non-finite loss/gradient, or updated parameters/optimiser state, with
        `train.nonfinite='stop'` (or too many in a row with 'skip'); the last good checkpoint
        stays in place.
      SystemExit: after SIGTERM/SIGINT, once a checkpoint of the current step is written.
    """
    workdir = pathlib.Path(workdir)
    primary = jax.process_index() == 0
    multiprocess = jax.process_count() > 1
    # Checkpoints written under another config are not resumed into this one.
    config_lib.check_resumable(workdir, config)
    _check_divisible(config, task)
    schedule = optim.build_schedule(config)
    n = config.num_seeds
    mesh, state, train_step, eval_step = build_steps(config, task)
    _check_best_metric(config, task, state, eval_step)
    # Stale best checkpoints are dropped only once the resume checks below have passed.
    # Outermost first: a --workdir below folders that did not exist yet has them made too.
    folders = (*reversed(workdir.parents), workdir, workdir / "checkpoints", workdir / "best")
    made = [d for d in folders if not d.exists()]
    checkpointer = Checkpointer(workdir, config.train.max_to_keep, drop_stale=False)
    try:
        state, loop, start, end, data = _resume(checkpointer, state, config, workdir, task)
        # The timing that the invocation which saved the checkpoint had there (None: a fresh
        # run, or a checkpoint written before it was saved): carried when this one trains none.
        saved_timing = loop.pop("timing", None)
    except BaseException:  # a refused resume (ConfigError) or a task that cannot read its data
        checkpointer.close(prune=False)
        # ... leaves the run directory as it was: the empty folders the Checkpointer made go
        # (a fresh run whose data was missing left an empty checkpoints/ and best/ behind)
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # rmdir: only an empty folder
                folder.rmdir()
        raise
    recorded = _recorded_results(workdir) if start == end else None
    if recorded is not None:
        # A finished run rerun: nothing to train, so it keeps the record of the run that
        # trained (timing, rates, provenance). Rewritten, `steps_run` became 0 and the rates
        # None, and grid points redone under a resumable change lost their steps/s.
        checkpointer.close(prune=False)
        logging.info("%s is finished (results.json): nothing to train", workdir)
        if primary and before_done is not None:
            before_done(recorded)
        return recorded
    # Best checkpoints the loop state has not seen go: a killed run's newer than its periodic
    # checkpoint, and those of a finished run's last-step evaluation that this one trains past.
    checkpointer.drop_best_after(loop["best_step"])
    if primary:  # only now: a config error above leaves the run directory as it was
        workdir.mkdir(parents=True, exist_ok=True)
        # Atomic: a resume rewrites it, and a torn config.json makes the run unresumable.
        metrics.write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))
        if end > start:
            # It trains again (a finished run extended by a larger train.num_steps): the done
            # marker goes until it finishes, or a crash left the old results beside the new
            # config.json and newer checkpoints, and sweeps skipped the run as finished.
            metrics.remove_done_marker(workdir)
        for name, content in task.artifacts().items():
            metrics.write_json_atomic(workdir / name, content)

    writer = metrics.MetricsWriter(
        workdir, enabled=primary, start=start, drop_at_start=_redone_at(loop, start)
    )
    progress = metrics.Progress(config.train.num_steps, start)
    stop = _StopRequest()
    pending: list[tuple[int, dict]] = []  # per-step device metrics not yet checked on the host
    tokens_seen, t_first, t_compile, t_start = 0, None, None, time.perf_counter()
    tokens_first = 0  # the first step's tokens: its time (compilation) is left out of the rates

    checked_step = None  # the step whose state `_check_saveable` passed last

    def timing(step: int) -> dict[str, Any]:
        """This invocation's timing from its start to now, with `step` the last step taken."""
        now, steps = time.perf_counter(), step - start
        return {
            "wall_s": now - t_start,
            "compile_s": t_compile,
            "steps_run": steps,
            "steps_per_s": (steps - 1) / (now - t_first) if steps > 1 else None,
            # The tokens of the steps after the first (batches of padded tasks differ in size).
            "tokens_per_s": (tokens_seen - tokens_first) / (now - t_first) if steps > 1 else None,
            "resumed_from_step": start,
        }

    def save(step: int, *, best: bool = False) -> None:
        nonlocal checked_step
        if checked_step != step:  # the best and the periodic save of one step: one check
            _check_saveable(step, state, checkpointer)
            checked_step = step
        # The timing so far, with the host: an invocation that only finishes the run from
        # this checkpoint (it trains no step) carries it, measured by the one that trained.
        so_far = {**timing(step), "hostname": socket.gethostname()}
        loop_record = {**loop, "data": data.state_dict(), "timing": so_far}
        checkpointer.save(step, state, loop_record, best=best)

    def drain(step: int) -> None:
        """Check the pending steps for non-finite values and add them to the log window."""
        host = distributed.to_host([m for _, m in pending])
        for (s, _), m in zip(pending, host, strict=True):
            _check_finite(s, m, config, loop, checkpointer)
            _accumulate(loop, m)
        pending.clear()

    batches = repeat_epochs(data)

    def log_window(step: int) -> None:
        """Log the window's means at `step`, which become the run's last train metrics."""
        drain(step)
        logged = _close_window(loop)
        # The rate of the last update applied, read from the optimiser state (the schedule at
        # its count, times reduce-on-plateau's scale): computed from the step number it
        # ignored the plateau's cuts and ran ahead of a run's skipped (non-finite) steps.
        rates = optim.applied_learning_rates(state["opt_state"], schedule, distributed.to_host)
        logged.update(_mean_over_replicas({"learning_rate": rates}))
        writer.write(step, logged)
        if primary:
            progress.log(step, logged["train_loss"], tokens_seen)

    def evaluate_at(step: int) -> bool:
        """Evaluate after `step`, saving an improvement; True when early stopping ends the run."""
        drain(step)
        scores = _evaluate(task, task.eval_splits, state, eval_step, mesh, n)
        loop["evaluated_step"] = step
        writer.write(step, _mean_over_replicas(scores))
        improved, stopped_early = _track_best(loop, step, scores, config, n)
        if improved and config.train.keep_best:
            save(step, best=True)
        return stopped_early

    def end_run(step: int) -> bool:
        """What a run does at the step it ends at and not on its schedule: log the open window
        (the run's final train_loss) and evaluate unless `step` was (a candidate for the best
        checkpoint). The loop record before them is kept as `loop["ongoing"]`: a resume that
        trains on past this step (a larger `train.num_steps`) continues from it, as a run
        trained straight to that length did (kept, the extra evaluation could be its best
        checkpoint or stop it early). True when that evaluation stops the run early."""
        drain(step)
        # An empty window: a resume at a step logged before the kill, whose window
        # (`last_train`) is already the run's last (closing it left no train_loss).
        log, evaluate = bool(loop["window"]), loop["evaluated_step"] != step
        if not (log or evaluate):
            return False
        ongoing = copy.deepcopy(loop)
        if log:
            log_window(step)
        stopped_early = evaluate and evaluate_at(step)
        loop["ongoing"] = ongoing
        return stopped_early

    def bookkeeping(step: int, *, log: bool, evaluate: bool, checkpoint: bool, last: bool) -> bool:
        """Log, evaluate and save after `step` as scheduled, and at the run's `last` step or an
        early stop what ends the run (`end_run`); True when early stopping ends the run."""
        if log:
            log_window(step)
        stopped_early = evaluate and evaluate_at(step)
        if last or stopped_early:
            stopped_early = end_run(step) or stopped_early
        if checkpoint or stopped_early:
            drain(step)
            save(step)
        return stopped_early

    step = start
    stopped_early = False
    try:
        if start == end:  # only on resume: a fresh run starts at 0 and num_steps is positive
            # The newest checkpoint is the run's last step, but it may have been written as an
            # ordinary step (train.num_steps lowered to it on resume): do what the last step
            # does and that checkpoint's run did not, so that the results equal a run of
            # this length.
            end_run(start)
        for step in range(start + 1, end + 1):
            batch = next(batches)
            tokens_seen += task.tokens_in(batch)
            state, step_metrics = train_step(state, distributed.put_global_batch(batch, mesh))
            pending.append((step, step_metrics))
            if multiprocess:
                # XLA:CPU runs programs asynchronously; two programs with cross-process
                # (gloo) collectives in flight at once (this step and the stop-flag allgather
                # below) can pair up differently on each process and deadlock.
                jax.block_until_ready(state)
            if t_first is None:
                jax.block_until_ready(step_metrics)
                t_first = time.perf_counter()
                t_compile = t_first - t_start
                tokens_first = tokens_seen
            last = step == config.train.num_steps
            stopped_early = bookkeeping(
                step,
                log=step % config.train.log_every == 0,
                evaluate=step % config.train.eval_every == 0,
                checkpoint=step % config.train.checkpoint_every == 0 or last,
                last=last,
            )
            if distributed.any_process(stop.requested):
                drain(step)
                save(step)
                raise SystemExit(
                    f"stopped by {stop.cause()} at step {step}; checkpoint saved in "
                    f"{workdir / 'checkpoints'}; rerun the same command to resume"
                )
            if stopped_early:
                logging.info("early stopping at step %d (patience %d)", step, config.train.patience)
                break
    finally:
        stop.restore()
        checkpointer.wait()
    run_timing = timing(step)  # before the final evaluation, which the rates leave out

    try:
        final_state, best_step = _final_state(checkpointer, state, config, workdir, loop)
    except config_lib.ConfigError:
        writer.close()
        checkpointer.close(prune=False)  # the run directory as it is, for the rerun
        raise
    scores = _evaluate(task, task.final_splits, final_state, eval_step, mesh, n)
    final = {"step": step, "best_step": best_step, **loop["last_train"], **scores}
    results = {
        "final": seeds.summarize(final, n),
        "timing": run_timing,
        "provenance": metrics.provenance(),
    }
    if step == start:
        # This invocation trained no step: it only finished the run (a rerun after a failed
        # report, train.num_steps lowered to the checkpoint, an early stop resumed). Its own
        # timing says so (steps_run 0, no rates); the steps were trained by the invocation
        # that saved the checkpoint, whose timing there (and host) is carried, named as such.
        results["timing"]["earlier_invocation"] = saved_timing
    writer.write(
        step, {f"final_{k}": v for k, v in results["final"].items() if isinstance(v, float)}
    )
    writer.close()
    checkpointer.close()
    if primary:
        if before_done is not None:
            before_done(results)
        metrics.write_json_atomic(workdir / metrics.RESULTS_FILE, results)
    return results


def _final_state(
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
        as a resume reports a damaged periodic checkpoint (`_resume`). The run's training is
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


def _redone_at(loop: dict, step: int) -> Callable[[dict[str, Any]], bool]:
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


def _recorded_results(workdir: pathlib.Path) -> dict[str, Any] | None:
    """The results a finished run recorded (`workdir/results.json`), or None when there is
    none or it cannot be read as a results object (it is then written again)."""
    try:
        recorded = config_lib.read_json_object(workdir / metrics.RESULTS_FILE)
    except (OSError, ValueError):
        return None
    return recorded if {"final", "timing"} <= recorded.keys() else None


def _resume(
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
    if _patience_exhausted(loop, config):
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


def _check_divisible(config: ml_collections.ConfigDict, task: Task) -> None:
    """Batches are split over all devices: their sizes must divide evenly (before compiling).

    Raises:
      ConfigError: naming the batch size and the device count (the command line reports it
        in one line with exit status 2, like any config value that cannot work).
    """
    devices = jax.device_count()
    sizes = {"train.batch_size": config.train.batch_size}
    # in the task's order (a set named a different split from run to run), and with where the
    # size is set: the task reads it from its own key (data.eval_batch_size for most)
    sizes.update(
        {
            f"eval batch size of {s!r} (the experiment's eval batch size, e.g. "
            "data.eval_batch_size)": task.eval_batch_size(s)
            for s in dict.fromkeys((*task.eval_splits, *task.final_splits))
        }
    )
    for name, size in sizes.items():
        if size % devices:
            raise config_lib.ConfigError(
                f"{name}={size}: must be a multiple of the device count ({devices}); batches "
                "are sharded over devices (multiples of 8 run on 1, 2, 4 or 8 devices)"
            )


def _check_best_metric(
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


# ----------------------------------------------------------------------------------------------
# Jitted pieces. Every function works on one replica and is vmapped over the seed axis.


def build_steps(config: ml_collections.ConfigDict, task: Task) -> tuple[Any, dict, Any, Any]:
    """`(mesh, state, train_step, eval_step)` exactly as `train_and_evaluate` uses them (for
    benchmarks): `train_step(state, batch) -> (state, metrics)` (jitted, donates `state`),
    `eval_step(params, others, batch, carry) -> (carry, sums)`; batches go through
    `distributed.put_global_batch(batch, mesh)`."""
    mesh = distributed.data_mesh()
    tx = optim.build_optimizer(config)
    graphdef, init_state = build_init(
        task, tx, config.seed, config.num_seeds, config.train.batch_size
    )
    shardings = _state_shardings(jax.eval_shape(init_state), mesh, config.train.shard_params)
    state = jax.jit(init_state, out_shardings=shardings)()
    train_step = jax.jit(
        _train_step_fn(task, tx, graphdef, config.train.nonfinite == "skip"),
        out_shardings=(shardings, None),
        donate_argnums=0,
    )
    return mesh, state, train_step, jax.jit(_eval_step_fn(task, graphdef))


def build_init(
    task: Task, tx: optax.GradientTransformation, seed: int, n: int, batch_size: int
) -> tuple[Any, Any]:
    """`(graphdef, init_state)`: the model's graph and a function `() -> state` (the layout in
    the module docstring) for `n` replicas from `seed` and a training batch of `batch_size`."""
    abstract = nnx.eval_shape(lambda: task.init_model(jax.random.key(0)))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)

    def init_one(base_key: jax.Array) -> dict:
        model = task.init_model(seeds.init_key(base_key))
        _, params, others = nnx.split(model, nnx.Param, ...)
        return {"params": params, "others": others, "opt_state": tx.init(params), "rng": base_key}

    def init_state() -> dict:
        state = jax.vmap(init_one)(seeds.base_keys(seed, n))
        one = task.init_carry(batch_size)
        state["carry"] = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), one)
        # The number of steps taken, on the device: the host never sends it per step.
        state["step"] = jnp.zeros((), jnp.int32)
        return state

    return graphdef, init_state


def _state_shardings(
    abstract_state: dict, mesh: jax.sharding.Mesh, shard_params: bool = False
) -> dict:
    """Carry sharded on its batch axis; params, other variables and optimiser state
    replicated, or (`shard_params`) split over the devices along one axis (ZeRO-3/FSDP style:
    XLA gathers them where the step needs them)."""
    shardings = jax.tree.map(lambda _: distributed.replicated(mesh), abstract_state)
    shardings["carry"] = jax.tree.map(
        lambda _: distributed.batch_sharded(mesh, batch_axis=1), abstract_state["carry"]
    )
    if shard_params:
        for name in ("params", "others", "opt_state"):
            shardings[name] = jax.tree.map(
                lambda x: distributed.parameter_sharding(mesh, x.shape), abstract_state[name]
            )
    return shardings


def _train_step_fn(
    task: Task,
    tx: optax.GradientTransformationExtraArgs,
    graphdef: Any,
    skip_nonfinite: bool = False,
) -> Any:
    def one(
        params: Any,
        others: Any,
        opt_state: Any,
        carry: Any,
        base_key: jax.Array,
        batch: Any,
        step: jax.Array,
    ) -> tuple:
        rng = seeds.step_key(base_key, step)

        def loss_of(p: Any) -> tuple:
            return task.loss_fn(nnx.merge(graphdef, p, others), batch, carry, rng)

        (loss, (new_carry, aux)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        # Before clipping. With grad_accum_steps > 1 this is the micro-batch's norm; clipping
        # acts on the mean of the k micro-batch gradients (inside optax.MultiSteps).
        grad_norm = optax.global_norm(grads)
        updates, new_opt_state = tx.update(grads, opt_state, params, value=loss)
        new_params = optax.apply_updates(params, updates)
        # Finite gradients can still overflow the update (a huge learning rate): such a step
        # is as bad as a NaN loss. One reduced bool per replica, over the params only (an
        # optimiser state that overflows alone is caught before every save, `_check_saveable`).
        update_finite = optim.all_finite(new_params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & update_finite
        # A non-finite forward pass leaves a non-finite carry: keep the last good one.
        new_carry = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_carry, carry)
        if skip_nonfinite:
            # 'skip' trains on after a bad step: keep the last good params and optimiser state
            # (optax.apply_if_finite only sees the gradient). Under 'stop' the run ends at the
            # next check and nothing after a bad step is saved, so no per-step copy is needed
            # (it cost ~9% of a small model's step on CPU).
            new_params, new_opt_state = jax.tree.map(
                lambda a, b: jnp.where(finite, a, b),
                (new_params, new_opt_state),
                (params, opt_state),
            )
        params, opt_state = new_params, new_opt_state
        step_metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": finite,
            "update_finite": update_finite,
            **aux,
        }
        return params, opt_state, new_carry, step_metrics

    def train_step(state: dict, batch: Any) -> tuple[dict, dict]:
        step = state["step"] + 1
        params, opt_state, carry, step_metrics = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None))(
            state["params"],
            state["others"],
            state["opt_state"],
            state["carry"],
            state["rng"],
            batch,
            step,
        )
        new_state = {
            **state,
            "params": params,
            "opt_state": opt_state,
            "carry": carry,
            "step": step,
        }
        return new_state, step_metrics

    return train_step


@jax.jit
def _state_finite(params: Any, opt_state: Any) -> jax.Array:
    return optim.all_finite((params, opt_state))


def _check_saveable(step: int, state: dict, checkpointer: Checkpointer) -> None:
    """Never write a checkpoint whose params or optimiser state hold inf/NaN: the per-step
    check covers loss, gradient norm and params; an optimiser state that overflowed alone
    (e.g. Adam's second moment from a finite but huge gradient) is found here, once per save.

    Raises:
      NonFiniteError: naming the step and the last good checkpoint.
    """
    if bool(_state_finite(state["params"], state["opt_state"])):
        return
    latest = checkpointer.latest_step()
    raise NonFiniteError(
        f"the parameters or optimiser state are not finite at step {step}; not saved. Last "
        "good checkpoint: "
        + ("none yet" if latest is None else f"step {latest}")
        + f" in {checkpointer.latest.directory}"
    )


def _eval_step_fn(task: Task, graphdef: Any) -> Any:
    def one(params: Any, others: Any, batch: Any, carry: Any) -> tuple:
        return task.eval_step(nnx.merge(graphdef, params, others), batch, carry)

    return jax.vmap(one, in_axes=(0, 0, None, 0))


def _evaluate(
    task: Task,
    splits: tuple[str, ...],
    state: dict,
    eval_step: Any,
    mesh: jax.sharding.Mesh,
    n: int,
) -> dict[str, list[float]]:
    """`{f"{split}_{metric}": [per replica]}`; statistics are summed in float64 on the host."""
    scores = {}
    for split in splits:
        one = task.init_carry(task.eval_batch_size(split))
        # Built on the host and placed shard by shard, like batches: no cross-process
        # collective (jax.device_put of a global array compares the value across processes).
        carry = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)), one)
        carry = distributed.put_global_batch(carry, mesh, batch_axis=1)
        totals: dict[str, np.ndarray] = {}
        for batch in task.eval_data(split):
            carry, sums = eval_step(
                state["params"], state["others"], distributed.put_global_batch(batch, mesh), carry
            )
            for name, value in distributed.to_host(sums).items():
                totals[name] = totals.get(name, 0.0) + value.astype(np.float64)
        for i in range(n):
            per = task.eval_metrics({k: float(v[i]) for k, v in totals.items()})
            for name, value in per.items():
                scores.setdefault(f"{split}_{name}", []).append(float(value))
    return scores


# ----------------------------------------------------------------------------------------------
# Host-side bookkeeping (all of it lives in the checkpoint's `loop` JSON, for exact resume).


def _check_finite(
    step: int, m: dict, config: ml_collections.ConfigDict, loop: dict, checkpointer: Checkpointer
) -> None:
    """Count each replica's non-finite steps in a row and raise where a single-seed run of
    that replica's seed would: at any non-finite step under 'stop', after more than
    `train.max_consecutive_nonfinite` in a row under 'skip' (replicas failing on alternate
    steps go on, as each would alone)."""
    finite = np.asarray(m["finite"], bool)
    counts = _per_replica(loop["consecutive_nonfinite"], finite.shape[0])
    loop["consecutive_nonfinite"] = [
        0 if ok else c + 1 for c, ok in zip(counts, finite, strict=True)
    ]
    if finite.all():
        return
    bad = [int(i) for i in np.flatnonzero(~finite)]
    overflow = [i for i in bad if not m["update_finite"][i]]
    cause = (
        f"; the updated parameters of replicas {overflow} overflowed: is "
        "the learning rate too large?"
        if overflow
        else ""
    )
    latest = checkpointer.latest_step()
    message = (
        f"non-finite loss, gradient or update at step {step} (replicas {bad}: loss="
        f"{m['loss'][bad].tolist()}, grad_norm={m['grad_norm'][bad].tolist()}{cause}); the "
        "update was not applied. Last good checkpoint: "
        + ("none yet" if latest is None else f"step {latest}")
        + f" in {checkpointer.latest.directory}"
    )
    limit = config.train.max_consecutive_nonfinite
    too_many = [i for i, c in enumerate(loop["consecutive_nonfinite"]) if c > limit]
    if config.train.nonfinite == "stop":
        raise NonFiniteError(message)
    if too_many:
        raise NonFiniteError(
            f"{message}; replicas {too_many} had more than "
            f"train.max_consecutive_nonfinite={limit} non-finite steps in a row"
        )
    logging.warning("%s; skipping it (train.nonfinite='skip')", message)


def _per_replica(count: int | list[int], n: int) -> list[int]:
    """A loop record's per-replica count; older checkpoints stored one int for all replicas
    (for `consecutive_nonfinite`: the steps in a row where any replica failed, at least each
    replica's own count)."""
    return list(count) if isinstance(count, list) else [count] * n


def _accumulate(loop: dict, m: dict) -> None:
    """Add one step's metrics to the log window of each replica whose update was applied: a
    step skipped under 'skip' (non-finite) stays out of the means, which would all be NaN.
    A `(numerator, denominator)` pair (`Task.loss_fn`) is summed apart: `[num, den]` per
    replica."""
    window = loop["window"]
    applied = np.asarray(m["finite"], bool)
    n = applied.shape[0]
    for name, value in m.items():
        if name in ("finite", "update_finite"):
            continue
        _check_logged(name, value, n)
        if isinstance(value, tuple):  # [2, n]: the window's ratio is that of its sums
            parts = np.where(applied, np.asarray(value, np.float64), 0.0)
            old = window.get(name, [[0.0, 0.0]] * n)
            sums = zip(old, *parts, strict=True)
            window[name] = [[a + float(x), b + float(y)] for (a, b), x, y in sums]
            continue
        value = np.where(applied, np.asarray(value, np.float64), 0.0)
        window.setdefault(name, [0.0] * n)
        window[name] = [float(a + b) for a, b in zip(window[name], value, strict=True)]
        if name == "grad_norm":  # norms are >= 0: the 0 of a skipped step changes no maximum
            old = window.get("grad_norm_max", [0.0] * n)
            window["grad_norm_max"] = [float(max(a, b)) for a, b in zip(old, value, strict=True)]
    # Applied steps per replica (a plain int, shared by all replicas, in older checkpoints).
    counts = _per_replica(loop["window_steps"], n)
    loop["window_steps"] = [c + int(a) for c, a in zip(counts, applied, strict=True)]


def _check_logged(name: str, value: Any, n: int) -> None:
    """A value of `Task.loss_fn`'s logs, as one step's metrics hold it over `n` replicas: one
    scalar per replica (shape `(n,)`), or a `(numerator, denominator)` tuple of two such.

    Raises:
      ValueError: naming the logged value and what it was (a tuple of three was "too many
        values to unpack", a list of two arrays "only 0-dimensional arrays can be converted
        to Python scalars", naming neither the value nor what a log may hold).
    """
    expected = f"one scalar per replica (shape ({n},)) or a tuple (numerator, denominator) of two"
    if isinstance(value, tuple) and len(value) != 2:
        raise ValueError(f"Task.loss_fn logged {name!r} as a tuple of {len(value)}: {expected}")
    for part in value if isinstance(value, tuple) else (value,):
        if np.shape(part) != (n,):
            raise ValueError(
                f"Task.loss_fn logged {name!r} with shape {np.shape(part)} over {n} replicas: "
                f"{expected}"
            )


def _close_window(loop: dict) -> dict[str, Any]:
    """Window means over the applied steps (max for grad_norm_max; for a `[num, den]` pair
    the ratio of its sums, NaN where den is 0), per replica; NaN for a replica without one.
    The window starts afresh."""

    def value(name: str, total: float | list[float], count: int) -> float:
        if not count:
            return math.nan
        if isinstance(total, list):
            numerator, denominator = total
            return numerator / denominator if denominator else math.nan
        return total if name == "grad_norm_max" else total / count

    n = len(next(iter(loop["window"].values()), []))
    counts = _per_replica(loop["window_steps"], n)
    per_seed = {
        ("train_" + name if name == "loss" else name): [
            value(name, v, c) for v, c in zip(values, counts, strict=True)
        ]
        for name, values in loop["window"].items()
    }
    loop["window"], loop["window_steps"] = {}, 0
    loop["last_train"] = per_seed
    return _mean_over_replicas(per_seed)


def _mean_over_replicas(per_seed: dict[str, list[float]]) -> dict[str, Any]:
    """Scalars (means over replicas) for logging, plus `<name>_per_seed` lists when n > 1."""
    logged: dict[str, Any] = {name: float(np.mean(v)) for name, v in per_seed.items()}
    for name, values in per_seed.items():
        if len(values) > 1:
            logged[f"{name}_per_seed"] = values
    return logged


def _track_best(
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
    return better, _patience_exhausted(loop, config)


def _patience_exhausted(loop: dict, config: ml_collections.ConfigDict) -> bool:
    """Early stopping: `train.patience` evaluations in a row without improvement."""
    return bool(config.train.patience) and loop["bad_evals"] >= config.train.patience


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks after every step."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def cause(self) -> str:
        """What stopped the run: this process's signal, or (multi-host) another process's,
        which reaches this one as the gathered flag alone ("stopped by None" was printed by
        the processes that did not get the signal, process 0 among them)."""
        return self.signal_name or "a signal (SIGTERM or SIGINT) to another process of the run"

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
