"""Dataset name -> loader: one entry point for every text dataset the project reads.

    dataset = load_dataset("conll2003")                      # a project corpus from the data root
    dataset = load_dataset("conll:/data/train.txt")          # a user's own file (split "train")
    dataset = load_dataset("tfds:glue/sst2", data_dir=...)   # a TFDS catalog dataset (prepared)
    vocab = dataset.vocab()                                   # built from train, task's specials
    dataset.splits["valid"][0]  -> {"tokens": [...], "tags": [...]}

A `TextDataset` holds its examples in memory (`splits: {split: [example dict]}`, example
fields as in `rnn_jax.data.readers`), its `task`, and the specials its pipeline adds:

| task | examples | specials (pad, unk, bos, eos) |
|---|---|---|
| language_modeling (word) | `{"tokens"}` one line + `<eos>` | -, `<unk>`, -, `<eos>` |
| language_modeling (char) | `{"tokens"}` one line of characters, newline kept | none (closed) |
| tagging | `{"tokens", "tags"}` | `<pad>`, `<unk>`, -, - |
| classification | `{"tokens", "label"}` | `<pad>`, `<unk>`, -, - |
| translation | `{"source", "target"}` | `<pad>`, `<unk>`, `<bos>`, `<eos>` |

Project corpora: ptb, tiny_shakespeare, multi30k (en->de), sst (SST-5 root labels), sst2
(SST-5 without neutral: 0-1 -> 0, 3-4 -> 1), ud_en_ewt (UPOS tags), conll2003 (NER tags).
User files (`kind:path`, a leading `~` the home folder): text, conllu, conll, parallel
(`parallel:SRC,TGT`), tsv, and tsv_header (a tsv whose first line names the columns, as GLUE's
files do: read as `tsv` its names would be one more example, of a class named after the label
column).
Synthetic tasks (`synthetic_task(name, **options)`): copy, adding, temporal_order, markov.

A split read from a file is a `data_files.FileExamples` (a list that knows each example's first
line), so `TextDataset.where(split, index)` names an example as `file:line`, the readers' form;
other splits (catalog, TFDS builders, hand-built) name it by its index.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from rnn_jax.data import readers
from rnn_jax.data.corpora import read_tiny_shakespeare, split_paths
from rnn_jax.data.data_files import FileExamples, FileReader
from rnn_jax.data.root import default_data_root
from rnn_jax.data.synthetic import AddingProblem, CopyTask, MarkovLanguage, TemporalOrder
from rnn_jax.data.vocab import Vocabulary

PathLike = str | os.PathLike

TASK_SPECIALS: dict[str, dict[str, str | None]] = {
    "language_modeling": {"pad": None, "unk": "<unk>", "bos": None, "eos": "<eos>"},
    "char_language_modeling": {"pad": None, "unk": None, "bos": None, "eos": None},
    "tagging": {"pad": "<pad>", "unk": "<unk>", "bos": None, "eos": None},
    "classification": {"pad": "<pad>", "unk": "<unk>", "bos": None, "eos": None},
    "translation": {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"},
}


@dataclasses.dataclass(frozen=True)
class TextDataset:
    """Examples of every split plus what the pipeline needs to build vocabularies."""

    name: str
    task: str
    splits: dict[str, list[dict]]

    def __post_init__(self) -> None:
        if self.task not in TASK_SPECIALS:
            raise ValueError(f"task={self.task!r}; known tasks: {list(TASK_SPECIALS)}")
        if "train" not in self.splits:
            raise ValueError(f"dataset {self.name!r} has no train split: {list(self.splits)}")
        for split, examples in self.splits.items():
            if not examples:
                raise ValueError(f"dataset {self.name!r}: split {split!r} is empty")

    @property
    def token_field(self) -> str:
        return "source" if self.task == "translation" else "tokens"

    def where(self, split: str, index: int) -> str:
        """Where example `index` of `split` is, to open an error message about it:
        `path:line: 'name' split 'x'` for one read from a file, else `'name' split 'x',
        example N (0-based, in file order)`."""
        examples = self.splits[split]
        location = examples.location(index) if isinstance(examples, FileExamples) else None
        if location is None:
            return f"{self.name!r} split {split!r}, example {index} (0-based, in file order)"
        return f"{location}: {self.name!r} split {split!r}"

    def token_lists(self, split: str, field: str | None = None) -> list[list[str]]:
        """The token lists of `split` (`field` defaults to tokens, or source for translation)."""
        if split not in self.splits:
            raise ValueError(f"split={split!r}; {self.name!r} has {list(self.splits)}")
        return [example[field or self.token_field] for example in self.splits[split]]

    def vocab(
        self, field: str | None = None, min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The vocabulary of a token field, built from the train split with the task's specials."""
        return Vocabulary.build(
            self.token_lists("train", field),
            min_freq=min_freq,
            max_size=max_size,
            **TASK_SPECIALS[self.task],
        )

    def label_vocab(self, field: str = "tags") -> Vocabulary:
        """Tag/label vocabulary from train (tags get `<pad>` 0 so padded targets are masked)."""
        train = self.splits["train"]
        if field not in train[0]:
            raise ValueError(f"field={field!r} is not in {self.name!r} examples: {list(train[0])}")
        values = [e[field] if isinstance(e[field], list) else [str(e[field])] for e in train]
        pad = "<pad>" if isinstance(train[0][field], list) else None
        return Vocabulary.build(values, pad=pad, unk=None, bos=None, eos=None)


def _read_splits(name: str, manual_dir: PathLike, read: Callable) -> dict[str, list[dict]]:
    return {
        split: FileExamples.read(read(*paths))
        for split, paths in split_paths(name, manual_dir).items()
    }


def ptb(manual_dir: PathLike) -> TextDataset:
    splits = _read_splits("ptb", manual_dir, lambda p: readers.read_text(p, eos="<eos>"))
    return TextDataset("ptb", "language_modeling", splits)


def tiny_shakespeare(manual_dir: PathLike) -> TextDataset:
    path = split_paths("tiny_shakespeare", manual_dir)["train"][0]
    texts = read_tiny_shakespeare(path)
    splits = {
        split: [{"tokens": list(line)} for line in text.splitlines(keepends=True)]
        for split, text in texts.items()
    }
    return TextDataset("tiny_shakespeare", "char_language_modeling", splits)


def multi30k(manual_dir: PathLike) -> TextDataset:
    splits = _read_splits("multi30k", manual_dir, readers.read_parallel)
    return TextDataset("multi30k", "translation", splits)


def sst(manual_dir: PathLike) -> TextDataset:
    return TextDataset("sst", "classification", _read_splits("sst", manual_dir, readers.read_sst))


def sst2(manual_dir: PathLike) -> TextDataset:
    """SST-2 the standard way: root labels, neutral (2) dropped, 0-1 -> 0, 3-4 -> 1."""
    splits = {}
    for split, examples in sst(manual_dir).splits.items():
        kept = [i for i, e in enumerate(examples) if e["label"] != 2]
        splits[split] = FileExamples(
            [
                {"tokens": examples[i]["tokens"], "label": int(examples[i]["label"] > 2)}
                for i in kept
            ],
            examples.path,
            [examples.lines[i] for i in kept],
        )
    return TextDataset("sst2", "classification", splits)


def ud_en_ewt(manual_dir: PathLike) -> TextDataset:
    splits = _read_splits("ud_english_ewt", manual_dir, readers.read_conllu)
    for examples in splits.values():
        for example in examples:
            example["tags"] = example["upos"]
    return TextDataset("ud_en_ewt", "tagging", splits)


def conll2003(manual_dir: PathLike) -> TextDataset:
    return TextDataset(
        "conll2003", "tagging", _read_splits("conll2003", manual_dir, readers.read_conll)
    )


# name -> (loader, directory under the data root)
PROJECT_DATASETS: dict[str, tuple[Callable[[PathLike], TextDataset], str]] = {
    "ptb": (ptb, "ptb"),
    "tiny_shakespeare": (tiny_shakespeare, "tiny_shakespeare"),
    "multi30k": (multi30k, "multi30k"),
    "sst": (sst, "sst"),
    "sst2": (sst2, "sst"),
    "ud_en_ewt": (ud_en_ewt, "ud_english_ewt"),
    "conll2003": (conll2003, "conll2003"),
}

# kind -> (task, reader of the part after "kind:")
USER_KINDS: dict[str, tuple[str, Callable[[str], FileReader]]] = {
    "text": ("language_modeling", lambda p: readers.read_text(p, eos="<eos>")),
    "conllu": ("tagging", readers.read_conllu),
    "conll": ("tagging", readers.read_conll),
    "parallel": ("translation", lambda p: readers.read_parallel(*_two_paths(p))),
    "tsv": ("classification", readers.read_tsv),
    "tsv_header": ("classification", lambda p: readers.read_tsv(p, header=True)),
}


def _two_paths(spec: str) -> tuple[str, str]:
    parts = spec.split(",")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"parallel data needs 'parallel:SOURCE,TARGET' (two non-empty paths), got {spec!r}"
        )
    return os.path.expanduser(parts[0]), os.path.expanduser(parts[1])


def user_dataset(spec: str) -> TextDataset:
    """A user's own file, `kind:path`, as a dataset with one split, `train`.

    A leading `~` in a path (each of `parallel`'s two) is the home folder, as in `data_root`.
    """
    kind, _, path = spec.partition(":")
    if kind not in USER_KINDS:
        raise ValueError(
            f"dataset {spec!r}: unknown kind {kind!r}; a user file is kind:path with kind in "
            f"{sorted(USER_KINDS)}"
        )
    if not path.strip():
        # "text:" used to be reported as "not kind:path", though the kind was right
        raise ValueError(f"dataset {spec!r}: the path after {kind + ':'!r} is empty")
    task, read = USER_KINDS[kind]
    # parallel's two paths are expanded one by one in `_two_paths`
    examples = FileExamples.read(read(path if kind == "parallel" else os.path.expanduser(path)))
    if kind == "conllu":
        for example in examples:
            example["tags"] = example["upos"]
    return TextDataset(spec, task, {"train": examples})


def dataset_names() -> list[str]:
    """Every name `load_dataset` accepts (plus `kind:path` for users' files)."""
    from rnn_jax.data.catalog import CATALOG

    return (
        sorted(PROJECT_DATASETS)
        + [f"tfds:{name}" for name in sorted(CATALOG)]
        + [f"{kind}:PATH" for kind in sorted(USER_KINDS)]
    )


def load_dataset(
    name: str,
    data_root: PathLike | None = None,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
) -> TextDataset:
    """Loads a dataset by name.

    Args:
      name: a project corpus (read from `<data_root>/<dir>`), a TFDS catalog name `tfds:NAME`
        (read with `tfds.data_source` from `data_dir`, where it must already be prepared; the
        prefix may be left out where no project corpus has the name), or `kind:path`.
      data_root: root of the project corpora (default: `default_data_root()`).
      data_dir: the TFDS data directory for catalog datasets (default: TFDS's own).
      manual_dir: the folder that directly holds a project corpus's files (overrides
        `<data_root>/<dir>`); a leading `~` is the home folder, as in `data_root`.
    """
    if name in PROJECT_DATASETS:
        loader, directory = PROJECT_DATASETS[name]
        if manual_dir:
            return loader(os.path.expanduser(manual_dir))
        return loader(default_data_root(data_root) / directory)
    from rnn_jax.data.catalog import CATALOG, load_catalog_dataset

    catalog_name = name.removeprefix("tfds:")
    if catalog_name in CATALOG or name.startswith("tfds:"):
        # an unknown tfds: name gets the catalog's own "unknown ...; choose from" message
        return load_catalog_dataset(catalog_name, data_dir)
    if ":" in name:
        return user_dataset(name)
    raise ValueError(f"unknown dataset {name!r}; choose from {dataset_names()}")


SYNTHETIC_TASKS = {
    "copy": CopyTask,
    "adding": AddingProblem,
    "temporal_order": TemporalOrder,
    "markov": MarkovLanguage,
}


def synthetic_task(
    name: str, **options: object
) -> CopyTask | AddingProblem | TemporalOrder | MarkovLanguage:
    """A synthetic task by name and options, e.g. `synthetic_task("copy", blank_length=200)`."""
    if name not in SYNTHETIC_TASKS:
        raise ValueError(f"unknown synthetic task {name!r}; choose from {sorted(SYNTHETIC_TASKS)}")
    return SYNTHETIC_TASKS[name](**options)
