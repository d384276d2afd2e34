"""TFDS catalog datasets through tfds.data_source under tfds.testing.mock_data (no TensorFlow).

Each catalog dataset's mocked examples go through our whole pipeline (tokenise -> vocabulary
-> padded batches); lengths, masks and ids are checked against the mocked examples. Also: an
unknown `tfds:` name lists the catalog, GLUE SST-2's unlabelled test split is left out, `~`
is expanded, and UD sentences keep the syntactic words only (our CoNLL-U reader the
reference)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from rnn_jax.data import LMStream, pad_batch, stats  # noqa: E402
from rnn_jax.data.catalog import CATALOG, catalog_data_sources, load_catalog_dataset  # noqa: E402
from rnn_jax.data.pipeline import build_vocabs, encode_split, stream_ids  # noqa: E402
from rnn_jax.data.registry import load_dataset  # noqa: E402

NUM_EXAMPLES = 6
# mock_data draws every variable-length feature's length independently (5..50), so a mocked
# sentence's tokens and tags differ in length, which our converter rejects. Its generator's
# constant_dynamic_shape option (every such length = 10) keeps them aligned.
SENTENCE_LENGTH = 10


@pytest.fixture(autouse=True)
def aligned_sequences(monkeypatch):
    mocking = pytest.importorskip("tensorflow_datasets.testing.mocking")
    original = mocking.RandomFakeGenerator.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._constant_dynamic_shape = True

    monkeypatch.setattr(mocking.RandomFakeGenerator, "__init__", init)


def _mocked(name):
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
        raw = {
            s: [src[i] for i in range(len(src))] for s, src in catalog_data_sources(name).items()
        }
        dataset = load_catalog_dataset(name)
    return raw, dataset


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(CATALOG) if CATALOG[n].task != "char_language_modeling"],
)
def test_catalog_examples_through_the_pipeline(name):
    raw, dataset = _mocked(name)
    assert set(dataset.splits) == set(CATALOG[name].splits)
    assert {s: len(e) for s, e in dataset.splits.items()} == {s: NUM_EXAMPLES for s in raw}
    vocabs = build_vocabs(dataset)
    field = dataset.token_field
    # Mocked text is random; drop examples whose (source) text is only spaces.
    kept = [(i, e) for i, e in enumerate(dataset.splits["train"]) if len(e[field]) > 0]
    if dataset.task == "translation":
        kept = [(i, e) for i, e in kept if len(e["target"]) > 0]
    assert kept, "mock_data gave no non-empty example"
    encoded = encode_split(dataset, "train", vocabs)
    fields = ("source", "targets") if dataset.task == "translation" else ("inputs",)
    batch = pad_batch([encoded[i] for i, _ in kept], length_fields=fields)
    key = "source" if dataset.task == "translation" else "inputs"
    lengths = batch["source_lengths" if key == "source" else "lengths"]
    mask = batch["source_mask" if key == "source" else "mask"]
    for row, (index, example) in enumerate(kept):
        tokens = example[field]
        source = raw["train"][index]
        # Our tokens are the mocked text split on whitespace, or the mocked token list.
        if dataset.task == "tagging":
            assert tokens == [
                t.decode() if isinstance(t, bytes) else str(t) for t in source["tokens"]
            ]
            assert len(example["tags"]) == len(tokens) == SENTENCE_LENGTH
        elif dataset.task == "classification":
            text_key = "sentence" if "sentence" in source else "text"
            assert tokens == str(source[text_key]).split()
            assert int(source["label"]) == example["label"]
        elif dataset.task == "translation":
            source_language = name.split("/")[1].replace("_to_", "-").split("-")[0]
            assert tokens == str(source[source_language]).split()
            assert example["target"] == str(source["en"]).split()
            n = len(example["target"]) + 1
            assert batch["targets_lengths"][row] == n and batch["targets_mask"][row].sum() == n
        assert lengths[row] == len(tokens) and mask[row].sum() == len(tokens)
        assert mask[row, len(tokens) :].sum() == 0
        assert vocabs[field].decode(batch[key][row, : len(tokens)]) == tokens


def test_tagging_labels_are_class_names():
    raw, dataset = _mocked("conll2003")
    names = tfds.builder("conll2003").info.features["ner"].feature.names
    for source, example in zip(raw["train"], dataset.splits["train"], strict=True):
        assert example["tags"] == [names[int(i)] for i in source["ner"]]
    features = tfds.builder("conll2003").info.features
    with pytest.raises(ValueError, match=r"2 tokens but 1 ner tags: \['EU', 'rejects'\]"):
        CATALOG["conll2003"].convert({"tokens": [b"EU", b"rejects"], "ner": [0]}, features)


def test_tiny_shakespeare_catalog_stream():
    raw, dataset = _mocked("tiny_shakespeare")
    text = "".join(str(example["text"]) for example in raw["train"])
    vocab = build_vocabs(dataset)["tokens"]
    ids = stream_ids(dataset, "train", vocab)
    assert "".join(vocab.decode(ids)) == text
    stream = LMStream(ids, 2, 3)
    first = next(iter(stream))
    row_length = len(ids) // 2
    np.testing.assert_array_equal(first["inputs"][1], ids[row_length : row_length + 3])

    # The mocked text holds no newline, so the above passes whatever happens at one: a text
    # that has them is cut into lines that keep their "\n" (a blank line is one "\n"), every
    # line an example of the split.
    def one_text(self, split, **kwargs):
        return [_Source([{"text": b"Speak.\n\nAll:\nSpeak"}], self.info) for _ in split]

    with tfds.testing.mock_data(as_data_source_fn=one_text):
        lines = load_catalog_dataset("tiny_shakespeare").splits["valid"]
    assert [e["tokens"] for e in lines] == [list("Speak.\n"), ["\n"], list("All:\n"), list("Speak")]


def test_catalog_names_in_the_registry():
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        assert load_dataset("tfds:conll2003").task == "tagging"
        assert load_dataset("imdb_reviews").task == "classification"
    with pytest.raises(ValueError, match="unknown catalog dataset 'c4'"):
        catalog_data_sources("c4")


def test_an_unprepared_catalog_dataset_fails_at_once_instead_of_downloading(tmp_path, monkeypatch):
    """tfds.data_source downloads by default: an unprepared name spent minutes retrying the
    network and left downloads/ behind. Now nothing is fetched and the error says how to
    prepare it."""
    with pytest.raises(ValueError, match=r"'imdb_reviews' is not prepared .*tfds build imdb"):
        catalog_data_sources("imdb_reviews", tmp_path)
    assert not (tmp_path / "downloads").exists()

    # An error without a message (a bare assert in TFDS) raised IndexError from the handler.
    def bare_assert(*args, **kwargs):
        raise AssertionError()

    monkeypatch.setattr(tfds, "data_source", bare_assert)
    with pytest.raises(ValueError, match=r"'imdb_reviews' is not prepared .*\(AssertionError\);"):
        catalog_data_sources("imdb_reviews", tmp_path)
    # A builder that does not even load is still reported as not prepared (with the reason).
    monkeypatch.setattr(tfds, "builder", bare_assert)
    with pytest.raises(ValueError, match=r"'imdb_reviews' is not prepared .*\(AssertionError\);"):
        catalog_data_sources("imdb_reviews", tmp_path)


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


def test_catalog_expands_the_home_folder(home, monkeypatch):
    asked = {}

    def data_source(name, split, data_dir, download):
        asked["data_dir"] = data_dir
        return [[] for _ in split]

    monkeypatch.setattr(tfds, "data_source", data_source)
    catalog_data_sources("imdb_reviews", "~/tensorflow_datasets")
    assert asked["data_dir"] == str(home / "tensorflow_datasets")


# One sentence with a multiword token (1-2) and an empty node (3.1), as UD writes them.
UD_SENTENCE = """# text = don't go.
1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t3:aux\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t3:advmod\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t0:root\t_
3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\tCopyOf=3
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t3:punct\t_

"""


def test_catalog_ud_sentences_keep_the_syntactic_words_only(tmp_path):
    """TFDS's UD builder (conllu.parse_incr + get_conllu_example) stores every line: "don't"
    tagged `_` beside "do" "n't", and the empty node's copy of "go"; the catalog passed them
    on as words. Reference: our strict CoNLL-U reader on the same text."""
    from tensorflow_datasets.core.dataset_builders.conll import conllu_dataset_builder_utils

    from rnn_jax.data.catalog import CATALOG
    from rnn_jax.data.readers import read_conllu

    upos_names = conllu_dataset_builder_utils.UPOS
    features = tfds.features.FeaturesDict(
        {"upos": tfds.features.Sequence(tfds.features.ClassLabel(names=upos_names))}
    )
    # TFDS's record: one entry per line; conllu reads HEAD "_" as None, stored as "None".
    rows = [line.split("\t") for line in UD_SENTENCE.splitlines()[1:-1]]
    record = {
        "tokens": [row[1].encode() for row in rows],
        "upos": [upos_names.index(row[3]) for row in rows],
        "head": [("None" if row[6] == "_" else row[6]).encode() for row in rows],
    }
    (converted,) = CATALOG["universal_dependencies/en_ewt"].convert(record, features)
    path = tmp_path / "one.conllu"
    path.write_text(UD_SENTENCE, encoding="utf-8")
    (expected,) = read_conllu(path)
    assert converted["tokens"] == expected["tokens"] == ["do", "n't", "go", "."]
    assert converted["tags"] == converted["upos"] == expected["upos"]
    # A user's CoNLL-U file through the registry is tagged with the same UPOS.
    (user,) = load_dataset(f"conllu:{path}").splits["train"]
    assert user["tags"] == expected["upos"] == ["AUX", "PART", "VERB", "PUNCT"]
    with pytest.raises(ValueError, match="4 tokens, 6 upos tags and 6 heads"):
        CATALOG["universal_dependencies/en_ewt"].convert(
            {**record, "tokens": record["tokens"][:4]}, features
        )


def test_catalog_split_names_are_the_builders_own():
    """mock_data accepts any split name, so nothing checked the mapping to TFDS's split names
    (conll2003's and UD's "dev" against the others' "validation"): a wrong one failed only on
    prepared data. Reference: the splits each builder's `_split_generators` makes, with the
    downloads faked (nothing is read). tiny_shakespeare (needs TensorFlow) and wmt14 (its
    download structure) are left out."""
    import importlib
    import pathlib
    from unittest import mock

    def fake_paths(urls):
        if isinstance(urls, dict):
            return {key: fake_paths(value) for key, value in urls.items()}
        if isinstance(urls, list):
            return [fake_paths(value) for value in urls]
        return pathlib.Path("/nonexistent/download")

    names = [
        "conll2003",
        "glue/sst2",
        "imdb_reviews",
        "ted_hrlr_translate/pt_to_en",
        "universal_dependencies/en_ewt",
    ]
    for name in names:
        entry = CATALOG[name]
        if entry.module:
            importlib.import_module(entry.module)
        downloads = mock.MagicMock()
        downloads.download_and_extract.side_effect = fake_paths
        downloads.download.side_effect = fake_paths
        generators = tfds.builder(name)._split_generators(downloads)
        splits = set(generators) if isinstance(generators, dict) else {g.name for g in generators}
        assert set(entry.splits.values()) <= splits, (name, entry.splits, sorted(splits))
