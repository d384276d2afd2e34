"""Session-23 review of the tagging, sentiment and initialisation experiments: the tagger's
span F1 on CoNLL-2003's test tags against a transcription of conlleval.pl's counting, a
transformer's `model.max_length` checked against the data up front, and the initialisation
answers claiming differences only beyond the seed spread."""

import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import initialization, sequence_labelling
from rnn_jax import metrics
from rnn_jax.data.batching import pad_batch
from rnn_jax.data.readers import read_conll
from rnn_jax.train.config import ConfigError
from tests.test_eval_padding import TASKS, tiny_config
from tests.test_misc_review22 import _conlleval_counts


def test_tagger_span_f1_on_the_conll_test_tags_is_conllevals(data_root):
    path = data_root / "conll2003" / "test.txt"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    gold = [s["tags"] for s in read_conll(path)]
    names = sorted({t for tags in gold for t in tags})
    tags = ["<pad>", *names]
    rng = np.random.default_rng(0)
    guessed = []
    for sentence in gold:  # 15% of the tags replaced by any tag: every kind of broken chunk
        noise = rng.random(len(sentence)) < 0.15
        picks = rng.choice(names, len(sentence))
        guessed.append([p if n else t for t, p, n in zip(sentence, picks, noise, strict=True)])
    ids = {t: i for i, t in enumerate(tags)}

    # The experiment's evaluation (filled batches of 512, padded to 128 steps: one compile).
    task = object.__new__(sequence_labelling.SequenceLabellingTask)
    task.config = ml_collections.ConfigDict(
        {"model": {"char_features": False}, "data": {"eval_batch_size": 512, "time_multiple": 128}}
    )
    task.tables = metrics.tag_tables(tags)
    task.splits = {
        "test": [
            {
                "inputs": np.zeros(len(g), np.int32),
                "targets": np.array([ids[t] for t in g], np.int32),
                "guessed": np.array([ids[t] for t in p], np.int32),
            }
            for g, p in zip(gold, guessed, strict=True)
        ]
    }

    def collate(rows: list[dict]) -> dict:  # the task's batch, plus the guesses padded alike
        batch = sequence_labelling.SequenceLabellingTask._collate(task, rows)
        guesses = [{"inputs": e["guessed"]} for e in rows]
        batch["guessed"] = pad_batch(guesses, 0, (), task.config.data.time_multiple)["inputs"]
        return batch

    task._collate = collate

    @jax.jit
    def sums(batch: dict) -> dict:
        model = types.SimpleNamespace(
            loss=lambda inputs, *_: jnp.zeros(inputs.shape[0]),
            predict=lambda inputs, lengths: jnp.where(batch["mask"] > 0, batch["guessed"], 0),
        )
        return task.eval_step(model, batch, ())[1]

    totals = {}
    for batch in task.eval_data("test"):
        for key, value in sums(batch).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    # conlleval.pl's counting, transcribed (test_misc_review22)
    correct, found_gold, found_guessed = _conlleval_counts(gold, guessed)
    assert found_gold == 5648  # CoNLL-2003 test's entity count
    assert (totals["correct_spans"], totals["gold_spans"], totals["predicted_spans"]) == (
        correct,
        found_gold,
        found_guessed,
    )
    tokens = sum(map(len, gold))
    hits = sum(
        g == p for gs, ps in zip(gold, guessed, strict=True) for g, p in zip(gs, ps, strict=True)
    )
    result = task.eval_metrics(totals)
    assert totals["tokens"] == tokens and result["accuracy"] == pytest.approx(hits / tokens)
    precision, recall = 100 * correct / found_guessed, 100 * correct / found_gold
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_a_transformer_whose_positions_miss_the_padded_data_is_refused_up_front(monkeypatch):
    """A `model.max_length` below the longest padded sentence passed every check; the run
    then died with a traceback (exit 1) at the first batch holding such a sentence, which
    could be mid-training or at the first evaluation, after writing its workdir."""
    for name, (module, configs, task_class, data) in TASKS.items():
        monkeypatch.setattr(module, "load_dataset", data)
        config = tiny_config(module, configs)
        config.model.kind = "transformer"
        if name == "sentiment":
            config.model.pooling = "mean"
        else:
            config.model.char_features = False
        longest = max(len(s["tokens"]) for split in data().splits.values() for s in split)
        assert longest <= 16 == config.data.time_multiple  # every batch is 16 steps wide
        config.model.max_length = 15
        message = (
            rf"model.max_length=15: .* longest sentence, {longest} tokens, padded to 16 "
            r"\(a multiple of data.time_multiple=16\)"
        )
        with pytest.raises(ConfigError, match=message):
            getattr(module, task_class)(config)
        config.model.max_length = 16
        getattr(module, task_class)(config)
        config.model.kind, config.model.max_length = "rnn", 1  # an RNN has no positions
        getattr(module, task_class)(config)


def _point(cell, init, success, grad_ratios, trained_log_sigmas):
    """A 10-step adding-problem point summary for `initialization.answers`, per seed: success,
    log10 ‖∂L/∂h_1‖/‖∂L/∂h_T‖ at init and log10 σ_max(∂h_T/∂h_1) after training."""
    n, k = len(success), 9
    metrics_ = {
        "grad_norm_d0": [1.0] * n,
        f"grad_norm_d{k}": [10.0**r for r in grad_ratios],
        f"log10_sigma_max_k{k}": [-1.0] * n,
        f"sigma_zero_fraction_k{k}": [0.0] * n,
    }
    trained = {**metrics_, f"log10_sigma_max_k{k}": trained_log_sigmas, "loss": [0.1] * n}
    return {
        "task": "adding",
        "length": 10,
        "steps": 10,
        "cell": cell,
        "init": init,
        "success": success,
        "steps_to_success": [None] * n,
        "baseline": 0.2,
        "threshold": 0.02,
        "at_init": metrics_,
        "trained": trained,
    }


def _answers(tmp_path, points):
    (tmp_path / "results.json").write_text(json.dumps({"points": dict(enumerate(points))}))
    return initialization.answers(tmp_path)


def test_q3_and_q4_claim_differences_only_beyond_the_seed_spread(tmp_path):
    """Q3 named the init with the lowest mean gradient ratio "worst", and Q4 said the LSTM
    "keeps information (and gradient) ..., which the Elman cell loses" from a higher mean
    trained σ_max, both with the seeds overlapping."""
    overlapping = [
        _point("elman_tanh", "orthogonal", [0.0, 0.0], [-2.0, -0.4], [-14.0, -14.0]),
        _point("elman_tanh", "glorot", [0.0, 0.0], [-1.0, -1.0], [-14.0, -14.0]),
        _point("lstm", "orthogonal", [1.0, 1.0], [-2.0, -2.0], [0.8, -16.0]),
    ]
    answers = _answers(tmp_path, overlapping)
    assert "; lowest mean with orthogonal, within the seed spread of glorot." in answers[3]
    assert "worst with" not in answers[3]
    assert "The LSTM's advantage" not in answers[4]

    apart = [
        _point("elman_tanh", "orthogonal", [0.0, 0.0], [-2.0, -1.5], [-14.0, -14.0]),
        _point("elman_tanh", "glorot", [0.0, 0.0], [-1.0, -1.0], [-14.0, -14.0]),
        _point("elman_tanh", "normal_0.01", [0.0, 0.0], [-np.inf, -np.inf], [-14.0, -14.0]),
        _point("lstm", "orthogonal", [1.0, 1.0], [-2.0, -2.0], [0.8, 0.6]),
    ]
    answers = _answers(tmp_path, apart)
    # an underflowed ratio (-inf in every seed) is below every finite one
    assert "; worst with normal_0.01." in answers[3]
    assert "The LSTM's advantage" in answers[4]
    both_underflow = [*apart[:3], {**apart[2], "init": "normal_1.0"}]
    answers = _answers(tmp_path, both_underflow)
    assert "; lowest mean with normal_0.01, within the seed spread of normal_1.0." in answers[3]
