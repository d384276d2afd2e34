"""Our TFDS builders on the real files: prepared once per session, read back with
tfds.data_source (no TensorFlow), counts equal to ../shared/data/README.md and examples
equal to what the registry reads straight from the files."""

import shutil

import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from data_cache import cached_dataset  # noqa: E402

from rnn_jax.data import builders  # noqa: E402

MANUAL_DIRS = {
    "ptb": "ptb",
    "tiny_shakespeare": "tiny_shakespeare",
    "multi30k": "multi30k",
    "sst/sst5": "sst",
    "sst/sst2": "sst",
}
COUNTS = {
    "ptb": {"train": 42_068, "valid": 3_370, "test": 3_761},  # lines (one <eos> each)
    "tiny_shakespeare": {"train": 1, "valid": 1, "test": 1},
    "multi30k": {"train": 29_000, "valid": 1_014, "test": 1_000},
    "sst/sst5": {"train": 8_544, "valid": 1_101, "test": 2_210},
    "sst/sst2": {"train": 6_920, "valid": 872, "test": 1_821},
}


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, data_root):
    data_dir = tmp_path_factory.mktemp("tfds")
    for name, directory in MANUAL_DIRS.items():
        builders.prepare(name, data_dir, data_root / directory)
    return data_dir


@pytest.fixture(scope="session")
def sources(tfds_dir):
    return {name: tfds.data_source(name, data_dir=str(tfds_dir)) for name in MANUAL_DIRS}


@pytest.mark.parametrize("name", sorted(MANUAL_DIRS))
def test_record_counts(sources, name):
    assert {split: len(source) for split, source in sources[name].items()} == COUNTS[name]


def test_ptb_tokens_through_the_builder(sources, data_root):
    from_files = cached_dataset("ptb", str(data_root))
    for split, tokens in {"train": 929_589, "valid": 73_760, "test": 82_430}.items():
        examples = builders.examples_from_records(
            "ptb", builders.read_records(sources["ptb"][split])
        )
        assert sum(len(e["tokens"]) for e in examples) == tokens
        assert examples == from_files.splits[split]


def test_tiny_shakespeare_split_through_the_builder(tfds_dir, data_root):
    dataset = builders.prepared_dataset("tiny_shakespeare", tfds_dir)
    assert dataset.splits == cached_dataset("tiny_shakespeare", str(data_root)).splits
    chars = {s: sum(len(e["tokens"]) for e in ex) for s, ex in dataset.splits.items()}
    assert chars == {"train": 1_003_854, "valid": 55_770, "test": 55_770}


def test_multi30k_and_sst_match_the_files(sources, data_root):
    multi30k = cached_dataset("multi30k", str(data_root))
    for split in ("valid", "test"):
        records = builders.read_records(sources["multi30k"][split])
        assert builders.examples_from_records("multi30k", records) == multi30k.splits[split]
    first = builders.examples_from_records("multi30k", [sources["multi30k"]["train"][0]])
    assert first == multi30k.splits["train"][:1]
    for name, registry_name in (("sst/sst5", "sst"), ("sst/sst2", "sst2")):
        from_files = cached_dataset(registry_name, str(data_root))
        for split, source in sources[name].items():
            records = builders.read_records(source)
            assert builders.examples_from_records(name, records) == from_files.splits[split]


@pytest.fixture()
def shakespeare_copy(tmp_path, data_root):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(data_root / "tiny_shakespeare" / "input.txt", manual / "input.txt")
    return manual


def test_checksum_mismatch_names_the_file(tmp_path, shakespeare_copy):
    with open(shakespeare_copy / "input.txt", "a") as f:
        f.write("x")
    with pytest.raises(ValueError, match=r"input.txt has sha256 [0-9a-f]{64}, expected 86c4e6"):
        builders.prepare("tiny_shakespeare", tmp_path / "tfds", shakespeare_copy)


def test_missing_file_in_manual_dir(tmp_path, shakespeare_copy):
    (shakespeare_copy / "input.txt").rename(shakespeare_copy / "other.txt")
    with pytest.raises(FileNotFoundError, match=r"lacks \[.*input.txt'\]"):
        builders.prepare("tiny_shakespeare", tmp_path / "tfds", shakespeare_copy)


def test_unknown_builder():
    with pytest.raises(ValueError, match="unknown builder 'wikitext'.*'ptb'"):
        builders.builder("wikitext", "/tmp")
