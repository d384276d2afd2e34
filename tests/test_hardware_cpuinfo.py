"""The CPU description (rnn_jax.hardware) read from a /proc/cpuinfo that is not UTF-8."""

from rnn_jax import hardware


def test_cpu_description_reads_cpuinfo_that_is_not_utf8(tmp_path):
    """A model string in Latin-1 raised UnicodeDecodeError, which stopped every run's
    provenance; a model name holding ':' and an empty one are read as they are."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_bytes(b"processor\t: 0\nmodel name\t: Caf\xe9 CPU\nflags\t\t: sse avx avx2\n")
    assert hardware.cpu_description(cpuinfo) == {"cpu_model": "Caf\ufffd CPU", "cpu_simd": "avx2"}
    cpuinfo.write_bytes(b"model name\t: Vendor: X1\nflags\t: sse4_2\n")
    assert hardware.cpu_description(cpuinfo) == {"cpu_model": "Vendor: X1", "cpu_simd": "sse4_2"}
    cpuinfo.write_bytes(b"model name\t:\nflags\t:\n")
    described = hardware.cpu_description(cpuinfo)
    assert described["cpu_model"] and described["cpu_simd"] is None
