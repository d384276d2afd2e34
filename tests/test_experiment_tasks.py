"""Review of the single-run task experiments (sentiment, sequence_labelling), the data
benchmark, the grid helpers and the run report: errors name what is wrong, sweeps run each
model once, and report text claims only what the run did."""

import itertools
import json

import ml_collections
import pytest

from experiments import data_throughput, grid, run_report
from experiments.configs import data_throughput as data_throughput_configs
from experiments.configs import sentiment as sentiment_configs
from experiments.configs import sequence_labelling as tagging_configs
from rnn_jax.train import config as config_lib
from rnn_jax.train import config_keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5,5", "['5'] listed more than once"),
        ("3,03", "['3'] listed more than once"),
        ("a,b", "expected integers"),
        ("1.5", "expected integers"),
        (" , ", "expected a comma-separated non-empty list"),
        ("0,2", "values must be >= 1"),
        ("-1", "values must be >= 1"),
        # int() reads these as 3, 10 and 5: another script's digit, a Python literal's _, a sign
        ("\u0663", "expected integers"),
        ("1_0", "expected integers"),
        ("+5", "expected integers"),
    ],
)
def test_split_ints_names_what_is_wrong_with_the_axis(text, message):
    """'5,5' was reported as 'expected integers': split_axis's repeated-value error was caught
    with int()'s and replaced. int() alone also read '٣' as a length of 3."""
    config = ml_collections.ConfigDict({"grid": {"lengths": text}})
    with pytest.raises(config_lib.ConfigError) as error:
        grid.split_ints(config, "lengths")
    assert str(error.value) == f"grid.lengths={text!r}: {message}"


def test_split_ints_reads_distinct_positive_integers():
    config = ml_collections.ConfigDict({"cost": {"lengths": " 10, 200 ,3"}})
    assert grid.split_ints(config, "lengths", section="cost") == [10, 200, 3]


def _points(sweep):
    """Override dicts of a sweep, the grid form expanded here by its own product."""
    if isinstance(sweep, dict):
        return [
            dict(zip(sweep, combo, strict=True)) for combo in itertools.product(*sweep.values())
        ]
    return list(sweep)


def _effective(configs, variant, point):
    """The flat config a run of `point` trains with."""
    config = configs.get_config(variant)
    for key, value in point.items():
        parent, _, field = key.rpartition(".")
        node = config
        for part in parent.split(".") if parent else ():
            node = node[part]
        assert field in node, f"{key} is not a config field"
        setattr(node, field, value)
    return json.dumps(config_keys.flatten(json.loads(config.to_json_best_effort())), sort_keys=True)


@pytest.mark.parametrize(
    "configs",
    [sentiment_configs, tagging_configs, data_throughput_configs],
    ids=lambda m: m.__name__,
)
def test_every_sweep_point_trains_another_model(configs):
    """In sequence_labelling's `quick` (no char features) the char ablation point
    `char_features=False` was the BiRNN-CRF point again: one model, two runs and two rows.
    Checked on the configs the points give, not on the override dicts (launch.sweep's check)."""
    for variant in configs.VARIANTS:
        points = _points(configs.get_sweep(variant))
        effective = [_effective(configs, variant, point) for point in points]
        same = [
            (points[i], points[j])
            for i, j in itertools.combinations(range(len(points)), 2)
            if effective[i] == effective[j]
        ]
        assert not same, f"{variant}: {same}"


@pytest.mark.parametrize("variant", list(tagging_configs.VARIANTS))
def test_the_char_ablation_differs_from_the_birnn_crf_in_char_features_only(variant):
    points = tagging_configs.get_sweep(variant)
    ablation = next(p for p in points if "model.char_features" in p and "model.kind" not in p)
    base = {"model.bidirectional": True, "model.head": "crf"}
    assert base in points
    with_chars = json.loads(_effective(tagging_configs, variant, ablation))
    without = json.loads(_effective(tagging_configs, variant, base))
    assert {k for k in with_chars if with_chars[k] != without[k]} == {"model.char_features"}


def _protocol(model, seeds=1, best_step=40):
    config = {
        "num_seeds": seeds,
        "model": model,
        "train": {"keep_best": True, "best_metric": "valid_accuracy"},
    }
    return run_report.protocol_text(config, {"best_step": best_step, "step": 100})


def test_the_caption_says_dropout_only_of_a_model_with_dropout():
    """'(training mode, dropout on)' was said of the smoke configs, which have no dropout."""
    smoke = sentiment_configs.get_config("smoke").model.to_dict()
    assert smoke["dropout_rate"] == 0.0
    assert "dropout" not in _protocol(smoke)
    assert "(training mode); valid/test" in _protocol(smoke)
    quick = sentiment_configs.get_config("quick").model.to_dict()
    assert "(training mode, dropout on); valid/test" in _protocol(quick)
    lm = {"dropout_input": 0.0, "recurrent_dropout": 0.25, "locked_dropout": True}
    assert "dropout on" in _protocol(lm)
    assert "dropout on" not in _protocol({"weight_drop": 0.0, "locked_dropout": True})
    assert "dropout on" in _protocol({"weight_drop": 0.5})


def test_the_caption_says_one_best_step_chosen_on_the_mean_over_seeds():
    """With vmapped seeds the runtime keeps one best checkpoint, where the mean over seeds was
    best; 'the best-validation checkpoint' alone read as each seed's own best."""
    three = _protocol({}, seeds=3)
    assert (
        "the best-validation checkpoint (by valid_accuracy, step 40 of 100), one step for all "
        "seeds, where their mean valid_accuracy was best. Mean ± std over 3 seeds." in three
    )
    one = _protocol({}, seeds=1)
    assert "all seeds" not in one and one.endswith("step 40 of 100). One seed.")
    assert "all seeds" not in _protocol({}, seeds=3, best_step=None)


def test_rates_below_one_are_not_rounded_to_zero(tmp_path):
    """A data path slower than the train step (ratio 0.42) read '0×' in the table, the one
    outcome the benchmark is there to show."""
    assert [data_throughput.rate_text(v) for v in (0.4213, 42.13, 123456.7, 2.0)] == [
        "0.421",
        "42.1",
        "123,457",
        "2",
    ]
    rates = {"slow": 4.2, "fast": 25_000.0}
    report = {
        "train_steps_per_s": 10.0,
        "data_batches_per_s": rates,
        "data_over_train": {name: rate / 10.0 for name, rate in rates.items()},
        "rounds": {
            "train_steps_per_s": [10.0],
            "data_batches_per_s": {k: [v] for k, v in rates.items()},
        },
        "loadavg": [(0.5, 0.5, 0.5)],
        "prepare_s": 0.0,
        "compile_s": 0.0,
        "batch": {"lm": [20, 35], "sentences": 32, "synthetic": 128},
        "devices": ["cpu"],
    }
    data_throughput.write_outputs(report, tmp_path, 1.0)
    table = (tmp_path / "data_throughput.md").read_text()
    assert "| slow | 4.2 | 0.42× |" in table
    assert "| fast | 25,000 | 2,500× |" in table


def test_the_lm_data_path_times_the_batches_the_train_step_consumes():
    """The timed `lm_stream` was a bare LMStream: the LM task's batches also carry
    `epoch_start` (experiments.language_model_task.EpochStarts)."""
    import numpy as np

    from experiments.language_model_task import LanguageModelTask
    from rnn_jax.train import cli

    config = cli.load_config(
        "experiments/configs/data_throughput.py:smoke", {}, data_throughput.RULES
    )
    task = LanguageModelTask(config)
    timed = data_throughput.data_paths(config, task)["lm_stream"]()
    consumed = iter(task.train_data())
    for _ in range(2):
        a, b = next(timed), next(consumed)
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_the_significance_table_never_shows_a_p_value_of_zero():
    """p >= 1 / (samples + 1) (the +1 correction); with 20,000 samples and more the table's
    four decimals printed the smallest p as 0.0000."""
    from experiments import significance

    result = {
        "test": "ar",
        "samples": 100_000,
        "baseline_bleu": 20.0,
        "system_bleu": 30.0,
        "difference": 10.0,
        "p_value": 1 / 100_001,
    }
    table = significance.markdown({"nmt.txt": result}, "smt.txt")
    assert "| nmt.txt | 30.00 | 20.00 | +10.00 | 1.0e-05 |" in table
    assert "0.0000" not in table
    assert significance.p_value_text(1 / 2001) == "0.0005"
    assert significance.p_value_text(0.25) == "0.2500"


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        # cells.init refused it only when the model was built: a traceback, exit status 1
        ("language_model", "model.forget_bias", float("nan")),
        # switches a `--config.k=None` turned off silently
        ("language_model", "model.tie_embeddings", None),
        ("bidirectional", "data.reverse", None),
        ("exposure_bias", "translation.valid_bleu", None),
        # MarkovLanguage refused it inside the grid run: a traceback
        ("exposure_bias", "data.markov_seed", -1),
        # a dropout rate of 1 zeroes every unit: the model trained on zeros
        ("exposure_bias", "translation.dropout", 1.0),
    ],
)
def test_bad_experiment_values_are_refused_naming_the_key(name, key, value):
    import importlib

    from rnn_jax.train import cli

    rules = importlib.import_module(f"experiments.{name}").RULES
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        cli.load_config(f"experiments/configs/{name}.py:smoke", {key: value}, rules)


def test_sentence_tasks_count_real_tokens_for_throughput():
    """tokens/s of sentiment and tagging runs counts the real tokens, not the padded batch
    (`inputs.size`), so that it compares with translation's and across time multiples."""
    import numpy as np

    from experiments import sentiment, sequence_labelling

    batch = {"inputs": np.zeros((3, 8), np.int32), "lengths": np.array([2, 5, 1], np.int32)}
    for task_class in (sentiment.SentimentTask, sequence_labelling.SequenceLabellingTask):
        assert object.__new__(task_class).tokens_in(batch) == 8, task_class


def test_sentence_task_baselines_are_fitted_on_train_and_scored_on_held_out_splits():
    """The majority class (sentiment) and the majority tag per word (tagging) come from the
    training split and are scored on each held-out split; fitted on the split they score,
    they would read as an unbeatable baseline."""
    import types

    from experiments import sentiment, sequence_labelling

    task = object.__new__(sentiment.SentimentTask)
    task.vocabs = {"label": types.SimpleNamespace(tokens=["neg", "pos"])}
    labels = {"train": [1, 1, 0], "valid": [0, 0, 1]}
    task.splits = {s: [{"targets": y} for y in ys] for s, ys in labels.items()}
    assert task.baselines() == {"label": "pos", "valid_accuracy": 1 / 3}
    task = object.__new__(sequence_labelling.SequenceLabellingTask)
    tagged = {"train": [["X", "X", "Y"]], "valid": [["Y", "Y", "X"]]}
    splits = {s: [{"tokens": ["a", "a", "b"], "tags": t} for t in ts] for s, ts in tagged.items()}
    task.dataset, task.scheme = types.SimpleNamespace(splits=splits), None
    assert task.baselines() == {"valid_accuracy": 0.0}
    # NER: span F1 of the same train-fitted guesses (Ann -> B-PER; unseen Bob -> O, the most
    # frequent training tag): gold has 2 spans, the guesses 1, both right: P 100, R 50.
    tagged = {"train": [["B-PER", "O", "O"]], "valid": [["B-PER", "B-PER", "O"]]}
    words = {"train": ["Ann", "runs", "fast"], "valid": ["Ann", "Bob", "runs"]}
    splits = {s: [{"tokens": words[s], "tags": t} for t in ts] for s, ts in tagged.items()}
    task.dataset, task.scheme = types.SimpleNamespace(splits=splits), "IOB2"
    assert task.baselines() == pytest.approx({"valid_accuracy": 2 / 3, "valid_f1": 200 / 3})


def test_tagging_report_shows_per_token_train_loss_and_span_columns(tmp_path):
    """Under `objective.time_reduction='sum'` (`full`) the optimised train_loss is per
    sentence; the table's train loss is the NLL per token (as valid's and test's), for every
    seed, and the learning curves plot that key. NER rows carry span P/R/F1 beside the
    baseline's F1. (A hand-written run: the smoke run's 'mean' objective hides the first.)"""
    from experiments import sequence_labelling as sl
    from tests.report_check import cell_numbers, table_rows

    config = tagging_configs.get_config("full")  # CoNLL NER, 'sum', keep_best on valid_f1
    config.num_seeds = 2
    assert config.objective.time_reduction == "sum"
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    # the runtime's NLL per token over the last logging window
    per_seed = {"train_loss": [19.0, 21.0], "train_nll_per_token": [0.4, 0.6]}
    for split, values in {"valid": (0.6, 0.9, 79.0, 81.0), "test": (0.7, 0.88, 76.0, 80.0)}.items():
        names = ("loss", "accuracy", "precision", "recall")
        per_seed.update({f"{split}_{k}": [v, v] for k, v in zip(names, values, strict=True)})
    per_seed.update(valid_f1=[79.0, 81.0], test_f1=[77.0, 79.0])
    final = {"step": 10, "best_step": 8, **{k: sum(v) / 2 for k, v in per_seed.items()}}
    (tmp_path / "results.json").write_text(json.dumps({"final": {**final, "per_seed": per_seed}}))
    baseline = {"valid_accuracy": 0.8, "valid_f1": 60.0, "test_accuracy": 0.79, "test_f1": 59.0}
    (tmp_path / "baselines.json").write_text(json.dumps({"majority_tag_per_word": baseline}))
    text = sl.report_markdown(tmp_path)
    assert text.count("BiLSTM 100 + char BiRNN 25 tagger with a CRF head on CoNLL") == 1
    rows = table_rows(text)
    assert cell_numbers(rows["train"]["loss"]) == pytest.approx([0.5, 0.1])
    test = {k: cell_numbers(v) for k, v in rows["test"].items() if k != "split"}
    assert test == {
        "loss": [0.7, 0.0],
        "accuracy": [0.88, 0.0],
        "precision": [76.0, 0.0],
        "recall": [80.0, 0.0],
        "f1": [78.0, 1.0],
        "majority tag accuracy": [0.79],
        "majority tag f1": [59.0],
    }
    assert "span F1 78.0 ± 1.0 % vs 59.0 % for that baseline" in sl.answers(tmp_path)[14]
    assert sl.train_and_report.keywords["train_key"] == "train_nll_per_token"
