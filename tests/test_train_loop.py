"""`train_and_evaluate` in-process on a tiny regression task: the non-finite guard, seed
replicas under vmap, early stopping, and the contract files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.train import NonFiniteError, Task, train_and_evaluate
from rnn_jax.train import config as cfg
from rnn_jax.train.checkpoint import Checkpointer

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
    cfg.validate(config)
    return config


def test_nan_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Batch index 6 is step 7; checkpoints every 5 steps; the host checks at step 10.
    with pytest.raises(NonFiniteError, match=r"at step 7 .*Last good checkpoint: step 5"):
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
    results = train_and_evaluate(_config(train__nonfinite="skip"), tmp_path, Regression(nan_at=6))
    assert results["final"]["step"] == 20
    first_eval = next(
        json.loads(line)["valid_loss"]
        for line in (tmp_path / "metrics.jsonl").open()
        if "valid_loss" in line
    )
    assert np.isfinite(results["final"]["valid_loss"])
    assert results["final"]["valid_loss"] < first_eval  # training went on after the NaN


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


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    # 'max' mode on a loss that only falls: every evaluation after the first is worse.
    config = _config(train__best_mode="max", train__patience=2, train__num_steps=50)
    results = train_and_evaluate(config, tmp_path, Regression())
    assert results["final"]["best_step"] == 5
    assert results["final"]["step"] == 15  # evaluations at 10 and 15 did not improve
    assert Checkpointer(tmp_path, max_to_keep=2).latest_step(best=True) == 5
