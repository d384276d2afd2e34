"""The CPU description in every run's provenance (rnn_jax/hardware.py)."""

import platform

from experiments import throughput_tables
from rnn_jax import hardware
from rnn_jax.train import metrics

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16
"""
ZEN3 = "model name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n"


def test_widest_simd_extension_and_model_name(tmp_path):
    for text, model, simd in (
        (ZEN4, "AMD EPYC 9654 96-Core Processor", "avx512f"),
        (ZEN3, "AMD EPYC 7763 64-Core Processor", "avx2"),
    ):
        (tmp_path / "cpuinfo").write_text(text)
        assert hardware.cpu_description(tmp_path / "cpuinfo") == {
            "cpu_model": model,
            "cpu_simd": simd,
        }
    (tmp_path / "cpuinfo").write_text(ARM)
    assert hardware.cpu_description(tmp_path / "cpuinfo")["cpu_simd"] == "asimd"


GRAVITON2 = (
    "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
    "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    "processor\t: 1\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
)
GRAVITON3 = GRAVITON2.replace("asimddp ssbs", "asimddp sha512 sve asimdfhm svei8mm svebf16")
GRAVITON3 = GRAVITON3.replace("0xd0c", "0xd40")


def test_arm_cores_are_told_apart_by_part_number_and_sve(tmp_path):
    """Arm's cpuinfo has no model name, and every Arm core lists asimd: a NEON-only Graviton2
    (Neoverse N1) and an SVE Graviton3 (Neoverse V1) were both ("aarch64", "asimd"), so
    their timings looked comparable."""
    described = []
    for text in (GRAVITON2, GRAVITON3):
        (tmp_path / "cpuinfo").write_text(text)
        described.append(hardware.cpu_description(tmp_path / "cpuinfo"))
    assert described == [
        {"cpu_model": "Arm implementer 0x41 part 0xd0c", "cpu_simd": "asimd"},
        {"cpu_model": "Arm implementer 0x41 part 0xd40", "cpu_simd": "sve"},
    ]


def test_missing_cpuinfo_falls_back_to_platform(tmp_path):
    described = hardware.cpu_description(tmp_path / "absent")
    assert described["cpu_simd"] is None
    assert described["cpu_model"]  # platform.processor() or platform.machine()


def test_provenance_records_the_cpu():
    prov = metrics.provenance()
    assert {"cpu_model", "cpu_simd", "cpu_count"} <= set(prov)


def test_throughput_report_names_the_cpu_of_old_and_new_runs():
    assert throughput_tables._cpu({"cpu_model": "AMD EPYC", "cpu_simd": "avx2"}) == (
        "AMD EPYC, avx2"
    )
    # Runs recorded before the provenance had the model kept platform.processor() as "cpu".
    assert throughput_tables._cpu({"cpu": "x86_64"}) == "x86_64"


def test_widest_extension_of_every_pair_and_the_first_cores_model(tmp_path):
    """AVX without AVX2 (Sandy Bridge) is "avx", SVE2 with SVE (Graviton4, Grace) "sve2";
    on a big.LITTLE Arm the model is the first core's, as x86's first "model name"; an
    implementer without a part number is no model."""
    cpuinfo = tmp_path / "cpuinfo"
    for flags, simd in (("flags\t: fpu sse4_2 avx", "avx"), ("Features\t: asimd sve sve2", "sve2")):
        cpuinfo.write_text(f"processor\t: 0\n{flags}\n")
        assert hardware.cpu_description(cpuinfo)["cpu_simd"] == simd
    little, big = (f"CPU implementer\t: 0x41\nCPU part\t: {p}\n" for p in ("0xd05", "0xd0b"))
    cpuinfo.write_text(f"processor\t: 0\n{little}\nprocessor\t: 4\n{big}")
    assert hardware.cpu_description(cpuinfo)["cpu_model"] == "Arm implementer 0x41 part 0xd05"
    cpuinfo.write_text("model name\t: Xeon A\n\nmodel name\t: Xeon B\n")
    assert hardware.cpu_description(cpuinfo)["cpu_model"] == "Xeon A"
    cpuinfo.write_text("CPU implementer\t: 0x41\n")
    fallback = platform.processor() or platform.machine()
    assert hardware.cpu_description(cpuinfo)["cpu_model"] == fallback
