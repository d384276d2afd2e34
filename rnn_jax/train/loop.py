"""`train_and_evaluate(config, workdir, task)`: the one training loop every experiment uses.

Read top to bottom: build the mesh and the seed replicas, restore the newest checkpoint if
there is one, then `for step: batch -> jitted step -> (log, evaluate, checkpoint)`, and at the
end evaluate the best-validation checkpoint and write `results.json`.

The pieces it calls each live in their own module: `steps` (the jitted init, train and eval
steps, and the state's layout), `resume` (the checkpoint or recorded results a run starts
from, the best checkpoint it is scored on), `nonfinite` (the non-finite guard), `windows`
(train metrics between logs) and `early_stopping` (the best evaluation and patience). Here
stay the loop itself, its evaluation pass and its stop request (SIGTERM/SIGINT).
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from rnn_jax.data.batching import repeat_epochs
from rnn_jax.train import config as config_lib
from rnn_jax.train import distributed, metrics, optim, resume, saved_config, seeds
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.early_stopping import check_best_metric, track_best
from rnn_jax.train.nonfinite import check_finite, check_saveable
from rnn_jax.train.steps import build_steps, check_divisible
from rnn_jax.train.task import Task
from rnn_jax.train.windows import accumulate, close_window, mean_over_replicas


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    *,
    before_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `task` as configured, resuming from `workdir` when it holds a checkpoint.

    Args:
      config: a validated config (`rnn_jax.train.config_checks.validate`).
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
        outside `RESUMABLE_CHANGES` (`rnn_jax.train.saved_config.check_resumable`); or a checkpoint
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
    saved_config.check_resumable(workdir, config)
    check_divisible(config, task)
    schedule = optim.build_schedule(config)
    n = config.num_seeds
    mesh, state, train_step, eval_step = build_steps(config, task)
    check_best_metric(config, task, state, eval_step)
    # Stale best checkpoints are dropped only once the resume checks below have passed.
    # Outermost first: a --workdir below folders that did not exist yet has them made too.
    folders = (*reversed(workdir.parents), workdir, workdir / "checkpoints", workdir / "best")
    made = [d for d in folders if not d.exists()]
    checkpointer = Checkpointer(workdir, config.train.max_to_keep, drop_stale=False)
    try:
        state, loop, start, end, data = resume.resume(checkpointer, state, config, workdir, task)
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
    recorded = resume.recorded_results(workdir) if start == end else None
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
        workdir, enabled=primary, start=start, drop_at_start=resume.redone_at(loop, start)
    )
    progress = metrics.Progress(config.train.num_steps, start)
    stop = _StopRequest()
    pending: list[tuple[int, dict]] = []  # per-step device metrics not yet checked on the host
    tokens_seen, t_first, t_compile, t_start = 0, None, None, time.perf_counter()
    tokens_first = 0  # the first step's tokens: its time (compilation) is left out of the rates

    checked_step = None  # the step whose state `check_saveable` passed last

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
            check_saveable(step, state, checkpointer)
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
            check_finite(s, m, config, loop, checkpointer)
            accumulate(loop, m)
        pending.clear()

    batches = repeat_epochs(data)

    def log_window(step: int) -> None:
        """Log the window's means at `step`, which become the run's last train metrics."""
        drain(step)
        logged = close_window(loop)
        # The rate of the last update applied, read from the optimiser state (the schedule at
        # its count, times reduce-on-plateau's scale): computed from the step number it
        # ignored the plateau's cuts and ran ahead of a run's skipped (non-finite) steps.
        rates = optim.applied_learning_rates(state["opt_state"], schedule, distributed.to_host)
        logged.update(mean_over_replicas({"learning_rate": rates}))
        writer.write(step, logged)
        if primary:
            progress.log(step, logged["train_loss"], tokens_seen)

    def evaluate_at(step: int) -> bool:
        """Evaluate after `step`, saving an improvement; True when early stopping ends the run."""
        drain(step)
        scores = _evaluate(task, task.eval_splits, state, eval_step, mesh, n)
        loop["evaluated_step"] = step
        writer.write(step, mean_over_replicas(scores))
        improved, stopped_early = track_best(loop, step, scores, config, n)
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
        final_state, best_step = resume.final_state(checkpointer, state, config, workdir, loop)
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
