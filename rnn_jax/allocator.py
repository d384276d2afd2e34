"""Keep freed large buffers in the process heap (glibc), so XLA:CPU calls stop page-faulting.

XLA:CPU allocates each call's temp buffer afresh and frees it at the end. glibc serves a
request above its mmap threshold (at most 32 MiB, raised dynamically up to there) with a
fresh `mmap` and unmaps it on `free`, so every call touches new pages: one minor page fault
per 4 KiB (a 41 MiB buffer: ~10.5k faults, ~13 ms per call measured here). Smaller chunks
come from the heap, but the heap's top is given back to the OS once more than the trim
threshold is free, and the next call faults it in again. This is what makes an L-layer stack
(whose backward keeps every layer's residuals, so its temp buffer is L times one layer's)
slower per layer than its layers run one by one once the buffer crosses 32 MiB
(docs/design.md, "Stacked layers").

`retain_freed_memory()` turns both off for the whole process, as
`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=<bytes>` would at start-up:
large requests come from the heap and freed memory stays there for the next call. It is an
opt-in, process-wide trade: freed memory is not returned to the OS (up to `trim_threshold`
at the heap's top), and every library in the process (PyTorch's CPU tensors too) is served
the same way. One limit: a thread other than the main one allocates from its own arena,
whose heaps are at most 64 MiB (glibc's HEAP_MAX_SIZE on 64-bit), so a request above that
from such a thread is still a fresh `mmap`, faulted in on every call (measured: a 100 MiB
malloc/free in a second thread faults all its pages each round, retained or not; 48 MiB
faults none once retained). XLA:CPU allocates on such worker threads: under strace a jitted
call whose temp buffer is 80 MiB maps and unmaps it from a worker thread every call, retained
or not. Free of JAX; a no-op returning False where libc is not glibc.
Experiments choose it with the runtime config key `malloc` (`--config.malloc=retain`), which
the command line applies through `configure` before anything is built.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from rnn_jax.predicates import is_int

# mallopt parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

DEFAULT_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB free at the heap's top
MODES = ("default", "retain")  # the config key `malloc`


def retain_freed_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Serve allocations from the heap (`mallopt(M_MMAP_MAX, 0)`; above 64 MiB in a thread
    other than the main one glibc still maps them, see the module docstring) and keep up to
    `trim_threshold` bytes free at its top (`mallopt(M_TRIM_THRESHOLD, ...)`).

    Returns True when glibc accepted both, False where the C library is not glibc. Raises
    ValueError for a `trim_threshold` that is not a positive int that fits a C int.
    """
    if not is_int(trim_threshold) or not 0 < trim_threshold < 2**31:
        raise ValueError(f"trim_threshold={trim_threshold!r}; allowed: an int in [1, 2**31 - 1]")
    trim_threshold = int(trim_threshold)
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )


def configure(mode: str) -> None:
    """Apply the config key `malloc`: "default" leaves the C library as it is, "retain" calls
    `retain_freed_memory()`. Raises ValueError for another mode, or for "retain" where the C
    library is not glibc."""
    if mode not in MODES:
        raise ValueError(f"malloc={mode!r}; allowed: {', '.join(MODES)}")
    if mode == "retain" and not retain_freed_memory():
        raise ValueError("malloc='retain' needs glibc's mallopt; this C library is not glibc")
