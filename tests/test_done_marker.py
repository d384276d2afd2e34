"""results.json is a run's "done" marker (reproduce and launch.sweep skip a workdir holding
one): the experiments that do not go through `grid.run_points` remove it before they redo
anything, so a rerun under another config that is killed midway does not read as finished
with the old config's results."""

import pytest

from experiments import data_throughput, smt_baseline
from experiments import state_probe as sp
from experiments.configs import smt_baseline as smt_configs
from experiments.language_model import LanguageModelTask
from rnn_jax.train import cli


class Killed(Exception):
    """Stands for the process being killed at that point."""


def _kill(*args, **kwargs):
    raise Killed


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
