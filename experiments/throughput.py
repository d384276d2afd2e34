"""Throughput of one recurrent layer: rnn_jax against Flax `nn.RNN` and PyTorch (issue 7).

    python -m experiments.throughput --workdir=W --config=experiments/configs/throughput.py:quick

Writes `W/results.json` (`final`: every group's samples and ratios; `timing`; `provenance`),
`W/throughput.md` (the tables the README quotes) and `W/throughput_vs_length.png`; while it
runs, `W/partial.json` holds what is measured so far (see `run`). The method
(interleaved rounds, medians, per-round ratios, in-process matmul peak, load) is described in
experiments/configs/throughput.py; the workloads in experiments/throughput_peers.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import multiprocessing
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from experiments import throughput_peers as peers
from experiments import throughput_tables as report
from rnn_jax import allocator
from rnn_jax.files import RESULTS_FILE
from rnn_jax.predicates import is_decimal, is_int
from rnn_jax.train import config as config_lib
from rnn_jax.train import metrics
from rnn_jax.train.rules import Rule, Rules, non_negative, positive

PLOT = "throughput_vs_length.png"


def _names_from(allowed: tuple, empty_ok: bool = False) -> Rule:
    def rule(value: Any) -> str | None:
        names = [v for v in str(value).split(",") if v]
        if (names or empty_ok) and all(n in allowed for n in names):
            return None
        return f"comma-separated names from {', '.join(allowed)}"

    return rule


def _positive_ints(value: Any) -> str | None:
    parts = [p for p in str(value).split(",") if p]  # empty: no sweep
    ok = all(is_decimal(p) and int(p) > 0 for p in parts)
    return None if ok else "comma-separated ints > 0 (empty: none)"


def _pairs_rule(value: Any) -> str | None:
    pairs = [v.rpartition(":") for v in str(value).split(",") if v]
    if all(cell in peers.CELL_SPECS and sep for cell, sep, _ in pairs):
        return None
    return f"comma-separated <cell>:<shape> pairs with cell in {', '.join(peers.CELL_SPECS)}"


def _text(value: Any) -> str | None:
    """Shape names (`configs`, `rss_configs`), checked against `shapes` by `groups_of`; the rule
    only keeps out a non-string (`--config.configs=None` was a traceback in `_split`)."""
    return None if isinstance(value, str) else "comma-separated shape names (empty: none)"


def _shape(value: Any) -> str | None:
    """A named shape: (batch, time, input, hidden), ints > 0. None, () or 3 numbers were
    accepted and failed only when the group was built, after `run` had cleared the workdir."""
    ok = isinstance(value, tuple | list) and len(value) == 4
    ok = ok and all(is_int(v) and v > 0 for v in value)
    return None if ok else "(batch, time, input, hidden): 4 ints > 0"


# The named shapes of experiments/configs/throughput.py (every variant has them all).
SHAPE_NAMES = ("tiny", "small", "medium", "long", "narrow")

# A benchmark: the runtime's training keys are neither required nor checked.
TRAINS = False
RULES: Rules = {
    "model.hidden_size": positive,
    "cells": _names_from(peers.CELL_SPECS),
    "backends": _names_from(peers.BACKENDS),
    "modes": _names_from(peers.MODES),
    "repetitions": positive,
    "warmup": non_negative,
    "gap_s": non_negative,
    "matmul_size": positive,
    "torch_threads": non_negative,
    "sweep.lengths": _positive_ints,
    "sweep.tokens": positive,
    "sweep.input_size": positive,
    "sweep.cells": _names_from(peers.CELL_SPECS + ("transformer",)),
    "sweep.repetitions": positive,
    "bidirectional": _pairs_rule,
    "stacked": _pairs_rule,
    "stack_layers": positive,
    "configs": _text,
    "rss_configs": _text,
    "extra": _pairs_rule,
    **{f"shapes.{name}": _shape for name in SHAPE_NAMES},
}


# Backends whose build or compilation failing is reported, not fatal: the GPU kernels
# (cuDNN through jax.experimental.rnn, the Pallas forward kernel), measured on no GPU yet.
KERNEL_BACKENDS = ("rnn_jax_cudnn", "rnn_jax_pallas")


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def backends_of(config: ml_collections.ConfigDict) -> list[str]:
    """The configured backends that can run here: PyTorch is an optional extra, so `torch` is
    dropped (with a warning) where it is not installed rather than failing the benchmark."""
    backends = _split(config.backends)
    if "torch" in backends and importlib.util.find_spec("torch") is None:
        logging.warning("torch is not installed (the [torch] extra): benchmarking without it")
        backends.remove("torch")
    return backends


def groups_of(config: ml_collections.ConfigDict) -> list[tuple[str, str, str]]:
    """(cell spec, shape name, mode) for every group; raises `ConfigError` (the command line's
    exit 2) on unknown shape names."""
    shapes = dict(config.shapes)
    pairs = [(c, s) for c in _split(config.cells) for s in _split(config.configs)]
    for item in _split(config.extra):
        cell, _, shape = item.rpartition(":")
        pairs.append((cell, shape))
    for key in ("configs", "rss_configs"):
        for name in _split(config[key]):
            if name not in shapes:
                raise config_lib.ConfigError(
                    f"{key}: unknown shape {name!r}; allowed: {', '.join(shapes)}"
                )
    for cell, shape in pairs:
        if cell not in peers.CELL_SPECS or shape not in shapes:
            raise config_lib.ConfigError(
                f"extra: {cell}:{shape} is not <cell>:<shape> with cell in "
                f"{', '.join(peers.CELL_SPECS)} and shape in {', '.join(shapes)}"
            )
    return [(c, s, m) for c, s in pairs for m in _split(config.modes)]


def interleaved(
    runs: dict[str, Callable[[], Any]], repetitions: int, warmup: int, gap_s: float
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Seconds per call of each run, timed round-robin with the start rotated every round.

    Returns `(wall, cpu, loads)`: `wall[name][r]` is round r's wall-clock time, `cpu[name][r]`
    the CPU time this process used in it (all its threads: the work done, which other
    processes on the machine disturb less than the wall clock), `loads[r]` the 1-minute load
    average after round r.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    names = list(runs)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    loads = []
    for r in range(repetitions):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(gap_s)
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    return wall, cpu, loads


def _summary(seconds: list[float], work: float) -> dict[str, float]:
    """Median and min-max rate (`work` per call / seconds) of one member's samples."""
    rates = work / np.asarray(seconds)
    return {"median": float(np.median(rates)), "min": float(rates.min()), "max": float(rates.max())}


def time_group(
    config: ml_collections.ConfigDict,
    cell: str,
    shape_name: str,
    mode: str,
    peak: Any,
    workloads: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, compile and time every backend of one (cell, shape, mode) with the peak matmul
    (or the given `workloads`, keyed by member name)."""
    shape = tuple(config.shapes[shape_name])
    failed: dict[str, str] = {}
    if workloads is None:
        workloads = {}
        for backend in backends_of(config):
            try:
                workload = peers.build(backend, cell, shape, mode)
            except Exception as error:  # a GPU kernel backend: named in the report below
                if backend not in KERNEL_BACKENDS:
                    raise
                # A GPU kernel backend that fails to build or compile (never run on a GPU
                # yet) is reported with its error instead of ending the run and every group
                # after it.
                # the first non-empty line: an empty message (a bare assert) was an IndexError
                first = next((line for line in str(error).splitlines() if line.strip()), "")
                kind = type(error).__name__
                failed[backend] = f"{kind}: {first[:300]}" if first else kind
                logging.warning("%s %s %s: %s failed: %s", cell, shape_name, mode, backend, error)
                continue
            if workload is not None:
                workloads[backend] = workload
    runs = {name: w.run for name, w in workloads.items()} | {"matmul": peak.run}
    samples, cpu, loads = interleaved(runs, config.repetitions, config.warmup, config.gap_s)
    peak_gflops = _summary(samples["matmul"], peak.flops / 1e9)
    members = {}
    for name, w in workloads.items():
        gflops = _summary(samples[name], w.flops / 1e9)
        members[name] = {
            "tokens_per_s": _summary(samples[name], w.tokens),
            "gflops": gflops,
            "percent_of_peak": 100.0 * gflops["median"] / peak_gflops["median"],
            "cpu_tokens_per_s": _summary(cpu[name], w.tokens),
            "compile_s": w.compile_s,
            "xla_temp_mib": None if w.temp_bytes is None else w.temp_bytes / 2**20,
            "ops_per_step": w.ops_per_step,
            "seconds": samples[name],
            "cpu_seconds": cpu[name],
        }
    logging.info(
        "%s %s %s: %s (load %.1f)",
        cell,
        shape_name,
        mode,
        {name: round(m["tokens_per_s"]["median"]) for name, m in members.items()},
        np.median(loads),
    )
    return {
        "cell": cell,
        "shape_name": shape_name,
        "shape": list(shape),
        "mode": mode,
        "members": members,
        "rnn_jax_speedup_over": _speedups(samples, workloads),
        "rnn_jax_cpu_speedup_over": _speedups(cpu, workloads),
        "matmul_peak_gflops": peak_gflops,
        "load": loads,
        "failed": failed,
    }


def _speedups(seconds: dict[str, list[float]], peers_: dict) -> dict[str, float]:
    """rnn_jax's throughput over each peer's: the median of the round-by-round ratios."""
    if "rnn_jax" not in seconds:
        return {}
    return {
        peer: report.speedup(seconds["rnn_jax"], seconds[peer])
        for peer in peers_
        if peer != "rnn_jax"
    }


def _pairs(config: ml_collections.ConfigDict, key: str) -> list[tuple[str, str]]:
    """(cell spec, shape name) of every group listed under `key`; raises `ConfigError` on
    unknown shapes."""
    pairs = [tuple(v.rsplit(":", 1)) for v in _split(config[key])]
    for _, shape in pairs:
        if shape not in config.shapes:
            raise config_lib.ConfigError(
                f"{key}: unknown shape {shape!r}; allowed: {', '.join(config.shapes)}"
            )
    return pairs


def bidirectional_pairs(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """(cell spec, shape name) of every bidirectional group; raises on unknown shapes."""
    return _pairs(config, "bidirectional")


def stacked_pairs(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """(cell spec, shape name) of every stacked group; raises on unknown shapes."""
    return _pairs(config, "stacked")


def time_bidirectional(
    config: ml_collections.ConfigDict, cell: str, shape_name: str, peak: Any
) -> dict[str, Any]:
    """Forward+backward of one bidirectional layer against one unidirectional layer.

    Members: `rnn_jax` (both directions in one scan, the default), `rnn_jax_two_scans`,
    `flax` (`nn.Bidirectional`, when `backends` lists it) and `unidirectional` (rnn_jax, one
    direction). Besides the
    usual ratios, `per_layer_speed` is 2 x (unidirectional time) / (bidirectional time) per
    round: 1.0 means a bidirectional layer runs at the speed of two unidirectional ones.
    """
    shape = tuple(config.shapes[shape_name])
    available = set(backends_of(config)) | {"rnn_jax", "rnn_jax_two_scans"}  # peers as asked
    workloads = {
        backend: peers.build_bidirectional(backend, cell, shape, "fwd_bwd")
        for backend in peers.BIDIRECTIONAL_BACKENDS
        if backend in available
    }
    workloads = {name: w for name, w in workloads.items() if w is not None}
    workloads["unidirectional"] = peers.build("rnn_jax", cell, shape, "fwd_bwd")
    group = time_group(config, cell, shape_name, "fwd_bwd", peak, workloads)
    return _with_per_layer_speed(group, {"unidirectional": 2.0})


def time_stacked(
    config: ml_collections.ConfigDict, cell: str, shape_name: str, peak: Any
) -> dict[str, Any]:
    """Forward+backward of a `config.stack_layers`-layer stack against its layers run alone.

    Members: `rnn_jax` (`layers.apply_stack`, the default), `flax` (`nn.Sequential` of
    `nn.RNN`s), `torch` (`num_layers=L`, when installed), and rnn_jax's single layers
    `first_layer` (input -> hidden) and `upper_layer` (hidden -> hidden), each forward+backward
    with gradients w.r.t. its params and inputs, as inside the stack. `per_layer_speed` is
    (first_layer time + (L - 1) x upper_layer time) / (stack time) per round: 1.0 means a
    stack runs at the speed of its layers run one by one.
    """
    layers = int(config.stack_layers)
    batch, time_, input_size, hidden = shape = tuple(config.shapes[shape_name])
    available = set(backends_of(config)) | {"rnn_jax"}
    workloads = {
        backend: peers.build_stacked(backend, cell, shape, layers, "fwd_bwd")
        for backend in peers.STACKED_BACKENDS
        if backend in available
    }
    workloads = {name: w for name, w in workloads.items() if w is not None}
    workloads["first_layer"] = peers.build("rnn_jax", cell, shape, "fwd_bwd")
    workloads["upper_layer"] = peers.build(
        "rnn_jax", cell, (batch, time_, hidden, hidden), "fwd_bwd"
    )
    group = time_group(config, cell, shape_name, "fwd_bwd", peak, workloads)
    group["layers"] = layers
    return _with_per_layer_speed(group, {"first_layer": 1.0, "upper_layer": layers - 1.0})


def _with_per_layer_speed(group: dict[str, Any], alone: dict[str, float]) -> dict[str, Any]:
    """Add `per_layer_speed` (wall clock) and `cpu_per_layer_speed` to a timed group: per
    round, the time of the members in `alone` weighted by how many of them rnn_jax's layer
    does (e.g. {"unidirectional": 2.0}) over rnn_jax's own time; the median over rounds."""
    m = group["members"]
    for key, seconds in (("per_layer_speed", "seconds"), ("cpu_per_layer_speed", "cpu_seconds")):
        separate = sum(weight * np.asarray(m[name][seconds]) for name, weight in alone.items())
        group[key] = float(np.median(separate / np.asarray(m["rnn_jax"][seconds])))
    return group


# The peer library a backend's workload imports inside `peers.build` (rnn_jax's modules come
# with this one): imported before the baseline, like JAX's runtime.
_PEER_MODULES = {"flax": "flax.linen", "torch": "torch"}


def _rss_child(
    backend: str, cell: str, shape: tuple, mode: str, queue: Any, malloc: str = "default"
) -> None:
    """Peak RSS growth (MiB) of building and running one workload in this fresh process.

    The run's `malloc` mode is applied first (`allocator.configure`): a spawned child starts
    with glibc's default, so a `malloc=retain` run measured its peaks under another allocator
    than the one its report names (torch LSTM at long, measured: 146-158 MiB default, 187-227
    MiB retained).
    Everything every member pays alike happens before the baseline: importing the libraries
    (the peer's own too: importing `flax.linen` inside `peers.build` was charged to Flax) and
    starting JAX's CPU runtime (`peers.build` draws every backend's inputs with `jax.random`;
    the runtime's first call and that draw's compile, ~80 MiB, were charged to the workload,
    so torch's figure was mostly JAX's). The peak is then reset to the current RSS, so a
    transient peak of that start-up is not charged either.
    """
    allocator.configure(malloc)
    import jax

    if backend in _PEER_MODULES:
        importlib.import_module(_PEER_MODULES[backend])
    batch, time_, input_size, _ = shape  # the inputs' draw as peers.build makes it, compiled
    jax.block_until_ready(jax.random.normal(jax.random.key(0), (batch, time_, input_size)))
    _reset_peak_rss()
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        baseline = int(f.read().split()[1]) * page
    workload = peers.build(backend, cell, shape, mode)
    workload.run()
    workload.run()
    queue.put((_peak_rss_bytes() - baseline) / 2**20)


def _reset_peak_rss() -> None:
    """Set this process's peak RSS (`VmHWM`) to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    """This process's peak RSS since its exec or `_reset_peak_rss` (`VmHWM`). Not `getrusage`'s
    `ru_maxrss`: Linux carries that across fork and exec, so a spawned child reported the
    parent's peak (a test suite's 4.9 GiB) whenever the parent had been larger."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmHWM line")


def peak_rss(
    backend: str,
    cell: str,
    shape: tuple,
    mode: str,
    timeout_s: float = 600.0,
    malloc: str = "default",
) -> float | None:
    """`_rss_child` in a spawned process (each measurement starts from a clean heap) under the
    allocator mode `malloc` (the config key); None when it fails or runs past `timeout_s`
    (then it is killed)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (backend, cell, shape, mode, queue, malloc)
    process = context.Process(target=_rss_child, args=args)
    process.start()
    process.join(timeout=timeout_s)
    if process.exitcode is None:  # hung past the limit: no figure, and no process left behind
        process.kill()
        process.join()
        return None
    return queue.get() if process.exitcode == 0 and not queue.empty() else None


def run_sweep(config: ml_collections.ConfigDict, peak: Any) -> list[dict[str, Any]]:
    """fwd_bwd tokens/s against sequence length at a fixed number of tokens per call."""
    rows = []
    hidden, input_size = config.model.hidden_size, config.sweep.input_size
    for length in (int(v) for v in _split(config.sweep.lengths)):
        shape = (max(1, config.sweep.tokens // length), length, input_size, hidden)
        workloads = {}
        for spec in _split(config.sweep.cells):
            if spec == "transformer":
                workloads[spec] = peers.transformer_block(shape, "fwd_bwd")
            else:
                workloads[spec] = peers.build("rnn_jax", spec, shape, "fwd_bwd")
        runs = {name: w.run for name, w in workloads.items()} | {"matmul": peak.run}
        samples, _, loads = interleaved(runs, config.sweep.repetitions, 1, config.gap_s)
        for name, w in workloads.items():
            rows.append(
                {
                    "cell": name,
                    "time": length,
                    "batch": shape[0],
                    "tokens_per_s": _summary(samples[name], w.tokens),
                    "xla_temp_mib": None if w.temp_bytes is None else w.temp_bytes / 2**20,
                    "compile_s": w.compile_s,
                    "load": loads,
                }
            )
    return rows


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The whole benchmark; returns the `results.json` object.

    After every timed group (bidirectional, stacked and RSS items included; the sweep comes
    last) the results so far are written atomically to `W/partial.json` (`timing.complete`
    false, stages not reached empty), so a run stopped early (a lent accelerator's time
    limit, a crash, SIGTERM) keeps what it measured; a finished run writes `results.json`,
    `throughput.md` and the plot and removes it. Only finished runs count in
    `throughput_report`; a previous run's outputs in `workdir` are removed when this one
    starts, so a rerun that stops early is not taken for a finished one."""
    start = time.time()
    groups = groups_of(config)  # unknown names and shapes fail before anything is compiled
    pairs, stacks = bidirectional_pairs(config), stacked_pairs(config)
    if config.torch_threads and "torch" in backends_of(config):
        import torch

        torch.set_num_threads(config.torch_threads)
    allocator.configure(config.malloc)  # the CLI has; again for direct callers (idempotent)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    metrics.remove_done_marker(workdir)
    for name in ("throughput.md", PLOT, report.PARTIAL):  # nor its other outputs
        (workdir / name).unlink(missing_ok=True)
    load_before = os.getloadavg()
    final: dict[str, list] = {
        "groups": [],
        "bidirectional": [],
        "stacked": [],
        "rss": [],
        "sweep": [],
    }
    provenance = metrics.provenance() | {"load_before": load_before, "malloc": config.malloc}

    def results(complete: bool) -> dict[str, Any]:
        return {
            "final": final,
            "timing": {"wall_s": time.time() - start, "complete": complete},
            "provenance": provenance | {"load_after": os.getloadavg()},
        }

    def keep(stage: str, item: dict[str, Any]) -> None:
        final[stage].append(item)
        metrics.write_json_atomic(workdir / report.PARTIAL, results(complete=False))

    peak = peers.matmul_peak(config.matmul_size)
    for group in groups:
        keep("groups", time_group(config, *group, peak))
    for pair in pairs:
        keep("bidirectional", time_bidirectional(config, *pair, peak))
    for pair in stacks:
        keep("stacked", time_stacked(config, *pair, peak))
    rss_items = itertools.product(
        _split(config.rss_configs), _split(config.cells), backends_of(config)
    )
    for shape_name, cell, backend in rss_items:
        if peers.supports(backend, cell):
            shape = tuple(config.shapes[shape_name])
            rss = peak_rss(backend, cell, shape, "fwd_bwd", malloc=config.malloc)
            row = {"cell": cell, "shape_name": shape_name, "backend": backend}
            keep("rss", row | {"peak_rss_delta_mib": rss})
    final["sweep"] = run_sweep(config, peak)
    done = results(complete=True)
    metrics.write_text_atomic(workdir / "throughput.md", report.markdown(done))
    report.plot_sweep(final["sweep"], workdir / PLOT)
    metrics.write_json_atomic(workdir / RESULTS_FILE, done)
    (workdir / report.PARTIAL).unlink(missing_ok=True)
    return done


def _cli_run(config: ml_collections.ConfigDict, workdir: str, task: Any) -> None:
    del task
    run(config, workdir)


if __name__ == "__main__":
    from rnn_jax.train import cli

    cli.main(lambda config: None, RULES, run=_cli_run, trains=TRAINS)
