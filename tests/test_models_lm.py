"""Language models learn Tiny Shakespeare: the runtime's RNN LM and the transformer baseline
both get below the unigram perplexity of held-out text within a few hundred steps, and each
model's single-step API reproduces its full pass on real text. Also: token ids outside the
vocabulary are refused (weight drop's one W_hh mask per pass and tied-embedding gradients:
tests/test_models_reference.py)."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from model_training import train

from rnn_jax import metrics
from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.transformer import TransformerLM, TransformerSeq2Seq
from rnn_jax.train import regularizers

TIME, TRAIN_CHARS, HELD_CHARS = 64, 120_000, 8_192


@pytest.fixture(scope="module")
def corpus(data_root):
    text = (data_root / "tiny_shakespeare" / "input.txt").read_text()
    train_text, held_text = text[:TRAIN_CHARS], text[TRAIN_CHARS : TRAIN_CHARS + HELD_CHARS]
    chars = sorted(set(text[: TRAIN_CHARS + HELD_CHARS]))
    index = {c: i for i, c in enumerate(chars)}
    encode = lambda s: np.array([index[c] for c in s], np.int32)
    return chars, encode(train_text), encode(held_text)


def _windows(ids, time):
    """Non-overlapping [n, time + 1] windows: inputs are [:, :-1], targets [:, 1:]."""
    count = (len(ids) - 1) // time
    return np.stack([ids[i * time : i * time + time + 1] for i in range(count)])


def _unigram_perplexity(train_ids, held_ids, vocab_size):
    counts = collections.Counter(train_ids.tolist())
    total = len(train_ids) + vocab_size  # add-one smoothing
    nll = -sum(math.log((counts[t] + 1) / total) for t in held_ids.tolist())
    return metrics.perplexity(nll, len(held_ids))


def _build(kind, vocab_size):
    if kind == "rnn":
        return RNNLanguageModel(vocab_size, 128, num_layers=1, cell="lstm", rngs=nnx.Rngs(0))
    return TransformerLM(
        vocab_size, d_model=64, num_heads=4, num_layers=2, max_length=TIME, rngs=nnx.Rngs(0)
    )


def _logits(kind, model, inputs, rng=None):
    return model(inputs, rng=rng)[0] if kind == "rnn" else model(inputs, rng=rng)


@pytest.mark.data
@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_lm_beats_unigram_perplexity_on_held_out_text(corpus, kind):
    chars, train_ids, held_ids = corpus
    windows = _windows(train_ids, TIME)
    order = np.random.default_rng(0).permutation(len(windows))
    batches = [
        {"inputs": windows[order[i : i + 32], :-1], "targets": windows[order[i : i + 32], 1:]}
        for i in range(0, len(order) - 31, 32)
    ]
    model = _build(kind, len(chars))

    def loss_fn(model, batch, key):
        logits = _logits(kind, model, batch["inputs"], rng=key)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]))

    losses = train(model, loss_fn, batches, steps=150, learning_rate=3e-3)
    held = _windows(held_ids, TIME)
    nll = jax.jit(
        lambda x, y: jnp.sum(
            optax.softmax_cross_entropy_with_integer_labels(_logits(kind, model, x), y)
        )
    )(held[:, :-1], held[:, 1:])
    perplexity = metrics.perplexity(float(nll), held[:, 1:].size)
    unigram = _unigram_perplexity(train_ids, held[:, 1:].reshape(-1), len(chars))
    print(
        f"Tiny Shakespeare held-out perplexity ({kind}): {perplexity:.2f} "
        f"({metrics.bits_per_char(float(nll), held[:, 1:].size):.2f} bpc), unigram "
        f"{unigram:.2f}; loss {losses[:5].mean():.3f} -> {losses[-10:].mean():.3f}"
    )
    assert losses[-10:].mean() < 0.7 * losses[:5].mean()
    assert perplexity < 0.75 * unigram, (perplexity, unigram)

    # Streaming the held-out text token by token reproduces the full pass.
    prefix = jnp.asarray(held[:2, :16])
    full = _logits(kind, model, prefix)
    state = model.zero_carry(2) if kind == "rnn" else model.init_cache(2)
    step = nnx.jit(lambda model, state, tokens: model.step(state, tokens))  # one compile
    stepped = []
    for t in range(prefix.shape[1]):
        state, logits = step(model, state, prefix[:, t])
        stepped.append(logits)
    np.testing.assert_allclose(jnp.stack(stepped, 1), full, rtol=1e-4, atol=1e-4)


def test_language_models_reject_token_ids_outside_the_vocabulary():
    """Out-of-range ids used to give silently wrong logits (the RNN LM's gather clamps id 7 to
    the last row, 4) or all-NaN logits (the transformers' nnx.Embed fills with NaN)."""
    bad = jnp.array([[1, 7, 2]])
    rnn = RNNLanguageModel(5, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"tokens holds ids in \[1, 7\] but vocab_size=5"):
        rnn(bad)
    lm = TransformerLM(5, d_model=4, num_heads=1, num_layers=1, max_length=6, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"tokens holds ids in \[1, 7\] but vocab_size=5"):
        lm(bad)
    with pytest.raises(ValueError, match=r"tokens holds ids in \[-1, 2\] but vocab_size=5"):
        lm(jnp.array([[1, -1, 2]]))
    s2s = TransformerSeq2Seq(
        5,
        6,
        d_model=4,
        num_heads=1,
        num_encoder_layers=1,
        num_decoder_layers=1,
        max_length=6,
        rngs=nnx.Rngs(0),
    )
    source, lengths, target = jnp.array([[1, 2, 9]]), jnp.array([2]), jnp.array([[1, 2]])
    # Padding may hold anything: only ids inside source_lengths are checked.
    assert bool(jnp.all(jnp.isfinite(s2s(source, lengths, target))))
    with pytest.raises(ValueError, match=r"source holds ids in \[1, 9\] but source_vocab_size=5"):
        s2s(source, jnp.array([3]), target)
    with pytest.raises(ValueError, match=r"target_inputs holds ids .* target_vocab_size=6"):
        s2s(source, lengths, jnp.array([[1, 6]]))
    with pytest.raises(ValueError, match=r"source holds ids .* source_vocab_size=5"):
        s2s.init_decode_state(jnp.array([[5, 1]]), jnp.array([2]), 4)


def test_rnn_lm_refuses_misshaped_tokens_naming_them():
    """T = 0 used to fail in the scan naming the embedded `xs` (shape (1, 0, 4)), and a
    [batch, 1] token to `step` broadcast against the carry into [batch, batch, vocab] logits."""
    rnn = RNNLanguageModel(5, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^tokens has shape \(1, 0\); expected int \[batch, time"):
        rnn(jnp.zeros((1, 0), jnp.int32))
    with pytest.raises(ValueError, match=r"^token has shape \(2, 1\); expected int \[batch\]"):
        rnn.step(rnn.zero_carry(2), jnp.zeros((2, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"compute_dtype='float16'; allowed: float32, bfloat16"):
        RNNLanguageModel(5, 4, compute_dtype="float16", rngs=nnx.Rngs(0))


def test_logits_are_the_dropped_outputs_times_the_undropped_tied_embedding():
    """logits = dropout_output(h) @ E^T + b (module docstring): the output dropout acts on the
    logits' input, and embedding dropout (whole word types zeroed for the input lookup, as in
    AWD-LSTM) leaves the tied output kernel whole but reaches the RNN's input."""
    model = RNNLanguageModel(
        7, 5, tie_embeddings=True, embedding_dropout=0.5, dropout_output=0.5, rngs=nnx.Rngs(0)
    )
    tokens = jnp.array([[1, 2, 3, 4, 5, 6]])
    logits, _, hidden = model(tokens, rng=jax.random.key(0))
    assert not np.allclose(hidden["dropped_outputs"], hidden["outputs"])
    want = hidden["dropped_outputs"] @ model.embedding[...].T + model.output_bias[...]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
    # ... while the input lookup reads the dropped table (stream 0 of the pass's key): a
    # lookup in the whole table passed everything above.
    table = regularizers.embedding_dropout(
        jax.random.fold_in(jax.random.key(0), 0), 0.5, model.embedding[...]
    )
    assert np.any(np.all(np.asarray(table[tokens]) == 0, axis=-1))  # a dropped word is read
    outputs, _ = model.rnn(table[tokens])
    np.testing.assert_allclose(hidden["outputs"], outputs, rtol=1e-5, atol=1e-6)
