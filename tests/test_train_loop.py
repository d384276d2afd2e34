"""`train_and_evaluate` in-process on a tiny regression task: the non-finite guard (per seed
replica), seed replicas under vmap (with gradient accumulation, against a hand-written loop),
early stopping and resuming after it, the logged learning rate and window means, exit
statuses, tokens/s, and the contract files (provenance included)."""

import json
import shutil
import struct
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.data.synthetic import AddingProblem
from rnn_jax.train import (
    NonFiniteError,
    Task,
    config_checks,
    distributed,
    metrics,
    train_and_evaluate,
)
from rnn_jax.train import config as cfg
from rnn_jax.train import loop as loop_lib
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.early_stopping import track_best
from rnn_jax.train.nonfinite import check_finite
from rnn_jax.train.restore import restore_model
from rnn_jax.train.resume import resume
from rnn_jax.train.steps import check_divisible
from rnn_jax.train.windows import accumulate, close_window

TRUE_W = np.array([1.0, -2.0, 0.5], np.float32)


class Stream:
    """8 batches per epoch of y = x @ TRUE_W; batch `nan_at` (0-based, first epoch) has NaNs."""

    def __init__(self, nan_at=None, batches=8):
        self.epoch, self.index, self.nan_at, self.batches = 0, 0, nan_at, batches

    def __iter__(self):
        while self.index < self.batches:
            index = self.index
            self.index += 1
            x = np.random.default_rng([self.epoch, index]).normal(size=(8, 3)).astype(np.float32)
            y = x @ TRUE_W
            if self.epoch == 0 and index == self.nan_at:
                x[0, 0] = np.nan
            yield {"x": x, "y": y}
        self.epoch, self.index = self.epoch + 1, 0

    def state_dict(self):
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state):
        self.epoch, self.index = state["epoch"], state["index"]


class Regression(Task):
    final_splits = ("valid",)

    def __init__(self, nan_at=None):
        self.nan_at = nan_at

    def init_model(self, rng):
        return nnx.Linear(3, 1, rngs=nnx.Rngs(params=rng))

    def train_data(self):
        return Stream(self.nan_at)

    def loss_fn(self, model, batch, carry, rng):
        # Dropout on the input makes every replica's loss depend on its own step key.
        keep = jax.random.bernoulli(rng, 0.9, batch["x"].shape)
        pred = model(jnp.where(keep, batch["x"] / 0.9, 0.0))[:, 0]
        return jnp.mean((pred - batch["y"]) ** 2), (carry, {})

    def eval_data(self, split):
        return Stream(batches=2)

    def eval_batch_size(self, split):
        return 8

    def eval_step(self, model, batch, carry):
        se = jnp.sum((model(batch["x"])[:, 0] - batch["y"]) ** 2)
        return carry, {"se": se, "n": jnp.asarray(batch["y"].size, jnp.float32)}

    def eval_metrics(self, sums):
        return {"loss": sums["se"] / sums["n"]}


def _config(**overrides):
    config = cfg.base_config()
    config.model.hidden_size = 1
    config.train.num_steps = 20
    config.train.batch_size = 8
    config.train.log_every = 5
    config.train.eval_every = 5
    config.train.checkpoint_every = 5
    config.optimizer.learning_rate = 0.05
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    config_checks.validate(config)
    return config


class MissingData(Regression):
    def train_data(self):
        raise FileNotFoundError("no such corpus")


def test_the_package_lists_and_resolves_its_lazy_exports():
    import rnn_jax.train as train

    names = {"DataSource", "NonFiniteError", "Task", "base_config", "select_variant"}
    assert names | {"train_and_evaluate", "validate", "loop"} <= set(dir(train))
    assert train.select_variant is cfg.select_variant
    with pytest.raises(AttributeError, match="module 'rnn_jax.train' has no attribute 'Tsak'"):
        train.Tsak  # noqa: B018


def test_a_run_whose_data_cannot_be_read_leaves_no_run_directory(tmp_path):
    # The Checkpointer made W/checkpoints and W/best before the data was read: a refused run
    # left them behind, empty, where the runtime promises the directory as it was; and the
    # missing folders above the run directory it made on the way.
    with pytest.raises(FileNotFoundError, match="no such corpus"):
        train_and_evaluate(_config(), tmp_path / "runs" / "lm" / "run", MissingData())
    assert list(tmp_path.iterdir()) == []


def test_nan_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Batch index 6 is step 7; checkpoints every 5 steps; the host checks at step 10.
    # Under 'stop' the bad step's update was applied (steps 8-10 ran on from it): the message
    # said "the update was not applied", which holds only under 'skip'.
    with pytest.raises(
        NonFiniteError,
        match=r"at step 7 .*; the run stops and saves nothing from step 7 on\. Last good "
        r"checkpoint: step 5",
    ):
        train_and_evaluate(_config(), tmp_path, Regression(nan_at=6))
    checkpointer = Checkpointer(tmp_path, max_to_keep=2)
    assert checkpointer.latest_step() == 5
    assert not (tmp_path / "results.json").exists()
    # The checkpoint restores to finite params (the abstract target from a clean run's shapes).
    clean = tmp_path / "clean"
    train_and_evaluate(_config(train__num_steps=5), clean, Regression())
    reference = Checkpointer(clean, max_to_keep=2)
    state, loop = reference.restore(_abstract(reference))
    restored, _ = checkpointer.restore(_abstract(reference))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored["params"]))
    # Steps 1..5 saw the same data and keys in both runs: identical params.
    for a, b in zip(
        jax.tree.leaves(restored["params"]), jax.tree.leaves(state["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert loop["data"] == {"epoch": 0, "index": 5}


def test_a_resumed_run_drops_the_records_of_steps_after_its_checkpoint(tmp_path):
    """The failed attempt logged step 6 after its checkpoint of step 5; resumed with 5 steps,
    the run never takes step 6: its record stayed in the curves beside the final step 5 (a
    validation loss better than the reported best, from a step never taken)."""
    with pytest.raises(NonFiniteError, match="Last good checkpoint: step 5"):
        train_and_evaluate(_config(train__log_every=1), tmp_path, Regression(nan_at=6))
    assert max(r["step"] for r in metrics.read_metrics(tmp_path / "metrics.jsonl")) == 6
    train_and_evaluate(_config(train__num_steps=5, train__log_every=1), tmp_path, Regression())
    steps = [r["step"] for r in metrics.read_metrics(tmp_path / "metrics.jsonl")]
    assert steps[0] == 1 and max(steps) == 5
    # TensorBoard hides the events of steps >= 6 (a purge in the resumed run's event file)
    from tensorboardX.proto import event_pb2

    purges = [
        event.step
        for event in tensorboard_events(tmp_path / "tensorboard")
        if event.session_log.status == event_pb2.SessionLog.START
    ]
    assert purges == [6]


def tensorboard_events(folder):
    """The events of `folder`'s TensorBoard event files, file by file in name order."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecords: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", data[i : i + 8])
            events.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + n]))
            i += 16 + n
    return events


def _abstract(checkpointer):
    import orbax.checkpoint as ocp

    step = checkpointer.latest_step()
    meta = checkpointer.latest.item_metadata(step)["state"]
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
        meta,
        is_leaf=lambda m: isinstance(m, ocp.metadata.ArrayMetadata),
    )


def test_nan_with_skip_drops_the_update_and_goes_on(tmp_path):
    # 22 steps, logs and evaluations every 5: the last step (22) is logged and evaluated too.
    config = _config(train__nonfinite="skip", train__num_steps=22)
    results = train_and_evaluate(config, tmp_path, Regression(nan_at=6))
    assert results["final"]["step"] == 22
    evals = dict(metrics.metric_series(tmp_path / "metrics.jsonl", "valid_loss"))
    # Training went on after the NaN (step 7): every later evaluation improves. (The final
    # loss below the first evaluation's held with no update applied after step 6 at all.)
    assert evals[10] > evals[15] > evals[20]
    assert sorted(evals) == [5, 10, 15, 20, 22] and evals[22] == results["final"]["valid_loss"]
    train = dict(metrics.metric_series(tmp_path / "metrics.jsonl", "train_loss"))
    assert sorted(train) == [5, 10, 15, 20, 22] and train[22] == results["final"]["train_loss"]


def test_seed_replicas_equal_single_seed_runs(tmp_path):
    together = train_and_evaluate(
        _config(num_seeds=2, seed=3), tmp_path / "together", Regression()
    )["final"]
    alone = train_and_evaluate(_config(seed=4), tmp_path / "alone", Regression())["final"]
    assert together["per_seed"]["train_loss"][1] == pytest.approx(alone["train_loss"], rel=1e-5)
    assert together["per_seed"]["valid_loss"][1] == pytest.approx(alone["valid_loss"], rel=1e-5)
    losses = together["per_seed"]["train_loss"]
    assert losses[0] != losses[1]  # different seeds, different runs
    assert together["train_loss"] == pytest.approx(np.mean(losses))
    assert together["train_loss_std"] == pytest.approx(np.std(losses))
    logged = [json.loads(line) for line in (tmp_path / "together" / "metrics.jsonl").open()]
    assert all(len(r["train_loss_per_seed"]) == 2 for r in logged if "train_loss" in r)


class _WithTest(Regression):
    final_splits = ("valid", "test")  # the test split's batches are valid's (Stream)


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    # 'max' mode on a loss that only falls: every evaluation after the first is worse.
    config = _config(train__best_mode="max", train__patience=2, train__num_steps=50)
    results = train_and_evaluate(config, tmp_path, _WithTest())
    assert results["final"]["best_step"] == 5
    assert results["final"]["step"] == 15  # evaluations at 10 and 15 did not improve
    assert Checkpointer(tmp_path, max_to_keep=2).latest_step(best=True) == 5
    # The final evaluation scores the best checkpoint (step 5), not the last params (step 15).
    evals = dict(metrics.metric_series(tmp_path / "metrics.jsonl", "valid_loss"))
    assert sorted(evals) == [5, 10, 15] and evals[5] > evals[15]
    assert results["final"]["valid_loss"] == pytest.approx(evals[5], rel=1e-6)
    # Test is evaluated at the end only (eval_splits during training, then final_splits).
    assert results["final"]["test_loss"] == results["final"]["valid_loss"]
    records = list(map(json.loads, (tmp_path / "metrics.jsonl").open()))
    assert [r["step"] for r in records if "test_loss" in r or "final_test_loss" in r] == [15]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_is_the_replica_mean_a_tie_is_no_improvement_and_patience_counts_in_a_row(mode):
    # Two replicas; their means 2, 2, 1, 1.5, 1 (negated under 'max'). The tie at step 10
    # counts toward patience (docs/design.md), the improvement at 15 starts the count afresh,
    # and the tie at 25 is the second evaluation in a row without improvement: stop there.
    sign = 1.0 if mode == "min" else -1.0
    pairs = [[3.0, 1.0], [1.0, 3.0], [0.0, 2.0], [2.5, 0.5], [1.0, 1.0]]
    config = _config(train__best_mode=mode, train__patience=2)
    loop = {"best_value": None, "best_step": None, "bad_evals": 0}
    outcomes = [
        track_best(loop, step, {"valid_loss": [sign * v for v in pair]}, config, 2)
        for step, pair in zip((5, 10, 15, 20, 25), pairs, strict=True)
    ]
    assert outcomes == [(True, False), (False, False), (True, False), (False, False), (False, True)]
    assert loop["best_step"] == 15 and loop["best_value"] == sign * 1.0


_CHECKPOINTER = types.SimpleNamespace(
    latest_step=lambda: None, latest=types.SimpleNamespace(directory="W/checkpoints")
)


def _first_stop(finite_per_step, max_in_a_row, counted=0):
    """The step (1-based) at which the host check raises for these per-step `finite` flags
    (one list of per-replica flags per step), or None; `counted` is the loop record's count."""
    n = len(finite_per_step[0])
    config = _config(
        num_seeds=n, train__nonfinite="skip", train__max_consecutive_nonfinite=max_in_a_row
    )
    loop = {"consecutive_nonfinite": counted}
    for step, flags in enumerate(finite_per_step, 1):
        finite = np.asarray(flags, bool)
        m = {
            "finite": finite,
            "update_finite": np.ones(n, bool),
            "loss": np.where(finite, 1.0, np.nan),
            "grad_norm": np.where(finite, 1.0, np.nan),
        }
        try:
            check_finite(step, m, config, loop, _CHECKPOINTER)
        except NonFiniteError as error:
            return step, str(error)
    return None, None


def test_skip_counts_non_finite_steps_in_a_row_per_replica():
    # Replica 0 fails at odd steps and replica 1 at even ones up to step 8, then replica 1
    # three times in a row (steps 10-12). With max 2 in a row a single-seed run of seed + 1
    # stops at step 12 and one of seed + 0 never; the run of both used to stop at step 3 (a
    # third step in a row where *any* replica failed), although no replica had two in a row.
    steps = [[s % 2 == 0, s % 2 == 1] for s in range(1, 9)] + [[True, True]]
    steps += [[True, False]] * 3
    alone = [_first_stop([[flags[i]] for flags in steps], 2)[0] for i in range(2)]
    assert alone == [None, 12]
    step, message = _first_stop(steps, 2)
    assert step == 12  # where the first single-seed run stops
    assert "replicas [1] had more than train.max_consecutive_nonfinite=2" in message
    assert "; the update was not applied. Last good checkpoint: none yet" in message
    # A count stored by an older checkpoint (an int, any replica) goes on for each replica.
    assert _first_stop([[True, False]], 2, counted=2)[0] == 1
    assert _first_stop([[True, True], [True, False]] * 3, 2, counted=2)[0] is None


class _ReportFailed(Exception):
    pass


def _fail(results):
    raise _ReportFailed


def test_early_stopped_run_resumed_rerun_or_extended_ends_as_one_trained_straight(tmp_path):
    # 'max' mode on a falling loss: the run stops at step 15 (best 5, patience 2). A report
    # that fails leaves the run unfinished; the rerun must finish it, not train on.
    config = _config(train__best_mode="max", train__patience=2, train__num_steps=50)
    reference = train_and_evaluate(config, tmp_path / "a", Regression())["final"]
    assert reference["step"] == 15
    with pytest.raises(_ReportFailed):
        train_and_evaluate(config, tmp_path / "b", Regression(), before_done=_fail)
    # Its best checkpoint damaged before the rerun restores it at the end: a traceback (a
    # ValueError, exit 1), where a damaged checkpoint at the start is one line (exit 2).
    best = tmp_path / "b" / "best" / "5"
    (best / "loop").rename(tmp_path / "loop")
    with pytest.raises(cfg.ConfigError, match=r"^cannot finish the run in .*best/5 is damaged: "):
        train_and_evaluate(config, tmp_path / "b", Regression())
    assert (tmp_path / "b" / "checkpoints" / "15").is_dir() and best.is_dir()
    assert not (tmp_path / "b" / "results.json").exists()
    (tmp_path / "loop").rename(best / "loop")
    # That folder removed instead (the fallback the message offers), the scores are of the
    # state the run ended with: results name no best step, not step 5's model they are not of.
    shutil.copytree(tmp_path / "b", tmp_path / "b_removed")
    shutil.rmtree(tmp_path / "b_removed" / "best" / "5")
    fallback = train_and_evaluate(config, tmp_path / "b_removed", Regression())["final"]
    assert fallback["best_step"] is None and fallback["step"] == 15
    assert fallback["valid_loss"] != reference["valid_loss"]
    results = train_and_evaluate(config, tmp_path / "b", Regression())
    assert results["timing"]["resumed_from_step"] == 15
    assert results["timing"]["steps_run"] == 0
    # It trained none, and says so; the numbers of the invocation that trained the 15 steps
    # (before its report failed) come with it, named as that invocation's.
    earlier = results["timing"]["earlier_invocation"]
    assert earlier["steps_run"] == 15 and earlier["resumed_from_step"] == 0
    assert earlier["steps_per_s"] > 0 and earlier["hostname"]
    # Reports of the run's speed read that invocation's rates (`metrics.training_rates`).
    assert metrics.training_rates(results["timing"]) == {
        "steps_per_s": earlier["steps_per_s"],
        "tokens_per_s": earlier["tokens_per_s"],
        "earlier_invocation": True,
    }
    assert results["final"] == reference
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert max(steps) == 15
    # A rerun of the finished run "a" keeps its record: it was rewritten with steps_run 0 and
    # no rates (and a second final record in metrics.jsonl). Its reports are written again.
    files = {path: path.read_bytes() for path in (tmp_path / "a").iterdir() if path.is_file()}
    recorded = json.loads((tmp_path / "a" / "results.json").read_text())
    assert recorded["timing"]["steps_run"] == 15
    assert metrics.training_rates(recorded["timing"])["steps_per_s"] > 0
    reported = []
    rerun = train_and_evaluate(config, tmp_path / "a", Regression(), before_done=reported.append)
    assert rerun == recorded and reported == [recorded]
    assert {path: path.read_bytes() for path in files} == files
    # A run of 3 steps extended to 50 ends as "a" did. Its last step's evaluation (off the
    # eval_every=5 schedule, the best in 'max' mode) stayed in the loop state and W/best: the
    # extension kept step 3 as its best and stopped at 10 (evaluations 5 and 10 not better).
    short = _config(train__best_mode="max", train__patience=2, train__num_steps=3)
    assert train_and_evaluate(short, tmp_path / "c", Regression())["final"]["best_step"] == 3
    assert train_and_evaluate(config, tmp_path / "c", Regression())["final"] == reference
    assert Checkpointer(tmp_path / "c", 2, read_only=True).best.all_steps() == [5]
    # Its curves too: step 3's log of the open window, its evaluation and its final_* record
    # stayed in metrics.jsonl and the event files of the extended run.
    assert metrics.read_metrics(tmp_path / "c" / "metrics.jsonl") == metrics.read_metrics(
        tmp_path / "a" / "metrics.jsonl"
    )
    assert tensorboard_scalars(tmp_path / "c") == tensorboard_scalars(tmp_path / "a")


def tensorboard_scalars(workdir):
    """`{tag: {step: value}}` of a run's event files as TensorBoard shows them: a purge (a
    START session log at step p) hides the events at steps >= p read before it."""
    scalars = {}
    for event in tensorboard_events(workdir / "tensorboard"):
        if event.HasField("session_log") and event.session_log.status == 1:  # START
            scalars = {
                t: {s: v for s, v in c.items() if s < event.step} for t, c in scalars.items()
            }
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return {tag: curve for tag, curve in scalars.items() if curve}


def test_training_rates_without_a_measured_rate_anywhere_are_none():
    # An invocation that trained one step measured no rate, nor did a rerun that only
    # finished from a checkpoint of before session 37 (no saved timing): None, not a guess.
    # Nor is a rate from an earlier invocation flagged where none was measured: the flag
    # said True after one trained step, and a report marked the missing rate as measured.
    one_step = {"steps_run": 1, "steps_per_s": None, "tokens_per_s": None}
    old_checkpoint = {"steps_run": 0, "steps_per_s": None, "earlier_invocation": None}
    after_one_step = {"steps_run": 0, "steps_per_s": None, "earlier_invocation": one_step}
    for timing in (one_step, old_checkpoint, after_one_step):
        assert metrics.training_rates(timing) == {
            "steps_per_s": None,
            "tokens_per_s": None,
            "earlier_invocation": False,
        }


class _SavedCheckpoint:
    """A Checkpointer holding one periodic checkpoint: step 15 with loop record `loop`."""

    def __init__(self, loop):
        self.loop = loop

    def restore(self, abstract_state):
        return abstract_state, json.loads(json.dumps(self.loop))

    def latest_step(self):
        return 15


def test_an_early_stop_resumed_from_its_ongoing_loop_state_keeps_the_saved_timing(tmp_path):
    # An early stop at step 15 off the log schedule logged its open window there (`end_run`),
    # so its checkpoint's loop record keeps the state before as `ongoing`, which a resume that
    # may train on takes. The rerun that only finishes it (its report failed) lost the saved
    # timing with the rest of the record: `earlier_invocation` None, the 15 steps' rates gone.
    timing = {"steps_run": 15, "steps_per_s": 30.0, "resumed_from_step": 0, "hostname": "h"}
    ongoing = {"window": {"loss": [1.0]}, "window_steps": [3], "best_step": 5, "bad_evals": 2}
    saved = {**ongoing, "window": {}, "window_steps": 0, "last_train": {"train_loss": [1.0]}}
    saved.update(ongoing=ongoing, data={"epoch": 1, "index": 7}, timing=timing)
    config = _config(train__patience=2, train__num_steps=50)
    _, loop, start, end, data = resume(_SavedCheckpoint(saved), {}, config, tmp_path, Regression())
    assert (start, end) == (15, 15)  # it finishes the run, from the state before the extras
    assert loop["window"] == {"loss": [1.0]} and "ongoing" not in loop
    assert loop["timing"] == timing and "data" not in loop
    assert data.state_dict() == {"epoch": 1, "index": 7}


def test_logged_learning_rate_is_the_one_the_step_applied(tmp_path):
    # Warmup from 0 over 4 updates, lr 0.05: optax's first update (count 0) uses rate 0, so
    # steps 1..5 apply 0, 0.0125, 0.025, 0.0375, 0.05 (the rate of step s+1 was logged
    # before). 5 steps: a warm-up as long as the run is refused (config_checks.validate).
    config = _config(
        optimizer__name="sgd",
        schedule__warmup_steps=4,
        train__num_steps=5,
        train__log_every=1,
    )
    train_and_evaluate(config, tmp_path, Regression())
    logged = [
        r["learning_rate"]
        for r in map(json.loads, (tmp_path / "metrics.jsonl").open())
        if "learning_rate" in r
    ]
    assert logged == pytest.approx([0.0, 0.0125, 0.025, 0.0375, 0.05])


def _logged_rates(workdir):
    records = map(json.loads, (workdir / "metrics.jsonl").open())
    return [r["learning_rate"] for r in records if "learning_rate" in r]


def test_logged_learning_rate_follows_skipped_steps_and_plateau_cuts(tmp_path):
    # It was schedule((step - 1) // k), from the step number alone. (1) A step decay halving
    # every update, step 2 non-finite and skipped under 'skip': updates 0, 1, 2, 3 are steps
    # 1, 3, 4, 5, and step 2 applied nothing (the last applied rate, 0.05, is logged there).
    # Logged before: 0.05, 0.025, 0.0125, 0.00625, 0.003125.
    skip = _config(
        optimizer__name="sgd",
        schedule__name="step_decay",
        schedule__decay_rate=0.5,
        schedule__decay_every_steps=1,
        schedule__decay_begin_step=0,
        train__num_steps=5,
        train__log_every=1,
        train__nonfinite="skip",
    )
    train_and_evaluate(skip, tmp_path / "skip", Regression(nan_at=1))
    assert _logged_rates(tmp_path / "skip") == pytest.approx([0.05, 0.05, 0.025, 0.0125, 0.00625])
    # (2) Reduce-on-plateau with a learning rate too small to improve the loss by rtol=50%:
    # from the second update on every update is a plateau, and patience 1 halves the scale at
    # each. Logged before: 1e-9 at every step (the constant schedule alone).
    plateau = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=1e-9,
        schedule__name="plateau",
        schedule__plateau_patience=1,
        schedule__plateau_rtol=0.5,
        train__num_steps=4,
        train__log_every=1,
    )
    train_and_evaluate(plateau, tmp_path / "plateau", Regression())
    assert _logged_rates(tmp_path / "plateau") == pytest.approx([1e-9, 5e-10, 2.5e-10, 1.25e-10])


def test_batch_not_divisible_by_the_devices_exits_2_naming_it_and_writes_nothing(tmp_path):
    # 16 fake devices: the smoke variant's batches of 8 cannot be split; a config error
    # (exit 2, one line), not a traceback (exit 1).
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=16"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.language_model",
            f"--workdir={tmp_path / 'run'}",
            "--config=experiments/configs/language_model.py:smoke",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "must be a multiple of the device count (16)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_skipped_non_finite_step_stays_out_of_the_logged_window_means(tmp_path):
    # Batch index 7 (step 8) holds a NaN; 'skip' drops that update. The window 6..10 must
    # average the four applied steps (per replica), not turn NaN with the skipped one.
    import numpy as np

    def records(log_every, workdir):
        config = _config(
            train__nonfinite="skip",
            num_seeds=2,
            train__num_steps=10,
            train__log_every=log_every,
        )
        results = train_and_evaluate(config, workdir, Regression(nan_at=7))
        rows = map(json.loads, (workdir / "metrics.jsonl").open())
        return results, {r["step"]: r for r in rows if "train_loss" in r}

    per_step = records(1, tmp_path / "every_step")[1]
    results, windows = records(5, tmp_path / "windows")
    assert np.isnan(per_step[8]["train_loss"])  # a window of only the skipped step
    assert np.isnan(per_step[8]["grad_norm_max"])
    applied = (6, 7, 9, 10)
    want = np.mean([per_step[s]["train_loss_per_seed"] for s in applied], axis=0)
    np.testing.assert_allclose(windows[10]["train_loss_per_seed"], want, rtol=1e-12)
    # grad_norm: the window's mean; grad_norm_max: its maximum (per replica).
    norms = [per_step[s]["grad_norm_per_seed"] for s in applied]
    np.testing.assert_allclose(windows[10]["grad_norm_per_seed"], np.mean(norms, 0), rtol=1e-12)
    np.testing.assert_allclose(windows[10]["grad_norm_max_per_seed"], np.max(norms, 0), rtol=1e-12)
    # Every replica's learning rate is logged, and their mean.
    rates = [r["learning_rate_per_seed"] for r in per_step.values()]
    assert len(rates) == 10 and all(len(r) == 2 for r in rates)
    assert [r["learning_rate"] for r in per_step.values()] == pytest.approx(np.mean(rates, 1))
    assert results["final"]["per_seed"]["train_loss"] == pytest.approx(list(want), rel=1e-12)
    assert np.isfinite(results["final"]["grad_norm"])


def test_a_logged_pair_is_the_ratio_of_its_window_sums_per_replica():
    """A `(numerator, denominator)` pair of `loss_fn`'s logs is logged as the ratio of its
    sums over the window's applied steps, per replica (e.g. the NLL per token over the
    window, not a mean of per-batch ratios); the open window survives a checkpoint's JSON
    record; a replica whose denominators sum to 0 logs NaN."""
    loop = {"window": {}, "window_steps": 0}
    steps = [  # (applied per replica, (numerators [2], denominators [2]))
        ([True, True], ([6.0, 0.0], [2.0, 0.0])),
        ([False, True], ([np.nan, 0.0], [5.0, 0.0])),  # replica 0's update skipped
        ([True, True], ([8.0, 0.0], [8.0, 0.0])),
    ]
    for i, (applied, (top, bottom)) in enumerate(steps):
        pair = (np.array(top), np.array(bottom))
        m = {"finite": np.array(applied), "loss": np.ones(2), "nll_per_token": pair}
        accumulate(loop, m)
        if i == 0:
            loop = json.loads(json.dumps(loop))  # resumed from a checkpoint's loop record
    logged = close_window(loop)
    assert logged["nll_per_token_per_seed"][0] == pytest.approx(14 / 10)  # not (3 + 1) / 2
    assert np.isnan(logged["nll_per_token_per_seed"][1])
    assert logged["train_loss_per_seed"] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ((np.ones(2), np.ones(2), np.ones(2)), "as a tuple of 3"),
        ([np.ones(2), np.ones(2)], r"with shape \(2, 2\)"),
        ((np.ones(2), np.ones((2, 3))), r"with shape \(2, 3\)"),
        (np.ones((2, 4)), r"with shape \(2, 4\)"),
    ],
)
def test_a_logged_value_neither_a_scalar_nor_a_pair_is_named(value, what):
    # A tuple of three was "too many values to unpack", a list of two "only 0-dimensional
    # arrays can be converted to Python scalars": neither named the value or the contract.
    m = {"finite": np.array([True, True]), "loss": np.ones(2), "nll": value}
    with pytest.raises(ValueError, match=rf"^Task.loss_fn logged 'nll' {what}.*: one scalar per"):
        accumulate({"window": {}, "window_steps": 0}, m)


def test_restore_model_from_a_missing_run_directory_creates_nothing(tmp_path):

    with pytest.raises(ValueError, match="no checkpoint in"):
        restore_model(_config(), tmp_path / "typo" / "run", Regression())
    assert not (tmp_path / "typo").exists()


def test_an_early_stop_logs_its_last_partial_window(tmp_path):
    # Evaluations every 5 steps, logs every 20: the run stops at step 15 (best 5, patience 2)
    # before its first log. It used to crash building `final` (no train window logged: None)
    # and, with an earlier log, report a train_loss that left out the last steps.
    config = _config(
        train__best_mode="max", train__patience=2, train__num_steps=50, train__log_every=20
    )
    results = train_and_evaluate(config, tmp_path / "a", Regression())
    assert results["final"]["step"] == 15
    every = _config(
        train__best_mode="max", train__patience=2, train__num_steps=50, train__log_every=1
    )
    train_and_evaluate(every, tmp_path / "b", Regression())
    per_step = [
        r["train_loss"]
        for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").open())
        if "train_loss" in r
    ]
    assert len(per_step) == 15
    assert results["final"]["train_loss"] == pytest.approx(sum(per_step) / 15, rel=1e-6)


def _reference_params(seed, steps, k, nan_at, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One seed's run written out by hand in float64 numpy: its own init and dropout keys,
    Adam applied to the mean gradient of every k micro-batches (optax.MultiSteps), and the
    non-finite micro-batch left out (as if it were not in the stream). Returns (w [3], b)."""
    base = jax.random.PRNGKey(seed)
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(params=jax.random.fold_in(base, 0)))
    w = np.asarray(model.kernel.value, np.float64)[:, 0]
    b = float(model.bias.value[0])
    mu, nu, count, acc, micro = np.zeros(4), np.zeros(4), 0, np.zeros(4), 0
    batches = iter(Stream(nan_at))
    for step in range(1, steps + 1):
        batch = next(batches)
        rng = jax.random.fold_in(jax.random.fold_in(base, 1), step)
        keep = np.asarray(jax.random.bernoulli(rng, 0.9, batch["x"].shape))
        x = np.where(keep, batch["x"].astype(np.float64) / 0.9, 0.0)
        err = x @ w + b - batch["y"]
        if not np.all(np.isfinite(err)):
            continue  # skipped: no update, no accumulation
        grad = np.append(2 * x.T @ err, 2 * err.sum()) / err.size  # d mean(err^2) / d(w, b)
        acc, micro = acc + grad, micro + 1
        if micro == k:
            g, acc, micro, count = acc / k, np.zeros(4), 0, count + 1
            mu, nu = b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g**2
            update = lr * (mu / (1 - b1**count)) / (np.sqrt(nu / (1 - b2**count)) + eps)
            w, b = w - update[:3], b - update[3]
    return w, b


class _UnevenTokens(Regression):
    """Micro-batch 3 (index 2) is NaN; the first batch counts 100 tokens, every later one 1
    (the real tokens of a padded task differ between batches)."""

    def __init__(self):
        super().__init__(nan_at=2)
        self.calls = 0

    def tokens_in(self, batch):
        self.calls += 1
        return 100 if self.calls == 1 else 1


@pytest.fixture(scope="module")
def accumulated_run(tmp_path_factory):
    """Two replicas (seeds 3 and 4), an update every 2 micro-batches, micro-batch 3 skipped,
    6 steps; a clock that ticks 1 s per reading: the run starts at 0, its first step
    (compilation) ends at 1, the checkpoint of its last step is saved at 2 (with the timing so
    far), and the training ends at 3."""
    ticks = iter(range(100))
    clock = types.SimpleNamespace(perf_counter=lambda: next(ticks))
    config = _config(
        num_seeds=2,
        seed=3,
        train__grad_accum_steps=2,
        train__nonfinite="skip",
        train__num_steps=6,
        train__log_every=6,
        train__eval_every=6,
        train__checkpoint_every=6,
        train__keep_best=False,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_lib, "time", clock)
        return train_and_evaluate(config, tmp_path_factory.mktemp("run"), _UnevenTokens())


def test_seed_replicas_with_accumulation_and_a_skipped_step_match_a_hand_written_loop(
    accumulated_run,
):
    # Each replica equals its own single-seed optax loop that never saw the NaN batch:
    # validation MSE of the hand-written loop's params, in float64 numpy.
    per_seed = accumulated_run["final"]["per_seed"]["valid_loss"]
    eval_batches = list(Stream(batches=2))
    x = np.concatenate([b["x"] for b in eval_batches]).astype(np.float64)
    y = np.concatenate([b["y"] for b in eval_batches]).astype(np.float64)
    for i in range(2):
        w, b = _reference_params(3 + i, 6, 2, nan_at=2, lr=0.05)
        assert per_seed[i] == pytest.approx(np.mean((x @ w + b - y) ** 2), rel=1e-5)
    assert per_seed[0] != per_seed[1]  # independent replicas


def test_tokens_per_s_counts_the_tokens_of_the_timed_steps(accumulated_run):
    # Steps 2..6 took 2 s and held 5 tokens: 2.5 tokens/s (the runtime scaled all 105 tokens
    # by 5/6 and reported 87.5 for 1 s).
    timing = accumulated_run["timing"]
    assert timing["compile_s"] == 1
    assert timing["steps_per_s"] == 2.5
    assert timing["tokens_per_s"] == 2.5


class _UnevenEval(Task):
    """Two eval batches of 2 rows, the second's last row filler (weight 0); the summed errors
    of replicas 0 and 1 are 2 and 4 in the first batch, 3 and 4 in the second."""

    def eval_batch_size(self, split):
        return 2

    def eval_data(self, split):
        return [{"weight": np.array([1.0, 1.0])}, {"weight": np.array([1.0, 0.0])}]

    def eval_metrics(self, sums):
        return {"loss": sums["se"] / sums["n"]}


def _uneven_eval_step(params, others, batch, carry):
    n = np.asarray(batch["weight"]).sum()
    se = np.array([2.0, 4.0]) if n == 2 else np.array([3.0, 4.0])
    return carry, {"se": se, "n": np.full(2, n)}


def test_evaluation_weights_batches_by_their_counts_per_replica():
    # Sums over the split, then the metric: replica 0 (2 + 3) / 3, replica 1 (4 + 4) / 3;
    # not the mean of the batches' metrics (2 and 2.5 for replica 0; 2 and 4 for replica 1).
    state = {"params": None, "others": None}
    mesh = distributed.data_mesh()
    scores = loop_lib._evaluate(_UnevenEval(), ("valid",), state, _uneven_eval_step, mesh, 2)
    assert scores == {"valid_loss": [pytest.approx(5 / 3), pytest.approx(8 / 3)]}


def test_default_tokens_in_counts_batch_times_time_of_the_first_leaf():
    # The tokens/s of unpadded tasks (rnn_vs_attention, initialization, truncated_bptt).
    batch = {"inputs": np.zeros((4, 7), np.int32), "targets": np.zeros((4, 7), np.int32)}
    assert Task().tokens_in(batch) == 28
    # The adding problem's inputs are [batch, T, 2]: every element counted both channels (2x).
    assert Task().tokens_in(AddingProblem(length=5).batch(0, 0, 4)) == 4 * 5
    assert Task().tokens_in({"x": np.zeros((8, 3), np.float32)}) == 24  # [B, F] as before


def test_provenance_does_not_claim_a_clean_tree_when_git_cannot_tell(monkeypatch):
    """Without git (or outside a repository) `git_dirty` was False, a clean tree that nobody
    checked, beside `git_sha: None`."""

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(metrics.subprocess, "run", no_git)
    record = metrics.provenance()
    assert record["git_sha"] is None and record["git_dirty"] is None


def test_a_disabled_writer_writes_nothing_and_a_replayed_step_keeps_its_last_record(tmp_path):
    """Processes other than 0 get `enabled=False`: they create no file (with a shared workdir
    each line would be logged once per process). A resumed run logs the steps after its
    checkpoint again: `metric_series` keeps the last record of a step, per-seed list first."""
    off = metrics.MetricsWriter(tmp_path / "other", enabled=False)
    off.write(1, {"train_loss": 1.0})
    off.close()
    assert not (tmp_path / "other").exists()
    writer = metrics.MetricsWriter(tmp_path)
    writer.write(1, {"train_loss": 2.0, "train_loss_per_seed": [1.5, 2.5]})
    writer.write(2, {"train_loss": 1.0})
    writer.close()
    writer = metrics.MetricsWriter(tmp_path)  # resumed from the checkpoint of step 1
    writer.write(2, {"train_loss": 0.75})
    writer.close()
    path = tmp_path / "metrics.jsonl"
    assert metrics.metric_series(path, "train_loss") == [(1, [1.5, 2.5]), (2, 0.75)]


def test_a_resumed_writer_drops_the_records_of_its_step_it_is_told_and_keeps_the_rest(tmp_path):
    """Records of the resume step that the loop state has not seen go too (`drop_at_start`);
    TensorBoard then purges that step and gets its kept records again."""
    writer = metrics.MetricsWriter(tmp_path, start=0)
    for record in ({"train_loss": 2.0}, {"valid_loss": 3.0}, {"final_valid_loss": 3.0}):
        writer.write(4, record)
    writer.write(5, {"train_loss": 1.0})
    writer.close()
    (tmp_path / "metrics.jsonl").open("a").write("not a record\n")
    resumed = metrics.MetricsWriter(
        tmp_path, start=4, drop_at_start=lambda r: "train_loss" not in r
    )
    resumed.write(6, {"train_loss": 0.5})
    resumed.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == [
        '{"step": 4, "train_loss": 2.0}',
        "not a record",
        '{"step": 6, "train_loss": 0.5}',
    ]
    assert tensorboard_scalars(tmp_path) == {"train_loss": {4: 2.0, 6: 0.5}}


def test_a_stop_that_another_process_received_is_named_so(tmp_path, monkeypatch):
    """The processes of a multi-host run that did not get the SIGTERM learn of it through
    `distributed.any_process` alone, and exited with "stopped by None at step N" (process 0,
    whose output users read, among them)."""
    calls = []

    def another_process_stopped(flag):
        calls.append(flag)
        return len(calls) >= 3  # this process's own flag stays False

    monkeypatch.setattr(distributed, "any_process", another_process_stopped)
    with pytest.raises(SystemExit) as stopped:
        train_and_evaluate(_config(), tmp_path, Regression())
    assert str(stopped.value).startswith(
        "stopped by a signal (SIGTERM or SIGINT) to another process of the run at step 3;"
    )


def test_an_eval_batch_size_the_devices_do_not_divide_names_the_first_split_and_the_key(
    monkeypatch,
):
    """The splits were visited as a set (another split named from run to run), and the
    message named no setting to change."""
    task = types.SimpleNamespace(
        eval_splits=("valid",),
        final_splits=("valid", "test"),
        eval_batch_size=lambda split: {"valid": 6, "test": 6}[split],
    )
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(cfg.ConfigError) as error:
        check_divisible(_config(train__batch_size=8), task)
    assert str(error.value).startswith(
        "eval batch size of 'valid' (the experiment's eval batch size, e.g. "
        "data.eval_batch_size)=6: must be a multiple of the device count (4)"
    )
