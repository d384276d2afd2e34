"""experiments.truncated_bptt's windows: the windowed training's gradients against an explicit
per-step loop with the carry cut at each window, the carry restarting from zero at each
sequence's first window, and schedule step counts scaled by the windows per sequence."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import truncated_bptt as tb
from rnn_jax.train import cli

TBPTT_SMOKE = "experiments/configs/truncated_bptt.py:smoke"  # d = 2, T = 8, hidden 8


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
    # log/eval/checkpoint counts are in sequences too (1, 5, 5 at smoke): unscaled, a point
    # evaluated T/k times as often per token and its curve sat at other token counts.
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
        assert point.train[key] == config.train[key] * 4, key
    assert (point.schedule.warmup_steps, point.schedule.decay_begin_step) == (8, 12)
    assert point.schedule.decay_every_steps == 20
    assert (
        point.schedule.plateau_accumulation_steps == config.schedule.plateau_accumulation_steps * 4
    )


# ---- truncated BPTT against an explicit per-step loop -------------------------------------------
def _loop_window_loss(task, model, sequence, window, truncate):
    """Mean NLL over window `window`'s scored steps, the cell stepped one time step at a time
    over the whole sequence from a zero state; with `truncate` the carry entering the window
    is a constant (stop_gradient: Williams & Peng's truncation with k1 = k2 = k), else the
    gradient runs back to step 0 (full BPTT)."""
    cell, params = model.rnn.cell, model.rnn.params[0]
    inputs, targets = sequence["inputs"], sequence["targets"]
    xs = jax.nn.one_hot(inputs, task.config.data.num_symbols)
    carry = cell.zero_carry(inputs.shape[0], task.config.model.hidden_size)
    start, stop = window * task.bptt_length, (window + 1) * task.bptt_length
    total, scored = 0.0, 0.0
    for t in range(stop):
        if t == start and truncate:
            carry = jax.tree.map(jax.lax.stop_gradient, carry)
        carry, y = cell.step(params, carry, xs[:, t])
        if t >= start:
            logp = jax.nn.log_softmax(model.readout(y))
            mask = sequence["mask"][:, t]
            total += -jnp.sum(mask * logp[np.arange(len(mask)), targets[:, t]])
            scored += float(mask.sum())
    return total / max(scored, 1.0)


def test_windowed_gradients_match_a_per_step_loop_with_the_carry_cut_at_each_window():
    """`EchoStreamTask.loss_fn`, window after window with the carry it hands on, against a
    per-step Python loop over the whole sequence that cuts the gradient at the window's first
    step: the same loss and parameter gradients. Without the cut (full BPTT) the second
    window's gradient differs, so the comparison would see a carry that kept its gradient."""
    config = cli.load_config(TBPTT_SMOKE, rules=tb.RULES)  # hidden 8, d = 2, T = 8
    task = tb.EchoStreamTask(config, "lstm", 4)  # an LSTM: the carry is a (c, h) pair
    graphdef, params, others = nnx.split(task.init_model(jax.random.key(5)), nnx.Param, ...)
    sequence = task.data.batch(config.seed, 0, task.batch_size)
    carry = task.init_carry(task.batch_size)

    @jax.jit  # one compile for both windows
    def window_grads(p, batch, carry):
        def loss_of(p):
            return task.loss_fn(nnx.merge(graphdef, p, others), batch, carry, None)

        return jax.value_and_grad(loss_of, has_aux=True)(p)

    for window in range(task.windows):
        batch = task.window(config.seed, window)
        (loss, (carry, _)), grads = window_grads(params, batch, carry)
        for truncate in (True, False):
            reference, expected = jax.value_and_grad(
                lambda p, w=window, cut=truncate: _loop_window_loss(
                    task, nnx.merge(graphdef, p, others), sequence, w, cut
                )
            )(params)
            np.testing.assert_allclose(loss, reference, rtol=1e-5)
            pairs = list(zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True))
            if truncate or window == 0:  # at window 0 there is nothing to cut
                for got, want in pairs:
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
            else:
                assert max(float(jnp.abs(g - w).max()) for g, w in pairs) > 1e-4


def test_point_summaries_keep_each_seeds_values(tmp_path, monkeypatch):
    """What `run_bptt_point` and `run_clip_point` make of the runtime's results, seed by seed
    (the runtime, the metric curves and the step cost faked: no training): per-seed values
    (not their mean), the clipping seeds' count reaching the runtime, the largest gradient
    norm of each seed's curve, a seed diverged when its loss is not finite or not below
    chance (ln 8), and the share of scored (t − d, t) pairs inside one window."""
    from experiments import grid

    config = cli.load_config(TBPTT_SMOKE, {"clipping.num_seeds": 3}, rules=tb.RULES)  # d 2, T 8
    ran = []
    per_seed = {"valid_loss": [np.nan, 2.5, 1.0], "valid_accuracy": [0.1, 0.2, 0.9]}

    def train(point, point_dir, task):
        ran.append(point)
        n = point.num_seeds
        final = {k: float(np.nanmean(v[:n])) for k, v in per_seed.items()}
        return {"final": {**final, "per_seed": {k: v[:n] for k, v in per_seed.items()}}}

    curves = {
        "grad_norm_max": np.array([[1.0, 5.0, 2.0], [3.0, np.nan, 4.0]]),  # [steps, seeds]
        "train_loss": np.ones((2, 3)),
        "valid_accuracy": np.ones((2, 2)),
    }
    monkeypatch.setattr(tb, "train_and_evaluate", train)
    monkeypatch.setattr(grid, "read_metric_curve", lambda _, key: ([1, 2], curves[key]))
    monkeypatch.setattr(tb, "step_cost", lambda *a: dict.fromkeys(("temp_bytes", "s_per_token")))
    clip = tb.run_clip_point(config, None, tmp_path)
    assert ran[-1].num_seeds == 3 and ran[-1].train.num_steps == config.train.num_steps
    assert clip["loss"] == [None, 2.5, 1.0] and clip["diverged"] == [True, True, False]
    assert clip["max_grad_norm"] == [3.0, 5.0, 4.0]
    window = tb.run_bptt_point(config, "lstm", 4, tmp_path)
    assert ran[-1].num_seeds == 2 and window["accuracy"] == [0.1, 0.2]
    # windows [0, 4) and [4, 8): pairs at t = 2, 3, 6, 7 of the 6 scored steps t >= 2
    assert window["inside_fraction"] == 4 / 6 and window["chance_accuracy"] == 1 / 8
