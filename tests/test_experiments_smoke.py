"""One smoke run per experiment of issue 6: its `smoke` variant writes results.json, markdown
tables and PNG plots at the workdir's top level, with finite numbers; a second run of the same
command reuses the finished grid points; a bad grid value fails before anything runs."""

import importlib
import json
import math
import os
import pathlib

import numpy as np
import pytest

from rnn_jax.train import cli

EXPERIMENTS = ["initialization", "exposure_bias", "rnn_vs_attention"]


def _numbers(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _numbers(value)
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield float(tree)


def _load(name):
    # No skip on ModuleNotFoundError: it turned a misspelt import inside an experiment into
    # "cannot be imported yet" and a skipped smoke test.
    return importlib.import_module(f"experiments.{name}")


@pytest.fixture(scope="module", params=EXPERIMENTS)
def smoke_run(request, tmp_path_factory):
    name = request.param
    module = _load(name)
    workdir = tmp_path_factory.mktemp(name)
    config = cli.load_config(f"experiments/configs/{name}.py:smoke", rules=module.RULES)
    module.run(config, workdir)
    return name, module, config, workdir


def test_smoke_writes_results_tables_and_plots(smoke_run):
    name, _, _, workdir = smoke_run
    results = json.loads((workdir / "results.json").read_text())
    numbers = list(_numbers(results["final"]))
    assert numbers and all(math.isfinite(v) for v in numbers), results["final"]
    tables = list(workdir.glob("*.md"))
    assert tables and all("|---|" in t.read_text() for t in tables)
    plots = list(workdir.glob("*.png"))
    assert plots and all(p.stat().st_size > 1000 for p in plots)


def test_rerun_reuses_finished_points(smoke_run):
    _, module, config, workdir = smoke_run
    summaries = sorted(pathlib.Path(workdir).glob("points/*/summary.json"))
    # Every point left its summary (with none, the check below held whatever the rerun did).
    points = [p for p in (pathlib.Path(workdir) / "points").iterdir() if p.is_dir()]
    assert summaries and len(summaries) == len(points), points
    stamps = [p.stat().st_mtime_ns for p in summaries]
    module.run(config, workdir)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps


def test_bad_grid_value_fails_before_running(tmp_path):
    module = _load("initialization")
    config = cli.load_config(
        "experiments/configs/initialization.py:smoke", {"grid.cells": "lstm,transformer"}
    )
    with pytest.raises(
        ValueError, match=r"grid.cells='lstm,transformer': unknown \['transformer'\]"
    ):
        module.run(config, tmp_path)
    assert not list(tmp_path.iterdir())


def test_reproduce_report_answers_from_measured_numbers(smoke_run, tmp_path):
    from experiments import reproduce_report

    name, module, _, workdir = smoke_run
    root = tmp_path / "reproduce"
    root.mkdir()
    (root / name).symlink_to(workdir, target_is_directory=True)
    text = reproduce_report.write_report(root, [name], {name: 60.0})
    assert (root / "report.md").read_text() == text
    answers = module.answers(workdir)
    assert answers, f"{name} answers no question"
    for question, answer in answers.items():
        assert f"**Q{question}. " in text and answer in text
        assert any(ch.isdigit() for ch in answer)  # the answer quotes measured numbers
    assert "![" in text and f"({name}/" in text  # its plots are linked
    assert "CPUs" in text and "1.0 min in total" in text  # the machine and total time


def test_reproduce_rejects_unknown_experiment():
    from experiments import reproduce

    names = reproduce.experiment_names()
    assert names[:3] == ["initialization", "exposure_bias", "rnn_vs_attention"]
    with pytest.raises(ValueError, match=r"--only=nope: unknown \['nope'\]"):
        reproduce.select(names, ["nope"], [])


@pytest.mark.data
def test_exposure_bias_translation_smoke(data_root, tmp_path, monkeypatch):
    """The Multi30k part of exposure_bias (real data): per-seed greedy and beam BLEU and the
    copy baseline in results.json, the BLEU table and plot, and answers to Q8 and Q16; val
    decoded at every evaluation and the test numbers from the checkpoint best by val beam
    BLEU (the earliest of equals), which the report names and marks."""
    module = _load("exposure_bias")
    overrides = {
        "grid.corpora": "multi30k",
        "data.root": str(data_root),
        "translation.eval_every": 5,
        "translation.valid_bleu": True,
        "translation.select_by": "valid_beam_bleu",
    }
    config = cli.load_config(
        "experiments/configs/exposure_bias.py:smoke", overrides, rules=module.RULES
    )
    from experiments import exposure_bias_translation as translation

    reads = []
    read_pairs = translation.read_pairs
    monkeypatch.setattr(
        translation,
        "read_pairs",
        lambda root, split, *a: reads.append(split) or read_pairs(root, split, *a),
    )
    module.run(config, tmp_path)
    assert sorted(reads) == ["test", "train", "valid"]  # the corpus is read once per run
    results = json.loads((tmp_path / "results.json").read_text())
    point = results["points"]["multi30k-inverse_sigmoid"]
    curve = point["valid_curve"]
    assert [row["step"] for row in curve] == [5, 10]
    assert all(0.0 <= row["beam_bleu"] <= 100.0 and row["tf_nll"] > 0 for row in curve)
    best = max(curve, key=lambda row: (row["beam_bleu"], -row["step"]))
    assert point["selected"] == {"by": "valid_beam_bleu", "step": best["step"], "of": 10}
    # the runtime picks by the mean over seeds, as the curve holds it
    assert np.mean(point["metrics"]["valid_beam_bleu"]) == pytest.approx(
        best["beam_bleu"], abs=1e-6
    )
    # The scored checkpoint's test outputs, written out: sacrebleu on them gives the run's
    # in-graph test BLEU for every seed and decoder.
    from rnn_jax.bleu import corpus_bleu

    point_dir = tmp_path / "points" / "multi30k-inverse_sigmoid"
    files = point["translations"]
    references = (point_dir / files["references"]).read_text().splitlines()
    assert len(references) == point["pairs"]["test"]
    for name in ("greedy", "beam"):
        assert len(files[name]) == config.num_seeds
        for replica, file in enumerate(files[name]):
            hypotheses = (point_dir / file).read_text().split("\n")[:-1]
            assert len(hypotheses) == len(references)
            assert corpus_bleu(hypotheses, references, "none") == pytest.approx(
                point["metrics"][f"test_{name}_bleu"][replica], abs=1e-4
            )
    report = (tmp_path / "translation_bleu.md").read_text()
    assert f"the best by valid_beam_bleu (step {best['step']} of 10)" in report
    assert f"| inverse_sigmoid | {best['step']} (scored) |" in report
    final = results["final"]
    entry = final["multi30k-inverse_sigmoid"]
    for name in ("greedy_bleu", "beam_bleu", "tf_nll"):
        assert len(entry[name]) == config.num_seeds and all(math.isfinite(v) for v in entry[name])
    assert all(0.0 <= v <= 100.0 for v in entry["greedy_bleu"] + entry["beam_bleu"])
    assert 0.0 < entry["copy_source_bleu"] < 100.0
    table = (tmp_path / "translation_bleu.md").read_text()
    assert "| inverse_sigmoid |" in table and "| copy the source |" in table
    assert (tmp_path / "translation_bleu.png").stat().st_size > 1000
    assert not (tmp_path / "exposure_bias.md").exists()  # no language-model point ran
    answers = module.answers(tmp_path)
    assert set(answers) == {8, 16} and "| copy the source |" in answers[16]


def test_reproduce_watchdog_kills_a_run_that_stopped_using_cpu(tmp_path):
    import sys
    import time

    from experiments import reproduce_run

    assert reproduce_run._cpu_seconds(os.getpid()) > 0
    start = time.monotonic()
    idle = [sys.executable, "-c", "import time; time.sleep(60)"]
    code = reproduce_run._run_watched(idle, tmp_path, "idle", start, stall_s=1.0, poll_s=0.2)
    assert code == reproduce_run.STALLED and time.monotonic() - start < 30
    busy = [sys.executable, "-c", "import time; t = time.time()\nwhile time.time() - t < 2: pass"]
    assert reproduce_run._run_watched(busy, tmp_path, "busy", start, stall_s=10.0, poll_s=0.2) == 0
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    assert reproduce_run._run_watched(failing, tmp_path, "failing", start, stall_s=1.0) == 3


def test_reproduce_report_survives_a_run_whose_answers_cannot_be_read(tmp_path):
    from experiments import reproduce_report

    workdir = tmp_path / "language_model"  # a finished run from before baselines.json existed
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps({"final": {"test_loss": 1.5}}))
    text, answers = reproduce_report.experiment_section("language_model", workdir)
    assert answers == {} and "could not be read" in text


def test_reproduce_stopped_by_sigterm_stops_its_experiment(tmp_path, repo_root):
    """SIGTERM to `experiments.reproduce` reaches the experiment it is running (which saves a
    checkpoint on SIGTERM), instead of leaving it training into its workdir unwatched."""
    import signal
    import subprocess
    import sys
    import time

    child = (
        "import os, pathlib, signal, sys, time\n"
        f"root = pathlib.Path({str(tmp_path)!r})\n"
        "def on_term(*_):\n"
        "    (root / 'child_got').write_text('SIGTERM')\n"
        "    sys.exit(1)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "(root / 'child_pid').write_text(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    driver = (
        "import pathlib, signal, sys, time\n"
        "from experiments import reproduce, reproduce_run\n"
        "signal.signal(signal.SIGTERM, reproduce._exit_on_sigterm)\n"
        f"reproduce_run._run_watched([sys.executable, '-c', {child!r}], "
        f"pathlib.Path({str(tmp_path)!r}), 'child', time.monotonic(), 0.0, 0.2)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", driver], cwd=repo_root)
    deadline = time.monotonic() + 60
    while not (tmp_path / "child_pid").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    child_pid = int((tmp_path / "child_pid").read_text())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert (tmp_path / "child_got").read_text() == "SIGTERM"
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_a_grid_axis_listing_a_value_twice_is_refused():
    """A grid axis listing "lstm,lstm" (or "10,010", or truncated_bptt's "8,full" at length 8)
    was accepted: the progress said two points, one ran, and the second was "done earlier"
    under the same name.
    Config-value errors of the grid parsers are ConfigErrors (one line, exit status 2), not
    ValueErrors whose traceback the command line printed with exit status 1."""
    from experiments import grid, regularization, truncated_bptt
    from rnn_jax.train.config import ConfigError

    spec = "experiments/configs/{}.py:smoke"
    config = cli.load_config(spec.format("initialization"), {"grid.cells": "lstm,gru,lstm"})
    with pytest.raises(ConfigError, match=r"grid.cells='lstm,gru,lstm': \['lstm'\] listed more"):
        grid.split_axis(config, "cells")
    config = cli.load_config(spec.format("initialization"), {"grid.lengths": "10,010"})
    with pytest.raises(ConfigError, match=r"grid.lengths='10,010': \['10'\] listed more"):
        grid.split_ints(config, "lengths")
    config = cli.load_config(spec.format("truncated_bptt"), {"grid.bptt_lengths": "8,full"})
    with pytest.raises(ConfigError, match=r"grid.bptt_lengths='8,full': \['8'\] listed more"):
        truncated_bptt.bptt_lengths(config)
    config = cli.load_config(spec.format("truncated_bptt"), {"grid.bptt_lengths": "3"})
    with pytest.raises(ConfigError, match="3 must divide data.length=8"):
        truncated_bptt.bptt_lengths(config)
    config = cli.load_config(spec.format("truncated_bptt"), {"grid.clip_global_norms": "1,1.0"})
    with pytest.raises(ConfigError, match=r"\['1.0'\] listed more than once"):
        truncated_bptt.clip_norms(config)
    config = cli.load_config(spec.format("regularization"), {"grid.depths": "2,02"})
    with pytest.raises(ConfigError, match=r"grid.depths='2,02': \['2'\] listed more"):
        regularization.depths(config)
    config = cli.load_config(spec.format("regularization"), {"grid.regularizers": "dropot"})
    with pytest.raises(ConfigError, match="unknown"):
        regularization.regularizers(config, "regularizers")


def test_a_grid_report_that_fails_leaves_the_run_unfinished(tmp_path, monkeypatch):
    """results.json is the "done" marker (reproduce and launch.sweep skip such runs), so it
    comes after the tables and plots; it was written first, and a report or plot that raised
    left a finished-looking run without them (docs/design.md, "Reports before the done
    marker"). Grid experiments writing their own outputs follow the same order."""
    from experiments import grid, initialization, initialization_report

    class Report:
        fail = "markdown"

        def markdown(self, summaries):
            if self.fail == "markdown":
                raise RuntimeError("markdown failed")
            return "| a |\n|---|\n"

        def plot(self, summaries, workdir):
            if self.fail == "plot":
                raise RuntimeError("plot failed")

    report = Report()
    for fail in ("markdown", "plot"):
        report.fail = fail
        with pytest.raises(RuntimeError, match=f"{fail} failed"):
            grid.write_grid_outputs(tmp_path, "x", {"p": {"m": 1.0}}, {"p": {}}, report, 1.0)
        assert not (tmp_path / "results.json").exists()
    report.fail = None
    grid.write_grid_outputs(tmp_path, "x", {"p": {"m": 1.0}}, {"p": {}}, report, 1.0)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "x.md").is_file()

    workdir = tmp_path / "initialization"
    config = cli.load_config(
        "experiments/configs/initialization.py:smoke",
        {"train.num_steps": 2},
        rules=initialization.RULES,
    )

    def broken_plot(summaries, path):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(initialization_report, "plot_grad_vs_distance", broken_plot)
    with pytest.raises(RuntimeError, match="plot failed"):
        initialization.run(config, workdir)
    assert (workdir / "initialization.md").is_file()
    assert not (workdir / "results.json").exists()
