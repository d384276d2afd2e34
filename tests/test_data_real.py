"""The real corpora in ../shared/data through our loaders: counts equal its README.

Every dataset is read once per session (a few seconds in all); tests skip with a reason
when the data root is absent (the `data_root` fixture).
"""

import collections
import json

import numpy as np
import pytest
from data_cache import cached_dataset

from rnn_jax.data import BatchIterator
from rnn_jax.data.corpora import verify_files
from rnn_jax.data.pipeline import build_vocabs, collate_for, encode_split
from rnn_jax.data.stats import dataset_stats, main


@pytest.fixture(scope="session")
def load(data_root):
    return lambda name: cached_dataset(name, str(data_root))


def _counts(dataset, field=None):
    examples = {s: len(e) for s, e in dataset.splits.items()}
    tokens = {s: sum(len(t) for t in dataset.token_lists(s, field)) for s in dataset.splits}
    return examples, tokens


def test_ptb_stats_json(load):
    stats = dataset_stats(load("ptb"))
    assert stats["vocab_size"] == 10_000 and stats["num_specials"] == 0
    assert {s: v["tokens"] for s, v in stats["splits"].items()} == {
        "train": 929_589,
        "valid": 73_760,
        "test": 82_430,
    }
    assert {s: v["examples"] for s, v in stats["splits"].items()} == {
        "train": 42_068,
        "valid": 3_370,
        "test": 3_761,
    }
    assert all(v["oov_rate"] == 0.0 for v in stats["splits"].values())  # closed 10k vocabulary


def test_ud_english_ewt(load):
    dataset = load("ud_en_ewt")
    examples, tokens = _counts(dataset)
    assert examples == {"train": 12_544, "valid": 2_001, "test": 2_077}
    assert tokens == {"train": 204_577, "valid": 25_147, "test": 25_094}
    assert len(build_vocabs(dataset)["tags"]) == 18  # 17 UPOS tags + <pad>


def test_conll2003_sentences_tokens_and_entities(load):
    dataset = load("conll2003")
    examples, tokens = _counts(dataset)
    assert examples == {"train": 14_041, "valid": 3_250, "test": 3_453}
    assert tokens == {"train": 203_621, "valid": 51_362, "test": 46_435}
    entities = collections.Counter(
        tag[2:] for e in dataset.splits["train"] for tag in e["tags"] if tag.startswith("B-")
    )
    assert entities == {"PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_438}


def test_multi30k_pairs_and_words(load):
    dataset = load("multi30k")
    examples, english = _counts(dataset, "source")
    assert examples == {"train": 29_000, "valid": 1_014, "test": 1_000}
    assert english == {"train": 345_020, "valid": 12_167, "test": 11_877}
    assert _counts(dataset, "target")[1] == {"train": 322_383, "valid": 11_568, "test": 10_905}


def test_sst_five_class_and_binary(load):
    sst = load("sst")
    examples, leaves = _counts(sst)
    assert examples == {"train": 8_544, "valid": 1_101, "test": 2_210}
    # The README counts leaves matching \S+; three train leaves hold a non-breaking space
    # ("8\xa01\/2", "2\xa01\/2" twice), which are single words in the trees.
    assert leaves == {"train": 163_560 + 3, "valid": 21_274, "test": 42_405}
    labels = collections.Counter(e["label"] for e in sst.splits["train"])
    assert [labels[k] for k in range(5)] == [1_092, 2_218, 1_624, 2_322, 1_288]
    sst2 = load("sst2")
    assert {s: len(e) for s, e in sst2.splits.items()} == {
        "train": 6_920,
        "valid": 872,
        "test": 1_821,
    }
    assert collections.Counter(e["label"] for e in sst2.splits["train"]) == {0: 3_310, 1: 3_610}


def test_tiny_shakespeare_characters(load):
    dataset = load("tiny_shakespeare")
    _, chars = _counts(dataset)
    assert chars == {"train": 1_003_854, "valid": 55_770, "test": 55_770}
    assert dataset_stats(dataset)["vocab_size"] == 65


def test_checksums_of_every_shared_file(data_root, tmp_path):
    for name in ("ptb", "tiny_shakespeare", "multi30k", "sst", "ud_english_ewt", "conll2003"):
        verify_files(name, data_root / name)
    # ... and a file that is not the published one is refused (else the loop above can't fail)
    (tmp_path / "input.txt").write_text("First Citizen:\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"input.txt: sha256 [0-9a-f]{64} differs from .*86c4e6"):
        verify_files("tiny_shakespeare", tmp_path)


def test_tagging_batches_match_the_sentences(load):
    dataset = load("conll2003")
    vocabs = build_vocabs(dataset)
    valid = encode_split(dataset, "valid", vocabs)
    iterator = BatchIterator(valid, 64, seed=0, bucket_pool=20, collate=collate_for(dataset))
    seen = 0
    for plan, batch in zip(iterator.plan(), iterator, strict=True):
        for row, index in enumerate(plan):
            sentence = dataset.splits["valid"][index]
            n = len(sentence["tokens"])
            assert batch["lengths"][row] == n and batch["mask"][row].sum() == n
            assert vocabs["tags"].decode(batch["targets"][row, :n]) == sentence["tags"]
            # ... and the words are the sentence's, in order (valid words unseen in train: unk)
            words = vocabs["tokens"]
            known = [t if t in words else words.unk for t in sentence["tokens"]]
            assert words.decode(batch["inputs"][row, :n]) == known
            assert np.all(batch["targets"][row, n:] == vocabs["tags"].pad_id)
        seen += len(plan)
    assert seen == 3_250


def test_cli_prints_json_and_fails_clearly(data_root, capsys):
    assert main([f"--dataset=conll:{data_root / 'conll2003' / 'valid.txt'}"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"] == {"train": {"examples": 3_250, "tokens": 51_362, "oov_rate": 0.0}}
    assert stats["num_specials"] == 2  # <pad>, <unk> added for tagging
    assert (
        main(["--dataset=tiny_shakespeare", f"--manual_dir={data_root / 'tiny_shakespeare'}"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["splits"]["valid"]["tokens"] == 55_770
    assert main(["--dataset=ptb", f"--manual_dir={data_root / 'sst'}"]) == 2
    assert "ptb.train.txt is missing" in capsys.readouterr().err
