"""Session 21 review of the data builders, catalog and registry: each test failed before its fix.

- `builders.prepare` with a `manual_dir` that does not exist or is empty (a typo) went to the
  network instead: offline, ~3.5 minutes of retries, then "no manual_dir with the files".
- `tfds:NAME` with a NAME outside the catalog said "is not kind:path with kind in [...]".
- The catalog's glue/sst2 `test` split came with TFDS's placeholder label -1 on every example
  (GLUE's test labels are not public), as if it were a label.
- A data_dir with `~` (the docstrings' own `data_dir="~/tfds"`, `--data_dir=~/...`) was
  taken literally by TFDS: `prepare` wrote into a folder named "~" in the cwd, and a catalog
  dataset prepared in the home folder was "not prepared".
"""

import shutil

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from rnn_jax.data import builders, stats  # noqa: E402
from rnn_jax.data.catalog import CATALOG, catalog_data_sources, load_catalog_dataset  # noqa: E402
from rnn_jax.data.registry import load_dataset  # noqa: E402


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_given_manual_dir_that_is_missing_or_empty_fails_at_once(tmp_path, state):
    manual = tmp_path / "ptbb"
    if state == "empty":
        manual.mkdir()
    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match=r"ptb: manual_dir .*ptbb does not exist or is"):
        builders.prepare("ptb", data_dir, manual)
    assert not (data_dir / "downloads").exists()  # nothing was fetched


def test_an_unknown_tfds_name_lists_the_catalog():
    with pytest.raises(ValueError, match=r"unknown catalog dataset 'lm1b'; choose from .*glue"):
        load_dataset("tfds:lm1b")
    assert stats.main(["--dataset=tfds:lm1b"]) == 2


class _Source(list):
    """A `tfds.data_source` split: the records plus `dataset_info`."""

    def __init__(self, records, info):
        super().__init__(records)
        self.dataset_info = info


def _glue_sources(self, split, **kwargs):
    """GLUE SST-2 as TFDS prepares it: the test split has no labels, so every label is -1."""

    def one(name):
        label = (lambda i: -1) if name == "test" else (lambda i: i % 2)
        return _Source(
            [{"sentence": b"a fine film", "label": label(i)} for i in range(3)], self.info
        )

    return [one(s) for s in split] if isinstance(split, list) else one(split)


def test_glue_sst2_has_no_test_split_with_placeholder_labels(monkeypatch):
    with tfds.testing.mock_data(as_data_source_fn=_glue_sources):
        dataset = load_catalog_dataset("glue/sst2")
    assert set(dataset.splits) == {"train", "valid"}
    assert [e["label"] for e in dataset.splits["valid"]] == [0, 1, 0]
    assert all(e["label"] >= 0 for split in dataset.splits.values() for e in split)
    # A catalog entry whose split does hold unlabelled examples is refused, not read as -1.
    with pytest.raises(ValueError, match=r"label -1.*unlabelled"):
        CATALOG["imdb_reviews"].convert({"text": b"good", "label": np.int64(-1)}, None)
    # Mapped as labelled anyway, the split is refused naming the dataset, split and example.
    monkeypatch.setitem(CATALOG["glue/sst2"].splits, "test", "test")
    with (
        tfds.testing.mock_data(as_data_source_fn=_glue_sources),
        pytest.raises(ValueError, match=r"'glue/sst2' split 'test', example 0 .*label -1"),
    ):
        load_catalog_dataset("glue/sst2")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh home folder for `~`, and a separate cwd where a literal "~" would appear."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home"


def test_builders_expand_the_home_folder(home, data_root):
    shutil.copytree(data_root / "tiny_shakespeare", home / "manual")
    builders.prepare("tiny_shakespeare", "~/tfds", "~/manual")
    assert (home / "tfds" / "tiny_shakespeare" / "1.0.0" / "dataset_info.json").is_file()
    assert not (home.parent / "cwd" / "~").exists()
    dataset = builders.prepared_dataset("tiny_shakespeare", "~/tfds")
    text = (data_root / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert "".join(t for e in dataset.splits["test"] for t in e["tokens"]) == text[1_059_624:]


def test_catalog_expands_the_home_folder(home, monkeypatch):
    asked = {}

    def data_source(name, split, data_dir, download):
        asked["data_dir"] = data_dir
        return [[] for _ in split]

    monkeypatch.setattr(tfds, "data_source", data_source)
    catalog_data_sources("imdb_reviews", "~/tensorflow_datasets")
    assert asked["data_dir"] == str(home / "tensorflow_datasets")


def test_records_of_an_unknown_builder_are_named():
    """An unknown name fell through to the SST branch and raised KeyError: 'tree'."""
    with pytest.raises(ValueError, match="unknown builder 'imdb'"):
        builders.examples_from_records("imdb", [{"text": "good", "label": 1}])
