"""Review 21 of the experiments' numbers: every evaluation metric of the sentence tasks
(sentiment accuracy, tagging accuracy and conlleval span F1, bidirectional's accuracy per token
class) against a per-sentence brute-force reference with no padding, and the reports' words
where a seed diverged or the probes were scored on the test split."""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import bidirectional as bd
from experiments import bidirectional_report as bd_report
from experiments import state_probe_report as sp_report
from experiments import word_order as wo
from rnn_jax.train import cli
from tests.test_eval_padding import make_task
from tests.test_state_probe import MEMORY
from tests.test_state_probe import _results as probe_results
from tests.test_word_order import _summary as word_order_summary


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
    config = cli.load_config(
        "experiments/configs/bidirectional.py:smoke", {"data.root": str(data_root)}, rules=bd.RULES
    )
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
            predicted.append(np.argmax(np.asarray(emissions), axis=-1))
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


def tagger_summary(name, test, class_tokens=None, by_class=None):
    """A hand-made bidirectional point summary (3 seeds): test accuracy `test` overall and,
    unless `by_class` says otherwise, in every token class; `class_tokens` the test tokens per
    class (default 3 majority, 1 minority, 1 unk)."""
    direction, head = name.split("-")
    by_class = by_class or {}
    return {
        "point": name,
        "direction": direction,
        "head": head,
        "params_varying": 1000,
        "params_reference": 1000,
        "embed_size": 8,
        "char_features": False,
        "vocab_size": 10,
        "min_freq": 2,
        "num_seeds": 3,
        "num_steps": 5,
        "batch_size": 2,
        "epochs": 1.0,
        "train_sentences": 10,
        "eval_sentences": {"valid": 5, "test": 5},
        "class_tokens": {"test": class_tokens or {"majority": 3, "minority": 1, "unk": 1}},
        "majority_baseline": {"valid_accuracy": 0.8, "test_accuracy": 0.8},
        "test_accuracy": test,
        **{f"test_accuracy_{c}": by_class.get(c, test) for c in bd.TOKEN_CLASSES},
    }


def _point(accuracy):
    return {"test_accuracy": accuracy}


def test_a_diverged_seed_is_never_every_seed_apart():
    # Bi's two finite seeds are above every forward seed, but its third seed diverged: the
    # 2 / C(2n, n) event "every seed apart" did not happen.
    bi, fw = _point([0.92, 0.93, None]), _point([0.85, 0.86, 0.87])
    gain = bd_report.compare(bi, fw)
    assert gain["delta"] == pytest.approx(0.925 - 0.86)
    assert not gain["clear"] and gain["diverged"]
    assert (
        bd_report.diff_text(bi, fw) == "+6.50 points (a seed diverged: not compared seed by seed)"
    )
    assert bd_report.compare(_point([0.9, 0.91]), _point([0.8, 0.85]))["clear"]
    assert not bd_report.compare(_point([0.9, 0.91]), _point([0.8, 0.85]))["diverged"]
    # Q6's verdict: not "Supported", and not "seeds overlap" either.
    points = {
        name: tagger_summary(name, accuracy["test_accuracy"])
        for name, accuracy in (("forward-softmax", fw), ("bi-softmax", bi))
    }
    text = bd_report.answers(points)[6]
    assert "Supported:" not in text and "every seed apart)" not in text
    assert "mean is higher but a seed diverged, +6.50 points (a seed diverged" in text


def test_word_order_answer_with_a_diverged_seed(tmp_path):
    accuracy = {
        "sst-bag": [0.70, 0.71, 0.72],
        "sst-shuffled": [0.73, 0.74, 0.75],
        "sst-ordered": [0.80, None, 0.82],  # above every shuffled seed, one diverged
    }
    points = {n: word_order_summary(*n.split("-"), v) for n, v in accuracy.items()}
    (tmp_path / "results.json").write_text(json.dumps({"final": {}, "points": points}))
    answer = wo.answers(tmp_path)[2]
    assert "order (ordered − shuffled): +7.00 points (a seed diverged" in answer
    assert "the ordered mean is higher but a seed diverged: that word order matters is not" in (
        answer
    )
    assert "word order matters is supported" not in answer


UPOS = {"trained": [[0.6, 0.6], [0.7, 0.72], [0.75, 0.77]], "untrained": [[0.5, 0.5]] * 3}
WORD = [[0.99, 0.99], [0.95, 0.95], [0.9, 0.9]]


def test_probe_answers_name_the_split_they_were_scored_on():
    results = probe_results(UPOS, WORD, MEMORY)
    answers = sp_report.answers(results)
    assert "accuracy on UD dev" in answers[1] and "accuracy on UD dev" in answers[12]
    results["setup"]["probe_test_split"] = "test"  # the full variant's
    answers = sp_report.answers(results)
    for question in (1, 12):
        assert "UD dev" not in answers[question]
        assert "accuracy on UD test" in answers[question]


def test_probe_above_the_lexical_lookup_is_not_called_below_it():
    results = probe_results(UPOS, WORD, MEMORY)
    results["final"]["lexical"]["upos"] = 0.7  # the best layer's logistic UPOS is 0.76
    text = sp_report.answers(results)[12]
    assert "linear probe is 0.060 above it" in text and "below it" not in text


def test_q1_summary_states_only_what_the_memory_curves_show():
    results = probe_results(UPOS, WORD, MEMORY)
    text = sp_report.answers(results)[1]
    # MEMORY: accuracy falls with k at both layers; the untrained layer 1 reads k=1.
    assert "So the state is a memory of the recent past whose decodability falls with k." in text
    assert "An untrained LSTM of the same shape also keeps some of the past" in text
    # Layer 2 reads the word 4 back better than the word 1 back (0.75 vs 0.6).
    memory = {**MEMORY, "trained": [[0.99, 0.5, 0.5], [0.95, 0.80, 0.6], [0.9, 0.6, 0.75]]}
    text = sp_report.answers(probe_results(UPOS, WORD, memory))[1]
    assert "falls with k" not in text
    assert (
        "does not fall steadily with k (a farther word is read better than a nearer one by "
        "more than 0.02 at layer 2)"
    ) in text
    # An untrained LSTM at the majority level everywhere keeps nothing beyond the margin.
    memory = {**MEMORY, "untrained": [[0.99, 0.5, 0.5], [0.9, 0.5, 0.5], [0.85, 0.5, 0.5]]}
    text = sp_report.answers(probe_results(UPOS, WORD, memory))[1]
    assert "also keeps some of the past" not in text
    assert "The untrained LSTM of the same shape holds no past word beyond the margin" in text


def _plotted_axes(monkeypatch, draw) -> list:
    """The axes of the figure `draw()` saves (captured where it is closed)."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    draw()
    (figure,) = figures
    return figure.axes


def _tagger(name, test, unk):
    direction, head = name.split("-")
    return {
        "point": name,
        "direction": direction,
        "head": head,
        "test_accuracy": test,
        "test_accuracy_majority": test,
        "test_accuracy_minority": test,
        "test_accuracy_unk": unk,
    }


def test_bidirectional_plot_shows_every_seed_beside_a_class_without_tokens(tmp_path, monkeypatch):
    # No test token was out of the vocabulary (a short eval cut): 'unk' has no accuracy.
    # forward's third seed is far below the means.
    points = {
        "forward-softmax": _tagger("forward-softmax", [0.88, 0.88, 0.70], [None] * 3),
        "bi-softmax": _tagger("bi-softmax", [0.90, 0.91, 0.90], [None] * 3),
    }
    axes = _plotted_axes(monkeypatch, lambda: bd_report.plot(points, tmp_path))
    assert (tmp_path / "bidirectional.png").is_file()
    low, high = axes[0].get_ylim()
    assert low < 0.70 and high > 0.91


def test_word_order_plot_shows_every_seed(tmp_path, monkeypatch):
    from experiments import word_order_report as wo_report

    points = {
        name: {
            "task": "sst",
            "order": name.split("-")[1],
            "test_accuracy": accuracy,
            "majority_baseline": {"test_accuracy": 0.5},
        }
        for name, accuracy in (("sst-bag", [0.80, 0.81, 0.99]), ("sst-ordered", [0.8, 0.8, None]))
    }
    (axis,) = _plotted_axes(monkeypatch, lambda: wo_report.plot(points, tmp_path))
    low, high = axis.get_ylim()
    assert low < 0.5 and high > 0.99


def test_state_probe_refuses_keep_best():
    """The probes read each seed's last checkpoint; with keep_best the LM's perplexities in
    the same results would be the best-validation checkpoint's, another model's."""
    from experiments import state_probe as sp

    with pytest.raises(ValueError, match=r"train\.keep_best=True: must be one of False"):
        cli.load_config(
            "experiments/configs/state_probe.py:smoke", {"train.keep_best": True}, rules=sp.RULES
        )
    for variant in ("smoke", "quick", "full"):
        cli.load_config(f"experiments/configs/state_probe.py:{variant}", rules=sp.RULES)
