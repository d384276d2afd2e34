"""Evaluation of the sentence tasks (sentiment, tagging) with full, weighted eval batches, and
every evaluation metric of those tasks against a per-sentence reference with no padding.

`pipeline.evaluation_batches` fills the last batch up to the batch size with `weight`-0 rows
(the convention of `experiments.exposure_bias_translation`), so that every eval batch can be
split over the devices. Checked here: the padded evaluation gives exactly the metrics of the
real examples, each evaluated alone (the reference), and a run on 2 (fake) devices, whose
eval splits do not divide into whole batches, finishes with the 1-device run's metrics.
Before, the last batch was partial and the 2-device run died at its first evaluation.
Tiny in-memory datasets stand in for SST-2 and CoNLL-2003 (`load_dataset` is patched).

Also: sentiment accuracy, tagging accuracy and conlleval span F1 (on CoNLL-2003's test tags
against a transcription of conlleval.pl's counting), bidirectional's accuracy per token
class, tagging throughput counting real tokens, and a transformer whose positions miss the
padded data refused up front."""

import collections
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import bidirectional as bd
from experiments import sentiment, sequence_labelling
from experiments.configs import sentiment as sentiment_configs
from experiments.configs import sequence_labelling as tagging_configs
from rnn_jax import metrics
from rnn_jax.data.batching import pad_batch
from rnn_jax.data.readers import read_conll
from rnn_jax.data.registry import TextDataset
from rnn_jax.train import cli, config_checks
from rnn_jax.train.config import ConfigError
from tests.test_models_metrics import _conlleval_counts

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
    config_checks.validate(config, module.RULES)
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
    # Sentiment also with its labels flipped: the filler rows (copies of the last example) are
    # classified right in one of the two passes, so an unweighted `correct` cannot pass.
    flips = (False, True) if name == "sentiment" else (False,)
    for split, flip in [(split, flip) for split in ("valid", "test") for flip in flips]:
        examples = task.splits[split]
        batches = task.eval_data(split)
        if flip:
            examples = [{**e, "targets": 1 - e["targets"]} for e in examples]
            batches = [{**b, "targets": 1 - b["targets"]} for b in batches]
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


def _task_metrics(task, model, splits: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """What the runtime reports for each of `splits`: the task's eval sums over its padded
    batches (one jitted step for all the splits: batches of one shape compile once)."""
    step = nnx.jit(lambda m, b: task.eval_step(m, b, ())[1])
    metrics = {}
    for split in splits:
        totals: dict[str, float] = collections.Counter()
        for batch in task.eval_data(split):
            for key, value in step(model, jax.tree.map(jnp.asarray, batch)).items():
                totals[key] += float(value)
        metrics[split] = task.eval_metrics(dict(totals))
    return metrics


def _conlleval_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """IOB2 chunks by conlleval's rules, written out: a chunk starts at B-X, or at I-X after O
    or after a chunk of another type; it runs while the tags are I-X."""
    chunks, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-") if tag != "O" else ("O", "", "")
        if start is not None and not (prefix == "I" and tag_kind == kind):
            chunks.add((kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, tag_kind
    return chunks


def test_conlleval_chunks_by_hand():
    tags = ["I-PER", "I-PER", "B-PER", "I-LOC", "O", "I-ORG", "B-ORG", "I-ORG"]
    assert _conlleval_chunks(tags) == {
        ("PER", 0, 2),
        ("PER", 2, 3),
        ("LOC", 3, 4),
        ("ORG", 5, 6),
        ("ORG", 6, 8),
    }


def test_tagging_metrics_equal_a_per_sentence_reference(monkeypatch):
    """Token accuracy over the real tokens only, loss per token and conlleval span P/R/F1,
    from each sentence alone (no padding, no filler rows) and counted in Python."""
    config, task = make_task("sequence_labelling", monkeypatch)
    assert config.model.head == "crf" and config.model.char_features  # both paths exercised
    model = task.init_model(jax.random.key(0))
    names = task.tags.tokens
    # One jitted program for every sentence, each its own batch of one at its own length
    # (eager calls re-trace the scans at every call; a compile per shape costs more).
    predict_and_loss = nnx.jit(
        lambda m, sentences: [
            (m.predict(x, n, **kwargs), m.loss(x, y, n, **kwargs)) for x, y, n, kwargs in sentences
        ]
    )
    for split in ("test",):  # valid's path is the same; a split costs ~8 s of compiling
        got = _task_metrics(task, model, (split,))[split]
        hits = tokens = nll = 0.0
        correct = num_gold = num_predicted = 0
        alone = [
            (
                jnp.asarray(example["inputs"])[None],
                jnp.asarray(example["targets"])[None],
                jnp.array([len(example["inputs"])]),
                {k: jnp.asarray(example[k])[None] for k in ("chars", "char_lengths")},
            )
            for example in task.splits[split]
        ]
        outputs = predict_and_loss(model, alone)
        for example, (predicted, loss) in zip(task.splits[split], outputs, strict=True):
            length, targets = len(example["inputs"]), example["targets"]
            predicted = np.asarray(predicted)[0]
            nll += float(loss[0])
            hits += sum(int(p == t) for p, t in zip(predicted, targets, strict=True))
            tokens += length
            # A predicted tag that is no chunk tag (`<pad>`) counts as O.
            as_tags = [names[p] if "-" in names[p] else "O" for p in predicted]
            gold = _conlleval_chunks([names[t] for t in targets])
            guess = _conlleval_chunks(as_tags)
            correct += len(gold & guess)
            num_gold += len(gold)
            num_predicted += len(guess)
        assert got["accuracy"] == pytest.approx(hits / tokens, abs=1e-6), split
        assert got["loss"] == pytest.approx(nll / tokens, rel=1e-5), split
        precision = 100 * correct / num_predicted if num_predicted else 0.0
        recall = 100 * correct / num_gold
        f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
        assert got["precision"] == pytest.approx(precision, abs=1e-6), split
        assert got["recall"] == pytest.approx(recall, abs=1e-6), split
        assert got["f1"] == pytest.approx(f1, abs=1e-6), split
        assert 0 < correct < num_predicted, split  # the F1 compared is not a trivial 0 or 100


@pytest.mark.parametrize(
    "kind, pooling",
    [("rnn", "last"), ("rnn", "mean"), ("bag", "mean"), ("rnn", "max"), ("rnn", "attention")],
)
def test_sentiment_metrics_equal_a_per_sentence_reference(kind, pooling, monkeypatch):
    """Accuracy and loss per sentence, each sentence alone; the encoders and poolings of the
    sentiment sweep and of word_order's SST points (bag and BiLSTM under mean pooling)."""
    _, task = make_task("sentiment", monkeypatch)
    task.config.model.kind, task.config.model.pooling = kind, pooling
    model = task.init_model(jax.random.key(5))
    splits = ("valid", "test")
    # Each distinct sentence alone (test repeats valid's first sentences), a batch of one at
    # its own length, all in one jitted program (eager calls re-trace the scans at every call).
    distinct = list(dict.fromkeys(tuple(e["inputs"]) for s in splits for e in task.splits[s]))
    logits_alone = nnx.jit(lambda m, sentences: [m(x, n)[0][0] for x, n in sentences])(
        model, [(jnp.asarray(key)[None], jnp.array([len(key)])) for key in distinct]
    )
    alone = {k: np.asarray(v, float) for k, v in zip(distinct, logits_alone, strict=True)}
    all_got = _task_metrics(task, model, splits)
    for split in splits:
        got = all_got[split]
        hits, nll = 0, 0.0
        for example in task.splits[split]:
            logits = alone[tuple(example["inputs"])]
            hits += int(np.argmax(logits) == example["targets"])
            nll += np.log(np.exp(logits - logits.max()).sum()) + logits.max()
            nll -= logits[example["targets"]]
        count = len(task.splits[split])
        assert got["accuracy"] == pytest.approx(hits / count, abs=1e-7), split
        assert got["loss"] == pytest.approx(nll / count, rel=1e-5), split


@pytest.fixture(scope="module")
def ud_task(data_root):
    # 60 sentences in eval batches of 32: the last batch holds 4 filler rows (the smoke
    # config's 64 fill exactly 2, so the per-class counts' weights went unchecked).
    overrides = {"data.root": str(data_root), "data.eval_sentences": 60}
    config = cli.load_config(
        "experiments/configs/bidirectional.py:smoke", overrides, rules=bd.RULES
    )
    assert config.data.eval_sentences % config.data.eval_batch_size
    return bd.BidirectionalTask(bd.point_config(config, "forward-softmax", 16))


def test_tagging_throughput_counts_real_tokens_not_padding(ud_task):
    """tokens/s of tagging runs counted every padded position (the default `tokens_in`), so
    it was not comparable with sentiment's and translation's real-token counts."""
    batch = next(iter(ud_task.train_data()))
    positions = np.arange(batch["inputs"].shape[1])
    real = int(np.count_nonzero(positions < np.asarray(batch["lengths"])[:, None]))
    assert ud_task.tokens_in(batch) == real < batch["inputs"].size


def test_accuracy_per_token_class_equals_a_brute_force_reference(ud_task):
    """Classes from the training counts (in the vocabulary: seen `min_freq` times; majority:
    the word's most frequent training tag, ties to the first seen), predictions per sentence
    token by token without padding, accuracies counted in Python."""
    task = ud_task
    train = task.dataset.splits["train"]
    seen = collections.Counter(w for s in train for w in s["tokens"])
    count = collections.defaultdict(dict)  # word -> tag -> [count, -first position]
    position = 0
    for sentence in train:
        for word, tag in zip(sentence["tokens"], sentence["tags"], strict=True):
            count[word].setdefault(tag, [0, -position])[0] += 1
            position += 1
    majority = {word: max(tags, key=lambda t, c=tags: c[t]) for word, tags in count.items()}

    model = task.init_model(jax.random.key(0))
    # The forward LSTM's predictions token by token through its streaming step, the sentences
    # as the rows of one batch: row i's prediction at t reads its tokens up to t only, so no
    # lengths, masks or padding enter it (one compile of the step; a whole-sequence program
    # per sentence length compiled for ~15 s per split).
    assert not task.config.model.bidirectional and task.config.model.head == "softmax"
    step = nnx.jit(lambda m, carries, tokens: m.step(carries, tokens))
    for split in ("test",):  # valid's path is the same
        got = _task_metrics(task, model, (split,))[split]
        sentences = task.dataset.splits[split]
        examples = task.splits[split]
        assert len(sentences) == len(examples) == task.config.data.eval_sentences
        hits = collections.Counter()
        counts = collections.Counter()
        width = max(len(example["inputs"]) for example in examples)
        tokens = np.zeros((len(examples), width), np.int32)  # past a sentence's end: unread
        for index, example in enumerate(examples):
            tokens[index, : len(example["inputs"])] = example["inputs"]
        carries, predicted = model.zero_carry(len(examples)), []
        for t in range(width):
            carries, emissions = step(model, carries, jnp.asarray(tokens[:, t]))
            scores = np.array(emissions)
            scores[:, model.pad_tag_id] = -np.inf  # predict never returns the padding tag
            predicted.append(np.argmax(scores, axis=-1))
        predictions = np.stack(predicted, axis=1)
        for row, sentence, example in zip(predictions, sentences, examples, strict=True):
            pairs = zip(sentence["tokens"], sentence["tags"], strict=True)
            for t, (word, tag) in enumerate(pairs):
                if seen[word] < task.config.data.min_freq:
                    name = "unk"
                else:
                    name = "majority" if majority[word] == tag else "minority"
                counts[name] += 1
                hits[name] += int(row[t] == example["targets"][t])
        assert counts == collections.Counter(task.class_tokens[split])
        assert got["accuracy"] == pytest.approx(sum(hits.values()) / counts.total(), abs=1e-6)
        for name in bd.TOKEN_CLASSES:
            want = hits[name] / counts[name]
            assert got[f"accuracy_{name}"] == pytest.approx(want, abs=1e-6), (split, name)


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
    # conlleval.pl's counting, transcribed (tests/test_models_metrics.py)
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
