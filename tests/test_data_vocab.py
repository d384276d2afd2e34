"""Vocabulary and tokenisation: ids by frequency, specials, OOV, save/load round trip; data
tokens spelled like an added special, size checks, strings given as token sequences."""

import collections
import os

import numpy as np
import pytest

from rnn_jax.data.lm_corpus import tiny_shakespeare_lm
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
    # A fractional or string id was truncated or parsed: 4.7 decoded as "a", "5" as "b"; a bool
    # (a mask) decoded as "<unk>", and inf raised OverflowError.
    assert vocab.decode(np.array([4.0, 5.0])) == ["a", "b"]
    for bad in (4.7, "5", True, float("inf")):
        with pytest.raises(ValueError, match=f"id {bad!r} is not an integer"):
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
    # ids or undecoded bytes for tokens all read as unk; `build` refuses them too
    vocab = Vocabulary.build(SENTENCES)
    for token in (5, b"a", None):
        with pytest.raises(TypeError, match=rf"token {token!r} \({type(token).__name__}\)"):
            vocab.encode(["a", token])
    np.testing.assert_array_equal(vocab.encode(["a", "zz"]), [vocab.encode(["a"])[0], vocab.unk_id])
    with pytest.raises(ValueError, match="no unk token"):
        _ = closed.unk_id


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build([["é", "ß", "a"]], min_freq=1)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    np.testing.assert_array_equal(loaded.encode(["ß", "x"]), vocab.encode(["ß", "x"]))
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        Vocabulary.load(tmp_path / "missing.json")
    with pytest.raises(
        FileNotFoundError, match="is a directory, not a file"
    ):  # was "does not exist"
        Vocabulary.load(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # exists, but not a regular file: was "does not exist" too
    with pytest.raises(FileNotFoundError, match="fifo.json is not a regular file"):
        Vocabulary.load(fifo)


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
    for small in (2, 3):  # 3, one less than the 4 specials, sliced rest[:-1]: 7 tokens kept
        with pytest.raises(ValueError, match=f"max_size={small} is smaller than the 4 specials"):
            Vocabulary.build(SENTENCES, max_size=small)
    assert Vocabulary.build(SENTENCES, max_size=4).tokens == ("<pad>", "<unk>", "<bos>", "<eos>")
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary(("a", "a"), None, None, None, None)
    with pytest.raises(ValueError, match=r"Vocabulary unk='<unk>' is not one of its tokens"):
        Vocabulary(("a",), None, "<unk>", None, None)
    with pytest.raises(ValueError, match=r"distinct, got \['<x>', '<x>', '<bos>', '<eos>'\]"):
        Vocabulary.build(SENTENCES, pad="<x>", unk="<x>")
    # Tokens are strings: int tokens made a vocabulary that encoded every string as <unk>,
    # mixed ones failed in the sort ("'<' not supported"), and a saved "tokens": "abc" loaded
    # as the three characters.
    with pytest.raises(TypeError, match=r"token 1 \(int\) is not a string"):
        Vocabulary.build([["a", 1]])
    with pytest.raises(TypeError, match=r"token 2 \(int\) is not a string"):
        Vocabulary(("a", 2), None, None, None, None)
    saved = {"tokens": "abc", "pad": None, "unk": None, "bos": None, "eos": None}
    with pytest.raises(ValueError, match="tokens='abc' is not a list"):
        Vocabulary.from_dict({**saved, "added_specials": []})


def test_tokenizers():
    assert word_tokens(" the  cat\tsat \n") == ["the", "cat", "sat"]
    assert char_tokens("a b\n") == ["a", " ", "b", "\n"]
    # Running text splits at a no-break space, as Multi30k's own tokeniser did ("Nummer\xa028."
    # in train.de is "nummer 28." in tok/); SST trees and CoNLL columns keep it in the token.
    assert word_tokens("Nummer\xa028.") == ["Nummer", "28."]
    assert get_tokenizer("char") is char_tokens
    with pytest.raises(ValueError, match="level='bpe'.*'word', 'char'"):
        get_tokenizer("bpe")


def test_a_data_token_spelled_like_an_added_special_is_unseen_in_training(tmp_path):
    """`oov_rate` ("the fraction of a split's tokens unseen in training", as `stats` reports
    it) counted a test token "<unk>" or "<pad>" as seen, because the vocabulary holds the
    specials the pipeline adds; it could not tell which those were (`num_specials` was only
    their number). Reference: tokens not in the set of training tokens, counted by hand."""
    from rnn_jax.data.vocab import Vocabulary

    train = [["a", "b", "<eos>"], ["b", "<eos>"]]
    test = [["a", "<unk>", "<pad>", "z", "<eos>"], ["<bos>", "b", "<eos>"]]
    vocab = Vocabulary.build(train)
    assert vocab.added_specials == ("<pad>", "<unk>", "<bos>") and vocab.num_specials == 3
    seen = {t for s in train for t in s}
    unseen = sum(t not in seen for s in test for t in s)
    assert unseen == 4
    assert vocab.oov_rate(test) == pytest.approx(unseen / 8)
    # Specials that occur in the training data are seen (PTB's <unk>: its OOV rate is 0).
    ptb_like = Vocabulary.build([["<unk>", "x", "<eos>"]], pad=None, bos=None)
    assert ptb_like.added_specials == () and ptb_like.oov_rate([["<unk>", "<eos>"]]) == 0.0
    # Which specials were added survives a save/load round trip.
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    with pytest.raises(ValueError, match=r"added_specials=\('x',\) must be distinct specials"):
        Vocabulary(("<pad>", "x"), "<pad>", None, None, None, ("x",))


def test_vocabulary_sizes_are_checked_and_named():
    """`min_freq=nan` passed `min_freq < 1` and kept no token (only the specials), silently;
    `max_size=2.5` failed in a slice ("slice indices must be integers") without its name,
    and `max_size=True` was a size of 1."""
    from rnn_jax.data.vocab import Vocabulary

    no_specials = {"pad": None, "unk": None, "bos": None, "eos": None}
    for kwargs, message in [
        ({"min_freq": float("nan")}, "min_freq=nan must be a number >= 1"),
        ({"min_freq": float("inf")}, "min_freq=inf must be a number >= 1"),
        ({"max_size": 2.5}, "max_size=2.5 must be an integer or None"),
        ({"max_size": True}, "max_size=True must be an integer or None"),
    ]:
        with pytest.raises(ValueError, match=message):
            Vocabulary.build([["a", "b", "a"]], **kwargs, **no_specials)
    # A real-valued min_freq still keeps the tokens seen at least that often.
    assert Vocabulary.build([["a", "b", "a"]], min_freq=1.5, **no_specials).tokens == ("a",)


def test_a_vocabulary_saved_with_a_count_of_added_specials_still_loads():
    """Dicts saved before `added_specials` hold `num_specials`: 0 or all of them is clear, a
    partial count is refused by name."""
    from rnn_jax.data.vocab import Vocabulary

    old = {
        "tokens": ["<pad>", "<unk>", "a"],
        "pad": "<pad>",
        "unk": "<unk>",
        "bos": None,
        "eos": None,
    }
    assert Vocabulary.from_dict({**old, "num_specials": 2}).added_specials == ("<pad>", "<unk>")
    assert Vocabulary.from_dict({**old, "num_specials": 0}).added_specials == ()
    with pytest.raises(ValueError, match="num_specials=1 .* which were added is unknown"):
        Vocabulary.from_dict({**old, "num_specials": 1})


def test_vocabulary_build_refuses_strings_for_token_sequences(tmp_path):
    """`Vocabulary.build(["a b", "c"])` read each string character by character: a vocabulary
    of 'a', ' ', 'b', 'c' with no error. Tiny Shakespeare's character vocabulary (the one
    caller that relied on it) is unchanged: every training character, by frequency then
    character, counted here by hand."""
    with pytest.raises(TypeError, match=r"sequences\[1\] is a string \('c d'\), not a seq"):
        Vocabulary.build([["a", "b"], "c d"])
    with pytest.raises(TypeError, match=r"sequences is a string \('a b'\); expected an it"):
        Vocabulary.build("a b")
    text = "ab\nba ca!\n" * 9 + "ab cab\n! ba"  # train: the first 90% of the characters
    (tmp_path / "input.txt").write_text(text)
    corpus = tiny_shakespeare_lm(tmp_path)
    train = text[: int(len(text) * 0.9)]
    counts = {c: train.count(c) for c in set(train)}
    assert corpus.vocab.tokens == tuple(sorted(counts, key=lambda c: (-counts[c], c)))
    assert corpus.vocab.num_specials == 0 and corpus.vocab.unk is None


def test_a_data_token_spelled_like_the_pad_is_not_padding():
    """A text's literal "<pad>" was encoded as pad_id, the id padding masks out (`ids !=
    pad_id`), so the word silently weighed nothing; it is an unseen word (unk). "<unk>" and
    "<eos>" in the data stay those specials (PTB); a closed vocabulary refuses a "<pad>"."""
    vocab = Vocabulary.build([["a", "<pad>", "<unk>", "<eos>"]], bos=None)
    assert vocab.added_specials == ("<pad>",) and vocab.tokens[:3] == ("<pad>", "<unk>", "<eos>")
    np.testing.assert_array_equal(vocab.encode(["a", "<pad>", "<unk>", "<eos>"]), [3, 1, 1, 2])
    assert "<pad>" not in vocab and "<unk>" in vocab and "a" in vocab  # as encode reads them
    with pytest.raises(ValueError, match=r"pad token '<pad>' \(sequences\[1\]\)"):
        Vocabulary.build([["A"], ["<pad>", "B"]], unk=None, bos=None, eos=None)
    with pytest.raises(ValueError, match=r"pad token '<pad>' \(the Counter\)"):
        Vocabulary.build(collections.Counter(["A", "<pad>"]), unk=None, bos=None, eos=None)
    tags = Vocabulary.build([["A"]], unk=None, bos=None, eos=None)
    with pytest.raises(ValueError, match="'<pad>' at position 1 is spelled like the pad"):
        tags.encode(["A", "<pad>"])
