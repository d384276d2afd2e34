"""The text pipeline: tokens -> vocabularies -> id examples -> batches, for any TextDataset.

    dataset = load_dataset("conll2003")
    vocabs = build_vocabs(dataset, min_freq=1)          # {"tokens": ..., "tags": ...}
    train = encode_split(dataset, "train", vocabs)       # [{"inputs", "targets"}] of int32
    batches = training_batches(train, 32, seed=0, collate=collate_for(dataset))
    valid = evaluation_batches(encode_split(dataset, "valid", vocabs), 128, collate_for(dataset))
    # every eval batch holds 128 rows; `weight` [128] is 0 on those that fill the last one

What `encode_split` makes of each task's examples:

| task | example |
|---|---|
| language_modeling | `inputs = [eos] + ids[:-1]`, `targets = ids` (ids end in `<eos>`) |
| tagging | `inputs` = token ids, `targets` = tag ids (tag vocabulary has `<pad>` = 0) |
| classification | `inputs` = token ids, `targets` = label id (scalar) |
| translation | `source` ids, `target_inputs = [bos] + target`, `targets = target + [eos]` |

A sentence LM starts from `<eos>` as a stream-trained one does (the previous line's end).
Character LMs (Tiny Shakespeare) train on one stream: `stream_ids` + `LMStream`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sized

import numpy as np

from rnn_jax.data.batching import Batch, BatchIterator, pad_batch, sorted_eval_batches
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.data.registry import TextDataset
from rnn_jax.data.vocab import Vocabulary


def build_vocabs(
    dataset: TextDataset, min_freq: int = 1, max_size: int | None = None
) -> dict[str, Vocabulary]:
    """The vocabularies the task needs, from the train split (`tokens`/`source`, and more)."""
    vocabs = {dataset.token_field: dataset.vocab(min_freq=min_freq, max_size=max_size)}
    if dataset.task == "tagging":
        vocabs["tags"] = dataset.label_vocab("tags")
    elif dataset.task == "classification":
        vocabs["label"] = dataset.label_vocab("label")
    elif dataset.task == "translation":
        vocabs["target"] = dataset.vocab("target", min_freq=min_freq, max_size=max_size)
    return vocabs


_ENCODED_TASKS = ("language_modeling", "tagging", "classification", "translation")


def encode_split(
    dataset: TextDataset, split: str, vocabs: dict[str, Vocabulary]
) -> list[dict[str, np.ndarray]]:
    """Id examples of one split (see the module docstring for each task's fields).

    A token, tag or label that a closed vocabulary (`unk=None`) lacks (e.g. a test tag the
    train split never has), an example without tokens (a translation example: without source
    tokens), or a tagging example with more or fewer tags than tokens raises DataFormatError
    (a ValueError; the command line reports it in one line, exit status 2) naming the dataset,
    the split and the example: `file:line` of its first line when the split was read from a
    file, else its index in the split (`TextDataset.where`). An empty one got as far as
    `pad_batch`, which named none of them; an unseen tag was a traceback.
    """
    task = dataset.task
    if split not in dataset.splits:
        raise ValueError(f"split={split!r}; {dataset.name!r} has {list(dataset.splits)}")
    if task not in _ENCODED_TASKS:
        raise ValueError(
            f"task={task!r} has no per-example encoding; use stream_ids for character LMs"
        )
    examples = dataset.splits[split]
    words = vocabs[dataset.token_field]
    out = []
    for index, example in enumerate(examples):
        try:
            out.append(_encode_example(task, example, words, vocabs))
        except ValueError as error:
            raise DataFormatError(f"{dataset.where(split, index)}: {error}") from error
    return out


def _encode_example(
    task: str, example: dict, words: Vocabulary, vocabs: dict[str, Vocabulary]
) -> dict[str, np.ndarray]:
    """The id arrays of one example of `task` (see `encode_split`)."""
    if task == "language_modeling":
        if not example["tokens"]:
            # `[eos] + ids[:-1]` would be one input with no target: a batch pads the target
            # with 0, `<unk>`, and the inputs' mask scores it (a line's tokens end in `<eos>`).
            raise ValueError("no tokens; a language-model example ends in '<eos>' at least")
        ids = words.encode(example["tokens"])
        return {
            "inputs": np.concatenate([[words.eos_id], ids[:-1]]).astype(np.int32),
            "targets": ids,
        }
    field = "source" if task == "translation" else "tokens"
    if not len(example[field]):
        # a batch needs every sequence >= 1 long (`pad_batch`), and a model reads no state
        raise ValueError(f"no {field}: every example needs at least one")
    if task == "tagging":
        if len(example["tokens"]) != len(example["tags"]):
            # Each would be padded to its own length, and the inputs' mask would score a
            # missing tag as the `<pad>` tag (id 0), or leave an extra one unread.
            raise ValueError(
                f"{len(example['tokens'])} tokens but {len(example['tags'])} tags: "
                f"{list(example['tokens'])[:10]}"
            )
        return {
            "inputs": words.encode(example["tokens"]),
            "targets": vocabs["tags"].encode(example["tags"]),
        }
    if task == "classification":
        return {
            "inputs": words.encode(example["tokens"]),
            "targets": np.int32(vocabs["label"].encode([str(example["label"])])[0]),
        }
    # translation, the last of `_ENCODED_TASKS` (encode_split refuses any other task)
    target = vocabs["target"]
    ids = target.encode(example["target"])
    return {
        "source": words.encode(example["source"]),
        "target_inputs": np.concatenate([[target.bos_id], ids]).astype(np.int32),
        "targets": np.concatenate([ids, [target.eos_id]]).astype(np.int32),
    }


def singleton_ids(examples: list[dict], vocab_size: int, field: str = "inputs") -> np.ndarray:
    """bool `[vocab_size]`: the ids that occur exactly once in `examples[*][field]`.

    On the training split with `min_freq=1` these are the training singletons that Lample et
    al. (2016) replace by `<unk>` with probability 0.5 during training, so that `<unk>`, the
    id every unseen word gets, is trained (glample/tagger: `insert_singletons`).

    Raises:
      ValueError: for no examples, or an id outside `[0, vocab_size)`.
    """
    if not examples:
        raise ValueError("singleton_ids got no examples (empty split)")
    ids = np.concatenate([np.asarray(e[field]).ravel() for e in examples])
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"{field!r} holds ids in [{ids.min()}, {ids.max()}], outside the vocabulary "
            f"[0, {vocab_size})"
        )
    return np.bincount(ids, minlength=vocab_size) == 1


def stream_ids(dataset: TextDataset, split: str, vocab: Vocabulary) -> np.ndarray:
    """int32 `[num_tokens]`: the split's tokens in order, one stream (for `LMStream`)."""
    return vocab.encode([t for tokens in dataset.token_lists(split) for t in tokens])


def collate_for(dataset: TextDataset, pad_id: int = 0) -> Callable[[list], Batch]:
    """`pad_batch` with the task's length fields (translation: `source` and `targets`)."""
    fields = ("source", "targets") if dataset.task == "translation" else ("inputs",)
    return functools.partial(pad_batch, pad_id=pad_id, length_fields=fields)


def length_key(dataset: TextDataset) -> str:
    """The example field `BatchIterator` buckets by."""
    return "source" if dataset.task == "translation" else "inputs"


def training_batches(
    examples: list[dict],
    batch_size: int,
    *,
    seed: int,
    collate: Callable[[list], Batch] = pad_batch,
    bucket_pool: int = 50,
    length_key: str = "inputs",
) -> BatchIterator:
    """Resumable training epochs of exactly `batch_size` examples, shuffled by `seed` and
    bucketed by length within pools of `bucket_pool` batches (little padding, few distinct
    padded shapes to compile); the last partial batch of an epoch is dropped."""
    return BatchIterator(
        examples,
        batch_size,
        seed=seed,
        bucket_pool=bucket_pool,
        drop_remainder=True,
        length_key=length_key,
        collate=collate,
    )


def check_training_batch_size(
    train_examples: Sized,
    batch_size: int,
    *,
    dataset: str,
    key: str = "train.batch_size",
    unit: str = "sentences",
    cut_by: str = "",
) -> None:
    """Refuse a `batch_size` above the number of training examples, which `training_batches`
    (full batches only: it drops the remainder; `BatchIterator(drop_remainder=True)` alike)
    would turn into no batch at all.

    A task calls this where it loads its data, so that the config error comes before anything
    is compiled or written (`BatchIterator`'s ValueError would come when training asks for
    data: a traceback, exit status 1).

    Args:
      train_examples: the encoded 'train' split (only its length is read).
      batch_size: the training batch size (`key` of the config).
      dataset: the dataset's name, for the message.
      key: the config key `batch_size` comes from, for the message.
      unit: what one example is, for the message ("sentences", "pairs").
      cut_by: the config settings that cut the split to its size, for the message (e.g.
        "translation.max_length=15, translation.max_train_pairs=4"); empty: none.
    Raises:
      ConfigError (`rnn_jax.train.config`, a ValueError): naming `key`, `batch_size`, the
        dataset and the split's size, when the split holds fewer than `batch_size` examples.
    """
    # Imported here: `rnn_jax.data` stays free of ml_collections/absl at import time (the
    # config module loads them); no cycle, as `rnn_jax.train.config` imports no `rnn_jax.data`.
    from rnn_jax.train.config import ConfigError

    if (size := len(train_examples)) < batch_size:
        kept = f" (kept by {cut_by})" if cut_by else ""
        raise ConfigError(
            f"{key}={batch_size}: the 'train' split of {dataset!r} has {size} {unit}, "
            f"fewer than one full batch{kept}"
        )


def evaluation_batches(
    examples: list[dict],
    batch_size: int,
    collate: Callable[[list], Batch] = pad_batch,
    length_key: str = "inputs",
) -> list[Batch]:
    """Every example exactly once, in batches of exactly `batch_size` sorted by decreasing
    length (least padding); order-independent sums (loss, counts) are all they are for.

    Every batch carries `weight` float32 `[batch]`: 1 for a real example, 0 for the rows that
    fill the last batch up to `batch_size` (copies of its last, shortest example, so its
    padded width does not grow). Full batches are what a sharded evaluation needs (the batch
    axis is split over the devices, and `batch_size` is checked to divide by their count),
    and the last batch no longer compiles a batch size of its own. An `eval_step` multiplies
    its sums by `weight`, so the filler counts for nothing (the repo's one convention for
    filled eval batches; the translation task of `experiments.exposure_bias` uses it too).

    Raises:
      ValueError: for `batch_size < 1`, no examples, examples that already have a
        `weight` field, or a `length_key` they lack.
    """
    if not examples:
        raise ValueError("evaluation_batches got no examples (empty split)")
    if "weight" in examples[0]:
        raise ValueError("examples already have a 'weight' field; evaluation_batches adds it")
    if length_key not in examples[0]:
        raise ValueError(
            f"length_key={length_key!r} is not a field of the examples ({sorted(examples[0])}); "
            "translation examples are measured by length_key='source'"
        )
    lengths = np.array([len(e[length_key]) for e in examples])
    batches = []
    for indices in sorted_eval_batches(lengths, batch_size):
        filler = batch_size - len(indices)
        rows = [examples[i] for i in indices] + [examples[indices[-1]]] * filler
        batch = collate(rows)
        batch["weight"] = np.repeat(np.array([1, 0], np.float32), [len(indices), filler])
        batches.append(batch)
    return batches
