"""Review tests (session 22) of the training runtime: seed replicas with gradient accumulation
and skipped non-finite steps against a hand-written loop, the throughput measurement, the
command line's `=None` overrides and `--workdir` check, and TAR over one time step."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.files import check_workdir
from rnn_jax.train import cli, regularizers, train_and_evaluate
from rnn_jax.train import loop as loop_lib
from tests.test_train_loop import Regression, Stream, _config


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
    (compilation) ends at 1, its last at 2."""
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
    # Steps 2..6 took 1 s and held 5 tokens: 5 tokens/s (the runtime scaled all 105 tokens
    # by 5/6 and reported 87.5).
    timing = accumulated_run["timing"]
    assert timing["compile_s"] == 1
    assert timing["steps_per_s"] == 5.0
    assert timing["tokens_per_s"] == 5.0


def test_an_earlier_none_override_is_overridden_by_a_later_value():
    # "The last assignment of a key wins": an earlier `=None` reached config_flags, which
    # could not parse 'None' as a float (exit 1) although the later 1.0 was meant.
    argv = [
        "prog",
        "--config.optimizer.clip_global_norm=None",
        "--config.train.num_steps=5",
        "--config.optimizer.clip_global_norm=1.0",
        "--config.optimizer.clip_value=2.0",
        "--config.optimizer.clip_value=None",
    ]
    kept, none_keys = cli._none_overrides(argv)
    assert kept == [
        "prog",
        "--config.train.num_steps=5",
        "--config.optimizer.clip_global_norm=1.0",
    ]
    assert none_keys == ["optimizer.clip_value"]


def test_a_workdir_that_is_a_file_is_a_flag_error(tmp_path):
    # `--workdir` naming a file (or a path below one) ran, compiled and then died with a
    # NotADirectoryError traceback (exit 1) at its checkpoint directory; `cli.main` exits 2
    # with this message (the ValueError path of the empty --workdir=).
    file = tmp_path / "results.json"
    file.write_text("{}")
    for workdir in (file, file / "run"):
        with pytest.raises(ValueError, match=r"--workdir=.*results.json' is a file"):
            check_workdir(str(workdir))
    with pytest.raises(ValueError, match="must name a run directory"):
        check_workdir(" ")
    check_workdir(str(tmp_path / "new" / "run"))  # to be created: fine


def test_tar_over_a_single_time_step_is_zero_not_nan():
    # data.bptt_length=1 with objective.tar_beta > 0: no consecutive pair, penalty 0 (the mean
    # over an empty axis was NaN, and the run stopped on a "non-finite loss").
    h = jnp.ones((2, 1, 3))
    assert float(regularizers.temporal_activation_regularization(h, 2.0)) == 0.0
    h2 = np.array([[[1.0, 2.0], [3.0, 0.0]]], np.float32)  # one pair: diffs (2, -2)
    assert float(regularizers.temporal_activation_regularization(jnp.asarray(h2), 0.5)) == (
        pytest.approx(0.5 * (4 + 4) / 2)
    )
