"""results.json is a run's "done" marker (reproduce and launch.sweep skip a workdir holding
one): the experiments that do not go through `grid.run_points` remove it before they redo
anything, so a rerun under another config that is killed midway does not read as finished
with the old config's results."""

import pytest

from experiments import data_throughput, smt_baseline
from experiments import state_probe as sp
from experiments.configs import smt_baseline as smt_configs
from experiments.language_model_task import LanguageModelTask
from rnn_jax.train import cli
from rnn_jax.train import metrics as run_metrics


class Killed(Exception):
    """Stands for the process being killed at that point."""


def _kill(*args, **kwargs):
    raise Killed


def test_remove_done_marker_removes_results_json_only(tmp_path):
    """The one function every run calls before it redoes its work (the runtime, the grid,
    smt_baseline, state_probe, data_throughput, throughput): results.json goes, nothing else,
    and a workdir without one (a first run) is no error."""
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    run_metrics.remove_done_marker(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    run_metrics.remove_done_marker(tmp_path)
    assert run_metrics.RESULTS_FILE == "results.json"  # the name sweeps and reproduce look for


def _with_old_results(workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text('{"final": {"old": 1.0}}')
    return workdir


@pytest.mark.data
def test_smt_baseline_rerun_killed_midway_is_not_finished(data_root, tmp_path, monkeypatch):
    config = smt_configs.get_config("smoke")
    with config.unlocked():
        config.data.root = str(data_root)
    workdir = _with_old_results(tmp_path / "smt")
    monkeypatch.setattr(smt_baseline, "train_system", _kill)
    with pytest.raises(Killed):
        smt_baseline.run(config, workdir)
    assert not (workdir / "results.json").exists()


def test_data_throughput_rerun_killed_midway_is_not_finished(tmp_path, monkeypatch):
    config = cli.load_config(
        "experiments/configs/data_throughput.py:smoke", {}, data_throughput.RULES
    )
    workdir = _with_old_results(tmp_path / "data")
    monkeypatch.setattr(data_throughput, "build_steps", _kill)
    with pytest.raises(Killed):
        data_throughput.run(config, workdir, LanguageModelTask(config))
    assert not (workdir / "results.json").exists()


@pytest.mark.data
def test_state_probe_rerun_killed_midway_is_not_finished(data_root, tmp_path, monkeypatch):
    config = cli.load_config(
        "experiments/configs/state_probe.py:smoke", {"data.root": str(data_root)}, sp.RULES
    )
    workdir = _with_old_results(tmp_path / "probe")
    monkeypatch.setattr(sp, "train_and_evaluate", _kill)
    with pytest.raises(Killed):
        sp.run(config, workdir)
    assert not (workdir / "results.json").exists()
