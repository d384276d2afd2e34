"""The CPU description in every run's provenance (rnn_jax/hardware.py)."""

from experiments import throughput_report
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


def test_missing_cpuinfo_falls_back_to_platform(tmp_path):
    described = hardware.cpu_description(tmp_path / "absent")
    assert described["cpu_simd"] is None
    assert described["cpu_model"]  # platform.processor() or platform.machine()


def test_provenance_records_the_cpu():
    prov = metrics.provenance()
    assert {"cpu_model", "cpu_simd", "cpu_count"} <= set(prov)


def test_throughput_report_names_the_cpu_of_old_and_new_runs():
    assert throughput_report._cpu({"cpu_model": "AMD EPYC", "cpu_simd": "avx2"}) == (
        "AMD EPYC, avx2"
    )
    # Runs recorded before the provenance had the model kept platform.processor() as "cpu".
    assert throughput_report._cpu({"cpu": "x86_64"}) == "x86_64"
