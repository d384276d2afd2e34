"""Review of launch/ and experiments.reproduce: a finished run is reused only under the
settings it ran with, None overrides, the watchdog's process tree, and the multi-host recipe's
commands against what the code accepts."""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from experiments import reproduce
from launch import sweep
from tests.module_cli import run_module

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "experiments/configs/initialization.py:smoke"


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
    first = run_sweep_cli(
        f"--config={SMOKE}", f"--workdir={root}", "--set=train.num_steps=5", "--dry_run"
    )
    assert first.returncode == 0, first.stderr
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


def test_a_finished_run_of_another_variant_with_the_same_name_is_refused(tmp_path):
    """language_model's smoke and quick sweeps name their runs alike (the same dropout rate):
    a quick sweep in a smoke root reported the smoke runs as quick's."""
    root = tmp_path / "root"
    smoke = sweep.plan_runs("experiments/configs/language_model.py:smoke", root)
    quick = sweep.plan_runs("experiments/configs/language_model.py:quick", root)
    assert [r.name for r in smoke] == [r.name for r in quick]
    sweep.write_sweep_file(root, "experiments/configs/language_model.py:smoke", smoke)
    (smoke[0].workdir).mkdir()
    (smoke[0].workdir / "results.json").write_text('{"final": {}}')
    with pytest.raises(ValueError, match="finished under other settings.*:smoke"):
        sweep.check_finished_runs(root, quick)
    sweep.check_finished_runs(root, smoke)  # the same plan: fine


def test_a_plan_with_other_run_names_in_between_does_not_erase_the_record(tmp_path):
    """sweep.json held only the latest plan: a sweep with other run names written into the
    root in between left a finished run unrecorded, and a later plan under other settings
    skipped it as done."""
    root = tmp_path / "root"
    smoke = sweep.plan_runs("experiments/configs/language_model.py:smoke", root)
    quick = sweep.plan_runs("experiments/configs/language_model.py:quick", root)
    sweep.write_sweep_file(root, "experiments/configs/language_model.py:smoke", smoke)
    (smoke[0].workdir).mkdir()
    (smoke[0].workdir / "results.json").write_text('{"final": {}}')
    renamed = [dataclasses.replace(r, name=f"other_{r.name}") for r in quick]
    sweep.write_sweep_file(root, "experiments/configs/language_model.py:quick", renamed)
    with pytest.raises(ValueError, match="finished under other settings.*:smoke"):
        sweep.check_finished_runs(root, quick)
    sweep.check_finished_runs(root, smoke)
    record = json.loads((root / "sweep.json").read_text())
    assert [r["name"] for r in record["runs"]] == [r.name for r in renamed]  # what report reads


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


def test_a_none_sweep_value_reaches_the_run_as_none_and_the_rules_judge_it(tmp_path):
    """`--config.k=None` was the text "None" to config_flags (a float placeholder failed to
    parse once the run started), so None could only be swept where it was the default. The
    run's command line now reads "None" as None (rnn_jax.train.cli), the sweep passes it, and
    every point is checked against the experiment's rules before anything runs."""
    config_arg = config_with_sweep(
        tmp_path, {"optimizer.clip_global_norm": [None, 5.0], "model.init_scale": [None]}
    )
    runs = sweep.plan_runs(config_arg, tmp_path / "root")
    assert [r.name for r in runs] == [
        "clip_global_norm=None,init_scale=None",
        "clip_global_norm=5.0,init_scale=None",
    ]
    assert "--config.optimizer.clip_global_norm=None" in runs[0].command
    assert "--config.optimizer.clip_global_norm=5.0" in runs[1].command
    bad = config_with_sweep(tmp_path / "bad", [{"model.cell": None}])
    with pytest.raises(ValueError, match=r"(?s)sweep point .*model.cell=None: must be one of"):
        sweep.plan_runs(bad, tmp_path / "root2")
    bad = config_with_sweep(tmp_path / "bad2", {"model.hidden_size": [8, 0]})
    with pytest.raises(ValueError, match=r"model.hidden_size=0: must be"):
        sweep.plan_runs(bad, tmp_path / "root3")
    assert not (tmp_path / "root2").exists() and not (tmp_path / "root3").exists()


def _alive(pid):
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_watchdog_counts_the_cpu_of_an_experiment_s_children(tmp_path):
    """An experiment that waits on a busy child process (throughput's spawned peak-RSS
    measurements) used no CPU of its own and was killed as stalled after `stall_s`."""
    busy = "import time\nt = time.time()\nwhile time.time() - t < 5: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}], check=True)"
    start = time.monotonic()
    code = reproduce._run_watched(
        [sys.executable, "-c", parent], tmp_path, "parent", start, stall_s=2.5, poll_s=0.2
    )
    assert code == 0


def test_watchdog_kills_a_stalled_experiment_s_children_too(tmp_path):
    """Killing only the experiment left its child running (orphaned, writing into the
    workdir, holding memory) while the restart started another."""
    pid_file = tmp_path / "child_pid"
    sleeper = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {sleeper!r}])"
    code = reproduce._run_watched(
        [sys.executable, "-c", parent], tmp_path, "parent", time.monotonic(), 1.0, 0.2
    )
    assert code == reproduce.STALLED
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, 9)
    assert not alive, "the stalled experiment's child survived the watchdog"


def test_reproduce_does_not_reuse_another_variant_s_results(tmp_path):
    """`--variant=smoke` then the default quick into the same --workdir reported smoke's
    results as quick's (results.json was the only check), under a `:quick` command line."""
    workdir = tmp_path / "language_model"
    workdir.mkdir()
    reproduce.record_variant(workdir, "smoke")
    (workdir / "results.json").write_text(json.dumps({"final": {"test_loss": 1.5}}))
    assert reproduce.finished_variant(workdir) == "smoke"
    text, _ = reproduce.experiment_section("language_model", workdir)
    assert "language_model.py:smoke`" in text and ":quick" not in text
    driver = (
        "import sys\n"
        "from absl import app\n"
        "from experiments import reproduce\n"
        "reproduce.define_flags()\n"
        "sys.argv = ['reproduce', '--workdir=" + str(tmp_path) + "', '--only=language_model']\n"
        "app.run(reproduce.main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "language_model" in result.stderr and "smoke" in result.stderr
    assert json.loads((workdir / "results.json").read_text())["final"] == {"test_loss": 1.5}


def _multihost(*args, **env):
    return subprocess.run(
        ["bash", str(REPO / "launch/multihost.sh"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DRY_RUN": "1", **env},
    )


def test_multihost_refuses_a_url_workdir():
    """The runtime's workdir is a local path: `gs://bucket/rva` became the directory
    `gs:/bucket/rva` on each worker's own disk (no shared checkpoints, no resume)."""
    result = _multihost(
        "tpu", "rnn_vs_attention", "full", "gs://bucket/rva", TPU_NAME="t", ZONE="z"
    )
    assert result.returncode != 0 and "gs://bucket/rva" in result.stderr
    ok = _multihost("tpu", "rnn_vs_attention", "full", "/mnt/shared/rva", TPU_NAME="t", ZONE="z")
    assert ok.returncode == 0 and "--workdir=/mnt/shared/rva" in ok.stdout


def _batch_sizes(name, variant):
    from rnn_jax.train import cli

    config = cli.load_config(f"experiments/configs/{name}.py:{variant}")
    sizes = [config.train.batch_size]
    if "eval_batch_size" in config.get("data", {}):
        sizes.append(config.data.eval_batch_size)
    return sizes


def test_multihost_recipe_examples_fit_their_device_counts():
    """The recipe's `sbatch --nodes=N --gpus-per-node=G ... multihost.sh slurm EXP VARIANT`
    must name a config whose batches divide over N x G devices (the runtime refuses others):
    it showed language_model full (batch 20, eval 8) on 4 x 8 GPUs."""
    text = (REPO / "launch/multihost.md").read_text()
    examples = re.findall(
        r"sbatch --nodes=(\d+) --gpus-per-node=(\d+).*?multihost\.sh slurm (\w+) (\w+)",
        text,
        re.S,
    )
    assert examples
    for nodes, gpus, name, variant in examples:
        devices = int(nodes) * int(gpus)
        for size in _batch_sizes(name, variant):
            assert size % devices == 0, (name, variant, size, devices)


def test_grid_mean_std_says_when_seeds_are_left_out():
    """A diverged seed used to vanish: [1, nan, 3] read '2 ± 1' with no count."""
    from experiments import grid

    assert grid.mean_std([1.0, 3.0]) == "2 ± 1"
    assert grid.mean_std([1.0, float("nan"), 3.0]) == "2 ± 1 (2/3 seeds)"
    assert grid.mean_std([1.0, float("inf")], "note") == "1 ± 0 (1/2 seeds; note)"
    assert grid.mean_std([2.0], "note") == "2 ± 0 (note)"
    assert grid.mean_std([float("nan")]) == "–"


def test_a_failed_run_is_reported_with_the_last_line_of_its_log(tmp_path, capsys):
    """A failed point printed only its exit code and log path; the error was one `cat` away."""
    script = "import sys; print('step 1'); sys.exit('experiment: model.hidden_size=-1 refused')"
    run = sweep.Run("bad", tmp_path / "bad", {}, (sys.executable, "-c", script))
    assert sweep.run_local([run], parallel=1) == [run]
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "bad: FAILED" in line)
    assert f"FAILED (exit 1, log {run.workdir / 'log.txt'}): experiment: model.hidden_size" in line


def test_runs_sharing_a_gpu_do_not_preallocate(monkeypatch):
    """Two runs per GPU each preallocated 75% of its memory: the second ran out of memory."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert sweep._slots(0) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = sweep._slots(4)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in shared] == ["0", "1", "0", "1"]
    assert all(s["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for s in shared)


def test_stored_nulls_read_back_as_nan():
    """results.json stores a non-finite measurement as null (`finite_or_none`); reading it
    back gives NaN, in lists and in lists of rows, and `mean_std` counts it as left out."""
    import numpy as np

    from experiments import grid

    np.testing.assert_array_equal(grid.none_to_nan([1, None, 2.5]), [1.0, np.nan, 2.5])
    rows = grid.none_to_nan([[1.0, None], [None, 4.0]])
    assert rows.dtype == np.float64 and rows.shape == (2, 2)
    np.testing.assert_array_equal(rows, [[1.0, np.nan], [np.nan, 4.0]])
    assert grid.nan_mean([1.0, None, 3.0]) == 2.0
    assert np.isnan(grid.nan_mean([None, None]))
    assert grid.mean_std([1.0, None, 3.0]) == "2 ± 1 (2/3 seeds)"


def test_best_within_spread_against_a_seed_by_seed_definition():
    """The ranking the answers use (exposure bias's best regime and generator, translation's
    best BLEU): on random per-seed tables, with nulls and fully diverged runs, the best is the
    key with the best mean of its finite seeds, and a key is within its spread unless every
    finite seed of the best is better than every finite seed of that key, each with at least
    two (one seed has no spread to be beyond). A diverged run is
    never best and never within the spread, whichever position it has."""
    import itertools
    import math

    import numpy as np

    from experiments import grid

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 5))
        table = {}
        for key in range(n):
            seeds = [float(v) for v in rng.integers(0, 6, size=3)]
            for _ in range(2):  # one or two seeds lost; one finite seed has no spread
                if rng.random() < 0.3:
                    seeds[int(rng.integers(3))] = None
            if rng.random() < 0.15:
                seeds = [None, None, None]
            table[f"run{key}"] = seeds
        if all(all(v is None for v in seeds) for seeds in table.values()):
            continue
        for higher in (False, True):
            best, tied = grid.best_within_spread(table, higher_is_better=higher)
            finite = {k: [v for v in s if v is not None] for k, s in table.items()}
            means = {k: sum(v) / len(v) for k, v in finite.items() if v}
            target = (max if higher else min)(means.values())
            assert finite[best] and math.isclose(means[best], target), (trial, table)
            expected = []
            for key, values in finite.items():
                if key == best or not values:
                    continue
                pairs = itertools.product(finite[best], values)
                apart = min(len(finite[best]), len(values)) >= 2 and all(
                    (b > v) if higher else (b < v) for b, v in pairs
                )
                if not apart:
                    expected.append(key)
            assert tied == expected, (trial, higher, table)
    diverged_first = {"a": [None, None], "b": [2.0, 3.0], "c": [1.0, 1.5]}
    assert grid.best_within_spread(diverged_first) == ("c", [])
    assert grid.best_within_spread(diverged_first, higher_is_better=True) == ("b", [])
    assert grid.ranking_mean([None, float("nan")]) == math.inf


def test_reproduce_refuses_an_unknown_variant_or_only_and_skip_naming_one_experiment(tmp_path):
    """A misspelt --variant started every experiment (each failed on its own), leaving
    workdirs, logs, a variant record and a report of failures; --only=x --skip=x silently ran
    nothing and wrote an empty report with exit status 0."""
    root = tmp_path / "reproduce"
    driver = (
        "import sys\n"
        "from absl import app\n"
        "from experiments import reproduce\n"
        "reproduce.define_flags()\n"
        f"sys.argv = ['reproduce', '--workdir={root}'] + sys.argv[1:]\n"
        "app.run(reproduce.main)\n"
    )
    for args, message in [
        (["--only=initialization", "--variant=quik"], "--variant=quik: unknown to the config"),
        (["--only=initialization", "--skip=initialization"], "--only and --skip both name"),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", driver, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert not root.exists()
    names = reproduce.experiment_names()
    assert reproduce.select(names, ["initialization"], ["language_model"]) == ["initialization"]
    reproduce.check_variant(names, "smoke")  # every experiment has smoke and quick
    reproduce.check_variant(names, "quick")
