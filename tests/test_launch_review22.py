"""Review 22 of launch.sweep/launch.report and the data, tagging and sentiment experiments:
numpy sweep values, placeholder fields, repeated --set keys, diverged seeds in the sweep
report."""

import json
import math
import pathlib

import numpy as np
import pytest

from launch import report, sweep
from tests.test_launch_review import config_with_sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_numpy_sweep_values_reach_the_run_as_plain_numbers_and_placeholders_are_typed(tmp_path):
    """`list(np.logspace(...))` gives np.float64 values: they passed every check, and each run
    got `--config.optimizer.learning_rate=np.float64(0.001)` (a flag it cannot parse) under the
    name `learning_rate=np.float64_0.001_`; an np.int64 was refused for an int field. A value
    of the wrong type for a placeholder field (None by default) crashed the planner with a
    TypeError traceback instead of naming the point."""
    config_arg = config_with_sweep(
        tmp_path,
        "{'optimizer.learning_rate': list(np.array([1e-3, 0.5])), "
        "'model.hidden_size': [np.int64(8)], 'optimizer.clip_global_norm': [np.float64(5)]}",
    )
    runs = sweep.plan_runs(config_arg, tmp_path / "root")
    assert [r.name for r in runs] == [
        "learning_rate=0.001,hidden_size=8,clip_global_norm=5.0",
        "learning_rate=0.5,hidden_size=8,clip_global_norm=5.0",
    ]
    assert "--config.optimizer.learning_rate=0.001" in runs[0].command
    assert "--config.model.hidden_size=8" in runs[0].command
    assert type(runs[0].overrides["optimizer.learning_rate"]) is float
    assert type(runs[0].overrides["model.hidden_size"]) is int
    assert sweep.format_override(sweep._plain((np.float64(0.5), [np.int32(2)]))) == "(0.5, [2])"

    bad = config_with_sweep(tmp_path / "bad", "{'data.root': ['/data', 5]}")
    with pytest.raises(ValueError, match=r"sweep point \{'data.root': 5\}: data.root=5: "):
        sweep.plan_runs(bad, tmp_path / "root2")
    assert not (tmp_path / "root2").exists()


def test_a_set_key_given_twice_is_refused():
    """`--set=train.num_steps=5 --set=train.num_steps=50` silently ran 50 steps."""
    assert sweep.parse_set_flags(["a.b=1", "c=x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ValueError, match=r"--set a.b given twice \('1' and '2'\)"):
        sweep.parse_set_flags(["a.b=1", "c=3", "a.b=2"])


def test_a_diverged_seed_is_left_out_of_the_mean_and_counted(tmp_path):
    """One seed stored as null (non-finite) made its group's cell `nan ± nan (3)`: the other
    seeds' numbers were lost. The mean and std are over the finite seeds, and the cell says
    how many of the seeds those are (json reads a stored Infinity as inf: left out too)."""
    root = tmp_path / "root"
    entries = []
    finals = {
        "lr=0.1,seed=0": {"loss": [1.0, None], "acc": 0.5},
        "lr=0.1,seed=1": {"loss": 3.0, "acc": 0.7},
        "lr=0.2,seed=0": {"loss": [float("inf"), 4.0], "acc": 0.9},
        "lr=0.2,seed=1": None,  # not finished
    }
    for name, final in finals.items():
        lr, seed = (float(part.split("=")[1]) for part in name.split(","))
        entries.append({"name": name, "overrides": {"lr": lr, "seed": int(seed)}, "command": []})
        if final is not None:
            (root / name).mkdir(parents=True)
            (root / name / "results.json").write_text(json.dumps({"final": final}))
    (root / "sweep.json").write_text(json.dumps({"config": "x.py:smoke", "runs": entries}))
    groups = report.group_runs(report.load_runs(root)[1])
    assert [g["setting"] for g in groups] == [{"lr": 0.1}, {"lr": 0.2}]
    loss = groups[0]["samples"]["loss"]
    assert len(loss) == 3 and math.isnan(loss[1])
    finite = np.array([1.0, 3.0])
    assert report.mean_std(loss) == pytest.approx((finite.mean(), finite.std(ddof=1)))
    assert report.mean_std([2.0, float("inf")]) == (2.0, 0.0)
    assert all(math.isnan(v) for v in report.mean_std([math.nan]))
    table = report.markdown_table(groups, ["loss", "acc"])
    assert "| 0.1 | 2 ± 1.414 (2 of 3 finite) | 0.6 ± 0.1414 (2) |" in table
    assert "| 0.2 | 4 ± 0 (1 of 2 finite) | 0.9 ± 0 (1) |" in table


def test_transformer_options_the_model_refuses_are_config_errors():
    """A transformer tagger/classifier with num_heads not dividing hidden_size, or a tagger
    with character features, failed when training built the model: a traceback and
    exit 1, not the config error (exit 2) naming the key; num_heads=0 or max_length=0 passed
    the rules, so a sweep ran into it too. Checked before the data is loaded."""
    from experiments import sentiment, sequence_labelling
    from experiments.configs import sentiment as sentiment_configs
    from experiments.configs import sequence_labelling as tagging_configs
    from rnn_jax.train import config as cfg

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
            cfg.validate(config, rules)
        config.model.max_length = 64
        cfg.validate(config, rules)
        config.data.root = "/nonexistent"  # the check comes before the data is read
        with pytest.raises(cfg.ConfigError, match=r"num_heads=3: must divide .*hidden_size=16"):
            task(config)
    config = tagging_configs.get_config("smoke")
    config.model.kind = "transformer"
    with pytest.raises(
        cfg.ConfigError, match=r"model.char_features=True: .* need model.kind='rnn'"
    ):
        sequence_labelling.SequenceLabellingTask(config)


def test_data_throughput_refuses_an_unknown_sentence_dataset_and_writes_its_table_atomically(
    tmp_path, monkeypatch
):
    """An unknown `bench.sentence_dataset` raised the registry's ValueError from inside the
    run: a traceback and exit 1 instead of a config error naming the key. The table was
    written in place (a reader or a kill mid-write saw half of it), unlike every other report."""
    from experiments import data_throughput
    from experiments.configs import data_throughput as configs
    from rnn_jax.train import config as cfg

    config = configs.get_config("smoke")
    config.bench.sentence_dataset = "conll2004"
    with pytest.raises(cfg.ConfigError, match="bench.sentence_dataset='conll2004': unknown"):
        data_throughput.data_paths(config, task=None)  # the LM's path is made lazily

    written = []

    def recording(path, text):
        written.append(pathlib.Path(path).name)
        real(path, text)

    real = data_throughput.write_text_atomic
    monkeypatch.setattr(data_throughput, "write_text_atomic", recording)
    report = {
        "train_steps_per_s": 2.0,
        "data_batches_per_s": {"lm_stream": 400.0},
        "data_over_train": {"lm_stream": 200.0},
        "rounds": {},
        "loadavg": [(1.0, 1.0, 1.0)],
        "prepare_s": 0.1,
        "compile_s": 1.0,
        "batch": {"lm": [4, 8], "sentences": 32, "synthetic": 128},
        "devices": ["cpu"],
    }
    data_throughput.write_outputs(report, tmp_path, 3.0)
    assert written == ["data_throughput.md", "results.json"]  # the table first, then done
    assert "| lm_stream | 400 | 200× |" in (tmp_path / "data_throughput.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data_over_train.png",
        "data_throughput.md",
        "results.json",
    ]


def test_tagging_answer_describes_the_model_that_was_measured(tmp_path):
    """Q14's answer said every tagger's tag is "read from the RNN's state at that token",
    also for the transformer baseline and for a CRF head, which decodes the tags jointly."""
    from experiments import sequence_labelling
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


def test_a_negative_parallel_or_slurm_size_is_refused_before_the_plan(tmp_path):
    """`--parallel=-1` was accepted by the flag, planned the sweep, wrote ROOT/sweep.json and
    then raised from `_slots` with a traceback; the SLURM sizes took 0 and negatives."""
    from tests.module_cli import run_module

    root = tmp_path / "root"
    config = "--config=experiments/configs/initialization.py:smoke"
    for flag in ("--parallel=-1", "--slurm_mem_gb=0"):
        result = run_module(
            "launch.sweep", config, f"--workdir={root}", "--dry_run", flag, timeout=60
        )
        assert result.returncode != 0 and f"flag {flag}: " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not root.exists()
