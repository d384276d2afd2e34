"""experiments.reproduce (the main job) with fake experiments: the report names experiments
that failed or were skipped instead of leaving them out, one experiment's broken answers() do
not cost the whole report, and a stalled run is restarted by the watchdog."""

import json

import pytest

from experiments import reproduce
from tests.test_reproduce_review23 import run_main


def _fake_run(name, workdir, variant, index, stall_s=0.0, max_restarts=5):
    """initialization fails (exit 3) without results.json, language_model finishes."""
    workdir.mkdir(parents=True, exist_ok=True)
    reproduce.record_variant(workdir, variant)
    if name == "initialization":
        return 1.0, 3
    (workdir / "results.json").write_text(json.dumps({"final": {"test_loss": 1.5}}))
    return 1.0, 0


@pytest.fixture
def _reproduce(monkeypatch):
    """(workdir, --only) -> the main job's exit status (None: 0) with --variant=smoke, run
    in this process with `run_experiment` faked."""
    monkeypatch.setattr(reproduce, "run_experiment", _fake_run)
    return lambda root, only: run_main(
        monkeypatch, workdir=str(root), only=only.split(","), variant="smoke"
    )


def test_failed_and_skipped_experiments_are_named_in_the_report(tmp_path, _reproduce):
    """The report left a skipped experiment out altogether and called a failed one only "Not
    finished", so a report of part of the experiments read like a complete one."""
    root = tmp_path / "reproduce"
    code = _reproduce(root, "initialization,language_model")
    assert code and "failed: initialization" in str(code)
    text = (root / "report.md").read_text()
    # The header's command is the one that ran (it claimed the default, quick, variant).
    assert f"`python -m experiments.reproduce --workdir={root} --variant=smoke` on" in text
    skipped = [
        n for n in reproduce.experiment_names() if n not in ("initialization", "language_model")
    ]
    assert skipped  # sentiment, bidirectional, ...
    assert "**Skipped** (--only/--skip" in text and ", ".join(skipped) in text
    for name in skipped:
        assert f"## `{name}`\n\nSkipped (--only/--skip): not run" in text
    assert "**Failed in this run**" in text and "below): initialization." in text
    section = text.split("## `initialization`")[1].split("## `")[0]
    assert "**FAILED in this run**: it exited with status 3" in section
    assert "Not finished: no results.json" in section
    section = text.split("## `language_model`")[1].split("## `")[0]
    assert "FAILED" not in section and "Command:" in section


def test_an_experiment_redone_alone_keeps_the_others_finished_runs_in_the_report(
    tmp_path, _reproduce
):
    """Redoing one experiment with --only rewrote report.md without the experiments that had
    finished earlier in the same workdir; they are reported as they stand (same variant)."""
    root = tmp_path / "reproduce"
    assert _reproduce(root, "language_model") is None  # returned: exit 0
    again = _reproduce(root, "initialization")
    assert again and "failed: initialization" in str(again)
    text = (root / "report.md").read_text()
    section = text.split("## `language_model`")[1].split("## `")[0]
    assert "Command:" in section and "Skipped" not in section
    assert "not run this time: language_model, reported from their earlier finished runs" in text
    assert (
        "**Skipped**" in text
        and "language_model" not in text.split("**Skipped**")[1].split("\n")[0]
    )


def test_a_stalled_experiment_is_restarted_and_then_reported_as_stalled(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def stalls(command, workdir, label, start, stall_s):
        calls.append(command)
        return reproduce.STALLED if len(calls) < 3 else 0

    monkeypatch.setattr(reproduce, "_run_watched", stalls)
    workdir = tmp_path / "sentiment"
    _, code = reproduce.run_experiment("sentiment", workdir, "quick", "[1/1]", 60.0, 5)
    assert code == 0 and len(calls) == 3  # two stalls, each followed by a restart
    assert calls[0][-1] == "--config=experiments/configs/sentiment.py:quick"
    log = (workdir / "log.txt").read_text()
    assert "killed (attempt 1)" in log and "killed (attempt 2)" in log
    assert json.loads((workdir / reproduce.VARIANT_FILE).read_text()) == {"variant": "quick"}

    calls.clear()
    _, code = reproduce.run_experiment("sentiment", workdir, "quick", "[1/1]", 60.0, 1)
    assert code == reproduce.STALLED and len(calls) == 2  # the first run and one restart
    assert "sentiment: FAILED (stalled 2 times;" in capsys.readouterr().out  # not "exit -1000"
    text, answers = reproduce.experiment_section("sentiment", workdir, code)
    assert answers == {} and "stalled (no CPU time) on its last attempt" in text


def test_answers_that_raise_any_error_leave_the_report_written(tmp_path, monkeypatch):
    """Only OSError, KeyError and ValueError were caught: a TypeError in one experiment's
    answers() ended the main job with a traceback after all experiments had run, and no
    report.md at all."""
    from experiments import sentiment

    def broken(workdir):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(sentiment, "answers", broken)
    workdir = tmp_path / "sentiment"
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps({"final": {"test_accuracy": 0.8}}))
    (workdir / "sentiment.md").write_text("| split | accuracy |\n|---|---|\n| test | 0.8 |\n")
    text = reproduce.write_report(tmp_path, ["sentiment"], {})
    assert "Its answers could not be read (TypeError: unsupported operand)" in text
    assert "| test | 0.8 |" in text  # its tables are still reported
    assert (tmp_path / "report.md").read_text() == text
