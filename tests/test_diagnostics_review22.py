"""Review 22 of the gradient-flow diagnostics, experiments.initialization and the probes: what
the copy task's ‖∂L/∂h_t‖ measures (numpy float64 backpropagation), bad grid values refused
before any point trains, answer and report texts (no 10^nan, the inits that beat orthogonal,
the configured success fraction), and inputs the probes refused too late or not at all."""

import functools
import json

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import initialization
from experiments.configs.initialization import get_config
from rnn_jax import diagnostics, probes
from rnn_jax.models.lm import RNNLanguageModel
from rnn_jax.train import cli
from rnn_jax.train.config import ConfigError
from tests.test_initialization_experiment import answer_point

HIDDEN = 8


def test_copy_task_gradient_norms_are_those_of_the_recall_loss():
    # The copy task's loss scores a blank at every step, so ‖∂L/∂h_1‖ held step 1's own
    # loss: at init the "grad ratio" ‖∂L/∂h_1‖/‖∂L/∂h_T‖ was 10^0.05 for N(0, 0.01²) W_hh,
    # whose recall gradient underflows. Reference: numpy float64 backpropagation of the
    # recall steps' terms of the loss, g_t = ∂ℓ_t/∂h_t + (g_{t+1} ⊙ (1 − h_{t+1}²)) W_hhᵀ.
    # task.diagnostics' norms are hidden_state_grad_norms of `diagnosed_loss`
    # (test_initialization_experiment.py checks that, at these sizes, whose compiled cell init
    # this reuses); here that loss's norms against the reference, jitted: ~0.5 s, not ~3 s.
    config = get_config("smoke")
    config.model.hidden_size, config.data.num_symbols = HIDDEN, 2
    task = initialization.LongRangeTask(config, "copy", 10, "elman_tanh", "orthogonal")
    steps, s = task.steps, 2
    batch = task.eval_data("diagnostics")[0]
    xs, targets = task._inputs(batch)[:3], batch["targets"][:3]
    model = task.init_model(jax.random.key(1))
    cell, params = model.rnn.cell, model.rnn.params[0]
    got = jax.jit(
        lambda xs, targets: diagnostics.hidden_state_grad_norms(
            functools.partial(cell.step, params),
            cell.output,
            lambda hs: task.diagnosed_loss(model, hs, targets).sum(),
            cell.zero_carry((3,), HIDDEN),
            xs,
        )
    )(xs, targets)

    p = {k: np.asarray(v, np.float64) for k, v in model.rnn.params[0].items()}
    w_out = np.asarray(model.readout.kernel[...], np.float64)
    b_out = np.asarray(model.readout.bias[...], np.float64)
    x = np.asarray(xs, np.float64)
    norms = np.zeros((len(x), steps))
    for b in range(len(x)):
        h, hs = np.zeros(HIDDEN), []
        for t in range(steps):
            h = np.tanh(x[b, t] @ p["W_ih"] + p["b_ih"] + h @ p["W_hh"] + p["b_hh"])
            hs.append(h)
        g = np.zeros(HIDDEN)
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                g = (g * (1 - hs[t + 1] ** 2)) @ p["W_hh"].T
            if t >= steps - s:  # a recall step: its term of the mean cross-entropy
                logits = hs[t] @ w_out + b_out
                probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                probs[targets[b, t]] -= 1.0
                g = g + probs @ w_out.T / steps
            norms[b, t] = np.linalg.norm(g)
    np.testing.assert_allclose(got, norms, rtol=1e-4)


def test_bad_grid_values_are_refused_before_any_point_trains(tmp_path):
    # grid.lengths="10,1" trained the T=10 point, then died on the adding problem's T=1 with
    # a traceback (exit 1) that named no key, leaving an empty point directory behind.
    config = get_config("smoke")
    config.grid.lengths = "10,1"
    with pytest.raises(ConfigError, match=r"grid.lengths='10,1': adding task, T=1: .*>= 2"):
        initialization.run(config, tmp_path)
    assert not (tmp_path / "points").exists()
    # The copy task's data options are rules (exit 2 before anything runs), not a crash at
    # the first copy point.
    with pytest.raises(ValueError, match=r"data.num_symbols=0: must be an integer >= 1"):
        cli.load_config(
            "experiments/configs/initialization.py:smoke",
            {"grid.tasks": "copy", "data.num_symbols": 0},
            rules=initialization.RULES,
        )


def _point(cell, init, success, grad_ratio_log10, steps=10, success_fraction=0.1):
    return answer_point(
        cell, success, -1.0, grad_ratio_log10, steps, init=init, success_fraction=success_fraction
    )


def _answers(tmp_path, points):
    (tmp_path / "results.json").write_text(json.dumps({"points": dict(enumerate(points))}))
    return initialization.answers(tmp_path)


def test_q4_prints_no_power_of_nan_and_marks_a_point_not_run(tmp_path):
    # A diverged Elman-tanh ratio was printed "10^nan", a missing Elman-tanh point too.
    diverged = [
        _point("lstm", "orthogonal", [1.0, 1.0], -1.5),
        _point("elman_tanh", "orthogonal", [0.0, 0.0], float("nan")),
    ]
    q4 = _answers(tmp_path, diverged)[4]
    assert "nan" not in q4 and "LSTM 10^-1.5, Elman-tanh not finite;" in q4
    q4 = _answers(tmp_path, diverged[:1])[4]
    assert "nan" not in q4 and "LSTM 10^-1.5, Elman-tanh –;" in q4


def test_q19_names_the_inits_that_solved_more_often_than_orthogonal(tmp_path):
    # The IRNN solving what orthogonal did not was left out of the answer, which then said
    # "the seed's claim holds" from orthogonal's win over N(0, 1) alone.
    q19 = _answers(
        tmp_path,
        [
            _point("elman_relu", "orthogonal", [0.0, 0.0], -6.0),
            _point("elman_relu", "identity", [1.0, 1.0], -0.2),
            _point("lstm", "orthogonal", [1.0, 1.0], -1.6),
            _point("lstm", "identity", [1.0, 1.0], -1.6),
            _point("lstm", "normal_1.0", [0.0, 0.0], 15.0),
            _point("elman_relu", "normal_1.0", [0.0, 0.0], 15.0),
        ],
    )[19]
    assert "strictly better than: elman_relu: none; lstm: normal_1.0" in q19
    assert "other inits solved more often than orthogonal for elman_relu: identity." in q19


def test_report_and_answer_state_the_configured_success_fraction(tmp_path):
    # Both said "10% of the baseline" whatever diagnostics.success_fraction was.
    point = _point("lstm", "orthogonal", [1.0, 0.0], -1.6, success_fraction=0.05)
    assert "Success = final validation loss < 5% of the trivial baseline" in (
        initialization.report_markdown({"p": point})
    )
    assert "solved = seeds reaching 5% of the baseline loss" in _answers(tmp_path, [point])[19]
    # The copy task's T is its blank length; the answers said "T = 10" beside ∂h_T/∂h_1 of
    # the last of its 16 states, as the report's heading does not.
    copy = {**_point("lstm", "orthogonal", [0.0, 0.0], -1.0, steps=16), "length": 10}
    q19 = _answers(tmp_path, [{**copy, "task": "copy"}])[19]
    assert "(copy problem, T = 10, sequences of 16 steps, 2 seeds;" in q19


def test_layer_states_refuse_token_ids_outside_the_vocabulary():
    # The embedding gather clamps an id >= vocab_size to the last row: the probe read the
    # states of another word, with no error. (An abstract model: the ids are checked first.)
    model = nnx.eval_shape(lambda: RNNLanguageModel(11, 6, embed_size=4, rngs=nnx.Rngs(3)))
    for bad in (11, -1):
        with pytest.raises(ValueError, match=r"tokens holds ids in .* but vocab_size=11"):
            probes.layer_states(model, np.array([[1, bad, 2]]))


def test_control_task_refuses_class_probs_that_are_not_finite():
    # NaN or inf weights passed the checks and gave every type class 0.
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"class_probs must be finite non-negative"):
            probes.control_task(["a", "b", "c"], np.array([bad, 1.0]), seed=0)
