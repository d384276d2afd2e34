"""Strict readers on small hand-written files: parsed fields and clear errors (file:line);
columns split at ASCII whitespace only, DOCSTART ends a sentence, TSV columns counted from the
end, `~` in the data root, and the readers against a plain-Python parse of the real files."""

import pathlib

import pytest

from rnn_jax.data import data_files, readers
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.data.readers import parse_sst_tree


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_text_word_and_char(tmp_path):
    path = _write(tmp_path / "a.txt", " the cat \nsat\n")
    assert [e["tokens"] for e in readers.read_text(path, eos="<eos>")] == [
        ["the", "cat", "<eos>"],
        ["sat", "<eos>"],
    ]
    chars = [e["tokens"] for e in readers.read_text(path, level="char")]
    assert "".join(c for line in chars for c in line) == " the cat \nsat\n"


CONLLU = """# sent_id = 1
# text = Don't go
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_

#sent_id=2 (a comment is any line that starts with "#")
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_read_conllu_skips_multiword_tokens_and_empty_nodes(tmp_path):
    sentences = list(readers.read_conllu(_write(tmp_path / "a.conllu", CONLLU)))
    assert sentences[0]["tokens"] == ["Do", "n't", "go"]
    assert sentences[0]["upos"] == ["AUX", "PART", "VERB"]
    assert sentences[0]["heads"] == [3, 3, 0]
    assert sentences[1] == {
        "tokens": ["Hi"],
        "lemmas": ["hi"],
        "upos": ["INTJ"],
        "xpos": ["UH"],
        "heads": [0],
        "deprels": ["root"],
    }


def test_read_conllu_errors_name_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.conllu", CONLLU.replace("2\tn't\tnot\tPART", "2\tn't\tnot PART"))
    with pytest.raises(DataFormatError, match=r"bad.conllu:5: expected 10 tab-separated"):
        list(readers.read_conllu(bad))
    skipped = _write(
        tmp_path / "ids.conllu", "1\ta\t_\t_\t_\t_\t0\t_\t_\t_\n3\tb\t_\t_\t_\t_\t1\t_\t_\t_\n"
    )
    with pytest.raises(DataFormatError, match=r"ids.conllu:2: word id '3' should be 2"):
        list(readers.read_conllu(skipped))
    # An empty FORM or UPOS became the token or tag "" ("fields must not be empty"), and a
    # line of a no-break space (Unicode whitespace, not a blank line) split the sentence.
    empty = _write(tmp_path / "empty.conllu", CONLLU.replace("3\tgo\tgo\tVERB", "3\tgo\tgo\t"))
    with pytest.raises(
        DataFormatError, match=r"empty.conllu:6: empty CoNLL-U column\(s\) \['upos'\]"
    ):
        list(readers.read_conllu(empty))
    nbsp = _write(tmp_path / "nbsp.conllu", CONLLU.replace("2\tn't", "\u00a0\n2\tn't"))
    with pytest.raises(DataFormatError, match=r"nbsp.conllu:5: expected 10 tab-separated"):
        list(readers.read_conllu(nbsp))
    blank = _write(tmp_path / "blank.conllu", CONLLU.replace("\n\n#sent_id", "\n \t\n#sent_id"))
    assert len(list(readers.read_conllu(blank))) == 2  # spaces and tabs alone: a blank line


CONLL = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER"


def test_read_conll_any_column_and_docstart(tmp_path):
    path = _write(tmp_path / "ner.txt", CONLL)  # no trailing newline, like CoNLL-2003
    ner = list(readers.read_conll(path))
    assert ner == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter"], "tags": ["B-PER"]},
    ]
    assert [s["tags"] for s in readers.read_conll(path, label_column=1)] == [
        ["NNP", "VBZ"],
        ["NNP"],
    ]
    tabs = _write(tmp_path / "tabs.txt", "a\tX\nb\tY\n")
    assert list(readers.read_conll(tabs)) == [{"tokens": ["a", "b"], "tags": ["X", "Y"]}]


def test_read_conll_malformed_line(tmp_path):
    path = _write(tmp_path / "bad.txt", CONLL.replace("rejects VBZ B-VP O", "rejects VBZ"))
    with pytest.raises(DataFormatError, match=r"bad.txt:4: expected 4 columns.*found 2"):
        list(readers.read_conll(path))
    one = _write(tmp_path / "one.txt", "word\n")
    with pytest.raises(DataFormatError, match=r"one.txt:1: a CoNLL token line needs >= 2 columns"):
        list(readers.read_conll(one))
    with pytest.raises(ValueError, match="label_column=0 is not a tag column"):
        list(readers.read_conll(path, label_column=0))


def test_read_parallel_and_mismatched_line_counts(tmp_path):
    src = _write(tmp_path / "s.en", "a b\nc\n")
    tgt = _write(tmp_path / "t.de", "x\ny z\n")
    assert list(readers.read_parallel(src, tgt)) == [
        {"source": ["a", "b"], "target": ["x"]},
        {"source": ["c"], "target": ["y", "z"]},
    ]
    longer = _write(tmp_path / "long.de", "x\ny\nz\n")
    with pytest.raises(
        DataFormatError, match=r"long.de:3: .*different line counts.*s.en ends after 2"
    ):
        list(readers.read_parallel(src, longer))
    with pytest.raises(DataFormatError, match=r"long.de:3: .*s.en ends after 2"):
        list(readers.read_parallel(longer, src))
    blank = _write(tmp_path / "blank.de", "x\n\n")
    with pytest.raises(DataFormatError, match=r"blank.de:2: empty sentence"):
        list(readers.read_parallel(src, blank))


def test_read_tsv(tmp_path):
    path = _write(tmp_path / "a.tsv", "sentence\tlabel\ngood film\t1\nbad\t0\n")
    assert list(readers.read_tsv(path, header=True)) == [
        {"tokens": ["good", "film"], "label": "1"},
        {"tokens": ["bad"], "label": "0"},
    ]
    bad = _write(tmp_path / "b.tsv", "good film\t1\nno label here\n")
    with pytest.raises(DataFormatError, match=r"b.tsv:2: expected a non-empty text"):
        list(readers.read_tsv(bad))


def test_sst_trees():
    assert parse_sst_tree("(3 (2 (2 The) (2 Rock)) (4 rocks))") == (3, ["The", "Rock", "rocks"])
    # A leaf word may hold a non-breaking space ("8\xa01/2" in SST train): only ' ' separates.
    assert parse_sst_tree("(2 (2 8\xa01\\/2) (2 .))") == (2, ["8\xa01\\/2", "."])
    # A tab separates like a space (a trailing tab, or tab-indented trees): it was read as a
    # word, "word '\t' is not a leaf".
    assert parse_sst_tree("(3\t(2 a)\t(4 b))\t") == (3, ["a", "b"])
    for bad, reason in [
        ("(3 (2 a)", "unbalanced"),
        ("(7 a)", "label '7'"),
        ("(2 a b)", "not a leaf"),
        ("(2 a) (2 b)", "more than one tree"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_sst_tree(bad)


def test_sst_file_error_names_the_line(tmp_path):
    path = _write(tmp_path / "sst.txt", "(3 (2 a) (4 b))\n(3 (2 a) (4 b)\n")
    with pytest.raises(DataFormatError, match=r"sst.txt:2: unbalanced"):
        list(readers.read_sst(path))
    # A blank line (here after the last tree's newline) was "unbalanced '(' or no tree: ''".
    path = _write(tmp_path / "sst.txt", "(3 (2 a) (4 b))\n\n")
    with pytest.raises(DataFormatError, match=r"sst.txt:2: blank line: an SST file holds one"):
        list(readers.read_sst(path))


def test_missing_file_and_empty_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        readers.read_text(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.conllu"):
        readers.read_conllu(tmp_path / "nope.conllu")
    empty = _write(tmp_path / "empty.txt", "")
    with pytest.raises(DataFormatError, match=r"empty.txt: no examples.*empty split"):
        list(readers.read_text(empty))
    blank = _write(tmp_path / "blank.conll", "\n\n-DOCSTART- -X- O\n\n")
    with pytest.raises(DataFormatError, match="empty split"):
        list(readers.read_conll(blank))


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("(3 (2 a) b)", "not a leaf"),  # a bare word beside a subtree: "(2 b)" lost its "(2 "
        ("(3 a (2 b))", "not a leaf"),  # a word before a subtree
        ("(3 (2 a) (1))", "no children"),  # a node with a label and nothing else
        ("(3 (2 a) ())", r"label '\)'"),
    ],
)
def test_sst_tree_nodes_are_a_leaf_or_subtrees(bad, reason):
    """A node is `(LABEL word)` or `(LABEL subtree...)`; the parser took a bare word beside a
    subtree as one more leaf, and an empty node as nothing, so these lines were read."""
    with pytest.raises(ValueError, match=reason):
        parse_sst_tree(bad)


def test_tsv_label_is_not_a_class_of_its_own_for_surrounding_spaces(tmp_path):
    """ "1 " (a trailing space) was a label apart from "1", a class of its own, and a label of
    spaces only was read as a label."""
    path = _write(tmp_path / "a.tsv", "good film\t1\nfine\t1 \nbad\t 0\r\n")
    assert [e["label"] for e in readers.read_tsv(path)] == ["1", "1", "0"]
    blank = _write(tmp_path / "b.tsv", "good film\t1\nno label\t \n")
    with pytest.raises(DataFormatError, match=r"b.tsv:2: expected a non-empty text"):
        list(readers.read_tsv(blank))


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
    # Unset or empty, the default is ../shared/data beside the checkout (this file's ../..).
    from rnn_jax.data.root import default_data_root

    beside = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv("RNN_JAX_DATA")
        else:
            monkeypatch.setenv("RNN_JAX_DATA", value)
        assert default_data_root() == beside


def test_the_tests_find_the_data_where_the_library_does(tmp_path, monkeypatch):
    """The `data_root` fixture's folder is `default_data_root()`'s: with a quoted
    RNN_JAX_DATA="~/data" the tests' own copy of the rule looked for a folder named "~" and
    skipped every real-data test, while the library read the data."""
    from conftest import shared_data_root

    from rnn_jax.data.root import default_data_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RNN_JAX_DATA", "~/data")
    assert shared_data_root() == default_data_root() == tmp_path / "data"
    monkeypatch.delenv("RNN_JAX_DATA")
    assert shared_data_root() == default_data_root()


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


def test_a_tsv_column_counted_from_the_end_is_not_the_text_itself(tmp_path):
    """`label_column=-1` (the last field) on a line without a tab named the text field too:
    the line was read as its own label ("no label here" a class of one) instead of refused;
    the same for `text_column == label_column`."""
    path = tmp_path / "a.tsv"
    path.write_text("good film\t1\nno label here\n", encoding="utf-8")
    first = {"tokens": ["good", "film"], "label": "1"}
    examples = readers.read_tsv(path, label_column=-1)
    assert next(examples) == first
    with pytest.raises(DataFormatError, match=r"a.tsv:2: expected a non-empty text"):
        next(examples)
    path.write_text("1\tgood film\n2\tbad\n", encoding="utf-8")
    assert [e["label"] for e in readers.read_tsv(path, text_column=-1, label_column=0)] == [
        "1",
        "2",
    ]
    with pytest.raises(ValueError, match="both 1"):
        readers.read_tsv(path, text_column=1, label_column=1)


def test_each_reader_gives_the_first_line_of_every_example(tmp_path):
    """`numbered()` and `FileExamples.read` keep each example's first line (a CoNLL sentence's
    first token line, past comments, DOCSTART and multiword lines), so that errors found when
    a split is encoded can name file:line as the readers' own do."""
    conll = _write(tmp_path / "ner.txt", "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\n\nPeter B-PER\n")
    conllu = _write(tmp_path / "a.conllu", CONLLU)
    text = _write(tmp_path / "a.txt", "a\n\nb\n")
    tsv = _write(tmp_path / "a.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    sst = _write(tmp_path / "sst.txt", "(3 (3 good))\n(1 (1 bad))\n")
    src, tgt = _write(tmp_path / "s.en", "a\nb\n"), _write(tmp_path / "t.de", "x\ny\n")
    for reader, lines in [
        (readers.read_conll(conll), [3, 7]),
        (readers.read_conllu(conllu), [4, 10]),
        (readers.read_text(text), [1, 2, 3]),
        (readers.read_tsv(tsv, header=True), [2, 3]),
        (readers.read_sst(sst), [1, 2]),
        (readers.read_parallel(src, tgt), [1, 2]),
    ]:
        path = reader.path
        examples = data_files.FileExamples.read(reader)
        assert examples.lines == tuple(lines), path
        assert examples.location(1) == f"{path}:{lines[1]}"
    assert examples.path == str(src)  # a pair is named by its source file
    assert type(examples[:1]) is list  # a slice knows no lines
    examples.append(examples[0])
    assert examples.location(0) is None  # its lines no longer line up


@pytest.mark.parametrize(
    "reorder",
    [
        lambda x: x.sort(key=lambda e: e["t"], reverse=True),
        lambda x: x.reverse(),
        lambda x: x.__setitem__(slice(0, 2), [x[1], x[0]]),  # x[:2] = x[1], x[0]
        lambda x: x.append(x.pop(0)),
        lambda x: x.insert(0, x.pop()),
        lambda x: x.__setitem__(0, {"t": "new"}),
    ],
    ids=["sort", "reverse", "slice_assignment", "pop_append", "pop_insert", "item_assignment"],
)
def test_file_examples_reordered_in_place_name_no_wrong_line(reorder):
    """A sort, reverse, swap or pop-then-append keeps the length, so the length check let
    `location(0)` name the line of the example read first, not of the one now at 0."""
    examples = data_files.FileExamples([{"t": "a"}, {"t": "b"}, {"t": "c"}], "f.txt", [1, 5, 9])
    reorder(examples)
    assert examples.location(0) is None
    untouched = data_files.FileExamples([{"t": "a"}, {"t": "b"}], "f.txt", [1, 5])
    untouched[1]["t"] = "B"  # the same example, edited: still the one read at line 5
    assert [untouched.location(i) for i in range(2)] == ["f.txt:1", "f.txt:5"]
