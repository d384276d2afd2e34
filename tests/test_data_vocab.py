"""Vocabulary and tokenisation: ids by frequency, specials, OOV, save/load round trip."""

import collections
import os

import numpy as np
import pytest

from rnn_jax.data.tokenize import char_tokens, get_tokenizer, word_tokens
from rnn_jax.data.vocab import Vocabulary

SENTENCES = [["b", "a", "c"], ["a", "b", "a"], ["d"]]  # a:3 b:2 c:1 d:1


def test_ids_follow_specials_then_frequency_then_string():
    vocab = Vocabulary.build(SENTENCES)
    assert vocab.tokens == ("<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "d")
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.num_specials == 4
    np.testing.assert_array_equal(vocab.encode(["c", "zzz", "a"]), [6, 1, 4])
    assert vocab.encode(["a"]).dtype == np.int32
    assert vocab.decode([4, 5, 0]) == ["a", "b", "<pad>"]
    for bad in (-1, len(vocab)):  # -1 used to decode as the last token
        with pytest.raises(ValueError, match=f"id {bad} is outside the vocabulary"):
            vocab.decode([4, bad])


def test_min_freq_max_size_and_counter_input():
    counts = collections.Counter(t for s in SENTENCES for t in s)
    assert Vocabulary.build(counts, min_freq=2).tokens[4:] == ("a", "b")
    small = Vocabulary.build(SENTENCES, max_size=5, pad=None, bos=None, eos=None)
    assert small.tokens == ("<unk>", "a", "b", "c", "d")
    assert Vocabulary.build(SENTENCES, max_size=3, pad=None, bos=None, eos=None).tokens == (
        "<unk>",
        "a",
        "b",
    )


def test_specials_present_in_data_are_not_counted_as_added():
    vocab = Vocabulary.build([["x", "<eos>"], ["<unk>", "<eos>"]], pad=None, bos=None)
    assert vocab.num_specials == 0
    assert len(vocab) == 3


def test_oov_rate_and_closed_vocabulary():
    vocab = Vocabulary.build(SENTENCES)
    # 2 of the 5 tokens are unseen.
    assert vocab.oov_rate([["a", "q"], ["b", "c", "r"]]) == pytest.approx(2 / 5)
    closed = Vocabulary.build(SENTENCES, pad=None, unk=None, bos=None, eos=None)
    with pytest.raises(ValueError, match="'q' is not in this closed vocabulary"):
        closed.encode(["a", "q"])
    with pytest.raises(ValueError, match="no unk token"):
        _ = closed.unk_id


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build([["é", "ß", "a"]], min_freq=1)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    np.testing.assert_array_equal(loaded.encode(["ß", "x"]), vocab.encode(["ß", "x"]))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Vocabulary.load(tmp_path / "missing.json")


def test_save_replaces_the_file_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    old = Vocabulary.build([["a"]], min_freq=1)
    old.save(path)

    def interrupted(src, dst):
        raise OSError("interrupted before the rename")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="interrupted"):
        Vocabulary.build([["é", "ß"]], min_freq=1).save(path)
    assert Vocabulary.load(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.json"]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="min_freq=0"):
        Vocabulary.build(SENTENCES, min_freq=0)
    with pytest.raises(ValueError, match="max_size=2"):
        Vocabulary.build(SENTENCES, max_size=2)
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary(("a", "a"), None, None, None, None)


def test_tokenizers():
    assert word_tokens(" the  cat\tsat \n") == ["the", "cat", "sat"]
    assert char_tokens("a b\n") == ["a", " ", "b", "\n"]
    assert get_tokenizer("char") is char_tokens
    with pytest.raises(ValueError, match="level='bpe'.*'word', 'char'"):
        get_tokenizer("bpe")
