"""The text pipeline on tiny hand-written datasets: the ids each task's examples get."""

import re

import numpy as np
import pytest

from rnn_jax.data import BatchIterator
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.data.pipeline import (
    build_vocabs,
    check_training_batch_size,
    collate_for,
    encode_split,
    evaluation_batches,
    length_key,
    stream_ids,
    training_batches,
)
from rnn_jax.data.registry import TextDataset, load_dataset


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
    # The pipeline's own helpers measure and pad translation examples the same way.
    collate = collate_for(dataset, pad_id=9)
    (evaluated,) = evaluation_batches(encoded, 2, collate, length_key(dataset))
    np.testing.assert_array_equal(evaluated["source_lengths"], [2, 1])
    np.testing.assert_array_equal(evaluated["targets_lengths"], [3, 2])
    assert evaluated["source"][1, 1] == 9
    assert len(training_batches(encoded, 2, seed=0, length_key="source")) == 1
    # min_freq and max_size reach both vocabularies (each word here occurs once)
    assert [len(v) for v in build_vocabs(dataset, min_freq=2).values()] == [4, 4]  # specials
    assert [len(v) for v in build_vocabs(dataset, max_size=5).values()] == [5, 5]


def test_classification_and_tagging_targets():
    cls = TextDataset(
        "c",
        "classification",
        {
            "train": [
                {"tokens": ["good"], "label": 1},
                {"tokens": ["bad", "x"], "label": 0},
                {"tokens": ["fine"], "label": 1},
            ]
        },
    )
    vocabs = build_vocabs(cls)
    encoded = encode_split(cls, "train", vocabs)
    # "1" is the commoner label, so id 0: a target that was the raw label read as an id shows
    assert vocabs["label"].tokens == ("1", "0")
    assert [vocabs["label"].decode([e["targets"]])[0] for e in encoded] == ["1", "0", "1"]
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


def test_an_example_read_from_a_file_is_named_by_file_and_line(tmp_path):
    """An error found when a split read from a file is encoded names the example's first line
    (file:line, the readers' form), as well as the dataset and split; it named only the
    example's index. SST-2 drops the neutral trees, and still names the right line."""
    for name, text in [("train", "EU B-ORG\n"), ("valid", "EU B-ORG\n\n\nPeter B-PER\n")]:
        (tmp_path / f"{name}.txt").write_text(text)
    (tmp_path / "test.txt").write_text("EU B-ORG\n")
    conll = load_dataset("conll2003", manual_dir=tmp_path)
    valid = re.escape(str(tmp_path / "valid.txt"))
    with pytest.raises(
        DataFormatError, match=rf"^{valid}:4: 'conll2003' split 'valid': token 'B-PER'"
    ):
        encode_split(conll, "valid", build_vocabs(conll))
    for name in ("train", "test"):
        (tmp_path / f"{name}.txt").write_text("(4 (4 good))\n")
    (tmp_path / "dev.txt").write_text("(2 (2 so-so))\n(4 (4 fine))\n(2 (2 meh))\n(0 (0 bad))\n")
    sst2 = load_dataset("sst2", manual_dir=tmp_path)
    assert sst2.splits["valid"] == [
        {"tokens": ["fine"], "label": 1},
        {"tokens": ["bad"], "label": 0},
    ]
    with pytest.raises(
        DataFormatError, match=rf"^{re.escape(str(tmp_path / 'dev.txt'))}:4: 'sst2' split 'valid': "
    ):
        encode_split(sst2, "valid", build_vocabs(sst2))


def test_a_tag_unseen_in_training_names_split_and_example():
    tag = TextDataset(
        "t",
        "tagging",
        {
            "train": [{"tokens": ["EU"], "tags": ["B-ORG"]}],
            "valid": [{"tokens": ["a"], "tags": ["B-ORG"]}, {"tokens": ["b"], "tags": ["B-PER"]}],
        },
    )
    vocabs = build_vocabs(tag)
    # A DataFormatError, which the command line reports in one line (a ValueError was a
    # traceback).
    with pytest.raises(
        DataFormatError,
        match=r"'t' split 'valid', example 1 \(0-based, in file order\): token 'B-PER'",
    ):
        encode_split(tag, "valid", vocabs)
    # Misaligned examples, which padding would have scored against pad or `<unk>` targets.
    tag.splits["valid"][1] = {"tokens": ["b", "c"], "tags": ["B-ORG"]}
    with pytest.raises(DataFormatError, match=r"example 1 \(0-based, .*\): 2 tokens but 1 tags"):
        encode_split(tag, "valid", vocabs)
    lm = TextDataset("lm", "language_modeling", {"train": [{"tokens": ["a"]}, {"tokens": []}]})
    with pytest.raises(ValueError, match=r"'lm' split 'train', example 1 .*: no tokens"):
        encode_split(lm, "train", build_vocabs(lm))
    # Empty examples of the other tasks got as far as pad_batch, which named no example.
    for task, empty in [
        ("tagging", {"tokens": [], "tags": []}),
        ("classification", {"tokens": [], "label": 1}),
        ("translation", {"source": [], "target": ["b"]}),
    ]:
        first = {"tokens": ["a"], "tags": ["O"], "label": 0, "source": ["a"], "target": ["b"]}
        data = TextDataset("e", task, {"train": [first, empty]})
        field = "source" if task == "translation" else "tokens"
        with pytest.raises(ValueError, match=rf"'e' split 'train', example 1 .*: no {field}"):
            encode_split(data, "train", build_vocabs(data))
    with pytest.raises(ValueError, match="no per-example encoding"):
        encode_split(TextDataset("c", "char_language_modeling", tag.splits), "train", vocabs)


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="split 'valid' is empty"):
        TextDataset("t", "tagging", {"train": [{"tokens": ["a"], "tags": ["O"]}], "valid": []})


def _numbered(lengths):
    """Examples whose scalar `targets` is their index, so batches say which examples they hold."""
    return [{"inputs": np.ones(n, np.int32), "targets": np.int32(i)} for i, n in enumerate(lengths)]


def test_training_batches_are_full_distinct_bucketed_and_seeded():
    lengths = np.random.default_rng(0).integers(1, 40, size=103)
    examples = _numbered(lengths)
    batches = list(training_batches(examples, 8, seed=3, bucket_pool=4))
    assert len(batches) == 103 // 8  # the partial batch is dropped
    ids = np.concatenate([b["targets"] for b in batches])
    assert all(len(b["targets"]) == 8 for b in batches) and len(set(ids)) == len(ids)
    for b in batches:  # padded to the batch's own longest example
        np.testing.assert_array_equal(b["lengths"], lengths[b["targets"]])
        assert b["inputs"].shape[1] == lengths[b["targets"]].max()
    unbucketed = list(training_batches(examples, 8, seed=3, bucket_pool=None))
    padding = [
        sum(b["inputs"].size - b["lengths"].sum() for b in run) for run in (batches, unbucketed)
    ]
    assert padding[0] < 0.5 * padding[1], padding
    again = list(training_batches(examples, 8, seed=3, bucket_pool=4))
    other = list(training_batches(examples, 8, seed=4, bucket_pool=4))
    np.testing.assert_array_equal(np.concatenate([b["targets"] for b in again]), ids)
    assert not np.array_equal(np.concatenate([b["targets"] for b in other]), ids)


def test_check_training_batch_size_refuses_exactly_the_sizes_that_give_no_batch():
    from rnn_jax.train.config import ConfigError

    examples = _numbered([1, 2, 3])
    check_training_batch_size(examples, 3, dataset="d")  # one full batch: accepted
    assert len(training_batches(examples, 3, seed=0)) == 1
    with pytest.raises(ConfigError, match=r"^train.batch_size=4: the 'train' split of 'd' has 3 "):
        check_training_batch_size(examples, 4, dataset="d")
    with pytest.raises(ValueError, match="give no batch"):  # what the check stands in for
        training_batches(examples, 4, seed=0)
    with pytest.raises(ConfigError, match=r"^translation.batch_size=9: .* has 3 pairs, fewer"):
        check_training_batch_size(
            examples, 9, dataset="d", key="translation.batch_size", unit="pairs"
        )
    # the settings that cut the split to its size, named where the caller has them
    with pytest.raises(ConfigError, match=r"^x=9: .* has 3 sentences, fewer .* \(kept by y=2\)$"):
        check_training_batch_size(examples, 9, dataset="d", key="x", cut_by="y=2")


def test_evaluation_batches_hold_every_example_once_longest_first():
    lengths = np.random.default_rng(1).integers(1, 30, size=23)
    batches = evaluation_batches(_numbered(lengths), 5)
    # every batch full (shardable over devices); the 2 filler rows of the last weigh 0
    assert [len(b["targets"]) for b in batches] == [5, 5, 5, 5, 5]
    weights = np.concatenate([b["weight"] for b in batches])
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, [1.0] * 23 + [0.0] * 2)
    ids = np.concatenate([b["targets"] for b in batches])[weights > 0]
    assert sorted(ids) == list(range(23))
    assert np.all(np.diff(lengths[ids]) <= 0)
    last = batches[-1]  # fillers copy its shortest example: its width does not grow
    np.testing.assert_array_equal(last["targets"][3:], [ids[-1], ids[-1]])
    assert last["inputs"].shape[1] == lengths[ids[20:]].max()
    assert all(b["weight"].sum() == 5 for b in evaluation_batches(_numbered(lengths[:20]), 5))
    with pytest.raises(ValueError, match="batch_size=0"):
        evaluation_batches(_numbered(lengths), 0)
    with pytest.raises(ValueError, match=r"got no examples \(empty split\)"):
        evaluation_batches([], 5)
    with pytest.raises(ValueError, match="'weight' field"):
        evaluation_batches([{**e, "weight": np.float32(1)} for e in _numbered(lengths)], 5)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("text:~/a.txt", "tokens"),
        ("tsv:~/a.tsv", "label"),
        ("conll:~/a.conll", "tags"),
        ("parallel:~/a.en,~/a.de", "target"),
    ],
)
def test_user_files_expand_the_home_folder(home, spec, field):
    # "text:~/a.txt" was opened literally (./~/a.txt), while lm_corpus and data_root expand ~.
    (home / "a.txt").write_text("a b\n")
    (home / "a.tsv").write_text("a b\t1\n")
    (home / "a.conll").write_text("a X\nb Y\n\n")
    (home / "a.en").write_text("a b\n")
    (home / "a.de").write_text("c d\n")
    (example,) = load_dataset(spec).splits["train"]
    assert field in example
