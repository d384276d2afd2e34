"""rnn_jax.crf on low-precision and mixed-precision inputs.

The reference is the same CRF computed on the same (bfloat16-rounded) values cast to float32,
whose maths tests/test_crf.py checks against brute-force enumeration of all tag paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import crf

BATCH, TIME, NUM_TAGS = 4, 40, 5


LENGTHS = np.array([40, 1, 23, 7])


def _case(dtype, seed=0):
    """Emissions/params rounded to `dtype` (scale 3: log Z and path scores reach ~100)."""
    rng = np.random.default_rng(seed)
    values = (
        3 * rng.normal(size=(BATCH, TIME, NUM_TAGS)),
        rng.normal(size=(NUM_TAGS, NUM_TAGS)),
        rng.normal(size=NUM_TAGS),
        rng.normal(size=NUM_TAGS),
    )
    return tuple(jnp.asarray(v, dtype) for v in values)


def _as_float32(arrays):
    return tuple(a.astype(jnp.float32) for a in arrays)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_give_the_float32_crf_of_the_same_values(dtype):
    """All-bfloat16 inputs used to run the forward algorithm in bfloat16: log Z and the gold
    score (~100 each) were off by ~1-2 nats, so the NLL of the Viterbi path could be wrong by
    more than its size (or negative)."""
    emissions, transitions, start, end = _case(dtype)
    lengths = jnp.asarray(LENGTHS)
    ref_args = _as_float32((emissions, transitions, start, end))
    ref_tags, ref_scores = crf.viterbi_decode(ref_args[0], lengths, *ref_args[1:])
    ref_nll = crf.crf_nll(ref_args[0], ref_tags, lengths, *ref_args[1:])

    nll = crf.crf_nll(emissions, ref_tags, lengths, transitions, start, end)
    tags, scores = crf.viterbi_decode(emissions, lengths, transitions, start, end)
    np.testing.assert_allclose(nll, ref_nll, rtol=1e-5, atol=1e-4)
    assert nll.dtype == jnp.float32 and scores.dtype == jnp.float32
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    np.testing.assert_array_equal(tags, ref_tags)
    assert np.all(np.asarray(nll) >= 0)


@pytest.mark.parametrize("fn", ["log_partition", "viterbi_decode"])
def test_mixed_dtype_params_run_and_match_float32(fn):
    """bfloat16 emissions and start/end with float32 transitions: the carry started bfloat16
    and the first step made it float32, which `lax.scan` rejected with a TypeError."""
    emissions, transitions, start, end = _case(jnp.bfloat16, seed=1)
    transitions = transitions.astype(jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    got = getattr(crf, fn)(emissions, lengths, transitions, start, end)
    ref_args = _as_float32((emissions, transitions, start, end))
    ref = getattr(crf, fn)(ref_args[0], lengths, *ref_args[1:])
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):  # (tags, scores)
        assert g.dtype == r.dtype
        np.testing.assert_allclose(g, r, rtol=1e-6)
