"""Strict, streaming readers for the corpus formats researchers bring.

Each reader is an iterator over one file (or one file pair) that yields one example at a
time as a dict of Python lists/strings, so a corpus never has to fit in memory twice:

| reader | format | yields |
|---|---|---|
| `read_text(path, level, eos)` | plain text, one sentence per line | `{"tokens": [str]}` |
| `read_conllu(path)` | CoNLL-U (10 tab-separated columns) | `{"tokens", "upos", "xpos", ...}` |
| `read_conll(path, label_column)` | CoNLL columns (token first) | `{"tokens", "tags"}` |
| `read_parallel(src, tgt, level)` | two line-aligned files | `{"source", "target"}` |
| `read_tsv(path, ...)` | `text<TAB>label` lines | `{"tokens", "label"}` |
| `read_sst(path)` | SST PTB-tree lines `(3 (2 a) (4 b))` | `{"tokens", "label": int}` |

`read_conllu` also gives "lemmas", "heads" (int) and "deprels". Parsing is strict: a
malformed line raises `DataFormatError` (a `ValueError`) whose message starts with
`file:line:`. Every reader returns a `FileReader` and reads its file(s) through `read_lines`
(`rnn_jax.data.data_files`: decoding, a missing file, the byte order mark, an empty split,
and the first line of each example).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from rnn_jax.data.data_files import DataFormatError, FileReader, _check_file, read_lines
from rnn_jax.data.tokenize import get_tokenizer

PathLike = str | os.PathLike


def read_text(path: PathLike, level: str = "word", eos: str | None = None) -> FileReader:
    """Plain text, one example per line: `{"tokens": [...]}`.

    Args:
      level: 'word' (whitespace split) or 'char' (every character; the line's newline is kept
        as a "\\n" token so that concatenated examples reproduce the file).
      eos: appended to every line's tokens when given (PTB: '<eos>', as in the literature).
    """
    tokenize = get_tokenizer(level)

    _check_file(path)

    def examples() -> Iterator[tuple[int, dict]]:
        for number, line in read_lines(path, keepends=level == "char"):
            tokens = tokenize(line)
            if eos is not None:
                tokens.append(eos)
            yield number, {"tokens": tokens}

    return FileReader(examples(), path)


# ASCII digits only: str.isdigit() and int() also take other scripts' digits ("\u00b9", "\u0663").
_INTEGER = re.compile("[0-9]+")
# Multiword tokens `a-b` and empty nodes `a.b`: lines that are not syntactic words.
_SKIPPED_ID = re.compile("[0-9]+(-[0-9]+|[.][0-9]+)")
_CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(path: PathLike) -> FileReader:
    """CoNLL-U sentences (https://universaldependencies.org/format.html).

    Yields `{"tokens", "lemmas", "upos", "xpos", "heads", "deprels"}` over the syntactic words:
    multiword-token lines (ids `a-b`, e.g. `1-2`) and empty nodes (`a.b`, e.g. `8.1`) are
    skipped, as taggers and parsers use the words. Word ids must run 1, 2, 3, ... within a
    sentence; a head must be 0 or the id of a word of the sentence.
    """
    _check_file(path)

    def sentences() -> Iterator[tuple[int, dict]]:
        words: list[list[str]] = []
        numbers: list[int] = []  # the line number of each word
        for number, line in read_lines(path):
            where = f"{os.fspath(path)}:{number}"
            # Blank: nothing but spaces or tabs. `str.strip()` also strips Unicode spaces, so a
            # line of a no-break space ended the sentence silently instead of being named.
            if not line.strip(" \t"):
                if words:
                    yield numbers[0], _conllu_sentence(words, numbers, path)
                    words, numbers = [], []
                continue
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 10:
                raise DataFormatError(
                    f"{where}: expected 10 tab-separated CoNLL-U columns, found {len(fields)}: "
                    f"{line[:80]!r}"
                )
            word_id = fields[0]
            if _SKIPPED_ID.fullmatch(word_id):
                continue
            empty = [name for name, field in zip(_CONLLU_COLUMNS, fields, strict=True) if not field]
            if empty:
                # "Fields must not be empty" (the format; an unknown value is "_"): an empty
                # FORM or UPOS became the token or tag "" in the vocabularies
                raise DataFormatError(
                    f"{where}: empty CoNLL-U column(s) {empty} (an unknown value is '_'): "
                    f"{line[:80]!r}"
                )
            if not _INTEGER.fullmatch(word_id) or int(word_id) != len(words) + 1:
                raise DataFormatError(
                    f"{where}: word id {word_id!r} should be {len(words) + 1} "
                    "(ids run 1, 2, ... within a sentence; ranges a-b and decimals a.b are skipped)"
                )
            if not _INTEGER.fullmatch(fields[6]):
                raise DataFormatError(f"{where}: HEAD {fields[6]!r} is not an integer")
            words.append(fields)
            numbers.append(number)
        if words:
            yield numbers[0], _conllu_sentence(words, numbers, path)

    return FileReader(sentences(), path)


def _conllu_sentence(words: list[list[str]], numbers: list[int], path: PathLike) -> dict:
    column = {name: [w[i] for w in words] for i, name in enumerate(_CONLLU_COLUMNS)}
    heads = [int(h) for h in column["head"]]
    for head, number in zip(heads, numbers, strict=True):
        if head > len(words):
            raise DataFormatError(
                f"{os.fspath(path)}:{number}: HEAD {head} is not 0 or a word id 1-{len(words)} "
                "of its sentence"
            )
    return {
        "tokens": column["form"],
        "lemmas": column["lemma"],
        "upos": column["upos"],
        "xpos": column["xpos"],
        "heads": heads,
        "deprels": column["deprel"],
    }


# CoNLL columns are separated by ASCII spaces or tabs only: `str.split()` would also split a
# token at a no-break space or an ideographic space (U+3000).
_CONLL_SEPARATOR = re.compile("[ \t]+")


def read_conll(path: PathLike, label_column: int = -1) -> FileReader:
    """CoNLL column files (CoNLL-2000 chunking, CoNLL-2003 NER, ...): `{"tokens", "tags"}`.

    A token is a non-blank line of two or more columns separated by ASCII spaces or tabs (a
    no-break space, U+00A0, inside a token is part of it), the token first; a sentence is a
    block of token lines between blank lines; a `-DOCSTART-` line is neither, and ends a
    sentence like a blank line (no sentence spans two documents). Every token line of a file
    must have the same number of columns.

    Args:
      label_column: which column holds the tag (CoNLL-2003: 1 POS, 2 chunk, 3 = -1 NER).
    """
    _check_file(path)

    def sentences() -> Iterator[tuple[int, dict]]:
        tokens: list[str] = []
        tags: list[str] = []
        first = 0  # the line of the sentence's first token
        num_columns = None
        for number, line in read_lines(path):
            stripped = line.strip(" \t")
            fields = _CONLL_SEPARATOR.split(stripped) if stripped else []
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    yield first, {"tokens": tokens, "tags": tags}
                    tokens, tags = [], []
                continue
            where = f"{os.fspath(path)}:{number}"
            if num_columns is None:
                num_columns = len(fields)
                if num_columns < 2:
                    raise DataFormatError(
                        f"{where}: a CoNLL token line needs >= 2 columns (token and tag), "
                        f"found {num_columns}: {line[:80]!r}"
                    )
                if not -num_columns <= label_column < num_columns or label_column in (
                    0,
                    -num_columns,
                ):
                    raise ValueError(
                        f"label_column={label_column} is not a tag column of {os.fspath(path)} "
                        f"(it has {num_columns} columns; the token is column 0)"
                    )
            elif len(fields) != num_columns:
                raise DataFormatError(
                    f"{where}: expected {num_columns} columns like the file's first token line, "
                    f"found {len(fields)}: {line[:80]!r}"
                )
            if not tokens:
                first = number
            tokens.append(fields[0])
            tags.append(fields[label_column])
        if tokens:
            yield first, {"tokens": tokens, "tags": tags}

    return FileReader(sentences(), path)


def read_parallel(source_path: PathLike, target_path: PathLike, level: str = "word") -> FileReader:
    """Two line-aligned files (line i of one translates line i of the other).

    Yields `{"source": [tokens], "target": [tokens]}`. Different line counts or an empty line
    raise `DataFormatError` naming the file and line.
    """
    tokenize = get_tokenizer(level)
    _check_file(source_path)
    _check_file(target_path)

    def pairs() -> Iterator[tuple[int, dict]]:
        source_lines = read_lines(source_path)
        target_lines = read_lines(target_path)
        for number in range(1, 1 << 62):
            source = next(source_lines, None)
            target = next(target_lines, None)
            if source is None and target is None:
                return
            if source is None or target is None:
                if source is None:
                    short, long = source_path, target_path
                else:
                    short, long = target_path, source_path
                raise DataFormatError(
                    f"{os.fspath(long)}:{number}: parallel files have different line counts: "
                    f"{os.fspath(short)} ends after {number - 1} lines"
                )
            for (_, text), file in ((source, source_path), (target, target_path)):
                if not text.strip():
                    raise DataFormatError(f"{os.fspath(file)}:{number}: empty sentence")
            yield number, {"source": tokenize(source[1]), "target": tokenize(target[1])}

    return FileReader(pairs(), source_path)


def read_tsv(
    path: PathLike,
    text_column: int = 0,
    label_column: int = 1,
    header: bool = False,
    level: str = "word",
) -> FileReader:
    """Labelled sentences, one `text<TAB>label` line each (GLUE layout): `{"tokens", "label"}`.

    Args:
      text_column, label_column: which tab-separated fields hold the text and the label
        (Python indices: -1 is a line's last field); every line must have both, as two
        different fields.
      header: skip the first line (column names).
    """
    tokenize = get_tokenizer(level)
    if text_column == label_column:
        raise ValueError(f"text_column and label_column are both {text_column}")
    _check_file(path)

    def rows() -> Iterator[tuple[int, dict]]:
        for number, line in read_lines(path):
            if header and number == 1:
                continue
            fields = line.split("\t")
            # Each column's index into this line's fields, None where the line lacks it: a
            # negative column counts from the line's end, so on a line without a tab -1 is
            # the text field itself, which must not be read as its own label.
            text_at, label_at = (
                column % len(fields) if -len(fields) <= column < len(fields) else None
                for column in (text_column, label_column)
            )
            # The label without surrounding whitespace: "1 " is no class apart from "1".
            label = fields[label_at].strip() if label_at is not None else ""
            if text_at is None or text_at == label_at or not fields[text_at].strip() or not label:
                raise DataFormatError(
                    f"{os.fspath(path)}:{number}: expected a non-empty text in field "
                    f"{text_column} and a label in field {label_column} (tab-separated), "
                    f"found {len(fields)} fields: {line[:80]!r}"
                )
            yield number, {"tokens": tokenize(fields[text_at]), "label": label}

    return FileReader(rows(), path)


# Words are separated by ASCII spaces or tabs (a tab was read as part of a word or label: "node
# label '3\\t'"); a no-break space inside a word is part of it ("8\xa01\\/2" in SST train).
_TREE_TOKEN = re.compile(r"\(|\)|[^ \t()]+")


def parse_sst_tree(line: str) -> tuple[int, list[str]]:
    """`(3 (2 a) (4 b))` -> `(3, ["a", "b"])`: the root label and the leaf words.

    Every node is `(LABEL CHILD...)` with an integer label 0-4 and one or more children, all
    nodes; a leaf is `(LABEL word)`, a word being a node's only child.
    Raises ValueError (no location; `read_sst` adds file:line) when the tree is malformed, or
    when the line is blank: a file holds one tree per line, and the line ending of the last is
    no line of its own, so a blank line is an edit or a concatenation to look at.
    """
    if not line.strip(" \t"):
        raise ValueError("blank line: an SST file holds one tree per line, with no blank lines")
    tokens = _TREE_TOKEN.findall(line)
    leaves: list[str] = []
    children: list[int] = []  # per open node, outermost first: its children so far
    position = 0
    root_label = None
    while position < len(tokens):
        token = tokens[position]
        if token == "(":
            if not children and root_label is not None:
                raise ValueError("more than one tree on the line")
            label = tokens[position + 1] if position + 1 < len(tokens) else ""
            if label not in ("0", "1", "2", "3", "4"):
                raise ValueError(f"node label {label!r} is not an integer 0-4")
            if root_label is None:
                root_label = int(label)
            if children:
                children[-1] += 1
            children.append(0)
            position += 2
        elif token == ")":
            if not children:
                raise ValueError("unbalanced ')'")
            if children.pop() == 0:
                raise ValueError("a node has no children: '(label)'")
            position += 1
        else:
            # A word is the first and only child of its node: `(label word)`.
            if (
                not children
                or children[-1] != 0
                or position + 1 >= len(tokens)
                or tokens[position + 1] != ")"
            ):
                raise ValueError(f"word {token!r} is not a leaf '(label word)'")
            children[-1] += 1
            leaves.append(token)
            position += 1
    if children or root_label is None:
        raise ValueError("unbalanced '(' or no tree")
    if not leaves:
        raise ValueError("tree has no words")
    return root_label, leaves


def read_sst(path: PathLike) -> FileReader:
    """Stanford Sentiment Treebank PTB-tree lines: `{"tokens": leaves, "label": root 0-4}`."""
    _check_file(path)

    def trees() -> Iterator[tuple[int, dict]]:
        for number, line in read_lines(path):
            try:
                label, leaves = parse_sst_tree(line)
            except ValueError as e:
                raise DataFormatError(f"{os.fspath(path)}:{number}: {e}: {line[:80]!r}") from None
            yield number, {"tokens": leaves, "label": label}

    return FileReader(trees(), path)
