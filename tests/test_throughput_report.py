"""The throughput benchmark's report: no timings, pure logic.

Issue 7's speed goals against torch and Flax (1.0x / 1.3x) are CPU goals; on a GPU its goal
is 0.9x cuDNN at medium, and GPU runs' ratios do not count toward the CPU goals. Goal checks
name the goals a missing peer leaves unmeasured, a run without groups writes its report, a
rerun that stops is not taken for the finished run before it, and the median's interval is
checked against brute-force enumeration."""

import json
import types

import pytest

from experiments import throughput, throughput_goals, throughput_report, throughput_tables
from rnn_jax import exits
from rnn_jax.train import cli

CONFIG = "experiments/configs/throughput.py"


def test_a_run_without_groups_writes_its_report(tmp_path):
    """configs empty (a sweep-only run) is legal: the report says the matmul peak was not
    timed instead of failing on min() of no groups after the sweep was measured. The sweep
    holds batch x time at `sweep.tokens` (64 here: T=4, B=16)."""
    config = cli.load_config(
        f"{CONFIG}:smoke",
        {
            "configs": "",
            "bidirectional": "",
            "stacked": "",
            "sweep.cells": "min_gru:sequential",
            "sweep.lengths": "4",
        },
        rules=throughput.RULES,
        trains=False,
    )
    throughput.run(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["final"]["groups"] == []
    (row,) = results["final"]["sweep"]
    assert (row["time"], row["batch"]) == (4, 16)
    table = (tmp_path / "throughput.md").read_text()
    assert "Matmul peak: not timed (no groups)." in table
    assert "| T=4 (B=16) |" in table and "| min_gru:sequential |" in table


def _group(cell, shape_name, mode, members, speedups, shape=None):
    """A timed group; its shape issue 7's of that name unless `shape` is given."""
    return {
        "cell": cell,
        "shape_name": shape_name,
        "shape": shape or throughput_goals.GOAL_SHAPES.get(shape_name, (4, 8, 8, 16)),
        "mode": mode,
        "members": {name: {"xla_temp_mib": 10.0} for name in members},
        "rnn_jax_speedup_over": speedups,
    }


def test_goal_checks_name_the_goals_a_missing_peer_leaves_unmeasured():
    """torch not installed (or a peer left out of `backends`): its goals are listed as not
    measured, not dropped from the Goals section as if there were none."""
    no_torch = _group("lstm", "small", "fwd_bwd", ["rnn_jax", "flax"], {"flax": 1.4})
    lines = throughput_goals.goal_checks([no_torch])
    assert "- MET: lstm small fwd_bwd vs flax: 1.40× wall-clock (goal ≥ 1.3×)" in lines
    assert "- NOT MEASURED: lstm small fwd_bwd vs torch: no torch in this run" in lines
    no_flax = _group("gru", "long", "fwd_bwd", ["rnn_jax", "torch"], {"torch": 1.1})
    lines = throughput_goals.goal_checks([no_flax])
    assert "- NOT MEASURED: gru long fwd_bwd vs flax: no flax in this run" in lines
    assert any(
        line.startswith("- NOT MEASURED: gru long fwd_bwd XLA temp memory") for line in lines
    )
    only_peers = _group("lstm", "medium", "fwd", ["flax", "torch"], {})
    assert throughput_goals.goal_checks([only_peers]) == [
        "- NOT MEASURED: lstm medium fwd vs torch: no rnn_jax in this run",
        "- NOT MEASURED: lstm medium fwd vs flax: no rnn_jax in this run",
    ]
    # Groups no goal is about say nothing: minGRU, or a shape outside the goals.
    assert throughput_goals.goal_checks([_group("min_gru", "small", "fwd", ["rnn_jax"], {})]) == []
    assert throughput_goals.goal_checks([_group("lstm", "tiny", "fwd", ["rnn_jax"], {})]) == []


def test_a_shape_changed_by_a_flag_is_not_judged_or_pooled_as_issue_7s():
    """`--config.shapes.small=(8, 64, 128, 256)` still names its groups "small": they were
    judged against issue 7's small goals and pooled with real small runs across runs. Goals
    and rows now go by the shape's values; the changed shape is named with them, unjudged."""
    changed = (8, 64, 128, 256)
    odd = _group("lstm", "small", "fwd_bwd", ["rnn_jax", "flax"], {"flax": 2.0}, changed)
    lines = throughput_goals.goal_checks([odd])
    assert lines[0] == (
        "- NOT JUDGED: lstm small (8, 64, 128, 256) fwd_bwd: not issue 7's small "
        "(32, 64, 128, 256), so no speed goal applies"
    )
    assert not any("vs flax" in line or "vs torch" in line for line in lines)
    assert lines[1].startswith("- MET: lstm small (8, 64, 128, 256) fwd_bwd XLA temp memory")
    # Issue 7's medium values under another name are not its medium either (GPU goal).
    renamed = _group("lstm", "small", "fwd_bwd", ["rnn_jax"], {"torch": 0.95}, (64, 128, 256, 512))
    assert throughput_goals.gpu_checks([renamed], []) == []

    def run(group, per_layer):
        bidirectional = {k: group[k] for k in ("cell", "shape_name", "shape")}
        bidirectional |= {"per_layer_speed": per_layer, "cpu_per_layer_speed": per_layer}
        return {"final": {"groups": [group], "bidirectional": [bidirectional]}}

    real = _group("lstm", "small", "fwd_bwd", ["rnn_jax", "flax"], {"flax": 1.0})
    table = throughput_report.across_runs([run(real, 0.9), run(odd, 1.2)], per_run=True)
    assert "| lstm small fwd_bwd vs flax | ≥ 1.3× | 1.00× | – | missed |" in table
    assert "| lstm small bidirectional per-layer speed | ≥ 1.0× | 0.90× | – |" in table
    assert (
        "| lstm small (8, 64, 128, 256) bidirectional per-layer speed | ≥ 1.0× | – | 1.20× |"
        in (table)
    )
    assert table.endswith(
        "- NOT JUDGED in run 2: lstm small (8, 64, 128, 256) fwd_bwd: not issue 7's small "
        "(32, 64, 128, 256), so no speed goal applies\n"
    )
    # The benchmark's config takes issue 7's shapes from the report: one definition.
    config = cli.load_config(f"{CONFIG}:cpu", rules=throughput.RULES, trains=False)
    assert {n: tuple(config.shapes[n]) for n in throughput_goals.GOAL_SHAPES} == (
        throughput_goals.GOAL_SHAPES
    )


def refused(capsys, *workdirs) -> str:
    """`throughput_report.main` on `workdirs`, which it refuses (exit 2); -> its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        throughput_report.main(["throughput_report", *map(str, workdirs)])
    assert exit_info.value.code == exits.REFUSED
    return capsys.readouterr().err


def test_a_rerun_that_stops_is_not_taken_for_the_finished_run_before_it(
    tmp_path, monkeypatch, capsys
):
    """A previous run's results.json in the workdir stayed while a rerun measured: stopped,
    the rerun left its partial.json beside the old results.json, and throughput_report read
    the old run as this directory's finished one. Each refusal is one line, exit 2 (it was
    absl's usage error: the module's help, then the message, exit 1)."""
    for name, text in (("results.json", "{}"), ("throughput.md", "old"), (throughput.PLOT, "")):
        (tmp_path / name).write_text(text)
    config = cli.load_config(f"{CONFIG}:smoke", rules=throughput.RULES, trains=False)
    config.backends, config.modes, config.bidirectional = "rnn_jax", "fwd", ""

    def stopped(*args):
        raise KeyboardInterrupt("stopped")

    monkeypatch.setattr(throughput, "time_stacked", stopped)
    with pytest.raises(KeyboardInterrupt):
        throughput.run(config, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [throughput_tables.PARTIAL]
    assert "unfinished run: only partial.json" in refused(capsys, tmp_path)
    # Another experiment's results (a KeyError traceback; a null `final`: a TypeError one) or a
    # torn file (JSONDecodeError; not UTF-8: a UnicodeDecodeError traceback).
    other = tmp_path / "other"
    other.mkdir()
    cases = [(b'{"final": {}}', "no final.groups"), (b'{"final": null}', "no final.groups")]
    for data, message in cases + [(b'{"fin', "not JSON"), (b'\xff{"final"', "not JSON")]:
        (other / "results.json").write_bytes(data)
        assert message in refused(capsys, other)
    assert refused(capsys) == "give one or more throughput workdirs (each with results.json)\n"
    # A finished run that timed the floor: the goal table, then the floor's.
    results = _results("cpu", 1.1)
    seconds = {"rnn_jax": [1.0], "torch": [1.1], throughput_tables.FLOOR: [0.5]}
    members = {name: MEMBER | {"seconds": s} for name, s in seconds.items()}
    results["final"]["groups"][0]["members"] = members
    (other / "results.json").write_text(json.dumps(results))
    monkeypatch.setattr(throughput_report, "FLAGS", types.SimpleNamespace(per_run=False))
    throughput_report.main(["throughput_report", str(other)])
    out = capsys.readouterr().out
    assert out.startswith(throughput_report.across_runs([results]))
    assert "The XLA GEMM floor (the runs that timed it)" in out
    assert "| lstm medium fwd_bwd | 1 | 0.45× (0.45–0.45) | 0.50× (0.50–0.50) |" in out


MEMBER = {
    "tokens_per_s": {"median": 2e3, "min": 1e3, "max": 3e3},
    "gflops": {"median": 1.0},
    "percent_of_peak": 1.0,
    "compile_s": None,
    "xla_temp_mib": None,
    "ops_per_step": None,
}


def _results(backend: str, torch_ratio: float) -> dict:
    group = {
        "cell": "lstm",
        "shape_name": "medium",
        "shape": [64, 128, 256, 512],
        "mode": "fwd_bwd",
        "members": {"rnn_jax": MEMBER, "torch": MEMBER},
        "rnn_jax_speedup_over": {"torch": torch_ratio},
        "rnn_jax_cpu_speedup_over": {"torch": torch_ratio},
        "matmul_peak_gflops": {"median": 100.0},
        "load": [0.5],
    }
    return {
        "final": {"groups": [group], "bidirectional": [], "stacked": [], "rss": [], "sweep": []},
        "timing": {"complete": True},
        "provenance": {
            "cpu_count": 16,
            "cpu_model": "x",
            "backend": backend,
            "packages": {},
            "load_before": (0.0, 0.0, 0.0),
            "load_after": (0.0, 0.0, 0.0),
        },
    }


def test_cpu_speed_goals_are_not_judged_on_a_gpu():
    gpu = throughput_tables.markdown(_results("gpu", 0.95))
    assert "- MET: lstm medium fwd_bwd vs torch (cuDNN): 0.95× (goal ≥ 0.9×)" in gpu
    assert "wall-clock (goal ≥ 1.0×" not in gpu  # the CPU goal, judged on the same ratio
    assert "- NOT JUDGED on gpu: the speed goals against torch and Flax" in gpu
    cpu = throughput_tables.markdown(_results("cpu", 0.95))
    assert "- MISSED: lstm medium fwd_bwd vs torch: 0.95× wall-clock (goal ≥ 1.0×" in cpu
    assert "cuDNN" not in cpu and "NOT JUDGED" not in cpu
    # The load note names this run's CPUs, not a fixed "2 cores".
    assert "(16 CPUs: above ~16 the timings" in cpu and "2 cores" not in cpu
    # Across runs: only the CPU runs' ratios count toward the CPU goals.
    runs = [_results("cpu", r) for r in (0.9, 0.91, 0.92, 0.93, 0.94)] + [_results("gpu", 2.0)]
    # Per-layer goals hold on a GPU too, in rows of their own: its 0.5x made the CPU row split.
    for results, speed in zip(runs, (1.05,) * 5 + (0.5,), strict=True):
        group = {"cell": "gru", "shape_name": "long", "shape": [16, 1024, 64, 128]}
        group["per_layer_speed"] = speed
        results["final"]["bidirectional"] = [group | {"cpu_per_layer_speed": speed}]
    table = throughput_report.across_runs(runs)
    assert "| lstm medium fwd_bwd vs torch | ≥ 1.0× | 5 | 0 | 0.90–0.94× | missed |" in table
    assert "| gru long bidirectional per-layer speed | ≥ 1.0× | 5 | 5 | 1.05–1.05× | met |" in table
    assert "| gru long bidirectional per-layer speed on gpu | ≥ 1.0× | 1 | 0 |" in table
    assert "vs torch" not in throughput_report.across_runs(runs[-1:])


def test_median_interval_against_brute_force_enumeration():
    """Independent of the binomial formula: with n draws, [x(k), x(n+1-k)] misses the median
    exactly when fewer than k draws fall on one side of it, so its coverage is the share of
    the 2^n below/above patterns with at least k on each side; k is the largest with >= 95%."""
    import itertools

    for n in range(1, 15):
        patterns = list(itertools.product((0, 1), repeat=n))

        def coverage(k, n=n, patterns=patterns):
            return sum(k <= sum(p) <= n - k for p in patterns) / len(patterns)

        k = max([k for k in range(1, (n + 1) // 2 + 1) if coverage(k) >= 0.95], default=1)
        _, low, high, cover = throughput_report.median_interval(list(range(n)))
        assert (low, high) == (k - 1, n - k) and cover == pytest.approx(coverage(k)), n


def test_a_gpu_kernel_that_fails_to_build_is_reported_and_the_group_still_timed(monkeypatch):
    """A GPU kernel backend (cuDNN, Pallas; never run on a GPU yet) that raised while it was
    built or compiled ended the whole benchmark; it is named instead. Any other backend's
    failure still ends it. The group's ratios are rnn_jax's throughput over the peer's, the
    median of per-round ratios (not the ratio of medians), wall-clock and CPU time each
    from its own samples."""
    config = cli.load_config(
        "experiments/configs/throughput.py:smoke",
        {"backends": "rnn_jax,rnn_jax_pallas,flax"},
        rules=throughput.RULES,
        trains=False,
    )
    member = types.SimpleNamespace(
        run=None, flops=1e6, tokens=100, compile_s=0.0, temp_bytes=None, ops_per_step=None
    )

    errors = [NotImplementedError("unsupported types: tensor<16x8xbf16>\nmore")]

    def build(backend, *args):
        if backend == "rnn_jax_pallas":
            raise errors[0]
        return member

    def interleaved(runs, *args):
        wall = {"rnn_jax": [1.0, 2.0, 3.0], "flax": [3.0, 3.0, 9.0], "matmul": [1.0, 2.0, 3.0]}
        cpu = {"rnn_jax": [1.0] * 3, "flax": [1.5, 0.5, 4.0], "matmul": [1.0] * 3}
        assert set(runs) == set(wall)
        return wall, cpu, [0]

    monkeypatch.setattr(throughput.peers, "build", build)
    monkeypatch.setattr(throughput, "interleaved", interleaved)
    peak = types.SimpleNamespace(run=None, flops=1e9)
    shape_name = next(iter(config.shapes))
    group = throughput.time_group(config, "lstm", shape_name, "fwd_bwd", peak)
    assert list(group["members"]) == ["rnn_jax", "flax"]
    # Per round flax / rnn_jax seconds: 3, 1.5, 3 wall-clock (ratio of medians: 1.5); CPU time
    # 1.5, 0.5, 4.
    assert group["rnn_jax_speedup_over"] == {"flax": 3.0}
    assert group["rnn_jax_cpu_speedup_over"] == {"flax": 1.5}
    # Rates are work / seconds per round (100 tokens in 1, 2, 3 s); % of peak is 1e6 against
    # the matmul's 1e9 FLOPs in the same times.
    ours = group["members"]["rnn_jax"]
    assert ours["tokens_per_s"] == pytest.approx({"median": 50.0, "min": 100 / 3, "max": 100.0})
    assert ours["percent_of_peak"] == pytest.approx(0.1)
    assert ours["cpu_tokens_per_s"]["median"] == 100.0  # 100 tokens in 1 s of CPU time
    message = "NotImplementedError: unsupported types: tensor<16x8xbf16>"
    assert group["failed"] == {"rnn_jax_pallas": message}
    # an empty message (a bare assert, a NotImplementedError()) was an IndexError that ended
    # the run from inside the handler
    for errors[0], named in [(AssertionError(), "AssertionError"), (RuntimeError("\nb"), "b")]:
        again = throughput.time_group(config, "lstm", shape_name, "fwd_bwd", peak)
        assert again["failed"]["rnn_jax_pallas"].endswith(named)
    results = _results("gpu", 0.95)
    results["final"]["groups"][0]["failed"] = group["failed"]
    report = throughput_tables.markdown(results)
    assert f"- lstm medium fwd_bwd, rnn_jax_pallas: {message}" in report
    monkeypatch.setattr(throughput.peers, "build", lambda backend, *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        throughput.time_group(config, "lstm", shape_name, "fwd_bwd", peak)


def test_bidirectional_stacked_and_remat_rows_put_each_figure_in_its_column():
    """Every member's rate, ratio and memory figure lands under its own header (distinct
    values: a swapped pair of columns, or a wall-clock figure in a CPU-time one, shows)."""

    def member(k, mib=None):
        return {"tokens_per_s": {"median": k, "min": k, "max": k}, "xla_temp_mib": mib}

    shape = {"cell": "gru", "shape_name": "small", "shape": [32, 64, 128, 256], "load": [1.0]}
    ratios = {
        "rnn_jax_speedup_over": {"rnn_jax_two_scans": 1.1, "flax": 1.2, "torch": 1.5},
        "rnn_jax_cpu_speedup_over": {"rnn_jax_two_scans": 1.3, "flax": 1.4, "torch": 1.6},
        "per_layer_speed": 0.9,
        "cpu_per_layer_speed": 0.8,
    }
    names = ("rnn_jax", "rnn_jax_two_scans", "flax", "unidirectional")
    members = {n: member(k, 10.0 * k) for k, n in enumerate(names, 1)}
    rows = throughput_tables._bidirectional_rows([shape | ratios | {"members": members}])
    assert rows[0].count("|") == rows[1].count("|") == rows[2].count("|")
    assert rows[2] == (
        "| gru | small (32, 64, 128, 256) | 1 (1–1) | 2 (2–2) | 3 (3–3) | 4 (4–4) | 0.90× "
        "| 0.80× | 1.10× | 1.20× | 1.30× | 1.40× | 10 / 20 / 30 | 1.0 |"
    )
    names = ("rnn_jax", "flax", "torch", "first_layer", "upper_layer")
    members = {n: member(k, 10.0 * k) for k, n in enumerate(names, 1)}
    rows = throughput_tables._stacked_rows([shape | ratios | {"members": members, "layers": 3}])
    assert rows[0].count("|") == rows[1].count("|") == rows[2].count("|")
    assert rows[2] == (
        "| gru | 3 | small (32, 64, 128, 256) | 1 (1–1) | 2 (2–2) | 3 (3–3) | 4 (4–4) "
        "| 5 (5–5) | 0.90× | 0.80× | 1.20× | 1.50× | 1.40× | 1.60× | 10 / 20 | 1.0 |"
    )
    members = {"rnn_jax_remat": member(1, 6.0), "rnn_jax": member(2, 12.0), "flax": member(3, 10.0)}
    ratios = {
        "rnn_jax_speedup_over": {"rnn_jax_remat": 1.25},
        "rnn_jax_cpu_speedup_over": {"rnn_jax_remat": 1.15},
    }
    group = shape | ratios | {"members": members, "mode": "fwd_bwd"}
    rows = throughput_tables._remat_rows([group])
    assert rows[0].count("|") == rows[1].count("|") == rows[2].count("|")
    assert rows[2] == (
        "| gru | small (32, 64, 128, 256) | 1 (1–1) | 1.25× | 1.15× | 6 / 12 / 10 | 0.60× | 1.0 |"
    )


def test_the_report_and_its_config_define_no_flag_on_import():
    """The benchmark's config imported this module (`GOAL_SHAPES`, now in throughput_goals),
    and `launch.sweep` and `experiments.reproduce` load that config: `--per_run` was defined
    in their programs too. It is now defined only when the report runs as a program."""
    import subprocess
    import sys

    from absl import flags

    cli.load_config(f"{CONFIG}:smoke", rules=throughput.RULES, trains=False)
    assert "per_run" not in flags.FLAGS  # this module is imported above, the config here
    usage = subprocess.run(
        [sys.executable, "-m", "experiments.throughput_report", "--helpfull"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--[no]per_run" in usage.stdout, usage.stdout + usage.stderr
