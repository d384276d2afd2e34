"""experiments.reproduce (the main job) and its scripts.

With fake experiments: the report names experiments that failed or were skipped, one
experiment's broken answers() do not cost the whole report, a stalled run is restarted by the
watchdog (which counts and kills an experiment's children too), another variant's results are
never reused. Its flag checks and stops (a closed terminal, a second interrupt), its report
written whole and the data root it hands to experiments; scripts/reproduce.sh's and
scripts/setup_env.sh's arguments and environment, and the Python version the pinned packages
need."""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from importlib import metadata

import pytest

from experiments import reproduce, reproduce_report, reproduce_run, reproduce_variants
from rnn_jax import exits
from rnn_jax.train import config_keys

REPO = pathlib.Path(__file__).resolve().parents[1]


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
    code = reproduce_run._run_watched(
        [sys.executable, "-c", parent], tmp_path, "parent", start, stall_s=2.5, poll_s=0.2
    )
    assert code == 0


@pytest.mark.parametrize("exits", [False, True], ids=["stalled", "exited"])
def test_watchdog_kills_a_stalled_experiment_s_children_too(tmp_path, exits):
    """Killing only the experiment left its child running (orphaned, writing into the
    workdir, holding memory) while the restart started another; so did an experiment that
    exited (crashed, or killed by the OOM killer) with a child still running."""
    pid_file = tmp_path / "child_pid"
    sleeper = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {sleeper!r}])"
    if exits:  # starts the child, waits until it has written its pid, exits 3 without it
        parent = (
            "import os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {sleeper!r}])\n"
            f"while not (os.path.exists({str(pid_file)!r}) and open({str(pid_file)!r}).read()):\n"
            "    time.sleep(0.01)\n"
            "sys.exit(3)"
        )
    stall_s = 0.0 if exits else 1.0  # an exiting parent is not to be taken for a stalled one
    code = reproduce_run._run_watched(
        [sys.executable, "-c", parent], tmp_path, "parent", time.monotonic(), stall_s, 0.2
    )
    assert code == (3 if exits else reproduce_run.STALLED)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, 9)
    assert not alive, f"the {'exited' if exits else 'stalled'} experiment's child survived it"


def test_an_orphan_s_exit_does_not_make_a_busy_experiment_look_stalled(tmp_path, monkeypatch):
    """The group's CPU sum drops when an orphan in it exits (reparented, its time leaves the
    group); progress is then measured from the drop, not from the higher sum before it. A
    fake clock ticks once per reading: no waiting."""
    readings = iter([10.0, 10.0, 2.0] + [2.0 + 0.6 * i for i in range(1, 20)])
    monkeypatch.setattr(reproduce_run, "_cpu_seconds", lambda pid: next(readings))
    monkeypatch.setattr(reproduce_run, "_kill_group", lambda process, signum: None)
    ticks = iter(range(1000))
    monkeypatch.setattr(reproduce_run, "time", types.SimpleNamespace(monotonic=lambda: next(ticks)))

    class Busy:  # busy for 15 polls, then exits 0
        pid, polls = -1, 0

        def wait(self, timeout=None):
            self.polls += 1
            if timeout is None or self.polls > 15:
                return 0
            raise subprocess.TimeoutExpired("experiment", timeout)

    assert reproduce_run._watch(Busy(), tmp_path, "busy", 0.0, stall_s=10.0, poll_s=0.0) == 0


def test_reproduce_does_not_reuse_another_variant_s_results(tmp_path):
    """`--variant=smoke` then the default quick into the same --workdir reported smoke's
    results as quick's (results.json was the only check), under a `:quick` command line."""
    workdir = tmp_path / "language_model"
    workdir.mkdir()
    reproduce_variants.record_variant(workdir, "smoke")
    (workdir / "results.json").write_text(json.dumps({"final": {"test_loss": 1.5}}))
    assert reproduce_variants.finished_variant(workdir) == "smoke"
    text, _ = reproduce_report.experiment_section("language_model", workdir)
    assert "language_model.py:smoke`" in text and ":quick" not in text
    assert "- test_loss: 1.5\n" in text  # no table: its final scalars are listed
    (workdir / reproduce_variants.VARIANT_FILE).unlink()  # a run from before variants were recorded
    text, _ = reproduce_report.experiment_section("language_model", workdir)
    assert "language_model.py:<variant not recorded>`" in text and ":quick" not in text
    reproduce_variants.record_variant(workdir, "smoke")
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


def test_a_finished_run_whose_config_changed_since_is_not_reused(tmp_path, monkeypatch, capsys):
    """A finished experiment is skipped by its results.json: one run under a config whose
    values changed since (a pull that changed the variant) was reported as the current
    config's. The record of a run from before configs were recorded is compared by variant."""
    from experiments.configs import sentiment

    ran = _record_runs(monkeypatch)
    workdir = tmp_path / "sentiment"
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps({"final": {"test_accuracy": 0.5}}))
    then = config_keys.flatten(json.loads(sentiment.get_config("smoke").to_json_best_effort()))

    def record(**config):
        text = json.dumps({"variant": "smoke", **({"config": config} if config else {})})
        (workdir / reproduce_variants.VARIANT_FILE).write_text(text)

    record(**{**then, "train.num_steps": 7})
    assert run_main(monkeypatch, workdir=str(tmp_path)) == 2 and ran == []
    now = then["train.num_steps"]
    assert f"sentiment (train.num_steps: 7 then, {now} now)" in capsys.readouterr().err
    # not selected: left out of the report (skipped), not reported as this config's
    assert run_main(monkeypatch, workdir=str(tmp_path), only=["word_order"]) is None
    assert "## `sentiment`\n\nSkipped (--only/--skip)" in (tmp_path / "report.md").read_text()
    record(**then)  # the same config: reused
    assert run_main(monkeypatch, workdir=str(tmp_path)) is None and ran == ["word_order"]
    record()  # no config recorded (a run from before they were): by variant alone
    assert run_main(monkeypatch, workdir=str(tmp_path)) is None and ran == ["word_order"]


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
    assert reproduce.select(names, None, ["language_model"]) == [
        n for n in names if n != "language_model"
    ]
    # `--only=` (an unset shell variable) parsed to [] and ran all 14 experiments
    with pytest.raises(ValueError, match=r"--only= names no experiment"):
        reproduce.select(names, [], [])
    # every experiment skipped: exit 0 with a report of none, and --variant=bogus unchecked
    with pytest.raises(ValueError, match=r"--skip=.* leaves no experiment to run"):
        reproduce.select(names, None, names)
    reproduce.check_variant(names, "smoke")  # every experiment has smoke and quick
    reproduce.check_variant(names, "quick")


def _fake_run(name, workdir, variant, index, stall_s=0.0, max_restarts=5):
    """initialization fails (exit 3) without results.json, sentiment exits 0 without it
    (which `run_experiment` returns as NO_RESULTS), language_model finishes."""
    workdir.mkdir(parents=True, exist_ok=True)
    reproduce_variants.record_variant(workdir, variant)
    if name == "initialization":
        return 1.0, 3
    if name == "sentiment":
        return 1.0, reproduce_run.NO_RESULTS
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
    # An experiment that exits 0 without its results.json failed too (the job exited 0).
    code = _reproduce(root, "sentiment")
    assert code and "failed: sentiment" in str(code)
    section = (root / "report.md").read_text().split("## `sentiment`")[1].split("## `")[0]
    assert "**FAILED in this run**: it exited with status 0 but wrote no results.json" in section


def test_an_experiment_redone_alone_keeps_the_others_finished_runs_in_the_report(
    tmp_path, monkeypatch, _reproduce
):
    """Redoing one experiment with --only rewrote report.md without the experiments that had
    finished earlier in the same workdir; they are reported as they stand (same variant)."""
    root = tmp_path / "reproduce"
    ran, fake = [], reproduce.run_experiment
    monkeypatch.setattr(
        reproduce, "run_experiment", lambda n, *a, **k: ran.append(n) or fake(n, *a, **k)
    )
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
    _reproduce(root, "language_model,initialization")
    assert ran == ["language_model", "initialization", "initialization"]  # finished: not redone
    # Finished under another variant: not reported as this one's (--variant=smoke here).
    reproduce_variants.record_variant(root / "language_model", "quick")
    _reproduce(root, "initialization")
    assert "## `language_model`\n\nSkipped (--only/--skip)" in (root / "report.md").read_text()


def test_a_stalled_experiment_is_restarted_and_then_reported_as_stalled(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def stalls(command, workdir, label, start, stall_s, lock):
        calls.append(command)
        if len(calls) < 3:
            return reproduce_run.STALLED
        (workdir / "results.json").write_text("{}")
        return 0

    monkeypatch.setattr(reproduce_run, "_run_watched", stalls)
    workdir = tmp_path / "sentiment"
    _, code = reproduce_run.run_experiment("sentiment", workdir, "quick", "[1/1]", 60.0, 5)
    assert code == 0 and len(calls) == 3  # two stalls, each followed by a restart
    assert calls[0][-1] == "--config=experiments/configs/sentiment.py:quick"
    log = (workdir / "log.txt").read_text()
    assert "killed (attempt 1)" in log and "killed (attempt 2)" in log
    record = json.loads((workdir / reproduce_variants.VARIANT_FILE).read_text())
    assert record == {
        "variant": "quick",
        "config": reproduce_variants.variant_config("sentiment", "quick"),
    }

    calls.clear()
    _, code = reproduce_run.run_experiment("sentiment", workdir, "quick", "[1/1]", 60.0, 1)
    assert code == reproduce_run.STALLED and len(calls) == 2  # the first run and one restart
    assert "sentiment: FAILED (stalled 2 times;" in capsys.readouterr().out  # not "exit -1000"
    text, answers = reproduce_report.experiment_section("sentiment", workdir, code)
    assert answers == {} and "stalled (no CPU time) on its last attempt" in text
    calls.clear()
    monkeypatch.setattr(reproduce_run, "_run_watched", lambda *args, lock: calls.append(args) or 3)
    _, code = reproduce_run.run_experiment("sentiment", workdir, "quick", "[1/1]", 60.0, 5)
    assert code == 3 and len(calls) == 1  # a crash is a failure, not a stall: not restarted


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
    (workdir / "sentiment.md").write_text(
        "# Accuracy\n\n| split | accuracy |\n|---|---|\n| test | 0.8 |\n"
    )
    (workdir / "curve.png").write_bytes(b"")
    text = reproduce_report.write_report(tmp_path, ["sentiment"], {})
    assert "Its answers could not be read (TypeError: unsupported operand)" in text
    assert "| test | 0.8 |" in text  # its tables are still reported
    # under the section's "## `sentiment`"; the plot's path from report.md's folder
    assert "\n### Accuracy\n" in text and "![curve.png](sentiment/curve.png)" in text
    assert (tmp_path / "report.md").read_text() == text
    (workdir / "results.json").write_text("[0.8]")  # JSON, not an object: was a traceback
    text, _ = reproduce_report.experiment_section("sentiment", workdir)
    assert "Its results.json could not be read (ValueError: not a JSON object but list)" in text


def run_main(monkeypatch, argv=("reproduce",), **values) -> int | str | None:
    """`reproduce.main` in this process with these flag values (the others: the command line's
    defaults, but --only=sentiment --variant=smoke); its exit status, None when it returns.
    The SIGTERM/SIGHUP handlers it installs are put back."""
    defaults = dict(
        workdir="runs/reproduce",
        only=["sentiment"],
        skip=[],
        variant="smoke",
        stall_minutes=2.0,
        max_restarts=5,
    )
    fake = types.SimpleNamespace(FLAGS=types.SimpleNamespace(**{**defaults, **values}))
    monkeypatch.setattr(reproduce, "flags", fake)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        reproduce.main(list(argv))
    except SystemExit as stopped:
        return stopped.code
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return None


def _record_runs(monkeypatch) -> list[str]:
    """Fakes `run_experiment` as a run that succeeds (exit 0, a results.json); -> the names."""
    ran = []

    def run(name, workdir, *args, **kwargs):
        ran.append(name)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "results.json").write_text("{}")
        return 0.0, 0

    monkeypatch.setattr(reproduce, "run_experiment", run)
    return ran


def test_bad_flags_exit_2_and_an_empty_or_file_workdir_is_refused(tmp_path, monkeypatch, capsys):
    """An empty --workdir resolved to the current directory: every experiment's folder and
    report.md were written there (the checkout, under scripts/reproduce.sh); a --workdir that
    is a file ended in a FileExistsError traceback. Bad flag values exited 1, like a failed
    experiment, where the experiments' own CLIs exit 2."""
    ran = _record_runs(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert run_main(monkeypatch, workdir="") == exits.REFUSED == 2
    assert "--workdir=''" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert run_main(monkeypatch, workdir="a_file/sub") == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert run_main(monkeypatch, only=["no_such_experiment"]) == 2
    assert run_main(monkeypatch, variant="qiuck") == 2
    assert run_main(monkeypatch, stall_minutes=float("nan")) == 2  # would disable the watchdog
    assert run_main(monkeypatch, max_restarts=-1) == 2
    capsys.readouterr()
    # a positional argument: one line, exit 2 (it was absl's usage text, exit 1)
    assert run_main(monkeypatch, argv=["reproduce", "quick"]) == 2
    assert capsys.readouterr().err == "experiments.reproduce: unexpected arguments: ['quick']\n"
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    finished = tmp_path / "runs" / "sentiment"  # a finished run of another variant
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    reproduce_variants.record_variant(finished, "quick")
    assert run_main(monkeypatch, workdir="runs", variant="smoke") == 2 and ran == []
    assert "sentiment (quick)" in capsys.readouterr().err


def test_a_sighup_ignored_by_the_caller_stays_ignored(tmp_path, monkeypatch):
    """`nohup bash scripts/reproduce.sh &` must survive the terminal closing."""
    ran = _record_runs(monkeypatch)
    installed = []  # recorded, not installed in this process
    monkeypatch.setattr(signal, "signal", lambda s, h: installed.append((s, h)))
    monkeypatch.setattr(signal, "getsignal", lambda s: signal.SIG_IGN)  # as nohup leaves it
    assert run_main(monkeypatch, workdir=str(tmp_path / "reproduce")) is None and ran
    stops = [s for s, handler in installed if handler is reproduce._exit_on_sigterm]
    assert stops == [signal.SIGTERM]


DRIVER = """
import os, sys, time
from absl import app
from experiments import reproduce, reproduce_run

def run_child(name, workdir, variant, index, stall_s=0.0, max_restarts=5):
    workdir.mkdir(parents=True, exist_ok=True)
    child = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    command = [sys.executable, "-c", child]
    return 0.0, reproduce_run._run_watched(command, workdir, name, time.monotonic(), 0.0, 0.05)

reproduce.run_experiment = run_child
reproduce.define_flags()
app.run(reproduce.main, argv=["reproduce", *sys.argv[1:]])
"""


DEFAULT_SIGHUP = (
    "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_a_closed_terminal_stops_the_running_experiment(tmp_path, repo_root):
    """SIGHUP (the terminal or ssh session of `bash scripts/reproduce.sh` closing) killed the
    main job but not the experiment, which runs in a session of its own: it went on writing
    into its workdir, and a rerun started a second trainer on the same directory."""
    root = tmp_path / "reproduce"
    job = subprocess.Popen(
        # SIGHUP's default disposition, as from a terminal: a suite run under `nohup` passes
        # SIG_IGN down, which the job rightly keeps (the test below), and this test hung. Reset
        # by a wrapper that execs the job (a Popen preexec_fn forks a multithreaded process).
        [sys.executable, "-c", DEFAULT_SIGHUP, "-c", DRIVER, f"--workdir={root}"]
        + ["--only=sentiment", "--variant=smoke"],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = root / "sentiment" / "log.txt"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not log.is_file():
        job.kill()
        pytest.fail(f"the experiment never started: {job.communicate()[1][-2000:]}")
    child = int(log.read_text().split()[0])
    job.send_signal(signal.SIGHUP)
    _, err = job.communicate(timeout=60)
    alive = True
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        alive = False
    if alive:  # what the test found: clean up the orphan before failing
        os.kill(child, signal.SIGKILL)
    assert not alive, "the experiment outlived the main job"
    assert job.returncode != 0 and "stopped by SIGHUP" in err
    assert not (root / "report.md").exists()


def _copy_setup_env(tmp_path: pathlib.Path, repo_root: pathlib.Path) -> pathlib.Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(repo_root / "scripts" / "setup_env.sh", tmp_path / "scripts")
    return tmp_path / "scripts" / "setup_env.sh"


def test_setup_env_refuses_an_unknown_set_and_an_old_python(tmp_path, repo_root):
    """`setup_env.sh devv` installed the runtime set only, without the test tools, and
    exited 0; a Python older than the pinned packages need failed later in pip with "no
    matching distribution found for jax==0.10.2"."""
    script = _copy_setup_env(tmp_path, repo_root)  # a checkout without .venv
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\nexec " + sys.executable + ' -c "import sys; sys.exit(1)" "$@"\n')
    old.chmod(0o755)
    env = {**os.environ, "PYTHON": str(old)}
    bad = subprocess.run(["bash", script, "devv"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "devv" in bad.stderr and "runtime" in bad.stderr
    too_old = subprocess.run(["bash", script, "dev"], capture_output=True, text=True, env=env)
    assert too_old.returncode == 2 and "Python >= 3.11" in too_old.stderr
    assert not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("pip_missing", [False, True], ids=["python_gone", "pip_missing"])
def test_setup_env_rebuilds_a_venv_whose_python_is_gone(tmp_path, repo_root, pip_missing):
    """A .venv whose python no longer runs (its base interpreter removed or upgraded) was
    re-made in place: its stamp survived, so nothing was installed and the script exited 0
    (or venv kept the dangling link and pip failed). It is rebuilt with `venv --clear`, as is
    one whose python runs without pip (a set-up interrupted inside `venv`: every rerun failed
    with "No module named pip")."""
    script = _copy_setup_env(tmp_path, repo_root)
    for name in ("requirements.txt", "requirements-dev.txt", "setup.cfg", "pyproject.toml"):
        shutil.copy(repo_root / name, tmp_path)
    digest = subprocess.run(
        "cat requirements.txt requirements-dev.txt setup.cfg pyproject.toml | sha256sum",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".rnn_jax-runtime.stamp").write_text(digest + "\n")
    if pip_missing:  # a set-up interrupted between venv's python and its pip
        (tmp_path / ".venv" / "bin").mkdir()
        (tmp_path / ".venv" / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    log = tmp_path / "log.txt"
    # A stand-in for the base python: `-c` checks pass, `-m venv` acts as venv does (--clear
    # empties the folder first) and leaves a python that logs its arguments.
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -c ] && exit 0\n'
        'case " $* " in *" --clear "*) rm -rf .venv;; esac\n'
        f"mkdir -p .venv/bin && printf '#!/bin/sh\\necho \"$@\" >> {log}\\n' > .venv/bin/python\n"
        "chmod +x .venv/bin/python\n"
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", script], env={**os.environ, "PYTHON": str(fake)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "-m pip install -q -r requirements.txt" in log.read_text()


def test_python_requires_matches_what_the_pinned_packages_need(repo_root):
    """setup.cfg (and the README) said Python >= 3.10, which no pin of requirements.txt
    installs on (numpy 2.4, scipy 1.17, jax 0.10 need 3.11)."""
    cfg = configparser.ConfigParser()
    cfg.read(repo_root / "setup.cfg")
    floor = re.fullmatch(r">=(\d+)\.(\d+)", cfg["options"]["python_requires"].strip())
    floor = tuple(int(x) for x in floor.groups())
    script = (repo_root / "scripts" / "setup_env.sh").read_text()
    assert f"Python >= {floor[0]}.{floor[1]}" in script and f"{floor}" in script
    pins = re.findall(r"^([\w.-]+)==", (repo_root / "requirements.txt").read_text(), flags=re.M)
    for name in pins:
        try:
            needs = metadata.metadata(name).get("Requires-Python") or ""
        except metadata.PackageNotFoundError:
            continue
        for low in re.findall(r">=\s*(\d+)\.(\d+)", needs):
            assert tuple(int(x) for x in low) <= floor, f"{name} needs Python {needs}"


def test_a_relative_data_root_means_the_callers_directory(tmp_path, monkeypatch):
    """Experiments run in the checkout (cwd=REPO): a relative RNN_JAX_DATA given to the main
    job from another directory named a folder inside the checkout instead."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNN_JAX_DATA", "shared/data")
    child = "import os; print(os.path.abspath(os.environ['RNN_JAX_DATA']))"
    code = reproduce_run._run_watched(
        [sys.executable, "-c", child], tmp_path, "child", time.monotonic(), 0.0, 0.05
    )
    assert code == 0
    assert (tmp_path / "log.txt").read_text().split() == [str(tmp_path / "shared" / "data")]


def test_reproduce_sh_keeps_a_relative_data_root_the_callers(tmp_path, repo_root):
    """scripts/reproduce.sh changes to the checkout first: a relative RNN_JAX_DATA then named
    a folder inside the checkout, not beside the caller."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(repo_root / "scripts" / "reproduce.sh", checkout / "scripts")
    (checkout / "scripts" / "setup_env.sh").write_text("")  # the environment is not the test
    (checkout / ".venv" / "bin").mkdir(parents=True)
    fake = checkout / ".venv" / "bin" / "python"
    fake.write_text('#!/bin/sh\necho "$RNN_JAX_DATA $*"\n')
    fake.chmod(0o755)
    caller = tmp_path / "caller"
    caller.mkdir()
    result = subprocess.run(
        ["bash", checkout / "scripts" / "reproduce.sh", "--only=sentiment"],
        cwd=caller,
        env={**os.environ, "RNN_JAX_DATA": "shared/data"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(caller / "shared" / "data"),
        "-m",
        "experiments.reproduce",
        "--only=sentiment",
    ]


def test_the_report_is_replaced_whole(tmp_path):
    """report.md was rewritten in place (truncated, then written): a stop (SIGTERM, SIGHUP)
    while it was written left a half report; it is now written beside and renamed over, so a
    reader of the old file keeps the old file whole."""
    (tmp_path / "report.md").write_text("old report\n")
    with open(tmp_path / "report.md") as reader:
        text = reproduce_report.write_report(tmp_path, [], {})
        assert reader.read() == "old report\n"
    assert (tmp_path / "report.md").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary left


def test_a_second_interrupt_during_the_grace_period_still_kills_the_experiment():
    """A second Ctrl-C (or SIGTERM) while `_stop` waited out the experiment's grace period
    left before the SIGKILL: an experiment that ignores SIGTERM (a wedged XLA process) stayed
    running, orphaned in its own session."""
    child = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout.readline().strip() == "ready"

    def second_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, second_interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            reproduce_run._stop(process, grace_s=30.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        process.kill()
        process.stdout.close()


def test_stop_kills_after_the_grace_period_and_the_children_of_an_exited_experiment():
    """`_stop`: an experiment that ignores SIGTERM is SIGKILLed once the grace period runs
    out; one that has already exited has the children it left in its group killed."""
    ignores = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    exited = subprocess.Popen(
        ["sh", "-c", "sleep 60 >/dev/null & echo $!"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert ignores.stdout.readline().strip() == "ready"
        start = time.monotonic()
        reproduce_run._stop(ignores, grace_s=0.2)
        assert ignores.returncode == -signal.SIGKILL and time.monotonic() - start >= 0.2
        orphan = int(exited.stdout.readline())
        assert exited.wait(timeout=10) == 0 and _alive(orphan)
        reproduce_run._stop(exited)  # returns at once: no grace period for an exited process
        deadline = time.monotonic() + 10
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(orphan)
    finally:
        for process in (ignores, exited):
            process.kill()
            process.stdout.close()


def test_a_held_run_lock_an_unmakeable_folder_and_missing_results_each_fail_alone(
    tmp_path, monkeypatch, capsys
):
    """Two main jobs on one workdir trained one experiment side by side (orbax's temporary
    checkpoint folders collided); a file where an experiment's folder goes was a traceback
    that ended the job; an exit 0 without results.json printed "done"."""
    from rnn_jax.files import lock_run

    workdir = tmp_path / "sentiment"
    workdir.mkdir()
    held = lock_run(workdir)  # another main job, or an experiment a killed one left running
    monkeypatch.setattr(reproduce_run, "_run_watched", lambda *args, lock: pytest.fail("started"))
    try:
        _, code = reproduce_run.run_experiment("sentiment", workdir, "quick", "[1/3]")
    finally:
        os.close(held)
    assert code == reproduce_run.IN_USE
    assert "sentiment: NOT RUN: " in capsys.readouterr().out
    (tmp_path / "initialization").write_text("a file")
    _, code = reproduce_run.run_experiment(
        "initialization", tmp_path / "initialization", "quick", ""
    )
    assert code == reproduce_run.NOT_STARTED
    assert "initialization: FAILED (not started: [Errno 17] File exists" in capsys.readouterr().out
    monkeypatch.setattr(reproduce_run, "_run_watched", lambda *args, lock: 0)
    _, code = reproduce_run.run_experiment("sentiment", workdir, "quick", "[3/3]")
    assert code == reproduce_run.NO_RESULTS
    assert "sentiment: FAILED (exit 0 without results.json;" in capsys.readouterr().out
    for code in (reproduce_run.IN_USE, reproduce_run.NOT_STARTED):
        text, _ = reproduce_report.experiment_section("sentiment", workdir, code)
        assert "**FAILED in this run**: it " in text and "status -100" not in text


_DRIVER = """
import sys, time
from experiments import reproduce_run
from rnn_jax.files import lock_run
workdir = __import__("pathlib").Path(sys.argv[1])
child = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
reproduce_run._run_watched(
    [sys.executable, "-c", child], workdir, "x", time.monotonic(), 0.0, 0.05,
    lock=lock_run(workdir),
)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_experiment_does_not_outlive_a_main_job_killed_by_sigkill(tmp_path, repo_root):
    """SIGKILL (or SIGQUIT) of the main job left its experiment training on, holding the run
    lock, and a rerun of the job would have found the run in use."""
    from rnn_jax.files import run_in_use

    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(tmp_path)], cwd=repo_root, start_new_session=True
    )
    log = tmp_path / "log.txt"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert run_in_use(tmp_path)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    assert not run_in_use(tmp_path)


@pytest.mark.parametrize(
    "results",
    [
        {"final": {"a": 1.0}, "timing": None},
        {"final": [1.0]},
        {"final": {"a": 1.0}, "timing": {"wall_s": "12"}},
    ],
    ids=["timing_null", "final_list", "wall_text"],
)
def test_a_results_json_with_odd_members_does_not_cost_the_report(tmp_path, results):
    """`"timing": null`, a `final` list and a wall time in quotes were tracebacks that lost
    the whole report after every experiment had run."""
    workdir = tmp_path / "sentiment"
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps(results))
    text, _ = reproduce_report.experiment_section("sentiment", workdir)
    assert "Command: `python -m experiments.sentiment" in text and " min)" not in text
    if isinstance(results["final"], list):
        assert "`final` is not an object: '[1.0]'" in text
