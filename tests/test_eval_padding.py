"""Evaluation of the sentence tasks (sentiment, tagging) with full, weighted eval batches.

`pipeline.evaluation_batches` fills the last batch up to the batch size with `weight`-0 rows
(the convention of `experiments.exposure_bias_translation`), so that every eval batch can be
split over the devices. Checked here: the padded evaluation gives exactly the metrics of the
real examples, each evaluated alone (the reference), and a run on 2 (fake) devices, whose
eval splits do not divide into whole batches, finishes with the 1-device run's metrics.
Before, the last batch was partial and the 2-device run died at its first evaluation.
Tiny in-memory datasets stand in for SST-2 and CoNLL-2003 (`load_dataset` is patched).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import sentiment, sequence_labelling
from experiments.configs import sentiment as sentiment_configs
from experiments.configs import sequence_labelling as tagging_configs
from rnn_jax.data.registry import TextDataset
from rnn_jax.train import config as cfg

EVAL_BATCH = 4  # valid has 7 sentences, test 5: neither divides into whole batches

_TAGGED = [
    ("EU rejects German call to boycott British lamb", "B-ORG O B-MISC O O O B-MISC O"),
    ("Peter Blackburn", "B-PER I-PER"),
    ("BRUSSELS 1996-08-22", "B-LOC O"),
    ("The European Commission said on Thursday", "O B-ORG I-ORG O O O"),
    ("Germany 's representative to the EU said", "B-LOC O O O O B-ORG O"),
    ("He said Britain had to boycott lamb", "O O B-LOC O O O O"),
    ("Fischler proposed EU-wide measures", "B-PER O B-MISC O"),
    ("Spanish Farm Minister Loyola de Palacio", "B-MISC O O B-PER I-PER I-PER"),
    ("the lamb said", "O O O"),
    ("Rabobank", "B-ORG"),
]


def _tagged(pairs):
    return [{"tokens": words.split(), "tags": tags.split()} for words, tags in pairs]


def tiny_tagging(name=None, root=None) -> TextDataset:
    """CoNLL-like IOB2 data; valid/test hold unseen words and sentences of 1 to 9 words."""
    held = [
        ("EU said Thursday", "B-ORG O O"),
        ("Paris", "B-LOC"),
        ("German farmers boycott British lamb to Peter", "B-MISC O O B-MISC O O B-PER"),
        ("the Commission", "O B-ORG"),
        ("Blackburn said he had proposed EU measures to Spain", "B-PER O O O O B-ORG O O B-LOC"),
        ("Loyola de Palacio said", "B-PER I-PER I-PER O"),
        ("lamb", "O"),
    ]
    return TextDataset(
        "conll2003",
        "tagging",
        {"train": _tagged(_TAGGED), "valid": _tagged(held), "test": _tagged(held[1:6])},
    )


def tiny_sentiment(name=None, root=None) -> TextDataset:
    """SST-2-like sentences with labels 0/1."""
    good = "a good film|great fun|the best movie of the year|good acting and a great story|fun"
    bad = "a bad film|dull|the worst movie|bad acting and a dull story|boring and bad|not fun"
    train = [{"tokens": s.split(), "label": 1} for s in good.split("|")]
    train += [{"tokens": s.split(), "label": 0} for s in bad.split("|")]
    held = [
        ("a great film", 1),
        ("dull and boring", 0),
        ("the best story", 1),
        ("bad", 0),
        ("a movie of the year with good acting", 1),
        ("the worst film of the year", 0),
        ("great", 1),
    ]
    valid = [{"tokens": s.split(), "label": y} for s, y in held]
    return TextDataset(
        "sst2", "classification", {"train": train, "valid": valid, "test": valid[:5]}
    )


def tiny_config(module, configs):
    """The smoke config, shrunk for the tiny data (2 steps of batch 2, eval batch 4); its
    time multiple 16 pads every tiny batch to one width: one compile per step function."""
    config = configs.get_config("smoke")
    config.train.num_steps = 2
    config.train.batch_size = 2
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.data.eval_batch_size = EVAL_BATCH
    cfg.validate(config, module.RULES)
    return config


TASKS = {
    "sentiment": (sentiment, sentiment_configs, "SentimentTask", tiny_sentiment),
    "sequence_labelling": (
        sequence_labelling,
        tagging_configs,
        "SequenceLabellingTask",
        tiny_tagging,
    ),
}


def make_task(name, monkeypatch=None):
    module, configs, task_class, data = TASKS[name]
    if monkeypatch is None:
        module.load_dataset = data
    else:
        monkeypatch.setattr(module, "load_dataset", data)
    config = tiny_config(module, configs)
    return config, getattr(module, task_class)(config)


@pytest.mark.parametrize("name", list(TASKS))
def test_padded_evaluation_equals_each_example_alone(name, monkeypatch):
    _, task = make_task(name, monkeypatch)
    model = task.init_model(jax.random.key(3))
    step = nnx.jit(lambda m, b: task.eval_step(m, b, ())[1])
    for split in ("valid", "test"):
        examples = task.splits[split]
        batches = task.eval_data(split)
        assert [len(b["weight"]) for b in batches] == [EVAL_BATCH] * len(batches)
        assert [len(b["inputs"]) for b in batches] == [EVAL_BATCH] * len(batches)
        weights = np.concatenate([b["weight"] for b in batches])
        assert weights.sum() == len(examples) and set(weights) == {0.0, 1.0}
        padded = _add(step(model, jax.tree.map(jnp.asarray, b)) for b in batches)
        # The reference: every real example evaluated alone, in a batch of one, no filler.
        alone = _add(
            step(model, jax.tree.map(jnp.asarray, {**task._collate([e]), "weight": np.ones(1)}))
            for e in examples
        )
        assert padded.keys() == alone.keys()
        for key in padded:
            assert padded[key] == pytest.approx(alone[key], rel=1e-5), key
        got, want = task.eval_metrics(padded), task.eval_metrics(alone)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-9), key
    # counts are those of the real examples (the tagging sums span counts too)
    if name == "sequence_labelling":
        assert padded["tokens"] == sum(len(e["inputs"]) for e in examples)
        assert padded["gold_spans"] > 0
    else:
        assert padded["sentences"] == len(examples)


def _add(sums_per_batch):
    total = {}
    for sums in sums_per_batch:
        for key, value in sums.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


_RUN_BOTH = """
import json, sys
from rnn_jax.train import train_and_evaluate
from tests.test_eval_padding import make_task
out = {}
for name in ("sentiment", "sequence_labelling"):
    config, task = make_task(name)
    final = train_and_evaluate(config, f"{sys.argv[1]}/{name}", task)["final"]
    out[name] = {k: v for k, v in final.items() if k.startswith(("valid_", "test_"))}
print("RESULTS " + json.dumps(out))
"""


def _start_on(devices, workdir, repo_root):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return subprocess.Popen(
        [sys.executable, "-c", _RUN_BOTH, str(workdir)],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(proc):
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    line = next(x for x in stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def test_two_devices_evaluate_partial_splits_like_one(tmp_path, repo_root):
    # Both runs at once: each is mostly imports and compiles, one core apiece.
    procs = [_start_on(n, tmp_path / f"devices{n}", repo_root) for n in (1, 2)]
    try:
        one, two = (_results(proc) for proc in procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for name in TASKS:
        assert one[name].keys() == two[name].keys() and one[name], name
        for key, value in one[name].items():
            # same counts; the losses up to the rounding of a sharded sum
            assert two[name][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
