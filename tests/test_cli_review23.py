"""Review tests (session 23) of the command line and the config rules: values that passed
`validate` but were silently ignored (`optimizer.momentum` with Adam, a `--config.k=None` on a
switch), a `--workdir` below a dangling symbolic link, and `train.shard_params` changed on
resume (a layout, not a different run)."""

import json
import shutil

import pytest

from rnn_jax.files import check_workdir
from rnn_jax.train import config as cfg
from rnn_jax.train import train_and_evaluate
from tests.test_train_loop import Regression, _config


def _validate(**overrides):
    config = cfg.base_config()
    config.model.hidden_size = 4
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    cfg.validate(config)


def test_momentum_with_an_optimizer_that_has_none_is_refused():
    # optax.adam/adamw/adagrad take no momentum: `optimizer.momentum=0.9` with 'adam' trained
    # plain Adam with no word (as `nesterov` did before its rule).
    for name in ("adam", "adamw", "adagrad"):
        with pytest.raises(
            ValueError, match=rf"optimizer.momentum=0.9 with optimizer.name='{name}'"
        ):
            _validate(optimizer__name=name, optimizer__momentum=0.9)
    for name in ("sgd", "rmsprop"):
        _validate(optimizer__name=name, optimizer__momentum=0.9)
    _validate(optimizer__name="adam", optimizer__momentum=0.0)


def test_switches_and_the_best_metric_set_to_none_are_refused():
    # `--config.train.keep_best=None` (any field takes None on the command line) ran without a
    # best checkpoint and reported the last step's model; the switches had no rule at all.
    keys = ("train.keep_best", "train.shard_params", "optimizer.nesterov", "train.best_metric")
    with pytest.raises(ValueError) as info:
        _validate(**{key.replace(".", "__"): None for key in keys})
    for key in keys:
        assert f"{key}=None: must be" in str(info.value)
    assert "train.keep_best=None: must be True or False" in str(info.value)
    assert "train.best_metric=None: must be the name of an evaluation metric" in str(info.value)
    _validate(train__keep_best=False, train__shard_params=True)


def test_a_workdir_below_a_dangling_symbolic_link_is_refused(tmp_path):
    # `runs` linking to an unmounted scratch disk: `--workdir=runs/lm` passed the check (the
    # link does not "exist"), loaded the data and built the model, then died at mkdir with a
    # FileExistsError traceback.
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "scratch" / "runs")
    for workdir in (link, link / "lm"):
        with pytest.raises(ValueError, match=r"runs' is a symbolic link to a missing path"):
            check_workdir(str(workdir))
    (tmp_path / "scratch" / "runs").mkdir(parents=True)
    check_workdir(str(link / "lm"))


def test_a_run_resumes_with_shard_params_switched_on(tmp_path):
    # `train.shard_params` only changes the state's shardings (orbax restores onto the new
    # ones): a run started unsharded resumes sharded and ends where it would have. It was
    # refused as "another config" (and `restore_model`, which ignores it, refused it too).
    config = _config(train__num_steps=4, train__checkpoint_every=2, train__keep_best=False)
    run = tmp_path / "run"
    reference = train_and_evaluate(config, run, Regression())["final"]
    # as if killed after step 3: the newest checkpoint is step 2, no results yet
    (run / "results.json").unlink()
    shutil.rmtree(run / "checkpoints" / "4")
    sharded = _config(
        train__num_steps=4,
        train__checkpoint_every=2,
        train__keep_best=False,
        train__shard_params=True,
    )
    assert cfg.run_changes(cfg.flatten(config.to_dict()), cfg.flatten(sharded.to_dict()), run) == []
    results = train_and_evaluate(sharded, run, Regression())
    assert results["timing"]["resumed_from_step"] == 2
    assert results["final"] == pytest.approx(reference, rel=1e-6)
    assert json.loads((run / "config.json").read_text())["train"]["shard_params"] is True
