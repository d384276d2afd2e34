"""Our TensorFlow-free TFDS builders for ptb, tiny_shakespeare, multi30k and sst (sst5/sst2).

    from rnn_jax.data import builders
    builders.prepare("ptb", data_dir="~/tfds", manual_dir="../shared/data/ptb")
    sources = builders.builder("ptb", "~/tfds").as_data_source()  # ArrayRecord, no TensorFlow
    dataset = builders.prepared_dataset("ptb", data_dir="~/tfds")  # -> registry.TextDataset

(`tfds.data_source("tiny_shakespeare", ...)` would take the TFDS catalog's builder of that
name, which shares our folder `<data_dir>/tiny_shakespeare/1.0.0`; `builder(name, ...)` is
always ours. A folder the catalog's prepared is refused by `prepare` and `prepared_dataset`.)

`prepared_dataset` turns the stored examples into the same `TextDataset` the registry reads
straight from the files (tested equal on ../shared/data), so training code does not care
which path the data took. Names: ptb, tiny_shakespeare, multi30k, sst/sst5, sst/sst2.
"""

from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds

from rnn_jax.data.builders.base import CorpusBuilder
from rnn_jax.data.builders.multi30k import Multi30k
from rnn_jax.data.builders.ptb import Ptb
from rnn_jax.data.builders.sst import Sst
from rnn_jax.data.builders.tiny_shakespeare import TinyShakespeare
from rnn_jax.data.corpora import SPLIT_FILES
from rnn_jax.data.data_files import DataNotFoundError
from rnn_jax.data.readers import parse_sst_tree
from rnn_jax.data.registry import TextDataset
from rnn_jax.data.tokenize import char_tokens, word_tokens

PathLike = str | os.PathLike

BUILDERS: dict[str, tuple[type[CorpusBuilder], str | None]] = {
    "ptb": (Ptb, None),
    "tiny_shakespeare": (TinyShakespeare, None),
    "multi30k": (Multi30k, None),
    "sst/sst5": (Sst, "sst5"),
    "sst/sst2": (Sst, "sst2"),
}


def _folder(path: PathLike) -> str:
    # TFDS takes a given data_dir literally: "~/tfds" became a folder named "~" in the cwd.
    return os.path.expanduser(os.fspath(path))


def builder(name: str, data_dir: PathLike) -> CorpusBuilder:
    """The builder `name` (see `BUILDERS`) writing ArrayRecord under `data_dir` (`~` expanded)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown builder {name!r}; choose from {sorted(BUILDERS)}")
    cls, config = BUILDERS[name]
    return cls(data_dir=_folder(data_dir), config=config, file_format="array_record")


def _check_ours(name: str, corpus_builder: CorpusBuilder) -> None:
    """Refuses a folder that another builder of the same name prepared.

    The TFDS catalog's tiny_shakespeare stores itself in the same `<data_dir>/
    tiny_shakespeare/1.0.0` as ours, with splits train/validation/test: reused as if it were
    ours, it came back without a `valid` split.
    """
    stored, ours = corpus_builder.info.module_name, type(corpus_builder).__module__
    if stored != ours:
        raise ValueError(
            f"{name}: {os.fspath(corpus_builder.data_path)} holds a dataset prepared by "
            f"{stored or 'an unnamed module'} (splits {sorted(corpus_builder.info.splits)}), "
            f"not by our builder ({ours}); it has the same name and folder: use another "
            "data_dir for ours"
        )


def prepare(name: str, data_dir: PathLike, manual_dir: PathLike | None = None) -> CorpusBuilder:
    """Prepares `name` in `data_dir` from `manual_dir` (or its public sources); idempotent.

    Without `manual_dir` the files come from TFDS's default manual folder
    (`<data_dir>/downloads/manual`) when it holds them, else from `URLS`. A `manual_dir` that
    is given must be a folder that is not empty (`FileNotFoundError` naming it otherwise): a
    mistyped path is not a request to download.
    """
    corpus_builder = builder(name, data_dir)
    _check_ours(name, corpus_builder)
    if manual_dir is not None:
        folder = pathlib.Path(_folder(manual_dir))
        if not folder.is_dir() or not any(folder.iterdir()):
            files = sorted({f for fs in SPLIT_FILES[corpus_builder.CORPUS].values() for f in fs})
            # one of the corpus's files given as manual_dir "did not exist" (as split_paths said)
            what = (
                "is empty"
                if folder.is_dir()
                else "is not a directory"
                if folder.exists()
                else "does not exist"
            )
            raise DataNotFoundError(
                f"{name}: manual_dir {os.fspath(folder)} {what}; it must "
                f"directly hold {files} (leave manual_dir out to download them)"
            )
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else _folder(manual_dir)
    )
    corpus_builder.download_and_prepare(download_config=config)
    return corpus_builder


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def examples_from_records(name: str, records: list[dict]) -> list[dict]:
    """Stored records of builder `name` -> our example dicts (as `registry` reads the files)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown builder {name!r}; choose from {sorted(BUILDERS)}")
    if name == "ptb":
        return [{"tokens": word_tokens(_text(r["text"])) + ["<eos>"]} for r in records]
    if name == "tiny_shakespeare":
        lines = "".join(_text(r["text"]) for r in records).splitlines(keepends=True)
        return [{"tokens": char_tokens(line)} for line in lines]
    if name == "multi30k":
        return [
            {"source": word_tokens(_text(r["en"])), "target": word_tokens(_text(r["de"]))}
            for r in records
        ]
    # SST: the leaves come from the stored tree (a leaf may hold a non-breaking space).
    return [
        {"tokens": parse_sst_tree(_text(r["tree"]))[1], "label": int(r["label"])} for r in records
    ]


TASKS = {
    "ptb": "language_modeling",
    "tiny_shakespeare": "char_language_modeling",
    "multi30k": "translation",
    "sst/sst5": "classification",
    "sst/sst2": "classification",
}


def read_records(source: object, chunk: int = 4096) -> list[dict]:
    """Every record of a `tfds.data_source` split, in order (batched reads)."""
    n = len(source)  # type: ignore[arg-type]
    records: list[dict] = []
    for start in range(0, n, chunk):
        records.extend(source.__getitems__(list(range(start, min(n, start + chunk)))))  # type: ignore[attr-defined]
    return records


def prepared_dataset(name: str, data_dir: PathLike) -> TextDataset:
    """Reads a prepared builder back (ArrayRecord data sources) into a `TextDataset`.

    Nothing is downloaded or prepared here: a `data_dir` where `prepare` did not run, or
    where another builder of the same name prepared its data, raises an error naming it.
    """
    corpus_builder = builder(name, data_dir)
    if not corpus_builder.is_prepared():
        raise DataNotFoundError(
            f"{name} is not prepared in {_folder(data_dir)} (no "
            f"{os.fspath(corpus_builder.data_path)}/dataset_info.json); run "
            f"rnn_jax.data.builders.prepare({name!r}, data_dir, manual_dir) first"
        )
    _check_ours(name, corpus_builder)
    sources = corpus_builder.as_data_source()
    splits = {
        split: examples_from_records(name, read_records(source))
        for split, source in sources.items()
    }
    return TextDataset(name, TASKS[name], splits)


__all__ = [
    "BUILDERS",
    "Multi30k",
    "Ptb",
    "Sst",
    "TinyShakespeare",
    "examples_from_records",
    "prepare",
    "prepared_dataset",
    "read_records",
]
