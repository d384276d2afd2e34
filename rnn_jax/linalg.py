"""QR and SVD that call LAPACK one matrix at a time on CPU, so they cannot hang XLA:CPU.

jaxlib 0.10's CPU LAPACK kernels (`jax::ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc)
split a batch of matrices into chunks, queue the chunks on XLA:CPU's intra-op thread pool and
block until they are done, while the kernel itself runs on a thread of that same pool. When as
many batched LAPACK kernels run at once as the pool has threads (two on a 2-core machine; XLA
runs independent thunks concurrently, e.g. the orthogonal initialisations of an encoder's and a
decoder's recurrent weights in one jitted init), every pool thread waits for chunks that no
thread is free to run, and the process hangs with its CPUs idle (docs/design.md, "The wedge").
Open-source jaxlib compiles the parallel path out from 0.11.1; 0.10.2 is what this project
runs. A single matrix is never split, so these functions hand LAPACK one matrix per call, in a
sequential `lax.map` over all batch axes, including those `vmap` adds (through
`jax.custom_batching.custom_vmap`). Each matrix goes through the same LAPACK routine as
before, so results are bitwise those of the batched call. On other backends (cuSOLVER, TPU)
they are `jnp.linalg`'s batched calls. Not differentiable (the callers initialise weights and
measure Jacobian spectra; neither is differentiated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _one_matrix_at_a_time(fn: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
    """`fn` (one `[m, n]` matrix -> pytree of arrays) applied over any leading axes and under
    any number of `vmap`s, one matrix per `fn` call, in sequence, on CPU."""

    @jax.custom_batching.custom_vmap
    def single(a: jax.Array) -> Any:
        return fn(a)

    @single.def_vmap
    def single_batched(axis_size: int, in_batched: list[bool], a: jax.Array) -> tuple:
        # Called only when `a` (the one argument) carries the vmapped axis.
        out = jax.lax.map(single, a)
        return out, jax.tree.map(lambda _: True, out)

    def apply(a: jax.Array) -> Any:
        if jax.default_backend() != "cpu":
            return fn(a)
        lead, matrix = a.shape[:-2], a.shape[-2:]
        if not lead:
            return single(a)
        # math.prod, not -1: a batch of empty matrices has size 0, which -1 cannot divide.
        out = jax.lax.map(single, a.reshape((math.prod(lead), *matrix)))
        return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)

    return apply


def qr(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jnp.linalg.qr(a)` (reduced): `(q [..., m, k], r [..., k, n])`, k = min(m, n)."""
    return _qr(a)


def singular_values(a: jax.Array) -> jax.Array:
    """`jnp.linalg.svd(a, compute_uv=False)`: `[..., min(m, n)]`, descending."""
    return _singular_values(a)


_qr = _one_matrix_at_a_time(jnp.linalg.qr)
_singular_values = _one_matrix_at_a_time(lambda m: jnp.linalg.svd(m, compute_uv=False))
