"""The runtime keeps its last good checkpoint and leaves no half-written output: an update
that overflows the parameters is a non-finite step, a non-finite evaluation never becomes the
best, a torn metrics.jsonl line (a crash mid-write) is dropped on resume and skipped by
readers, and the reports are written before results.json, the "done" marker."""

import json
import signal
import threading

import jax
import numpy as np
import pytest

from experiments import run_report
from rnn_jax.train import NonFiniteError, distributed, train_and_evaluate
from rnn_jax.train import config as cfg
from rnn_jax.train import loop as loop_lib
from rnn_jax.train import metrics as run_metrics
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.early_stopping import check_best_metric, track_best
from rnn_jax.train.nonfinite import check_saveable
from rnn_jax.train.steps import build_steps
from tests.report_check import assert_png
from tests.test_train_loop import Regression, Stream, _config

# Finite in float32, but lr * gradient (a few units here) overflows to inf.
HUGE_LEARNING_RATE = 3e38


def test_update_that_overflows_the_params_stops_and_is_never_checkpointed(tmp_path):
    # Warmup from 0 over 2 steps: step 1 applies lr 0 (finite, checkpointed), step 2 applies
    # lr 1.5e38 to finite gradients: loss and gradient norm are finite, the params are not.
    config = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=HUGE_LEARNING_RATE,
        schedule__warmup_steps=2,
        train__log_every=1,
        train__eval_every=1,
        train__checkpoint_every=1,
    )
    with pytest.raises(
        NonFiniteError, match=r"at step 2 .*overflowed.*Last good checkpoint: step 1 "
    ):
        train_and_evaluate(config, tmp_path, Regression())
    checkpointer = Checkpointer(tmp_path, max_to_keep=5)
    assert checkpointer.latest.all_steps() == [1]
    state, _ = checkpointer.restore(_abstract(checkpointer))
    for name in ("params", "opt_state"):
        for leaf in jax.tree.leaves(state[name]):
            assert np.all(np.isfinite(leaf)), name
    assert not (tmp_path / "results.json").exists()


def test_overflowing_update_is_not_applied_in_the_step():
    # Replica 0's update overflows, replica 1's (smaller gradient) just fits in float32: the
    # step keeps replica 0's params and optimiser state and applies replica 1's.
    config = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=HUGE_LEARNING_RATE,
        train__nonfinite="skip",
        num_seeds=2,
    )
    mesh, state, train_step, _ = build_steps(config, Regression())
    before = jax.tree.map(np.asarray, {k: state[k] for k in ("params", "opt_state")})
    batch = next(iter(Stream()))
    state, step_metrics = train_step(state, distributed.put_global_batch(batch, mesh))
    step_metrics = jax.tree.map(np.asarray, step_metrics)
    assert np.all(np.isfinite(step_metrics["loss"]))
    assert np.all(np.isfinite(step_metrics["grad_norm"]))
    np.testing.assert_array_equal(step_metrics["finite"], [False, True])
    np.testing.assert_array_equal(step_metrics["update_finite"], [False, True])
    after = jax.tree.map(np.asarray, {k: state[k] for k in ("params", "opt_state")})
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(new[0], old[0])
        assert np.all(np.isfinite(new))
    kernels = before["params"]["kernel"].value, after["params"]["kernel"].value
    assert not np.array_equal(kernels[0][1], kernels[1][1])  # replica 1 was updated


def test_a_state_with_an_overflowed_optimiser_state_is_never_saved(tmp_path, monkeypatch):
    """The per-step check reads the params; an optimiser state that overflowed alone (finite
    params) is refused when a checkpoint would be written."""
    config = _config(num_seeds=2)
    _, state, _, _ = build_steps(config, Regression())
    checkpointer = Checkpointer(tmp_path / "direct", max_to_keep=2)
    check_saveable(3, state, checkpointer)  # finite: nothing to say
    poisoned = {**state, "opt_state": jax.tree.map(lambda x: x * np.inf, state["opt_state"])}
    if not jax.tree.leaves(poisoned["opt_state"]):
        pytest.skip("this optimiser keeps no float state")
    with pytest.raises(NonFiniteError, match=r"not finite at step 3; not saved.*none yet"):
        check_saveable(3, poisoned, checkpointer)
    checkpointer.close()

    # In a run: from step 2 on the optimiser state is inf/NaN, the params and loss still finite.
    def overflowing_steps(config, task):
        mesh, state, train_step, eval_step = build_steps(config, task)

        def step(state, batch):
            state, step_metrics = train_step(state, batch)
            if int(state["step"]) >= 2:
                floats = lambda x: x * np.inf if np.issubdtype(x.dtype, np.floating) else x
                state = {**state, "opt_state": jax.tree.map(floats, state["opt_state"])}
            return state, step_metrics

        return mesh, state, step, eval_step

    monkeypatch.setattr(loop_lib, "build_steps", overflowing_steps)
    run = tmp_path / "run"
    with pytest.raises(
        NonFiniteError, match=r"not finite at step 2; not saved\. Last good checkpoint: step 1 "
    ):
        train_and_evaluate(_config(train__checkpoint_every=1), run, Regression())
    reader = Checkpointer(run, max_to_keep=2, read_only=True)
    assert reader.latest.all_steps() == [1]
    reader.close()


def _abstract(checkpointer):
    import orbax.checkpoint as ocp

    meta = checkpointer.latest.item_metadata(checkpointer.latest_step())["state"]
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
        meta,
        is_leaf=lambda m: isinstance(m, ocp.metadata.ArrayMetadata),
    )


@pytest.mark.parametrize(
    ("mode", "values", "best"),
    [
        ("min", [np.nan, 2.0, 1.5, np.nan, -np.inf], 1.5),
        ("max", [np.inf, 0.5, 0.7, np.nan, np.inf], 0.7),
    ],
)
def test_non_finite_evaluation_never_becomes_the_best(mode, values, best):
    config = _config(train__best_mode=mode, train__patience=2)
    loop = {"best_value": None, "best_step": None, "bad_evals": 0}
    outcomes = [
        track_best(loop, step, {"valid_loss": [value]}, config, 1)
        for step, value in zip((5, 10, 15, 20, 25), values, strict=True)
    ]
    # A non-finite value counts as an evaluation without improvement: two in a row stop.
    assert outcomes == [(False, False), (True, False), (True, False), (False, False), (False, True)]
    assert loop["best_step"] == 15 and loop["best_value"] == best
    # A loop state saved before non-finite values were refused (its best NaN or inf): the next
    # finite value is the best, not one that never beats it.
    loop = {"best_value": values[0], "best_step": 5, "bad_evals": 0}
    assert track_best(loop, 10, {"valid_loss": [values[1]]}, config, 1) == (True, False)
    # A metric evaluation does not give (a task whose metrics the start could not check)
    with pytest.raises(ValueError, match=r"best_metric='valid_loss': not among .*\['valid_ppl'\]"):
        track_best(loop, 15, {"valid_ppl": [1.0]}, config, 1)


class _EvalOnly:
    """The parts of a Task `check_best_metric` reads: one split, its batches and metrics."""

    eval_splits = ("valid",)

    def __init__(self, batches, metrics):
        self.batches, self.metrics = batches, metrics

    def eval_data(self, split):
        return iter(self.batches)

    def init_carry(self, batch_size):
        return ()

    def eval_batch_size(self, split):
        return 2

    def eval_metrics(self, sums):
        return self.metrics(sums)


def test_best_metric_is_checked_at_start_only_where_evaluation_shapes_tell():
    config = _config(train__best_metric="valid_los")
    state = {"params": {}, "others": {}}

    def eval_step(params, others, batch, carry):
        return carry, {"nll": batch["x"].sum()}

    batches = [{"x": np.ones(2, np.float32)}]
    task = _EvalOnly(batches, lambda sums: {"loss": sums["nll"]})
    with pytest.raises(cfg.ConfigError, match=r"best_metric='valid_los': .* \['valid_loss'\]"):
        check_best_metric(config, task, state, eval_step)
    # Left to the first evaluation (`track_best`): an empty split, and metrics that need
    # real sums (placeholder sums of 1.0 make this one divide by zero).
    check_best_metric(config, _EvalOnly([], task.metrics), state, eval_step)
    task = _EvalOnly(batches, lambda sums: {"loss": sums["nll"] / (sums["nll"] - 1.0)})
    check_best_metric(config, task, state, eval_step)


def test_a_run_outside_the_main_thread_leaves_the_signal_handlers_alone():
    # signal.signal raises ValueError off the main thread (a run started from a worker thread)
    before = signal.getsignal(signal.SIGTERM)
    made = []
    thread = threading.Thread(target=lambda: made.append(loop_lib._StopRequest()))
    thread.start()
    thread.join()
    assert made and made[0]._previous == {} and not made[0].requested
    made[0].restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_writer_reopened_after_a_torn_line_starts_on_a_whole_line(tmp_path):
    writer = run_metrics.MetricsWriter(tmp_path)
    writer.write(1, {"train_loss": 2.0})
    writer.write(2, {"train_loss": 1.5})
    writer.close()
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        # a crash in the middle of a write (longer than the 4096-byte chunks read from the end)
        f.write('{"step": 3, "train_lo' + "s" * 5000)
    writer = run_metrics.MetricsWriter(tmp_path)  # the resumed run
    writer.write(3, {"train_loss": 1.25})
    writer.close()
    text = path.read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]


def test_readers_skip_a_torn_last_line_and_name_a_corrupt_middle_one(tmp_path):
    whole = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + '{"step": 3, "tr')
    assert run_metrics.read_metrics(path) == whole
    steps, values = run_report.read_curve(tmp_path, "train_loss")
    np.testing.assert_array_equal(steps, [1, 2])
    np.testing.assert_array_equal(values, [[2.0], [1.5]])
    path.write_text(json.dumps(whole[0]) + '\n{"step": 2, "tr\n' + json.dumps(whole[1]) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object"):
        run_metrics.read_metrics(path)
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object"):
        run_report.read_curve(tmp_path, "train_loss")
    path.write_text(json.dumps(whole[0]) + "\n[2, 1.5]\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: expected a JSON object, got '\[2"):
        run_metrics.read_metrics(path)
    assert run_metrics.read_metrics(tmp_path / "none.jsonl") == []  # no run yet
    # Bytes that are not UTF-8 in a middle line: named by file:line (a UnicodeDecodeError
    # named a byte offset of no file); a last line torn inside a character is skipped.
    line = json.dumps(whole[0]).encode()
    path.write_bytes(line + b"\n\xff\xfe\n" + line + b"\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object .*utf-8"):
        run_metrics.read_metrics(path)
    path.write_bytes(line + b"\n" + '{"step": 2, "note": "é'.encode()[:-1])
    assert run_metrics.read_metrics(path) == whole[:1]


def test_json_default_writes_numpy_values_and_names_what_it_cannot(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(3, dtype=np.int64), "c": np.bool_(True)}
    run_metrics.write_json_atomic(tmp_path / "r.json", obj)
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": True}
    with pytest.raises(TypeError, match="not JSON serialisable: set"):
        run_metrics.json_default({1})
    assert run_metrics._version("rnn-jax-no-such-package") is None  # provenance: not installed


def test_grid_and_sweep_curve_readers_share_the_torn_line_rule(tmp_path):
    """The grid experiments' and the sweep report's curve readers read metrics.jsonl the same
    way: a torn last line skipped, a corrupt middle line named."""
    from experiments import grid
    from launch import report as launch_report

    whole = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + '{"step": 3, "tr')
    steps, values = grid.read_metric_curve(tmp_path, "train_loss")
    assert steps == [1, 2] and values.tolist() == [[2.0], [1.5]]
    steps, means = launch_report.read_curve(tmp_path, "train_loss")
    assert steps.tolist() == [1, 2] and means.tolist() == [2.0, 1.5]
    path.write_text(json.dumps(whole[0]) + '\n{"step": 2, "tr\n' + json.dumps(whole[1]) + "\n")
    for read in (grid.read_metric_curve, launch_report.read_curve):
        with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object"):
            read(tmp_path, "train_loss")


def test_reports_come_before_results_json_and_survive_a_torn_line(tmp_path):
    config = _config(train__num_steps=10)

    def failing_report(workdir):
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="report failed"):
        run_report.train_and_report(
            config, tmp_path, Regression(), name="regression", report=failing_report
        )
    assert not (tmp_path / "results.json").exists()  # not done: a rerun retries the report
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "final_va')  # killed while logging

    def report(workdir):
        final = run_report.read_json(workdir, "results.json")["final"]
        return f"step {final['step']}, valid loss {final['valid_loss']}\n"

    results = run_report.train_and_report(
        config, tmp_path, Regression(), name="regression", report=report
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["final"] == results["final"]
    assert (tmp_path / "regression.md").read_text() == (
        f"step 10, valid loss {saved['final']['valid_loss']}\n"
    )
    assert_png(tmp_path / run_report.CURVES_FILE)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_grid_point_is_redone_when_its_experiment_config_changed(tmp_path):
    """A finished grid point is reused only under the config it was run with (grid.* keys
    aside, which only select points): `full` run in a `quick` workdir redoes the points they
    share instead of reporting quick's numbers as full's."""
    from experiments import grid

    calls = []

    def point(point_dir):
        calls.append(point_dir.name)
        return {"value": len(calls)}

    def run(config):
        return grid.run_points(tmp_path, [("a", point), ("b", point)], config)

    config = _config()
    config.grid = {"cells": "lstm"}
    assert run(config) == {
        "a": {"value": 1, "point_wall_s": pytest.approx(0, abs=5)},
        "b": {"value": 2, "point_wall_s": pytest.approx(0, abs=5)},
    }
    config.grid.cells = "lstm,gru"  # another selection: the same points, reused
    assert run(config)["b"]["value"] == 2 and calls == ["a", "b"]
    config.model.hidden_size = 2  # another experiment: redone
    assert run(config)["a"]["value"] == 3 and calls == ["a", "b", "a", "b"]
    assert run(config)["a"]["value"] == 3 and len(calls) == 4
    (tmp_path / "points" / "b" / grid.POINT_CONFIG_FILE).unlink()  # a pre-record workdir
    run(config)
    assert calls[4:] == ["b"]


def test_a_grid_rerun_removes_its_done_marker_only_while_a_point_trains(tmp_path):
    """results.json is a grid's "done" marker: a rerun under another config that was killed
    while a point trained kept the old file, and read as finished with the old results."""
    from experiments import grid

    done = tmp_path / grid.RESULTS_FILE
    seen = []

    def point(point_dir):
        seen.append(done.exists())
        return {"value": 1.0}

    config = _config()
    config.grid = {"cells": "lstm"}
    grid.run_points(tmp_path, [("a", point)], config)
    done.write_text("{}")
    grid.run_points(tmp_path, [("a", point)], config)  # loads the summary: the marker stays
    assert done.is_file() and seen == [False]
    config.model.hidden_size = 2  # the point trains again: the marker goes first
    grid.run_points(tmp_path, [("a", point)], config)
    assert seen == [False, False] and not done.exists()


def test_resuming_checkpoints_of_another_config_is_refused_before_anything_runs(tmp_path):
    """train_and_evaluate (the grid points' entry, not only the command line) refuses to resume
    checkpoints written under another model; a resumable change (more steps) or another grid
    selection resumes."""
    from rnn_jax.train.config import ConfigError

    config = _config(train__num_steps=5)
    config.grid = {"lengths": "10"}
    train_and_evaluate(config, tmp_path, Regression())
    config_text = (tmp_path / "config.json").read_text()
    changed = _config(train__num_steps=5, model__hidden_size=2)
    changed.grid = {"lengths": "10"}
    with pytest.raises(ConfigError, match=r"model\.hidden_size: 1 in .*config\.json, now 2"):
        train_and_evaluate(changed, tmp_path, Regression())
    assert (tmp_path / "config.json").read_text() == config_text  # still says what it holds
    longer = _config(train__num_steps=10)
    longer.grid = {"lengths": "10,20"}
    results = train_and_evaluate(longer, tmp_path, Regression())
    assert results["final"]["step"] == 10


def test_every_curve_reader_keeps_one_record_per_step(tmp_path):
    """A run resumed after a kill logs the replayed steps again: the grid experiments' and the
    sweep report's readers used to return steps [1, 2, 3, 2, 3] (a curve doubling back)."""
    from experiments import grid
    from launch import report as launch_report

    records = [(1, 3.0), (2, 2.0), (3, 1.0), (2, 2.5), (3, 1.5), (4, 0.5)]
    lines = [{"step": s, "train_loss": v} for s, v in records]
    lines.insert(2, {"step": 2, "valid_loss": 9.0})  # another key at the same step stays apart
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    steps, values = grid.read_metric_curve(tmp_path, "train_loss")
    assert steps == [1, 2, 3, 4] and values.tolist() == [[3.0], [2.5], [1.5], [0.5]]
    steps, means = launch_report.read_curve(tmp_path, "train_loss")
    assert steps.tolist() == [1, 2, 3, 4] and means.tolist() == [3.0, 2.5, 1.5, 0.5]
    steps, values = run_report.read_curve(tmp_path, "train_loss")
    assert steps.tolist() == [1, 2, 3, 4] and values.tolist() == [[3.0], [2.5], [1.5], [0.5]]
    assert grid.read_metric_curve(tmp_path, "valid_loss")[0] == [2]


def test_grid_point_labels_follow_the_current_grid_not_the_stored_summary(tmp_path):
    """A point's labels (regularization: which seed questions it answers) depend on the grid
    of this run, not on what trained: a summary reused from a run whose grid asked only Q17
    kept [17], and the point was left out of Q12's table and answer."""
    from experiments import grid

    calls = []

    def point(point_dir):
        calls.append(point_dir.name)
        return {"value": 1.0}

    config = _config()
    config.grid = {"depths": ""}
    first = grid.run_points(tmp_path, [("a", point, {"questions": [17]})], config)
    assert first["a"]["questions"] == [17]
    assert json.loads((tmp_path / "points/a/summary.json").read_text())["questions"] == [17]
    config.grid.depths = "2"
    again = grid.run_points(tmp_path, [("a", point, {"questions": [17, 12]})], config)
    assert again["a"]["questions"] == [17, 12] and again["a"]["value"] == 1.0
    assert calls == ["a"]  # reused, not retrained
