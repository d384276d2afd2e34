"""Attention: weights are a distribution over real source positions; numbers match numpy;
padding holding inf or NaN changes neither outputs nor gradients; masks of the wrong shape or
dtype and a zero attention size are refused; Seq2Seq zeroes its padded memory once per source."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import attention
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.seq2seq import Seq2Seq

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
    """The scores come from `prepared_keys`, not from the keys: passed beside the same keys,
    code that ignored `prepared_keys` passed too, so the keys given here are zeros."""
    query, keys, mask = inputs
    module = attention.AdditiveAttention(QUERY, KEY, 8, rngs=nnx.Rngs(2))
    prepared = module.prepare_keys(jnp.asarray(keys))
    a = module(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(mask))
    zeros = jnp.zeros_like(keys)
    b = module(jnp.asarray(query), zeros, jnp.asarray(mask), values=keys, prepared_keys=prepared)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_fully_masked_row_gives_zero_weights_not_nan():
    scores = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    mask = jnp.array([[True, False], [False, False]])
    weights = attention.masked_softmax(scores, mask)
    np.testing.assert_array_equal(weights, [[1.0, 0.0], [0.0, 0.0]])


def test_scaled_dot_product_matches_numpy():
    rng = np.random.default_rng(3)
    # head size 9: at 4, 1/sqrt(d) equals 2/d and a wrong scale passed
    q, k, v = (rng.normal(size=(2, 2, 3, 9)).astype(np.float32) for _ in range(3))
    causal = np.tril(np.ones((3, 3), bool))
    out, weights = attention.scaled_dot_product_attention(q, k, v, causal)
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / 3.0
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
    with pytest.raises(ValueError, match="score must be 'dot' or 'general', got 'cosine'"):
        attention.MultiplicativeAttention(4, 4, "cosine", rngs=nnx.Rngs(0))
    # No mask: a plain softmax over the axis (checked against NumPy's).
    scores = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    expected = np.exp(scores[:, 1]) / np.exp(scores).sum(axis=1)
    got = attention.masked_softmax(jnp.asarray(scores), None, axis=-1)
    np.testing.assert_allclose(np.asarray(got)[:, 1], expected, rtol=1e-6)


def test_gradient_flows_only_through_real_positions(inputs):
    query, keys, mask = inputs
    module = attention.MultiplicativeAttention(QUERY, KEY, "general", rngs=nnx.Rngs(4))
    grad = jax.grad(lambda k: jnp.sum(module(jnp.asarray(query), k, jnp.asarray(mask))[0]))(
        jnp.asarray(keys)
    )
    assert np.all(np.asarray(grad)[~mask] == 0.0)
    assert np.any(np.asarray(grad)[mask] != 0.0)


MASK_LENGTHS = np.array([3, 1])


MASK = np.arange(4)[None, :] < MASK_LENGTHS[:, None]  # [batch 2, source_time 4]


def _inputs(fill):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 5)).astype(np.float32)
    keys = rng.normal(size=(2, 4, 5)).astype(np.float32)
    dirty = keys.copy()
    dirty[~MASK] = fill
    return jnp.asarray(query), jnp.asarray(keys), jnp.asarray(dirty)


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
@pytest.mark.parametrize("fill", [np.inf, np.nan])
def test_non_finite_padding_changes_neither_outputs_nor_gradients(kind, fill):
    """A padded position gets weight exactly 0, but 0 * inf = NaN: before the fix the context
    (and every parameter gradient) was NaN when padding held inf or NaN."""
    query, clean, dirty = _inputs(fill)
    module = attention.make_attention(kind, 5, 5, attention_size=3, rngs=nnx.Rngs(0))
    mask = jnp.asarray(MASK)
    context, weights = module(query, dirty, mask)
    ref_context, ref_weights = module(query, clean, mask)
    np.testing.assert_allclose(context, ref_context, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(weights, ref_weights)

    def loss(module, query, keys):
        return jnp.sum(module(query, keys, mask)[0] ** 2)

    grads = nnx.grad(loss, argnums=(0, 1))(module, query, dirty)
    ref_grads = nnx.grad(loss, argnums=(0, 1))(module, query, clean)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads
    )

    # Precomputed keys (Seq2Seq's decoding path) and separate values are covered too; the
    # masked scores hide unzeroed prepared keys from the context but not from the gradients
    # (additive: tanh'(NaN) * 0; dot, general: 0 * inf in d score / d query).
    def prepared_loss(module, query, keys):
        prepared = jax.lax.stop_gradient(module.prepare_keys(keys))  # the caller's business
        context = module(query, keys, mask, values=keys * 2.0, prepared_keys=prepared)[0]
        return jnp.sum(context**2), context

    (_, context), grads = nnx.value_and_grad(prepared_loss, argnums=(0, 1), has_aux=True)(
        module, query, dirty
    )
    np.testing.assert_allclose(context, 2.0 * ref_context, rtol=1e-5, atol=1e-6)
    ref_grads, _ = nnx.grad(prepared_loss, argnums=(0, 1), has_aux=True)(module, query, clean)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads
    )


def test_mask_of_the_wrong_shape_is_named():
    """A wrong-length mask failed inside jnp.where with a message that did not mention the
    mask; `lengths [batch]` passed as the mask, with batch == source_time, was broadcast along
    the source axis and silently used as a mask of source positions."""
    module = attention.make_attention("dot", 5, 5, rngs=nnx.Rngs(0))
    query, keys, _ = _inputs(0.0)
    with pytest.raises(ValueError, match=r"mask must be \[batch, source_time\] = \[2, 4\]"):
        module(query, keys, jnp.ones((2, 3), bool))
    lengths = jnp.array([2, 1, 2, 2])
    with pytest.raises(ValueError, match=r"got shape \[4\]"):
        module(jnp.ones((4, 5)), jnp.ones((4, 4, 5)), lengths)


def _select_shapes(jaxpr) -> list[tuple]:
    """Output shapes of every `select_n` (jnp.where) in a jaxpr, nested jaxprs included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "select_n":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for sub in jax.core.jaxprs_in_params(eqn.params):
            shapes += _select_shapes(sub)
    return shapes


@pytest.mark.parametrize("kind", ["additive", "general"])
def test_seq2seq_zeroes_the_padded_memory_once_per_source_not_per_step(kind):
    """The decoder state holds an AttentionMemory built once by `_init_state` (prepared keys and
    values with padding zeroed); before, every target step re-ran `where` over the whole memory.
    The step's program now has no select over a memory-shaped array, and its result equals the
    all-in-one `__call__` on the raw encoder outputs."""
    from rnn_jax.models.seq2seq import Seq2Seq

    model = Seq2Seq(9, 10, embed_size=6, hidden_size=8, attention=kind, rngs=nnx.Rngs(0))
    source = jnp.array([[3, 4, 5, 2], [5, 2, 0, 0]])
    lengths = jnp.array([4, 2])
    state = model.init_decode_state(source, lengths)
    memory = state["memory"]
    assert isinstance(memory, attention.AttentionMemory)
    padded = ~np.asarray(memory.mask)
    assert padded.any() and not np.asarray(memory.values)[padded].any()
    assert not np.asarray(memory.keys)[padded].any()

    tokens = jnp.array([1, 1])
    step_jaxpr = jax.make_jaxpr(lambda s: model.step(s, tokens))(state).jaxpr
    memory_shapes = {tuple(memory.values.shape), tuple(memory.keys.shape)}
    assert not memory_shapes & set(_select_shapes(step_jaxpr))

    query = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8)), jnp.float32)
    raw, _ = model.encoder(source, lengths)
    dirty = jnp.where(jnp.asarray(padded)[:, :, None], jnp.inf, raw)
    context, weights = model.attention.attend(query, memory)
    ref_context, ref_weights = model.attention(query, dirty, memory.mask)
    np.testing.assert_allclose(context, ref_context, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(weights, ref_weights)


def test_attention_size_zero_is_refused_not_read_as_the_default():
    """`attention_size or size` turned an illegal 0 into the default size without a word.
    The default (None) is `query_size`, as `make_attention` documents (QUERY != KEY here)."""
    default = attention.make_attention("additive", QUERY, KEY, rngs=nnx.Rngs(0))
    assert default.v.kernel.shape == (QUERY, 1)
    options = dict(embed_size=3, hidden_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention_size=0 must be a positive int"):
        Classifier(5, 2, pooling="attention", attention_size=0, **options)
    with pytest.raises(ValueError, match="attention_size=0 must be a positive int"):
        Seq2Seq(5, 5, attention_size=0, **options)
    # make_attention itself: a ZeroDivisionError (0) or a shape TypeError (-2) named nothing
    for size in (0, -2, True):
        with pytest.raises(ValueError, match=rf"^attention_size={size!r} must be a positive int"):
            attention.make_attention("additive", QUERY, KEY, attention_size=size, rngs=nnx.Rngs(0))


def test_attention_refuses_a_mask_that_is_not_boolean():
    """An additive float mask (0 = attend, -inf = blocked, PyTorch's `attn_mask` convention)
    was read as `where(mask, ...)`: -inf is truthy, so only the blocked position was attended
    ([[0, 0, 1]] here) and rows of zeros got no weight at all, without an error."""
    scores = jnp.array([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="mask must be boolean.*float32"):
        attention.masked_softmax(scores, jnp.array([[0.0, 0.0, -jnp.inf]]))
    q = jnp.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="mask must be boolean"):
        attention.scaled_dot_product_attention(q, q, q, jnp.array([[0.0, -jnp.inf], [0.0, 0.0]]))
    module = attention.make_attention("dot", 2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mask must be boolean.*int32"):
        module(jnp.ones((1, 2)), jnp.ones((1, 3, 2)), jnp.array([[1, 1, 0]]))


def test_keys_and_values_without_the_feature_axis_are_named():
    """values [1, S] (a scalar per position, no feature axis) with a mask were broadcast by
    `jnp.where` into [1, S, S], and the context came out [1, S] without an error; without a
    mask einsum refused them naming no argument. Values of another length, likewise."""
    module = attention.make_attention("dot", 3, 3, rngs=nnx.Rngs(0))
    query, keys, mask = jnp.ones((1, 3)), jnp.ones((1, 5, 3)), jnp.ones((1, 5), bool)
    expected = r"values must be \[batch, source_time, features\], got shape \[1, 5\]"
    for m in (mask, None):
        with pytest.raises(ValueError, match=expected):
            module(query, keys, m, values=jnp.ones((1, 5)))
    with pytest.raises(ValueError, match=r"^keys must be .*got shape \[1, 5\]"):
        module(query, jnp.ones((1, 5)), mask)
    with pytest.raises(ValueError, match=r"^prepared_keys must be .*got shape \[1, 5\]"):
        module(query, keys, mask, prepared_keys=jnp.ones((1, 5)))
    with pytest.raises(ValueError, match=r"values \[1, 4, 3\] and keys \[1, 5, 3\] must share"):
        module(query, keys, mask, values=jnp.ones((1, 4, 3)))
