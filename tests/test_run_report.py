"""experiments/run_report.py: per-seed table cells against numpy, metrics.jsonl curves (a
resumed run's repeated steps), the config's name, the language model's unigram baseline
against a counting loop, and the protocol caption naming the state the runtime scored."""

import collections
import json
import math
import statistics

import numpy as np
import pytest

from experiments import run_report
from tests.report_check import assert_png, cell_numbers, table_rows


def test_split_table_gives_mean_and_population_std_over_seeds_beside_the_baseline():
    accuracy, loss = [0.8, 0.9, 0.85], [0.51, 0.43, 0.47]
    final = {
        "valid_accuracy": float(np.mean(accuracy)),
        "valid_loss": float(np.mean(loss)),
        "per_seed": {"valid_accuracy": accuracy, "valid_loss": loss},
        "test_loss": 0.5,  # one seed: the value itself
    }
    table = run_report.split_table(
        final, ("loss", "accuracy"), {"valid_accuracy": 0.5}, "majority", ("accuracy",)
    )
    rows = table_rows(table)
    assert list(rows) == ["valid", "test"]  # train measured nothing: no row
    valid = rows["valid"]
    mean, std = cell_numbers(valid["accuracy"])
    assert mean == pytest.approx(statistics.mean(accuracy), rel=1e-3)
    assert std == pytest.approx(statistics.pstdev(accuracy), rel=1e-3)
    assert cell_numbers(valid["loss"]) == pytest.approx(
        [statistics.mean(loss), statistics.pstdev(loss)], rel=1e-3
    )
    assert cell_numbers(valid["majority accuracy"]) == [0.5]
    assert rows["test"]["loss"] == "0.5" and rows["test"]["accuracy"] == "–"
    assert run_report.summary_text(accuracy) == "0.850 ± 0.041 (3 seeds)"
    assert run_report.summary_text([0.5], seeds=False) == "0.500"


def test_summary_text_leaves_out_a_seed_that_is_not_finite_and_says_so():
    """A diverged seed gave 'nan ± nan (3 seeds)' in an answer beside the table's
    'x ± y (2/3 seeds)'."""
    finite = [0.8, 0.9]
    expected = f"{statistics.mean(finite):.3f} ± {statistics.pstdev(finite):.3f} (2/3 seeds)"
    assert run_report.summary_text([0.8, None, 0.9]) == expected
    assert run_report.summary_text([0.8, float("nan"), 0.9], seeds=False) == expected
    assert run_report.summary_text([None, 0.7]) == "0.700 (1/2 seeds)"
    assert run_report.summary_text([None, float("nan")]) == "no finite value (2 seeds)"
    assert run_report.summary_text(None) == run_report.summary_text([]) == "not measured"


def test_curves_keep_one_record_per_step_and_the_plot_is_written(tmp_path):
    records = [
        {"step": 2, "train_loss": 2.0, "train_loss_per_seed": [1.9, 2.1]},
        {"step": 4, "train_loss": 1.5, "train_loss_per_seed": [1.4, 1.6]},
        {"step": 4, "valid_loss": 1.7, "valid_loss_per_seed": [1.6, 1.8]},
        {"step": 4, "train_loss": 1.5, "train_loss_per_seed": [1.4, 1.6]},  # replayed
        {"step": 6, "train_loss": 1.2, "train_loss_per_seed": [1.1, 1.3]},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text(json.dumps({"num_seeds": 2}))
    steps, values = run_report.read_curve(tmp_path, "train_loss")
    np.testing.assert_array_equal(steps, [2, 4, 6])
    np.testing.assert_array_equal(values, [[1.9, 2.1], [1.4, 1.6], [1.1, 1.3]])
    steps, values = run_report.read_curve(tmp_path, "valid_loss")
    np.testing.assert_array_equal(steps, [4])
    steps, values = run_report.read_curve(tmp_path, "train_nll")  # never logged
    assert steps.shape == (0,) and values.shape == (0, 1)
    # a train key the run did not log: the validation curve alone, no error
    run_report.plot_learning_curves(tmp_path, tmp_path / "curves.png", "test", "train_nll")
    assert_png(tmp_path / "curves.png")


def test_config_name_is_the_variant_or_the_nearest_one_with_its_differences(tmp_path):
    from experiments.configs import sentiment

    config = sentiment.get_config("quick")
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    assert run_report.config_name(tmp_path, "sentiment") == "experiments/configs/sentiment.py:quick"
    config.train.num_steps = 7
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    assert run_report.config_name(tmp_path, "sentiment") == (
        "experiments/configs/sentiment.py:quick with train.num_steps=7"
    )
    # A run written before optimizer.decay_params existed (rnn_jax.train.config_keys.ADDED_KEYS)
    # is still the variant, not "quick with optimizer.decay_params=None".
    config.train.num_steps = sentiment.get_config("quick").train.num_steps
    stored = json.loads(config.to_json_best_effort())
    del stored["optimizer"]["decay_params"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert run_report.config_name(tmp_path, "sentiment") == "experiments/configs/sentiment.py:quick"


def test_language_model_unigram_baseline_matches_counting(repo_root, monkeypatch):
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli

    monkeypatch.chdir(repo_root)
    config = cli.load_config("experiments/configs/language_model.py:smoke", {}, RULES)
    task = LanguageModelTask(config)
    baselines = task.baselines()
    train = task.corpus.splits["train"].tolist()
    counts, size = collections.Counter(train), task.vocab_size
    for split, tokens in task.corpus.splits.items():
        # Add-one smoothing: p(w) = (count(w) + 1) / (N + V).
        # Over the targets tokens[1:], as the model is scored.
        targets = tokens.tolist()[1:]
        nll = -sum(math.log((counts[t] + 1) / (len(train) + size)) for t in targets)
        nll /= len(targets)
        assert baselines["unigram"][f"{split}_loss"] == pytest.approx(nll, rel=1e-9)
        assert baselines["unigram"][f"{split}_perplexity"] == pytest.approx(math.exp(nll))
    assert baselines["uniform"] == {"loss": math.log(size), "perplexity": float(size)}


def test_seed_values_read_a_null_seed_as_nan_and_summary_counts_it():
    """A per-seed list with a null (a writer's `finite_or_none`) raised TypeError in
    `float(None)`; it reads as NaN, and the summary names the finite share."""
    final = {"per_seed": {"test_accuracy": [0.9, None, 0.8]}, "test_accuracy": 0.85}
    values = run_report.seed_values(final, "test_accuracy")
    assert values[0] == 0.9 and math.isnan(values[1]) and values[2] == 0.8
    assert run_report.summary_text(values) == "0.850 ± 0.050 (2/3 seeds)"
    assert run_report.seed_values({"test_accuracy": 0.5}, "test_accuracy") == [0.5]
    assert run_report.seed_values({}, "test_accuracy") is None
    # A table cell: one non-finite seed printed "nan" where two printed "–".
    assert run_report.cell([math.nan]) == run_report.cell([math.nan, math.nan]) == "–"
    assert run_report.cell([0.5]) == "0.5" and run_report.cell([0.5, math.nan]) == "0.5 (1/2 seeds)"


def test_the_protocol_caption_names_the_state_the_runtime_scored():
    """With train.keep_best=False (or no best checkpoint) the runtime scores valid/test on the
    final state; the caption said 'the best-validation checkpoint' whatever the config."""
    from experiments import run_report

    config = {"num_seeds": 2, "train": {"keep_best": True, "best_metric": "valid_loss"}}
    best = run_report.protocol_text(config, {"best_step": 40, "step": 100})
    assert "the best-validation checkpoint (by valid_loss, step 40 of 100)" in best
    config["train"]["keep_best"] = False
    last = run_report.protocol_text(config, {"best_step": 40, "step": 100})
    assert "the final state (step 100; train.keep_best=False)" in last
    assert "best-validation" not in last
    config["train"]["keep_best"] = True
    none = run_report.protocol_text(config, {"best_step": None, "step": 100})
    assert "the final state (step 100; no best checkpoint)" in none


def test_a_diverged_seed_does_not_blank_the_learning_curve_of_the_others(tmp_path, monkeypatch):
    """The curve was the mean over every seed: one seed's NaN from step 4 on blanked the
    other's curve from there (3 of 8 points drawn); the band and mean now use each step's
    finite seeds, as the tables do, and a step with none is a gap."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    nan = float("nan")
    records = [
        {"step": s, "train_loss_per_seed": [2.0 - 0.1 * s, nan if s >= 4 else 2.1 - 0.1 * s]}
        for s in range(1, 9)
    ] + [{"step": 9, "train_loss_per_seed": [nan, nan]}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text(json.dumps({"num_seeds": 2}))
    drawn, plot = [], Axes.plot
    monkeypatch.setattr(
        Axes, "plot", lambda self, x, y, **k: drawn.append(y) or plot(self, x, y, **k)
    )
    run_report.plot_learning_curves(tmp_path, tmp_path / "curves.png", "test")
    assert_png(tmp_path / "curves.png")
    (mean,) = drawn
    expected = [2.05 - 0.1 * s for s in (1, 2, 3)] + [2.0 - 0.1 * s for s in range(4, 9)]
    np.testing.assert_allclose(mean[:8], expected)
    assert np.isnan(mean[8])  # no finite seed: a gap
