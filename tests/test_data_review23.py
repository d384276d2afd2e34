"""Session 23 review of the data builders and the catalog: each test failed before its fix.

Our `tiny_shakespeare` builder and the TFDS catalog's store themselves in the same folder,
`<data_dir>/tiny_shakespeare/1.0.0` (ours: splits train/valid/test; the catalog's:
train/validation/test), and `tfds.data_source("tiny_shakespeare")` resolves the catalog's
class whichever prepared the folder:

- `builders.prepare` in a data_dir where the catalog's was prepared reused it ("already
  prepared"), and `prepared_dataset` then returned splits train/validation/test: no `valid`.
- `prepared_dataset` on a data_dir where nothing was prepared went through
  `tfds.data_source` (download=True): for tiny_shakespeare it started the *catalog's*
  download and preparation (offline: two minutes of retries, a `downloads/` folder left
  behind); for ptb it said "Dataset ptb not found. Available datasets: ..." (hundreds of
  names), naming neither the folder nor `prepare`.
- The catalog's `tfds:tiny_shakespeare` on a data_dir holding ours said it "is not prepared"
  and to run `tfds build` there, which would reuse our folder and fail the same way.
"""

import json
import shutil

import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from rnn_jax.data import builders  # noqa: E402
from rnn_jax.data.catalog import load_catalog_dataset  # noqa: E402

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
    with pytest.raises(ValueError, match="4 tokens, 6 upos tags and 6 heads"):
        CATALOG["universal_dependencies/en_ewt"].convert(
            {**record, "tokens": record["tokens"][:4]}, features
        )
