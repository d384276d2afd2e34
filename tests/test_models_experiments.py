"""The sequence-labelling and sentiment experiments' configs: every variant and every sweep
point passes the runtime's and the experiment's validation; bad values are named (also the
transformer options the models refuse). A short smoke run of each (2 seeds) writes its table
(mean ± std beside the baseline), its learning curves and the answer to its seed question."""

import importlib
import json
import re

import numpy as np
import pytest

from experiments import sequence_labelling
from rnn_jax.train import cli, config_checks
from tests.module_cli import StartedModule, check_refused
from tests.report_check import assert_png, cell_numbers, table_rows

EXPERIMENTS = ["sequence_labelling", "sentiment"]
TASKS = {"sequence_labelling": "SequenceLabellingTask", "sentiment": "SentimentTask"}
QUESTION = {"sequence_labelling": 14, "sentiment": 18}
BASELINE = {"sequence_labelling": "majority_tag_per_word", "sentiment": "majority_class"}
SHORT_RUN = {
    "num_seeds": 2,
    "train.num_steps": 6,
    "train.log_every": 2,
    "train.eval_every": 6,
    "train.checkpoint_every": 6,
}
# Evaluating CoNLL's 6,700 valid/test sentences dominates the run; the char BiRNN most of it.
FASTER = {"sequence_labelling": {"model.char_features": False}, "sentiment": {}}


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("variant", ["smoke", "quick", "full"])
def test_variants_and_sweep_points_validate(name, variant):
    experiment = importlib.import_module(f"experiments.{name}")
    configs = importlib.import_module(f"experiments.configs.{name}")
    config = configs.get_config(variant)
    config_checks.validate(config, experiment.RULES)
    for point in configs.get_sweep(variant):
        swept = configs.get_config(variant)
        for key, value in point.items():
            section, field = key.split(".")
            assert field in swept[section], f"sweep key {key} is not a config key"
            swept[section][field] = value
        config_checks.validate(swept, experiment.RULES)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_unknown_variant_and_bad_values_are_named(name):
    experiment = importlib.import_module(f"experiments.{name}")
    configs = importlib.import_module(f"experiments.configs.{name}")
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        configs.get_config("huge")
    config = configs.get_config("smoke")
    config.model.cell = "transformer-xl"
    with pytest.raises(ValueError, match="model.cell"):
        config_checks.validate(config, experiment.RULES)
    # `--config.model.bidirectional=None` read as False: a unidirectional model, silently
    config = configs.get_config("smoke")
    config.model.bidirectional = None
    with pytest.raises(ValueError, match="model.bidirectional=None"):
        config_checks.validate(config, experiment.RULES)


def test_majority_tag_per_word_baseline():
    from rnn_jax.metrics import majority_tag_per_word

    train = [
        {"tokens": ["the", "run", "run"], "tags": ["DET", "VERB", "NOUN"]},
        {"tokens": ["a", "run"], "tags": ["DET", "NOUN"]},
        {"tokens": ["dogs"], "tags": ["NOUN"]},
    ]
    held = [{"tokens": ["run", "the", "cats"]}]
    # run: NOUN 2 > VERB 1; the: DET; unseen "cats": the most frequent tag overall (NOUN 3)
    assert majority_tag_per_word(train, held) == [["NOUN", "DET", "NOUN"]]


@pytest.fixture(scope="module", params=EXPERIMENTS)
def smoke_run(request, data_root, repo_root, tmp_path_factory):
    """The CLI's run (train, then table and plot) of the smoke config, shortened, 2 seeds."""
    name = request.param
    experiment = importlib.import_module(f"experiments.{name}")
    spec = f"{repo_root}/experiments/configs/{name}.py:smoke"
    overrides = {**SHORT_RUN, **FASTER[name], "data.root": str(data_root)}
    config = cli.load_config(spec, overrides, experiment.RULES)
    workdir = tmp_path_factory.mktemp(name)
    results = experiment.train_and_report(config, workdir, getattr(experiment, TASKS[name])(config))
    return name, experiment, workdir, results


@pytest.mark.data
def test_smoke_run_writes_table_curves_and_answer(smoke_run):
    from experiments import reproduce_report

    name, experiment, workdir, results = smoke_run
    final = results["final"]
    baseline = json.loads((workdir / "baselines.json").read_text())[BASELINE[name]]
    rows = table_rows((workdir / f"{name}.md").read_text())
    assert list(rows) == ["train", "valid", "test"]
    for split in ("valid", "test"):
        accuracy = final["per_seed"][f"{split}_accuracy"]
        mean, std = cell_numbers(rows[split]["accuracy"])
        assert mean == pytest.approx(np.mean(accuracy), rel=1e-3, abs=1e-4)
        assert std == pytest.approx(np.std(accuracy), rel=1e-3, abs=1e-4)
        baseline_cell = next(v for k, v in rows[split].items() if k.endswith(" accuracy"))
        assert cell_numbers(baseline_cell) == pytest.approx([baseline[f"{split}_accuracy"]], 1e-3)
        for cell in rows[split].values():
            cell_numbers(cell)  # finite
    train = final["train_loss"]
    if name == "sequence_labelling":  # per token over the window, as valid's loss is
        train = final["train_nll_per_token"]
    assert cell_numbers(rows["train"]["loss"])[0] == pytest.approx(train, 1e-3)
    assert_png(workdir / "learning_curves.png")
    answer = experiment.answers(workdir)[QUESTION[name]]
    assert f"{np.mean(final['per_seed']['test_accuracy']):.3f}" in answer
    assert f"{baseline['test_accuracy']:.3f}" in answer and f"{name}.py:smoke with" in answer
    # The main job's report takes this table, plot and answer instead of raw scalars.
    section, answers = reproduce_report.experiment_section(name, workdir)
    assert answers == {QUESTION[name]: answer}
    assert "|---|" in section and "learning_curves.png" in section


def test_full_configs_train_unk_and_state_their_steps():
    """<unk> is what every unseen word is fed as: `full` must train it (min_freq 2, or
    Lample's singleton replacement); the sentiment docstring's steps are the runtime's."""
    from experiments.configs import sentiment, sequence_labelling
    from rnn_jax.data.batching import epoch_plan

    full = sentiment.get_config("full")
    assert full.data.min_freq == 2
    epoch = epoch_plan(np.ones(sentiment.SST2_TRAIN), 25, seed=0, epoch=0, drop_remainder=True)
    assert full.train.num_steps == 20 * len(epoch) == 5_520
    assert "5,520 steps" in sentiment.__doc__
    tagging = sequence_labelling.get_config("full")
    assert tagging.data.min_freq == 2 or tagging.data.singleton_unk_prob > 0


def test_transformer_options_the_model_refuses_are_config_errors():
    """A transformer tagger/classifier with num_heads not dividing hidden_size, or a tagger
    with character features, failed when training built the model: a traceback and
    exit 1, not the config error (exit 2) naming the key; num_heads=0 or max_length=0 passed
    the rules, so a sweep ran into it too. Checked before the data is loaded."""
    from experiments import sentiment
    from experiments.configs import sentiment as sentiment_configs
    from experiments.configs import sequence_labelling as tagging_configs
    from rnn_jax.train import config as cfg
    from rnn_jax.train import config_checks

    for task, configs, rules in [
        (sentiment.SentimentTask, sentiment_configs, sentiment.RULES),
        (sequence_labelling.SequenceLabellingTask, tagging_configs, sequence_labelling.RULES),
    ]:
        config = configs.get_config("smoke")
        config.model.kind = "transformer"
        if "char_features" in config.model:  # tagging: its own check, below
            config.model.char_features = False
        config.model.num_heads = 3
        config.model.max_length = 0
        with pytest.raises(ValueError, match=r"model.max_length=0: must be an integer >= 1"):
            config_checks.validate(config, rules)
        config.model.max_length = 64
        config_checks.validate(config, rules)
        config.data.root = "/nonexistent"  # the check comes before the data is read
        with pytest.raises(cfg.ConfigError, match=r"num_heads=3: must divide .*hidden_size=16"):
            task(config)
    config = tagging_configs.get_config("smoke")
    config.model.kind = "transformer"
    with pytest.raises(
        cfg.ConfigError, match=r"model.char_features=True: .* need model.kind='rnn'"
    ):
        sequence_labelling.SequenceLabellingTask(config)


def test_tagging_answer_describes_the_model_that_was_measured(tmp_path):
    """Q14's answer said every tagger's tag is "read from the RNN's state at that token",
    also for the transformer baseline and for a CRF head, which decodes the tags jointly."""
    from experiments.configs import sequence_labelling as configs

    config = configs.get_config("quick")  # UD POS, softmax head
    config.model.kind = "transformer"
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    final = {"test_accuracy": 0.8, "valid_accuracy": 0.81}
    (tmp_path / "results.json").write_text(json.dumps({"final": final}))
    baseline = {"test_accuracy": 0.7, "valid_accuracy": 0.71}
    (tmp_path / "baselines.json").write_text(json.dumps({"majority_tag_per_word": baseline}))
    answer = sequence_labelling.answers(tmp_path)[14]
    assert "from the transformer encoder's state at that token. " in answer
    assert "RNN" not in answer and "0.800 (1 seed)" in answer and "0.700" in answer
    config.model.kind, config.model.head = "rnn", "crf"
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    answer = sequence_labelling.answers(tmp_path)[14]
    assert "from the RNN's state at that token; the CRF head decodes" in answer
    # Span F1's unit goes on the number: it followed the seed count and "no finite value".
    baseline.update(test_f1=50.0, valid_f1=51.0)
    (tmp_path / "baselines.json").write_text(json.dumps({"majority_tag_per_word": baseline}))
    for f1, said in [
        ([None, 70.0, 72.0], "span F1 71.0 ± 1.0 % (2/3 seeds) vs 50.0 %"),
        ([None, None], "span F1 no finite value (2 seeds) vs 50.0 %"),
    ]:
        per_seed = {"test_accuracy": [0.8] * len(f1), "test_f1": f1}
        results = {"final": {**final, "test_f1": 71.0, "per_seed": per_seed}}
        (tmp_path / "results.json").write_text(json.dumps(results))
        assert said in sequence_labelling.answers(tmp_path)[14]


def test_the_sentiment_experiment_refuses_last_pooling_of_a_transformer_before_reading_data():
    from experiments import sentiment
    from experiments.configs import sentiment as configs
    from rnn_jax.train import config as cfg
    from rnn_jax.train import config_checks

    config = configs.get_config("smoke")
    config.model.kind = "transformer"
    assert config.model.pooling == "last"  # the default a user meets
    config_checks.validate(config, sentiment.RULES)
    config.data.root = "/nonexistent"  # it used to fail here, in the reader, or after it
    with pytest.raises(cfg.ConfigError, match=r"model.pooling='last': needs model.kind='rnn'"):
        sentiment.SentimentTask(config)


def test_a_training_batch_larger_than_the_split_is_a_config_error(monkeypatch):
    """`train.batch_size` above the training sentences passed the rules and failed when
    training asked `training_batches` for data: a traceback, exit 1. (A 3-sentence stand-in
    dataset: the real one takes seconds to read.)"""
    from types import SimpleNamespace

    from experiments import sentiment
    from experiments.configs import sentiment as configs
    from rnn_jax.train import config as cfg

    dataset = SimpleNamespace(splits={"train": [0] * 3, "validation": [0]})
    monkeypatch.setattr(sentiment, "load_dataset", lambda name, root: dataset)
    monkeypatch.setattr(sentiment, "build_vocabs", lambda data, min_freq: {})
    monkeypatch.setattr(
        sentiment, "encode_split", lambda data, split, vocabs: [{"inputs": [1]}] * 3
    )
    config = configs.get_config("smoke")
    config.train.batch_size = 4
    with pytest.raises(cfg.ConfigError, match=r"train.batch_size=4: .* has 3 sentences"):
        sentiment.SentimentTask(config)
    config.train.batch_size = 3
    assert len(sentiment.SentimentTask(config).splits["train"]) == 3


@pytest.fixture(scope="module", autouse=True)
def missing_data_run(tmp_path_factory):
    """test_missing_task_data_exits_2_naming_the_path's command line, started with the
    module's first test (it is mostly imports, on one core, beside the other tests)."""
    workdir = tmp_path_factory.mktemp("missing_data") / "w"
    run = StartedModule(
        "experiments.sentiment",
        f"--workdir={workdir}",
        "--config=experiments/configs/sentiment.py:smoke",
        "--config.data.root=/nonexistent_rnn_jax_data",
    )
    yield workdir, run
    run.close()


@pytest.fixture(scope="module", autouse=True)
def malformed_data_run(tmp_path_factory):
    """A UD corpus whose files have a line of 4 columns, read by a grid experiment inside its
    `run` (not the task constructor the CLI guarded): started with the module's first test."""
    root = tmp_path_factory.mktemp("malformed_data")
    folder = root / "ud_english_ewt"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"en_ewt-ud-{split}.conllu").write_text("# text = x\n1\tx\tx\tNOUN\n\n")
    workdir = root / "w"
    run = StartedModule(
        "experiments.bidirectional",
        f"--workdir={workdir}",
        "--config=experiments/configs/bidirectional.py:smoke",
        f"--config.data.root={root}",
    )
    yield workdir, run
    run.close()


def test_a_malformed_data_line_exits_2_naming_file_and_line(malformed_data_run):
    """The reader names file:line (DataFormatError), but the CLI let it through as a traceback
    with exit 1 in every experiment; and a grid experiment's missing corpus (read in `run`)
    likewise. Both are the data to fix: one line, exit 2, nothing written."""
    workdir, run = malformed_data_run
    stderr = check_refused(run.result(), workdir)
    assert "data error: " in stderr and "en_ewt-ud-train.conllu:2: " in stderr, stderr[-2000:]


def test_missing_task_data_exits_2_naming_the_path(missing_data_run):
    """A task whose corpus directory is missing (a `data.root` typo) is a setting to fix: one
    line naming the path and exit 2, as a bad value is; it was a traceback with exit 1."""
    workdir, run = missing_data_run
    stderr = check_refused(run.result(), workdir)
    assert "task data not found" in stderr and "/nonexistent_rnn_jax_data/sst" in stderr


def test_a_training_tag_that_is_not_iob2_is_named_by_example():
    """A CoNLL training file with 'Q-PER' was a traceback naming the tag's vocabulary id."""
    from rnn_jax.data.data_files import DataFormatError
    from rnn_jax.data.pipeline import build_vocabs
    from rnn_jax.data.registry import TextDataset

    good = {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}
    data = TextDataset(
        "conll2003", "tagging", {"train": [good, {"tokens": ["Peter"], "tags": ["Q-PER"]}]}
    )
    tags = build_vocabs(data)["tags"].tokens
    with pytest.raises(
        DataFormatError, match=r"'conll2003' split 'train', example 1 \(0-based, .*'Q-PER' is not"
    ):
        sequence_labelling._tag_tables(data, tags)
    data.splits["train"][1]["tags"] = ["I-PER"]
    prefixes, types = sequence_labelling._tag_tables(data, build_vocabs(data)["tags"].tokens)
    assert len(prefixes) == len(types) == len(build_vocabs(data)["tags"].tokens)


def test_a_training_tag_that_is_not_iob2_in_a_file_is_named_by_file_and_line(tmp_path):
    """Read from a file, the example is named by its first line (file:line, as the readers
    name a malformed line), not by its index."""
    from rnn_jax.data.data_files import DataFormatError
    from rnn_jax.data.pipeline import build_vocabs
    from rnn_jax.data.registry import load_dataset

    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("-DOCSTART- O\n\nEU B-ORG\n\nPeter Q-PER\n")
    data = load_dataset("conll2003", manual_dir=tmp_path)
    train = re.escape(str(tmp_path / "train.txt"))
    with pytest.raises(
        DataFormatError, match=rf"^{train}:5: 'conll2003' split 'train': tag 'Q-PER'"
    ):
        sequence_labelling._tag_tables(data, build_vocabs(data)["tags"].tokens)
