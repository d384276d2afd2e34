"""launch/multihost.sh and its recipe (launch/multihost.md): a failing host fails the run, bad
flags exit 2 naming them, arguments with spaces and quotes pass through unchanged, URL and
empty workdirs are refused, and the recipe's examples fit their device counts."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from rnn_jax.train import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
# PYTHON for the tests that are not about the config check, which runs `$PYTHON -c CHECK`
# (~0.5 s a start): `true` passes it at once (and appears in the printed commands).
NO_CHECK = "true"


def test_multihost_manual_run_fails_when_a_host_fails(tmp_path):
    """`RUN=1 launch/multihost.sh manual ...` starts one ssh per host in the background: a
    bare `wait` returned 0 whatever they returned, so a run whose processes all failed (a
    wrong path, an unreachable coordinator) looked like a success to its caller."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text(
        '#!/usr/bin/env bash\necho "$1" >> "$SSH_LOG"\n[ "$1" = bad ] && exit 7\nexit 0\n'
    )
    (fake / "ssh").chmod(0o755)

    def launch(hosts):
        env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
        env.update(
            PATH=f"{fake}:{env['PATH']}", HOSTS=hosts, RUN="1", SSH_LOG=str(tmp_path / "log")
        )
        env["PYTHON"] = NO_CHECK
        return subprocess.run(
            ["bash", os.path.join(REPO, "launch/multihost.sh"), "manual", "exposure_bias"]
            + ["full", "/shared/eb"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = launch("good0 good1")
    assert ok.returncode == 0, ok.stderr
    failed = launch("good0 bad good1")
    assert failed.returncode == 7, (failed.returncode, failed.stderr)
    assert "bad" in failed.stderr
    assert sorted((tmp_path / "log").read_text().split()) == sorted(
        ["good0", "good1", "good0", "bad", "good1"]
    )


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--coordinator_address=node0", "--num_processes=2", "--process_id=0"), "host:port"),
        (("--num_processes=2",), "num_processes=2"),
    ],
)
def test_bad_multihost_flags_exit_2_naming_them(tmp_path, flags, named):
    """An experiment's command line turned these into a traceback and exit 1: the multi-host
    start-up ran outside the check that gives bad flags exit 2 and one line."""
    from tests.module_cli import refused_cli

    config = "experiments/configs/language_model.py:smoke"
    assert named in refused_cli("experiments.language_model", config, tmp_path / "run", *flags)


def test_multihost_passes_arguments_with_spaces_and_quotes_through_unchanged(tmp_path):
    """The command was assembled as `'${base[*]}'` and eval'ed: an override holding a space or
    a single quote was split or broke the quoting. A fake srun runs the command it is given
    (in a bash that refuses a glob matching nothing: `[1,2]` was left bare, a pattern to the
    remote shell), and a fake python records the argv it receives; a relative workdir is the
    caller's."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/usr/bin/env bash\nshift\nexec "$1" -O failglob "${@:2}"\n')
    (fake / "python").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "open(os.environ['ARGV_LOG'], 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    for name in ("srun", "python"):
        (fake / name).chmod(0o755)
    overrides = ["--config.model.name=a b", '--config.note=it\'s "x" $HOME', "--config.x=[1,2]"]
    caller = tmp_path / "caller"
    caller.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    env.update(
        PATH=f"{fake}:{env['PATH']}", PYTHON=str(fake / "python"), ARGV_LOG=str(tmp_path / "a")
    )
    result = subprocess.run(
        ["bash", os.path.join(REPO, "launch/multihost.sh"), "slurm", "exposure_bias", "full"]
        + ["runs/eb", *overrides],
        cwd=caller,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "a").read_text()) == [
        "-m",
        "experiments.exposure_bias",
        f"--workdir={caller / 'runs/eb'}",
        "--config=experiments/configs/exposure_bias.py:full",
        *overrides,
    ]


def _multihost(*args, **env):
    return subprocess.run(
        ["bash", str(REPO / "launch/multihost.sh"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": NO_CHECK, **env},
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


def test_multihost_refuses_an_empty_workdir(repo_root):
    """launch/multihost.sh made an empty workdir absolute as the caller's directory: every
    host trained and wrote its checkpoints into the checkout."""
    for workdir in ("", "  "):
        result = subprocess.run(
            ["bash", repo_root / "launch" / "multihost.sh", "slurm", "sentiment", "quick", workdir],
            cwd=repo_root,
            env={**os.environ, "DRY_RUN": "1"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and "workdir" in result.stderr and not result.stdout


def test_multihost_manual_refuses_blank_hosts():
    """A blank HOSTS passed `${HOSTS:?}` and failed with 'hosts[0]: unbound variable'."""
    result = _multihost("manual", "sentiment", "quick", "/shared/s", HOSTS=" ")
    assert result.returncode == 2 and "HOSTS=' ' names no host" in result.stderr
    ok = _multihost("manual", "sentiment", "quick", "/shared/s", HOSTS=" h0  h1 ")
    assert ok.returncode == 0 and "h1: cd " in ok.stdout and "--process_id=1" in ok.stdout


def test_multihost_refuses_an_unknown_variant_before_starting_anything():
    """The variant reached every process unchecked: each host's process refused it on its own
    after srun, gcloud or ssh had started them all. It is read as the processes read it
    (rnn_jax's config_file) first: exit 2 naming it, nothing printed or started."""
    result = _multihost("slurm", "sentiment", "[q]uick", "/shared/s", PYTHON=sys.executable)
    assert result.returncode == 2, result.stderr
    assert "unknown variant '[q]uick'; allowed: smoke, quick, full" in result.stderr
    assert not result.stdout


def test_multihost_names_an_interpreter_that_cannot_check_the_config():
    """A PYTHON that cannot run the check (no such file, not the project's environment, one
    that fails with no output) was reported as if the config were wrong: the interpreter's
    traceback, or 'launch/multihost.sh: ' and nothing. It names PYTHON and its last line."""
    for python, said in [("false", "exit status 1: no output"), ("/nonexistent", "127: ")]:
        result = _multihost("slurm", "sentiment", "quick", "/shared/s", PYTHON=python)
        assert result.returncode == 2 and not result.stdout, result
        assert f"launch/multihost.sh: PYTHON='{python}' cannot read the config" in result.stderr
        assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr
