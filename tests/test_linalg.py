"""rnn_jax.linalg: one matrix per LAPACK call on CPU, bitwise the batched result, no hang;
batches of empty matrices."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import initializers, linalg


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (3, 9, 9), (2, 3, 10, 6)])
def test_qr_and_singular_values_equal_the_batched_calls_bitwise(shape):
    a = jax.random.normal(jax.random.key(0), shape)
    q, r = linalg.qr(a)
    q_ref, r_ref = jnp.linalg.qr(a)
    np.testing.assert_array_equal(np.asarray(q), np.asarray(q_ref))
    np.testing.assert_array_equal(np.asarray(r), np.asarray(r_ref))
    np.testing.assert_array_equal(
        np.asarray(linalg.singular_values(a)), np.asarray(jnp.linalg.svd(a, compute_uv=False))
    )


def test_nested_vmap_under_jit_equals_the_batched_calls_bitwise():
    a = jax.random.normal(jax.random.key(1), (2, 3, 4, 8, 5))
    ours = jax.jit(jax.vmap(jax.vmap(lambda m: linalg.qr(m)[0])))(a)
    ref = jax.vmap(jax.vmap(lambda m: jnp.linalg.qr(m)[0]))(a)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    ours = jax.vmap(linalg.singular_values, in_axes=2)(a)
    ref = jax.vmap(lambda m: jnp.linalg.svd(m, compute_uv=False), in_axes=2)(a)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    # The orthogonal initialiser (through linalg.qr) is orthogonal per block, vmapped over seeds.
    keys = jax.random.split(jax.random.key(2), 3)
    blocks = jax.vmap(lambda k: initializers.orthogonal()(k, (4, 16, 16)))(keys)
    eye = np.broadcast_to(np.eye(16), (3, 4, 16, 16))
    np.testing.assert_allclose(np.swapaxes(blocks, -1, -2) @ blocks, eye, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="LAPACK custom calls are CPU's")
def test_every_lapack_call_gets_one_matrix_under_any_batching():
    """The property itself, read off the lowered program (milliseconds): every LAPACK custom
    call has `num_batch_dims = "0"`. A vmap rule that made one batched call per vmapped batch
    was bitwise right and did not hang the test below (batches of 2 went unsplit)."""
    a = jnp.zeros((2, 3, 8, 5))
    programs = [
        linalg.qr,
        linalg.singular_values,
        jax.vmap(linalg.qr),
        jax.vmap(lambda m: linalg.singular_values(m), in_axes=2),
        jax.vmap(jax.vmap(lambda m: linalg.qr(m)[0])),
        jax.vmap(lambda k: linalg.qr(k * jnp.ones((8, 5)))),  # a batched closure, no leading axes
    ]
    for fn in programs:
        arg = jnp.arange(2.0) if fn is programs[-1] else a
        text = jax.jit(fn).lower(arg).as_text()
        calls = re.findall(r"custom_call @(lapack_\w+).*?num_batch_dims = \"(\d+)\"", text)
        assert calls, text  # the pattern still finds LAPACK's calls
        assert all(dims == "0" for _, dims in calls), calls


def test_concurrent_orthogonal_inits_do_not_hang_the_cpu_pool():
    """Twice as many independent vmapped QRs in one program as this machine has cores (XLA runs
    them concurrently, as in a seq2seq model's init): with `jnp.linalg.qr`, jaxlib 0.10.2 hung
    here in every try on 2 cores (each kernel waits for batch chunks queued on the pool its
    own thread belongs to). A hung process ignores SIGTERM, so the child is killed on timeout."""
    script = textwrap.dedent(
        """
        import os
        import jax
        from rnn_jax import linalg
        n = 2 * os.cpu_count()

        @jax.jit
        def inits(keys):
            return [
                jax.vmap(lambda k: linalg.qr(jax.random.normal(k, (4, 128, 128)))[0])(
                    jax.random.split(key, 2)
                )
                for key in keys
            ]

        keys = list(jax.random.split(jax.random.key(0), n))
        for _ in range(30):
            jax.block_until_ready(inits(keys))
        print("finished")
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("concurrent QRs through rnn_jax.linalg hung the XLA:CPU pool")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished" in done.stdout


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 3, 3)])
def test_qr_and_singular_values_take_batches_of_empty_matrices(shape):
    """A batch of empty matrices failed with ZeroDivisionError (a reshape to `(-1, 0, n)`)."""
    a = jnp.zeros(shape)
    for got, want in zip(
        jax.tree.leaves((linalg.qr(a), linalg.singular_values(a))),
        jax.tree.leaves((jnp.linalg.qr(a), jnp.linalg.svd(a, compute_uv=False))),
        strict=True,
    ):
        assert got.shape == want.shape
