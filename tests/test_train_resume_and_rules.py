"""The training runtime's resume and config rules: a resume that lowers `train.num_steps` to (or
below) the newest checkpoint or switches `train.shard_params`, and config values that
validated but could not work or were silently ignored (reduce-on-plateau settings optax
refuses or inverts, seeds that alias in a 32-bit PRNG key, momentum or Nesterov without an
optimiser that has them, `=None` on a switch), and `--workdir` checks."""

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from rnn_jax import exits
from rnn_jax.files import check_workdir
from rnn_jax.train import cli, config_checks, config_keys, optim, saved_config, train_and_evaluate
from rnn_jax.train import config as cfg
from rnn_jax.train import loop as loop_lib
from rnn_jax.train.metrics import metric_series
from tests.test_train_loop import Regression, Stream, _config


class _Crash(Exception):
    pass


class _CrashingStream(Stream):
    """The regression stream that raises before yielding batch `crash_at` (1-based step)."""

    def __init__(self, crash_at):
        super().__init__()
        self.crash_at, self.served = crash_at, 0

    def __iter__(self):
        for batch in super().__iter__():
            self.served += 1
            if self.served == self.crash_at:
                raise _Crash
            yield batch


class _CrashingRegression(Regression):
    def __init__(self, crash_at):
        super().__init__()
        self.crash_at = crash_at

    def train_data(self):
        return _CrashingStream(self.crash_at)


def _crash_after_step_12(workdir, **overrides):
    # 20 steps planned, checkpoints every 4: the run dies at step 13 with step 12 saved
    # (evaluated at 5 and 10 only; its log window holds steps 11 and 12).
    config = _config(train__checkpoint_every=4, **overrides)
    with pytest.raises(_Crash):
        train_and_evaluate(config, workdir, _CrashingRegression(crash_at=13))


@pytest.mark.parametrize(
    "overrides",
    [
        {"train__log_every": 5},
        {"train__log_every": 20},
        {"train__log_every": 4, "train__best_mode": "max", "train__patience": 2},
    ],
)
def test_resume_with_num_steps_lowered_to_the_checkpoint_equals_a_run_of_that_length(
    tmp_path, overrides
):
    # `train.num_steps` may change on resume. Lowered to the newest checkpoint's step, the
    # run used to end without its last step's log and evaluation: another train_loss,
    # best_step and valid_loss than a 12-step run (log_every=5), or a TypeError building
    # `final` when nothing had been logged yet (log_every=20). With step 12 logged before the
    # kill and its evaluation (the second without improvement: 'max' on a falling loss) an
    # early stop, the stop re-closed the empty window: KeyError 'train_loss' (log_every=4).
    _crash_after_step_12(tmp_path / "run", **overrides)
    short = _config(train__checkpoint_every=4, train__num_steps=12, **overrides)
    reference = train_and_evaluate(short, tmp_path / "reference", Regression())["final"]
    results = train_and_evaluate(short, tmp_path / "run", Regression())
    assert results["timing"]["steps_run"] == 0
    # The killed invocation trained the 12 steps: its timing at their checkpoint comes along.
    assert results["timing"]["earlier_invocation"]["steps_run"] == 12
    assert results["final"] == reference
    assert reference["step"] == 12
    assert reference["best_step"] == (5 if "train__patience" in overrides else 12)
    # The final scores are the best checkpoint's, not the last step's model's.
    evals = dict(metric_series(tmp_path / "reference" / "metrics.jsonl", "valid_loss"))
    assert reference["valid_loss"] == evals[reference["best_step"]] != evals[10]


def test_resume_with_num_steps_below_the_checkpoint_is_a_config_error(tmp_path):
    # It used to "finish" at step 12 of a 10-step run and overwrite config.json with a
    # num_steps its checkpoints had already passed.
    _crash_after_step_12(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    # A best checkpoint newer than the periodic one (a run killed between the two saves, or
    # a live run's): the refused runs below deleted it before their checks; a resume that
    # passes them drops it (test_train_checkpoint).
    newest_best = max((tmp_path / "best").iterdir(), key=lambda path: int(path.name))
    shutil.copytree(newest_best, tmp_path / "best" / "14")
    with pytest.raises(cfg.ConfigError, match=r"train.num_steps=10: .* step 12"):
        train_and_evaluate(_config(train__num_steps=10), tmp_path, Regression())
    assert (tmp_path / "config.json").read_text() == saved
    assert not (tmp_path / "results.json").exists()
    assert json.loads(saved)["train"]["num_steps"] == 20
    # A data position that does not fit this run's data (a changed corpus) was a ValueError
    # traceback (exit 1) raised after config.json and the task's files had been rewritten.
    with pytest.raises(cfg.ConfigError, match=r"data position saved there does not fit.*gone"):
        train_and_evaluate(_config(), tmp_path, _ChangedDataRegression())
    # So was a checkpoint that does not fit the model (Checkpointer.restore names the arrays).
    with pytest.raises(cfg.ConfigError, match=r"(?s)cannot resume in .*does not fit.*params.kern"):
        train_and_evaluate(_config(), tmp_path, _WiderRegression())
    assert (tmp_path / "config.json").read_text() == saved
    assert (tmp_path / "best" / "14").is_dir()
    # A damaged newest checkpoint (an item folder gone) was orbax's KeyError, a traceback.
    shutil.rmtree(tmp_path / "checkpoints" / "12" / "loop")
    with pytest.raises(cfg.ConfigError, match=r"cannot resume in .*checkpoints/12 is damaged"):
        train_and_evaluate(_config(), tmp_path, Regression())
    assert (tmp_path / "config.json").read_text() == saved
    assert (tmp_path / "best" / "14").is_dir() and (tmp_path / "checkpoints" / "12").is_dir()


class _UnreadableRegression(Regression):
    def train_data(self):
        raise OSError("no such corpus")


def test_a_start_that_fails_before_training_closes_the_checkpointer(tmp_path, monkeypatch):
    # Only the refused resumes closed it; a task whose data cannot be read left it open.
    closed = []

    class Recording(loop_lib.Checkpointer):
        def close(self, prune=True):
            closed.append(True)
            super().close(prune)

    monkeypatch.setattr(loop_lib, "Checkpointer", Recording)
    with pytest.raises(OSError, match="no such corpus"):
        train_and_evaluate(_config(), tmp_path, _UnreadableRegression())
    assert closed == [True]


class _ChangedDataStream(Stream):
    def load_state_dict(self, state):
        raise ValueError("batch 3 is gone")


class _WiderRegression(Regression):
    def init_model(self, rng):
        return nnx.Linear(3, 2, rngs=nnx.Rngs(params=rng))


class _ChangedDataRegression(Regression):
    def train_data(self):
        return _ChangedDataStream()


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        # optax.contrib.reduce_on_plateau compares the windows without improvement with
        # `patience` after counting one: patience 0 never cuts on a plateau and instead cuts
        # the rate at every improvement.
        ("plateau_patience", 0, "an integer >= 1"),
        # optax refuses these when it builds the optimiser (a traceback, exit 1).
        ("plateau_factor", 0.0, "a number in (0, 1)"),
        ("plateau_rtol", 0.0, "a number in (0, 1]"),
        ("plateau_rtol", 2.0, "a number in (0, 1]"),
    ],
)
def test_plateau_values_optax_refuses_or_inverts_are_config_errors(key, value, allowed):
    config = _config()
    config.schedule.name = "plateau"
    config.schedule[key] = value
    with pytest.raises(ValueError) as info:
        config_checks.validate(config)
    assert f"schedule.{key}={value!r}: must be {allowed}" in str(info.value)


def test_allowed_plateau_values_build():
    config = _config(
        schedule__name="plateau",
        schedule__plateau_patience=1,
        schedule__plateau_factor=0.1,
        schedule__plateau_rtol=1.0,
    )
    optim.build_optimizer(config)


@pytest.mark.parametrize("seed, num_seeds", [(2**32, 1), (2**32 - 1, 2), (2**63, 1)])
def test_seeds_beyond_32_bits_are_config_errors(seed, num_seeds):
    # jax.random.PRNGKey keeps a seed's low 32 bits: seed 2**32 trained exactly seed 0's run
    # (replica seed+i likewise), and 2**63 failed with an OverflowError inside jax.
    config = _config()
    config.seed, config.num_seeds = seed, num_seeds
    with pytest.raises(ValueError, match=r"seed="):
        config_checks.validate(config)


def test_the_largest_seed_is_its_own():

    from rnn_jax.train import seeds

    config = _config()
    config.seed, config.num_seeds = 2**32 - 2, 2
    config_checks.validate(config)
    keys = np.asarray(seeds.base_keys(config.seed, config.num_seeds))
    assert len({tuple(k) for k in keys} | {tuple(np.asarray(jax.random.PRNGKey(0)))}) == 3


def test_a_config_json_write_that_fails_midway_keeps_the_old_one(tmp_path, monkeypatch):
    # A resumed run rewrites config.json. With the disk full halfway through, a plain write
    # left half a JSON file, and every later resume was refused ("cannot read the config this
    # run directory's checkpoints were written with").
    import builtins
    import errno
    import io

    _crash_after_step_12(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    real_open = io.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "config.json" in str(file) and "w" in mode:
            write = f.write

            def half_then_enospc(text):
                write(text[: len(text) // 2])
                f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            f.write = half_then_enospc
        return f

    monkeypatch.setattr(io, "open", full_disk_open)
    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(OSError, match="No space left"):
        train_and_evaluate(_config(train__checkpoint_every=4), tmp_path, Regression())
    monkeypatch.undo()
    assert (tmp_path / "config.json").read_text() == saved
    assert not list(tmp_path.glob(".config.json.tmp-*"))  # nor a half-written temporary
    saved_config.check_resumable(tmp_path, _config(train__checkpoint_every=4))  # still resumable


def test_accumulation_steps_that_do_not_divide_the_steps_are_a_config_error(tmp_path):
    # optax.MultiSteps updates once every k micro-batches: with k > train.num_steps the run
    # trained nothing and reported its initial model as trained; with 20 steps and k = 3 the
    # last two steps' gradients were computed and never applied.
    for k in (30, 3):
        with pytest.raises(ValueError, match=rf"train.grad_accum_steps={k}: must divide train.num"):
            _config(train__num_steps=20, train__grad_accum_steps=k)
    _config(train__num_steps=20, train__grad_accum_steps=20)
    _config(train__num_steps=20, train__grad_accum_steps=4)


def _validate(**overrides):
    config = cfg.base_config()
    config.model.hidden_size = 4
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    config_checks.validate(config)


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
    flat = config_keys.flatten
    assert saved_config.run_changes(flat(config.to_dict()), flat(sharded.to_dict()), run) == []
    results = train_and_evaluate(sharded, run, Regression())
    assert results["timing"]["resumed_from_step"] == 2
    assert results["final"] == pytest.approx(reference, rel=1e-6)
    assert json.loads((run / "config.json").read_text())["train"]["shard_params"] is True


def test_an_earlier_none_override_is_overridden_by_a_later_value():
    # "The last assignment of a key wins": an earlier `=None` reached config_flags, which
    # could not parse 'None' as a float (exit 1) although the later 1.0 was meant.
    argv = [
        "prog",
        "--config.optimizer.clip_global_norm=None",
        "--config.train.num_steps=5",
        "--config.optimizer.clip_global_norm=1.0",
        "--config.optimizer.clip_value=2.0",
        "--config.optimizer.clip_value=None",
    ]
    kept, none_keys = cli._none_overrides(argv)
    assert kept == [
        "prog",
        "--config.train.num_steps=5",
        "--config.optimizer.clip_global_norm=1.0",
    ]
    assert none_keys == ["optimizer.clip_value"]


def test_an_unknown_key_set_to_none_is_named_with_its_section(monkeypatch, capsys):
    # config_flags reads the overrides from sys.argv, `=None` ones included, and fails on an
    # unknown key (an AttributeError holding the bare key); the key was then looked up among
    # the overrides left once the `=None` ones were taken out, and named bare: 'hidden_sise'.
    def config_flags(argv):
        try:
            hint = 'Did you mean "hidden_size" instead of "hidden_sise"?'
            raise KeyError(f"'hidden_sise'\n{hint}")
        except KeyError as inner:
            raise AttributeError(inner) from inner

    monkeypatch.setattr(cli.flags, "FLAGS", config_flags)
    with pytest.raises(SystemExit) as info:
        cli._parse_flags(["prog", "--config.model.hidden_sise=None"])
    assert info.value.code == exits.REFUSED
    assert "'model.hidden_sise' (Did you mean" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, code, err",
    [
        # an override below a field that is no section (`--config.seed.x=1`): its own text
        (
            AttributeError("Attribute <class 'int'>.x does not exist"),
            2,
            "config error: unknown "
            "key in the command line overrides: Attribute <class 'int'>.x does not exist\n",
        ),
        # any other flag error as absl's own parser reports it (exit 1)
        (
            cli.flags.IllegalFlagValueError("flag --num_processes=abc: not an int"),
            1,
            "FATAL Flags parsing error: flag --num_processes=abc: not an int\nPass --helpshort",
        ),
        (cli.flags.IllegalFlagValueError("two\nlines"), 1, "\n  two\n  lines\nPass --helpshort"),
    ],
)
def test_flag_errors_that_name_no_config_key(monkeypatch, capsys, error, code, err):
    def flag_values(argv):
        raise error

    monkeypatch.setattr(cli.flags, "FLAGS", flag_values)
    with pytest.raises(SystemExit) as info:
        cli._parse_flags(["prog", "--config.seed.x=1"])
    assert info.value.code == code
    assert err in capsys.readouterr().err


def test_a_workdir_that_is_a_file_is_a_flag_error(tmp_path):
    # `--workdir` naming a file (or a path below one) ran, compiled and then died with a
    # NotADirectoryError traceback (exit 1) at its checkpoint directory; `cli.main` exits 2
    # with this message (the ValueError path of the empty --workdir=).
    file = tmp_path / "results.json"
    file.write_text("{}")
    for workdir in (file, file / "run"):
        with pytest.raises(ValueError, match=r"--workdir=.*results.json' is a file"):
            check_workdir(str(workdir))
    with pytest.raises(ValueError, match="must name a run directory"):
        check_workdir(" ")
    check_workdir(str(tmp_path / "new" / "run"))  # to be created: fine
    assert list(tmp_path.iterdir()) == [file]  # the write test left nothing behind


def test_a_workdir_nothing_can_be_written_in_is_a_flag_error():
    # /proc takes no new files, even from root (whom os.access and mode bits let through):
    # the run, the main job and launch.sweep ended in a PermissionError traceback.
    with pytest.raises(ValueError, match=r"--workdir='/proc/rnn_jax/run': cannot write in '/proc'"):
        check_workdir("/proc/rnn_jax/run")


def test_nesterov_without_momentum_or_with_another_optimiser_is_a_config_error():
    """optax.sgd and optax.rmsprop ignore nesterov=True without momentum (and adam has none):
    the flag did nothing, silently."""
    from rnn_jax.train import config_checks

    for name, momentum in (("sgd", 0.0), ("rmsprop", 0.0), ("adam", 0.9)):
        config = _config()
        config.optimizer.update(name=name, momentum=momentum, nesterov=True)
        with pytest.raises(ValueError, match=r"optimizer.nesterov=True with optimizer.name="):
            config_checks.validate(config)
    config.optimizer.update(name="sgd", momentum=0.9)
    config_checks.validate(config)


class _TerminatedStream(Stream):
    """The regression stream that receives SIGTERM while it serves batch `at` + 1 (that step:
    3 by default)."""

    def __init__(self, at=2):
        super().__init__()
        self.at = at

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            if index == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


class _TerminatedRegression(Regression):
    def __init__(self, at=2):
        super().__init__()
        self.at = at

    def train_data(self):
        return _TerminatedStream(self.at)


def test_sigterm_saves_the_step_it_stopped_at(tmp_path):
    # The subprocess test (test_train_runtime) signals after a periodic checkpoint and can
    # stop at one: a stop that saved nothing went unnoticed there. Step 3 is no periodic step.
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit, match=r"stopped by SIGTERM at step 3; checkpoint saved"):
        train_and_evaluate(_config(train__num_steps=5), tmp_path, _TerminatedRegression())
    assert signal.getsignal(signal.SIGTERM) is handler
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]
    assert not (tmp_path / "results.json").exists()


def test_a_refused_resume_leaves_the_best_checkpoints_as_they_were(tmp_path):
    """Stopped at step 7 with best checkpoints at 5, 6 and 7, a resume refused (a run cannot
    be shortened) closed its Checkpointer, which pruned best 5 and 6: a refused run must
    leave the run directory as it was."""
    from rnn_jax.train import config as cfg

    config = _config(train__num_steps=20, train__eval_every=1)  # every evaluation improves
    with pytest.raises(SystemExit, match="stopped by SIGTERM at step 7"):
        train_and_evaluate(config, tmp_path, _TerminatedRegression(at=6))

    def listing():
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    before = listing()
    assert {"best/5", "best/6", "best/7"} <= set(before)
    with pytest.raises(cfg.ConfigError, match="train.num_steps=6"):
        train_and_evaluate(_config(train__num_steps=6, train__eval_every=1), tmp_path, Regression())
    assert listing() == before


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        # optax computes in float32: an eps of 1e39 is inf there (every update 0: the run
        # trained nothing, silently), 1e-46 is 0 (0/0 = NaN for a parameter with no gradient
        # yet), as is a learning rate of 1e-46 (no update at all).
        ("eps", 1e39, "a number in [1.401e-45, 3.403e+38] (> 0 and finite in float32)"),
        ("eps", 1e-46, "a number in [1.401e-45, 3.403e+38] (> 0 and finite in float32)"),
        ("learning_rate", 1e-46, "a number in [1.401e-45, 3.403e+38]"),
        # 0.99999999 is 1.0 in float32: Adam's bias correction 1 - b2**t is 0, updates NaN.
        ("b2", 0.99999999, "a number in [0, 1 - 2**-24] (below 1 in float32)"),
        ("b1", 0.999999999, "a number in [0, 1 - 2**-24] (below 1 in float32)"),
        # a clipping threshold of 1e-50 is 0 there: clipping by it zeroed every update
        ("clip_global_norm", 1e-50, "None or a number in [1.401e-45, 3.403e+38]"),
        ("clip_value", 1e39, "None or a number in [1.401e-45, 3.403e+38]"),
    ],
)
def test_optimizer_values_that_are_0_1_or_inf_in_float32_are_refused(key, value, allowed):
    with pytest.raises(ValueError) as info:
        _validate(**{f"optimizer__{key}": value})
    assert f"optimizer.{key}={value!r}: must be {allowed}" in str(info.value)


def test_the_float32_bounds_of_the_optimizer_rules_are_allowed():
    _validate(optimizer__eps=1.401298464324817e-45, optimizer__learning_rate=3.4028234663852886e38)
    _validate(optimizer__b1=1 - 2**-24, optimizer__b2=1 - 2**-24)
    _validate(optimizer__name="sgd", optimizer__momentum=1 - 2**-24)
    assert np.float32(1 - 2**-24) < 1 and np.float32(1.401298464324817e-45) > 0


def test_step_keys_differ_by_step_replica_and_stream():
    """A step key that ignored the step drew the same dropout mask at every step (a fixed
    thinned network, not dropout), silently; each replica and stream draws its own numbers,
    and a step's key is a pure function of (base key, step), so a resumed run draws the same."""
    from rnn_jax.train import seeds

    base = seeds.base_keys(0, 2)
    keys = [seeds.step_key(b, s) for b in base for s in (0, 1)] + [seeds.init_key(b) for b in base]
    assert len({tuple(np.asarray(k)) for k in keys}) == 6
    assert np.array_equal(seeds.step_key(base[1], 1), keys[3])


def test_cli_main_refuses_positional_arguments_and_names_data_missing_inside_a_run(
    tmp_path, monkeypatch, capsys
):
    """`cli.main`'s own `_main` (absl's app.run and the flags faked): a positional argument is
    refused in one line naming it, exit 2; a DataNotFoundError raised inside `run` (a grid
    experiment loads each point's data there) is a setting to fix, exit 2 naming the path."""
    import types

    import ml_collections

    from rnn_jax.data.data_files import DataNotFoundError

    values = dict(coordinator_address=None, num_processes=None, process_id=None)
    monkeypatch.setattr(cli, "define_flags", lambda: None)
    monkeypatch.setattr(
        cli,
        "flags",
        types.SimpleNamespace(
            FLAGS=types.SimpleNamespace(
                config=ml_collections.ConfigDict({"malloc": "default"}),
                workdir=str(tmp_path / "run"),
                initialization_timeout=300,
                **values,
            )
        ),
    )
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    mains = []
    monkeypatch.setattr(cli.app, "run", lambda main, flags_parser: mains.append(main))
    missing = tmp_path / "data" / "point_3.txt"

    def run(config, workdir, task):
        assert task == "task"
        raise DataNotFoundError(f"data file {str(missing)!r} does not exist")

    cli.main(lambda config: "task", run=run, trains=False)
    # Positional arguments are the program's refusal (exit 2, one line), not absl's usage
    # error (exit 1 after the module's help)
    with pytest.raises(SystemExit) as info:
        mains[0](["prog", "extra"])
    assert info.value.code == exits.REFUSED
    assert capsys.readouterr().err == "unexpected arguments: ['extra']\n"
    with pytest.raises(SystemExit) as info:
        mains[0](["prog"])
    assert info.value.code == exits.REFUSED
    message = f"task data not found: data file {str(missing)!r} does not exist\n"
    assert capsys.readouterr().err == message
    assert not (tmp_path / "run").exists()


def test_a_rerun_leaves_no_record_of_what_it_does_not_continue(tmp_path):
    """(a) A finished run extended by a larger train.num_steps kept its results.json (the
    "done" marker) while it trained again: killed midway, the run read as finished with the
    old final beside the new config.json, and sweeps skipped it. (b) A run killed before its
    first checkpoint left metrics.jsonl and TensorBoard records that a fresh start under
    another config appended to: the old run's step-5 evaluation stayed in the curves."""
    extended = tmp_path / "extended"
    train_and_evaluate(
        _config(train__num_steps=8, train__checkpoint_every=4), extended, Regression()
    )
    assert (extended / "results.json").is_file()
    with pytest.raises(_Crash):  # dies in step 11, after the step-8 checkpoint
        train_and_evaluate(
            _config(train__num_steps=12, train__checkpoint_every=4),
            extended,
            _CrashingRegression(crash_at=3),
        )
    assert not (extended / "results.json").exists()

    fresh = tmp_path / "fresh"
    with pytest.raises(_Crash):  # dies in step 9: evaluated at 5, no checkpoint written
        train_and_evaluate(_config(train__checkpoint_every=50), fresh, _CrashingRegression(9))
    assert metric_series(fresh / "metrics.jsonl", "valid_loss")[0][0] == 5
    assert not list((fresh / "checkpoints").iterdir())
    train_and_evaluate(
        _config(train__num_steps=8, train__eval_every=4, optimizer__learning_rate=0.5),
        fresh,
        Regression(),
    )
    assert [s for s, _ in metric_series(fresh / "metrics.jsonl", "valid_loss")] == [4, 8]
    assert len(list((fresh / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_run_that_only_reads_a_finished_run_skips_the_resume_check(tmp_path, monkeypatch):
    """The language model's `--sample` with a config other than the run's was told "resuming
    would mix two runs ... use a new --workdir": nothing resumes, and its restore names the
    difference itself. `reads_only` skips the resume check; a training run keeps it."""
    import types

    import ml_collections

    values = dict(coordinator_address=None, num_processes=None, process_id=None)
    config = ml_collections.ConfigDict({"malloc": "default"})
    namespace = types.SimpleNamespace(
        config=config, workdir=str(tmp_path / "run"), initialization_timeout=300, **values
    )
    monkeypatch.setattr(cli, "define_flags", lambda: None)
    monkeypatch.setattr(cli, "flags", types.SimpleNamespace(FLAGS=namespace))
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    checked, ran = [], []
    monkeypatch.setattr(cli.saved_config, "check_resumable", lambda *args: checked.append(args))
    mains = []
    monkeypatch.setattr(cli.app, "run", lambda main, flags_parser: mains.append(main))
    for reads_only in (None, lambda: False, lambda: True):
        run = lambda config, workdir, task: ran.append(task)  # noqa: E731
        cli.main(lambda config: "task", run=run, trains=False, reads_only=reads_only)
        mains.pop()(["prog"])
    assert len(checked) == 2 and ran == ["task"] * 3
