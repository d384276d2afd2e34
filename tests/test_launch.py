"""launch.sweep and launch.report: bad input fails before anything runs; a 2x2 grid runs end
to end, survives a SIGKILL without redoing finished runs, and the report aggregates it."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import report, sweep
from tests.module_cli import run_module

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "experiments/configs/initialization.py:smoke"


def run_cli(*args, timeout=60):
    return run_module("launch.sweep", *args, timeout=timeout)


def test_expand_grid_and_list():
    grid = sweep.expand_sweep({"a": [1, 2], "b.c": ["x", "y", "z"]})
    assert len(grid) == 6 and grid[0] == {"a": 1, "b.c": "x"} and grid[-1] == {"a": 2, "b.c": "z"}
    assert sweep.expand_sweep([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]
    assert sweep.expand_sweep({}) == [{}]
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.expand_sweep({"a": 3})


def test_duplicate_points_and_set_on_a_swept_key_are_refused(tmp_path):
    """The same overrides in another key order (or 1 vs 1.0) would run twice and be pooled as
    two seeds; `--set` on a swept key would give every run one value under different names."""
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        sweep.expand_sweep(
            [{"seed": 1, "model.hidden_size": 4}, {"model.hidden_size": 4, "seed": 1}]
        )
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        sweep.expand_sweep([{"lr": 1}, {"lr": 1.0}])
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        sweep.expand_sweep([{"sizes": [1, 2]}, {"sizes": [1.0, 2.0]}])  # compared as JSON text
    assert len(sweep.expand_sweep([{"sizes": [1, 2]}, {"sizes": [True, 2]}])) == 2
    assert len(sweep.expand_sweep([{"lr": 1}, {"lr": "1"}, {"flag": True}, {"flag": 1}])) == 4
    with pytest.raises(ValueError, match="--set model.hidden_size: the sweep varies this key"):
        sweep.plan_runs(SMOKE, tmp_path, {"model.hidden_size": "32"})


def test_a_seed_with_a_null_value_stays_as_nan():
    """A non-finite value is written as null; the metric must not vanish with it."""
    flat = report.flatten_final({"loss": [1.0, None, 3.0], "acc": 0.5})
    assert flat["acc"] == [0.5]
    assert flat["loss"][0] == 1.0 and np.isnan(flat["loss"][1]) and flat["loss"][2] == 3.0
    assert report.seed_samples([None, None]) is None


def test_plan_names_commands_and_overrides(tmp_path):
    runs = sweep.plan_runs(SMOKE, tmp_path, {"train.num_steps": "5"})
    assert [r.name for r in runs] == [
        "seed=0,hidden_size=4",
        "seed=0,hidden_size=8",
        "seed=2,hidden_size=4",
        "seed=2,hidden_size=8",
    ]
    command = runs[1].command
    assert command[1:3] == ("-m", "experiments.initialization")
    assert f"--workdir={tmp_path / runs[1].name}" in command
    assert "--config.model.hidden_size=8" in command and "--config.train.num_steps=5" in command


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (REPO / "experiments/configs").glob("[!_]*.py"))
)
def test_every_experiment_config_has_a_sweep_whose_points_are_config_keys(tmp_path, name):
    """Every experiment can be swept: get_sweep exists for every variant and each of its
    points overrides only keys the config has (plan_runs checks them against the config)."""
    module = sweep.load_config_module(REPO / f"experiments/configs/{name}.py")
    for variant in module.VARIANTS:
        runs = sweep.plan_runs(f"experiments/configs/{name}.py:{variant}", tmp_path / variant)
        assert runs and len({r.name for r in runs}) == len(runs), (name, variant)


@pytest.mark.parametrize(
    "config_arg, message",
    [
        ("experiments/configs/initialization.py:nope", "unknown variant 'nope'"),
        ("experiments/configs/no_such_experiment.py:smoke", "no config file"),
        ("experiments/configs/initialization.py", "expected experiments/configs/<name>.py"),
    ],
)
def test_bad_config_fails_before_running(tmp_path, config_arg, message):
    root = tmp_path / "root"
    result = run_cli(f"--config={config_arg}", f"--workdir={root}")
    assert result.returncode != 0
    assert message in result.stderr
    assert not root.exists()  # nothing ran, nothing was written


def test_unknown_sweep_key_fails_before_running(tmp_path):
    # A config file named like a real experiment whose sweep names a key the config lacks.
    configs = tmp_path / "configs"
    configs.mkdir()
    source = (REPO / "experiments/configs/initialization.py").read_text()
    source += "\n\ndef get_sweep(variant='quick'):\n    return {'model.hiden_size': [4, 8]}\n"
    (configs / "initialization.py").write_text(source)
    with pytest.raises(ValueError, match="'model.hiden_size' is not in the config.*hidden_size"):
        sweep.plan_runs(f"{configs / 'initialization.py'}:smoke", tmp_path / "root")
    with pytest.raises(ValueError, match="does not match"):
        sweep.check_overrides({"model": {"hidden_size": 4}}, {"model.hidden_size": "big"})
    assert not (tmp_path / "root").exists()


def _finished(root):
    return sorted(p.parent.name for p in root.glob("*/results.json"))


@pytest.mark.slow
def test_grid_runs_resumes_after_kill_and_report_aggregates(tmp_path):
    root = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "launch.sweep",
        f"--config={SMOKE}",
        f"--workdir={root}",
        # Two runs at a time (each is mostly imports and compiles): the kill at the first
        # finished run still lands mid-grid, as the last two runs cannot have finished.
        "--parallel=2",
    ]
    process = subprocess.Popen(
        args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while not _finished(root) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and the run in progress
    process.wait()
    first = _finished(root)
    assert len(first) >= 1, "no run finished before the kill"
    stamps = {name: (root / name / "results.json").stat().st_mtime_ns for name in first}

    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(first)} of 4 runs already finished" in result.stdout
    assert len(_finished(root)) == 4
    for name, stamp in stamps.items():  # finished runs were not redone
        assert (root / name / "results.json").stat().st_mtime_ns == stamp

    table = report.write_report(root)
    assert (root / "report.md").is_file() and list(root.glob("*.png"))
    # Two settings (hidden 4 and 8) x one grid point; each pools 2 runs x 2 vmapped seeds.
    groups = report.group_runs(report.load_runs(root)[1])
    assert len(groups) == 2
    for group in groups:
        losses = group["samples"]["valid_loss"]
        assert len(losses) == 4 and np.all(np.isfinite(losses))
        expected = []
        for run in group["runs"]:
            final = json.loads((run["workdir"] / "results.json").read_text())["final"]
            expected += next(iter(final.values()))["valid_loss"]
        mean, std = report.mean_std(losses)
        assert mean == pytest.approx(np.mean(expected))
        assert std == pytest.approx(np.std(expected, ddof=1))
        assert report.format_number(mean) in table


def test_submitit_local_executor_runs_and_skips(tmp_path):
    pytest.importorskip("submitit")
    script = "import json, sys; open(sys.argv[1] + '/results.json', 'w').write('{\"final\": {}}')"
    runs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        runs.append(sweep.Run(name, workdir, {}, (sys.executable, "-c", script, str(workdir))))
    failed = sweep.run_submitit(runs, "local", {"timeout_min": 5})
    assert failed == [] and all(r.finished for r in runs)
    assert sweep.run_submitit(runs, "local", {"timeout_min": 5}) == []  # all skipped


def test_report_reads_runtime_multiseed_format(tmp_path):
    final = {
        "valid_loss": 2.0,
        "valid_loss_std": 1.0,
        "step": 10,
        "per_seed": {"valid_loss": [1.0, 3.0], "step": [10, 10]},
    }
    assert report.final_rows(final) == {"": {"valid_loss": [1.0, 3.0], "step": [10.0, 10.0]}}
    rows = report.final_rows({"p1": {"loss": [1.0, 2.0]}, "p2": {"loss": 3.0}})
    assert rows == {"p1": {"loss": [1.0, 2.0]}, "p2": {"loss": [3.0]}}


def test_a_grid_listing_one_value_twice_is_refused():
    """The list form refused 1 vs 1.0; the grid form ran `lr=1` and `lr=1.0` as two runs of
    the same setting (distinct run names, so the name check did not see it)."""
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        sweep.expand_sweep({"optimizer.learning_rate": [1, 1.0]})
    with pytest.raises(ValueError, match="points 1 and 2 are the same overrides"):
        sweep.expand_sweep({"a": [1, 2, 2.0], "b": ["x"]})
    assert len(sweep.expand_sweep({"a": [1, "1", True], "b": ["x", "y"]})) == 6
