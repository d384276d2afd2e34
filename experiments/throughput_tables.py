"""The throughput benchmark's report of one run: `throughput.md`'s tables and the length plot.

Per group: tokens/s, throughput over each peer (`speedup`: the median of per-round ratios),
by wall clock and CPU time, GF/s, compile time, XLA temp memory and loop ops per step; the
XLA GEMM floor; rematerialisation, bidirectional and stacked layers; the goal lines
(`experiments.throughput_goals`); peak RSS and tokens/s against sequence length.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from experiments.throughput_goals import goal_checks, gpu_checks, per_layer_checks

# Written by a throughput run after every finished group, replaced by results.json at its end.
PARTIAL = "partial.json"


def _k(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def _rate(member: dict | None) -> str:
    if member is None:
        return "–"
    r = member["tokens_per_s"]
    return f"{_k(r['median'])} ({_k(r['min'])}–{_k(r['max'])})"


def _pair(a: Any, b: Any, fmt: str) -> str:
    return " / ".join("–" if v is None else format(v, fmt) for v in (a, b))


# Backends that run only on an NVIDIA GPU, with their column labels: their columns appear only
# where a group timed them.
GPU_KERNELS = {"rnn_jax_cudnn": "jax cuDNN", "rnn_jax_pallas": "Pallas kernel"}


def _group_rows(groups: list[dict], mode: str) -> list[str]:
    kernels = [b for b in GPU_KERNELS if any(b in g["members"] for g in groups)]
    rows = [
        "| cell | config (B, T, I, H) | rnn_jax tok/s | flax | torch | reference scan "
        + "".join(f"| {GPU_KERNELS[b]} | vs {GPU_KERNELS[b]} " for b in kernels)
        + "| vs flax | vs torch | CPU time: vs flax | vs torch | rnn_jax GF/s (% peak) "
        "| compile s ours / flax | XLA temp MiB ours / flax | loop ops/step ours / flax | load |",
        "|---" * 6 + "|---" * (2 * len(kernels)) + "|---" * 9 + "|",
    ]
    for g in (g for g in groups if g["mode"] == mode):
        m = g["members"]
        ours, flax = m.get("rnn_jax"), m.get("flax")
        speedup, cpu = g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        gf = (
            "–"
            if ours is None
            else (f"{ours['gflops']['median']:.1f} ({ours['percent_of_peak']:.0f}%)")
        )
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(ours)} "
            f"| {_rate(flax)} | {_rate(m.get('torch'))} | {_rate(m.get('rnn_jax_reference'))} "
            + "".join(f"| {_rate(m.get(b))} | {_ratio(speedup.get(b))} " for b in kernels)
            + f"| {_ratio(speedup.get('flax'))} | {_ratio(speedup.get('torch'))} "
            f"| {_ratio(cpu.get('flax'))} | {_ratio(cpu.get('torch'))} | {gf} "
            f"| {_pair(ours and ours['compile_s'], flax and flax['compile_s'], '.2f')} "
            f"| {_pair(ours and ours['xla_temp_mib'], flax and flax['xla_temp_mib'], '.0f')} "
            f"| {_loop_ops(ours)} / {_loop_ops(flax)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _loop_ops(member: dict | None) -> str:
    """A member's per-step instructions, one term per loop (forward+backward: "12+18"); "–"
    for members without loops or runs from before they were recorded."""
    ops = member and member.get("ops_per_step")
    return "+".join(str(n) for n in ops) if ops else "–"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


FLOOR = "xla_gemm_floor"


def speedup(seconds_a: list[float], seconds_b: list[float]) -> float:
    """a's throughput over b's from their per-round call times: the median of the per-round
    ratios (rounds are interleaved, so each ratio compares calls made side by side)."""
    return float(np.median(np.asarray(seconds_b) / np.asarray(seconds_a)))


def _over(m: dict, a: str, b: str) -> float | None:
    """Member a's throughput over member b's (`speedup`); None if either is missing."""
    if a not in m or b not in m:
        return None
    return speedup(m[a]["seconds"], m[b]["seconds"])


def floor_rows(groups: list[dict]) -> list[str]:
    """The GEMM floor beside rnn_jax, torch and Flax: where torch's throughput over the floor's
    is near or above 1, torch's whole layer runs as fast as XLA runs that layer's matmuls."""
    rows = [
        "| cell | config (B, T, I, H) | mode | XLA GEMM floor tok/s | floor GF/s (% peak) "
        "| rnn_jax ÷ floor | torch ÷ floor | flax ÷ floor | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m = g["members"]
        if FLOOR not in m:
            continue
        floor = m[FLOOR]
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {g['mode']} "
            f"| {_rate(floor)} | {floor['gflops']['median']:.1f} "
            f"({floor['percent_of_peak']:.0f}%) | {_ratio(_over(m, 'rnn_jax', FLOOR))} "
            f"| {_ratio(_over(m, 'torch', FLOOR))} | {_ratio(_over(m, 'flax', FLOOR))} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _remat_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | config (B, T, I, H) | remat tok/s | time cost (remat time ÷ default) "
        "| CPU time cost | XLA temp MiB remat / default / flax | remat ÷ flax memory | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m = g["members"]
        if g["mode"] != "fwd_bwd" or "rnn_jax_remat" not in m:
            continue
        remat, ours, flax = m["rnn_jax_remat"], m.get("rnn_jax"), m.get("flax")
        temps = [x and x["xla_temp_mib"] for x in (remat, ours, flax)]
        share = "–" if not temps[2] else f"{temps[0] / temps[2]:.2f}×"
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(remat)} "
            f"| {_ratio(g['rnn_jax_speedup_over'].get('rnn_jax_remat'))} "
            f"| {_ratio(g['rnn_jax_cpu_speedup_over'].get('rnn_jax_remat'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} | {share} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _bidirectional_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | config (B, T, I, H) | one scan tok/s | two scans | flax Bidirectional "
        "| unidirectional | per-layer speed | CPU time | vs two scans | vs flax | CPU time: "
        "vs two scans | vs flax | XLA temp MiB one scan / two scans / flax | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        m, speedup, cpu = g["members"], g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        temps = [m.get(k, {}).get("xla_temp_mib") for k in ("rnn_jax", "rnn_jax_two_scans", "flax")]
        rows.append(
            f"| {g['cell']} | {g['shape_name']} {tuple(g['shape'])} | {_rate(m.get('rnn_jax'))} "
            f"| {_rate(m.get('rnn_jax_two_scans'))} | {_rate(m.get('flax'))} "
            f"| {_rate(m.get('unidirectional'))} | {_ratio(g['per_layer_speed'])} "
            f"| {_ratio(g['cpu_per_layer_speed'])} | {_ratio(speedup.get('rnn_jax_two_scans'))} "
            f"| {_ratio(speedup.get('flax'))} | {_ratio(cpu.get('rnn_jax_two_scans'))} "
            f"| {_ratio(cpu.get('flax'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _stacked_rows(groups: list[dict]) -> list[str]:
    rows = [
        "| cell | layers | config (B, T, I, H) | stack tok/s | flax stack | torch stack "
        "| first layer alone | upper layer alone | per-layer speed | CPU time | vs flax "
        "| vs torch | CPU time: vs flax | vs torch | XLA temp MiB stack / flax | load |",
        "|---" * 16 + "|",
    ]
    for g in groups:
        m, speedup, cpu = g["members"], g["rnn_jax_speedup_over"], g["rnn_jax_cpu_speedup_over"]
        temps = [m.get(k, {}).get("xla_temp_mib") for k in ("rnn_jax", "flax")]
        rows.append(
            f"| {g['cell']} | {g['layers']} | {g['shape_name']} {tuple(g['shape'])} "
            f"| {_rate(m.get('rnn_jax'))} | {_rate(m.get('flax'))} | {_rate(m.get('torch'))} "
            f"| {_rate(m.get('first_layer'))} | {_rate(m.get('upper_layer'))} "
            f"| {_ratio(g['per_layer_speed'])} | {_ratio(g['cpu_per_layer_speed'])} "
            f"| {_ratio(speedup.get('flax'))} | {_ratio(speedup.get('torch'))} "
            f"| {_ratio(cpu.get('flax'))} | {_ratio(cpu.get('torch'))} "
            f"| {' / '.join('–' if t is None else f'{t:.0f}' for t in temps)} "
            f"| {np.median(g['load']):.1f} |"
        )
    return rows


def _cpu(prov: dict[str, Any]) -> str:
    """The CPU as the run recorded it: model and widest SIMD extension (runs before the
    provenance had them recorded `platform.processor()` as "cpu")."""
    model = prov.get("cpu_model", prov.get("cpu"))
    simd = prov.get("cpu_simd")
    return f"{model}, {simd}" if simd else str(model)


def _malloc(prov: dict[str, Any]) -> str:
    """How the run's process allocated (runs before the `malloc` option: glibc's default)."""
    if prov.get("malloc", "default") == "retain":
        return (
            "Allocator: freed memory retained in the heap for every member "
            "(`rnn_jax.allocator.retain_freed_memory`, `--config.malloc=retain`)."
        )
    return "Allocator: glibc's default (large buffers mmapped and page-faulted in per call)."


def _section(title: str, text: str, rows: list[str]) -> list[str]:
    """A `## title` section of throughput.md: an explanatory paragraph, then a table."""
    return ["", f"## {title}", "", text, "", *rows]


def markdown(results: dict[str, Any]) -> str:
    final, prov = results["final"], results["provenance"]
    groups = final["groups"]
    unfinished = []
    if not results["timing"].get("complete", True):  # runs before session 7 lack the key
        unfinished = [
            f"**Unfinished run** (`{PARTIAL}`): only the groups measured before it "
            "stopped are below.",
            "",
        ]
    timed = groups + final.get("bidirectional", []) + final.get("stacked", [])
    peaks = [g["matmul_peak_gflops"]["median"] for g in timed]
    if peaks:
        peak = (
            f"Matmul peak (in-process n³ jnp.dot): median {np.median(peaks):.0f} GF/s "
            f"(range over groups {min(peaks):.0f}–{max(peaks):.0f}). "
        )
    else:  # e.g. a sweep-only run (`configs` empty): no group timed the peak
        peak = "Matmul peak: not timed (no groups). "
    packages = prov.get("packages", {})
    lines = [
        "# Throughput: one recurrent layer, float32",
        "",
        f"{prov['cpu_count']} CPUs ({_cpu(prov)}), backend {prov['backend']}; "
        f"jax {packages.get('jax')}, flax {packages.get('flax')}. "
        f"Load average (1, 5, 15 min) before {tuple(round(v, 1) for v in prov['load_before'])}, "
        f"after {tuple(round(v, 1) for v in prov['load_after'])}. " + peak + _malloc(prov),
        "",
        *unfinished,
        "Entries: tokens/s, median (min–max) over interleaved rounds. vs flax / vs torch: "
        "rnn_jax's throughput over the peer's, median of per-round ratios (> 1: rnn_jax is "
        "faster); CPU time: the same ratio from the CPU time this process used per call "
        "(the work done; less disturbed by other processes than the wall clock). "
        "GF/s counts matmul FLOPs against the matmul peak timed in the same rounds. "
        "loop ops/step: the instructions each `while` loop's compiled body runs per step "
        "(forward+backward: forward loop + reverse loop; rnn_jax/loop_ops.py): on XLA:CPU "
        "each is one thunk dispatched per step. "
        f"load: median 1-minute load average over the rounds ({prov['cpu_count']} CPUs: above "
        f"~{prov['cpu_count']} the timings are shared with other processes).",
    ]
    for mode, title in (
        ("fwd_bwd", "forward + backward (grads w.r.t. params and inputs)"),
        ("fwd", "forward"),
    ):
        if any(g["mode"] == mode for g in groups):
            lines += ["", f"## {title}", "", *_group_rows(groups, mode)]
    if any("rnn_jax_remat" in g["members"] for g in groups):
        lines += [
            "",
            "## forward + backward with rematerialisation (`unroll(remat=True)`)",
            "",
            *_remat_rows(groups),
        ]
    if any(FLOOR in g["members"] for g in groups):
        lines += [
            "",
            "## The XLA GEMM floor (experiments.throughput_peers.gemm_floor)",
            "",
            "Only the layer's matmuls (input projection hoisted into one GEMM, the recurrent "
            "and backward GEMMs per step, the weight and input gradients one GEMM each), no "
            "gate arithmetic. ÷ floor: a member's throughput over the floor's, median of "
            "per-round ratios. torch ÷ floor near or above 1: torch's whole layer runs as fast "
            "as XLA runs that layer's matmuls alone, so reaching torch there takes faster "
            "matmuls, not less overhead. It is a reference, not a proven bound: another "
            "arrangement of the same matmuls can be faster (rnn_jax ÷ floor above 1).",
            "",
            *floor_rows(groups),
        ]
    bidirectional = final.get("bidirectional", [])
    if bidirectional:
        lines += _section(
            "bidirectional layer, forward + backward (tokens = batch × time)",
            "per-layer speed: 2 × (unidirectional time) ÷ (bidirectional time), per round "
            "(1.0: a bidirectional layer costs two unidirectional ones). vs: the one-scan "
            "layer's throughput over the peer's.",
            _bidirectional_rows(bidirectional),
        )
    stacked = final.get("stacked", [])
    if stacked:
        lines += _section(
            "stacked layers, forward + backward (tokens = batch × time)",
            "per-layer speed: (first layer's time + (L − 1) × upper layer's time, each run "
            "alone) ÷ (the L-layer stack's time), per round (1.0: a stack costs its layers run "
            "one by one). vs: rnn_jax's stack's throughput over the peer's stack (Flax "
            "`nn.Sequential` of `nn.RNN`s; torch `num_layers=L`).",
            _stacked_rows(stacked),
        )
    checks = goal_checks(groups, prov["backend"]) + per_layer_checks(bidirectional + stacked)
    if prov["backend"] == "gpu":
        checks += gpu_checks(groups, final["sweep"])
    if checks:
        lines += ["", "## Goals (issue 7)", "", *checks]
    failures = [
        f"- {g['cell']} {g['shape_name']} {g['mode']}, {backend}: {message}"
        for g in groups
        for backend, message in g.get("failed", {}).items()
    ]
    if failures:
        lines += ["", "## Members that failed to build or compile (shown as –)", "", *failures]
    if final["rss"]:
        lines += [
            "",
            "## Peak RSS growth of building (compiling, for JAX) and running forward + backward "
            "(one fresh process per implementation)",
            "",
            "| cell | config | backend | MiB |",
            "|---|---|---|---|",
        ]
        for r in final["rss"]:
            mib = "–" if r["peak_rss_delta_mib"] is None else f"{r['peak_rss_delta_mib']:.0f}"
            lines.append(f"| {r['cell']} | {r['shape_name']} | {r['backend']} | {mib} |")
    if final["sweep"]:
        lengths = sorted({r["time"] for r in final["sweep"]})
        tokens = {r["time"]: r["batch"] * r["time"] for r in final["sweep"]}
        lines += [
            "",
            "## Forward + backward tokens/s against sequence length (fixed tokens per call)",
            "",
            "| cell | " + " | ".join(f"T={t} (B={tokens[t] // t})" for t in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for cell in dict.fromkeys(r["cell"] for r in final["sweep"]):
            by_t = {r["time"]: r for r in final["sweep"] if r["cell"] == cell}
            cells = [_k(by_t[t]["tokens_per_s"]["median"]) if t in by_t else "–" for t in lengths]
            lines.append(f"| {cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: list[dict], path: pathlib.Path) -> None:
    """tokens/s (median, min-max bars) against T for every cell of the sweep."""
    if not sweep:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in dict.fromkeys(r["cell"] for r in sweep):
        rows = sorted((r for r in sweep if r["cell"] == cell), key=lambda r: r["time"])
        t = [r["time"] for r in rows]
        med = np.array([r["tokens_per_s"]["median"] for r in rows])
        low = med - np.array([r["tokens_per_s"]["min"] for r in rows])
        high = np.array([r["tokens_per_s"]["max"] for r in rows]) - med
        ax.errorbar(t, med, yerr=[low, high], marker="o", capsize=3, label=cell)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (batch x T fixed)")
    ax.set_ylabel("forward+backward tokens/s")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
