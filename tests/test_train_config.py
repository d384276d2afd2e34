"""Config loading and validation: bad configs fail before compilation, naming key, value, rule."""

import re
import subprocess
import sys

import pytest

from experiments.language_model_task import RULES
from rnn_jax import exits
from rnn_jax.train import cli, config_checks, config_keys, optim, saved_config
from rnn_jax.train import config as cfg
from rnn_jax.train.rules import int_at_least
from tests.module_cli import refused_cli

SPEC = "experiments/configs/language_model.py:smoke"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, repo_root):
    monkeypatch.chdir(repo_root)


def _load(**overrides):
    return cli.load_config(SPEC, {k.replace("__", "."): v for k, v in overrides.items()}, RULES)


def test_every_variant_is_valid_and_has_the_required_keys():
    for variant in ("smoke", "quick", "full"):
        config = cli.load_config(f"experiments/configs/language_model.py:{variant}", {}, RULES)
        for key in (
            "seed",
            "model.hidden_size",
            "train.num_steps",
            "train.batch_size",
            "train.checkpoint_every",
            "train.log_every",
        ):
            assert config_keys.lookup(config, key) is not None
    smoke = _load()
    assert smoke.train.batch_size % 8 == 0 and smoke.data.eval_batch_size % 8 == 0
    assert smoke.train.log_every <= 10


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("model.hidden_size", -4, "> 0"),
        ("train.batch_size", 0, "> 0"),
        ("model.dropout_input", 1.0, "[0, 1)"),
        ("model.recurrent_dropout", -0.1, "[0, 1)"),
        ("optimizer.clip_global_norm", 0.0, "None or a number in [1.401e-45"),
        ("optimizer.clip_value", -1.0, "None or a number in [1.401e-45"),
        ("optimizer.name", "adamax", "one of 'sgd'"),
        ("schedule.name", "linear", "one of 'constant'"),
        ("schedule.decay_rate", 1.5, "in (0, 1]"),  # a step "decay" that grows the rate
        ("optimizer.learning_rate", float("nan"), "> 0"),
        ("optimizer.learning_rate", 1e300, "finite in float32"),
        # the device's step counter is int32: 10**23 steps failed after writing the run
        ("train.num_steps", 2**31, "[1, 2147483647] (the step counter is int32)"),
        ("malloc", "jemalloc", "one of 'default', 'retain'"),
    ],
)
def test_out_of_range_values_name_key_value_and_rule(key, value, allowed):
    with pytest.raises(ValueError) as info:
        _load(**{key.replace(".", "__"): value})
    message = str(info.value)
    assert f"{key}={value!r}" in message and allowed in message


def test_unknown_key_and_wrong_type_fail():
    with pytest.raises(ValueError, match=r"'train.nm_steps' \(value 3\) does not exist"):
        _load(train__nm_steps=3)
    with pytest.raises(ValueError, match="'train.num_steps': value 'many' has the wrong type"):
        _load(train__num_steps="many")


def test_unknown_variant_lists_the_allowed_ones():
    # the config's own ConfigError as it came (not wrapped as "get_config('tiny') raised")
    allowed = "^config 'language_model': unknown variant 'tiny'; allowed: smoke, quick, full"
    with pytest.raises(ValueError, match=allowed):
        cli.load_config("experiments/configs/language_model.py:tiny")


def test_missing_config_file_is_a_value_error_naming_it():
    # load_config's callers (tests, sweeps) catch ValueError; a missing file raised
    # FileNotFoundError from inside importlib instead.
    with pytest.raises(ValueError, match="config file 'experiments/configs/nope.py' not found"):
        cli.load_config("experiments/configs/nope.py:smoke")


def test_a_config_file_in_a_folder_with_a_colon_is_read(tmp_path):
    """`launch.sweep` passes the resolved path (`/scratch/run:2/.../x.py:smoke`); split at the
    first ':' (config_flags), the file was '/scratch/run' and every run of the sweep refused."""
    folder = tmp_path / "run:2"
    folder.mkdir()
    copy = folder / "language_model.py"
    copy.write_text(open("experiments/configs/language_model.py").read())
    cli._check_config_file(["prog", f"--config={copy}:smoke"])  # no exit
    want = cli.load_config(SPEC, rules=RULES).to_dict()
    assert cli._ConfigFileParser().parse(f"{copy}:smoke").to_dict() == want
    assert cli.load_config(f"{copy}:smoke", rules=RULES).to_dict() == want
    with pytest.raises(ValueError, match=re.escape(f"config file '{tmp_path}/nope.py' not")):
        cli.load_config(f"{tmp_path}/nope.py:smoke")
    # `--config <spec>` and `-config=<spec>` are read as absl reads them; none after a `--`
    argv = ["prog", "--config", f"{copy}:smoke", f"-config={SPEC}", "--", "--config=x.py"]
    assert cli._config_specs(argv) == [f"{copy}:smoke", SPEC]
    assert cli._config_specs(["prog", "--config"]) == []
    assert cli._ConfigFileParser().flag_type() == "config object"  # absl's --helpfull


def test_cosine_warmup_must_be_shorter_than_the_run():
    with pytest.raises(ValueError, match=r"schedule.warmup_steps=50: must be fewer than the 40"):
        _load(schedule__name="cosine", schedule__warmup_steps=50)


@pytest.mark.parametrize("schedule", ["constant", "plateau", "step_decay"])
def test_every_warmup_must_be_shorter_than_the_run(schedule):
    """The smoke run has 40 updates: a 40-update ramp ends at 39/40 of the rate (only cosine
    was refused before). 39 updates reach the rate at the last one."""
    # (a step decay's warm-up must also end before its first decayed update, 34 + 5, so
    # there the longest is 38)
    decays = dict(schedule__decay_every_steps=5, schedule__decay_begin_step=34)
    decays = decays if schedule == "step_decay" else {}
    with pytest.raises(ValueError, match=r"schedule.warmup_steps=40: must be fewer than the 40 "):
        _load(schedule__name=schedule, schedule__warmup_steps=40, **decays)
    longest = 38 if schedule == "step_decay" else 39
    assert _load(schedule__name=schedule, schedule__warmup_steps=longest, **decays)
    # In updates: 40 steps accumulated 2 at a time are 20 updates.
    with pytest.raises(ValueError, match=r"warmup_steps=20: must be fewer than the 20 optimiser"):
        _load(schedule__warmup_steps=20, train__grad_accum_steps=2)


def test_a_plateau_schedule_must_be_able_to_reduce_within_the_run():
    """40 updates, windows of 10, patience 3: the first window sets the best, so a flat loss is
    reduced at update 10 * 4 - 1 = 39, the last; patience 4 could never act (it was accepted
    and the rate stayed constant). optax's own count is in test_train_optim."""
    plateau = dict(schedule__name="plateau", schedule__plateau_accumulation_steps=10)
    assert _load(schedule__plateau_patience=3, **plateau)
    with pytest.raises(
        ValueError,
        match=r"plateau_accumulation_steps=10 with schedule.plateau_patience=4: the earliest "
        r"reduced update, 49 \(counting from 0\), must come before the end of the 40 ",
    ):
        _load(schedule__plateau_patience=4, **plateau)


def test_step_decay_must_decay_within_the_run():
    """The first decayed update is decay_begin_step + decay_every_steps (counting from 0): of
    the smoke run's 40 updates (0..39), 39 is the last that can be it."""
    with pytest.raises(
        ValueError,
        match=r"schedule.decay_begin_step=30 with schedule.decay_every_steps=10: the first "
        r"decayed update, 40 \(counting from 0\), must come before the end of the 40 ",
    ):
        _load(
            schedule__name="step_decay",
            schedule__decay_begin_step=30,
            schedule__decay_every_steps=10,
        )
    config = _load(
        schedule__name="step_decay",
        schedule__decay_begin_step=30,
        schedule__decay_every_steps=9,
        schedule__decay_rate=0.5,
    )
    schedule = optim.build_schedule(config)
    rate = config.optimizer.learning_rate
    assert [float(schedule(38)), float(schedule(39))] == pytest.approx([rate, 0.5 * rate])
    # Only step_decay reads the decay keys: a constant schedule with them is not refused.
    assert _load(schedule__decay_begin_step=30, schedule__decay_every_steps=10)


def test_schedules_that_would_not_decay_as_stated_are_refused():
    """A warm-up past the first decayed update (10 + 5) ramped to the rate, then dropped at
    once to the decays already due; one ending at it (15) never reached the rate (0.93 of it,
    then the decayed 0.5); a cosine end_value above the rate raised it."""
    step = dict(schedule__name="step_decay", schedule__decay_begin_step=10)
    config = _load(schedule__warmup_steps=14, schedule__decay_every_steps=5, **step)
    rate = config.optimizer.learning_rate
    assert float(optim.build_schedule(config)(14)) == pytest.approx(rate)
    for warmup in (15, 16):
        with pytest.raises(
            ValueError,
            match=rf"schedule.warmup_steps={warmup} with schedule.decay_begin_step=10 and "
            r"schedule.decay_every_steps=5: the warm-up must end before the first decayed "
            r"update, 15",
        ):
            _load(schedule__warmup_steps=warmup, schedule__decay_every_steps=5, **step)
    with pytest.raises(
        ValueError, match=r"schedule.end_value=0.5 with optimizer.learning_rate=0.1: the cosine"
    ):
        _load(schedule__name="cosine", schedule__end_value=0.5, optimizer__learning_rate=0.1)
    assert _load(schedule__name="cosine", schedule__end_value=0.1, optimizer__learning_rate=0.1)


def test_no_committed_config_has_a_warmup_or_decay_beyond_its_run():
    """Every variant of every experiment config, and truncated_bptt's per-k point configs
    (which scale the schedule by the windows per sequence), pass the schedule checks."""
    import importlib
    import pkgutil

    import experiments.configs
    from experiments import truncated_bptt

    checked = 0
    for module_info in pkgutil.iter_modules(experiments.configs.__path__):
        module = importlib.import_module(f"experiments.configs.{module_info.name}")
        for variant in getattr(module, "VARIANTS", {}):
            config = module.get_config(variant)
            if "schedule" not in config:
                continue
            configs = [config]
            if module_info.name == "truncated_bptt":
                configs += [
                    truncated_bptt.point_config(config, k)
                    for k in truncated_bptt.bptt_lengths(config)
                ]
            for point in configs:
                assert config_checks._schedule_problems(point) == [], (module_info.name, variant)
                checked += 1
    assert checked > 30


def test_decoupled_weight_decay_needs_adamw():
    with pytest.raises(ValueError, match="decoupled decay needs 'adamw'"):
        _load(optimizer__decoupled_weight_decay=0.1, optimizer__name="adam")
    assert _load(optimizer__decoupled_weight_decay=0.1, optimizer__name="adamw")


def test_sweep_overrides_are_valid_configs():
    import importlib

    module = importlib.import_module("experiments.configs.language_model")
    for variant in ("smoke", "quick", "full"):
        sweep = module.get_sweep(variant)
        assert len(sweep) >= 2 and len({tuple(sorted(s.items())) for s in sweep}) == len(sweep)
        for overrides in sweep:
            cli.load_config(f"experiments/configs/language_model.py:{variant}", overrides, RULES)


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--config.train.nm_steps=3", "nm_steps"),
        ("--config.optimizer.clip_global_norm=-5", "optimizer.clip_global_norm=-5.0"),
        ("--config.malloc=tcmalloc", "malloc='tcmalloc'"),
    ],
)
def test_command_line_errors_exit_non_zero_before_compiling(tmp_path, flag, expected):
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.language_model",
            f"--workdir={workdir}",
            f"--config={SPEC}",
            flag,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert not workdir.exists()  # stopped before the run started


@pytest.mark.parametrize(
    "args, expected",
    [
        # An empty --workdir would write the run into the current directory (the checkout).
        (["--workdir=", f"--config={SPEC}"], "--workdir='': must name a run directory"),
        # A missing config file: one line naming it, not config_flags' list of missing flags.
        (
            ["--workdir={w}", "--config=experiments/configs/nope.py:smoke"],
            "config file 'experiments/configs/nope.py' not found",
        ),
        # A variant the config file lacks: one line listing the variants, not a traceback.
        (
            ["--workdir={w}", "--config=experiments/configs/language_model.py:tiny"],
            "config 'language_model': unknown variant 'tiny'; allowed: smoke, quick, full",
        ),
        # Found when the task loads its corpus, before anything is compiled or written.
        (
            ["--workdir={w}", f"--config={SPEC}", "--config.data.eval_batch_size=4096"],
            "data.eval_batch_size=4096 with data.bptt_length=16: the 'valid' split",
        ),
        (
            ["--workdir={w}", f"--config={SPEC}", "--config.data.bptt_length=5000"],
            "train.batch_size=16 with data.bptt_length=5000: the 'train' split",
        ),
        # Checked against the metrics evaluation will give, before the first step.
        (
            ["--workdir={w}", f"--config={SPEC}", "--config.train.best_metric=valid_los"],
            "train.best_metric='valid_los': must be one of the evaluation metrics [",
        ),
    ],
)
def test_bad_workdir_config_file_and_data_sizes_exit_2_before_writing(tmp_path, args, expected):
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.language_model"]
        + [a.replace("{w}", str(workdir)) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == exits.REFUSED, proc.stderr[-2000:]
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


BAD_CONFIG_FILES = [
    # was "unknown key in the command line overrides: module 'config_config' has no ..."
    ("X = 1\n", "", "bad.py' defines no get_config function"),
    # was "unknown key in the command line overrides: 'b'"
    ("def get_config(v):\n    return {}[v]\n", ":b", "get_config('b') raised KeyError"),
    # a traceback, exit status 1
    ("def get_config(v)\n", "", "bad.py' failed to load: SyntaxError"),
    # absl's "flag --config=None: Flag --config must have a value other than None", exit 1
    ("def get_config():\n    pass\n", "", "get_config() returned None (a missing return"),
    # a traceback inside absl's usage error, exit status 1
    ("def get_config():\n    pass\n", ":smoke", "give the file without ':smoke'"),
    # `x.py:` asks for variant '' as the CLI and launch.sweep read it (was get_config())
    ("def get_config(v='quick'):\n    return {}[v]\n", ":", "get_config('') raised KeyError"),
    # the line in the file where it was raised, not where get_config called into it
    ("def f(v):\n    return {}[v]\n\ndef get_config(v):\n    return f(v)\n", ":b", "py, line 2)"),
    # a dict is no ConfigDict (accepted, the CLI's lock() would be an AttributeError traceback)
    ("def get_config():\n    return {'a': 1}\n", "", "returned dict {'a': 1}, not an ml_collec"),
    # a variant it needs, not given: the hint names the file
    ("def get_config(v):\n    return {}[v]\n", "", "(missing a required argument: 'v'); give /"),
    # a builtin has no signature to check: called as it is
    ("get_config = dict\n", "", "get_config() returned dict {}, not an ml_collections"),
]


@pytest.mark.parametrize("source, variant, expected", BAD_CONFIG_FILES[:2])
def test_a_config_file_that_gives_no_config_is_named_exit_2(tmp_path, source, variant, expected):
    """A --config file that exists but gives no ConfigDict: one line naming the file (and the
    variant), exit status 2, nothing written (the CLI's parser and `load_config` share
    `config_file.read_config_file`: the other cases are checked in-process below). A missing file
    and an unknown variant are in
    `test_bad_workdir_config_file_and_data_sizes_exit_2_before_writing`."""
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    stderr = refused_cli("experiments.language_model", f"{bad}{variant}", tmp_path / "w")
    assert f"config error: config file '{bad}'" in stderr, stderr[-2000:]
    assert expected in stderr and len(stderr.strip().splitlines()) == 1, stderr[-2000:]


@pytest.mark.parametrize("source, variant, expected", BAD_CONFIG_FILES)
def test_load_config_names_a_config_file_that_gives_no_config(tmp_path, source, variant, expected):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    with pytest.raises(cfg.ConfigError, match=re.escape(expected)) as caught:
        cli.load_config(f"{bad}{variant}")
    assert str(caught.value).startswith(f"config file '{bad}'")
    assert "\n" not in str(caught.value)


def test_resuming_with_another_config_is_refused_naming_the_keys(tmp_path):
    """A run directory with checkpoints resumes only under the config it was written with, up
    to the keys a resumed run may change (how long it runs, how often it logs and saves)."""
    config = _load()
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    # no checkpoints: nothing to mix
    saved_config.check_resumable(tmp_path, _load(model__hidden_size=16))
    # A run killed during its first save left only orbax's temporary directory: the run
    # starts afresh (the Checkpointer sees no step), so any config may (it was refused).
    (tmp_path / "checkpoints" / "20.orbax-checkpoint-tmp-1733489000").mkdir(parents=True)
    saved_config.check_resumable(tmp_path, _load(model__hidden_size=16))
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    saved_config.check_resumable(tmp_path, config)
    saved_config.check_resumable(tmp_path, _load(train__num_steps=400, train__eval_every=7))
    other = dict(model__hidden_size=16, optimizer__name="sgd", seed=config.seed + 1)
    with pytest.raises(cfg.ConfigError) as info:
        saved_config.check_resumable(tmp_path, _load(train__batch_size=8, **other))
    message = str(info.value)
    hidden = config.model.hidden_size
    assert f"model.hidden_size: {hidden!r} in {tmp_path / 'config.json'}, now 16" in message
    changed = [line.split(":")[0].strip() for line in message.splitlines() if line[:2] == "  "]
    assert changed == ["model.hidden_size", "optimizer.name", "seed", "train.batch_size"], message
    # A grid's axes only select its points (`SELECTION_PREFIXES`): narrowing them may resume.
    flat = config_keys.flatten(config.to_dict())
    narrowed = {**flat, "grid.cells": "lstm"}
    assert saved_config.run_changes({**flat, "grid.cells": "lstm,gru"}, narrowed, tmp_path) == []


def test_resuming_a_cosine_run_refuses_a_new_num_steps(tmp_path):
    """The cosine schedule decays over train.num_steps: a longer run resumed from a shorter
    one's checkpoint used to jump from the old curve to the new one at the resumed step."""
    config = _load(schedule__name="cosine", train__num_steps=300)
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    saved_config.check_resumable(tmp_path, _load(schedule__name="cosine", train__num_steps=300))
    with pytest.raises(cfg.ConfigError, match=r"train.num_steps: 300 .* now 600 \(schedule"):
        saved_config.check_resumable(tmp_path, _load(schedule__name="cosine", train__num_steps=600))
    constant = _load(train__num_steps=300)
    (tmp_path / "config.json").write_text(constant.to_json_best_effort(indent=2))
    saved_config.check_resumable(tmp_path, _load(train__num_steps=600))  # a constant rate may go on


def test_a_run_written_before_an_added_key_resumes_under_its_older_behaviour(tmp_path):
    """A run directory written before a key of `ADDED_KEYS` existed lacks it in config.json:
    it resumes when the key has the value that reproduces the older code, and is refused
    (naming the key) under any other value; a grid point's stored record compares the same."""
    import json

    config = _load()
    stored = json.loads(config.to_json_best_effort())
    for key in config_keys.ADDED_KEYS:
        section, name = key.split(".")
        del stored[section][name]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    saved_config.check_resumable(tmp_path, config)
    assert config.optimizer.decay_params == config_keys.ADDED_KEYS["optimizer.decay_params"]
    with pytest.raises(cfg.ConfigError, match="optimizer.decay_params: '<absent>'"):
        saved_config.check_resumable(tmp_path, _load(optimizer__decay_params="matrices"))
    flat_new = config_keys.flatten(json.loads(config.to_json_best_effort()))
    assert config_keys.changed_keys(config_keys.flatten(stored), flat_new) == []
    # a config without the key's section (a process-only experiment) gains nothing
    assert config_keys.changed_keys({"a": 1}, {"a": 1}) == []


def test_int_at_least_takes_only_integers():
    rule = int_at_least(1)
    assert rule(1) is None and rule(7) is None
    for bad in (0, -3, 2.5, 1.0, True, "2", None):
        assert rule(bad) == "an integer >= 1", bad


def _run_language_model(tmp_path, *flags_):
    return subprocess.run(
        [sys.executable, "-m", "experiments.language_model", f"--workdir={tmp_path / 'w'}"]
        + [f"--config={SPEC}", *flags_],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_none_on_the_command_line_sets_the_field_to_none(tmp_path):
    """config_flags parses `--config.k=None` by the field's type: "could not convert string to
    float: 'None'" for a float, the text 'None' for a str. Now it is None, and the rules judge
    it like any value: clip_global_norm=None (no clipping) passes, cell=None is named. The
    same in absl's flag files (expanded first: a `=None` in one failed to parse, and one on
    the command line before a flag file that set the key won over it)."""
    (tmp_path / "flags.txt").write_text("--config.optimizer.clip_global_norm=None\n")
    proc = _run_language_model(
        tmp_path,
        "--flagfile=" + str(tmp_path / "flags.txt"),
        "--config.model.cell=None",
        "--config.data.root=None",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.cell=None: must be one of" in proc.stderr, proc.stderr[-2000:]
    assert "clip_global_norm" not in proc.stderr and "data.root" not in proc.stderr
    proc = _run_language_model(tmp_path, "--config.train.nm_steps=None")
    assert proc.returncode == 2 and "unknown key" in proc.stderr and "nm_steps" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_none_overrides_last_assignment_wins():
    argv = ["prog", "--config=x.py:smoke", "--config.a.b=None", "--config.c=1", "--config.a.b=2"]
    # the overridden None is dropped too: config_flags cannot parse 'None' for a float field
    kept = ["prog", "--config=x.py:smoke", "--config.c=1", "--config.a.b=2"]
    assert cli._none_overrides(argv) == (kept, [])
    argv = ["prog", "--config.c=1", "--config.a.b=2", "--config.a.b=None", "--config.d=None"]
    assert cli._none_overrides(argv) == (["prog", "--config.c=1"], ["a.b", "d"])
    # absl's other spellings: the value as the next argument, one dash ("could not convert")
    argv = ["prog", "--config.a.b", "None", "-config.c=None", "--config.d", "2", "--", "-x"]
    assert cli._none_overrides(argv) == (["prog", "--config.d=2", "--", "-x"], ["a.b", "c"])
    # a later bare boolean, its --no form, and a value absl takes although it starts with '-'
    # are later assignments too (the key was set to None after them); after `--` nothing is
    # an override (absl: "unexpected arguments"; the key was set to None)
    later = ["--config.a", "--noconfig.b", "--config.c", "-5", "--", "--config.d=None"]
    argv = ["prog", "--config.a=None", "--config.b=None", "--config.c=None", *later]
    assert cli._none_overrides(argv) == (["prog", *later], [])


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.grid.cells=lstm,bogus", "grid.cells='lstm,bogus': unknown ['bogus']"),
        # A value that does not parse as its field's type was absl's usage error (exit 1).
        ("--config.seed=abc", "config error: flag --config.seed=abc: invalid literal"),
    ],
)
def test_a_bad_grid_axis_is_one_line_and_exit_status_2(tmp_path, repo_root, override, message):
    """A grid axis is read in the experiment's `run` (`grid.split_axis`), after the per-key
    rules: it raised ValueError, which ended in a traceback. Now ConfigError: one line naming
    the key, exit status 2, no run directory."""
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.initialization",
            f"--workdir={workdir}",
            "--config=experiments/configs/initialization.py:smoke",
            override,
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == exits.REFUSED, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_an_experiment_that_trains_nothing_needs_no_training_keys():
    """smt_baseline's config (from `process_config`) has no train/optimizer/model keys: with
    `trains=False` only the process's rules and the experiment's apply; the training rules
    would name every key it lacks; the sweep check reads the module's TRAINS."""
    from experiments import smt_baseline
    from launch import plan

    spec = "experiments/configs/smt_baseline.py:smoke"
    assert smt_baseline.TRAINS is False
    config = cli.load_config(spec, {}, smt_baseline.RULES, trains=False)
    assert "train" not in config and "model" not in config and "seed" not in config
    with pytest.raises(ValueError, match=r"model.hidden_size: missing.*\n.*train.num_steps"):
        config_checks.validate(config, smt_baseline.RULES)
    with pytest.raises(ValueError, match=r"malloc='mmap': must be one of"):
        cli.load_config(spec, {"malloc": "mmap"}, smt_baseline.RULES, trains=False)
    plan.check_rules(config, "smt_baseline", {"smt.word_penalty": -0.5})
    bad_point = r"(?s)sweep point .*smt.stack_size=0: must be an integer >= 1"
    with pytest.raises(ValueError, match=bad_point):
        plan.check_rules(config, "smt_baseline", {"smt.stack_size": 0})


def test_an_unknown_override_key_is_named_with_its_section():
    """config_flags' error is an AttributeError holding a KeyError holding the bare key; it
    was printed as the escaped repr of the inner text ('\\'nm_steps\\'\\nDid you mean...'),
    without the key's section."""
    try:
        try:
            try:
                raise KeyError("nm_steps")
            except KeyError as bare:
                hint = '\'nm_steps\'\nDid you mean "num_steps" instead of "nm_steps"?'
                raise KeyError(hint) from bare
        except KeyError as inner:
            raise AttributeError(inner) from inner
    except AttributeError as error:
        message = cli._unknown_key(error, ["prog", "--config.seed=1", "--config.train.nm_steps=3"])
    assert message == '\'train.nm_steps\' (Did you mean "num_steps" instead of "nm_steps"?)'
    # Two overrides end in the bare key: the one the config lacks is named (was the first,
    # 'model.hidden_size', a key that exists).
    bare = KeyError("hidden_size")
    argv = ["p", f"--config={SPEC}", "--config.model.hidden_size=64"]
    argv += ["--config.train.hidden_size=3"]
    assert cli._unknown_key(bare, argv) == "'train.hidden_size'"
    # a mistyped section is named with the rest of the key (was the bare 'trian')
    assert cli._unknown_key(KeyError("trian"), ["p", "--config.trian.num_steps=3"]) == (
        "'trian.num_steps'"
    )
    # a config file that cannot be read: the first override ending in the key is named
    argv = ["p", "--config=/nonexistent/x.py:smoke", "--config.model.hidden_size=64"]
    assert cli._unknown_key(bare, [*argv, "--config.train.hidden_size=3"]) == "'model.hidden_size'"


def test_config_files_sharing_a_stem_stay_apart(tmp_path):
    """`a/quick.py` and `b/quick.py` got one module name: the second load replaced the first
    in `sys.modules`, and a dataclass made by the first no longer pickled."""
    import pickle

    from rnn_jax.train import config_file

    source = "import dataclasses\n\n@dataclasses.dataclass\nclass Point:\n    x: int = {}\n"
    modules = []
    for folder, value in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "quick.py").write_text(source.format(value))
        modules.append(config_file.load_config_file(tmp_path / folder / "quick.py"))
    assert modules[0].__name__ != modules[1].__name__
    assert pickle.loads(pickle.dumps(modules[0].Point())).x == 1
    assert pickle.loads(pickle.dumps(modules[1].Point())).x == 2
