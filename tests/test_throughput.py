"""The throughput benchmark runs end to end (smoke config) and its harness behaves.

No timed assertions: timings on shared CI cores say nothing. What is checked is that every
output exists and is consistent, that the interleaving rotates, that bad configs (unknown
shape names or modes) fail before anything is compiled, and that the peak-memory child keeps
to its limit and measures after the peer's import."""

import json
import math
import types

import jax
import numpy as np
import pytest

from experiments import (
    throughput,
    throughput_goals,
    throughput_peers,
    throughput_report,
    throughput_tables,
)
from rnn_jax.train import cli
from tests.module_cli import run_module
from tests.test_throughput_report import refused

CONFIG = "experiments/configs/throughput.py"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("throughput")
    config = cli.load_config(f"{CONFIG}:smoke", rules=throughput.RULES, trains=False)
    throughput.run(config, str(workdir))
    return workdir


def test_smoke_run_writes_results_table_and_plot(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert set(results) == {"final", "timing", "provenance"}
    assert results["timing"]["complete"] is True
    assert not (smoke_run / throughput_tables.PARTIAL).exists()  # removed once the run is finished
    assert "Unfinished" not in (smoke_run / "throughput.md").read_text()
    groups = results["final"]["groups"]
    assert {(g["cell"], g["mode"]) for g in groups} == {("lstm", "fwd"), ("lstm", "fwd_bwd")}
    for g in groups:
        # remat changes only the backward pass: it is a member of fwd_bwd groups only.
        peers = {"rnn_jax_reference", "flax", "torch", "xla_gemm_floor"} | (
            {"rnn_jax_remat"} if g["mode"] == "fwd_bwd" else set()
        )
        assert set(g["members"]) == {"rnn_jax"} | peers
        assert set(g["rnn_jax_speedup_over"]) == peers
        assert set(g["rnn_jax_cpu_speedup_over"]) == peers
        for member in g["members"].values():
            rate = member["tokens_per_s"]
            assert 0 < rate["min"] <= rate["median"] <= rate["max"]
            assert len(member["seconds"]) == 2  # smoke: 2 rounds
        assert g["members"]["rnn_jax"]["xla_temp_mib"] is not None
        assert g["members"]["torch"]["compile_s"] is None  # eager
        # One loop forward, a forward and a reverse loop with the backward; torch: none known.
        ops = g["members"]["rnn_jax"]["ops_per_step"]
        assert len(ops) == (1 if g["mode"] == "fwd" else 2) and min(ops) > 0
        assert g["members"]["torch"]["ops_per_step"] is None
    assert {r["cell"] for r in results["final"]["sweep"]} == {
        "gru",
        "min_gru:sequential",
        "transformer",
    }
    (bidirectional,) = results["final"]["bidirectional"]
    assert set(bidirectional["members"]) == {
        "rnn_jax",
        "rnn_jax_two_scans",
        "flax",
        "unidirectional",
    }
    # per_layer_speed is 2 x unidirectional time / bidirectional time, per round.
    ours = bidirectional["members"]["rnn_jax"]["seconds"]
    single = bidirectional["members"]["unidirectional"]["seconds"]
    want = sorted(2 * u / b for u, b in zip(single, ours, strict=True))
    assert bidirectional["per_layer_speed"] == pytest.approx(sum(want) / 2)  # median of 2
    (stacked,) = results["final"]["stacked"]
    assert stacked["layers"] == 2
    assert set(stacked["members"]) == {"rnn_jax", "flax", "torch", "first_layer", "upper_layer"}
    # per_layer_speed is (first + (L - 1) x upper layer's time) / stack time, per round.
    m = stacked["members"]
    want = sorted(
        (f + u) / s
        for f, u, s in zip(
            m["first_layer"]["seconds"],
            m["upper_layer"]["seconds"],
            m["rnn_jax"]["seconds"],
            strict=True,
        )
    )
    assert stacked["per_layer_speed"] == pytest.approx(sum(want) / 2)  # median of 2
    table = (smoke_run / "throughput.md").read_text()
    assert "## bidirectional layer" in table and "rematerialisation" in table
    assert "Allocator: glibc's default" in table
    assert "## stacked layers" in table and "| lstm | 2 | tiny (4, 8, 8, 16) |" in table
    # tiny is no shape of issue 7's: goal lines name it with its values
    assert "lstm tiny (4, 8, 8, 16) 2-layer stack per-layer speed" in table
    assert "## forward + backward" in table and "## forward\n" in table
    assert "| lstm | tiny (4, 8, 8, 16) |" in table
    fwd_bwd_ops = next(g for g in groups if g["mode"] == "fwd_bwd")["members"]["flax"]
    assert "loop ops/step ours / flax" in table
    assert f"/ {'+'.join(map(str, fwd_bwd_ops['ops_per_step']))} |" in table
    assert "## The XLA GEMM floor" in table and "| lstm | tiny (4, 8, 8, 16) | fwd_bwd |" in table
    assert (smoke_run / "throughput_vs_length.png").stat().st_size > 0


@pytest.mark.parametrize("gates", [1, 3, 4])
def test_gemm_floor_runs_the_layers_matmuls(gates):
    """The floor's outputs are the products it claims (per-step loop and explicit GEMMs), its
    recurrent blocks keep h's norm (no subnormal slow-down at long T), and its FLOPs are the
    layer's: 2BTG(I+H) forward, 3x that forward+backward."""

    shape = batch, time_, input_size, hidden = (3, 5, 4, 8)
    width = gates * hidden
    forward = throughput_peers.gemm_floor(gates, shape, "fwd")
    both = throughput_peers.gemm_floor(gates, shape, "fwd_bwd")
    assert forward.flops == 2.0 * batch * time_ * width * (input_size + hidden)
    assert both.flops == 3 * forward.flops and forward.tokens == batch * time_
    hs, z_x = (np.asarray(a, np.float64) for a in forward.run())
    d_hs, d_w_ih, d_w_hh, d_x = (np.asarray(a, np.float64) for a in both.run())
    # The floor's own inputs: forward and forward+backward draw the same ones.
    params, xs = forward.inputs
    for a, b in zip(jax.tree.leaves(both.inputs), jax.tree.leaves(forward.inputs), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.asarray(xs, np.float64).reshape(-1, input_size)
    w_ih = np.asarray(params["W_ih"], np.float64)
    w_hh = np.asarray(params["W_hh"], np.float64)
    assert w_ih.shape == (input_size, width) and w_hh.shape == (hidden, width)
    np.testing.assert_allclose(z_x, x @ w_ih, rtol=1e-4, atol=1e-4)
    for block in np.split(w_hh, gates, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)
    h = np.ones((batch, hidden))
    for t in range(time_):
        h = (h @ w_hh)[:, :hidden]
        np.testing.assert_allclose(hs[t], h, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(hs[-1]), np.sqrt(batch * hidden), rtol=1e-4)
    d_z = z_x
    np.testing.assert_allclose(d_hs.reshape(-1, hidden), d_z @ w_hh.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_w_hh, hs.reshape(-1, hidden).T @ d_z, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(d_w_ih, x.T @ d_z, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(d_x, d_z @ w_ih.T, rtol=1e-4, atol=1e-3)


def test_floor_rows_are_per_round_ratios():
    def member(seconds):
        return {
            "seconds": seconds,
            "tokens_per_s": {"median": 1.0, "min": 1.0, "max": 1.0},
            "gflops": {"median": 2.0},
            "percent_of_peak": 50.0,
        }

    group = {
        "cell": "lstm",
        "shape_name": "small",
        "shape": [32, 64, 128, 256],
        "mode": "fwd",
        "members": {
            "rnn_jax": member([3.0, 3.0, 6.0]),
            "torch": member([1.0, 2.0, 1.0]),
            "xla_gemm_floor": member([1.0, 4.0, 2.0]),
        },
        "load": [0.1],
    }
    no_floor = group | {"members": {"rnn_jax": member([1.0])}}
    header, rule, row = throughput_tables.floor_rows([no_floor, group])  # no row without one
    assert header.count("|") == rule.count("|") == row.count("|")
    # rnn_jax over floor per round: 1/3, 4/3, 1/3 -> 0.33 (the ratio of medians: 0.67); torch:
    # 1, 2, 2 -> 2.00; no flax.
    assert "| 0.33× | 2.00× | – |" in row
    old_run = {"final": {"groups": [group | {"members": {"rnn_jax": member([1.0])}}]}}
    new_run = {"final": {"groups": [group]}}
    table = throughput_report.floor_across_runs([old_run, new_run, new_run], per_run=True)
    # Numbered as in the goal table (the first run, without the floor, is run 1).
    assert "| group | torch ÷ floor, run 2 | torch ÷ floor, run 3 |" in table
    assert "| lstm small fwd | 2.00× | 2.00× | 0.33× | 0.33× |" in table
    faster = {
        "final": {"groups": [group | {"members": group["members"] | {"torch": member([0.5])}}]}
    }
    table = throughput_report.floor_across_runs([old_run, new_run, faster, new_run])
    assert "| lstm small fwd | 3 | 2.00× (2.00–4.00) | 0.33× (0.33–0.33) |" in table
    assert throughput_report.floor_across_runs([old_run]) == ""
    # Runs without rnn_jax in `backends` (a peer-only run): counted by their torch ratios.
    peers_only = {"final": {"groups": [group | {"members": {"torch": member([1.0, 2.0, 1.0])}}]}}
    peers_only["final"]["groups"][0]["members"]["xla_gemm_floor"] = member([1.0, 4.0, 2.0])
    table = throughput_report.floor_across_runs([peers_only, peers_only])
    assert "| lstm small fwd | 2 | 2.00× (2.00–2.00) | – |" in table
    # A GPU run's ratios get a row of their own (they were pooled with the CPU runs')
    on_gpu = faster | {"provenance": {"backend": "gpu"}}
    table = throughput_report.floor_across_runs([new_run, new_run, on_gpu])
    assert "| lstm small fwd | 2 | 2.00× (2.00–2.00) | 0.33× (0.33–0.33) |" in table
    assert "| lstm small fwd on gpu | 1 | 4.00× (4.00–4.00) |" in table


def test_interleaving_rotates_the_start(monkeypatch):
    """Each call's wall-clock and CPU seconds are its own, in that order (clocks faked: a
    call of member n takes n s wall-clock and n / 4 s of CPU time)."""
    calls = []
    clock = {"wall": 0.0, "cpu": 0.0}

    def call(name):
        calls.append(name)
        clock["wall"] += "abc".index(name) + 1.0
        clock["cpu"] += ("abc".index(name) + 1.0) / 4

    fake_time = types.SimpleNamespace(
        sleep=lambda s: None,
        perf_counter=lambda: clock["wall"],
        process_time=lambda: clock["cpu"],
    )
    monkeypatch.setattr(throughput, "time", fake_time)
    runs = {name: (lambda name=name: call(name)) for name in "abc"}
    wall, cpu, loads = throughput.interleaved(runs, repetitions=3, warmup=1, gap_s=0.0)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert wall == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    assert cpu == {"a": [0.25] * 3, "b": [0.5] * 3, "c": [0.75] * 3}
    assert len(loads) == 3


def test_goal_checks_report_misses():
    group = {
        "cell": "lstm",
        "shape_name": "small",
        "shape": [32, 64, 128, 256],
        "mode": "fwd_bwd",
        "rnn_jax_speedup_over": {"torch": 0.8, "flax": 1.4},
        "members": {"rnn_jax": {"xla_temp_mib": 30.0}, "flax": {"xla_temp_mib": 10.0}},
    }
    lines = throughput_goals.goal_checks([group])
    assert any(line.startswith("- MISSED: lstm small fwd_bwd vs torch: 0.80×") for line in lines)
    assert any(line.startswith("- MET: lstm small fwd_bwd vs flax: 1.40×") for line in lines)
    assert any("MISSED" in line and "3.00× Flax" in line for line in lines)
    # 1.2x Flax's temp memory meets the default's goal (1.5x), not the remat one's (1.0x).
    temps = {"rnn_jax": 12.0, "rnn_jax_remat": 12.0, "flax": 10.0}
    group |= {"members": {name: {"xla_temp_mib": mib} for name, mib in temps.items()}}
    lines = throughput_goals.goal_checks([group])
    assert lines[-2:] == [
        "- MET: lstm small fwd_bwd XLA temp memory 12 MiB = 1.20× Flax's 10 MiB (goal ≤ 1.5×)",
        "- MISSED: lstm small fwd_bwd XLA temp memory with remat 12 MiB = 1.20× Flax's "
        "(goal ≤ 1.0×)",
    ]


def test_goals_across_runs_every_run_and_median_verdicts():
    def run(torch_ratio, per_layer):
        group = {
            "cell": "lstm",
            "shape_name": "long",
            "shape": [16, 1024, 64, 128],
            "mode": "fwd_bwd",
            "rnn_jax_speedup_over": {"torch": torch_ratio, "flax": 1.5},
        }
        bidirectional = {
            "cell": "gru",
            "shape_name": "small",
            "shape": [32, 64, 128, 256],
            "per_layer_speed": per_layer,
            "cpu_per_layer_speed": per_layer,
        }
        return {"final": {"groups": [group], "bidirectional": [bidirectional]}}

    table = throughput_report.across_runs([run(1.1, 0.9), run(0.9, 0.8)], per_run=True)
    assert (
        "| lstm long fwd_bwd vs torch | ≥ 1.0× | 1.10× | 0.90× | split | 1.00× [0.90, 1.10] | – |"
    ) in table
    assert (
        "| lstm long fwd_bwd vs flax | ≥ 1.3× | 1.50× | 1.50× | met | 1.50× [1.50, 1.50] | – |"
        in table
    )
    assert (
        "| gru small bidirectional per-layer speed | ≥ 1.0× | 0.90× | 0.80× | missed "
        "| 0.85× [0.80, 0.90] | – |"
    ) in table
    # Two runs are too few for a median verdict; with nine, one outlier on either side no
    # longer splits it (interval x(2)..x(8)).
    ratios = [0.99, 1.02, 1.02, 1.02, 1.06, 1.09, 1.09, 1.10, 1.22]
    table = throughput_report.across_runs([run(r, 1.0) for r in ratios])
    assert "| 9 | 8 | 0.99–1.22× | split | 1.06× [1.02, 1.10] | met |" in table
    assert "| goal | target | runs | met in | min–max | every run |" in table
    assert "96.1%" in table
    table = throughput_report.across_runs([run(r, 1.0) for r in (0.8, 0.85, 0.9, 0.95, 0.97)])
    assert "| missed | 0.90× [0.80, 0.97] | missed |" in table  # five runs: 93.75%
    # The interval straddling the target is open; one at its lower end is met.
    table = throughput_report.across_runs([run(r, 1.0) for r in (0.95, 0.98, 1.0, 1.02, 1.05)])
    assert "| split | 1.00× [0.95, 1.05] | open |" in table
    table = throughput_report.across_runs([run(r, 1.0) for r in (1.0, 1.0, 1.02, 1.03, 1.04)])
    assert "| met | 1.02× [1.00, 1.04] | met |" in table
    # Runs that timed no goal: one line, not an empty table with a blank probability.
    none = {"final": {"groups": [], "bidirectional": []}}
    assert throughput_report.across_runs([none, none]).startswith("No speed goal in these 2 ")


def test_goals_across_runs_include_stacks_from_the_runs_that_timed_them():
    def run(stack_speed):
        final = {"groups": [], "bidirectional": []}
        if stack_speed is not None:  # runs before the stacked groups existed have none
            final["stacked"] = [
                {
                    "cell": "lstm",
                    "shape_name": "small",
                    "shape": [32, 64, 128, 256],
                    "layers": 2,
                    "per_layer_speed": stack_speed,
                    "cpu_per_layer_speed": stack_speed + 0.1,
                }
            ]
        return {"final": final}

    runs = [run(None), run(0.97), run(1.01)]
    assert (
        "| lstm small 2-layer stack per-layer speed | ≥ 1.0× | – | 0.97× | 1.01× | split "
        "| 0.99× [0.97, 1.01] | – |"
    ) in throughput_report.across_runs(runs, per_run=True)
    assert (
        "| lstm small 2-layer stack per-layer speed | ≥ 1.0× | 2 | 1 | 0.97–1.01× | split "
        "| 0.99× [0.97, 1.01] | – |"
    ) in throughput_report.across_runs(runs)
    lines = throughput_goals.per_layer_checks(run(0.97)["final"]["stacked"])
    assert lines == [
        "- MISSED: lstm small 2-layer stack per-layer speed 0.97× its layers' run alone "
        "(goal ≥ 1.0×; by CPU time 1.07×)"
    ]


def test_median_interval_is_the_order_statistic_interval_and_covers_as_stated():
    """[x(k), x(n+1-k)] with the largest k whose binomial coverage is >= 95%; checked against
    the coverage formula and by simulation from a skewed distribution."""

    import numpy as np

    median, low, high, cover = throughput_report.median_interval(list(range(9, 0, -1)))
    assert (median, low, high) == (5.0, 2, 8) and cover == pytest.approx(1 - 2 * 10 / 512)
    assert throughput_report.median_interval([3.0, 1.0, 2.0, 5.0, 4.0])[1:3] == (1.0, 5.0)
    for n in range(6, 30):
        _, low, high, cover = throughput_report.median_interval(list(range(n)))
        k = low + 1
        assert high == n - k and cover >= 0.95
        wider = 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        assert wider < 0.95  # k is the largest that still covers 95%
    rng = np.random.default_rng(0)
    true_median = float(np.log(2.0))  # of an exponential(1)
    hits = 0
    trials = 4000
    for _ in range(trials):
        _, low, high, _ = throughput_report.median_interval(list(rng.exponential(size=9)))
        hits += low <= true_median <= high
    assert abs(hits / trials - (1 - 2 * 10 / 512)) < 0.015
    with pytest.raises(ValueError, match="at least one"):
        throughput_report.median_interval([])


def test_gpu_goals_and_kernel_columns():
    """On a GPU: LSTM medium fwd+bwd against cuDNN, minGRU's associative scan at T = 4096, and
    the jax.experimental.rnn and Pallas columns; on CPU neither backend is built at all."""
    member = {"tokens_per_s": {"median": 2e3, "min": 1e3, "max": 3e3}, "compile_s": None}
    group = {
        "cell": "lstm",
        "shape_name": "medium",
        "shape": [64, 128, 256, 512],
        "mode": "fwd_bwd",
        "rnn_jax_speedup_over": {
            "torch": 0.85,
            "flax": 1.1,
            "rnn_jax_cudnn": 0.95,
            "rnn_jax_pallas": 1.25,
        },
        "rnn_jax_cpu_speedup_over": {"torch": 0.7, "flax": 1.2},
        "members": {
            "rnn_jax": member
            | {"xla_temp_mib": 1.0, "gflops": {"median": 1.0}, "percent_of_peak": 1.0},
            "rnn_jax_cudnn": member,
            "rnn_jax_pallas": member | {"tokens_per_s": {"median": 5e3, "min": 4e3, "max": 6e3}},
        },
        "load": [0.5],
    }
    sweep = [
        {"cell": "min_gru:sequential", "time": 4096, "tokens_per_s": {"median": 1e4}},
        {"cell": "min_gru:associative", "time": 4096, "tokens_per_s": {"median": 1.2e5}},
    ]
    other = group | {"shape_name": "small"}  # the goal is medium's only
    lines = throughput_goals.gpu_checks([other, group], sweep)
    assert lines == [
        "- MISSED: lstm medium fwd_bwd vs torch (cuDNN): 0.85× (goal ≥ 0.9×)",
        "- MET: lstm medium fwd_bwd vs rnn_jax_cudnn (cuDNN): 0.95× (goal ≥ 0.9×)",
        "- MET: minGRU associative scan at T=4096: 12.0× the sequential scan's fwd+bwd "
        "tokens/s (goal ≥ 10.0×)",
    ]
    header, rule, row = throughput_tables._group_rows([group], "fwd_bwd")
    assert "| jax cuDNN | vs jax cuDNN | Pallas kernel | vs Pallas kernel |" in header
    assert header.count("|") == rule.count("|") == row.count("|")
    # Then vs flax, vs torch wall-clock; vs flax, vs torch by CPU time.
    assert (
        "| 2.0k (1.0k–3.0k) | 0.95× | 5.0k (4.0k–6.0k) | 1.25× | 1.10× | 0.85× | 1.20× | 0.70× |"
        in row
    )
    if jax.default_backend() != "gpu":
        for backend in ("rnn_jax_cudnn", "rnn_jax_pallas"):
            assert throughput_peers.build(backend, "lstm", (2, 3, 4, 8), "fwd") is None


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"cells": "lstm,lsmt"}, "cells"),
        ({"backends": "jax"}, "backends"),
        ({"sweep.lengths": "64,-1"}, "sweep.lengths"),
        ({"sweep.lengths": "64,\u0663"}, "sweep.lengths"),  # int() read it as 3
        ({"bidirectional": "lsmt:small"}, "bidirectional"),
        ({"stacked": "lsmt:small"}, "stacked"),
        ({"stack_layers": 0}, "stack_layers"),
        # Accepted, then a traceback in the run (exit 1, after the workdir was cleared).
        ({"shapes.tiny": None}, "shapes.tiny"),
        ({"shapes.long": (16, 1024, 64)}, "shapes.long"),
        ({"configs": None}, "configs"),
        ({"rss_configs": None}, "rss_configs"),
        ({"extra": None}, "extra"),
    ],
)
def test_bad_config_values_fail_before_compiling(overrides, message):
    with pytest.raises(ValueError, match=message):
        cli.load_config(f"{CONFIG}:smoke", overrides, rules=throughput.RULES, trains=False)


def test_every_variants_shapes_have_a_rule():
    from experiments.configs import throughput as throughput_configs

    for variant in throughput_configs.VARIANTS:
        assert set(throughput_configs.get_config(variant).shapes) == set(throughput.SHAPE_NAMES)


def test_unknown_shape_names_fail():
    config = cli.load_config(
        f"{CONFIG}:smoke", {"configs": "tiny,huge"}, rules=throughput.RULES, trains=False
    )
    with pytest.raises(ValueError, match="configs: unknown shape 'huge'"):
        throughput.groups_of(config)
    # `extra` adds <cell>:<shape> groups after the cells x configs grid, in every mode.
    overrides = {"cells": "lstm", "configs": "tiny", "modes": "fwd,fwd_bwd", "extra": "gru:long"}
    config = cli.load_config(f"{CONFIG}:smoke", overrides, rules=throughput.RULES, trains=False)
    assert throughput.groups_of(config) == [
        ("lstm", "tiny", "fwd"),
        ("lstm", "tiny", "fwd_bwd"),
        ("gru", "long", "fwd"),
        ("gru", "long", "fwd_bwd"),
    ]
    config = cli.load_config(
        f"{CONFIG}:smoke", {"stacked": "gru:huge"}, rules=throughput.RULES, trains=False
    )
    with pytest.raises(ValueError, match="stacked: unknown shape 'huge'"):
        throughput.stacked_pairs(config)


def test_a_run_stopped_midway_keeps_what_it_measured(tmp_path, monkeypatch, capsys):
    """Each timed group is written to partial.json as it finishes; a run that dies later (here
    in its stacked groups) leaves that file and no results.json, which the report refuses."""
    config = cli.load_config(f"{CONFIG}:smoke", rules=throughput.RULES, trains=False)
    config.backends, config.modes = "rnn_jax", "fwd"
    config.bidirectional = ""

    def stopped(*args):
        raise KeyboardInterrupt("the accelerator's time is up")

    monkeypatch.setattr(throughput, "time_stacked", stopped)
    with pytest.raises(KeyboardInterrupt):
        throughput.run(config, str(tmp_path))
    partial = json.loads((tmp_path / throughput_tables.PARTIAL).read_text())
    assert partial["timing"]["complete"] is False
    assert [(g["cell"], g["mode"]) for g in partial["final"]["groups"]] == [("lstm", "fwd")]
    assert partial["final"]["stacked"] == partial["final"]["sweep"] == []
    assert "**Unfinished run**" in throughput_tables.markdown(partial)  # it still renders
    assert not (tmp_path / "results.json").exists()
    assert "unfinished run: only partial.json" in refused(capsys, tmp_path)


def test_peak_memory_does_not_charge_jax_start_up_to_the_workload():
    """The inputs are drawn with jax.random for every backend; JAX's runtime start and that
    draw's compile (~80 MiB) happen before the baseline, so a tiny torch LSTM's growth is
    torch's own (it was ~100 MiB, against 18 MiB in a process without JAX). The peak is the
    child's own even when the parent has been larger (ru_maxrss carried the parent's over
    fork and exec: 4.9 GiB inside the test suite)."""

    pytest.importorskip("torch")
    ballast = np.ones(2**28 // 8)  # 256 MiB resident in this (the parent) process
    grown = throughput.peak_rss("torch", "lstm", (4, 8, 8, 16), "fwd_bwd")
    assert ballast.sum() == ballast.size
    assert grown is not None and grown < 50, grown


def test_torch_is_no_gpu_peer_without_cuda(monkeypatch):
    """JAX on a GPU against a CPU-only torch is no cuDNN comparison: torch is left out (it ran
    on the CPU and the GPU report called it "(cuDNN)")."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(throughput_peers.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="torch is left out of the GPU benchmark"):
        assert throughput_peers.build("torch", "lstm", (2, 3, 4, 5), "fwd_bwd") is None


def test_bidirectional_groups_keep_to_the_configured_backends(monkeypatch):
    config = cli.load_config(
        f"{CONFIG}:smoke", {"backends": "rnn_jax"}, rules=throughput.RULES, trains=False
    )
    built = []

    def fake_build(backend, *args):
        built.append(backend)

    monkeypatch.setattr(throughput_peers, "build_bidirectional", fake_build)
    monkeypatch.setattr(throughput_peers, "build", lambda *a: None)
    monkeypatch.setattr(throughput, "time_group", lambda *a: {"members": {}})
    monkeypatch.setattr(throughput, "_with_per_layer_speed", lambda group, alone: group)
    shape_name = next(iter(config.shapes))
    throughput.time_bidirectional(config, "lstm", shape_name, peak=None)
    assert built == ["rnn_jax", "rnn_jax_two_scans"]  # flax was built whatever `backends` said


def test_stacked_per_layer_speed_counts_the_upper_layer_l_minus_1_times(monkeypatch):
    """(first layer + (L - 1) x upper layer) / stack, with the upper layer built hidden ->
    hidden: at L = 2 (every variant's default, the smoke run's) both weights are 1, so
    swapped weights or an upper layer built input -> hidden went unseen. Timings faked."""
    config = cli.load_config(
        f"{CONFIG}:smoke", {"stack_layers": 3}, rules=throughput.RULES, trains=False
    )
    member = types.SimpleNamespace(
        run=None, flops=1.0, tokens=1, compile_s=None, temp_bytes=None, ops_per_step=None
    )
    built = []

    def build(backend, cell, shape, mode):
        built.append(shape)
        return member

    def interleaved(runs, *args):
        wall = {"rnn_jax": [5.0] * 2, "first_layer": [2.0] * 2, "upper_layer": [4.0] * 2}
        cpu = {"rnn_jax": [2.0] * 2, "first_layer": [1.0] * 2, "upper_layer": [1.0] * 2}
        assert set(runs) == set(wall) | {"matmul"}
        return wall | {"matmul": [1.0] * 2}, cpu | {"matmul": [1.0] * 2}, [0.0]

    def build_stacked(backend, cell, shape, layers, mode):
        assert layers == 3
        return member if backend == "rnn_jax" else None

    monkeypatch.setattr(throughput_peers, "build", build)
    monkeypatch.setattr(throughput_peers, "build_stacked", build_stacked)
    monkeypatch.setattr(throughput, "interleaved", interleaved)
    peak = types.SimpleNamespace(run=None, flops=1.0)
    group = throughput.time_stacked(config, "lstm", "tiny", peak)
    batch, time_, input_size, hidden = config.shapes.tiny
    assert built == [(batch, time_, input_size, hidden), (batch, time_, hidden, hidden)]
    assert group["layers"] == 3
    assert group["per_layer_speed"] == pytest.approx((2.0 + 2 * 4.0) / 5.0)
    assert group["cpu_per_layer_speed"] == pytest.approx((1.0 + 2 * 1.0) / 2.0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.configs=tiny,huge", "configs: unknown shape 'huge'"),
        ("--config.extra=lstm:huge", "extra: lstm:huge is not <cell>:<shape>"),
        ("--config.bidirectional=lstm:huge", "bidirectional: unknown shape 'huge'"),
        ("--config.rss_configs=huge", "rss_configs: unknown shape 'huge'"),
    ],
)
def test_unknown_shape_names_exit_2_with_one_line(tmp_path, override, message):
    """Shape names are checked against `shapes` in the run (the per-key rules cannot): a bad
    one exits with the config status 2 and one line, not a traceback, and writes nothing."""
    workdir = tmp_path / "w"
    result = run_module(
        "experiments.throughput", f"--workdir={workdir}", f"--config={CONFIG}:smoke", override
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not workdir.exists()


def test_peak_memory_kills_a_child_that_runs_past_its_limit():
    """A measurement past `timeout_s` gives no figure and leaves no process behind (the
    child was joined with a timeout and then left running)."""
    import multiprocessing

    assert throughput.peak_rss("rnn_jax", "lstm", (4, 8, 8, 16), "fwd_bwd", timeout_s=0.1) is None
    assert multiprocessing.active_children() == []


def test_an_unknown_mode_fails_before_anything_is_built():
    """A misspelt "fwd_bwd" was built as a forward+backward workload with 3x the FLOPs."""
    shape = (2, 3, 4, 5)
    builders = [
        lambda mode, backend=backend: throughput_peers.build(backend, "gru", shape, mode)
        for backend in ("rnn_jax", "flax", "torch")
    ] + [
        lambda mode: throughput_peers.build_bidirectional("rnn_jax", "lstm", shape, mode),
        lambda mode: throughput_peers.build_stacked("flax", "lstm", shape, 2, mode),
        lambda mode: throughput_peers.gemm_floor(4, shape, mode),
        lambda mode: throughput_peers.transformer_block(shape, mode),
    ]
    for builder in builders:
        with pytest.raises(ValueError, match="mode='backward'; allowed: fwd, fwd_bwd"):
            builder("backward")

    # A backend a builder does not know is named with the ones it does; a known one without
    # the cell is None (skipped), as is a stack of no layers an error.
    def stacked(backend, cell, shape, mode):
        return throughput_peers.build_stacked(backend, cell, shape, 2, mode)

    unknown = [
        (throughput_peers.build, "jax", "rnn_jax, rnn_jax_reference"),
        (throughput_peers.build_bidirectional, "torch", "rnn_jax, rnn_jax_two_scans, flax$"),
        (stacked, "rnn_jax_remat", "rnn_jax, flax, torch$"),
    ]
    for builder, backend, allowed in unknown:
        with pytest.raises(ValueError, match=f"backend='{backend}'; allowed: {allowed}"):
            builder(backend, "lstm", shape, "fwd")
        assert builder("flax", "min_gru:sequential", shape, "fwd") is None
    with pytest.raises(ValueError, match="layers=0 must be >= 1"):
        throughput_peers.build_stacked("rnn_jax", "lstm", shape, 0, "fwd")


def test_peak_memory_baseline_comes_after_the_peer_import_and_a_peak_reset(monkeypatch):
    """The child's baseline must follow everything the members do not pay for themselves:
    Flax's `flax.linen` was imported inside `peers.build`, after the baseline (~6 MiB charged
    to Flax alone), and VmHWM counted from the exec, so a start-up transient above the
    baseline's RSS was charged to the workload. Run in this process with the measurement's
    steps recorded (a spawned child takes ~10 s)."""
    steps = []
    importer = types.SimpleNamespace(import_module=steps.append)  # throughput's name only
    monkeypatch.setattr(throughput, "importlib", importer)
    monkeypatch.setattr(throughput, "_reset_peak_rss", lambda: steps.append("reset"), raising=False)
    # The run's `malloc` mode applies in the child too (it starts with glibc's default).
    monkeypatch.setattr(throughput.allocator, "configure", lambda m: steps.append(f"malloc={m}"))

    class Workload:
        def run(self):
            steps.append("run")

    def build(backend, *args):
        steps.append("build")
        return Workload()

    monkeypatch.setattr(throughput.peers, "build", build)
    figures = []

    class Queue:
        put = figures.append

    for backend, imported in (("flax", ["flax.linen"]), ("torch", ["torch"]), ("rnn_jax", [])):
        steps.clear()
        throughput._rss_child(backend, "lstm", (2, 3, 4, 5), "fwd_bwd", Queue(), "retain")
        want = ["malloc=retain", *imported, "reset", "build", "run", "run"]
        assert steps == want, backend
    assert len(figures) == 3 and all(isinstance(f, float) for f in figures)


def test_rss_items_torch_threads_and_a_torchless_install_reach_the_run(tmp_path, monkeypatch):
    """The parts of `run` the smoke run leaves out (each costs a spawned process or a GPU):
    one peak-RSS row per supported (shape, cell, backend), unsupported pairs skipped and a
    failed measurement shown as –; `torch_threads` set only when torch is benchmarked; the
    `malloc` mode passed on and named in the table; `torch` dropped where it is not installed."""
    torch = pytest.importorskip("torch")
    config = cli.load_config(f"{CONFIG}:smoke", rules=throughput.RULES, trains=False)
    config.configs = config.bidirectional = config.stacked = config.sweep.lengths = ""
    config.cells, config.backends = "lstm,min_gru:sequential", "rnn_jax,torch"
    config.rss_configs, config.torch_threads, config.malloc = "tiny", 3, "retain"
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(throughput.allocator, "configure", lambda m: calls.append(("malloc", m)))
    monkeypatch.setattr(throughput.peers, "matmul_peak", lambda size: None)
    figures = {"rnn_jax": 12.0, "torch": None}  # torch's child failed or ran past its limit

    def peak_rss(backend, cell, shape, mode, malloc):
        calls.append((backend, cell, shape, mode, malloc))
        return figures[backend]

    monkeypatch.setattr(throughput, "peak_rss", peak_rss)
    results = throughput.run(config, str(tmp_path))
    tiny = tuple(config.shapes.tiny)
    assert calls == [("threads", 3), ("malloc", "retain")] + [
        ("rnn_jax", "lstm", tiny, "fwd_bwd", "retain"),
        ("torch", "lstm", tiny, "fwd_bwd", "retain"),
        ("rnn_jax", "min_gru:sequential", tiny, "fwd_bwd", "retain"),  # no torch minGRU
    ]
    rss = results["final"]["rss"]
    assert [(r["cell"], r["backend"], r["peak_rss_delta_mib"]) for r in rss] == [
        ("lstm", "rnn_jax", 12.0),
        ("lstm", "torch", None),
        ("min_gru:sequential", "rnn_jax", 12.0),
    ]
    table = (tmp_path / "throughput.md").read_text()
    assert "| lstm | tiny | rnn_jax | 12 |\n| lstm | tiny | torch | – |\n" in table
    assert "Allocator: freed memory retained in the heap" in table
    assert not (tmp_path / throughput.PLOT).exists()  # no sweep, no plot
    calls.clear()
    config.backends, config.rss_configs = "rnn_jax", ""
    throughput.run(config, str(tmp_path))
    assert calls == [("malloc", "retain")]  # torch's threads are torch's business only
    real = throughput.importlib.util.find_spec
    monkeypatch.setattr(
        throughput.importlib.util, "find_spec", lambda n: None if n == "torch" else real(n)
    )
    config.backends = "torch,rnn_jax"
    assert throughput.backends_of(config) == ["rnn_jax"]
