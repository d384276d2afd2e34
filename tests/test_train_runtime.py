"""End-to-end runtime tests: the real CLI (`python -m experiments.language_model`, smoke variant)
in subprocesses: determinism, SIGTERM, SIGKILL + resume, 8 fake devices, two processes.

Every run uses the same overrides (dropout on, so that RNG handling is exercised) and a
persistent XLA compilation cache shared by the session, so only the first run compiles.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "experiments/configs/language_model.py:smoke"
OVERRIDES = [
    "--config.train.num_steps=60",
    "--config.train.checkpoint_every=10",
    "--config.model.dropout_input=0.2",
    "--config.model.dropout_between=0.2",
    "--config.model.dropout_output=0.2",
    "--config.model.recurrent_dropout=0.1",
]
FINAL_STEP = 60
HARD_TIMEOUT = 300  # a hung multi-process run ignores SIGTERM: SIGKILL after this


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


def _env(cache_dir, devices=1):
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return env


def _command(workdir, *extra):
    return [
        sys.executable,
        "-m",
        "experiments.language_model",
        f"--workdir={workdir}",
        f"--config={CONFIG}",
        *OVERRIDES,
        *extra,
    ]


def _start(workdir, cache_dir, *extra, devices=1):
    return subprocess.Popen(
        _command(workdir, *extra),
        cwd=REPO,
        env=_env(cache_dir, devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc, timeout=HARD_TIMEOUT):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"run hung and was killed after {timeout}s:\n{out[-3000:]}")
    return proc.returncode, out


def _run(workdir, cache_dir, *extra, devices=1):
    code, out = _finish(_start(workdir, cache_dir, *extra, devices=devices))
    assert code == 0, out[-3000:]
    return json.loads((workdir / "results.json").read_text())


def _wait_for_checkpoint(proc, workdir, beyond):
    """Block until a complete periodic checkpoint with step > `beyond` exists; return it."""
    deadline = time.monotonic() + HARD_TIMEOUT
    while time.monotonic() < deadline:
        steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
        steps = [s for s in steps if s > beyond]
        if steps:
            return min(steps)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no checkpoint appeared")


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir, step):
    import jax
    import orbax.checkpoint as ocp

    path = workdir / "checkpoints" / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    # Restore onto this process's one device, whatever topology saved it.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
        is_leaf=lambda m: isinstance(m, ocp.metadata.ArrayMetadata),
    )
    restored = checkpointer.restore(path, target)
    return {
        "/".join(str(k) for k in key): np.asarray(v)
        for key, v in _flatten(restored["params"]).items()
    }


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, (*prefix, k)))
        return out
    return {prefix: tree}


@pytest.fixture(scope="session")
def reference(tmp_path_factory, cache_dir):
    """One uninterrupted run: `(workdir, results)`."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, _run(workdir, cache_dir)


def test_reference_run_writes_the_contract_files(reference):
    workdir, results = reference
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == FINAL_STEP
    assert len(json.loads((workdir / "vocab.json").read_text())) == 16
    final = results["final"]
    assert final["step"] == FINAL_STEP
    # Learning happened: from ln 16 = 2.77 towards the entropy rate 1.77.
    assert final["valid_loss"] < 2.3
    assert final["valid_perplexity"] == pytest.approx(np.exp(final["valid_loss"]), rel=1e-12)
    assert {"timing", "provenance"} <= set(results)
    logged = [m["step"] for m in _metrics(workdir) if "train_loss" in m]
    assert logged == list(range(5, FINAL_STEP + 1, 5))
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_reference_run_writes_the_report_table_curves_and_answer(reference):
    from experiments import language_model
    from tests.report_check import assert_png, cell_numbers, table_rows

    workdir, results = reference
    final = results["final"]
    rows = table_rows((workdir / "language_model.md").read_text())
    assert list(rows) == ["train", "valid", "test"]
    for split in ("valid", "test"):
        loss = final[f"{split}_loss"]
        assert cell_numbers(rows[split]["NLL (nats/token)"]) == pytest.approx([loss], rel=1e-3)
        assert cell_numbers(rows[split]["bits/token"]) == pytest.approx([loss / np.log(2)], 1e-3)
        perplexity = cell_numbers(rows[split]["perplexity"])
        assert perplexity == pytest.approx([final[f"{split}_perplexity"]], rel=1e-3)
        # 60 steps already beat the context-free unigram model of the Markov language.
        assert perplexity[0] < cell_numbers(rows[split]["unigram perplexity"])[0]
    assert cell_numbers(rows["train"]["NLL (nats/token)"]) == pytest.approx(
        [final["train_nll"]], rel=1e-3
    )
    assert_png(workdir / "learning_curves.png")
    answer = language_model.answers(workdir)[7]
    assert f"{final['test_loss']:.3f} nats/token (1 seed)" in answer
    assert "language_model.py:smoke with" in answer


def test_same_seed_twice_gives_identical_metrics(reference, tmp_path, cache_dir):
    workdir, results = reference
    again = _run(tmp_path, cache_dir)
    assert again["final"] == results["final"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "learning_rate"} for r in rows]
    assert strip(_metrics(tmp_path)) == strip(_metrics(workdir))


def test_sigterm_saves_then_sigkill_and_resume_equal_an_uninterrupted_run(
    reference, tmp_path, cache_dir
):
    ref_dir, ref_results = reference
    # 1) SIGTERM: the run saves a checkpoint of the step it is at and exits non-zero.
    proc = _start(tmp_path, cache_dir)
    _wait_for_checkpoint(proc, tmp_path, beyond=0)
    os.killpg(proc.pid, signal.SIGTERM)
    code, out = _finish(proc)
    assert code != 0 and "stopped by SIGTERM at step" in out, out[-3000:]
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert (tmp_path / "checkpoints" / str(stopped_at) / "state").is_dir()
    assert not (tmp_path / "results.json").exists()
    # 2) Resume, then SIGKILL (no chance to save) after the next periodic checkpoint.
    proc = _start(tmp_path, cache_dir)
    _wait_for_checkpoint(proc, tmp_path, beyond=stopped_at)
    os.killpg(proc.pid, signal.SIGKILL)
    _finish(proc)
    assert not (tmp_path / "results.json").exists(), "the run ended before it was killed"
    # 3) Resume to the end: bit-identical params and final metrics.
    results = _run(tmp_path, cache_dir)
    assert results["timing"]["resumed_from_step"] > stopped_at
    assert results["final"] == ref_results["final"]
    # Every record any of the three segments logged (steps replayed after the kill included)
    # equals the uninterrupted run's record of that step.
    key = lambda r: (r["step"], tuple(sorted(k for k in r if k != "learning_rate")))
    reference_records = {key(r): r for r in _metrics(ref_dir)}
    for record in _metrics(tmp_path):
        assert record == reference_records[key(record)], record
    got, want = _params(tmp_path, FINAL_STEP), _params(ref_dir, FINAL_STEP)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_eight_fake_devices_match_one_device(reference, tmp_path, cache_dir):
    ref_dir, _ = reference
    # Data parallel over 8 devices, with params and optimiser state split over them too.
    _run(tmp_path, cache_dir, "--config.train.shard_params=True", devices=8)
    got = [m["train_loss"] for m in _metrics(tmp_path) if "train_loss" in m]
    want = [m["train_loss"] for m in _metrics(ref_dir) if "train_loss" in m]
    np.testing.assert_allclose(got, want, rtol=2e-4)
    assert json.loads((tmp_path / "results.json").read_text())["provenance"]["device_count"] == 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_to_the_params_of_one(reference, tmp_path, cache_dir):
    ref_dir, _ = reference
    port = _free_port()
    procs = [
        _start(
            tmp_path,
            cache_dir,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            "--initialization_timeout=60",
        )
        for i in range(2)
    ]
    outcomes = [_finish(p) for p in procs]
    for code, out in outcomes:
        assert code == 0, out[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["provenance"]["process_count"] == 2
    got, want = _params(tmp_path, FINAL_STEP), _params(ref_dir, FINAL_STEP)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # Only process 0 writes: with every process writing, each log line came twice.
    logged = [[m["step"] for m in _metrics(d) if "train_loss" in m] for d in (tmp_path, ref_dir)]
    assert logged[0] == logged[1] and len(set(logged[0])) == len(logged[0]) > 1


def test_best_checkpoint_restores_the_evaluated_model_and_samples(reference, monkeypatch):
    import jax
    import optax

    from experiments.language_model_sampling import generate
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli
    from rnn_jax.train.restore import restore_model

    ref_dir, results = reference
    monkeypatch.chdir(REPO)
    overrides = dict(flag[len("--config.") :].split("=") for flag in OVERRIDES)
    config = cli.load_config(
        CONFIG, {k: float(v) if "." in v else int(v) for k, v in overrides.items()}, RULES
    )
    task = LanguageModelTask(config)
    model, step = restore_model(config, ref_dir, task)
    assert step == results["final"]["best_step"]
    # Re-evaluate the validation stream with a plain loop (no vmap, no sharding).
    nll, tokens, carry = 0.0, 0, None
    for batch in task.eval_data("valid"):
        logits, carry, _ = model(batch["inputs"], carry)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        weights = batch["weights"]
        nll, tokens = nll + float((losses * weights).sum()), tokens + weights.sum()
    assert tokens == len(task.corpus.splits["valid"]) - 1  # every target, none dropped
    assert nll / tokens == pytest.approx(results["final"]["valid_loss"], rel=1e-5)
    vocab = json.loads((ref_dir / "vocab.json").read_text())
    sample = generate(model, vocab, ["1", "2"], 12, jax.random.key(0))
    assert len(sample) == 12 and set(sample) <= set(vocab)
    assert sample == generate(model, vocab, ["1", "2"], 12, jax.random.key(0))


def test_metrics_writer_sends_numpy_floats_to_tensorboard_too(tmp_path):
    """A numpy float32 scalar reached metrics.jsonl but was silently left out of TensorBoard
    (it is not a Python float); the event file now holds every finite scalar of the line."""
    from rnn_jax.train import metrics
    from tests.test_train_loop import tensorboard_events

    writer = metrics.MetricsWriter(tmp_path)
    writer.write(3, {"a": 0.5, "b": np.float32(0.25), "c": float("nan")})
    writer.close()
    assert metrics.read_metrics(tmp_path / "metrics.jsonl")[0]["b"] == 0.25
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    scalars = {}
    for event in tensorboard_events(tmp_path / "tensorboard"):
        scalars.update({(event.step, v.tag): v.simple_value for v in event.summary.value})
    assert scalars == {(3, "a"): 0.5, (3, "b"): 0.25}


def test_restore_model_reports_the_runs_num_seeds_not_the_configs(tmp_path):
    """A config without the run's num_seeds=2 override and replica=1 was refused with "the
    run has num_seeds=1"; the config check comes first and names the key."""
    from rnn_jax.train.restore import restore_model
    from tests.test_train_loop import _config

    (tmp_path / "best").mkdir()
    (tmp_path / "config.json").write_text(_config(num_seeds=2).to_json_best_effort())
    with pytest.raises(ValueError, match=r"num_seeds: 2 in .*config.json, now 1"):
        restore_model(_config(num_seeds=1), tmp_path, None, replica=1)
