"""Review 23 of exposure bias and truncated BPTT: a scheduled-sampling run does not resume
under another schedule length, and the truncated-BPTT carry restarts from zero at each
sequence's first window; the translation report names the optimiser that trained."""

import jax
import numpy as np
import pytest

from experiments import exposure_bias as eb
from experiments import exposure_bias_translation_report as translation_report
from experiments import truncated_bptt as tb
from rnn_jax.train import cli
from rnn_jax.train.config import ConfigError
from tests.test_exposure_bias_review21 import mt_point

EXPOSURE_SMOKE = "experiments/configs/exposure_bias.py:smoke"  # Markov, 20 steps
TBPTT_SMOKE = "experiments/configs/truncated_bptt.py:smoke"  # d = 2, T = 8, hidden 8


def test_a_decaying_schedule_does_not_resume_under_another_num_steps(repo_root, tmp_path):
    """`train.num_steps` may change on resume, but ε_i of a decaying schedule is fitted to it:
    a linear run of 20 steps resumed with 40 went on at ε = 0.625 after ending at 0.29 (its
    metrics.jsonl), and its summary showed the 40-step schedule. Refused before any point
    trains; the constant regimes and the same length still resume."""
    spec = str(repo_root / EXPOSURE_SMOKE)
    regimes = {"grid.regimes": "teacher_forcing,linear"}
    trained = cli.load_config(spec, {**regimes, "train.num_steps": 20}, rules=eb.RULES)
    point = tmp_path / "points" / "markov-linear"
    (point / "checkpoints" / "20").mkdir(parents=True)
    (point / "config.json").write_text(trained.to_json_best_effort())
    longer = cli.load_config(spec, {**regimes, "train.num_steps": 40}, rules=eb.RULES)
    with pytest.raises(
        ConfigError,
        match=r"train.num_steps=40: .*markov-linear holds checkpoints of the 'linear' regime "
        r"trained with train.num_steps=20",
    ):
        eb.run(longer, tmp_path)
    assert not (tmp_path / "points" / "markov-teacher_forcing").exists()  # nothing trained
    eb.check_schedule_resume(point, "teacher_forcing", 40)  # a constant: may train longer
    eb.check_schedule_resume(point, "linear", 20)  # the same schedule
    eb.check_schedule_resume(tmp_path / "points" / "markov-exponential", "exponential", 40)


def test_the_carry_restarts_from_zero_at_each_sequences_first_window():
    """Window T/k is sequence 1's first: `loss_fn` must hand the model a zero carry there,
    whatever the last window of sequence 0 handed on, and the carry it was given at every
    other window (no test covered the `reset` flag: a carry leaking across sequences changed
    no other test's numbers). A recording model in place of the RNN: no compile."""
    config = cli.load_config(TBPTT_SMOKE, rules=tb.RULES)
    task = tb.EchoStreamTask(config, "gru", 4)  # two windows per sequence
    seen = []

    def model(inputs, carry):
        seen.append(carry)
        logits = jax.numpy.zeros((*inputs.shape, config.data.num_symbols))
        return logits, [c + 1.0 for c in carry]  # "the carry after the window"

    leaked = [np.full((task.batch_size, config.model.hidden_size), 0.5, np.float32)]
    for index in range(task.windows, 2 * task.windows):  # sequence 1
        batch = task.window(config.seed, index)
        assert batch["reset"].all() == (index == task.windows)
        _, (carry, _) = task.loss_fn(model, batch, leaked, None)
        np.testing.assert_array_equal(seen[-1][0], 0.0 if index == task.windows else 0.5)
        np.testing.assert_array_equal(carry[0], seen[-1][0] + 1.0)  # handed on as it came


def test_translation_report_names_the_optimizer_that_trained(repo_root):
    """The translation report said "500 Adam steps" whatever `optimizer.name` (shared with
    the language-model points, and the translation points' optimiser) was."""
    spec = str(repo_root / EXPOSURE_SMOKE)  # translation: 10 steps of 8 pairs, lr 3e-3
    config = cli.load_config(spec, {"optimizer.name": "sgd"}, rules=eb.RULES)
    summaries = {"a": mt_point("teacher_forcing", [5.0, 5.2], [6.0, 6.1])}
    text = translation_report.report_markdown(config, summaries)
    assert "10 steps of 8 pairs, optimizer sgd (lr 0.003)" in text and "Adam" not in text


def test_translation_points_validate_the_train_keys_set_from_translation(repo_root, tmp_path):
    """`train.grad_accum_steps=4` divides the experiment's `train.num_steps=20`, which the
    command line checks, but not the translation points' 10 steps (`translation.num_steps`,
    set as their train.num_steps): their last 2 micro-batches were computed and never
    applied, without a word. Refused before the corpus is read or anything trains."""
    overrides = {"grid.corpora": "multi30k", "train.grad_accum_steps": 4, "data.root": "/nowhere"}
    config = cli.load_config(str(repo_root / EXPOSURE_SMOKE), overrides, rules=eb.RULES)
    with pytest.raises(
        ConfigError,
        match=r"translation.num_steps=10.*train.grad_accum_steps=4: must divide "
        r"train.num_steps=10",
    ):
        eb.run(config, tmp_path)
    assert not (tmp_path / "points").exists()


def test_schedule_step_counts_scale_with_the_windows_per_sequence():
    """One update per window: a warm-up of 2 sequences is 2 * T/k updates at every k, as
    train.num_steps is (it stayed 2 updates, k times shorter per token at small k)."""
    from experiments import truncated_bptt
    from experiments.configs import truncated_bptt as configs

    config = configs.get_config("smoke")
    with config.unlocked():
        config.schedule.update(warmup_steps=2, decay_begin_step=3, decay_every_steps=5)
    k = config.data.length // 4
    point = truncated_bptt.point_config(config, k)
    assert point.train.num_steps == config.train.num_steps * 4
    assert (point.schedule.warmup_steps, point.schedule.decay_begin_step) == (8, 12)
    assert point.schedule.decay_every_steps == 20
    assert (
        point.schedule.plateau_accumulation_steps == config.schedule.plateau_accumulation_steps * 4
    )
