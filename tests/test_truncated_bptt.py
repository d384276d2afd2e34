"""experiments.truncated_bptt: the echo data, that its windowed training has exactly the
gradients of rnn_jax.truncated_scan.truncated_unroll (and that those cut the (t − d, t) link
exactly when the pair spans windows, against the untruncated scan.unroll), a smoke run's
outputs and answers, and config errors that name the key."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import truncated_bptt as tb
from rnn_jax import scan, truncated_scan
from rnn_jax.data import EchoTask
from rnn_jax.train import cli
from tests.report_check import assert_png

SMOKE = "experiments/configs/truncated_bptt.py:smoke"  # delay 2, length 8, hidden 8, batch 8


@pytest.fixture(scope="module")
def config():
    return cli.load_config(SMOKE, rules=tb.RULES)


def test_echo_targets_are_the_inputs_delay_steps_earlier():
    task = EchoTask(delay=3, num_symbols=5, length=12)
    batch = task.batch(seed=7, step=2, batch_size=4)
    inputs, targets, mask = batch["inputs"], batch["targets"], batch["mask"]
    assert inputs.shape == targets.shape == mask.shape == (4, 12)
    assert inputs.min() >= 0 and inputs.max() < 5 and len(np.unique(inputs)) > 1
    for row in range(4):
        for t in range(12):
            assert mask[row, t] == (1.0 if t >= 3 else 0.0)
            if t >= 3:
                assert targets[row, t] == inputs[row, t - 3]
    assert math.isclose(task.baseline_cross_entropy(), math.log(5))
    np.testing.assert_array_equal(task.batch(7, 2, 4)["inputs"], inputs)  # deterministic
    with pytest.raises(ValueError, match="length=3 must exceed delay=3"):
        EchoTask(delay=3, length=3)


def _split_model(task):
    model = task.init_model(jax.random.key(0))
    graphdef, params, others = nnx.split(model, nnx.Param, ...)
    return graphdef, params, others


def _reference_window_loss(task, graphdef, params, others, sequence, window):
    """Loss of window `window` when the whole sequence is unrolled by truncated_unroll."""
    model = nnx.merge(graphdef, params, others)
    xs = jax.nn.one_hot(sequence["inputs"], task.config.data.num_symbols)
    ys, _ = truncated_scan.truncated_unroll(
        model.rnn.cell, model.rnn.params[0], xs, task.bptt_length
    )
    logits = model.readout(ys)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, sequence["targets"])
    span = np.zeros(sequence["mask"].shape, np.float32)
    span[:, window * task.bptt_length : (window + 1) * task.bptt_length] = 1.0
    mask = sequence["mask"] * span
    return jnp.sum(nll * mask) / max(mask.sum(), 1.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bptt_length", [2, 4])
def test_windowed_training_has_truncated_unrolls_gradients(config, cell, bptt_length):
    """Window by window with the carried state, `loss_fn` gives the loss and the parameter
    gradient of that window under truncated_unroll over the whole sequence; a carry that
    was not passed on (or a gradient that crossed windows) would differ."""
    task = tb.EchoStreamTask(config, cell, bptt_length)
    graphdef, params, others = _split_model(task)
    sequence = task.data.batch(config.seed, 0, task.batch_size)
    carry = task.init_carry(task.batch_size)

    # Jitted (eager gradients of scans re-trace at every call): one compile for the windows'
    # steps, one program for every window's reference.
    @jax.jit
    def window_loss_and_grads(p, batch, carry):
        loss_of = lambda p: task.loss_fn(nnx.merge(graphdef, p, others), batch, carry, None)
        return jax.value_and_grad(loss_of, has_aux=True)(p)

    @jax.jit
    def references(p):
        return [
            jax.value_and_grad(
                lambda p, w=w: _reference_window_loss(task, graphdef, p, others, sequence, w)
            )(p)
            for w in range(task.windows)
        ]

    for window, (reference, expected) in enumerate(references(params)):
        batch = task.window(config.seed, window)
        np.testing.assert_array_equal(batch["reset"], np.full(task.batch_size, window == 0))
        (loss, (carry, _)), grads = window_loss_and_grads(params, batch, carry)
        np.testing.assert_allclose(loss, reference, rtol=1e-5, atol=1e-6)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bptt_length", [1, 2, 3, 8])  # k < d, k = d, d < k < T, k = T
def test_gradient_from_t_to_t_minus_d_is_zero_exactly_across_windows(config, bptt_length):
    """d(logit at t)/d(x_{t−d}) under truncated_unroll: exactly 0 when t − d and t are in
    different windows (always when k <= d), else equal to the untruncated gradient of
    scan.unroll, which is non-zero."""
    task = tb.EchoStreamTask(config, "lstm", 8)
    model = task.init_model(jax.random.key(1))
    cell, params, d = model.rnn.cell, model.rnn.params[0], config.data.delay
    xs = jax.random.normal(jax.random.key(2), (2, 8, config.data.num_symbols))

    def input_grad(unroll_fn, t):
        def logit(x):
            ys, _ = unroll_fn(x)
            return model.readout(ys)[:, t, 0].sum()

        return jax.grad(logit)(xs)[:, t - d]

    for t in range(d, 8):
        full = input_grad(lambda x: scan.unroll(cell, params, x), t)
        truncated = input_grad(
            lambda x: truncated_scan.truncated_unroll(cell, params, x, bptt_length), t
        )
        assert float(jnp.abs(full).max()) > 1e-6, t
        if (t - d) // bptt_length == t // bptt_length:
            np.testing.assert_allclose(truncated, full, rtol=1e-5, atol=1e-7)
        else:
            assert float(jnp.abs(truncated).max()) == 0.0, (t, bptt_length)


@pytest.fixture(scope="module")
def smoke_run(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("truncated_bptt")
    tb.run(config, workdir)
    return workdir


def test_smoke_writes_results_tables_plots_and_answers(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    bptt, clip = results["final"]["echo-d2-lstm-k4"], results["final"]["clip-elman_tanh-s1.5-none"]
    assert len(bptt["valid_accuracy"]) == 2 and all(0 <= a <= 1 for a in bptt["valid_accuracy"])
    assert bptt["temp_bytes"] > 0 and 0 < bptt["s_per_token"] < 1
    assert len(clip["max_grad_norm"]) == 2 and all(g > 0 for g in clip["max_grad_norm"])
    point = results["points"]["echo-d2-lstm-k4"]
    # T = 8, k = 4, d = 2: windows [0, 4) and [4, 8) hold pairs at t = 2, 3, 6, 7 of 6 scored
    assert point["updates"] == 5 * 2 and math.isclose(point["inside_fraction"], 4 / 6)
    table = (smoke_run / "truncated_bptt.md").read_text()
    assert sum(line.startswith("|---") for line in table.splitlines()) == 2
    assert "| lstm | 4 | 10 | 0.67 |" in table
    assert_png(smoke_run / "truncated_bptt.png")
    assert_png(smoke_run / "clipping.png")
    answers = tb.answers(smoke_run)
    assert set(answers) == {11, 13}
    assert "chance accuracy 0.125" in answers[13] and "seeds diverged" in answers[11]


def test_step_memory_grows_with_the_window(config, smoke_run):
    """XLA keeps each window's activations for the backward pass: more temp memory for a
    longer window (the cost half of Q13, as `step_cost` measures it; k = 4 from the smoke run,
    k = 8 here)."""
    results = json.loads((smoke_run / "results.json").read_text())
    shorter = results["final"]["echo-d2-lstm-k4"]["temp_bytes"]
    point = tb.point_config(config, 8)
    longer = tb.step_cost(point, tb.EchoStreamTask(point, "lstm", 8))["temp_bytes"]
    assert longer > shorter > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grid.bptt_lengths": "4,3"}, r"grid.bptt_lengths='4,3': 3 must divide data.length=8"),
        ({"grid.bptt_lengths": "0"}, r"grid.bptt_lengths='0': '0' must be a positive integer"),
        ({"grid.bptt_lengths": "2.5"}, r"'2.5' must be a positive integer or 'full'"),
        # str.isdigit() is true of '²' (int() then raised, not naming the key) and of '٣'
        ({"grid.bptt_lengths": "4,²"}, r"'4,²': '²' must be a positive integer or 'full'"),
        ({"grid.clip_global_norms": "none,-1"}, r"grid.clip_global_norms='none,-1': '-1'"),
        ({"grid.clip_global_norms": "1,abc"}, r"'1,abc': 'abc' must be 'none' or a number > 0"),
        # 0 in float32: clipping by it zeroed every update
        ({"grid.clip_global_norms": "1e-50"}, r"'1e-50' must be 'none' or a number > 0 \(and"),
        ({"grid.cells": "lstm,elman"}, r"grid.cells='lstm,elman': unknown \['elman'\]"),
        ({"data.length": 2}, r"data.length=2: must exceed data.delay=2"),
        ({"grid.bptt_lengths": "", "grid.clip_global_norms": ""}, "both empty"),
    ],
)
def test_bad_grid_values_fail_naming_the_key(tmp_path, overrides, message):
    config = cli.load_config(SMOKE, overrides, rules=tb.RULES)
    with pytest.raises(ValueError, match=message):
        tb.run(config, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("key, value", [("data.delay", 0), ("clipping.cell", "lstm2")])
def test_bad_config_values_are_named(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cli.load_config(SMOKE, {key: value}, rules=tb.RULES)


def test_gradient_accumulation_is_refused_naming_the_key():
    """One update per window is the question: with 2 accumulated windows per update the run
    went ahead, reporting twice the updates it made."""
    with pytest.raises(ValueError, match=r"train\.grad_accum_steps=2: must be 1 \(truncated_bptt"):
        cli.load_config(SMOKE, {"train.grad_accum_steps": 2, "train.num_steps": 6}, rules=tb.RULES)
    assert cli.load_config(SMOKE, {"train.grad_accum_steps": 1}, rules=tb.RULES)


def _clip_point(clip, losses, diverged=None):
    """A Q11 point summary (clip None: unclipped) with per-seed final losses (None: diverged)."""
    return {
        "question": 11,
        "clip": clip,
        "cell": "elman_tanh",
        "recurrent_scale": 1.5,
        "optimizer": "sgd",
        "baseline": 2.08,
        "loss": losses,
        "diverged": diverged or [False] * len(losses),
        "max_grad_norm": [5.0] * len(losses),
        "accuracy": [0.5] * len(losses),
    }


def test_clipping_answer_when_every_unclipped_seed_diverged():
    """The unclipped run's final loss is a mean over seeds that did not diverge: NaN when all
    did. Compared with `>`, NaN made the answer say clipping "did not lower the final loss"."""
    from experiments import truncated_bptt_report as report

    diverged = _clip_point(None, [None, None], [True, True])
    answer = report.answers({"a": diverged, "b": _clip_point(1.0, [1.9, 2.0])})[11]
    assert "reduced the number of diverged seeds and kept a finite final loss" in answer
    table = report.markdown({"a": diverged, "b": _clip_point(1.0, [1.9, 2.0])})
    assert "| none | 2/2 | – |" in table and "| 1 | 0/2 | 1.95 ± 0.05 |" in table
    answer = report.answers({"a": diverged, "b": _clip_point(1.0, [None, None], [True, True])})[11]
    assert "every seed diverged with and without clipping" in answer
    assert "not supported" in answer
    # Finite but at or above chance (2.08): diverged by the report's own rule, not "kept".
    at_chance = _clip_point(1.0, [2.5, 2.6], [True, True])
    answer = report.answers({"a": diverged, "b": at_chance})[11]
    assert "every seed diverged with and without clipping" in answer
    assert "not supported" in answer and "kept a finite" not in answer


def test_clipping_answer_claims_a_lower_loss_only_beyond_the_seed_spread():
    """A clipped mean below the unclipped one with overlapping seeds (0.60 ± 0.20 against
    0.65 ± 0.20) was worded "lowered the final loss"; every seed apart still is."""
    from experiments import truncated_bptt_report as report

    unclipped = _clip_point(None, [0.45, 0.85])
    answer = report.answers({"a": unclipped, "b": _clip_point(1.0, [0.40, 0.80])})[11]
    assert "did not lower the final loss beyond the seed spread" in answer
    assert "not supported" in answer
    answer = report.answers({"a": unclipped, "b": _clip_point(1.0, [0.20, 0.40])})[11]
    assert "lowered the final loss (every seed apart)" in answer
    assert "not supported" not in answer
    # One seed a side has no spread: it blamed one and called the claim "not supported".
    one = report.answers({"a": _clip_point(None, [1.9]), "b": _clip_point(1.0, [0.2])})[11]
    assert "did not lower the final loss measurably (one seed: no seed spread" in one
    assert "this run cannot test the seed's claim." in one and "not supported" not in one


def _window_point(k, accuracy, s_per_token=1e-6):
    """A Q13 point summary (d = 10, T = 80, chance 0.125) with per-seed accuracies."""
    return {
        "question": 13,
        "cell": "lstm",
        "bptt_length": k,
        "length": 80,
        "delay": 10,
        "chance_accuracy": 0.125,
        "accuracy": accuracy,
        "temp_bytes": k * 1e5,
        "s_per_token": s_per_token,
    }


def test_window_answer_places_each_short_window_on_its_side_of_chance():
    """k <= d accuracies of 0.13 (within 0.02 of chance) and 0.17 were worded "0.13–0.17,
    above chance by more than 0.02", and 0.09 "above chance" too, each followed by the
    carried-state explanation; a 4x time per token read "changed the computation per token"
    before "every k runs each step once forward and once backward"."""
    from experiments import truncated_bptt_report as report

    long = _window_point(80, [0.9, 0.9], s_per_token=4e-6)
    mixed = {"a": _window_point(5, [0.13, 0.13]), "b": _window_point(10, [0.17, 0.17]), "c": long}
    answer = report.answers(mixed)[13]
    assert "1 of 2 points above chance by more than 0.02, 1 within 0.02 of chance" in answer
    assert "does not hold exactly: the carried state" in answer  # one point above is enough
    assert "time per token was not within a factor 2 (longest vs shortest: 4x)" in answer
    assert "computation per token" not in answer
    answer = report.answers({"a": _window_point(5, [0.09, 0.09]), "c": long})[13]
    assert "below chance by more than 0.02" in answer and "carried state" not in answer
    answer = report.answers({"a": _window_point(5, [0.13, 0.12]), "c": long})[13]
    assert "at chance (within 0.02)" in answer and "carried state" not in answer
    # the same memory at every k: "did not cut the memory ... but not the computation"
    same = {**long, "temp_bytes": 5e5, "s_per_token": 1e-6}
    answer = report.answers({"a": _window_point(5, [0.13, 0.12]), "c": same})[13]
    assert "did not cut the memory of an update (longest vs shortest window: 1x) nor the " in answer


def test_window_cost_verdicts_hold_for_every_cell():
    """Truncation "cuts the memory" only when every cell's longest window uses more memory
    than its shortest, and "within a factor 2" needs every cell's time ratio: one cell's 16x
    memory (lstm) or 1x time (gru) does not speak for the other."""
    from experiments import truncated_bptt_report as report

    gru = {"cell": "gru", "temp_bytes": 5e5}
    points = {
        "a": _window_point(5, [0.13, 0.13]),
        "b": _window_point(80, [0.9, 0.9]),  # lstm: memory 16x, time 1x
        "c": {**_window_point(5, [0.13, 0.13]), **gru},
        "d": {**_window_point(80, [0.9, 0.9], s_per_token=4e-6), **gru},  # memory 1x, time 4x
    }
    answer = report.answers(points)[13]
    assert "did not cut the memory of an update (longest vs shortest window: 16x, 1x)" in answer
    assert "time per token was not within a factor 2 (longest vs shortest: 1x, 4x)" in answer


def test_q11_names_diverged_seeds_and_runs_that_learned_nothing():
    """A clipped run that lost a seed the unclipped one kept read "did not reduce the number
    of diverged seeds and lowered the final loss (every seed apart)", with no verdict; runs
    whose every seed ended finite but at or above chance were compared by their losses."""
    from experiments import truncated_bptt_report as report

    worse = report.answers(
        {
            "a": _clip_point(None, [0.9, 1.0, 1.1]),
            "b": _clip_point(1.0, [0.2, 0.3, None], [False, False, True]),
        }
    )[11]
    assert "Clipping increased the number of diverged seeds" in worse
    assert "(every finite seed apart)" in worse and "(every seed apart)" not in worse
    assert "less stable, so the seed's claim is not supported here." in worse
    nothing = report.answers(
        {
            "a": _clip_point(None, [2.5, 2.6], [True, True]),
            "b": _clip_point(1.0, [2.2, 2.3], [True, True]),
        }
    )[11]
    assert "did not help: every seed diverged with and without clipping" in nothing
    assert "lowered" not in nothing and "not supported here." in nothing


def test_q11_names_the_thresholds_a_claim_holds_at():
    """Two clipped runs: at 1 no seed diverged, at 10 all three did (the unclipped run lost
    one). "Clipping reduced the number of diverged seeds" was said of clipping in general;
    likewise "lowered the final loss" when one threshold's seeds were below and another's
    not. A claim that holds at every threshold names none."""
    from experiments import truncated_bptt_report as report

    unclipped = _clip_point(None, [0.9, None, 1.0], [False, True, False])
    answer = report.answers(
        {
            "a": unclipped,
            "b": _clip_point(1.0, [0.9, 0.95, 1.0]),
            "c": _clip_point(10.0, [None, None, None], [True, True, True]),
        }
    )[11]
    assert "Clipping reduced the number of diverged seeds (at 1; not at 10) and" in answer
    answer = report.answers(
        {
            "a": _clip_point(None, [0.9, 1.0]),
            "b": _clip_point(1.0, [0.2, 0.3]),
            "c": _clip_point(10.0, [0.85, 1.1]),
        }
    )[11]
    assert "lowered the final loss (every seed apart; at 1; not at 10)" in answer
    answer = report.answers({"a": unclipped, "b": _clip_point(1.0, [0.9, 0.95, 1.0])})[11]
    assert "Clipping reduced the number of diverged seeds and" in answer
