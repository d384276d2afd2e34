"""The data CLI and registry on bad input: non-zero exit and a message naming the problem."""

import json
import subprocess
import sys

import pytest

from rnn_jax.data.registry import TextDataset, load_dataset, synthetic_task
from rnn_jax.data.stats import dataset_stats, main


def test_unknown_dataset_lists_the_choices(capsys):
    assert main(["--dataset=penn"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'penn'" in err and "'ptb'" in err and "conll:PATH" in err


def test_bad_user_files(tmp_path, capsys):
    assert main([f"--dataset=conllu:{tmp_path / 'missing.conllu'}"]) == 2
    assert "missing.conllu" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("EU NNP B-ORG\nrejects\n")
    assert main([f"--dataset=conll:{tmp_path / 'bad.txt'}"]) == 2
    assert "bad.txt:2:" in capsys.readouterr().err
    (tmp_path / "a.en").write_text("a\nb\n")
    (tmp_path / "a.de").write_text("x\n")
    assert main([f"--dataset=parallel:{tmp_path / 'a.en'},{tmp_path / 'a.de'}"]) == 2
    assert "different line counts" in capsys.readouterr().err
    (tmp_path / "empty.tsv").write_text("")
    assert main([f"--dataset=tsv:{tmp_path / 'empty.tsv'}"]) == 2
    assert "empty split" in capsys.readouterr().err


def test_user_parallel_file_stats(tmp_path, capsys):
    """The whole JSON, target side included: substring checks ('"vocab_size": 2' in out) also
    matched 20, and no test read `target_tokens` or `target_oov_rate`, so either computed from
    the source side passed. Counted by hand; a held-out split makes the OOV rates non-zero."""
    (tmp_path / "a.en").write_text("a b\nb\n")
    (tmp_path / "a.de").write_text("x\ny y z\n")
    spec = f"parallel:{tmp_path / 'a.en'},{tmp_path / 'a.de'}"
    assert main([f"--dataset={spec}"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dataset": spec,
        "vocab_size": 2,
        "num_specials": 4,
        "target_vocab_size": 3,
        "splits": {
            "train": {
                "examples": 2,
                "tokens": 3,
                "oov_rate": 0.0,
                "target_tokens": 4,
                "target_oov_rate": 0.0,
            }
        },
    }
    held_out = [{"source": ["a", "q", "r"], "target": ["x", "new"]}]  # 2/3 and 1/2 unseen
    splits = {"train": load_dataset(spec).splits["train"], "test": held_out}
    assert dataset_stats(TextDataset("d", "translation", splits))["splits"]["test"] == {
        "examples": 1,
        "tokens": 3,
        "oov_rate": pytest.approx(2 / 3),
        "target_tokens": 2,
        "target_oov_rate": 0.5,
    }


def test_user_tsv_with_a_header_line(tmp_path):
    """GLUE's tsv files start with column names: `tsv_header:` skips that line, where `tsv:`
    reads it as one more example, of a class named 'label'."""
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nbad\t0\n")
    with_header = load_dataset(f"tsv_header:{path}").splits["train"]
    assert [e["label"] for e in with_header] == ["1", "0"]
    assert [e["label"] for e in load_dataset(f"tsv:{path}").splits["train"]] == ["label", "1", "0"]


def test_registry_errors():
    with pytest.raises(ValueError, match=r"'csv:/x': unknown kind 'csv'; .*kind:path with kind in"):
        load_dataset("csv:/x")
    # "text:" was "not kind:path", though its kind is right: the path is what is missing
    with pytest.raises(ValueError, match=r"dataset 'text:': the path after 'text:' is empty"):
        load_dataset("text:")
    with pytest.raises(ValueError, match="'markov'"):
        synthetic_task("parity")
    assert synthetic_task("copy", blank_length=7).length == 27


def test_cli_exit_status_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rnn_jax.data.stats", "--dataset=nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "unknown dataset 'nope'" in result.stderr


@pytest.mark.parametrize("spec", ["parallel:a.en,", "parallel:,a.de", "parallel:a,b,c"])
def test_parallel_spec_needs_two_nonempty_paths(spec):
    """An empty path gave "data file '' does not exist", which does not name the spec."""
    with pytest.raises(ValueError, match=rf"'parallel:SOURCE,TARGET'.*got '{spec[9:]}'"):
        load_dataset(spec)
