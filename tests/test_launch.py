"""launch.sweep and launch.report: bad input fails before anything runs; a 2x2 grid runs end
to end, survives a SIGKILL without redoing finished runs, and the report aggregates it. A
finished run is reused only under the settings it ran with; sweep values (None, NumPy numbers,
repeated keys) reach the run as written; diverged seeds are left out of the mean and counted."""

import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import executors, plan, points, record, report, sweep
from rnn_jax import exits, files
from rnn_jax.train import config_file
from tests.module_cli import run_module

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "experiments/configs/initialization.py:smoke"


def run_cli(*args, timeout=60):
    return run_module("launch.sweep", *args, timeout=timeout)


def test_expand_grid_and_list():
    grid = points.expand_sweep({"a": [1, 2], "b.c": ["x", "y", "z"]})
    assert len(grid) == 6 and grid[0] == {"a": 1, "b.c": "x"} and grid[-1] == {"a": 2, "b.c": "z"}
    assert points.expand_sweep([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]
    assert points.expand_sweep({}) == [{}]
    with pytest.raises(ValueError, match="non-empty list"):
        points.expand_sweep({"a": 3})


def test_duplicate_points_and_set_on_a_swept_key_are_refused(tmp_path):
    """The same overrides in another key order (or 1 vs 1.0) would run twice and be pooled as
    two seeds; `--set` on a swept key would give every run one value under different names."""
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        points.expand_sweep(
            [{"seed": 1, "model.hidden_size": 4}, {"model.hidden_size": 4, "seed": 1}]
        )
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        points.expand_sweep([{"lr": 1}, {"lr": 1.0}])
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        points.expand_sweep([{"sizes": [1, 2]}, {"sizes": [1.0, 2.0]}])  # compared as JSON text
    assert len(points.expand_sweep([{"sizes": [1, 2]}, {"sizes": [True, 2]}])) == 2
    assert len(points.expand_sweep([{"lr": 1}, {"lr": "1"}, {"flag": True}, {"flag": 1}])) == 4
    with pytest.raises(ValueError, match="--set model.hidden_size: the sweep varies this key"):
        plan.plan_runs(SMOKE, tmp_path, {"model.hidden_size": "32"})


def test_a_seed_with_a_null_value_stays_as_nan():
    """A non-finite value is written as null; the metric must not vanish with it."""
    flat = report.flatten_final({"loss": [1.0, None, 3.0], "acc": 0.5})
    assert flat["acc"] == [0.5]
    assert flat["loss"][0] == 1.0 and np.isnan(flat["loss"][1]) and flat["loss"][2] == 3.0
    assert report.seed_samples([None, None]) is None


def test_plan_names_commands_and_overrides(tmp_path):
    runs = plan.plan_runs(SMOKE, tmp_path, {"train.num_steps": "5"})
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
    module = config_file.load_config_file(REPO / f"experiments/configs/{name}.py")
    for variant in module.VARIANTS:
        runs = plan.plan_runs(f"experiments/configs/{name}.py:{variant}", tmp_path / variant)
        assert runs and len({r.name for r in runs}) == len(runs), (name, variant)


@pytest.mark.parametrize(
    "name, point, message",
    [
        ("initialization", {"grid.cells": "lstm,bogus"}, r"grid\.cells='lstm,bogus': unknown"),
        ("truncated_bptt", {"grid.bptt_lengths": "3,full"}, r"3 must divide data\.length"),
        ("regularization", {"grid.depths": "1,x"}, r"grid\.depths='1,x': 'x' must be an int"),
        ("rnn_vs_attention", {"cost.lengths": "64,64"}, r"\['64'\] listed more than once"),
        ("exposure_bias", {"grid.regimes": "nope"}, r"grid\.regimes='nope': unknown \['nope'\]"),
        # the translation points' checks, which `points` runs before reading the pairs
        (
            "exposure_bias",
            {"grid.corpora": "multi30k", "grid.translation_regimes": "bogus"},
            r"translation_regimes='bogus': unknown",
        ),
    ],
)
def test_grid_axis_text_the_experiment_refuses_stops_the_sweep_before_any_run(
    tmp_path, name, point, message
):
    """An experiment's `check_grid` runs with each point's config when the sweep is planned:
    a point whose grid text the experiment refuses (`grid.cells="lstm,bogus"`) passed the
    value rules, and every such run started only to fail on its own inside `run`."""
    configs = tmp_path / "configs"
    configs.mkdir()
    source = (REPO / f"experiments/configs/{name}.py").read_text()
    source += f"\n\ndef get_sweep(variant='quick'):\n    return [{{}}, {point!r}]\n"
    (configs / f"{name}.py").write_text(source)
    with pytest.raises(ValueError, match=r"sweep point .*" + message) as error:
        plan.plan_runs(f"{configs / name}.py:smoke", tmp_path / "root")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "root").exists()


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


def test_a_config_in_a_folder_with_a_colon_needs_its_variant(tmp_path):
    """Without a variant it was split at the folder's ':' and reported as no such file."""
    folder = tmp_path / "run:2"
    folder.mkdir()
    shutil.copy(REPO / "experiments/configs/initialization.py", folder)
    path = folder / "initialization.py"
    with pytest.raises(ValueError, match=r"expected experiments/configs/<name>.py:<variant>"):
        plan.parse_config_arg(str(path))
    assert plan.parse_config_arg(f"{path}:smoke") == (path, "initialization", "smoke")


def test_unknown_sweep_key_fails_before_running(tmp_path):
    # A config file named like a real experiment whose sweep names a key the config lacks.
    configs = tmp_path / "configs"
    configs.mkdir()
    source = (REPO / "experiments/configs/initialization.py").read_text()
    source += "\n\ndef get_sweep(variant='quick'):\n    return {'model.hiden_size': [4, 8]}\n"
    (configs / "initialization.py").write_text(source)
    with pytest.raises(ValueError, match="'model.hiden_size' is not in the config.*hidden_size"):
        plan.plan_runs(f"{configs / 'initialization.py'}:smoke", tmp_path / "root")
    with pytest.raises(ValueError, match="does not match"):
        plan.check_overrides({"model": {"hidden_size": 4}}, {"model.hidden_size": "big"})
    assert not (tmp_path / "root").exists()


_GOOD = (REPO / "experiments/configs/initialization.py").read_text()


@pytest.mark.parametrize(
    "source, message",
    [
        ("def get_config(variant:\n", "failed to load: SyntaxError"),
        ("import no_such_module_xyz\n", "failed to load: ModuleNotFoundError"),
        ("def get_sweep(variant):\n    return {}\n", "defines no get_config function"),
        ("def get_config():\n    pass\n", "cannot be called as get_config('smoke')"),
        ("def get_config(variant):\n    return VARIANTS[variant]()\n", "raised NameError"),
        ("def get_config(variant):\n    pass\n", "returned None (a missing return"),
        (_GOOD.split("def get_sweep")[0], "defines no get_sweep function"),
        (_GOOD + "\ndef get_sweep():\n    return {}\n", "cannot be called as get_sweep('sm"),
        (_GOOD + "\ndef get_sweep(v):\n    return {}[v]\n", "get_sweep('smoke') raised KeyError"),
        (_GOOD + "\ndef get_sweep(v):\n    return 3\n", "get_sweep returned int"),
        (_GOOD + "\ndef get_sweep(v):\n    return []\n", "get_sweep returned an empty list"),
        (_GOOD + "\ndef get_sweep(v):\n    return [{}, 5]\n", "point 1 is int 5, not a dict"),
        (_GOOD + "\ndef get_sweep(v):\n    return [{1: 2}]\n", "point 0 has key 1 (int)"),
        (_GOOD + "\ndef get_sweep(v):\n    return [{'nope': 2}]\n", "sweep key 'nope' is not"),
    ],
    ids=[
        "syntax",
        "import",
        "no_get_config",
        "get_config_args",
        "get_config_raises",
        "get_config_none",
        "no_get_sweep",
        "get_sweep_args",
        "get_sweep_raises",
        "sweep_int",
        "sweep_empty_list",
        "point_not_dict",
        "key_not_str",
        "unknown_key",
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, source, message):
    """Each bad config file or sweep is a ValueError (`main` exits with it as one line) naming
    the file: a syntax error, a get_config or get_sweep that raises or cannot take the variant
    were tracebacks, a get_config returning None was reported as an unknown sweep key, a
    KeyError in get_sweep as the variant being rejected, and an empty list of points planned one
    run of the config as it is."""
    path = tmp_path / "initialization.py"  # named like a real experiment
    path.write_text(source)
    with pytest.raises(ValueError) as error:
        plan.plan_runs(f"{path}:smoke", tmp_path / "root")
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text, text
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


def test_submitit_local_executor_runs_and_skips(tmp_path, monkeypatch):
    """Through a copy of launch/sweep.py that is not importable by its module name, as
    `python -m launch.sweep` runs it (`__main__`): while `execute` was defined in that file,
    cloudpickle pickled the copy's `execute` by value, with its globals, and every submission
    raised "cannot pickle '_thread.lock'" (`--launcher=slurm` never submitted a job). The
    copy's `run_submitit` is `launch.executors`' (imported by name), whose jobs run the
    importable `launch.executors.execute`."""
    pytest.importorskip("submitit")
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_sweep_as_script", sweep.__file__)
    script_module = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as patch:  # registered while it runs, as `-m` registers it
        patch.setitem(sys.modules, spec.name, script_module)
        spec.loader.exec_module(script_module)
    # capsys is not used: submitit's logging handler keeps the stream it was imported under.
    script = (
        "import sys; open(sys.argv[1] + '/ran', 'a').write('x'); "
        "open(sys.argv[1] + '/results.json', 'w').write('{\"final\": {}}')"
    )
    runs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        runs.append(plan.Run(name, workdir, {}, (sys.executable, "-c", script, str(workdir))))
    failed = script_module.run_submitit(runs, "local", {"timeout_min": 5})
    assert failed == [] and all(r.finished for r in runs)
    assert executors.run_submitit(runs, "local", {"timeout_min": 5}) == []
    assert [(r.workdir / "ran").read_text() for r in runs] == ["x", "x"]  # skipped, not rerun


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
    # One nested metric among numbers is a dotted metric, not a grid; a bool is no sample.
    mixed = {"loss": 1.0, "done": True, "probe": {"acc": [0.5, None]}}
    assert report.final_rows(mixed) == {"": {"loss": [1.0], "probe.acc": [0.5, math.nan]}}
    assert report.seed_samples(True) is None and report.seed_samples([True, 1.0]) is None
    # A grid's rows stay apart when pooling runs of one setting as seeds.
    runs = [{"name": f"s{s}", "overrides": {"lr": 0.1, "seed": s}, "metrics": rows} for s in (0, 2)]
    groups = report.group_runs(runs)
    assert [g["setting"] for g in groups] == [{"lr": 0.1, "row": "p1"}, {"lr": 0.1, "row": "p2"}]
    assert [g["samples"]["loss"] for g in groups] == [[1.0, 2.0, 1.0, 2.0], [3.0, 3.0]]


def test_a_grid_listing_one_value_twice_is_refused():
    """The list form refused 1 vs 1.0; the grid form ran `lr=1` and `lr=1.0` as two runs of
    the same setting (distinct run names, so the name check did not see it)."""
    with pytest.raises(ValueError, match="points 0 and 1 are the same overrides"):
        points.expand_sweep({"optimizer.learning_rate": [1, 1.0]})
    with pytest.raises(ValueError, match="points 1 and 2 are the same overrides"):
        points.expand_sweep({"a": [1, 2, 2.0], "b": ["x"]})
    assert len(points.expand_sweep({"a": [1, "1", True], "b": ["x", "y"]})) == 6


def run_sweep_cli(*args):
    return run_module("launch.sweep", *args)


def _finish_all(root):
    for entry in json.loads((root / "sweep.json").read_text())["runs"]:
        (root / entry["name"]).mkdir(parents=True, exist_ok=True)
        (root / entry["name"] / "results.json").write_text('{"final": {"loss": 1.0}}')


def test_a_finished_run_is_not_reused_under_another_set(tmp_path):
    """Runs are named by their sweep values only, so a rerun into the same root with another
    --set found `results.json` under the same names and skipped every run: the report then
    showed 5-step results as 50-step ones."""
    root = tmp_path / "root"
    # The record a sweep writes before it runs (a dry run writes nothing, checked below).
    first = plan.plan_runs(SMOKE, root, {"train.num_steps": "5"})
    record.write_sweep_file(root, SMOKE, first)
    _finish_all(root)
    before = (root / "sweep.json").read_text()
    result = run_sweep_cli(
        f"--config={SMOKE}", f"--workdir={root}", "--set=train.num_steps=50", "--dry_run"
    )
    assert result.returncode != 0
    assert "finished under other settings" in result.stderr
    assert "--config.train.num_steps=5" in result.stderr
    assert (root / "sweep.json").read_text() == before  # the record of what ran is kept
    # The same settings again: finished runs are skipped as before.
    again = run_sweep_cli(
        f"--config={SMOKE}", f"--workdir={root}", "--set=train.num_steps=5", "--dry_run"
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done ") == 4
    # A dry run of another variant into this root (other run names, so no refusal) printed
    # its plan and rewrote sweep.json with it: launch.report then found no finished run.
    other = run_sweep_cli(
        f"--config={SMOKE.replace(':smoke', ':quick')}", f"--workdir={root}", "--dry_run"
    )
    assert other.returncode == 0 and "to do" in other.stdout, other.stderr
    assert (root / "sweep.json").read_text() == before


def test_a_finished_run_of_another_variant_with_the_same_name_is_refused(tmp_path):
    """Two variants' sweeps can name their runs alike (state_probe's smoke and quick: the same
    depths; language_model's did until its get_sweep changed): a quick sweep in a smoke root
    reported the smoke runs as quick's."""
    root = tmp_path / "root"
    smoke = plan.plan_runs("experiments/configs/state_probe.py:smoke", root)
    quick = plan.plan_runs("experiments/configs/state_probe.py:quick", root)
    assert [r.name for r in smoke] == [r.name for r in quick]
    record.write_sweep_file(root, "experiments/configs/state_probe.py:smoke", smoke)
    (smoke[0].workdir).mkdir()
    (smoke[0].workdir / "results.json").write_text('{"final": {}}')
    with pytest.raises(ValueError, match="finished under other settings.*:smoke"):
        record.check_finished_runs(root, quick)
    record.check_finished_runs(root, smoke)  # the same plan: fine


def test_a_plan_with_other_run_names_in_between_does_not_erase_the_record(tmp_path):
    """sweep.json held only the latest plan: a sweep with other run names written into the
    root in between left a finished run unrecorded, and a later plan under other settings
    skipped it as done."""
    root = tmp_path / "root"
    smoke = plan.plan_runs("experiments/configs/state_probe.py:smoke", root)
    quick = plan.plan_runs("experiments/configs/state_probe.py:quick", root)
    record.write_sweep_file(root, "experiments/configs/state_probe.py:smoke", smoke)
    (smoke[0].workdir).mkdir()
    (smoke[0].workdir / "results.json").write_text('{"final": {}}')
    renamed = [dataclasses.replace(r, name=f"other_{r.name}") for r in quick]
    record.write_sweep_file(root, "experiments/configs/state_probe.py:quick", renamed)
    with pytest.raises(ValueError, match="finished under other settings.*:smoke"):
        record.check_finished_runs(root, quick)
    record.check_finished_runs(root, smoke)
    written = json.loads((root / "sweep.json").read_text())
    assert [r["name"] for r in written["runs"]] == [r.name for r in renamed]  # what report reads


def config_with_sweep(tmp_path, points):
    """A copy of language_model's config file whose get_sweep returns `points`: a value, or a
    string of Python source (numpy as `np`) that builds it."""
    configs = tmp_path / "configs"
    configs.mkdir(parents=True)
    source = (REPO / "experiments/configs/language_model.py").read_text()
    expression = points if isinstance(points, str) else repr(points)
    source += f"\n\nimport numpy as np\n\ndef get_sweep(variant=None):\n    return {expression}\n"
    (configs / "language_model.py").write_text(source)
    return f"{configs / 'language_model.py'}:smoke"


def test_a_finished_run_is_not_reused_after_its_config_file_changed(tmp_path):
    """The recorded command names the config file and variant only: runs finished under a
    config file whose values were edited since (smoke's 20 steps made 40) were skipped as done
    and reported as the 40-step runs. sweep.json now records each run's planned config."""
    folder = tmp_path / "configs"
    folder.mkdir()
    config_path = folder / "initialization.py"
    source = (REPO / "experiments/configs/initialization.py").read_text()
    config_path.write_text(source)
    root = tmp_path / "root"
    first = plan.plan_runs(f"{config_path}:smoke", root)
    record.write_sweep_file(root, f"{config_path}:smoke", first)
    _finish_all(root)
    record.check_finished_runs(root, plan.plan_runs(f"{config_path}:smoke", root))  # unchanged
    edited = source.replace("config.train.num_steps = 20\n", "config.train.num_steps = 40\n")
    assert edited != source
    config_path.write_text(edited)
    with pytest.raises(ValueError, match=r"another config .*train\.num_steps: 20 then, 40 now"):
        record.check_finished_runs(root, plan.plan_runs(f"{config_path}:smoke", root))


def test_a_none_sweep_value_reaches_the_run_as_none_and_the_rules_judge_it(tmp_path):
    """`--config.k=None` was the text "None" to config_flags (a float placeholder failed to
    parse once the run started), so None could only be swept where it was the default. The
    run's command line now reads "None" as None (rnn_jax.train.cli), the sweep passes it, and
    every point is checked against the experiment's rules before anything runs."""
    config_arg = config_with_sweep(
        tmp_path, {"optimizer.clip_global_norm": [None, 5.0], "model.init_scale": [None]}
    )
    runs = plan.plan_runs(config_arg, tmp_path / "root")
    assert [r.name for r in runs] == [
        "clip_global_norm=None,init_scale=None",
        "clip_global_norm=5.0,init_scale=None",
    ]
    assert "--config.optimizer.clip_global_norm=None" in runs[0].command
    assert "--config.optimizer.clip_global_norm=5.0" in runs[1].command
    bad = config_with_sweep(tmp_path / "bad", [{"model.cell": None}])
    with pytest.raises(ValueError, match=r"(?s)sweep point .*model.cell=None: must be one of"):
        plan.plan_runs(bad, tmp_path / "root2")
    bad = config_with_sweep(tmp_path / "bad2", {"model.hidden_size": [8, 0]})
    with pytest.raises(ValueError, match=r"model.hidden_size=0: must be"):
        plan.plan_runs(bad, tmp_path / "root3")
    assert not (tmp_path / "root2").exists() and not (tmp_path / "root3").exists()


def test_a_failed_run_is_reported_with_the_last_line_of_its_log(tmp_path, capsys):
    """A failed point printed only its exit code and log path; the error was one `cat` away."""
    script = "import sys; print('step 1'); sys.exit('experiment: model.hidden_size=-1 refused')"
    run = plan.Run("bad", tmp_path / "bad", {}, (sys.executable, "-c", script))
    assert executors.run_local([run], parallel=1) == [run]
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "bad: FAILED" in line)
    assert f"FAILED (exit 1, log {run.workdir / 'log.txt'}): experiment: model.hidden_size" in line


def test_runs_sharing_a_gpu_do_not_preallocate(monkeypatch):
    """Two runs per GPU each preallocated 75% of its memory: the second ran out of memory."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert executors._slots(0) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = executors._slots(4)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in shared] == ["0", "1", "0", "1"]
    assert all(s["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for s in shared)
    # No GPU listed (unset on a GPU machine): every run sees, and preallocated, GPU 0.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert executors._slots(3) == [{"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}] * 3
    assert executors._slots(1) == [{}]
    # One run per core this process may use (a SLURM allocation, taskset), not the machine's.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
    assert len(executors._slots(0)) == 2


def test_numpy_sweep_values_reach_the_run_as_plain_numbers_and_placeholders_are_typed(tmp_path):
    """`list(np.logspace(...))` gives np.float64 values: they passed every check, and each run
    got `--config.optimizer.learning_rate=np.float64(0.001)` (a flag it cannot parse) under the
    name `learning_rate=np.float64_0.001_`; an np.int64 was refused for an int field. A value
    of the wrong type for a placeholder field (None by default) crashed the planner with a
    TypeError traceback instead of naming the point."""
    config_arg = config_with_sweep(
        tmp_path,
        "{'optimizer.learning_rate': list(np.array([1e-3, 0.5])), "
        "'model.hidden_size': [np.int64(8)], 'optimizer.clip_global_norm': [np.float64(5)]}",
    )
    runs = plan.plan_runs(config_arg, tmp_path / "root")
    assert [r.name for r in runs] == [
        "learning_rate=0.001,hidden_size=8,clip_global_norm=5.0",
        "learning_rate=0.5,hidden_size=8,clip_global_norm=5.0",
    ]
    assert "--config.optimizer.learning_rate=0.001" in runs[0].command
    assert "--config.model.hidden_size=8" in runs[0].command
    assert type(runs[0].overrides["optimizer.learning_rate"]) is float
    assert type(runs[0].overrides["model.hidden_size"]) is int
    assert plan.format_override(points._plain((np.float64(0.5), [np.int32(2)]))) == "(0.5, [2])"

    bad = config_with_sweep(tmp_path / "bad", "{'data.root': ['/data', 5]}")
    with pytest.raises(ValueError, match=r"sweep point \{'data.root': 5\}: data.root=5: "):
        plan.plan_runs(bad, tmp_path / "root2")
    assert not (tmp_path / "root2").exists()


def test_a_set_key_given_twice_is_refused():
    """`--set=train.num_steps=5 --set=train.num_steps=50` silently ran 50 steps."""
    assert plan.parse_set_flags(["a.b=1", "c=x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ValueError, match=r"--set a.b given twice \('1' and '2'\)"):
        plan.parse_set_flags(["a.b=1", "c=3", "a.b=2"])
    with pytest.raises(ValueError, match=r"--set='a.b': expected key=value"):
        plan.parse_set_flags(["a.b"])


def test_set_values_are_read_as_the_runs_read_them():
    """`--set` values are checked with absl's parsers, which config_flags reads
    `--config.k=v` with: `t`/`f` for a bool and `0x10` for an int were refused before
    anything ran ("must be true or false") though the run accepts them."""
    config = {"flag": False, "size": 1, "rate": 0.5}
    assert plan._set_value(config, "flag", "t") is True
    assert plan._set_value(config, "flag", "F") is False
    assert plan._set_value(config, "size", "0x10") == 16
    assert plan._set_value(config, "rate", "2") == 2.0
    with pytest.raises(ValueError, match=r"--set flag=maybe: must be true or false \(Non-b"):
        plan._set_value(config, "flag", "maybe")
    # A section takes a dict (config_flags parses it as the section); other text passed the
    # plan as a placeholder's: every run failed at start ("Failed to parse '5' as a ConfigDict").
    config["train"] = {"num_steps": 5}
    with pytest.raises(ValueError, match=r"--set train=5: train is a section .*\['num_steps'\]"):
        plan._set_value(config, "train", "5")
    assert plan._set_value(config, "train", "{'num_steps': 6}") is plan._UNPARSED


def test_a_diverged_seed_is_left_out_of_the_mean_and_counted(tmp_path):
    """One seed stored as null (non-finite) made its group's cell `nan ± nan (3)`: the other
    seeds' numbers were lost. The mean and std are over the finite seeds, and the cell says
    how many of the seeds those are (json reads a stored Infinity as inf: left out too)."""
    root = tmp_path / "root"
    entries = []
    finals = {
        "lr=0.1,seed=0": {"loss": [1.0, None], "acc": 0.5},
        "lr=0.1,seed=1": {"loss": 3.0, "acc": 0.7},
        "lr=0.2,seed=0": {"loss": [float("inf"), 4.0], "acc": 0.9},
        "lr=0.2,seed=1": None,  # not finished
    }
    for name, final in finals.items():
        lr, seed = (float(part.split("=")[1]) for part in name.split(","))
        entries.append({"name": name, "overrides": {"lr": lr, "seed": int(seed)}, "command": []})
        if final is not None:
            (root / name).mkdir(parents=True)
            (root / name / "results.json").write_text(json.dumps({"final": final}))
    (root / "sweep.json").write_text(json.dumps({"config": "x.py:smoke", "runs": entries}))
    groups = report.group_runs(report.load_runs(root)[1])
    assert [g["setting"] for g in groups] == [{"lr": 0.1}, {"lr": 0.2}]
    loss = groups[0]["samples"]["loss"]
    assert len(loss) == 3 and math.isnan(loss[1])
    finite = np.array([1.0, 3.0])
    assert report.mean_std(loss) == pytest.approx((finite.mean(), finite.std(ddof=1)))
    assert report.mean_std([2.0, float("inf")]) == (2.0, 0.0)
    assert all(math.isnan(v) for v in report.mean_std([math.nan]))
    table = report.markdown_table(groups, ["loss", "acc"])
    assert "| 0.1 | 2 ± 1.414 (2 of 3 finite) | 0.6 ± 0.1414 (2) |" in table
    assert "| 0.2 | 4 (1 of 2 finite) | 0.9 (1) |" in table


def test_a_negative_parallel_or_slurm_size_is_refused_before_the_plan(tmp_path):
    """`--parallel=-1` was accepted by the flag, planned the sweep, wrote ROOT/sweep.json and
    then raised from `_slots` with a traceback; the SLURM sizes took 0 and negatives."""
    from tests.module_cli import run_module

    root = tmp_path / "root"
    config = "--config=experiments/configs/initialization.py:smoke"
    for flag in ("--parallel=-1", "--slurm_mem_gb=0"):
        result = run_module(
            "launch.sweep", config, f"--workdir={root}", "--dry_run", flag, timeout=60
        )
        assert result.returncode != 0 and f"flag {flag}: " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not root.exists()
    # A --workdir that is a file was a FileExistsError traceback when sweep.json was written.
    root.write_text("")
    result = run_module("launch.sweep", config, f"--workdir={root}", "--dry_run", timeout=60)
    assert result.returncode != 0 and "is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr


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
    assert "| True | 0.9 (1) | no finite value (0 of 1) |" in table
    assert report.seed_samples([None, None]) is None  # a curve's step with no value: no point


def test_seed_points_whose_replicas_overlap_are_refused_and_set_errors_name_the_flag(tmp_path):
    """A run trains seeds seed..seed+num_seeds-1; seeds [0, 1] with num_seeds=2 trained seed 1
    twice and the report pooled it as two seeds. A --set key the config lacks was reported as
    a 'sweep key' (the user looked in get_sweep)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    source = (REPO / "experiments/configs/initialization.py").read_text()
    source += (
        "\n\ndef get_sweep(variant='quick'):\n"
        "    return {'seed': [0, 1], 'model.hidden_size': [4]}\n"
    )
    (configs / "initialization.py").write_text(source)
    config_arg = f"{configs / 'initialization.py'}:smoke"  # num_seeds=2
    with pytest.raises(ValueError, match=r"seeds 0\.\.1 and 1\.\.2 overlap"):
        plan.plan_runs(config_arg, tmp_path / "a")
    assert len(plan.plan_runs(config_arg, tmp_path / "b", {"num_seeds": "1"})) == 2
    with pytest.raises(
        ValueError, match=r"seeds 0\.\.2 and 2\.\.4 overlap with num_seeds=3 \(--set num_seeds=3\)"
    ):
        plan.plan_runs(SMOKE, tmp_path / "c", {"num_seeds": "3"})
    with pytest.raises(ValueError, match="--set key 'train.num_step' is not in the config"):
        plan.plan_runs(SMOKE, tmp_path / "d", {"train.num_step": "5"})
    # --set values meet the rules with every point, read as the runs will read them: they
    # were not checked, and every run started only to fail with exit 2.
    with pytest.raises(ValueError, match=r"train.num_steps=-5: must be an integer in \[1, "):
        plan.plan_runs(SMOKE, tmp_path / "e", {"train.num_steps": "-5"})
    with pytest.raises(ValueError, match="--set train.num_steps=abc: must be an integer"):
        plan.plan_runs(SMOKE, tmp_path / "e", {"train.num_steps": "abc"})
    with pytest.raises(ValueError, match="train.batch_size=None: must be a number > 0"):
        plan.plan_runs(SMOKE, tmp_path / "e", {"train.batch_size": "None"})


@pytest.mark.parametrize(
    "results, entry, bad",
    [
        ({"final": [1.0, 2.0]}, {"name": "r", "overrides": {}}, "results.json"),
        ({"final": 3.0}, {"name": "r", "overrides": {}}, "results.json"),
        ([1.0], {"name": "r", "overrides": {}}, "results.json"),
        (None, {"overrides": {"lr": 1}}, "sweep.json"),
        (None, {"name": "r", "overrides": [1]}, "sweep.json"),
        # not UTF-8: a UnicodeDecodeError that named no file
        (b'\xff{"final": {}}', {"name": "r", "overrides": {}}, "results.json"),
    ],
)
def test_a_malformed_results_or_sweep_entry_is_a_value_error_naming_the_file(
    tmp_path, results, entry, bad
):
    """A `final` that is not an object (or a results.json that is not one) raised
    AttributeError/TypeError, and a sweep.json entry without `name` a KeyError: tracebacks
    from `python -m launch.report`, which exits cleanly on ValueError only."""
    (tmp_path / "r").mkdir()
    if isinstance(results, bytes):
        (tmp_path / "r" / "results.json").write_bytes(results)
    elif results is not None:
        (tmp_path / "r" / "results.json").write_text(json.dumps(results))
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "x", "runs": [entry]}))
    with pytest.raises(ValueError, match=rf"{tmp_path}/(r/)?{bad}"):
        report.load_runs(tmp_path)


def refused(capsys, main, *args) -> str:
    """`main(*args)`, which refuses them (one line, exit 2: `rnn_jax.exits`); -> its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(*args)
    assert exit_info.value.code == exits.REFUSED
    return capsys.readouterr().err


def test_report_on_a_missing_or_file_root_names_it(tmp_path, capsys):
    """A missing ROOT, or a file, was reported as 'ROOT/sweep.json: no sweep.json'; exit 2
    since session 37 (it was 1, as a traceback's)."""
    (tmp_path / "f").write_text("")
    for root, said in [("nope", "does not exist"), ("f", "is not a folder")]:
        err = refused(capsys, report.main, [str(tmp_path / root)])
        assert re.fullmatch(rf"launch.report: .*{tmp_path}/{root} {said}.*\n", err), err


def test_report_that_cannot_be_written_exits_naming_the_path(tmp_path, capsys):
    """An OSError (here report.md is a folder, so it cannot be replaced) was a traceback from
    `python -m launch.report`, which exited cleanly on ValueError only."""
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "x", "runs": []}))
    (tmp_path / "report.md").mkdir()
    err = refused(capsys, report.main, [str(tmp_path)])
    assert err.startswith("launch.report: ") and f"{tmp_path}/report.md" in err


def test_a_bool_sweep_axis_is_not_the_x_axis_of_a_line_plot(tmp_path, monkeypatch):
    """`isinstance(True, int)`: a bool axis counted as numeric, and as the first axis it
    became the x of a line plot (0..1) in place of the numeric `lr` axis after it."""
    import matplotlib.axes

    labels = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda self, x, **k: labels.append(x))
    groups = [
        {"setting": {"model.bidirectional": b, "lr": lr}, "samples": {"loss": [lr + b]}}
        for b in (True, False)
        for lr in (0.1, 0.2)
    ]
    report.plot_metric(groups, "loss", tmp_path / "loss.png")
    assert labels == ["lr"]
    labels.clear()
    only_bool = [{"setting": {"b": b}, "samples": {"loss": [1.0]}} for b in (True, False)]
    report.plot_metric(only_bool, "loss", tmp_path / "loss.png")
    assert labels == []  # bars, one per group


def test_a_diverged_seed_does_not_blank_the_curve_of_the_others(tmp_path):
    """The curve was `np.mean` over seeds: one seed logged as null (non-finite) made the
    run's curve NaN, a gap, at those steps, while the tables use the finite seeds."""
    records = [
        {"step": 1, "train_loss_per_seed": [2.0, 4.0]},
        {"step": 2, "train_loss_per_seed": [1.0, None]},
        {"step": 3, "train_loss_per_seed": [None, None]},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    steps, means = report.read_curve(tmp_path)
    assert steps.tolist() == [1, 2] and means.tolist() == [3.0, 1.0]  # step 3: no point


def test_a_long_run_name_is_shortened_stably_and_only_replica_seeds_are_pooled(tmp_path):
    """A long sweep value made ROOT/<run_name> exceed NAME_MAX ("File name too long") when the
    run started; the report pooled any `*.seed` key (a data seed: other data) as replicas."""
    long = {"data.path": "x" * 300, "seed": 0}
    name = plan.run_name(long)
    assert len(name.encode()) <= 255 and name.startswith("path=xxx")
    assert name == plan.run_name(dict(long)) != plan.run_name({**long, "seed": 1})
    (tmp_path / name).mkdir()
    runs = [
        {"name": str(s), "overrides": {k: s}, "metrics": {"": {"loss": [1.0]}}}
        for k in ("data.seed", "seed")
        for s in (0, 1)
    ]
    assert [len(g["runs"]) for g in report.group_runs(runs)] == [1, 1, 2]


def test_a_run_another_process_executes_is_not_run_again(tmp_path, capsys):
    """A second sweep into one root executed a run the first was executing, in one workdir."""
    import fcntl

    script = "import sys; open(sys.argv[1] + '/results.json', 'w').write('{}')"
    run = plan.Run("a", tmp_path / "a", {}, (sys.executable, "-c", script, str(tmp_path / "a")))
    run.workdir.mkdir()
    with open(run.workdir / "run.lock", "w") as held:  # what the other sweep's execute holds
        fcntl.flock(held, fcntl.LOCK_EX)
        assert executors.run_local([run], parallel=1) == [run] and not run.finished
        assert "a: NOT RUN" in capsys.readouterr().out and files.run_in_use(run.workdir)
    assert not files.run_in_use(run.workdir)


def test_sigterm_to_a_local_sweep_stops_its_experiments_and_starts_no_more(tmp_path):
    """`kill` (SIGTERM) of a local sweep ended the sweep alone: its experiments ran on,
    orphaned and unsupervised, and a rerun refused to start until they had finished."""
    import threading

    script = (
        "import pathlib, signal, sys, time; d = pathlib.Path(sys.argv[1]); "
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit('got SIGTERM')); "
        "(d / 'started').write_text(''); time.sleep(3)"
    )
    runs = [
        plan.Run(n, tmp_path / n, {}, (sys.executable, "-c", script, str(tmp_path / n)))
        for n in "ab"
    ]

    def kill_when_started():
        deadline = time.monotonic() + 30
        while not (tmp_path / "a" / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # only run_local's may act
    threading.Thread(target=kill_when_started, daemon=True).start()
    try:
        with pytest.raises(SystemExit, match=r"stopped by SIGTERM \(1 run\(s\) not started\)"):
            executors.run_local(runs, parallel=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "got SIGTERM" in (tmp_path / "a" / "log.txt").read_text()
    assert not (tmp_path / "b").exists()


def test_finished_runs_are_compared_by_settings_and_unfinished_ones_may_change(tmp_path):
    """A finished run is reused when only the interpreter, the root's path or the config's
    folder differ (a root shared between machines), refused when an override was added, and an
    unfinished run may be planned anew (its resume checks what may change)."""
    root = tmp_path / "root"

    def command(python, workdir, config, *overrides):
        head = (python, "-m", "experiments.x", f"--workdir={workdir}", f"--config={config}:smoke")
        return head + tuple(f"--config.{o}" for o in overrides)

    old = command("/a/python", "/mnt/a/root/r", "/a/experiments/configs/x.py", "lr=1")
    runs = [{"name": n, "overrides": {}, "command": list(old)} for n in ("r", "u")]
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"config": "x.py:smoke", "runs": runs}))
    (root / "r").mkdir()
    (root / "r" / "results.json").write_text('{"final": {}}')

    def planned(*overrides):
        return [
            plan.Run(n, root / n, {}, command("/b/py", root / n, "/b/x.py", *overrides))
            for n in ("r", "u")
        ]

    record.check_finished_runs(root, planned("lr=1"))
    with pytest.raises(ValueError, match=r"root/r finished under.*now \['--config.steps=5'\]"):
        record.check_finished_runs(root, planned("lr=1", "steps=5"))
    record.check_finished_runs(root, planned("lr=2")[1:])  # u, unfinished, may run with lr=2


def test_run_names_keep_every_digit_and_replica_overlap_is_found_in_either_order():
    """Two learning rates must not share a run directory (the plan refuses a shared name), and
    seeds [2, 1] with num_seeds=2 train seed 2 twice as surely as seeds [1, 2] do."""
    assert plan.run_name({"optimizer.learning_rate": 3e-4, "seed": 0}) == (
        "learning_rate=0.0003,seed=0"
    )
    assert plan.run_name({"lr": 1e-4}) != plan.run_name({"lr": 1.0001e-4})
    config = {"seed": 0, "num_seeds": 2}
    plan.check_seed_replicas(config, [{"seed": 2}, {"seed": 0}], {})
    with pytest.raises(ValueError, match=r"seeds 2\.\.3 and 1\.\.2 overlap"):
        plan.check_seed_replicas(config, [{"seed": 2}, {"seed": 1}], {})
    # `--set num_seeds=0x3` is 3 to the run (absl's parser); int() refused it, unchecked.
    with pytest.raises(ValueError, match=r"seeds 0\.\.2 and 2\.\.4 .*\(--set num_seeds=0x3\)"):
        plan.check_seed_replicas(config, [{"seed": 0}, {"seed": 2}], {"num_seeds": "0x3"})
    plan.check_seed_replicas(config, [{"seed": 0}, {"seed": 2}], {"num_seeds": "abc"})
    assert plan.run_name({}) == "default"


def test_run_local_skips_finished_runs_and_fails_a_run_that_wrote_no_results(tmp_path, capsys):
    """A finished run is not executed again; an exit 0 without results.json is no success."""
    runs = [plan.Run(n, tmp_path / n, {}, ("touch", str(tmp_path / n / "ran"))) for n in "ab"]
    runs[0].workdir.mkdir()
    (runs[0].workdir / "results.json").write_text('{"final": {}}')
    assert executors.run_local(runs, parallel=1) == [runs[1]]
    assert not (tmp_path / "a" / "ran").exists() and (tmp_path / "b" / "ran").exists()
    assert "1 of 2 runs already finished; 1 to run" in capsys.readouterr().out


def test_a_run_whose_folder_cannot_be_made_fails_alone(tmp_path, capsys):
    """A file where a run's folder goes: its mkdir's FileExistsError was a traceback that
    ended the sweep, and the runs after it never started."""
    runs = [
        plan.Run(n, tmp_path / n, {}, ("sh", "-c", f"echo {{}} > {tmp_path / n}/results.json"))
        for n in "ab"
    ]
    (tmp_path / "a").write_text("not a folder")
    assert executors.run_local(runs, parallel=1) == [runs[0]]
    assert runs[1].finished
    assert "a: FAILED (not started: [Errno 17] File exists" in capsys.readouterr().out


# Outcomes of the fake jobs below: (exit code or exception, whether results.json was written).
_OUTCOMES = {
    "b": (0, True),
    "c": (0, False),  # exited 0 without results.json
    "d": (3, True),  # wrote results.json, then failed
    "e": (RuntimeError("node lost"), False),
    "f": (executors.RUN_IN_USE, False),
}


def test_run_submitit_counts_a_job_done_only_when_it_exited_0_and_wrote_results(
    tmp_path, monkeypatch, capsys
):
    """A fake submitit (no job runs): one job per unfinished run, each named after its run,
    running the importable `launch.executors.execute`; finished runs are not submitted; a job is
    done only when it returned 0 and results.json exists; the others are returned and their
    lines say why."""
    import types

    made, submitted = [], []

    class Job:
        def __init__(self, name):
            self.name, self.job_id = name, f"j-{name}"

        def result(self):
            code, writes = _OUTCOMES[self.name]
            if writes:
                (tmp_path / self.name / "results.json").write_text('{"final": {}}')
            if isinstance(code, Exception):
                raise code
            return code

    class Executor:
        def __init__(self, folder, cluster):
            made.append((folder, cluster))
            self.parameters = {}

        def update_parameters(self, **parameters):
            self.parameters.update(parameters)

        def submit(self, fn, *args):
            submitted.append((fn, args, dict(self.parameters)))
            return Job(self.parameters["name"])

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=Executor))
    monkeypatch.setenv("PYTHONPATH", "")  # run_submitit extends it for the jobs
    runs = [plan.Run(n, tmp_path / n, {}, ("cmd", n)) for n in "abcdef"]
    for run in runs:
        run.workdir.mkdir()
    (tmp_path / "a" / "results.json").write_text('{"final": {}}')
    assert executors.run_submitit(runs, "slurm", {"timeout_min": 7}) == runs[2:]
    assert made == [(tmp_path / ".submitit" / "%j", "slurm")]
    assert [(fn, args) for fn, args, _ in submitted] == [
        (executors.execute, (("cmd", n), str(tmp_path / n), {})) for n in "bcdef"
    ]
    assert [p for _, _, p in submitted] == [{"timeout_min": 7, "name": n} for n in "bcdef"]
    out = capsys.readouterr().out
    assert "1 of 6 runs already finished; 5 to submit" in out
    assert "[1/5] b: done" in out
    assert f"[2/5] c: FAILED (exit 0, log {tmp_path / 'c' / 'log.txt'})" in out
    assert "[3/5] d: FAILED (exit 3," in out
    assert (
        "e: job j-e raised RuntimeError('node lost')" in out and "[4/5] e: FAILED (exit -1," in out
    )
    assert "[5/5] f: NOT RUN" in out
    made.clear()
    assert executors.run_submitit(runs[:2], "local", {}) == [] and made == []  # nothing to submit


def _sweep_flags(*args):
    """launch.sweep's flags parsed from `args` (a FlagValues of their own, as absl's FLAGS)."""
    from absl import flags

    values = flags.FlagValues()
    sweep.define_flags(values)
    values(["prog", *args])
    return values


def test_no_scheduler_here_or_a_refused_submission_is_named_not_a_traceback(
    tmp_path, monkeypatch, capsys
):
    """`--launcher=slurm` on a machine without SLURM was submitit's RuntimeError ('Could not
    detect "srun"') as a traceback; sbatch refusing a job (a partition it does not know) was
    a traceback mid-submission that left the jobs already submitted running unwatched."""
    import types

    class NoSlurm:
        def __init__(self, folder, cluster):
            raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=NoSlurm))
    monkeypatch.setenv("PYTHONPATH", "")
    runs = [plan.Run(n, tmp_path / n, {}, ("cmd", n)) for n in "abc"]
    for run in runs:
        run.workdir.mkdir()
    with pytest.raises(ValueError, match="cannot submit 'slurm' jobs from here: Could not detect"):
        executors.run_submitit(runs, "slurm", {})
    args = [f"--config={SMOKE}", f"--workdir={tmp_path}", "--launcher=slurm"]
    monkeypatch.setattr(sweep.flags, "FLAGS", _sweep_flags(*args, "--slurm_partition=p"))
    monkeypatch.setattr(sweep, "plan_runs", lambda *args: runs)
    err = refused(capsys, sweep.main, ["prog"])
    assert err.startswith("launch.sweep: --launcher=slurm: submitit cannot")

    class Job:
        job_id = "j-a"

        def result(self):
            (tmp_path / "a" / "results.json").write_text('{"final": {}}')
            return 0

    class Refusing:
        def __init__(self, folder, cluster):
            self.parameters = {}

        def update_parameters(self, **parameters):
            self.parameters.update(parameters)

        def submit(self, fn, *args):
            if self.parameters["name"] != "a":
                raise RuntimeError("sbatch: error: invalid partition specified: p")
            return Job()

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=Refusing))
    capsys.readouterr()
    assert executors.run_submitit(runs, "slurm", {}) == runs[1:]
    out = capsys.readouterr().out
    assert "b: NOT SUBMITTED (RuntimeError: sbatch: error: invalid partition" in out
    assert "nor the 1 run(s) after it" in out and "[1/1] a: done" in out


def test_run_local_gives_each_slot_its_environment_and_counts_as_run_submitit_does(
    tmp_path, monkeypatch, capsys
):
    """`execute` replaced (no process starts): runs at once hold different slots (GPUs), a slot
    is reused when its run ends, and success is exit 0 with results.json, as for submitit; the
    SIGTERM handler of the caller is back afterwards."""
    import threading

    holding, seen, lock = set(), [], threading.Lock()

    def fake_execute(command, workdir, env):
        name = pathlib.Path(workdir).name
        with lock:
            assert env["CUDA_VISIBLE_DEVICES"] not in holding, "two runs on one slot"
            holding.add(env["CUDA_VISIBLE_DEVICES"])
            seen.append((name, dict(env)))
        time.sleep(0.01)
        code, writes = _OUTCOMES[name]
        if writes:
            (pathlib.Path(workdir) / "results.json").write_text('{"final": {}}')
        with lock:
            holding.discard(env["CUDA_VISIBLE_DEVICES"])
        if isinstance(code, Exception):
            return -1
        return code

    monkeypatch.setattr(executors, "execute", fake_execute)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    runs = [plan.Run(n, tmp_path / n, {}, ("cmd", n)) for n in "abcdef"]
    for run in runs:
        run.workdir.mkdir()
    (tmp_path / "a" / "results.json").write_text('{"final": {}}')
    handler = signal.getsignal(signal.SIGTERM)
    failed = executors.run_local(runs, parallel=2)
    assert sorted(failed, key=lambda run: run.name) == runs[2:]  # in the order they ended
    assert signal.getsignal(signal.SIGTERM) is handler
    assert sorted(name for name, _ in seen) == list("bcdef")
    assert {env["CUDA_VISIBLE_DEVICES"] for _, env in seen} == {"5", "7"}
    assert all(len(env) == 1 for _, env in seen)  # one GPU each: no preallocation setting
    out = capsys.readouterr().out
    assert "c: FAILED (exit 0," in out and "d: FAILED (exit 3," in out and "f: NOT RUN" in out


def test_plan_edges_name_the_bad_config_value_or_point(tmp_path):
    """Plan-time refusals a user can reach: a config file with no experiment module (a stem
    that is no module name, `my.exp.py`, raised ModuleNotFoundError from find_spec), a value
    of another type than its field, two points that map to one run directory."""
    import ml_collections

    for stem in ("no_such_experiment", "my.exp"):
        (tmp_path / f"{stem}.py").write_text("")
        with pytest.raises(ValueError, match=rf"config '{stem}' has no experiment module"):
            plan.parse_config_arg(f"{tmp_path / stem}.py:smoke")
    config = ml_collections.ConfigDict({"flag": True, "sizes": (1, 2), "name": "a"})
    plan.check_overrides(config, {"sizes": [3], "flag": False, "name": "b"})
    for key, value, kind in [("flag", 1, "bool"), ("sizes", 3, "tuple"), ("name", 1, "str")]:
        with pytest.raises(ValueError, match=rf"sweep key '{key}': value {value} .*{kind} field"):
            plan.check_overrides(config, {key: value})
    assert plan._set_value(config, "name", "x y") == "x y"
    assert plan._set_value(config, "sizes", "(3,)") is plan._UNPARSED
    assert plan.format_override([1, 2]) == "(1, 2)"  # as config_flags reads a tuple
    assert points.setting_key(frozenset([1])) == ("text", '"frozenset({1})"')
    same = config_with_sweep(tmp_path, [{"data.root": "/a b"}, {"data.root": "/a_b"}])
    with pytest.raises(ValueError, match="two sweep points give the same run 'root=_a_b'"):
        plan.plan_runs(same, tmp_path / "root")


def test_execute_without_flock_or_told_to_stop_and_slots_edges(tmp_path, monkeypatch):
    """A filesystem without flock runs unguarded; a run submitted after SIGTERM (or whose
    process started as the handler ran) is stopped, not left running; --parallel < 0 and
    a platform without sched_getaffinity."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks")

    with monkeypatch.context() as patch:
        patch.setattr(fcntl, "flock", no_flock)
        assert executors.execute([sys.executable, "-c", "pass"], str(tmp_path / "a"), {}) == 0
    executors._STOPPING.set()
    try:
        assert executors.execute(["false"], str(tmp_path / "b"), {}) == -signal.SIGTERM
        assert not (tmp_path / "b" / "log.txt").exists()  # never started
    finally:
        executors._STOPPING.clear()
    popen = subprocess.Popen

    def popen_then_stop(*args, **kwargs):  # SIGTERM lands between Popen and registration
        process = popen(*args, **kwargs)
        executors._STOPPING.set()
        return process

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", popen_then_stop)
        try:
            code = executors.execute(["sleep", "30"], str(tmp_path / "c"), {})
        finally:
            executors._STOPPING.clear()
    assert code == -signal.SIGTERM
    with pytest.raises(ValueError, match=r"--parallel=-1: expected >= 0"):
        executors._slots(-1)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert executors._cpu_cores() == 3


def test_main_passes_the_launcher_its_parameters_and_exits_naming_failed_runs(
    tmp_path, monkeypatch, capsys
):
    """`main`'s flags (defined only when run as a program): the SLURM sizes reach submitit,
    `--slurm_gpus_per_node=0` is left out, failed runs end it."""
    # the program's refusals: one line, exit 2 (they were absl's usage text, exit 1)
    err = refused(capsys, sweep.main, ["prog", "x"])
    assert err == "launch.sweep: unexpected arguments: ['x']\n"
    slurm_args = ["--slurm_partition=p", "--slurm_time_min=60", "--launcher=slurm"]
    monkeypatch.setattr(sweep.flags, "FLAGS", _sweep_flags(f"--workdir={tmp_path}", *slurm_args))
    err = refused(capsys, sweep.main, ["prog"])
    assert err == "launch.sweep: --config and --workdir are required\n"
    sweep.flags.FLAGS.config = SMOKE
    run = plan.Run("a", tmp_path / "a", {}, ("python",))
    monkeypatch.setattr(sweep, "plan_runs", lambda *args: [run])
    calls = []
    monkeypatch.setattr(sweep, "run_submitit", lambda *args: calls.append(args[1:]) or [run])
    slurm = {"timeout_min": 60, "slurm_partition": "p", "cpus_per_task": 4, "mem_gb": 32}
    with pytest.raises(SystemExit, match=r"launch.sweep: 1 run\(s\) failed: \['a'\]"):
        sweep.main(["prog"])
    local = _sweep_flags(f"--workdir={tmp_path}", f"--config={SMOKE}", "--slurm_time_min=60")
    local.launcher = "submitit_local"
    monkeypatch.setattr(sweep.flags, "FLAGS", local)
    with pytest.raises(SystemExit):
        sweep.main(["prog"])
    assert calls == [("slurm", slurm), ("local", {"timeout_min": 60})]
    gpus = _sweep_flags(f"--workdir={tmp_path}", f"--config={SMOKE}", *slurm_args)
    gpus.slurm_gpus_per_node = 2
    monkeypatch.setattr(sweep.flags, "FLAGS", gpus)
    with pytest.raises(SystemExit):
        sweep.main(["prog"])
    assert calls[-1] == ("slurm", {**slurm, "gpus_per_node": 2})


@pytest.mark.parametrize(
    "launcher, flag",
    [
        ("local", "--slurm_partition=gpu"),
        ("local", "--slurm_time_min=60"),
        ("submitit_local", "--slurm_mem_gb=64"),
        ("submitit_local", "--slurm_gpus_per_node=0"),  # given, even at its default value
        ("slurm", "--parallel=2"),  # only local runs `--parallel` at once
        ("submitit_local", "--parallel=0"),
    ],
)
def test_a_slurm_flag_the_launcher_ignores_is_refused_naming_both(
    tmp_path, monkeypatch, capsys, launcher, flag
):
    """`--launcher=local` ignored every `--slurm_*` flag and `submitit_local` all but the time
    limit: a sweep given `--slurm_mem_gb=64` ran with no limit, silently (and the SLURM
    launchers ignored `--parallel`, submitting every run at once). A flag given
    explicitly to a launcher that does not read it exits 2 naming both, before the plan."""
    monkeypatch.setattr(sweep, "plan_runs", lambda *args: pytest.fail("planned"))
    args = [f"--workdir={tmp_path}", f"--config={SMOKE}", f"--launcher={launcher}", flag]
    monkeypatch.setattr(sweep.flags, "FLAGS", _sweep_flags(*args))
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["prog"])
    assert exit_info.value.code == 2
    name = flag[2:].split("=")[0]
    err = capsys.readouterr().err
    assert f"--{name} is not used by --launcher={launcher}, which would ignore it" in err
    # Each launcher's own flags (and flags left at their defaults) pass.
    sweep.check_launcher_flags("submitit_local", ["slurm_time_min"])
    sweep.check_launcher_flags("slurm", list(sweep.SLURM_PARAMETERS))
    sweep.check_launcher_flags("local", ["parallel"])


def test_main_refuses_a_config_or_root_to_fix_in_one_line_with_exit_2(
    tmp_path, monkeypatch, capsys
):
    """An unknown variant, a refused `--set` or a root that is a file exited 1
    (`sys.exit(message)`, a failed run's status), where the `--slurm_*` refusal above and the
    experiments' config errors exit 2."""
    config = REPO / "experiments/configs/initialization.py"
    (tmp_path / "f").write_text("")
    root = f"--workdir={tmp_path / 'r'}"
    for args, said in [
        ([f"--config={config}:nope", root], "unknown variant 'nope'"),
        ([f"--config={config}:smoke", root, "--set=abc"], "--set='abc': expected key=value"),
        ([f"--config={config}:smoke", f"--workdir={tmp_path / 'f'}"], "is a file, not a"),
    ]:
        monkeypatch.setattr(sweep.flags, "FLAGS", _sweep_flags(*args, "--dry_run"))
        err = refused(capsys, sweep.main, ["prog"])
        assert err.startswith("launch.sweep: ") and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_report_edges_sweep_json_blank_cells_and_main(tmp_path, monkeypatch, capsys):
    """A root without (or with a malformed) sweep.json, a metric one group lacks (blank), a
    nested multi-seed row, numbers outside 1e-3..1e5, a metric with no finite value (no
    plot), and `main`'s usage and output."""
    with pytest.raises(ValueError, match=rf"{tmp_path}/sweep.json: no sweep.json; is {tmp_path}"):
        report.load_runs(tmp_path)
    for text, said in [
        ("{", "not a launch.sweep"),
        ("{}", "not a launch.sweep"),
        ('{"runs": {}}', "`runs` is dict, not a list"),
    ]:
        (tmp_path / "sweep.json").write_text(text)
        with pytest.raises(ValueError, match=rf"{tmp_path}/sweep.json: {said}"):
            report.load_runs(tmp_path)
        if said.startswith("not"):
            with pytest.raises(ValueError, match=rf"{tmp_path}/sweep.json: {said}"):
                record._recorded_commands(tmp_path)
    nested = {"steps": 5, "adding": {"loss": 1.5, "loss_std": 0.5, "per_seed": {"loss": [1, 2]}}}
    assert report.flatten_final(nested) == {"steps": [5.0], "adding.loss": [1.0, 2.0]}
    assert [report.format_number(v) for v in (123456.0, 1.234e-4, 0.0, math.inf)] == [
        "1.23e+05",
        "0.000123",
        "0",
        "inf",
    ]
    groups = [
        {"setting": {"lr": 1}, "samples": {"acc": [0.5]}},
        {"setting": {"lr": 2}, "samples": {"loss": [2.0]}},
    ]
    assert "| 1 | 0.5 (1) |  |" in report.markdown_table(groups)
    # Two axes ending alike both read "hidden_size": the whole key tells them apart.
    two = [{"setting": {"model.hidden_size": 4, "decoder.hidden_size": 8, "train.lr": 1}}]
    two[0]["samples"] = {"acc": [0.5]}
    header = report.markdown_table(two).splitlines()[0]
    assert header == "| model.hidden_size | decoder.hidden_size | lr | acc |"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text('{"final": {"acc": 0.5, "loss": [null]}}')
    runs = [{"name": "r", "overrides": {"lr": 1}}, {"name": "s", "overrides": {"lr": 2}}]
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "c.py:v", "runs": runs}))
    plotted = []
    monkeypatch.setattr(report, "plot_metric", lambda groups, metric, path: plotted.append(metric))
    monkeypatch.setattr(report, "plot_curves", lambda groups, path: False)
    assert refused(capsys, report.main, []) == "usage: python -m launch.report ROOT\n"
    report.main(["--help"])  # was "sweep folder --help does not exist"
    assert capsys.readouterr().out.startswith("Aggregate a sweep's runs")
    report.main([str(tmp_path)])
    assert plotted == ["acc"]
    out = capsys.readouterr().out
    assert "| 1 | 0.5 (1) | no finite value (0 of 1) |" in out
    assert out.endswith(f"wrote {tmp_path / 'report.md'}\n")
    text = (tmp_path / "report.md").read_text()
    assert "1 of 2 runs finished; not finished: s." in text and "![acc.png](acc.png)" in text


def test_a_report_that_fails_on_a_corrupt_curve_writes_no_plot(tmp_path):
    """The curves are read before any plot is drawn: a corrupt metrics.jsonl line failed the
    report after the metric plots were rewritten, beside the old report.md."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text('{"final": {"acc": [0.5, 0.6]}}')
    (tmp_path / "r" / "metrics.jsonl").write_text('{"step": 1, "tr\n{"step": 2}\n')
    runs = [{"name": "r", "overrides": {"lr": 1}}]
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "c.py:v", "runs": runs}))
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1: not a JSON object"):
        report.write_report(tmp_path)
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "report.md").exists()


def test_a_rerun_report_removes_its_own_plots_it_no_longer_draws(tmp_path, monkeypatch):
    """A rerun with fewer metrics (or no curves) left the old PNGs beside the new ones, so the
    folder showed plots no command made. The previous report.md names the plots it wrote; the
    next report removes those it does not rewrite and leaves every other file alone."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text('{"final": {"acc": 0.5, "loss": 1.0}}')
    runs = [{"name": "r", "overrides": {"lr": 1}}]
    (tmp_path / "sweep.json").write_text(json.dumps({"config": "c.py:v", "runs": runs}))
    (tmp_path / "mine.png").write_text("not the report's")
    curves = [True, False]

    def fake_curves(groups, path):
        drawn = curves.pop(0)
        if drawn:
            path.write_text("png")
        return drawn

    monkeypatch.setattr(report, "plot_metric", lambda groups, metric, path: path.write_text("png"))
    monkeypatch.setattr(report, "plot_curves", fake_curves)
    report.write_report(tmp_path)
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == {"acc.png", "loss.png", "train_loss_curves.png", "mine.png"}
    (tmp_path / "r" / "results.json").write_text('{"final": {"acc": 0.5}}')
    report.write_report(tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == {"acc.png", "mine.png"}
    assert "![acc.png](acc.png)" in (tmp_path / "report.md").read_text()
    # A link to something that is not a plain PNG in ROOT is never taken for one of its own.
    (tmp_path / "report.md").write_text("![x](sweep.json)\n![y](r/z.png)\n![z](../z.png)\n")
    assert report.report_plots(tmp_path) == []
    # Nor is a figure added to report.md by hand: only the report's own `![name](name)` form
    # with a name it can write (`![Figure 1](fig1.png)` had fig1.png removed by the next run).
    (tmp_path / "report.md").write_text(
        "![Figure 1](fig1.png)\n![my plot.png](my plot.png)\n![acc.png](acc.png)\n"
    )
    assert report.report_plots(tmp_path) == ["acc.png"]
