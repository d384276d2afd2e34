"""How much of an RNN's accuracy is context, and how much word order? (seed Q2)

The seed's Q2 says RNNs suit NLP because word order matters and an RNN can model dependencies
across positions. Measured on two real tasks, with three points each, `<task>-<order>`:

  task  tag  UD English-EWT UPOS (`experiments.sequence_labelling`'s task and `Tagger`, with
             `experiments.bidirectional`'s token classes): accuracy per token
        sst  SST-2 (`experiments.sentiment`'s task and `Classifier`, `model.pooling`):
             accuracy per sentence
  order bag       `SequenceEncoder(kind="bag")`, states [batch, time, bag_hidden_size]: each
                  token's state sees that token only (tagging: a per-word classifier; SST with
                  mean pooling: a deep averaging network, Iyyer et al. 2015)
        shuffled  the BiLSTM of `ordered`, trained and evaluated on sentences whose words are
                  permuted (`shuffled_splits`: one fixed permutation per sentence, the same in
                  every epoch and for every seed; tags, characters and token classes move with
                  their word)
        ordered   the BiLSTM, states [batch, time, 2 * hidden_size], on the real order

`shuffled` keeps every model detail of `ordered` and removes only the order, so
ordered - shuffled is what order is worth, and shuffled - bag what context without order is
worth (the bag is smaller: no recurrent weights; every point's parameter count is reported).

Per point and seed: valid and test accuracy and loss of the final evaluation (tagging also by
token class: majority / minority / unk, see `experiments.bidirectional`), the parameter count
and the majority baseline. It writes W/results.json (`final` = {point: per-seed accuracies,
params}; `points` = each point's summary), W/word_order.md and W/word_order.png.

    python -m experiments.word_order --workdir=W \
        --config=experiments/configs/word_order.py:quick
"""

from __future__ import annotations

import copy
import functools
import pathlib
import time
import zlib

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments import bidirectional as bd
from experiments import grid, sentiment
from experiments import sequence_labelling as sl
from experiments import word_order_report as report
from rnn_jax.models.params import count_params
from rnn_jax.train import config_checks
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.rules import Rules, int_at_least, one_of, positive_float32

TASKS = ("tag", "sst")
ORDERS = ("bag", "shuffled", "ordered")
POINTS = tuple(f"{t}-{o}" for t in TASKS for o in ORDERS)
EVAL_SPLITS = ("valid", "test")
# Per-token fields of an encoded example, permuted together (tagging: bidirectional's list,
# with the token classes; SST: the words only, the label is the sentence's).
TOKEN_FIELDS = {"tag": bd.TOKEN_FIELDS, "sst": ("inputs",)}


RULES: Rules = {
    **sl.RULES,
    # The token classes are defined for POS tags (bidirectional's task).
    "data.dataset": one_of("ud_en_ewt"),
    "data.eval_sentences": int_at_least(0),
    "data.reverse": one_of(False),
    "data.shuffle": one_of(False),  # set per point
    "model.kind": one_of("rnn"),  # the BiLSTM; bag points set their own kind
    "model.bidirectional": one_of(True),
    # A CRF's transitions score neighbouring tags: the bag tagger would see order through
    # them (its per-sentence loss changes when the words are permuted).
    "model.head": one_of("softmax"),
    "model.pooling": one_of("mean", "max", "attention"),  # 'last' has no bag meaning
    "model.bag_hidden_size": int_at_least(1),
    "grid.points": grid.distinct_names(POINTS),
    "sst.dataset": one_of(*sentiment.DATASETS),
    "sst.min_freq": int_at_least(1),
    "sst.time_multiple": int_at_least(1),
    "sst.eval_batch_size": int_at_least(1),
    "sst.learning_rate": positive_float32,
    "sst.num_steps": int_at_least(1),
    "sst.eval_every": int_at_least(1),
}


def word_permutation(seed: int, split: str, index: int, length: int) -> np.ndarray:
    """The fixed permutation of sentence `index` of `split`: int `[length]`, a function of
    (seed, split, index) only, so every epoch and every seed sees the same shuffled corpus."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index]).permutation(length)


def shuffled_splits(
    splits: dict[str, list[dict]], fields: tuple[str, ...], seed: int
) -> dict[str, list[dict]]:
    """New examples whose per-token `fields` (first axis = the sentence's tokens) are all
    permuted by `word_permutation`; other fields are shared with `splits`."""
    out = {}
    for split, examples in splits.items():
        out[split] = []
        for index, example in enumerate(examples):
            order = word_permutation(seed, split, index, len(example["inputs"]))
            out[split].append({k: v[order] if k in fields else v for k, v in example.items()})
    return out


class _ShuffledViews:
    """A task's splits in real order and, per seed, shuffled (built once, shared by the
    tasks `for_point` derives)."""

    def _init_views(self, fields: tuple[str, ...]) -> None:
        self._fields = fields
        self._views = {None: self.splits}

    def _view(self, config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
        key = config.seed if config.data.shuffle else None
        if key not in self._views:
            self._views[key] = shuffled_splits(self._views[None], self._fields, key)
        return self._views[key]


class WordOrderTagTask(_ShuffledViews, bd.BidirectionalTask):
    """`bidirectional`'s tagging task (token classes, cut evaluation splits) whose sentences
    are shuffled when `data.shuffle`."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__(config)
        self._init_views(TOKEN_FIELDS["tag"])
        self.splits = self._view(config)

    def for_point(self, point: ml_collections.ConfigDict) -> WordOrderTagTask:
        task = super().for_point(point)  # refuses another data config
        task.splits = self._view(point)
        return task


# The config keys `SentimentTask.__init__` reads to load and encode the data.
SST_DATA_KEYS = ("dataset", "root", "min_freq")


class WordOrderSentimentTask(_ShuffledViews, sentiment.SentimentTask):
    """`sentiment`'s task whose sentences are shuffled when `data.shuffle`."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__(config)
        self._init_views(TOKEN_FIELDS["sst"])
        self.splits = self._view(config)

    def for_point(self, point: ml_collections.ConfigDict) -> WordOrderSentimentTask:
        """This task under `point` without loading the data again.

        Raises:
          ValueError: `point` differs from this task's config in a key of `SST_DATA_KEYS`.
        """
        differ = [
            f"data.{k}={point.data[k]!r} (loaded: {self.config.data[k]!r})"
            for k in SST_DATA_KEYS
            if self.config.data[k] != point.data[k]
        ]
        if differ:
            raise ValueError(
                f"for_point: {', '.join(differ)} differ from the loaded task's; load another"
            )
        task = copy.copy(self)
        task.config = point
        task.splits = self._view(point)
        return task


def point_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The runtime config of point `name` ("<task>-<order>"): tagging points use the top-level
    `data` and `train`; SST points take `sst.*` in their place."""
    task, order = name.split("-")
    point = config.copy_and_resolve_references()
    point.model.kind = "bag" if order == "bag" else "rnn"
    if order == "bag":
        point.model.hidden_size = config.model.bag_hidden_size
    point.data.shuffle = order == "shuffled"
    if task == "sst":
        sst = config.sst
        point.data = ml_collections.ConfigDict(
            {
                "dataset": sst.dataset,
                "root": config.data.root,
                "min_freq": sst.min_freq,
                "time_multiple": sst.time_multiple,
                "eval_batch_size": sst.eval_batch_size,
                "shuffle": order == "shuffled",
            }
        )
        point.train.num_steps = sst.num_steps
        point.train.eval_every = point.train.checkpoint_every = sst.eval_every
        point.optimizer.learning_rate = sst.learning_rate
    return point


def outside_embeddings(model: nnx.Module) -> int:
    """Parameters outside the word table and the character encoder."""
    encoder = model.encoder
    chars = 0 if encoder.chars is None else count_params(encoder.chars)
    return count_params(model) - count_params(encoder.embed) - chars


def run_point(
    config: ml_collections.ConfigDict,
    loaded: WordOrderTagTask | WordOrderSentimentTask,
    name: str,
    point_dir: pathlib.Path,
) -> dict:
    """Train one point; its summary holds the per-seed final metrics of valid and test, the
    sizes, the baseline and the training budget."""
    task_name, order = name.split("-")
    point = point_config(config, name)
    task = loaded.for_point(point)
    model = nnx.eval_shape(lambda: task.init_model(jax.random.key(0)))
    final = train_and_evaluate(point, point_dir, task)["final"]
    n, t = point.num_seeds, point.train
    metrics = ("loss", "accuracy")
    if task_name == "tag":
        metrics += tuple(f"accuracy_{c}" for c in bd.TOKEN_CLASSES)
    train_sentences = len(task.splits["train"])
    summary = {
        "point": name,
        "task": task_name,
        "order": order,
        "kind": point.model.kind,
        "hidden": point.model.hidden_size,
        "params": count_params(model),
        "params_outside_embeddings": outside_embeddings(model),
        "embed_size": point.model.embed_size,
        "vocab_size": len(task.vocabs["tokens"]),
        "dataset": point.data.dataset,
        "num_seeds": n,
        "num_steps": t.num_steps,
        "batch_size": t.batch_size,
        "learning_rate": point.optimizer.learning_rate,
        "epochs": t.num_steps * t.batch_size / train_sentences,
        "train_sentences": train_sentences,
        "eval_sentences": {s: len(task.splits[s]) for s in EVAL_SPLITS},
        "majority_baseline": task.baselines(),
        "best_step": final.get("best_step"),
        **{
            f"{split}_{metric}": grid.final_per_seed(final, f"{split}_{metric}", n)
            for split in EVAL_SPLITS
            for metric in metrics
        },
    }
    if task_name == "tag":
        summary["class_tokens"] = task.class_tokens
    else:
        summary["pooling"] = point.model.pooling
    return summary


def grid_points(
    config: ml_collections.ConfigDict, loaded: dict[str, object] | None = None
) -> list[tuple[str, object]]:
    """(point name, fn(point_dir) -> summary) for every `grid.points` entry. `loaded`: task
    name -> a task whose data serves that task's points (`for_point`); missing ones load."""
    names = grid.point_names(config)
    tasks = dict(loaded or {})
    builders = {"tag": WordOrderTagTask, "sst": WordOrderSentimentTask}
    for task_name in TASKS:
        first = next((n for n in names if n.startswith(f"{task_name}-")), None)
        if first is not None and task_name not in tasks:
            tasks[task_name] = builders[task_name](point_config(config, first))
    return [
        (name, functools.partial(run_point, config, tasks[name.split("-")[0]], name))
        for name in names
    ]


def run(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    loaded: dict[str, object] | None = None,
) -> dict:
    """Every point of `config`; writes results.json, word_order.md and word_order.png.
    `loaded`: as for `grid_points`."""
    config_checks.validate(config, RULES)
    start = time.perf_counter()
    points = grid_points(config, loaded)
    keys = ("valid_accuracy", "test_accuracy", "params", "params_outside_embeddings")
    return grid.run_grid("word_order", config, workdir, points, report, keys, start)


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answer to seed question 2 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
