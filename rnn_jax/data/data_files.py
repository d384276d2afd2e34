"""A data file read strictly: its decoding, the data errors, and where each example came from.

`read_lines` and `read_file_text` are the one place data files are decoded: bytes that are not
UTF-8 raise `DataFormatError` (a `ValueError`) whose message starts with `file:line:`, naming
the bytes; a missing file raises `DataNotFoundError` (a `FileNotFoundError`) naming it; a UTF-8
byte order mark that opens a file is dropped (it is an encoding signature, not text).

`FileReader` is what every reader of `rnn_jax.data.readers` returns: an iterator of the example
dicts, whose `numbered()` gives `(line, example)` pairs instead, `line` being the example's
first line (1-based); a file that yields no example raises `DataFormatError` ("empty split"),
because an empty split silently trains or evaluates on nothing. `FileExamples.read(reader)`
keeps a whole file's examples in a list that also knows those lines, so that an error found
later in an example (an unseen tag when a split is encoded) can name file:line as the readers
do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from rnn_jax.files import not_a_file

PathLike = str | os.PathLike


class DataFormatError(ValueError):
    """A data file does not follow its format; the message names file:line."""


class DataNotFoundError(FileNotFoundError):
    """A data file or corpus folder a dataset needs is missing (or is the wrong kind of path);
    the message names it. The training CLI reports it as a setting to fix (exit 2) wherever
    it is raised, while other `FileNotFoundError`s of a run stay tracebacks."""


def _check_file(path: PathLike) -> None:
    if not os.path.isfile(path):
        raise DataNotFoundError(f"data file {os.fspath(path)!r} {not_a_file(path)}")


# Decoding with "surrogateescape" turns each byte that is not UTF-8 into a lone surrogate
# U+DC80..U+DCFF, which a valid UTF-8 file never decodes to; so one search per line finds the
# bad bytes together with their line number (a strict decoder reports only an offset into its
# read buffer).
_UNDECODABLE = re.compile("[\udc80-\udcff]+")
_BYTE_ORDER_MARK = "\ufeff"


def read_lines(path: PathLike, keepends: bool = False) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, line)` (1-based) of a UTF-8 file.

    Lines end at "\\n", "\\r\\n" or "\\r"; the ending is dropped unless `keepends`. Bytes that are
    not UTF-8 raise `DataFormatError` naming file:line, the bytes and their column. A UTF-8 byte
    order mark (U+FEFF) that opens the file is an encoding signature (Windows editors write
    one), not text, and is dropped; one elsewhere is kept. A file of the mark alone has no lines.
    """
    _check_file(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        for number, line in enumerate(f, start=1):
            if number == 1:
                line = line.removeprefix(_BYTE_ORDER_MARK)
                if not line:
                    # The file was the mark alone (an "empty" file some editors save): no
                    # line, as for an empty file; not one blank line that an LM split reads
                    # as a sentence of "<eos>" instead of refusing the empty split.
                    return
            bad = _UNDECODABLE.search(line)
            if bad is not None:
                raw = line.encode("utf-8", "surrogateescape")
                raise DataFormatError(
                    f"{os.fspath(path)}:{number}: not UTF-8: bytes "
                    f"{bad.group().encode('utf-8', 'surrogateescape')!r} at column "
                    f"{bad.start() + 1}: {raw[:80]!r}"
                )
            yield number, line if keepends else line.rstrip("\r\n")


def read_file_text(path: PathLike) -> str:
    """The whole text of a UTF-8 file, line endings kept; checked like `read_lines`."""
    return "".join(line for _, line in read_lines(path, keepends=True))


class FileReader(Iterator[dict]):
    """The examples of one file (or line-aligned file pair), one at a time, as every reader
    returns them; a file that holds none raises `DataFormatError` ("empty split") at its end.

    `numbered()` yields the (remaining) examples as `(line, example)` pairs, `line` being the
    example's first line in `path` (1-based): for a CoNLL or CoNLL-U sentence, the line of its
    first token; for a parallel pair, the line of both, `path` being the source file.
    """

    def __init__(self, numbered: Iterator[tuple[int, dict]], path: PathLike) -> None:
        self.path = os.fspath(path)
        self._numbered = numbered
        self._count = 0

    def __next__(self) -> dict:
        return self._next_numbered()[1]

    def numbered(self) -> Iterator[tuple[int, dict]]:
        """`(first line, example)` of each example not read yet, in file order."""
        while True:
            try:
                yield self._next_numbered()
            except StopIteration:
                return

    def _next_numbered(self) -> tuple[int, dict]:
        try:
            item = next(self._numbered)
        except StopIteration:
            if self._count == 0:
                raise DataFormatError(
                    f"{self.path}: no examples in this file (empty split)"
                ) from None
            raise
        self._count += 1
        return item


class FileExamples(list):
    """A split's examples as read from one file, in file order, with where each came from:
    `lines[i]` is the first line of example `i` in `path` (see `FileReader`).

    A list like any other (equal to a plain list of the same examples). Anything built from it
    (a slice, a filtered copy) is a plain list, which knows no lines: a derived split names its
    examples by index unless it is built as `FileExamples` with the lines of those it keeps.
    `lines` stay those of the examples as read: once the list is changed in place, it names a
    line only for an example still at the index it was read at, and none once its length
    changed (see `location`).
    """

    def __init__(self, examples: Iterable[dict], path: PathLike, lines: Iterable[int]) -> None:
        super().__init__(examples)
        self.path = os.fspath(path)
        self.lines = tuple(lines)
        if len(self.lines) != len(self):
            raise ValueError(f"{len(self)} examples of {self.path} but {len(self.lines)} lines")
        # The examples as read, by identity: `location` trusts `lines[i]` only for them.
        self._as_read = tuple(self)

    @classmethod
    def read(cls, reader: FileReader) -> FileExamples:
        """Every example of `reader` (what a reader returns), with their lines."""
        numbered = list(reader.numbered())
        return cls([e for _, e in numbered], reader.path, [line for line, _ in numbered])

    def location(self, index: int) -> str | None:
        """`path:line` of example `index`; None once the list was changed in length after it
        was read, or when the example at `index` is not the very one read there (sorted,
        reversed, shuffled or assigned to in place): its line is not `lines[index]`. The
        length alone missed those, which keep it, and named another example's line."""
        if len(self) != len(self.lines) or self[index] is not self._as_read[index]:
            return None
        return f"{self.path}:{self.lines[index]}"
