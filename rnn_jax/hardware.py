"""What the host CPU is, for provenance: timings compare only on the same kind of CPU.

Free of JAX so that process drivers (experiments/reproduce_report.py, the main job's report) can
use it without importing it.
"""

from __future__ import annotations

import pathlib
import platform
from typing import Any

# Widest first: the vector extension that XLA's and oneDNN's CPU kernels pick (on x86-64,
# AVX-512 machines run other GEMM kernels than AVX2 ones, so timings compare only within one;
# on Arm, SVE machines (Graviton3, Grace) run other kernels than NEON-only ones, yet all of
# them list asimd).
_SIMD_FLAGS = ("avx512f", "avx2", "avx", "sse4_2", "sve2", "sve", "asimd", "neon")


def cpu_description(cpuinfo: str | pathlib.Path = "/proc/cpuinfo") -> dict[str, Any]:
    """`{"cpu_model", "cpu_simd"}`: the CPU's model name and its widest SIMD extension, from
    `cpuinfo` (Linux); `platform.processor()` / `platform.machine()` and None elsewhere.

    Arm kernels write no model name: there the model is the implementer and part numbers
    (e.g. "Arm implementer 0x41 part 0xd40", a Neoverse V1), which tell cores apart where
    `platform.machine()` gives "aarch64" for all of them.
    """
    model, flags, arm = None, set(), {}
    try:  # bytes that are not UTF-8 (a vendor's model string) must not stop a run's provenance
        text = pathlib.Path(cpuinfo).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key in ("CPU implementer", "CPU part"):
            arm.setdefault(key, value.strip())
    if model is None and len(arm) == 2:
        model = f"Arm implementer {arm['CPU implementer']} part {arm['CPU part']}"
    simd = next((f for f in _SIMD_FLAGS if f in flags), None)
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_simd": simd,
    }
