"""TensorFlow Datasets catalog datasets, read TensorFlow-free with `tfds.data_source`.

For users with internet (and TensorFlow where a catalog builder needs it to prepare): prepare
once (`tfds build NAME --data_dir=...` or `tfds.builder(NAME).download_and_prepare(
file_format="array_record")`), then every run reads the ArrayRecord files with
`tfds.data_source`, which needs no TensorFlow. `load_catalog_dataset(name, data_dir)` turns
the examples into a `TextDataset` of our example dicts (str tokens, str tags) so the rest of
the pipeline (vocabulary, batching) is the same as for the project's own corpora.

| name | task | our fields | TFDS splits -> ours |
|---|---|---|---|
| tiny_shakespeare | char LM | `tokens` (characters, per line) | train/validation/test |
| imdb_reviews | classification | `tokens` (whitespace), `label` | train/test |
| glue/sst2 | classification | `tokens`, `label` | train/validation (test: no labels) |
| conll2003 | tagging (NER) | `tokens`, `tags` | train/dev/test |
| universal_dependencies/en_ewt | tagging (UPOS) | `tokens`, `tags`, `upos` | train/dev/test |
| ted_hrlr_translate/pt_to_en | translation | `source` pt, `target` en | train/validation/test |
| wmt14_translate/de-en | translation | `source` de, `target` en | train/validation/test |

GLUE keeps its test labels private (TFDS stores -1 for each), so glue/sst2 has no test split
here; a label below 0 in any converted example raises instead of becoming a class.

TFDS's own tiny_shakespeare split (1,003,854 / 55,770 / 55,770 characters) is the same as
ours (`corpora.tiny_shakespeare_splits`). The catalog CoNLL-2003 and UD builders pin other
releases than `../shared/data`, which the `conll`/`conllu` readers read (see registry).
UD sentences keep their syntactic words only, as `read_conllu` does: TFDS also stores the
multiword tokens ("don't", UPOS `_`) and empty nodes, which are dropped (see `_ud_words`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable

from rnn_jax.data.registry import TextDataset
from rnn_jax.data.tokenize import char_tokens, word_tokens

PathLike = str | os.PathLike


def _text(value: object) -> str:
    """TFDS Text values come back as bytes (real files) or str (mock_data)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _texts(values: object) -> list[str]:
    return [_text(v) for v in values]  # type: ignore[attr-defined]


def _class_names(features: object, key: str) -> list[str]:
    feature = features[key]  # type: ignore[index]
    return list(getattr(feature, "feature", feature).names)


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """How one catalog dataset maps onto ours.

    Attributes:
      task: our task name (see `registry.TASK_SPECIALS`).
      splits: our split name -> TFDS split name.
      module: the tfds module to import so the builder is registered (legacy builders).
      convert: (TFDS example, features) -> our examples (a list: one TFDS example may be many).
    """

    task: str
    splits: dict[str, str]
    module: str | None
    convert: Callable[[dict, object], list[dict]]


def _lines_of_characters(example: dict, features: object) -> list[dict]:
    lines = _text(example["text"]).splitlines(keepends=True)
    return [{"tokens": char_tokens(line)} for line in lines]


def _classification(text_key: str) -> Callable[[dict, object], list[dict]]:
    def convert(example: dict, features: object) -> list[dict]:
        label = int(example["label"])
        if label < 0:
            raise ValueError(
                f"label {label}: an unlabelled example (TFDS's placeholder for hidden labels) "
                f"in a split mapped as labelled: {_text(example[text_key])[:80]!r}"
            )
        return [{"tokens": word_tokens(_text(example[text_key])), "label": label}]

    return convert


def _tagging(tag_key: str) -> Callable[[dict, object], list[dict]]:
    def convert(example: dict, features: object) -> list[dict]:
        names = _class_names(features, tag_key)
        tags = [names[int(i)] for i in example[tag_key]]
        tokens = _texts(example["tokens"])
        if len(tags) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} {tag_key} tags: {tokens[:10]}")
        return [{"tokens": tokens, "tags": tags, tag_key: tags}]

    return convert


def _ud_words(example: dict, features: object) -> list[dict]:
    """A TFDS UD sentence tagged with UPOS, over its syntactic words only.

    TFDS (through the `conllu` library) keeps every line of a sentence: multiword tokens
    (`1-2 don't`, UPOS `_`, beside their words `do`, `n't`) and empty nodes (`8.1`, copies of
    a word). It stores no ids, but the UD format gives both HEAD `_`, which `conllu` reads as
    None, stored as "None"; a word's HEAD is an integer. Our own reader (`read_conllu`) and
    the literature's word counts keep the words only, and so does this.
    """
    heads = _texts(example["head"])
    if not len(heads) == len(example["tokens"]) == len(example["upos"]):
        raise ValueError(
            f"{len(example['tokens'])} tokens, {len(example['upos'])} upos tags and "
            f"{len(heads)} heads: {_texts(example['tokens'])[:10]}"
        )
    words = [i for i, head in enumerate(heads) if head != "None"]
    tokens, upos = list(example["tokens"]), list(example["upos"])
    sentence = {"tokens": [tokens[i] for i in words], "upos": [upos[i] for i in words]}
    return _tagging("upos")(sentence, features)


def _translation(source: str, target: str) -> Callable[[dict, object], list[dict]]:
    def convert(example: dict, features: object) -> list[dict]:
        return [
            {
                "source": word_tokens(_text(example[source])),
                "target": word_tokens(_text(example[target])),
            }
        ]

    return convert


_VALID_TEST = {"train": "train", "valid": "validation", "test": "test"}
_DEV_TEST = {"train": "train", "valid": "dev", "test": "test"}

CATALOG: dict[str, CatalogEntry] = {
    "tiny_shakespeare": CatalogEntry(
        "char_language_modeling", _VALID_TEST, None, _lines_of_characters
    ),
    "imdb_reviews": CatalogEntry(
        "classification", {"train": "train", "test": "test"}, None, _classification("text")
    ),
    "glue/sst2": CatalogEntry(
        "classification",
        {"train": "train", "valid": "validation"},  # GLUE's test labels are hidden (-1)
        "tensorflow_datasets.text.glue",
        _classification("sentence"),
    ),
    "conll2003": CatalogEntry(
        "tagging", _DEV_TEST, "tensorflow_datasets.text.conll2003", _tagging("ner")
    ),
    "universal_dependencies/en_ewt": CatalogEntry("tagging", _DEV_TEST, None, _ud_words),
    "ted_hrlr_translate/pt_to_en": CatalogEntry(
        "translation", _VALID_TEST, None, _translation("pt", "en")
    ),
    "wmt14_translate/de-en": CatalogEntry(
        "translation", _VALID_TEST, "tensorflow_datasets.translate.wmt14", _translation("de", "en")
    ),
}


def catalog_data_sources(name: str, data_dir: PathLike | None = None) -> dict[str, object]:
    """`{our split: tfds data source}` for a catalog dataset prepared in `data_dir`.

    Raises:
      ValueError: for an unknown name, or a dataset not prepared there (nothing is
        downloaded).
    """
    if name not in CATALOG:
        raise ValueError(f"unknown catalog dataset {name!r}; choose from {sorted(CATALOG)}")
    import tensorflow_datasets as tfds

    entry = CATALOG[name]
    if entry.module:
        importlib.import_module(entry.module)
    ours = list(entry.splits)
    # TFDS expands `~` only in its default data_dirs; a given one is taken literally.
    data_dir = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
    where = "TFDS's default data_dir" if data_dir is None else data_dir
    try:
        # download=False: an unprepared dataset is an error here, not a (multi-GB) download
        # started by a training run; preparing is a separate, explicit step.
        sources = tfds.data_source(
            name,
            split=[entry.splits[s] for s in ours],
            data_dir=data_dir,
            download=False,
        )
    except Exception as error:  # TFDS raises assorted types for "not prepared" / wrong format
        try:
            owner = tfds.builder(name, data_dir=data_dir).info.module_name
        except Exception:  # the builder itself failed to load: the message below gives why
            owner = ""
        if owner.startswith("rnn_jax."):
            # `tfds build` there would reuse that folder ("already prepared"): another dir it is.
            raise ValueError(
                f"catalog dataset {name!r}: {where} holds the project's own builder of that "
                f"name ({owner}; read it with rnn_jax.data.builders.prepared_dataset), which "
                "shares the catalog's folder: prepare the catalog's in another data_dir"
            ) from error
        # The first line of the message, if any: an exception without one (a bare
        # `AssertionError()`) made `splitlines()[0]` raise IndexError here, hiding this advice.
        lines = str(error).splitlines()
        first_line = f": {lines[0][:200]}" if lines else ""
        raise ValueError(
            f"catalog dataset {name!r} is not prepared as ArrayRecord in {where} "
            f"({type(error).__name__}{first_line}); prepare it once "
            f"with `tfds build {name} --data_dir=DIR --file_format=array_record` (needs the "
            "network) and pass that data_dir"
        ) from error
    return dict(zip(ours, sources, strict=True))


def _read_all(source: object) -> list[dict]:
    return [source[i] for i in range(len(source))]  # type: ignore[index, arg-type]


def load_catalog_dataset(name: str, data_dir: PathLike | None = None) -> TextDataset:
    """A catalog dataset as a `TextDataset` (all splits read into memory)."""
    sources = catalog_data_sources(name, data_dir)
    entry = CATALOG[name]
    splits = {}
    for split, source in sources.items():
        features = source.dataset_info.features  # type: ignore[attr-defined]
        splits[split] = []
        for index, example in enumerate(_read_all(source)):
            try:
                splits[split].extend(entry.convert(example, features))
            except ValueError as error:
                raise ValueError(
                    f"catalog dataset {name!r} split {entry.splits[split]!r}, example {index} "
                    f"(0-based): {error}"
                ) from error
    return TextDataset(name, entry.task, splits)
