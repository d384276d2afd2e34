"""Attention: weights are a distribution over real source positions; numbers match numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import attention

BATCH, SOURCE, QUERY, KEY = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 3])


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(BATCH, QUERY)).astype(np.float32)
    keys = rng.normal(size=(BATCH, SOURCE, KEY)).astype(np.float32)
    mask = np.arange(SOURCE)[None, :] < LENGTHS[:, None]
    return query, keys, mask


def _softmax_ref(scores, mask):
    weights = np.zeros_like(scores)
    for b in range(scores.shape[0]):
        valid = scores[b, mask[b]]
        e = np.exp(valid - valid.max())
        weights[b, mask[b]] = e / e.sum()
    return weights


def _reference_scores(module, kind, query, keys):
    """Scores written from the papers' equations with the module's weights, in numpy."""
    if kind == "additive":
        w_q = np.asarray(module.query_projection.kernel[...])
        w_k = np.asarray(module.key_projection.kernel[...])
        b_k = np.asarray(module.key_projection.bias[...])
        v = np.asarray(module.v.kernel[...])[:, 0]
        return np.einsum("bsa,a->bs", np.tanh((query @ w_q)[:, None, :] + keys @ w_k + b_k), v)
    if kind == "general":
        w_a = np.asarray(module.key_projection.kernel[...])
        return np.einsum("bq,bsq->bs", query, keys @ w_a)
    return np.einsum("bq,bsq->bs", query, keys)


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_weights_match_reference_sum_to_one_and_ignore_padding(inputs, kind):
    query, keys, mask = inputs
    if kind == "dot":
        query = keys[:, 0, :] * 0.5
    module = attention.make_attention(kind, query.shape[1], KEY, attention_size=7, rngs=nnx.Rngs(1))
    context, weights = module(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(mask))
    ref_weights = _softmax_ref(_reference_scores(module, kind, query, keys), mask)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(weights)[~mask] == 0.0)
    np.testing.assert_allclose(context, np.einsum("bs,bsk->bk", ref_weights, keys), rtol=1e-5)
    # Garbage in the padded positions must not change anything.
    noisy = np.where(mask[:, :, None], keys, 1e3 * np.ones_like(keys))
    context2, weights2 = module(jnp.asarray(query), jnp.asarray(noisy), jnp.asarray(mask))
    np.testing.assert_allclose(context2, context, rtol=1e-6)
    np.testing.assert_array_equal(weights2, weights)


def test_prepared_keys_give_the_same_result(inputs):
    query, keys, mask = inputs
    module = attention.AdditiveAttention(QUERY, KEY, 8, rngs=nnx.Rngs(2))
    prepared = module.prepare_keys(jnp.asarray(keys))
    a = module(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(mask))
    b = module(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(mask), prepared_keys=prepared)
    np.testing.assert_array_equal(a[0], b[0])


def test_fully_masked_row_gives_zero_weights_not_nan():
    scores = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    mask = jnp.array([[True, False], [False, False]])
    weights = attention.masked_softmax(scores, mask)
    np.testing.assert_array_equal(weights, [[1.0, 0.0], [0.0, 0.0]])


def test_scaled_dot_product_matches_numpy():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 2, 3, 4)).astype(np.float32) for _ in range(3))
    causal = np.tril(np.ones((3, 3), bool))
    out, weights = attention.scaled_dot_product_attention(q, k, v, causal)
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / 2.0
    scores = np.where(causal, scores, -np.inf)
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref @ v, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="attention_type"):
        attention.make_attention("cosine", 4, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="query_size == key_size"):
        attention.make_attention("dot", 4, 5, rngs=nnx.Rngs(0))


def test_gradient_flows_only_through_real_positions(inputs):
    query, keys, mask = inputs
    module = attention.MultiplicativeAttention(QUERY, KEY, "general", rngs=nnx.Rngs(4))
    grad = jax.grad(lambda k: jnp.sum(module(jnp.asarray(query), k, jnp.asarray(mask))[0]))(
        jnp.asarray(keys)
    )
    assert np.all(np.asarray(grad)[~mask] == 0.0)
    assert np.any(np.asarray(grad)[mask] != 0.0)
