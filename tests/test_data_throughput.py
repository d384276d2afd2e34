"""The data benchmark (experiments/data_throughput.py): data paths and the smoke run, an unknown
sentence dataset refused, the table written atomically."""

import json
import pathlib

import numpy as np
import pytest

from experiments.data_throughput import RULES, batches_per_second, data_paths, run
from experiments.language_model_task import LanguageModelTask
from rnn_jax.train import cli

CONFIG = "experiments/configs/data_throughput.py:smoke"


@pytest.fixture(scope="module")
def smoke():
    config = cli.load_config(
        CONFIG, {"bench.data_batches": 10, "bench.train_steps": 3, "bench.rounds": 2}, RULES
    )
    return config, LanguageModelTask(config)


def test_data_paths_make_the_batches_the_consumers_expect(smoke):
    config, task = smoke
    paths = data_paths(config, task)
    assert sorted(paths) == ["copy_task", "lm_stream", "markov_sample"]
    lm = next(paths["lm_stream"]())
    assert lm["inputs"].shape == (config.train.batch_size, config.data.bptt_length)
    np.testing.assert_array_equal(lm["inputs"][0, 1:], lm["targets"][0, :-1])
    # The task's stream, not a bare LMStream: the first batch of an epoch resets the state.
    np.testing.assert_array_equal(lm["epoch_start"], np.ones(config.train.batch_size, bool))
    copy = next(paths["copy_task"]())
    assert copy["inputs"].shape == (config.bench.synthetic_batch_size, 120)
    assert batches_per_second(paths["copy_task"], 5) > 0


def test_smoke_run_reports_batches_beside_train_steps(smoke, tmp_path):
    config, task = smoke
    report = run(config, str(tmp_path), task)
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in report["data_batches_per_s"]:
        assert saved["final"][f"{name}_over_train"] == pytest.approx(
            report["data_over_train"][name]
        )
    assert saved["timing"]["wall_s"] > 0
    table = (tmp_path / "data_throughput.md").read_text()
    assert all(f"| {name} |" in table for name in report["data_batches_per_s"])
    assert (tmp_path / "data_over_train.png").stat().st_size > 0
    assert len(report["rounds"]["train_steps_per_s"]) == len(report["loadavg"]) == 2
    assert all(len(v) == 2 for v in report["rounds"]["data_batches_per_s"].values())
    # The reported rates are the medians over rounds (of 2: their mean, not the best round).
    rounds = report["rounds"]
    assert report["train_steps_per_s"] == pytest.approx(np.median(rounds["train_steps_per_s"]))
    for name, rates in rounds["data_batches_per_s"].items():
        assert report["data_batches_per_s"][name] == pytest.approx(np.median(rates))
    ratio = report["data_over_train"]["lm_stream"]
    assert ratio == pytest.approx(
        report["data_batches_per_s"]["lm_stream"] / report["train_steps_per_s"]
    )
    # Slicing a contiguous stream is orders of magnitude cheaper than an LSTM train step.
    assert ratio > 10


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
    # A character corpus has no sentences: its ValueError was a traceback not naming the key.
    data = tmp_path / "data"
    (data / "tiny_shakespeare").mkdir(parents=True)
    (data / "tiny_shakespeare" / "input.txt").write_text("ab\n" * 20)
    config.data.root = str(data)
    config.bench.sentence_dataset = "tiny_shakespeare"
    with pytest.raises(cfg.ConfigError, match="sentence_dataset='tiny_shakespeare': task='char_"):
        data_throughput.data_paths(config, task=None)
    # A usable one (smoke has none): padded, bucketed batches of its sentences.
    (data / "train.conll").write_text("a X\nb Y\n\nc X\n\n")
    config.bench.sentence_dataset = f"conll:{data / 'train.conll'}"
    config.bench.sentence_batch_size = 2
    batch = next(data_throughput.data_paths(config, task=None)["sentences_bucketed"]())
    assert sorted(batch["lengths"].tolist()) == [1, 2] and batch["mask"].sum() == 3

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
        "data",
        "data_over_train.png",
        "data_throughput.md",
        "results.json",
    ]


def test_train_steps_are_timed_without_drawing_their_batches():
    """The LM batches were drawn inside the train-step timer: a slow data path counted as
    the model's time, and lm_stream's ratio to the train steps could never fall below 1."""
    import time

    from experiments.data_throughput import time_train_steps

    def slow_batches():
        while True:
            time.sleep(0.05)  # 20 batches/s
            yield {"x": np.zeros((2, 3), np.float32)}

    def step(state, batch):
        return state + 1, {"loss": np.float32(0.0)}

    from rnn_jax.train import distributed

    state, rate = time_train_steps(0, step, slow_batches(), distributed.data_mesh(), 5)
    assert state == 5 and rate > 100  # the model alone, not 20 steps/s
