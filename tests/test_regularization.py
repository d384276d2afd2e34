"""experiments.regularization: each grid point switches its regulariser on in the objects the
runtime builds (the model's dropout, the optimiser's decay), the depth points match the
reference parameter count, a smoke run's outputs and answers (depth and overfitting claimed
only beyond the seed spread), and config errors that name the key."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import grid
from experiments import regularization as reg
from experiments import regularization_report as report
from experiments.configs import regularization as reg_configs
from rnn_jax.models.params import count_params
from rnn_jax.train import cli, optim
from rnn_jax.train.config import ConfigError
from tests.report_check import assert_png, cell_numbers, table_rows

SMOKE = "experiments/configs/regularization.py:smoke"  # Markov language, 2 x 16, 10 steps
QUICK = "experiments/configs/regularization.py:quick"


@pytest.fixture(scope="module")
def config():
    return cli.load_config(SMOKE, rules=reg.RULES)


@pytest.fixture(scope="module")
def tasks(config):
    """One task per regulariser at the smoke size (the Markov corpus is sampled once each)."""
    return {
        name: reg.SlicedLanguageModelTask(reg.point_config(config, name, 2, 16))
        for name in reg.REGULARIZERS
    }


def test_regularizer_names_match_their_keys(config):
    assert tuple(reg._regularizer_keys(config)) == reg.REGULARIZERS
    assert reg_configs.REGULARIZERS.split(",") == list(reg.REGULARIZERS)


def _logits(model, tokens, rng):
    logits, _, _ = model(tokens, None, rng=rng)
    return logits


@pytest.mark.parametrize("name", reg.REGULARIZERS)
def test_each_point_switches_its_dropout_on_in_the_model(config, tasks, name):
    """The rates reach the built model (`rates`, the stack's own recurrent dropout and lock),
    and a training-mode pass (an rng) differs from evaluation exactly when a dropout is on."""
    model = tasks[name].init_model(jax.random.key(0))
    r = config.reg
    dropout = r.dropout if name in ("dropout", "variational") else 0.0
    for where in ("input", "between", "output"):
        assert model.rates[f"dropout_{where}"] == dropout
    assert model.rnn.dropout == dropout
    assert model.locked_dropout is (name == "variational")
    assert model.rnn.recurrent_dropout == (r.recurrent_dropout if name == "variational" else 0.0)
    assert model.rates["weight_drop"] == (r.weight_drop if name == "weight_drop" else 0.0)
    tokens = jnp.asarray(np.arange(24).reshape(2, 12) % 16, jnp.int32)
    train_mode = _logits(model, tokens, jax.random.key(3))
    stochastic = name in ("dropout", "variational", "weight_drop")
    assert bool(jnp.any(jnp.abs(train_mode - _logits(model, tokens, None)) > 1e-6)) is stochastic


@pytest.mark.parametrize("name", reg.REGULARIZERS)
def test_each_point_switches_its_weight_decay_on_in_the_optimizer(config, tasks, name):
    """One update of the optimiser the runtime builds, from a zero gradient: Adam moves
    nothing; AdamW shrinks every weight by exactly lr x wd; coupled L2 feeds wd x w to Adam,
    whose first step is lr x sign(w): every weight moves towards 0."""
    point = tasks[name].config
    tx = optim.build_optimizer(point)
    params = {"w": jnp.asarray([0.5, -2.0, 1.5])}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params, value=jnp.asarray(0.0))
    new = optax.apply_updates(params, updates)["w"]
    lr = point.optimizer.learning_rate
    if name == "weight_decay":
        assert point.optimizer.name == "adamw"
        wd = config.reg.decoupled_weight_decay
        np.testing.assert_allclose(new, params["w"] * (1 - lr * wd), rtol=1e-6)
    elif name == "l2":
        np.testing.assert_allclose(new, params["w"] - lr * jnp.sign(params["w"]), rtol=1e-4)
        # Adam's first step is lr x sign(g + wd x w) whatever wd's size, so the zero gradient
        # cannot see the rate: a gradient of -k x wd x w moves w towards 0 where k < 1 and
        # away where k > 1 only with the configured wd (a rate 10x off flips k = 0.5 or 2).
        k = jnp.asarray([0.5, 2.0, 0.5])
        grads = {"w": -k * config.reg.l2 * params["w"]}
        updates, _ = tx.update(grads, tx.init(params), params, value=jnp.asarray(0.0))
        new = optax.apply_updates(params, updates)["w"]
        want = params["w"] - lr * jnp.sign(params["w"]) * jnp.sign(1 - k)
        np.testing.assert_allclose(new, want, rtol=1e-4)
    else:
        np.testing.assert_array_equal(new, params["w"])


def test_the_slices_cut_train_and_valid_only(config, tasks):
    corpus = tasks["none"].corpus
    assert len(corpus.splits["train"]) == config.data.train_tokens
    assert len(corpus.splits["valid"]) == config.data.valid_tokens
    assert len(corpus.splits["test"]) == config.data.markov_eval_tokens  # untouched
    # The first tokens of each split: the length checks held for any window of them.
    whole = dataclasses.replace(corpus, splits={s: np.arange(5000) for s in ("train", "valid")})
    sliced = reg.sliced_corpus(config, whole).splits
    np.testing.assert_array_equal(sliced["train"], np.arange(config.data.train_tokens))
    np.testing.assert_array_equal(sliced["valid"], np.arange(config.data.valid_tokens))
    everything = config.copy_and_resolve_references()
    everything.data.train_tokens = 0  # 0: the whole split
    np.testing.assert_array_equal(
        reg.sliced_corpus(everything, whole).splits["train"], whole.splits["train"]
    )
    batch = next(iter(tasks["none"].eval_data(reg.TRAIN_EVAL)))  # the slice, as a split
    np.testing.assert_array_equal(
        batch["inputs"][0], corpus.splits["train"][: batch["inputs"].shape[1]]
    )


def _params_of(point):
    task = reg.SlicedLanguageModelTask(point)
    return count_params(nnx.eval_shape(lambda: task.init_model(jax.random.key(0))))


@pytest.mark.data
def test_depth_points_match_the_q17_models_parameter_count(data_root):
    """quick's depth points: each built model within depth.tolerance of the 2 x 128 model,
    fewer units per layer the deeper the stack."""
    config = cli.load_config(QUICK, {"data.root": str(data_root)}, rules=reg.RULES)
    sizes = reg.matched_hidden_sizes(config, 65, [1, 2, 3])
    target = _params_of(reg.point_config(config, "none", 2, 128))
    assert sizes[2] == (128, target)
    assert sizes[1][0] > 128 > sizes[3][0]
    for layers, (hidden, params) in sizes.items():
        built = _params_of(reg.point_config(config, "none", layers, hidden))
        assert built == params and abs(built - target) <= config.depth.tolerance * target


def test_grid_points_and_sweep_cover_the_same_runs(config):
    names = [point[0] for point in reg.grid_points(config)]
    assert names == ["L2-h16-none", "L2-h16-dropout"]  # the depth-2 point is Q17's none
    wide = cli.load_config(SMOKE, {"grid.depths": "1,2,3"}, rules=reg.RULES)
    sizes = reg.matched_hidden_sizes(wide, 16, [1, 3])
    swept = []
    for overrides in reg_configs.get_sweep("smoke"):
        swept += [p[0] for p in reg.grid_points(cli.load_config(SMOKE, overrides, reg.RULES))]
    assert sorted(swept) == sorted(names)
    assert sizes[1][0] > 16 > sizes[3][0]


def test_best_evaluation_is_on_the_seed_mean_and_skips_a_diverged_seed():
    """The best row: lowest mean over seeds among rows with every seed finite (not seed 0's
    own best, row 1); when a seed diverged before the first evaluation, no row qualified
    and row 0 was taken, whatever the surviving seed measured later."""
    nan, inf = np.nan, np.inf
    assert reg.best_evaluation(np.array([[3.0, 3.0], [2.0, nan], [2.5, 2.7], [2.4, 3.0]])) == 2
    assert reg.best_evaluation(np.array([[2.9, nan], [2.4, nan], [2.2, inf], [2.6, nan]])) == 2


def test_run_point_reads_every_seed_at_the_common_best_evaluation(config, tmp_path, monkeypatch):
    """The best evaluation is one row for every seed (the lowest seed mean, as the runtime's
    best_step), and the training slice is read at that row too: not each seed's own minimum,
    nor the last evaluation. The runtime and its curves are faked: no training."""
    valid = np.array([[3.0, 3.0], [2.0, 2.6], [2.5, 2.4]])  # seed means 3, 2.3, 2.45: row 1
    train = np.array([[4.0, 4.0], [3.0, 3.0], [2.0, 2.0]])
    curves = {"valid_loss": valid, f"{reg.TRAIN_EVAL}_loss": train}
    monkeypatch.setattr(reg, "train_and_evaluate", lambda *a: {"final": {"best_step": 20}})
    monkeypatch.setattr(grid, "read_metric_curve", lambda _, key: ([10, 20, 30], curves[key]))
    s = reg.run_point(config, "none", 2, 16, tmp_path)
    bits = lambda row: list(row / np.log(2))  # noqa: E731
    assert s["best_step"] == s["runtime_best_step"] == 20
    np.testing.assert_allclose(s["best_valid_bits"], bits(valid[1]))
    np.testing.assert_allclose(s["train_at_best_bits"], bits(train[1]))
    np.testing.assert_allclose(s["final_valid_bits"], bits(valid[2]))


@pytest.fixture(scope="module")
def smoke_run(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("regularization")
    reg.run(config, workdir)
    return workdir


def test_smoke_writes_results_tables_plots_and_answers(config, smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    points = results["points"]
    none = points["L2-h16-none"]
    assert none["questions"] == [17, 12] and points["L2-h16-dropout"]["questions"] == [17]
    assert none["curve_steps"] == [5, 10] and len(none["curve_train_bits"]) == 2
    # Our best evaluation (mean over seeds) is the runtime's own best_step.
    assert none["best_step"] == none["runtime_best_step"]
    assert none["train_tokens"] == 2_000 and none["epochs"] == pytest.approx(10 * 8 * 16 / 2000)
    for s in points.values():
        for key in ("final_train_bits", "final_valid_bits", "best_valid_bits"):
            assert len(s[key]) == 2 and all(0 < v < 5 for v in s[key])  # log2(16) = 4 at init
        assert min(map(np.mean, zip(*s["curve_valid_bits"], strict=True))) >= 0
    table = (smoke_run / "regularization.md").read_text()
    rows = table_rows(table.split("## Depth")[0])  # the Q17 table
    assert list(rows) == ["none", "early stopping", "dropout"]
    mean, _ = cell_numbers(rows["none"]["final valid"])
    assert mean == pytest.approx(np.mean(none["final_valid_bits"]), abs=1e-3)
    assert "dropout_input=0.3" in rows["dropout"]["setting"]
    assert sum(line.startswith("|---") for line in table.splitlines()) == 2
    assert_png(smoke_run / "regularization.png")
    assert_png(smoke_run / "depth.png")
    answers = reg.answers(smoke_run)
    assert set(answers) == {12, 17}
    assert f"{np.mean(none['best_valid_bits']):.3g}" in answers[17]
    assert "Early stopping at step" in answers[17]
    # The depth point's own measurement ("not" was asserted: the closing sentence always
    # holds one).
    depth = f"2 x 16 ({none['params']:,} params) none: best valid "
    assert depth + grid.mean_std(none["best_valid_bits"]) in answers[12]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grid.regularizers": "none,dropconnect"}, r"grid.regularizers='none,dropconnect': un"),
        ({"grid.depths": "0"}, r"grid.depths='0': '0' must be an integer >= 1"),
        ({"grid.depths": "1.5"}, r"grid.depths='1.5': '1.5' must be an integer"),
        ({"grid.depths": "1,\u0663"}, r"grid.depths='1,\u0663': '\u0663' must be an integer"),
        ({"grid.depth_regularizers": "dropout,x"}, r"grid.depth_regularizers='dropout,x'"),
        ({"grid.regularizers": "", "grid.depths": ""}, "both empty"),
        ({"data.train_tokens": 10**9}, r"data.train_tokens=1000000000: the 'train' split"),
        ({"grid.depths": "1,4", "depth.tolerance": 0.001}, r"depth.tolerance=0.001: no width"),
    ],
)
def test_bad_grid_values_fail_naming_the_key(tmp_path, overrides, message):
    config = cli.load_config(SMOKE, overrides, rules=reg.RULES)
    with pytest.raises(ValueError, match=message):
        reg.run(config, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize(
    "key, value",
    [
        ("reg.dropout", 1.0),
        ("data.train_tokens", -1),
        ("depth.tolerance", 0.0),
        # A regulariser on in the base config would regularise every point, "none" included.
        ("model.dropout_output", 0.1),
        ("model.locked_dropout", True),
        ("optimizer.weight_decay", 1e-4),
    ],
)
def test_bad_config_values_are_named(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cli.load_config(SMOKE, {key: value}, rules=reg.RULES)


def _summary(regularizer, best, layers=2, questions=(17,)):
    """A point summary for the answers: `best` per-seed best valid bits."""
    return {
        "questions": list(questions),
        "regularizer": regularizer,
        "settings": {},
        "layers": layers,
        "hidden": 16,
        "params": 1000,
        "cell": "lstm",
        "corpus": "markov",
        "unit": "token",
        "train_tokens": 2000,
        "valid_tokens": 1000,
        "num_steps": 500,
        "epochs": 10.0,
        "final_train_bits": [1.0, 1.0],
        "final_valid_bits": [3.7, 3.7],
        "best_valid_bits": best,
        "train_at_best_bits": [2.0, 2.0],
        "best_step": 200,
    }


def test_answers_claim_a_gain_only_when_it_exceeds_the_seed_spread():
    """A mean difference over TIE whose seeds overlap is within the seed spread: it was
    claimed as 'better than early stopping' (and 'N layers are best')."""
    from experiments import regularization_report as report

    none = _summary("none", [3.25, 3.29], questions=(17, 12))  # mean 3.27
    overlapping = _summary("dropout", [3.225, 3.265])  # mean 3.245: -0.025, seeds overlap
    apart = _summary("variational", [3.21, 3.23])  # mean 3.22: -0.05, every seed below
    answer = report.answers({"a": none, "b": overlapping, "c": apart})[17]
    helped = answer.split("Better than early stopping alone: ")[1].split(".")[0]
    assert "variational" in helped and "dropout" not in helped
    assert "dropout (-0.025 bits best valid" in answer.split("Not better")[1]
    # Every seed apart but only 0.0125 bits lower: within TIE, not a gain.
    tight = _summary("none", [3.25, 3.26])
    answer = report.answers({"a": tight, "b": _summary("l2", [3.24, 3.245])})[17]
    assert "Better than" not in answer and "l2 (-0.0125 bits best valid" in answer

    # A grid without the unregularised point (--set regularizer=...): the measurements alone,
    # no verdict against early stopping, whose baseline is that point.
    answer = report.answers({"b": overlapping, "c": apart})[17]
    assert answer.startswith("Measured (") and answer.endswith("at step 200.")
    assert "dropout final train" in answer and "variational final train" in answer
    assert "early stopping" not in answer and "Not better" not in answer

    deep = _summary("none", [3.225, 3.265], layers=3, questions=(12,))
    answer = report.answers({"a": none, "b": deep})[12]
    assert "layers are best" not in answer and "did not beat 2" in answer
    deeper = _summary("none", [3.21, 3.23], layers=3, questions=(12,))
    assert "3 layers are best, -0.05 bits against 2" in report.answers({"a": none, "b": deeper})[12]


def _depth_point(layers, best, params=1000, questions=(12,)):
    """test_regularization's unregularised point summary with `params` parameters."""
    return {**_summary("none", best, layers, questions), "params": params}


def test_depth_answer_calls_a_depth_best_only_beyond_every_other_depths_spread():
    """3 layers beat 1 beyond the spread, but 2 layers are 0.005 bits behind with
    overlapping seeds: '3 layers are best' (checked against the shallowest depth only) was
    a claim the measurement does not support."""
    one = _depth_point(1, [3.25, 3.29])
    two = _depth_point(2, [3.21, 3.23])
    three = _depth_point(3, [3.205, 3.225])
    answer = report.answers({"a": one, "b": two, "c": three})[12]
    assert "layers are best" not in answer
    assert "3 layers beat 1 (-0.055 bits) but not 2 by more than 0.02 bits" in answer
    three_apart = _depth_point(3, [3.15, 3.17])
    answer = report.answers({"a": one, "b": two, "c": three_apart})[12]
    assert "3 layers are best, -0.11 bits against 1" in answer
    # The depths are compared with the shallowest, whatever the points' order.
    answer = report.answers({"c": three_apart, "b": two, "a": one})[12]
    assert "3 layers are best, -0.11 bits against 1" in answer
    # The lowest mean (3) has a seed within 1's spread, but 2 beats 1 beyond it: "more layers
    # did not beat 1" was said.
    three_wide = _depth_point(3, [3.17, 3.27])
    answer = report.answers({"a": one, "b": _depth_point(2, [3.22, 3.23]), "c": three_wide})[12]
    assert "2 layers beat 1 (-0.045 bits) but not 3 by more than 0.02 bits" in answer


def test_depth_table_takes_the_q17_parameter_count_from_a_q17_point():
    """A depth-only run (a sweep's entry without Q17 points) called its first depth point's
    matched count (here the 1-layer model's 1,010) 'the 1,010-parameter Q17 model'."""
    only_depths = {"a": _depth_point(1, [3.2, 3.3], 1010), "b": _depth_point(3, [3.2, 3.3], 990)}
    text = report.markdown(only_depths)
    assert "1,010-parameter" not in text and "matches the Q17 model within" in text
    q17 = _depth_point(2, [3.2, 3.3], 1000, questions=(17,))
    text = report.markdown({"q": q17, "b": only_depths["b"], "a": only_depths["a"]})
    assert "matches the 1,000-parameter Q17 model within" in text
    q17_rows = table_rows(text.split("## Depth")[0])  # early stopping: train at best, 2.0
    assert [q17_rows[r]["final train"] for r in ("none", "early stopping")] == ["1 ± 0", "2 ± 0"]
    assert list(table_rows(text.split("## Depth")[1])) == ["1", "3"]  # by depth


def test_overfitting_is_claimed_only_beyond_the_seed_spread_with_the_train_loss_falling():
    """The unregularised run was said to overfit whenever its mean validation rose by more
    than TIE after the best evaluation: also when one seed ended below the other's best
    (within the spread) and when the training slice's loss rose as well (instability)."""
    none = _depth_point(2, [3.25, 3.29], questions=(17,))
    overfitting = {**none, "final_valid_bits": [3.6, 3.7]}  # train 2.0 -> 1.0
    answer = report.answers({"n": overfitting})[17]
    assert "the model overfits" in answer
    assert "without early stopping): none +0.38." in answer  # final 3.65 - best 3.27
    # Beyond the spread with the train loss falling, but a rise of 0.0125 <= TIE.
    small = {**none, "best_valid_bits": [3.25, 3.26], "final_valid_bits": [3.265, 3.27]}
    answer = report.answers({"n": small})[17]
    assert "overfits" not in answer and "validation rose by only 0.0125 bits" in answer
    overlapping = {**none, "final_valid_bits": [3.2, 3.5]}  # mean rise 0.08
    answer = report.answers({"n": overlapping})[17]
    assert "overfits" not in answer and "0.08 bits after its best evaluation, within" in answer
    unstable = {**overfitting, "final_train_bits": [2.5, 2.5]}
    answer = report.answers({"n": unstable})[17]
    assert "overfits" not in answer and "training slice's loss rose too (2 -> 2.5)" in answer


# ---- regularisation: tied embeddings cannot take part in the equal-size depth grid -------------
def test_depth_grid_with_tied_embeddings_names_tie_embeddings_not_the_tolerance():
    """With `model.tie_embeddings=True` the hidden-size search of another depth failed inside
    the model and was reported as "depth.tolerance=0.1: tie_embeddings needs ...", naming a
    key whose value was not the problem."""
    spec = "experiments/configs/regularization.py:smoke"  # 2 x 16, embeddings 8
    overrides = {"model.tie_embeddings": True, "model.embed_size": 16, "grid.depths": "1,2"}
    config = cli.load_config(spec, overrides, rules=reg.RULES)
    with pytest.raises(ConfigError, match=r"model.tie_embeddings=True: grid.depths='1,2'"):
        reg.matched_hidden_sizes(config, 10, [1, 2])
    assert reg.matched_hidden_sizes(config, 10, [2])[2][0] == 16  # its own depth still runs


def test_q17_and_q12_do_not_rank_against_diverged_or_single_seeds():
    """A diverged unregularised run (NaN against NaN) read "within the seed spread" and every
    regulariser "not supported" with '+nan bits'; one seed a side was "within the seed spread"
    and "not supported" too; a depth whose seeds all diverged was "not beaten" by the best
    (NaN compares false), and finite seeds beside a diverged one were called "best"."""
    dead = {**_summary("none", [None, None]), "final_valid_bits": [None, None]}
    answer = report.answers({"a": dead, "b": _summary("dropout", [3.0, 3.01])})[17]
    assert "Not measured (inconclusive): every seed of the unregularised run diverged" in answer
    assert "not supported" not in answer and "nan" not in answer
    one = {**_summary("none", [3.25]), "final_valid_bits": [3.7], "final_train_bits": [1.0]}
    one["train_at_best_bits"] = [2.0]
    drop = {**_summary("dropout", [2.5]), "final_valid_bits": [2.6], "final_train_bits": [2.0]}
    answer = report.answers({"a": one, "b": drop})[17]
    assert "within the seed spread" not in answer and "not supported" not in answer
    assert "0.45 bits after its best evaluation, one seed: no seed spread to compare" in answer
    assert "Not compared (this run cannot test the claim for these): dropout (-0.75" in answer
    # a regulariser with a diverged seed is not compared; overlapping seeds are "not supported"
    base = _summary("none", [3.25, 3.29])
    answer = report.answers(
        {"a": base, "b": _summary("l2", [None, 3.0]), "c": _summary("dropout", [3.24, 3.3])}
    )[17]
    assert "l2 (-0.27 bits best valid, final gap 2.7): a seed diverged" in answer
    assert "every early-stopped seed: dropout (" in answer and "nan" not in answer
    shallow = _depth_point(1, [3.25, 3.29])
    answer = report.answers(
        {"a": shallow, "b": _depth_point(2, [3.0, 3.01]), "c": _depth_point(3, [None, None])}
    )[12]
    assert (
        "2 layers are best, -0.265 bits against 1 (not compared, a seed diverged: depth 3)"
        in answer
    )
    answer = report.answers({"a": shallow, "b": _depth_point(3, [3.0, None])})[12]
    assert "layers are best" not in answer and "depth 3" in answer
    answer = report.answers({"a": _depth_point(1, [None, 3.2]), "b": shallow | {"layers": 2}})[12]
    assert "not measured (inconclusive): a seed of the shallowest stack, 1 layer(s)" in answer


def test_a_diverged_seed_is_never_beaten_nor_beats_in_q17():
    """Three seeds, one diverged: the other two beat early stopping beyond the spread, and
    the regulariser read "Better than early stopping alone" (the two-seed case above, with
    one finite seed, never reached the comparison); a diverged unregularised seed left the
    others to say "the model overfits" and every regulariser "better" against two seeds."""
    base = _summary("none", [3.25, 3.29, 3.27])
    answer = report.answers({"a": base, "b": _summary("l2", [None, 3.0, 3.01])})[17]
    assert "Better than early stopping" not in answer
    assert "Not compared (this run cannot test the claim for these): l2 (-0.265 bits" in answer
    assert "l2 (-0.265 bits best valid, final gap 2.7): a seed diverged" in answer
    lost = {**_summary("none", [3.25, None, 3.27]), "final_valid_bits": [3.6, None, 3.7]}
    answer = report.answers({"a": lost, "b": _summary("dropout", [3.0, 3.01, 3.02])})[17]
    assert "the model overfits" not in answer and "Better than early stopping" not in answer
    assert "after its best evaluation, a seed diverged: not compared seed by seed)" in answer
    assert "dropout (-0.25 bits best valid, final gap 2.7): a seed diverged" in answer
