"""Transformer baselines: the forward passes against a per-head numpy transcription of the
pre-LN equations (and where dropout falls); KV-cache steps reproduce the full forward pass;
masks (the encoder's padding against each sequence alone); sizing; a cache of no slots
refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.models import params, transformer, transformer_blocks

VOCAB, D, HEADS, LAYERS, MAX_LEN = 11, 16, 2, 2, 8


@pytest.fixture(scope="module", params=["learned", "sinusoidal"])
def lm(request):
    return transformer.TransformerLM(
        VOCAB,
        d_model=D,
        num_heads=HEADS,
        num_layers=LAYERS,
        max_length=MAX_LEN,
        positions=request.param,
        rngs=nnx.Rngs(0),
    )


@pytest.mark.parametrize("d", [6, 5])
def test_sinusoidal_table_matches_formula(d):
    table = transformer_blocks.sinusoidal_positions(5, d)
    assert table.shape == (5, d)
    for p in range(5):
        for i in range((d + 1) // 2):
            angle = p / 10000 ** (2 * i / d)
            np.testing.assert_allclose(table[p, 2 * i], np.sin(angle), rtol=1e-6, atol=1e-7)
            if 2 * i + 1 < d:
                np.testing.assert_allclose(table[p, 2 * i + 1], np.cos(angle), rtol=1e-6, atol=1e-7)


# ---- numpy reference: the pre-LN equations written out, one head and one example at a time ----
def _np(variable):
    return np.asarray(variable[...], np.float64)


def _layer_norm(x, norm):
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred**2).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + norm.epsilon) * _np(norm.scale) + _np(norm.bias)


def _linear(x, layer):
    return x @ _np(layer.kernel) + _np(layer.bias)


def _attention(mha, queries_from, keys_from, mask):
    """mask bool [batch, query_time, key_time]; softmax over the visible keys only."""
    q = _linear(queries_from, mha.query)
    k, v = np.split(_linear(keys_from, mha.key_value), 2, axis=-1)
    size = q.shape[-1] // mha.num_heads
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(mha.num_heads):
            cols = slice(h * size, (h + 1) * size)
            scores = q[b][:, cols] @ k[b][:, cols].T / np.sqrt(size)
            weights = np.exp(scores - scores.max(-1, keepdims=True)) * mask[b]
            out[b][:, cols] = weights / weights.sum(-1, keepdims=True) @ v[b][:, cols]
    return _linear(out, mha.out)


def _stack(stack, x, mask, memory=None, memory_mask=None, kept=1.0):
    """x + Attn(LN(x)); [x + CrossAttn(LN(x), memory)]; x + MLP(LN(x)); final LN. `kept`
    scales each branch's output, where dropout falls (not on the residual stream x)."""
    for block in stack.blocks:
        normed = _layer_norm(x, block.self_norm)
        x = x + kept * _attention(block.self_attention, normed, normed, mask)
        if memory is not None:
            cross_normed = _layer_norm(x, block.cross_norm)
            x = x + kept * _attention(block.cross_attention, cross_normed, memory, memory_mask)
        hidden = _linear(_layer_norm(x, block.mlp_norm), block.mlp_in)
        gelu = 0.5 * hidden * (1 + np.tanh(np.sqrt(2 / np.pi) * (hidden + 0.044715 * hidden**3)))
        x = x + kept * _linear(gelu, block.mlp_out)
    return _layer_norm(x, stack.final_norm)


def _halving_dropout(keys):
    """A dropout stand-in that halves whatever it is given when it has an rng (appended to
    `keys`): the forward pass then equals the reference with kept = 0.5 wherever dropout is
    documented to fall, and each site must draw from its own rng."""

    def dropout(rng, rate, x):
        if rng is None:
            return x
        keys.append(tuple(np.asarray(jax.random.key_data(rng)).ravel()))
        return x / 2

    return dropout


def _embed(embedder, tokens):
    table = _np(embedder.token.embedding)
    # Sinusoidal positions: tokens scaled by sqrt(d_model) (Vaswani et al. 2017, section 3.4).
    scale = 1.0 if isinstance(embedder.position, nnx.Param) else np.sqrt(table.shape[1])
    return scale * table[tokens] + _np(embedder.position)[: tokens.shape[1]]


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_token_and_position_parts_start_at_comparable_sizes(positions):
    """Sinusoidal positions (RMS 0.71) used to outweigh nnx.Embed's tokens (std 1/sqrt(d))
    by sqrt(d/2): 5.7x at d = 64, so at initialisation a token's identity was a small
    perturbation of its position. Learned positions start small (std 0.02) by design."""
    embedder = transformer_blocks.Embedder(1000, 64, 32, positions, rngs=nnx.Rngs(0))
    tokens = np.arange(32)[None] % 1000
    token_part = embedder(tokens, np.arange(32)[None]) - embedder.position[...][:32]
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
    ratio = rms(embedder.position[...][:32]) / rms(token_part)
    if positions == "sinusoidal":
        assert 0.5 < ratio < 1.0, ratio  # 0.71 / 1.0
    else:
        assert ratio < 0.3, ratio  # 0.02 / 0.125


def _key_mask(lengths, query_time, key_time):
    return np.broadcast_to(
        (np.arange(key_time) < lengths[:, None])[:, None], (len(lengths), query_time, key_time)
    )


def test_lm_forward_equals_the_numpy_reference(lm, monkeypatch):
    tokens = np.asarray(jax.random.randint(jax.random.key(8), (3, 6), 0, VOCAB))
    causal = np.broadcast_to(np.tril(np.ones((6, 6), bool)), (3, 6, 6))
    expected = _linear(_stack(lm.stack, _embed(lm.embed, tokens), causal), lm.head)
    np.testing.assert_allclose(lm(jnp.asarray(tokens)), expected, rtol=1e-5, atol=1e-5)
    # Dropout on the embeddings and each branch's output (pre-LN: x + Dropout(Attn(LN(x)))).
    halving = _halving_dropout(keys := [])
    for module in (transformer, transformer_blocks):  # the embeddings; each block's branches
        monkeypatch.setattr(module, "dropout", halving)
    halved = _stack(lm.stack, _embed(lm.embed, tokens) / 2, causal, kept=0.5)
    dropped = lm(jnp.asarray(tokens), rng=jax.random.key(0))
    np.testing.assert_allclose(dropped, _linear(halved, lm.head), rtol=1e-5, atol=1e-5)
    assert len(set(keys)) == len(keys) == 1 + 2 * LAYERS  # embeddings; attention, MLP


def test_encoder_and_seq2seq_forward_equal_the_numpy_reference(monkeypatch):
    """Dropout (the halving stand-in) falls on the embeddings of both sides and on every
    branch: self-attention, cross-attention and MLP outputs, not the residual stream."""
    model = transformer.TransformerSeq2Seq(
        7,
        VOCAB,
        d_model=D,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        max_length=MAX_LEN,
        rngs=nnx.Rngs(9),
    )
    source = np.asarray(jax.random.randint(jax.random.key(10), (3, 7), 0, 7))
    lengths = np.array([7, 3, 1])
    target = np.asarray(jax.random.randint(jax.random.key(11), (3, 5), 0, VOCAB))
    memory = _stack(
        model.encoder.stack, _embed(model.encoder.embed, source), _key_mask(lengths, 7, 7)
    )
    states = model.encoder(jnp.asarray(source), jnp.asarray(lengths))
    for b, length in enumerate(lengths):  # real positions only: padded queries are unused
        np.testing.assert_allclose(states[b, :length], memory[b, :length], rtol=1e-5, atol=1e-5)
    causal = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (3, 5, 5))
    decoded = _stack(
        model.decoder, _embed(model.target_embed, target), causal, memory, _key_mask(lengths, 5, 7)
    )
    logits = model(jnp.asarray(source), jnp.asarray(lengths), jnp.asarray(target))
    np.testing.assert_allclose(logits, _linear(decoded, model.head), rtol=1e-5, atol=1e-5)
    halving = _halving_dropout(keys := [])
    for module in (transformer, transformer_blocks):  # the embeddings; each block's branches
        monkeypatch.setattr(module, "dropout", halving)
    embedded = _embed(model.encoder.embed, source) / 2
    memory = _stack(model.encoder.stack, embedded, _key_mask(lengths, 7, 7), kept=0.5)
    embedded = _embed(model.target_embed, target) / 2
    decoded = _stack(model.decoder, embedded, causal, memory, _key_mask(lengths, 5, 7), kept=0.5)
    logits = model(*map(jnp.asarray, (source, lengths, target)), rng=jax.random.key(0))
    np.testing.assert_allclose(logits, _linear(decoded, model.head), rtol=1e-5, atol=1e-5)
    assert len(set(keys)) == len(keys) == (1 + 2 * 2) + (1 + 3 * 2)  # encoder, decoder


def test_kv_cache_steps_reproduce_the_causal_forward_pass(lm):
    tokens = jax.random.randint(jax.random.key(1), (3, 6), 0, VOCAB)
    full = lm(tokens)

    @jax.jit
    def run_steps(tokens):
        def body(cache, token):
            cache, logits = lm.step(cache, token)
            return cache, logits

        return jax.lax.scan(body, lm.init_cache(3), tokens.T)[1].transpose(1, 0, 2)

    np.testing.assert_allclose(run_steps(tokens), full, rtol=1e-5, atol=1e-5)


def test_steps_past_the_cache_give_nan_not_silently_wrong_logits(lm):
    """A cache of 4 slots: steps 0-3 equal the forward pass; from step 4 on the key/value
    has no slot, and the logits are NaN instead of ignoring the token."""
    tokens = jax.random.randint(jax.random.key(2), (2, 6), 0, VOCAB)
    full = lm(tokens)
    cache, logits = lm.init_cache(2, 4), []
    for t in range(6):
        cache, step_logits = lm.step(cache, tokens[:, t])
        logits.append(step_logits)
    np.testing.assert_allclose(jnp.stack(logits[:4], 1), full[:, :4], rtol=1e-5, atol=1e-5)
    assert all(bool(jnp.all(jnp.isnan(x))) for x in logits[4:])


def test_causality_future_tokens_do_not_change_the_past(lm):
    tokens = jax.random.randint(jax.random.key(2), (2, 6), 0, VOCAB)
    changed = tokens.at[:, 4:].set((tokens[:, 4:] + 1) % VOCAB)
    a, b = jax.jit(lambda x, y: (lm(x), lm(y)))(tokens, changed)
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_encoder_ignores_padding_and_dropout_needs_rng():
    encoder = transformer.TransformerEncoder(
        VOCAB,
        d_model=D,
        num_heads=HEADS,
        num_layers=1,
        max_length=MAX_LEN,
        dropout_rate=0.5,
        rngs=nnx.Rngs(3),
    )
    tokens = jax.random.randint(jax.random.key(4), (2, 5), 0, VOCAB)
    lengths = jnp.array([5, 3])
    noisy = tokens.at[1, 3:].set(0)
    a, b, again, dropped = jax.jit(
        lambda: (
            encoder(tokens, lengths),
            encoder(noisy, lengths),
            encoder(tokens, lengths),
            encoder(tokens, lengths, rng=jax.random.key(0)),
        )
    )()
    np.testing.assert_allclose(a[1, :3], b[1, :3], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(again, a)  # rng=None is deterministic
    assert not np.allclose(dropped, a)


def test_seq2seq_step_reproduces_teacher_forced_forward():
    model = transformer.TransformerSeq2Seq(
        7,
        VOCAB,
        d_model=D,
        num_heads=HEADS,
        num_encoder_layers=1,
        num_decoder_layers=2,
        max_length=MAX_LEN,
        rngs=nnx.Rngs(5),
    )
    source = jax.random.randint(jax.random.key(6), (2, 5), 0, 7)
    lengths = jnp.array([5, 2])
    target = jax.random.randint(jax.random.key(7), (2, 4), 0, VOCAB)
    full = model(source, lengths, target)

    @jax.jit
    def run_steps(source, lengths, target):
        state = model.init_decode_state(source, lengths, max_length=4)
        steps = []
        for t in range(4):
            state, logits = model.step(state, target[:, t])
            steps.append(logits)
        return jnp.stack(steps, 1)

    np.testing.assert_allclose(run_steps(source, lengths, target), full, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_and_param_count_by_hand():
    tied = transformer.TransformerLM(
        VOCAB,
        d_model=D,
        num_heads=HEADS,
        num_layers=1,
        max_length=MAX_LEN,
        tie_embeddings=True,
        positions="sinusoidal",
        rngs=nnx.Rngs(0),
    )
    block = 2 * (D * D + D) + (D * 2 * D + 2 * D) + 2 * 2 * D  # attention + 2 LayerNorms
    block += D * 4 * D + 4 * D + 4 * D * D + D  # MLP
    expected = VOCAB * D + block + 2 * D  # + final LayerNorm; sinusoidal table is not a Param
    assert params.count_params(tied) == expected
    # The output head is the unscaled embedding table (the inputs use it times sqrt(d_model)).
    hidden = np.random.default_rng(0).normal(size=(2, D)).astype(np.float32)
    expected_logits = hidden @ _np(tied.embed.token.embedding).T
    np.testing.assert_allclose(tied._logits(hidden), expected_logits, rtol=1e-5, atol=1e-5)


def test_match_size_finds_a_width_within_five_percent():
    target = 20_000

    def build(width):
        return transformer.TransformerLM(
            VOCAB, d_model=width, num_heads=2, num_layers=1, max_length=MAX_LEN, rngs=nnx.Rngs(0)
        )

    width, count = params.match_size(build, target, low=8, high=64, multiple_of=2)
    assert abs(count - target) <= 0.05 * target
    d = width  # by hand: embeddings, positions, one block, final LayerNorm, output layer
    block = 2 * (d * d + d) + (2 * d * d + 2 * d) + 4 * d + (8 * d * d + 5 * d)
    assert count == VOCAB * d + MAX_LEN * d + block + 2 * d + d * VOCAB + VOCAB
    with pytest.raises(ValueError, match="within 5%"):
        params.match_size(build, 10**9, low=8, high=16, multiple_of=2)


def test_bad_arguments_raise(lm):
    with pytest.raises(ValueError, match="divisible by num_heads"):
        transformer.TransformerLM(
            VOCAB, d_model=10, num_heads=3, num_layers=1, max_length=4, rngs=nnx.Rngs(0)
        )
    with pytest.raises(ValueError, match="d_model=10 must be divisible by num_heads=4"):
        transformer_blocks.MultiHeadAttention(10, 4, rngs=nnx.Rngs(0))  # the layer on its own
    with pytest.raises(ValueError, match="positions"):
        transformer.TransformerLM(
            VOCAB,
            d_model=8,
            num_heads=2,
            num_layers=1,
            max_length=4,
            positions="rotary",
            rngs=nnx.Rngs(0),
        )
    with pytest.raises(ValueError, match=f"max_length={MAX_LEN}"):
        lm(jnp.zeros((1, MAX_LEN + 1), jnp.int32))
    for vocab, layers, message in (
        (0, 1, "vocab_size, d_model and max_length must be >= 1, got 0, 8, 4"),
        (VOCAB, 0, "num_layers=0 must be a positive int"),
    ):
        with pytest.raises(ValueError, match=message):
            transformer.TransformerLM(
                vocab, d_model=8, num_heads=2, num_layers=layers, max_length=4, rngs=nnx.Rngs(0)
            )
    # `mlp_size or 4 * d_model` built the default-width MLP for an illegal 0 without a word.
    with pytest.raises(ValueError, match="mlp_size=0 must be a positive int"):
        transformer.TransformerSeq2Seq(
            5,
            5,
            d_model=8,
            num_heads=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            max_length=4,
            mlp_size=0,
            rngs=nnx.Rngs(0),
        )


def test_encoder_padding_matches_each_sequence_alone():
    """Each sequence encoded alone (no padding, no mask) by the float64 numpy transcription
    equals its real positions in a padded batch whose padding holds arbitrary ids, out of
    range included (they embedded as NaN, and 0 attention weight x NaN is NaN)."""
    vocab = 11
    abstract = nnx.eval_shape(  # weights drawn below: initialising on the device takes seconds
        lambda: transformer.TransformerEncoder(
            vocab, d_model=8, num_heads=2, num_layers=2, max_length=6, rngs=nnx.Rngs(1)
        )
    )
    graphdef, shapes = nnx.split(abstract)
    rng = np.random.default_rng(0)
    weights = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)
    encoder = nnx.merge(graphdef, weights)
    lengths = np.array([6, 4, 1])
    tokens = rng.integers(0, vocab, (3, 6))
    padded = tokens.copy()
    padded[1, 4:] = [vocab + 7, -3]
    padded[2, 1:] = rng.integers(0, vocab, 5)
    states = np.asarray(nnx.jit(lambda m, x, n: m(x, n))(encoder, padded, lengths))
    for b, length in enumerate(lengths):
        alone = tokens[b : b + 1, :length]
        everywhere = np.ones((1, length, length), bool)
        expected = _stack(encoder.stack, _embed(encoder.embed, alone), everywhere)[0]
        np.testing.assert_allclose(states[b, :length], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"tokens holds ids in \[\d+, 18\] but vocab_size=11"):
        encoder(jnp.asarray(padded), jnp.asarray([6, 5, 1]))  # id 18 inside a sequence


def test_a_cache_of_no_slots_is_refused():
    """init_cache(batch, 0) silently gave a cache of the model's max_length (`0 or default`);
    a negative length failed inside jnp.zeros."""
    lm = nnx.eval_shape(
        lambda: transformer.TransformerLM(
            11, d_model=8, num_heads=2, num_layers=1, max_length=6, rngs=nnx.Rngs(0)
        )
    )
    assert lm.init_cache(2)["layers"][0]["key"].shape == (2, 2, 6, 4)
    for length in (0, -1):
        with pytest.raises(ValueError, match=f"max_length >= 1, got {length}"):
            lm.init_cache(2, length)
