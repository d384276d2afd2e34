"""Bad data gets a message naming it: bytes that are not UTF-8 (file:line) in every reader,
Tiny Shakespeare files too short for the split, CoNLL-U integers in other scripts' digits, a
directory given as a data file, a broken vocabulary file, a missing length key."""

import os

import pytest

from rnn_jax.data import DataFormatError, data_files, lm_corpus, readers, stats
from rnn_jax.data.registry import load_dataset

CONLLU_LINE = "{id}\t{form}\t_\tX\tX\t_\t{head}\t_\t_\t_\n"


def _conllu(*words: tuple[str, str, str]) -> str:
    return "".join(CONLLU_LINE.format(id=i, form=f, head=h) for i, f, h in words)


# kind -> (files to write, with b"\xff" on line 2 of the one named first; the reader's call)
NON_UTF8 = {
    "text": ({"a.txt": b"the cat\nsat \xff on\n"}, lambda p: readers.read_text(p["a.txt"])),
    "text_char": (
        {"a.txt": b"the cat\nsat \xff on\n"},
        lambda p: readers.read_text(p["a.txt"], level="char"),
    ),
    "conllu": (
        {"a.conllu": _conllu(("1", "a", "0")).encode() + b"2\t\xff\t_\tX\tX\t_\t1\t_\t_\t_\n"},
        lambda p: readers.read_conllu(p["a.conllu"]),
    ),
    "conll": (
        {"a.conll": b"EU NNP B-ORG\n\xe9t NNP O\n"},
        lambda p: readers.read_conll(p["a.conll"]),
    ),
    "tsv": ({"a.tsv": b"a b\t1\nc \xff\t0\n"}, lambda p: readers.read_tsv(p["a.tsv"])),
    "sst": (
        {"a.txt": b"(3 (2 a) (4 b))\n(3 (2 \xff) (4 b))\n"},
        lambda p: readers.read_sst(p["a.txt"]),
    ),
    "parallel": (
        {"a.de": b"x\n\xffy\n", "a.en": b"a\nb\n"},
        lambda p: readers.read_parallel(p["a.en"], p["a.de"]),
    ),
}


@pytest.mark.parametrize("kind", sorted(NON_UTF8))
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, kind):
    files, read = NON_UTF8[kind]
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    bad = next(iter(files))
    with pytest.raises(DataFormatError, match=rf"{bad}:2: not UTF-8: bytes b'\\x(ff|e9)'"):
        list(read(paths))


def test_a_truncated_multibyte_character_is_named(tmp_path):
    # "é" is C3 A9; C3 alone (cut by an editor) at the end of line 3.
    path = tmp_path / "cut.txt"
    path.write_bytes("caf\u00e9\nna\u00efve\nand caf".encode() + b"\xc3\n")
    with pytest.raises(DataFormatError, match=r"cut.txt:3: not UTF-8: bytes b'\\xc3' at column 8"):
        list(readers.read_text(path))


def test_valid_utf8_and_line_endings_read_as_before(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_bytes("caf\u00e9 \U0001f600\r\nb\rc\n".encode())
    assert list(data_files.read_lines(path)) == [(1, "caf\u00e9 \U0001f600"), (2, "b"), (3, "c")]
    assert data_files.read_file_text(path) == "caf\u00e9 \U0001f600\r\nb\rc\n"
    chars = [e["tokens"] for e in readers.read_text(path, level="char")]
    assert chars[1:] == [["b", "\r"], ["c", "\n"]]


def test_stats_names_the_bad_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_bytes(b"fine\nnot \xff fine\n")
    assert stats.main([f"--dataset=text:{path}"]) == 2
    assert f"error: {path}:2: not UTF-8" in capsys.readouterr().err


def _tiny_shakespeare_root(tmp_path, data: bytes):
    (tmp_path / "tiny_shakespeare").mkdir()
    (tmp_path / "tiny_shakespeare" / "input.txt").write_bytes(data)
    return tmp_path


LOADERS = {
    "lm_corpus": lambda root: lm_corpus("tiny_shakespeare", root),
    "load_dataset": lambda root: load_dataset("tiny_shakespeare", root),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"",
            r"input.txt: 0 characters are too few .* \['train', 'valid', 'test'\] would be empty",
        ),
        (b"ab", r"input.txt: 2 characters are too few .* \['valid'\] would be empty"),
        (b"abc\n" * 10 + b"Z", r"input.txt: the test part \(from character 38\) .* \['Z'\]"),
        (b"First Citizen:\nBefore \xff we\n", r"input.txt:2: not UTF-8: bytes b'\\xff'"),
    ],
    ids=["empty", "two_characters", "unseen_character", "not_utf8"],
)
def test_bad_tiny_shakespeare_file_is_named(tmp_path, loader, data, message):
    root = _tiny_shakespeare_root(tmp_path, data)
    with pytest.raises(DataFormatError, match=message):
        LOADERS[loader](root)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_short_tiny_shakespeare_file_that_splits_is_read(tmp_path, loader):
    root = _tiny_shakespeare_root(tmp_path, b"abc\n" * 10)
    sizes = {s: len(v) for s, v in LOADERS[loader](root).splits.items()}
    # 40 characters cut at 36 and 38; load_dataset gives one example per line.
    expected = (36, 2, 2) if loader == "lm_corpus" else (9, 1, 1)
    assert sizes == dict(zip(("train", "valid", "test"), expected, strict=True))


@pytest.mark.parametrize(
    "words, message",
    [
        ((("\u00b9", "a", "0"),), r"sup.conllu:1: word id '\u00b9' should be 1"),
        ((("1", "a", "0"), ("2", "b", "\u00b9")), r"sup.conllu:2: HEAD '\u00b9' is not an integer"),
        ((("1", "a", "\u0660"),), r"sup.conllu:1: HEAD '\u0660' is not an integer"),
    ],
    ids=["superscript_id", "superscript_head", "arabic_indic_head"],
)
def test_conllu_integers_are_ascii_digits(tmp_path, words, message):
    path = tmp_path / "sup.conllu"
    path.write_text(_conllu(*words), encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        list(readers.read_conllu(path))


# A UTF-8 byte order mark (what Windows editors put first) is an encoding signature, not text.
BOM = "\ufeff"
WITH_BOM = {
    "text": ("a.txt", "the cat\n", lambda p: [e["tokens"] for e in readers.read_text(p)]),
    "text_char": (
        "a.txt",
        "ab\n",
        lambda p: [e["tokens"] for e in readers.read_text(p, level="char")],
    ),
    "conll": (
        "a.conll",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n",
        lambda p: list(readers.read_conll(p)),
    ),
    "conllu": ("a.conllu", "# sent_id = 1\n" + _conllu(("1", "a", "0")), readers.read_conllu),
    "tsv": ("a.tsv", "good film\t1\n", lambda p: list(readers.read_tsv(p))),
    "sst": ("a.txt", "(3 (2 a) (4 b))\n", lambda p: list(readers.read_sst(p))),
    "file_text": ("a.txt", "ab\ncd", data_files.read_file_text),
}


@pytest.mark.parametrize("kind", sorted(WITH_BOM))
def test_a_byte_order_mark_is_not_read_as_text(tmp_path, kind):
    """With the BOM, `read_conll` took "\\ufeff-DOCSTART-" for a token (a one-word sentence)
    and every reader glued U+FEFF to the first token (a vocabulary entry of its own)."""
    name, text, read = WITH_BOM[kind]
    plain, marked = tmp_path / f"plain_{name}", tmp_path / f"bom_{name}"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(BOM + text, encoding="utf-8")
    expected = read(plain)
    if not isinstance(expected, str):
        expected = list(expected)
    got = read(marked)
    assert (got if isinstance(got, str) else list(got)) == expected


def test_a_file_of_only_a_byte_order_mark_is_an_empty_split(tmp_path):
    """A file of the mark alone (an empty file saved by some Windows editors) was read as one
    blank line: `read_text(eos="<eos>")` gave the split `[["<eos>"]]` where the same file
    without the mark is refused as an empty split."""
    path = tmp_path / "a.txt"
    path.write_text(BOM, encoding="utf-8")
    assert list(data_files.read_lines(path)) == []
    with pytest.raises(DataFormatError, match=r"a.txt: no examples .*empty split"):
        list(readers.read_text(path, eos="<eos>"))


def test_a_byte_order_mark_inside_the_file_is_kept(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(f"a\nb{BOM}c\n", encoding="utf-8")
    assert list(data_files.read_lines(path)) == [(1, "a"), (2, f"b{BOM}c")]


@pytest.mark.parametrize("word_id", ["2.", "2-", "-2", "2-x", "2.1.1", "2..1"])
def test_conllu_malformed_ids_are_not_skipped(tmp_path, word_id):
    """Only `a-b` (a multiword token) and `a.b` (an empty node) lines are skipped; any other id
    holding '-' or '.' was skipped too, so a sentence's last word was silently lost."""
    path = tmp_path / "ids.conllu"
    path.write_text(_conllu(("1", "a", "0"), (word_id, "b", "1")), encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"ids.conllu:2: word id '{word_id}' should be 2"):
        list(readers.read_conllu(path))


def test_conllu_head_must_be_a_word_of_its_sentence(tmp_path):
    """HEAD is 0 (the root) or the id of a word of the same sentence."""
    path = tmp_path / "heads.conllu"
    first, second = (
        _conllu(("1", "a", "0"), ("2", "b", "1")),
        _conllu(("1", "c", "2"), ("2", "d", "3")),
    )
    path.write_text(first + "\n" + second, encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"heads.conllu:5: HEAD 3 is not 0 or a word id 1-2"):
        list(readers.read_conllu(path))
    # a word may head a later word: the check waits for the sentence's end
    path.write_text(_conllu(("1", "a", "2"), ("2", "b", "0")), encoding="utf-8")
    assert [s["heads"] for s in readers.read_conllu(path)] == [[2, 0]]


def test_directory_data_file_broken_vocabulary_and_missing_length_key_are_named(tmp_path):
    """A directory given as a data file was said not to exist; a corrupt vocabulary file
    raised JSON's or a KeyError's message without the file; a length_key the examples lack
    was a bare KeyError."""
    from rnn_jax.data import pipeline, readers
    from rnn_jax.data.vocab import Vocabulary

    with pytest.raises(FileNotFoundError, match="is a directory, not a file"):
        list(readers.read_tsv(tmp_path))
    os.mkfifo(tmp_path / "fifo")  # exists, not a regular file: was "does not exist"
    with pytest.raises(FileNotFoundError, match="fifo' is not a regular file"):
        list(readers.read_tsv(tmp_path / "fifo"))
    broken = tmp_path / "vocab.json"
    for text in ("{not json", '{"tokens": ["a"]}', "[1, 2]"):
        broken.write_text(text)
        with pytest.raises(ValueError, match=r"vocab.json: not a saved vocabulary"):
            Vocabulary.load(broken)
    examples = [{"source": [1, 2], "target": [3]}]
    with pytest.raises(ValueError, match=r"length_key='inputs' is not a field .*'source'"):
        pipeline.evaluation_batches(examples, 2)


def test_a_text_dataset_names_a_bad_task_split_or_field():
    from rnn_jax.data.registry import TextDataset

    train = {"train": [{"tokens": ["a"], "label": 1}]}
    with pytest.raises(ValueError, match=r"task='tagger'; known tasks: \['language_modeling'"):
        TextDataset("d", "tagger", train)
    with pytest.raises(ValueError, match=r"dataset 'd' has no train split: \['valid'\]"):
        TextDataset("d", "classification", {"valid": train["train"]})
    dataset = TextDataset("d", "classification", train)
    with pytest.raises(ValueError, match=r"split='dev'; 'd' has \['train'\]"):
        dataset.token_lists("dev")
    with pytest.raises(ValueError, match=r"field='tags' is not in 'd' examples: \['tokens', 'l"):
        dataset.label_vocab()
    assert dataset.label_vocab("label").tokens == ("1",)  # a scalar label: no <pad>
