"""Review tests of the training runtime: resume after early stopping, logged learning rate,
exit statuses, data parallelism with clipping."""

import json

import pytest

from rnn_jax.train import train_and_evaluate
from tests.test_train_loop import Regression, _config


class _ReportFailed(Exception):
    pass


def _fail(results):
    raise _ReportFailed


def test_resuming_an_early_stopped_run_does_not_train_past_the_stop(tmp_path):
    # 'max' mode on a falling loss: the run stops at step 15 (best 5, patience 2). A report
    # that fails leaves the run unfinished; the rerun must finish it, not train on.
    config = _config(train__best_mode="max", train__patience=2, train__num_steps=50)
    reference = train_and_evaluate(config, tmp_path / "a", Regression())["final"]
    assert reference["step"] == 15
    with pytest.raises(_ReportFailed):
        train_and_evaluate(config, tmp_path / "b", Regression(), before_done=_fail)
    results = train_and_evaluate(config, tmp_path / "b", Regression())
    assert results["timing"]["resumed_from_step"] == 15
    assert results["timing"]["steps_run"] == 0
    assert results["final"] == reference
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert max(steps) == 15


def test_logged_learning_rate_is_the_one_the_step_applied(tmp_path):
    # Warmup from 0 over 4 updates, lr 0.05: optax's first update (count 0) uses rate 0, so
    # steps 1, 2, 3 apply 0, 0.0125, 0.025 (the rate of step s+1 was logged before).
    config = _config(
        optimizer__name="sgd",
        schedule__warmup_steps=4,
        train__num_steps=3,
        train__log_every=1,
    )
    train_and_evaluate(config, tmp_path, Regression())
    logged = [
        r["learning_rate"]
        for r in map(json.loads, (tmp_path / "metrics.jsonl").open())
        if "learning_rate" in r
    ]
    assert logged == pytest.approx([0.0, 0.0125, 0.025])


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
    want = np.mean([per_step[s]["train_loss_per_seed"] for s in (6, 7, 9, 10)], axis=0)
    np.testing.assert_allclose(windows[10]["train_loss_per_seed"], want, rtol=1e-12)
    assert results["final"]["per_seed"]["train_loss"] == pytest.approx(list(want), rel=1e-12)
    assert np.isfinite(results["final"]["grad_norm"])


def test_restore_model_from_a_missing_run_directory_creates_nothing(tmp_path):
    from rnn_jax.train.restore import restore_model

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
