"""Review of attention and decoding: non-finite padding, mask shapes, NumPy-int sizes, and beam
search against a plain-Python beam search with the same rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import attention, decoding

LENGTHS = np.array([3, 1])
MASK = np.arange(4)[None, :] < LENGTHS[:, None]  # [batch 2, source_time 4]


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
    # Precomputed keys (Seq2Seq's decoding path) and separate values are covered too.
    context, _ = module(
        query, dirty, mask, values=dirty * 2.0, prepared_keys=module.prepare_keys(dirty)
    )
    np.testing.assert_allclose(context, 2.0 * ref_context, rtol=1e-5, atol=1e-6)


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


def _table_step(table):
    """Logits depend on (example, position, previous token)."""
    max_length = table.shape[1]

    def step(state, tokens):
        example, position = state
        return (example, position + 1), table[
            example, jnp.minimum(position, max_length - 1), tokens
        ]

    return step


def _state(batch):
    return (jnp.arange(batch), jnp.zeros(batch, jnp.int32))


def test_numpy_integer_sizes_are_accepted():
    """`max_length=lengths.max() + 5` is a NumPy integer; it used to be rejected as 'not a
    positive int'."""
    table = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4, 4)), jnp.float32)
    step, ids = _table_step(table), dict(bos_id=0, eos_id=1)
    greedy = decoding.greedy_decode(step, _state(2), max_length=np.int64(3), **ids)
    jax.tree.map(
        np.testing.assert_array_equal,
        greedy,
        decoding.greedy_decode(step, _state(2), max_length=3, **ids),
    )
    beam = decoding.beam_search(
        step, _state(2), beam_size=np.int32(2), max_length=np.int64(3), **ids
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        beam,
        decoding.beam_search(step, _state(2), beam_size=2, max_length=3, **ids),
    )
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(step, _state(2), beam_size=2.0, max_length=3, **ids)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max() - np.log(np.sum(np.exp(x - x.max())))


def _reference_beam(table, example, k, bos, eos, alpha):
    """The documented rules in plain Python: keep the k best extensions of the live
    hypotheses by log-probability; one ending in EOS leaves the beam; rank finished ones (and
    those alive at max_length) by log p / ((5 + length) / 6)^alpha."""
    max_length, vocab = table.shape[1], table.shape[2]
    alive, finished = [((), 0.0)], []
    for t in range(max_length):
        candidates = []
        for seq, log_prob in alive:
            log_probs = _log_softmax(table[example, t, seq[-1] if seq else bos])
            candidates += [(seq + (v,), log_prob + log_probs[v]) for v in range(vocab)]
        candidates = sorted(candidates, key=lambda c: -c[1])[:k]
        finished += [c for c in candidates if c[0][-1] == eos]
        alive = [c for c in candidates if c[0][-1] != eos]
    ranked = [(seq, lp / ((5.0 + len(seq)) / 6.0) ** alpha) for seq, lp in finished + alive]
    return sorted(ranked, key=lambda c: -c[1])[:k]


@pytest.mark.parametrize(
    "vocab, max_length, k, bos, eos, pad, alpha",
    [(5, 4, 3, 2, 0, 4, 0.6), (3, 4, 2, 0, 2, 1, 0.0), (2, 3, 5, 1, 1, 0, 2.0)],
)
def test_beam_search_matches_a_python_beam_search(vocab, max_length, k, bos, eos, pad, alpha):
    """Between beam 1 (== greedy) and a full beam (== exhaustive), which the existing tests
    cover: batch > 1 with different lengths, EOS/BOS/pad at other ids, pad after the end."""
    rng = np.random.default_rng(vocab * 10 + k)
    table = rng.normal(scale=2.0, size=(3, max_length, vocab, vocab)).astype(np.float32)
    tokens, lengths, scores = decoding.beam_search(
        _table_step(jnp.asarray(table)),
        _state(3),
        beam_size=k,
        bos_id=bos,
        eos_id=eos,
        max_length=max_length,
        alpha=alpha,
        pad_id=pad,
    )
    for b in range(3):
        reference = _reference_beam(table, b, k, bos, eos, alpha)
        for i, (seq, score) in enumerate(reference):
            assert tuple(np.asarray(tokens[b, i, : lengths[b, i]])) == seq
            assert np.all(np.asarray(tokens[b, i, lengths[b, i] :]) == pad)
            np.testing.assert_allclose(scores[b, i], score, rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(np.asarray(scores[b, len(reference) :])))


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
