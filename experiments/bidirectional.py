"""Does a tagger need right context? Uni- vs bidirectional LSTMs at equal size (seed Q6, Q14)

The seed's Q6 says a bidirectional RNN is useful because each position sees past and future
context; Q14 says its states go to a per-token classifier or a CRF. Measured on UD
English-EWT UPOS with `experiments.sequence_labelling`'s task and `Tagger` (word embeddings
-> LSTM -> softmax or CRF head): one point per `grid.points` entry, `<direction>-<head>`,

  forward   one LSTM, left to right: the state at token t has read tokens 1..t
  backward  the same LSTM fed every sentence reversed (inputs, tags and, with character
            features, the words' order): it reads t..n. Token accuracy does not depend on the
            order, and a CRF over a reversed sentence is a right-to-left chain
  bi        BiLSTM: both, states concatenated [batch, time, 2 * hidden]

x head `softmax` (per-token argmax) or `crf` (transition scores and Viterbi: a forward LSTM-CRF
can revise tag t once it has scored tag t + 1, the only right context it gets). All points have
the same parameter count outside the embeddings (word table and character BiLSTM, identical at
every point): `model.hidden_size` is the BiLSTM's width per direction, and every other point
gets the LSTM width whose LSTM + output layer (+ CRF) count is closest to bi-softmax's, within
`match.tolerance` (relative; `rnn_jax.models.params.match_size`).

Per point and seed: valid and test token accuracy and loss (the runtime's final evaluation;
`train.best_metric` picks the checkpoint when there are several evaluations), and accuracy on
three classes of evaluation tokens (`token_classes`): `unk` (the model reads `<unk>`: the word
is not in its vocabulary), `majority` (the gold tag is the word's most frequent training tag,
so the word alone gives it) and `minority` (it is not: the word alone points to a wrong tag,
and only context can fix it). Forward vs bi on `minority` and `unk` is what right context adds
where context is needed at all.

It writes W/results.json (`final` = {point: per-seed accuracies, params}; `points` = each
point's summary), W/bidirectional.md and W/bidirectional.png.

    python -m experiments.bidirectional --workdir=W \
        --config=experiments/configs/bidirectional.py:quick
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import bidirectional_report as report
from experiments import grid
from experiments import sequence_labelling as sl
from rnn_jax import metrics
from rnn_jax.models.params import count_params, match_size
from rnn_jax.models.tagger import Tagger
from rnn_jax.train import config as cfg
from rnn_jax.train import config_checks
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.rules import Rules, boolean, in_range, int_at_least, one_of

DIRECTIONS = ("forward", "backward", "bi")
HEADS = ("softmax", "crf")
POINTS = tuple(f"{d}-{h}" for d in DIRECTIONS for h in HEADS)
REFERENCE = "bi-softmax"  # model.hidden_size is its width; the others match its size
TOKEN_CLASSES = ("majority", "minority", "unk")
EVAL_SPLITS = ("valid", "test")
# Per-token fields of an encoded example (first axis = the sentence's tokens), reversed
# together for the backward direction.
TOKEN_FIELDS = ("inputs", "targets", "chars", "char_lengths", "token_class")


RULES: Rules = {
    **sl.RULES,
    # The token classes and the accuracy are defined for POS tags (NER would need span F1).
    "data.dataset": one_of("ud_en_ewt"),
    "data.eval_sentences": int_at_least(0),
    "data.reverse": boolean,  # a `--config.data.reverse=None` would read as False
    "model.kind": one_of("rnn"),
    "model.hidden_size": int_at_least(1),
    "grid.points": grid.distinct_names(POINTS),
    "match.tolerance": in_range(0.001, 0.5),
}


def point_config(
    config: ml_collections.ConfigDict, name: str, hidden: int
) -> ml_collections.ConfigDict:
    """The runtime config of point `name` ("<direction>-<head>") at LSTM width `hidden`."""
    direction, head = name.split("-")
    point = config.copy_and_resolve_references()
    point.model.bidirectional = direction == "bi"
    point.model.head = head
    point.model.hidden_size = hidden
    point.data.reverse = direction == "backward"
    return point


def token_classes(
    train: list[dict], sentences: list[dict], in_vocabulary: list[np.ndarray]
) -> list[np.ndarray]:
    """Class of every token of `sentences` (`TOKEN_CLASSES` index, int32 `[tokens]` each).

    Args:
      train: the training sentences, `{"tokens", "tags"}`.
      sentences: the sentences to classify (with their gold `tags`).
      in_vocabulary: per sentence, bool `[tokens]`: the model has an embedding for the word.
    Returns:
      0 `majority`: in the vocabulary, and the gold tag is the word's most frequent training
      tag (`metrics.majority_tag_per_word`, ties to the tag seen first); 1 `minority`: in the
      vocabulary, any other gold tag; 2 `unk`: the model reads `<unk>`.
    """
    majority = metrics.majority_tag_per_word(train, sentences)
    out = []
    for sentence, guess, known in zip(sentences, majority, in_vocabulary, strict=True):
        hit = np.array([g == t for g, t in zip(guess, sentence["tags"], strict=True)])
        out.append(np.where(known, np.where(hit, 0, 1), 2).astype(np.int32))
    return out


def _reversed(splits: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """New examples whose per-token fields (`TOKEN_FIELDS`) run last token first."""
    return {
        split: [
            {k: np.ascontiguousarray(v[::-1]) if k in TOKEN_FIELDS else v for k, v in e.items()}
            for e in examples
        ]
        for split, examples in splits.items()
    }


# The config keys `BidirectionalTask.__init__` reads to load, encode and cut the data: a task
# serves (`for_point`) any config that agrees on them (every other key is read when used).
DATA_KEYS = (
    "data.dataset",
    "data.root",
    "data.min_freq",
    "data.max_word_chars",
    "data.eval_sentences",
    "model.char_features",
)


def _get(config: ml_collections.ConfigDict, dotted: str) -> object:
    section, key = dotted.split(".")
    return config[section][key]


class BidirectionalTask(sl.SequenceLabellingTask):
    """`sequence_labelling`'s task, with every split's sentences reversed when
    `data.reverse` (a backward tagger), valid and test cut to their first
    `data.eval_sentences` (0: all; the majority-tag baseline scores the same sentences), and
    accuracy per token class (`token_classes`) in the evaluation:
    `<split>_accuracy_<class>`."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__(config)
        limit = config.data.eval_sentences or None
        unk = self.vocabs["tokens"].unk_id
        train = self.dataset.splits["train"]
        self.class_tokens = {}
        for split in EVAL_SPLITS:
            examples = self.splits[split][:limit]
            sentences = self.dataset.splits[split][:limit]
            known = [e["inputs"] != unk for e in examples]
            for example, classes in zip(
                examples, token_classes(train, sentences, known), strict=True
            ):
                example["token_class"] = classes
            self.splits[split] = examples
            counts = np.bincount(np.concatenate([e["token_class"] for e in examples]), minlength=3)
            self.class_tokens[split] = dict(zip(TOKEN_CLASSES, map(int, counts), strict=True))
        cut = {s: v[:limit] if s in EVAL_SPLITS else v for s, v in self.dataset.splits.items()}
        self.dataset = dataclasses.replace(self.dataset, splits=cut)
        self._baselines = super().baselines()  # once: every point's artifacts() asks for it
        # data.reverse -> splits; shared by the tasks `for_point` derives (each built once).
        self._oriented = {False: self.splits}
        self.splits = self._splits(config.data.reverse)

    def _splits(self, reverse: bool) -> dict[str, list[dict]]:
        if reverse not in self._oriented:
            self._oriented[reverse] = _reversed(self._oriented[False])
        return self._oriented[reverse]

    def for_point(self, point: ml_collections.ConfigDict) -> BidirectionalTask:
        """This task under `point` (e.g. a `point_config` of its experiment config), without
        loading and encoding the data again (seconds per point).

        Raises:
          ValueError: `point` differs from this task's config in a key of `DATA_KEYS`.
        """
        differ = [k for k in DATA_KEYS if _get(self.config, k) != _get(point, k)]
        if differ:
            raise ValueError(f"for_point: {differ} differ from the loaded task's; load another")
        task = copy.copy(self)
        task.config = point
        task.splits = self._splits(point.data.reverse)
        return task

    def baselines(self) -> dict[str, float]:
        return self._baselines

    def _collate(self, examples: list[dict]) -> dict:
        batch = super()._collate(examples)
        if "token_class" in examples[0]:
            # -1 on padding: in no class (the mask excludes it as well).
            classes = np.full(batch["inputs"].shape, -1, np.int32)
            for row, example in enumerate(examples):
                classes[row, : len(example["token_class"])] = example["token_class"]
            batch["token_class"] = classes
        return batch

    def eval_step(self, model: Tagger, batch: dict, carry: tuple) -> tuple:
        carry, sums = super().eval_step(model, batch, carry)
        # The parent does not return its predictions; XLA merges this second, identical
        # pass with its own (measured: no extra evaluation time, ~1 s more compiling).
        predicted = model.predict(batch["inputs"], batch["lengths"], **self._char_kwargs(batch))
        counted = batch["weight"][:, None] * batch["mask"]  # filler rows and padding: 0
        hit = predicted == batch["targets"]
        for index, name in enumerate(TOKEN_CLASSES):
            in_class = jnp.where(batch["token_class"] == index, counted, 0.0)
            sums[f"tokens_{name}"] = jnp.sum(in_class)
            sums[f"correct_{name}"] = jnp.sum(jnp.where(hit, in_class, 0.0))
        return carry, sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        result = super().eval_metrics(sums)
        for name in TOKEN_CLASSES:
            tokens = sums[f"tokens_{name}"]
            result[f"accuracy_{name}"] = sums[f"correct_{name}"] / tokens if tokens else np.nan
        return result


def varying_params(model: Tagger) -> int:
    """Parameters outside the embeddings (word table, character BiLSTM), which every point
    shares: the word-level LSTM, the output layer and the CRF's transitions."""
    encoder = model.encoder
    shared = count_params(encoder.embed) + (
        0 if encoder.chars is None else count_params(encoder.chars)
    )
    return count_params(model) - shared


def _abstract_model(task: BidirectionalTask, point: ml_collections.ConfigDict) -> Tagger:
    """`task`'s model under `point`'s model options, traced only (no arrays allocated)."""
    sized = task.for_point(point)
    return nnx.eval_shape(lambda: sized.init_model(jax.random.key(0)))


def matched_hidden_sizes(
    config: ml_collections.ConfigDict, task: BidirectionalTask, names: list[str]
) -> dict[str, tuple[int, int, int]]:
    """Point -> (LSTM width, parameters outside the embeddings, all parameters): bi-softmax at
    `model.hidden_size`, every other point at the width closest to its count.

    Raises:
      ConfigError: naming `match.tolerance` when a point cannot get within it.
    """
    width = config.model.hidden_size
    reference = _abstract_model(task, point_config(config, REFERENCE, width))
    target, total = varying_params(reference), count_params(reference)
    shared = total - target
    tolerance = config.match.tolerance
    out = {}
    for name in names:
        if name == REFERENCE:
            out[name] = (width, target, total)
            continue
        # The embeddings are the same at every width, so the width whose whole model is
        # closest to bi-softmax's total is the one whose varying part is closest to `target`;
        # match_size finds it however far (`tolerance=None`) and the tolerance is checked
        # here, on the varying part (match_size's own message spoke of the totals and of
        # tolerance * target / total, "within 0%" for match.tolerance 0.01; and with a CRF's
        # width-free transitions at a tiny model.hidden_size it raised even at 99.9%).
        high = 4 * width
        hidden, count = match_size(
            lambda w, n=name: _abstract_model(task, point_config(config, n, w)),
            total,
            low=1,
            high=high,
            tolerance=None,
        )
        varying = count - shared
        if abs(varying - target) > tolerance * target:
            raise cfg.ConfigError(
                f"match.tolerance={tolerance}: {name}: no LSTM width in [1, {high}] has "
                f"parameters outside the embeddings within {tolerance:.2%} of bi-softmax's "
                f"{target:,}: the closest is width {hidden} with {varying:,} "
                f"({varying / target - 1:+.2%})"
            )
        out[name] = (hidden, varying, count)
    return out


def run_point(
    config: ml_collections.ConfigDict,
    loaded: BidirectionalTask,
    name: str,
    sizes: tuple[int, int, int],
    reference_params: int,
    point_dir: pathlib.Path,
) -> dict:
    """Train one point; its summary holds the per-seed final metrics of valid and test (all
    tokens and per token class), the sizes (with `reference_params`, bi-softmax's count
    outside the embeddings, which the point was matched to) and the training budget."""
    hidden, matched, total = sizes
    point = point_config(config, name, hidden)
    task = loaded.for_point(point)
    final = train_and_evaluate(point, point_dir, task)["final"]
    n, t = point.num_seeds, point.train
    direction, head = name.split("-")
    metrics_per_seed = {
        f"{split}_{metric}": grid.final_per_seed(final, f"{split}_{metric}", n)
        for split in EVAL_SPLITS
        for metric in ("loss", "accuracy", *(f"accuracy_{c}" for c in TOKEN_CLASSES))
    }
    train_sentences = len(task.splits["train"])
    return {
        "point": name,
        "direction": direction,
        "head": head,
        "hidden": hidden,
        "params_varying": matched,
        "params_reference": reference_params,
        "params": total,
        "embed_size": point.model.embed_size,
        "char_features": point.model.char_features,
        "vocab_size": len(task.vocabs["tokens"]),
        "min_freq": point.data.min_freq,
        "num_seeds": n,
        "num_steps": t.num_steps,
        "batch_size": t.batch_size,
        "epochs": t.num_steps * t.batch_size / train_sentences,
        "train_sentences": train_sentences,
        "eval_sentences": {s: len(task.splits[s]) for s in EVAL_SPLITS},
        "class_tokens": task.class_tokens,
        "majority_baseline": task.baselines(),
        "best_step": final.get("best_step"),
        **metrics_per_seed,
    }


def grid_points(
    config: ml_collections.ConfigDict, loaded: BidirectionalTask | None = None
) -> list[tuple[str, object]]:
    """(point name, fn(point_dir) -> summary) for every `grid.points` entry, sized first (a
    point that cannot be matched fails before anything trains). `loaded`: a task whose data
    serves `config` (`BidirectionalTask.for_point`); None loads it."""
    names = grid.point_names(config)
    reference = point_config(config, REFERENCE, config.model.hidden_size)
    reference_task = BidirectionalTask(reference) if loaded is None else loaded.for_point(reference)
    # bi-softmax's own count as well when it is not a point of this run (a sweep's one-point
    # runs): every summary states what it was matched to.
    sizes = matched_hidden_sizes(config, reference_task, list(dict.fromkeys([*names, REFERENCE])))
    target = sizes[REFERENCE][1]
    return [
        (name, functools.partial(run_point, config, reference_task, name, sizes[name], target))
        for name in names
    ]


def run(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    loaded: BidirectionalTask | None = None,
) -> dict:
    """Every point of `config`; writes results.json, bidirectional.md and bidirectional.png.
    `loaded`: as for `grid_points`."""
    config_checks.validate(config, RULES)
    points = grid_points(config, loaded)
    keys = ("valid_accuracy", "test_accuracy", "params", "params_varying", "hidden")
    return grid.run_grid("bidirectional", config, workdir, points, report, keys)


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 6 and 14 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
