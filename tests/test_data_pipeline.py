"""The text pipeline on tiny hand-written datasets: the ids each task's examples get."""

import numpy as np
import pytest

from rnn_jax.data import BatchIterator
from rnn_jax.data.pipeline import build_vocabs, collate_for, encode_split, stream_ids
from rnn_jax.data.registry import TextDataset


def test_sentence_lm_starts_from_eos():
    dataset = TextDataset("lm", "language_modeling", {"train": [{"tokens": ["a", "b", "<eos>"]}]})
    vocab = build_vocabs(dataset)["tokens"]
    assert vocab.tokens[:2] == ("<unk>", "<eos>")
    (example,) = encode_split(dataset, "train", {"tokens": vocab})
    assert vocab.decode(example["inputs"]) == ["<eos>", "a", "b"]
    assert vocab.decode(example["targets"]) == ["a", "b", "<eos>"]
    np.testing.assert_array_equal(stream_ids(dataset, "train", vocab), example["targets"])


def test_translation_targets_are_shifted_with_bos_and_eos():
    train = [
        {"source": ["ein", "hund"], "target": ["a", "dog"]},
        {"source": ["ja"], "target": ["yes"]},
    ]
    dataset = TextDataset("mt", "translation", {"train": train})
    vocabs = build_vocabs(dataset)
    encoded = encode_split(dataset, "train", vocabs)
    target = vocabs["target"]
    assert target.decode(encoded[0]["target_inputs"]) == ["<bos>", "a", "dog"]
    assert target.decode(encoded[0]["targets"]) == ["a", "dog", "<eos>"]
    batch = next(
        iter(
            BatchIterator(
                encoded, 2, shuffle=False, length_key="source", collate=collate_for(dataset)
            )
        )
    )
    np.testing.assert_array_equal(batch["source_lengths"], [2, 1])
    np.testing.assert_array_equal(batch["targets_lengths"], [3, 2])
    np.testing.assert_array_equal(
        batch["target_inputs"][1], [target.bos_id, target.encode(["yes"])[0], 0]
    )


def test_classification_and_tagging_targets():
    cls = TextDataset(
        "c",
        "classification",
        {"train": [{"tokens": ["good"], "label": 1}, {"tokens": ["bad", "x"], "label": 0}]},
    )
    vocabs = build_vocabs(cls)
    encoded = encode_split(cls, "train", vocabs)
    assert [vocabs["label"].decode([e["targets"]])[0] for e in encoded] == ["1", "0"]
    tag = TextDataset(
        "t",
        "tagging",
        {
            "train": [{"tokens": ["EU", "x"], "tags": ["B-ORG", "O"]}],
            "valid": [{"tokens": ["new"], "tags": ["O"]}],
        },
    )
    vocabs = build_vocabs(tag)
    assert vocabs["tags"].tokens == ("<pad>", "B-ORG", "O")
    (valid,) = encode_split(tag, "valid", vocabs)
    assert valid["inputs"].tolist() == [vocabs["tokens"].unk_id]
    with pytest.raises(ValueError, match="split='dev'"):
        encode_split(tag, "dev", vocabs)


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="split 'valid' is empty"):
        TextDataset("t", "tagging", {"train": [{"tokens": ["a"], "tags": ["O"]}], "valid": []})
