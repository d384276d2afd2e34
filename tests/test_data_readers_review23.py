"""Review 23 of the data readers, vocabularies and data root: each test failed before its fix,
except the last, which checks the readers against a plain-Python parse of the real files."""

import pytest

from rnn_jax.data import readers
from rnn_jax.data.readers import DataFormatError


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_conll_columns_are_split_at_ascii_spaces_and_tabs_only(tmp_path):
    """`line.split()` also split at a no-break space (U+00A0) or an ideographic space
    (U+3000) inside a token: "8\\xa01/2 CD B-NP O" was five columns, so the file's first
    token line set five and the next (four) was refused; a token with one later was refused
    as a line of the wrong width."""
    path = _write(
        tmp_path / "a.txt",
        "8\xa01/2 CD B-NP O\nx  NN\tB-NP O \n\n\u6771\u3000\u4eac NNP B-NP B-LOC\n",
    )
    assert list(readers.read_conll(path)) == [
        {"tokens": ["8\xa01/2", "x"], "tags": ["O", "O"]},
        {"tokens": ["\u6771\u3000\u4eac"], "tags": ["B-LOC"]},
    ]


def test_a_docstart_line_ends_the_sentence_before_it(tmp_path):
    """A `-DOCSTART-` line with no blank line before it was skipped inside the block, so the
    last sentence of one document and the first of the next were read as one sentence."""
    path = _write(
        tmp_path / "b.txt",
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\n",
    )
    assert list(readers.read_conll(path)) == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter"], "tags": ["B-PER"]},
    ]
    # Lines of a wrong width after a DOCSTART line are still named.
    bad = _write(tmp_path / "c.txt", "-DOCSTART- -X- -X- O\nEU NNP B-NP B-ORG\nPeter NNP\n")
    with pytest.raises(DataFormatError, match=r"c.txt:3: expected 4 columns"):
        list(readers.read_conll(bad))


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


def test_the_data_root_and_manual_dir_expand_the_home_folder(tmp_path, monkeypatch):
    """`data_root="~/data"` (a config's data.root, `stats --data_root=~/data`, a quoted
    RNN_JAX_DATA) and `manual_dir="~/..."` were taken literally: "manual_dir '~/data/sst'
    ... does not exist", though the TFDS data_dir/manual_dir expand `~`."""
    from rnn_jax.data.registry import load_dataset

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data" / "sst").mkdir(parents=True)
    for name in ("train", "dev", "test"):
        _write(tmp_path / "data" / "sst" / f"{name}.txt", "(3 (2 a) (4 b))\n")
    monkeypatch.chdir(tmp_path / "data")  # where a literal "~" folder would be looked for
    expected = {split: [{"tokens": ["a", "b"], "label": 3}] for split in ("train", "valid", "test")}
    assert load_dataset("sst", data_root="~/data").splits == expected
    assert load_dataset("sst", manual_dir="~/data/sst").splits == expected
    monkeypatch.setenv("RNN_JAX_DATA", "~/data")
    assert load_dataset("sst").splits == expected


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


def test_readers_equal_an_independent_parse_of_the_real_dev_files(data_root):
    """The readers' examples against a plain-Python parse of the published dev files: CoNLL-2003
    NER is column 3 with -DOCSTART- lines skipped; UD words are the integer-id lines (README:
    359 multiword tokens and 4 empty nodes in dev); SST's label is the root's and its words the
    leaves. The dev files only: a second of reading at most."""
    import collections
    import re

    path = data_root / "conll2003" / "valid.txt"
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b[:10] != "-DOCSTART-"]
    rows = [[line.split(" ") for line in b.strip().split("\n")] for b in blocks]
    assert list(readers.read_conll(path)) == [
        {"tokens": [r[0] for r in s], "tags": [r[3] for r in s]} for s in rows
    ]

    path = data_root / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    text = path.read_text(encoding="utf-8")
    lines = [line.split("\t") for line in text.split("\n") if line and line[0] != "#"]
    assert collections.Counter(
        "-" if "-" in c[0] else "." if "." in c[0] else "word" for c in lines
    ) == {"word": 25_147, "-": 359, ".": 4}
    sentences = [
        [c for c in (line.split("\t") for line in b.split("\n")) if c[0].isdigit()]
        for b in text.strip().split("\n\n")
    ]
    ud = list(readers.read_conllu(path))
    assert [e["tokens"] for e in ud] == [[c[1] for c in s] for s in sentences]
    assert [e["upos"] for e in ud] == [[c[3] for c in s] for s in sentences]
    assert [e["heads"] for e in ud] == [[int(c[6]) for c in s] for s in sentences]

    path = data_root / "sst" / "dev.txt"
    trees = path.read_text(encoding="utf-8").splitlines()
    assert list(readers.read_sst(path)) == [
        {"tokens": re.findall(r"\([0-4] ([^()]+?)\)", t), "label": int(t[1])} for t in trees
    ]


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
