"""Review 22 of the data layer: TSV columns counted from the end, synthetic tasks' arguments."""

import numpy as np
import pytest

from rnn_jax.data import readers
from rnn_jax.data.readers import DataFormatError
from rnn_jax.data.synthetic import (
    AddingProblem,
    CopyTask,
    EchoTask,
    MarkovLanguage,
    TemporalOrder,
)


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


def test_synthetic_task_sizes_must_be_integers_and_the_concentration_finite():
    """A float size failed only when sampling, inside numpy ("'float' object cannot be
    interpreted as an integer"), True was a size of 1, and a NaN concentration passed
    `concentration <= 0`: `stationary` then iterated 100,000 times and failed in LAPACK."""
    bad = [
        (lambda: CopyTask(blank_length=2.5), "CopyTask blank_length=2.5 must be an integer"),
        (lambda: CopyTask(num_symbols=True), "CopyTask num_symbols=True must be an integer"),
        (lambda: AddingProblem(length=10.0), "AddingProblem length=10.0 must be an integer >= 2"),
        (lambda: EchoTask(delay=2.5), "EchoTask delay=2.5 must be an integer"),
        (lambda: TemporalOrder(min_length=100.0), "TemporalOrder min_length=100.0"),
        (lambda: MarkovLanguage(vocab_size=4.0), "integers vocab_size >= 2"),
        (lambda: MarkovLanguage(concentration=float("nan")), "finite concentration > 0"),
        (lambda: MarkovLanguage(concentration=float("inf")), "finite concentration > 0"),
    ]
    for make, message in bad:
        with pytest.raises(ValueError, match=message):
            make()
    # NumPy scalars (read from shapes or arrays) are still sizes.
    task = CopyTask(blank_length=np.int64(3), num_symbols=2, num_categories=4)
    assert task.sample(np.random.default_rng(0), 2)["inputs"].shape == (2, 7)
    assert MarkovLanguage(vocab_size=3, order=1, concentration=np.float32(0.5)).entropy_rate() > 0


def test_directory_data_file_broken_vocabulary_and_missing_length_key_are_named(tmp_path):
    """A directory given as a data file was said not to exist; a corrupt vocabulary file
    raised JSON's or a KeyError's message without the file; a length_key the examples lack
    was a bare KeyError."""
    from rnn_jax.data import pipeline, readers
    from rnn_jax.data.vocab import Vocabulary

    with pytest.raises(FileNotFoundError, match="is a directory, not a file"):
        list(readers.read_tsv(tmp_path))
    broken = tmp_path / "vocab.json"
    for text in ("{not json", '{"tokens": ["a"]}', "[1, 2]"):
        broken.write_text(text)
        with pytest.raises(ValueError, match=r"vocab.json: not a saved vocabulary"):
            Vocabulary.load(broken)
    examples = [{"source": [1, 2], "target": [3]}]
    with pytest.raises(ValueError, match=r"length_key='inputs' is not a field .*'source'"):
        pipeline.evaluation_batches(examples, 2)
