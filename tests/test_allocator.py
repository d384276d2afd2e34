"""rnn_jax.allocator: freed large buffers stay in the heap (counted in page faults, not time),
and the switch's argument checks and its answer where the C library is not glibc.

Each check that applies the setting runs in a fresh interpreter: the setting is process-wide
and one-way, so it must not leak into the rest of the suite."""

import platform
import subprocess
import sys

import numpy as np
import pytest

from rnn_jax import allocator

# malloc, touch and free a 48 MiB buffer (above glibc's 32 MiB mmap ceiling) ten times and
# print the minor page faults of the last nine rounds.
PROBE = """
import ctypes, resource, sys
from rnn_jax import allocator
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory()
elif sys.argv[1] == "configure":  # the config key `malloc`, as the command line applies it
    allocator.configure("retain")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 48 * 2**20
def touch():  # through malloc itself (numpy's allocator asks for huge pages)
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_buffers_are_not_faulted_in_again():
    pages = 9 * 48 * 2**20 // 4096  # every round faults the whole buffer by default
    assert _faults("default") > pages // 2
    assert _faults("retain") < pages // 100
    assert _faults("configure") < pages // 100


def test_bad_trim_threshold_is_named():
    for bad in (0, -1, 2**31, 1.5, "1"):
        with pytest.raises(ValueError, match="trim_threshold"):
            allocator.retain_freed_memory(bad)


def test_configure_names_a_bad_mode_and_leaves_default_alone():
    allocator.configure("default")  # nothing to do
    with pytest.raises(ValueError, match="malloc='jemalloc'; allowed: default, retain"):
        allocator.configure("jemalloc")


def test_trim_threshold_follows_the_librarys_integer_rule(monkeypatch):
    """`True` was a 1-byte trim threshold; a NumPy integer was refused. (libc is reported as
    not glibc here, so nothing is applied to this process, even with the check removed.)"""
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", ""))
    with pytest.raises(ValueError, match="trim_threshold=True"):
        allocator.retain_freed_memory(True)
    assert allocator.retain_freed_memory(np.int64(2**20)) is False


def test_allocator_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.retain_freed_memory(np.int64(1 << 20)) is False
    with pytest.raises(ValueError, match="needs glibc's mallopt"):
        allocator.configure("retain")
    with pytest.raises(ValueError, match="trim_threshold=True"):
        allocator.retain_freed_memory(True)
