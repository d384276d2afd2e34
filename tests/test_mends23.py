"""Session 23 mends: the sweep report's all-diverged metrics and number-equal settings, atomic
writes that keep a file's mode and a symlink, Vocabulary.build given strings, tag_tables on
tags without a prefix."""

import json
import os
import stat

import numpy as np
import pytest

from launch import report
from rnn_jax import metrics
from rnn_jax.data.lm_corpus import tiny_shakespeare_lm
from rnn_jax.data.vocab import Vocabulary
from rnn_jax.files import write_text_atomic


def test_report_keeps_an_all_diverged_metric_and_groups_equal_numbers(tmp_path):
    """A metric null for every seed of every group (all diverged) vanished from the table, in
    the runtime's multi-seed form (`per_seed`) and as a grid's list. Groups keyed on the JSON
    text of the setting, so lr=1 and lr=1.0 (other seeds of one sweep) became two rows."""
    runs = [
        (
            "lr=1,seed=0",
            {"lr": 1, "seed": 0},
            {"acc": 0.5, "loss": None, "loss_std": None, "per_seed": {"loss": [None, None]}},
        ),
        ("lr=1.0,seed=1", {"lr": 1.0, "seed": 1}, {"acc": 0.7, "loss": [None]}),
        ("lr=True,seed=0", {"lr": True, "seed": 0}, {"acc": 0.9, "loss": [None]}),
    ]
    for name, _, final in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"final": final}))
    entries = [{"name": name, "overrides": o, "command": []} for name, o, _ in runs]
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "x.py:smoke", "runs": entries}))
    groups = report.group_runs(report.load_runs(tmp_path)[1])
    assert [g["setting"] for g in groups] == [{"lr": 1}, {"lr": True}]
    assert [len(g["runs"]) for g in groups] == [2, 1]
    loss = groups[0]["samples"]["loss"]
    assert len(loss) == 3 and np.isnan(loss).all()
    table = report.markdown_table(groups)
    assert table.splitlines()[0] == "| lr | acc | loss |"
    assert "| 1 | 0.6 ± 0.1414 (2) | no finite value (0 of 3) |" in table
    assert "| True | 0.9 ± 0 (1) | no finite value (0 of 1) |" in table
    assert report.seed_samples([None, None]) is None  # a curve's step with no value: no point


def test_atomic_write_keeps_the_mode_and_writes_through_a_symlink(tmp_path):
    """Replacing a file reset its mode to the umask's default (a 0o600 secret became 0o644),
    and a symlinked path became a regular file while its target kept the old text."""
    path = tmp_path / "secret.json"
    path.write_text("old")
    os.chmod(path, 0o600)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "results.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "results.json"
    link.symlink_to(os.path.join("real", "results.json"))  # relative, as `ln -s` makes
    write_text_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "results.json")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    dangling = tmp_path / "report.md"
    dangling.symlink_to(tmp_path / "real" / "report.md")
    write_text_atomic(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "report.md").read_text() == "made"
    with pytest.raises(UnicodeEncodeError):  # a failed write through the link: no temporary
        write_text_atomic(link, "\ud800")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["report.md", "results.json"]
    assert sorted(os.listdir(tmp_path)) == ["real", "report.md", "results.json", "secret.json"]


def test_vocabulary_build_refuses_strings_for_token_sequences(tmp_path):
    """`Vocabulary.build(["a b", "c"])` read each string character by character: a vocabulary
    of 'a', ' ', 'b', 'c' with no error. Tiny Shakespeare's character vocabulary (the one
    caller that relied on it) is unchanged: every training character, by frequency then
    character, counted here by hand."""
    with pytest.raises(TypeError, match=r"sequences\[1\] is a string \('c d'\), not a seq"):
        Vocabulary.build([["a", "b"], "c d"])
    with pytest.raises(TypeError, match=r"sequences is a string \('a b'\); expected an it"):
        Vocabulary.build("a b")
    text = "ab\nba ca!\n" * 9 + "ab cab\n! ba"  # train: the first 90% of the characters
    (tmp_path / "input.txt").write_text(text)
    corpus = tiny_shakespeare_lm(tmp_path)
    train = text[: int(len(text) * 0.9)]
    counts = {c: train.count(c) for c in set(train)}
    assert corpus.vocab.tokens == tuple(sorted(counts, key=lambda c: (-counts[c], c)))
    assert corpus.vocab.num_specials == 0 and corpus.vocab.unk is None


def test_tag_tables_refuses_tags_extract_spans_refuses():
    """tag_tables read any tag without '-' as O ('PER', 'B', ''), so the jitted span counts
    scored a tag set that span_f1 refused; now both raise the same error. A vocabulary's
    specials in angle brackets ('<pad>') still count as O."""
    for tag, scheme in (("PER", "IOB2"), ("B", "IOB1"), ("", "IOBES"), ("<pad", "IOB2")):
        with pytest.raises(ValueError) as spans_error:
            metrics.extract_spans(["B-LOC", tag], scheme)
        with pytest.raises(ValueError) as tables_error:
            metrics.tag_tables(["<pad>", tag], scheme)
        assert str(tables_error.value) == str(spans_error.value)
        assert f"tag {tag!r} at position 1 is not a valid {scheme} tag" in str(spans_error.value)
    prefixes, types = metrics.tag_tables(["<pad>", "O", "B-PER", "I-PER", "</s>", "S-LOC"], "IOBES")
    assert prefixes.tolist() == [0, 0, 1, 2, 0, 4] and types.tolist() == [0, 0, 1, 1, 0, 2]


def test_the_protocol_caption_names_the_state_the_runtime_scored():
    """With train.keep_best=False (or no best checkpoint) the runtime scores valid/test on the
    final state; the caption said 'the best-validation checkpoint' whatever the config."""
    from experiments import run_report

    config = {"num_seeds": 2, "train": {"keep_best": True, "best_metric": "valid_loss"}}
    best = run_report.protocol_text(config, {"best_step": 40, "step": 100})
    assert "the best-validation checkpoint (by valid_loss, step 40 of 100)" in best
    config["train"]["keep_best"] = False
    last = run_report.protocol_text(config, {"best_step": 40, "step": 100})
    assert "the final state (step 100; train.keep_best=False)" in last
    assert "best-validation" not in last
    config["train"]["keep_best"] = True
    none = run_report.protocol_text(config, {"best_step": None, "step": 100})
    assert "the final state (step 100; no best checkpoint)" in none
