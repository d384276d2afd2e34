"""The project's real corpora as files on disk, and how each is split.

A corpus directory (`manual_dir`) holds the extracted files exactly as their creators
published them, laid out as in `../shared/data/<name>` (see that README for sources, sha256
and counts):

| name | files | splits |
|---|---|---|
| `ptb` | `ptb.{train,valid,test}.txt` | as published (Mikolov's 10k-vocabulary files) |
| `tiny_shakespeare` | `input.txt` | characters [0, 90%) / [90%, 95%) / [95%, 100%) |
| `multi30k` | `{train,val,test}.{en,de}` (test = test_2016_flickr) | as published |
| `sst` | `{train,dev,test}.txt` (PTB trees) | as published |
| `ud_english_ewt` | `en_ewt-ud-{train,dev,test}.conllu` | as published |
| `conll2003` | `{train,valid,test}.txt` | as published (eng.train/testa/testb) |

Split names are always `train`, `valid`, `test`. `SHA256` pins every file; `verify_files`
checks them (the TFDS builders do so before reading).

Tiny Shakespeare has no official split; char-rnn and nanoGPT use the first 90% of the
characters for training and the last 10% for validation. We cut that last 10% in two
halves (valid, test) so that tuning on valid leaves an untouched test set; the training
part is the same as theirs. Integer cut points: `int(0.9 * n)`, `int(0.95 * n)`.
`read_tiny_shakespeare(path)` reads and splits the file, naming it when it cannot be split.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

from rnn_jax.data.data_files import DataFormatError, DataNotFoundError, read_file_text

PathLike = str | os.PathLike
SPLITS = ("train", "valid", "test")

# The file of each split, relative to the corpus directory.
SPLIT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "ptb": {s: (f"ptb.{s}.txt",) for s in SPLITS},
    "tiny_shakespeare": {s: ("input.txt",) for s in SPLITS},
    "multi30k": {
        s: (f"{f}.en", f"{f}.de") for s, f in zip(SPLITS, ("train", "val", "test"), strict=True)
    },
    "sst": {s: (f"{f}.txt",) for s, f in zip(SPLITS, ("train", "dev", "test"), strict=True)},
    "ud_english_ewt": {
        s: (f"en_ewt-ud-{f}.conllu",) for s, f in zip(SPLITS, ("train", "dev", "test"), strict=True)
    },
    "conll2003": {s: (f"{s}.txt",) for s in SPLITS},
}

SHA256: dict[str, str] = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "test.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "train.txt@sst": "e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7",
    "dev.txt@sst": "0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40",
    "test.txt@sst": "6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761",
    "en_ewt-ud-train.conllu": "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
    "en_ewt-ud-dev.conllu": "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
    "en_ewt-ud-test.conllu": "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
    "train.txt@conll2003": "c99b26852dabf57ca9d30a0e892b84544cc8962003151e14a71077c55dc66db5",
    "valid.txt@conll2003": "f1f6469322876887de1d04acd43c59b02f59d5b02acf42c027132fa1bf349cb2",
    "test.txt@conll2003": "82e0c72d262f86ad3e78b15c5d980bbf87cb205aa4bf6d2d97643f463f8d7ff7",
}

# Directory name under the data root for each corpus (the shared layout).
CORPUS_DIRS = {name: name for name in SPLIT_FILES}

TINY_SHAKESPEARE_CUTS = (0.9, 0.95)


def expected_sha256(name: str, filename: str) -> str:
    """The pinned sha256 of `filename` of corpus `name`."""
    return SHA256.get(f"{filename}@{name}") or SHA256[filename]


def split_paths(name: str, manual_dir: PathLike) -> dict[str, tuple[pathlib.Path, ...]]:
    """`{split: (path, ...)}` for corpus `name` in `manual_dir`; missing files raise.

    A leading `~` in `manual_dir` is the home folder, as for `root.default_data_root` and
    the TFDS builders' `manual_dir` (`ptb_lm("~/data/ptb")` said "does not exist").
    """
    if name not in SPLIT_FILES:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {sorted(SPLIT_FILES)}")
    manual_dir = pathlib.Path(manual_dir).expanduser()
    needed = sorted({f for fs in SPLIT_FILES[name].values() for f in fs})
    if not manual_dir.is_dir():
        # A file given as manual_dir (e.g. one of the corpus's files) exists: "does not exist"
        # sent the user looking for a path that is there. Still FileNotFoundError: the CLI
        # reports that as a setting to fix (exit status 2).
        what = "is not a directory" if manual_dir.exists() else "does not exist"
        raise DataNotFoundError(
            f"manual_dir {os.fspath(manual_dir)!r} for corpus {name!r} {what}; it must be the "
            f"folder that holds {needed}"
        )
    paths = {s: tuple(manual_dir / f for f in files) for s, files in SPLIT_FILES[name].items()}
    for files in paths.values():
        for path in files:
            if not path.is_file():
                what = "is not a file" if path.exists() else "is missing"
                raise DataNotFoundError(
                    f"{os.fspath(path)} {what}: corpus {name!r} needs {needed} in "
                    f"{os.fspath(manual_dir)}"
                )
    return paths


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(name: str, manual_dir: PathLike) -> None:
    """Raises ValueError naming the file when a file's sha256 differs from the pinned one."""
    for files in split_paths(name, manual_dir).values():
        for path in files:
            want = expected_sha256(name, path.name)
            got = file_sha256(path)
            if got != want:
                raise ValueError(
                    f"{os.fspath(path)}: sha256 {got} differs from the published file's {want}; "
                    "it is not the expected release (re-extract it, or read it as a user corpus "
                    "with kind:path)"
                )


def tiny_shakespeare_splits(text: str) -> dict[str, str]:
    """The 90/5/5 character split of the Tiny Shakespeare text."""
    a, b = (int(fraction * len(text)) for fraction in TINY_SHAKESPEARE_CUTS)
    return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


def read_tiny_shakespeare(path: PathLike) -> dict[str, str]:
    """`tiny_shakespeare_splits` of the file at `path`, checked before anything trains on it.

    Raises `DataFormatError` naming the file when it is not UTF-8 (file:line), when it is too
    short for every split to get a character, or when valid or test hold a character that
    the training part lacks (the character vocabulary is closed, built from train).
    """
    text = read_file_text(path)
    texts = tiny_shakespeare_splits(text)
    empty = [split for split, part in texts.items() if not part]
    if empty:
        raise DataFormatError(
            f"{os.fspath(path)}: {len(text)} characters are too few for the Tiny Shakespeare "
            f"90/5/5 character split: {empty} would be empty (the published input.txt has "
            "1,115,394)"
        )
    seen = set(texts["train"])
    start = len(texts["train"])
    for split in ("valid", "test"):
        unseen = sorted(set(texts[split]) - seen)
        if unseen:
            raise DataFormatError(
                f"{os.fspath(path)}: the {split} part (from character {start}) "
                f"holds characters the training part lacks: {unseen[:10]}; the character "
                "vocabulary is closed (built from train), so they cannot be encoded"
            )
        start += len(texts[split])
    return texts
