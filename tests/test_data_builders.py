"""Our TFDS builders on the real files: prepared once per session, read back with
tfds.data_source (no TensorFlow), counts equal to ../shared/data/README.md and examples
equal to what the registry reads straight from the files.

Also: a manual_dir that is missing or empty fails at once (not after network retries), `~`
is expanded, and our `tiny_shakespeare` folder and the TFDS catalog's (same path, other
splits) are told apart: a folder one prepared is never read as the other's, and an unprepared
data_dir is named without downloading."""

import json
import shutil

import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from data_cache import cached_dataset  # noqa: E402

from rnn_jax.data import builders  # noqa: E402
from rnn_jax.data.catalog import load_catalog_dataset  # noqa: E402

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
    # The stored text is the line as published, its spaces kept and no <eos> (the tokens
    # above are the same for a stripped line).
    first = (data_root / "ptb" / "ptb.valid.txt").read_text(encoding="utf-8").split("\n")[0]
    assert sources["ptb"]["valid"][0]["text"].decode() == first
    assert first.startswith(" consumers may want to move") and first.endswith(" tv set ")


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
            examples = builders.examples_from_records(name, records)
            assert examples == from_files.splits[split]
            # The stored sentence (never read back above) is the tree's leaves joined by " ".
            sentences = [r["sentence"].decode().split(" ") for r in records]
            assert sentences == [e["tokens"] for e in examples]


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


@pytest.mark.parametrize(
    ("state", "what"),
    [("missing", "does not exist"), ("empty", "is empty"), ("file", "is not a directory")],
)
def test_a_given_manual_dir_that_is_missing_or_empty_fails_at_once(tmp_path, state, what):
    """Each says which: one of the corpus's files given as manual_dir "did not exist"."""
    manual = tmp_path / "ptbb"
    if state == "empty":
        manual.mkdir()
    if state == "file":
        manual.write_text("a file\n")
    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match=rf"ptb: manual_dir .*ptbb {what}; it must"):
        builders.prepare("ptb", data_dir, manual)
    assert not (data_dir / "downloads").exists()  # nothing was fetched


def test_builders_expand_the_home_folder(home, data_root):
    shutil.copytree(data_root / "tiny_shakespeare", home / "manual")
    builders.prepare("tiny_shakespeare", "~/tfds", "~/manual")
    assert (home / "tfds" / "tiny_shakespeare" / "1.0.0" / "dataset_info.json").is_file()
    assert not (home.parent / "cwd" / "~").exists()
    dataset = builders.prepared_dataset("tiny_shakespeare", "~/tfds")
    text = (data_root / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert "".join(t for e in dataset.splits["test"] for t in e["tokens"]) == text[1_059_624:]


def test_records_of_an_unknown_builder_are_named():
    """An unknown name fell through to the SST branch and raised KeyError: 'tree'."""
    with pytest.raises(ValueError, match="unknown builder 'imdb'"):
        builders.examples_from_records("imdb", [{"text": "good", "label": 1}])


CATALOG_MODULE = "tensorflow_datasets.datasets.tiny_shakespeare.tiny_shakespeare_dataset_builder"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_root):
    """`{"ours": data_dir with our tiny_shakespeare, "catalog": one as the catalog's}`."""
    ours = tmp_path_factory.mktemp("ours")
    builders.prepare("tiny_shakespeare", ours, data_root / "tiny_shakespeare")
    # The catalog's build (it needs TensorFlow and the network to prepare) differs from ours
    # in what dataset_info.json records: its module, its split names, shuffling not disabled.
    catalog = tmp_path_factory.mktemp("catalog")
    folder = catalog / "tiny_shakespeare" / "1.0.0"
    shutil.copytree(ours / "tiny_shakespeare" / "1.0.0", folder)
    for path in folder.glob("*-valid.array_record*"):
        path.rename(path.with_name(path.name.replace("-valid.", "-validation.")))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["moduleName"] = CATALOG_MODULE
    info.pop("disableShuffling")
    info["splits"] = [
        {**s, "name": s["name"].replace("valid", "validation")} for s in info["splits"]
    ]
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return {"ours": ours, "catalog": catalog}


def test_a_folder_the_catalog_prepared_is_not_taken_for_ours(prepared, data_root):
    foreign = r"tiny_shakespeare/1.0.0 holds a dataset prepared by tensorflow_datasets\.dat"
    with pytest.raises(ValueError, match=foreign + r".*\['test', 'train', 'validation'\]"):
        builders.prepare("tiny_shakespeare", prepared["catalog"], data_root / "tiny_shakespeare")
    with pytest.raises(ValueError, match=foreign + r".*use another data_dir for ours"):
        builders.prepared_dataset("tiny_shakespeare", prepared["catalog"])
    # Our own folder reads back with our splits.
    dataset = builders.prepared_dataset("tiny_shakespeare", prepared["ours"])
    assert list(dataset.splits) == ["train", "valid", "test"]


def test_an_unprepared_data_dir_is_named_without_downloading(tmp_path):
    for name in ("ptb", "tiny_shakespeare"):
        with pytest.raises(FileNotFoundError, match=rf"{name} is not prepared in .*prepare\("):
            builders.prepared_dataset(name, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no downloads/, no half-prepared folder


def test_the_catalog_names_our_build_in_its_folder(prepared):
    with pytest.raises(ValueError, match=r"holds the project's own builder .*another data_dir"):
        load_catalog_dataset("tiny_shakespeare", prepared["ours"])


def test_the_default_manual_folder_without_our_files_falls_back_to_the_download(
    tmp_path, monkeypatch, data_root
):
    """TFDS's `<data_dir>/downloads/manual` holds every dataset's manual files: one other file
    there ("ptb.train.txt") made preparing tiny_shakespeare without a manual_dir fail with
    "manual_dir ... lacks ['.../input.txt']" instead of downloading, as `prepare` documents."""
    from rnn_jax.data.builders.base import CorpusBuilder

    downloads = tmp_path / "downloads"
    (downloads / "manual").mkdir(parents=True)
    (downloads / "manual" / "ptb.train.txt").write_text("another dataset's file")
    source = data_root / "tiny_shakespeare" / "input.txt"
    monkeypatch.setattr(CorpusBuilder, "_download", lambda self, dl, names: {"input.txt": source})
    manager = tfds.download.DownloadManager(
        download_dir=downloads, manual_dir=downloads / "manual", manual_dir_instructions="x"
    )
    corpus_builder = builders.builder("tiny_shakespeare", tmp_path)
    assert corpus_builder._files(manager) == {"input.txt": source}
    # A manual_dir that was given (any other folder) still has to hold the files.
    given = tfds.download.DownloadManager(
        download_dir=downloads,
        manual_dir=shutil.copytree(downloads / "manual", tmp_path / "m"),
        manual_dir_instructions="x",
    )
    with pytest.raises(FileNotFoundError, match=r"manual_dir .*m lacks \[.*input.txt'\]"):
        corpus_builder._files(given)


def test_without_a_manual_dir_the_urls_are_downloaded_and_a_failure_is_named(
    tmp_path, monkeypatch, data_root
):
    """No manual_dir at all: the files come from `URLS` (an archive member for SST), their
    sha256 is checked; a failed download names the URL and says to pass a manual_dir."""
    sst = builders.builder("sst/sst5", tmp_path)
    manager = tfds.download.DownloadManager(download_dir=tmp_path / "downloads")
    extracted = tmp_path / "extracted"
    (extracted / "trees").mkdir(parents=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        (extracted / "trees" / name).symlink_to(data_root / "sst" / name)
    url = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
    monkeypatch.setattr(manager, "download_and_extract", lambda urls: {u: extracted for u in urls})
    want = {n: extracted / "trees" / n for n in ("dev.txt", "test.txt", "train.txt")}
    assert sst._files(manager) == want

    def offline(urls):
        raise OSError("network is unreachable")

    monkeypatch.setattr(manager, "download_and_extract", offline)
    with pytest.raises(RuntimeError, match=rf"sst: .*downloading \['{url}'\] failed \(OSError: "):
        sst._files(manager)
    bad = tmp_path / "bad.txt"
    bad.write_text("(3 (2 good) (3 film))\n(3 (2 good) (3 film)))\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: unbalanced '\)'$"):
        list(sst._generate_examples("train", [bad]))
