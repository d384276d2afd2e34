"""Language-model corpora: real PTB / Tiny Shakespeare counts, Markov and users' text."""

import numpy as np
import pytest

from rnn_jax.data import LMStream, MarkovLanguage, lm_corpus
from rnn_jax.data.corpora import split_paths
from rnn_jax.data.lm_corpus import markov_lm, ptb_lm, text_lm, tiny_shakespeare_lm


@pytest.fixture(scope="session")
def ptb(data_root):
    return lm_corpus("ptb", data_root)


def test_ptb_counts_match_the_literature(ptb, data_root):
    assert {s: len(ids) for s, ids in ptb.splits.items()} == {
        "train": 929_589,
        "valid": 73_760,
        "test": 82_430,
    }
    assert len(ptb.vocab) == 10_000 and ptb.vocab.num_specials == 0
    # One <eos> per line: 42,068 / 3,370 / 3,761 lines.
    eos = ptb.vocab.eos_id
    assert [int((ids == eos).sum()) for ids in ptb.splits.values()] == [42_068, 3_370, 3_761]
    first_line = (data_root / "ptb" / "ptb.train.txt").open().readline().split()
    assert ptb.vocab.decode(ptb.splits["train"][: len(first_line) + 1]) == first_line + ["<eos>"]


def test_ptb_stream_has_the_tutorials_epoch_size(ptb):
    # TensorFlow PTB tutorial, small config (batch 20, 35 steps): ((929589 // 20) - 1) // 35.
    assert len(LMStream(ptb.splits["train"], 20, 35)) == 1327


def test_tiny_shakespeare_split_and_vocabulary(data_root):
    corpus = lm_corpus("tiny_shakespeare", data_root)
    lengths = {s: len(ids) for s, ids in corpus.splits.items()}
    assert lengths == {"train": 1_003_854, "valid": 55_770, "test": 55_770}
    assert sum(lengths.values()) == 1_115_394 and len(corpus.vocab) == 65
    text = (data_root / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert "".join(corpus.vocab.decode(corpus.splits["test"])) == text[1_059_624:]


def test_markov_corpus_and_user_text(tmp_path, monkeypatch):
    lang = MarkovLanguage(vocab_size=5, order=2)
    sizes = {"train": 3000, "valid": 500, "test": 40}  # split k is stream([seed, k]), in order
    corpus = markov_lm(lang, sizes, seed=1)
    assert len(corpus.vocab) == 5 and len(corpus.splits["valid"]) == 500
    for k, (split, n) in enumerate(sizes.items()):
        np.testing.assert_array_equal(corpus.splits[split], lang.stream([1, k], n))
    (tmp_path / "train.txt").write_text("a b\nb c a\n")
    (tmp_path / "valid.txt").write_text("a z\n")
    corpus = text_lm(tmp_path / "train.txt", tmp_path / "valid.txt")
    assert corpus.vocab.decode(corpus.splits["valid"]) == ["a", "<unk>", "<eos>"]
    assert lm_corpus(f"text:{tmp_path / 'train.txt'}").splits["train"].shape == (7,)
    # A leading ~ is the home folder, as in data_root: "text:~/train.txt" was taken literally.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert lm_corpus("text:~/train.txt,~/valid.txt").splits["valid"].shape == (3,)


def test_unknown_corpus_lists_the_choices():
    with pytest.raises(ValueError, match="'wikitext'.*'ptb', 'tiny_shakespeare', 'markov'"):
        lm_corpus("wikitext")
    # the name is checked before the folder (a missing one would hide the typo)
    with pytest.raises(ValueError, match=r"unknown corpus 'wikitext'; known corpora: \[.*'ptb'"):
        split_paths("wikitext", "/nonexistent")


def test_default_markov_corpus():
    """'markov': `MarkovLanguage()` with the documented split sizes, split k = stream([0, k])."""
    corpus = lm_corpus("markov")
    assert corpus.vocab.tokens == tuple(str(i) for i in range(16))
    assert {s: len(t) for s, t in corpus.splits.items()} == {
        "train": 200_000,
        "valid": 20_000,
        "test": 20_000,
    }
    np.testing.assert_array_equal(corpus.splits["valid"], MarkovLanguage().stream([0, 1], 20_000))


@pytest.mark.parametrize("spec", ["text:", "text:a,b,c,d", "text:a,,c", "text:a,"])
def test_bad_text_corpus_spec_is_named(spec):
    """Four paths raised TypeError from text_lm's signature; an empty path, "data file ''
    does not exist": neither named the spec."""
    with pytest.raises(ValueError, match=rf"'{spec}' is not text:TRAIN\[,VALID\[,TEST\]\]"):
        lm_corpus(spec)


def test_a_corpus_file_given_as_its_folder_is_named_as_such(tmp_path):
    """manual_dir pointing at a file said it "does not exist", though it is there."""
    (tmp_path / "ptb.train.txt").write_text("a\n")
    (tmp_path / "ptb.valid.txt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"ptb\.train\.txt' for corpus 'ptb' is not a dir"):
        ptb_lm(tmp_path / "ptb.train.txt")
    with pytest.raises(FileNotFoundError, match=r"ptb\.valid\.txt is not a file"):
        ptb_lm(tmp_path)


def test_a_corpus_folder_under_the_home_folder(home):
    """`~` in a corpus folder was taken literally: ptb_lm("~/ptb") said it "does not exist"."""
    (home / "ptb").mkdir()
    for split, text in (("train", "a b\n"), ("valid", "b\n"), ("test", "a c\n")):
        (home / "ptb" / f"ptb.{split}.txt").write_text(text)
    corpus = ptb_lm("~/ptb")
    assert corpus.vocab.decode(corpus.splits["test"]) == ["a", "<unk>", "<eos>"]
    (home / "ts").mkdir()
    (home / "ts" / "input.txt").write_text("ab" * 20)
    assert len(tiny_shakespeare_lm("~/ts").splits["valid"]) == 2
