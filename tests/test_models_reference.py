"""The models against float64 numpy references: a per-sentence transcription of the RNN
encoder-decoder (bridge, input feeding, the three attention scores, padding of source and
target), the classifier's pooling, weight drop and tied embeddings of the LM; padding ids
(characters, decoder inputs) that may hold any id; and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_numpy as ref
from flax import nnx

from rnn_jax.models import RNNLanguageModel, lm
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.params import count_params
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.models.tagger import Tagger
from rnn_jax.train import regularizers

SRC_VOCAB, TGT_VOCAB = 9, 11


# Padding holds in-vocabulary ids other than 0, so a model that read it would differ.
SOURCE = np.array([[3, 4, 5, 6, 2], [5, 6, 2, 7, 8], [7, 3, 4, 4, 1]])


SOURCE_LENGTHS = np.array([5, 3, 1])


TARGET_INPUTS = np.array([[1, 3, 4, 5, 6], [1, 6, 7, 9, 2], [1, 8, 3, 3, 3]])


TARGETS = np.array([[3, 4, 5, 6, 10], [6, 7, 10, 4, 4], [8, 10, 2, 2, 2]])


TARGET_LENGTHS = np.array([5, 3, 2])


SEQ2SEQ_VARIANTS = {
    "additive_bi_lstm": dict(attention="additive", cell="lstm", attention_size=5),
    "dot_uni_lstm": dict(attention="dot", bidirectional_encoder=False, cell="lstm"),
    "general_bi_gru_no_feeding": dict(attention="general", cell="gru", input_feeding=False),
    "none_bi_lstm": dict(attention="none", cell="lstm"),
}


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def _run(cell: str, params: dict, xs: np.ndarray, initial=None):
    return ref.run_sequence(cell, params, xs, initial)


def _reference_seq2seq(model: Seq2Seq, options: dict, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentence b, read only up to its source length: (logits [time, vocab], attention weights
    [time, source_time] zero-padded, or None)."""
    cell, score = options["cell"], options["attention"]
    length = SOURCE_LENGTHS[b]
    x = _f64(model.encoder.embed.embedding[...])[SOURCE[b, :length]]
    bidirectional = model.bridge is not None
    finals = []  # per layer: (forward final, backward final) state tuples
    for layer in model.encoder.rnn.params:
        if bidirectional:
            fw, fw_final = _run(cell, layer["fw"], x)
            bw, bw_final = _run(cell, layer["bw"], x[::-1])
            x = np.concatenate([fw, bw[::-1]], axis=-1)
            finals.append((fw_final, bw_final))
        else:
            x, final = _run(cell, layer, x)
            finals.append((final, None))
    memory = x  # [length, memory_size]
    # Decoder initial state: copied, or tanh(W [fw; bw] + b) per layer and carry part.
    states, part = [], 0
    for fw_final, bw_final in finals:
        if bidirectional:
            layer_state = []
            for f, bk in zip(fw_final, bw_final, strict=True):
                linear = model.bridge[part]
                joined = np.concatenate([f, bk])
                layer_state.append(
                    np.tanh(joined @ _f64(linear.kernel[...]) + _f64(linear.bias[...]))
                )
                part += 1
            states.append(tuple(layer_state))
        else:
            states.append(fw_final)
    hidden = model.hidden_size
    feed = np.zeros(hidden)
    target_embed = _f64(model.target_embed.embedding[...])
    logits, weights = [], []
    for token in TARGET_INPUTS[b]:
        y = target_embed[token]
        if model.input_feeding:
            y = np.concatenate([y, feed])
        for layer, params in enumerate(model.decoder.params):
            ys, states[layer] = _run(cell, params, y[None], states[layer])
            y = ys[0]
        s = y
        if score != "none":
            att = model.attention
            if score == "additive":  # v^T tanh(W_q s + W_k h + b)
                hidden_att = np.tanh(
                    s @ _f64(att.query_projection.kernel[...])
                    + memory @ _f64(att.key_projection.kernel[...])
                    + _f64(att.key_projection.bias[...])
                )
                scores = hidden_att @ _f64(att.v.kernel[...])[:, 0]
            elif score == "dot":
                scores = memory @ s
            else:  # general: s^T W_a h
                scores = (memory @ _f64(att.key_projection.kernel[...])) @ s
            a = np.exp(scores - scores.max())
            a /= a.sum()
            context = a @ memory
            s = np.tanh(np.concatenate([context, s]) @ _f64(model.combine.kernel[...]))
            feed = s
            weights.append(np.pad(a, (0, SOURCE.shape[1] - length)))
        logits.append(s @ _f64(model.output.kernel[...]) + _f64(model.output.bias[...]))
    return np.stack(logits), (np.stack(weights) if weights else None)


@pytest.mark.parametrize("variant", list(SEQ2SEQ_VARIANTS))
def test_seq2seq_equals_a_numpy_per_sentence_reference(variant):
    """Logits, attention weights and the per-sentence loss of the batched, padded model equal
    a float64 loop over each sentence alone (source cut at its length, so neither the padding
    ids nor the padded memory positions can reach the reference)."""
    options = SEQ2SEQ_VARIANTS[variant]
    model = Seq2Seq(
        SRC_VOCAB,
        TGT_VOCAB,
        embed_size=4,
        hidden_size=6,
        num_layers=2,
        dropout_rate=0.3,  # off in evaluation (rng=None)
        rngs=nnx.Rngs(5),
        **options,
    )

    @nnx.jit  # one compile (eager, the decoder's steps are traced op by op)
    def forward_and_loss(model, source, source_lengths, target_inputs, targets, target_lengths):
        logits, weights = model(source, source_lengths, target_inputs)
        loss = model.loss(source, source_lengths, target_inputs, targets, target_lengths)
        return logits, weights, loss

    logits, weights, loss = forward_and_loss(
        model,
        *map(jnp.asarray, (SOURCE, SOURCE_LENGTHS, TARGET_INPUTS, TARGETS, TARGET_LENGTHS)),
    )
    assert (weights is None) == (options["attention"] == "none")
    for b in range(SOURCE.shape[0]):
        want_logits, want_weights = _reference_seq2seq(model, options, b)
        np.testing.assert_allclose(logits[b], want_logits, rtol=2e-5, atol=2e-5)
        if want_weights is not None:
            np.testing.assert_allclose(weights[b], want_weights, rtol=2e-5, atol=1e-6)
        log_probs = want_logits - np.log(np.sum(np.exp(want_logits), -1, keepdims=True))
        n = TARGET_LENGTHS[b]
        want_loss = -np.sum(log_probs[np.arange(n), TARGETS[b, :n]])
        np.testing.assert_allclose(loss[b], want_loss, rtol=2e-5)


def test_weight_drop_with_a_cell_without_w_hh_is_refused_by_name():
    """min_gru has no W_hh (its gates read the input only): weight_drop used to pass the
    constructor and fail in the first training pass with `KeyError: 'W_hh'`."""
    with pytest.raises(ValueError, match=r"weight_drop=0.5 .*cell='min_gru'"):
        RNNLanguageModel(10, 8, cell="min_gru", weight_drop=0.5, rngs=nnx.Rngs(0))
    model = RNNLanguageModel(10, 8, cell="min_gru", rngs=nnx.Rngs(0))
    logits, _, _ = model(jnp.zeros((2, 3), jnp.int32), rng=jax.random.key(1))
    assert logits.shape == (2, 3, 10)


def test_character_padding_may_hold_any_id():
    """Characters past a word's char_length are padding, like tokens past `lengths`: an
    out-of-range pad id was refused eagerly as a vocabulary mismatch and, under jit, embedded
    as NaN (nnx.Embed), which left the loss finite but made every gradient NaN. Review 23:
    so are the characters of a padded word (a token past `lengths`) whatever its char_length
    says; they were read as real, with the same two failures."""
    model = Tagger(
        10,
        3,
        embed_size=4,
        hidden_size=4,
        num_chars=6,
        char_embed_size=3,
        char_hidden_size=2,
        rngs=nnx.Rngs(0),
    )
    tokens, tags, lengths = jnp.array([[1, 2, 3]]), jnp.array([[0, 1, 2]]), jnp.array([2])
    char_lengths = jnp.array([[2, 1, 0]])

    @nnx.jit
    def loss_and_grads(model, chars, char_lengths=char_lengths):
        loss = lambda m: jnp.sum(
            m.loss(tokens, tags, lengths, chars=chars, char_lengths=char_lengths)
        )
        return loss(model), nnx.state(nnx.grad(loss)(model), nnx.Param)

    def chars_padded_with(pad):
        return jnp.array([[[1, 2, pad], [3, pad, pad], [pad, pad, pad]]])

    reference = loss_and_grads(model, chars_padded_with(0))
    for pad in (5, 6, 100):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            loss_and_grads(model, chars_padded_with(pad)),
            reference,
        )
    # The padded third word with a char_length of 2 and out-of-range ids (same shapes, so no
    # second compile): as if it were empty.
    padded_word = jnp.array([[[1, 2, 0], [3, 0, 0], [100, 6, 0]]])
    padded_word_lengths = jnp.array([[2, 1, 2]])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        loss_and_grads(model, padded_word, padded_word_lengths),
        reference,
    )
    # Eagerly too, and the check still looks at the real characters.
    model.loss(tokens, tags, lengths, chars=chars_padded_with(6), char_lengths=char_lengths)
    np.testing.assert_allclose(
        model.loss(tokens, tags, lengths, chars=padded_word, char_lengths=padded_word_lengths),
        reference[0][None],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"chars holds ids in \[1, 6\] but num_chars=6"):
        model.loss(
            tokens,
            tags,
            lengths,
            chars=jnp.array([[[1, 6, 0], [3, 0, 0], [0, 0, 0]]]),
            char_lengths=char_lengths,
        )


def _numpy_lstm_lm(model: RNNLanguageModel, tokens: np.ndarray, stack_params: list) -> np.ndarray:
    """float64 logits of an LSTM LM in evaluation mode with the given stack params."""
    x = _f64(model.embedding[...])[tokens]
    for params in stack_params:
        x = np.stack([_run("lstm", params, row)[0] for row in x])
    kernel = _f64(model.embedding[...]).T if model.tie_embeddings else model.output_kernel[...]
    return x @ _f64(kernel) + _f64(model.output_bias[...])


def test_weight_drop_draws_one_w_hh_mask_per_forward_pass():
    """DropConnect (AWD-LSTM's WeightDrop): one mask on each layer's W_hh for the whole pass,
    every sequence and time step. The model's logits equal a numpy LSTM run with the W_hh
    that `regularizers.weight_drop` gives for the pass's key, and no other W_hh."""
    model = RNNLanguageModel(7, 5, num_layers=2, weight_drop=0.5, rngs=nnx.Rngs(3))
    tokens = np.random.default_rng(0).integers(0, 7, (3, 6))
    rng = jax.random.key(4)
    logits, _, _ = model(jnp.asarray(tokens), rng=rng)
    dropped = regularizers.weight_drop(jax.random.fold_in(rng, lm._WEIGHT), 0.5, model.rnn.params)
    for layer, original in zip(dropped, model.rnn.params, strict=True):
        kept = np.asarray(layer["W_hh"]) != 0
        assert 0.3 < kept.mean() < 0.7
        np.testing.assert_allclose(
            np.asarray(layer["W_hh"])[kept], 2.0 * np.asarray(original["W_hh"])[kept], rtol=1e-6
        )
    np.testing.assert_allclose(logits, _numpy_lstm_lm(model, tokens, dropped), atol=1e-5)
    # Evaluation (rng=None) uses the undropped matrices.
    np.testing.assert_allclose(
        model(jnp.asarray(tokens))[0],
        _numpy_lstm_lm(model, tokens, model.rnn.params),
        atol=1e-5,
    )


def test_tied_embedding_gradient_is_the_sum_of_its_two_uses():
    """With tie_embeddings the one matrix E is both the input lookup and the output kernel
    E^T: its gradient equals that of an untied copy with K = E^T, grad_E + grad_K^T."""
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 7, (2, 4)))
    targets = jnp.asarray(np.random.default_rng(2).integers(0, 7, (2, 4)))
    tied = RNNLanguageModel(7, 5, tie_embeddings=True, rngs=nnx.Rngs(6))
    untied = RNNLanguageModel(7, 5, rngs=nnx.Rngs(6))
    nnx.update(untied, nnx.state(tied))
    untied.output_kernel[...] = tied.embedding[...].T

    def loss(model):
        logits, _, _ = model(tokens)
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], -1))

    np.testing.assert_allclose(loss(tied), loss(untied), rtol=1e-6)
    g_tied, g_untied = nnx.grad(loss)(tied), nnx.grad(loss)(untied)
    want = g_untied.embedding[...] + g_untied.output_kernel[...].T
    assert float(jnp.max(jnp.abs(g_untied.output_kernel[...]))) > 1e-3
    np.testing.assert_allclose(g_tied.embedding[...], want, rtol=1e-5, atol=1e-7)
    assert count_params(tied) == count_params(untied) - 7 * 5


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_classifier_pooling_equals_numpy_over_the_real_states(pooling, bidirectional):
    """Pooling against numpy over each row's first `length` states only. An RNN's states past
    the length are exactly 0, so changing the padding ids (the other padding test) cannot
    see a mean divided by the padded width or a max that lets those zeros win."""
    model = Classifier(
        9,
        3,
        pooling=pooling,
        embed_size=4,
        hidden_size=5,
        bidirectional=bidirectional,
        attention_size=3,
        rngs=nnx.Rngs(7),
    )
    if pooling == "attention":  # a non-zero query, so the weights are not uniform
        model.query[...] = jax.random.normal(jax.random.key(0), model.query.shape)
    tokens = jnp.array([[1, 2, 3, 4, 5], [4, 5, 6, 0, 0], [7, 0, 0, 0, 0]])
    lengths = jnp.array([5, 3, 1])
    states, _ = model.encoder(tokens, lengths)
    pooled, weights = model.pool(states, lengths)
    hidden = model.encoder.hidden_size
    for b, length in enumerate(np.asarray(lengths)):
        real = _f64(states[b, :length])
        if pooling == "last":
            want = real[-1]
            if bidirectional:
                want = np.concatenate([real[-1, :hidden], real[0, hidden:]])
        elif pooling == "mean":
            want = real.mean(0)
        elif pooling == "max":
            want = real.max(0)
        else:
            att = model.attention
            scores = (
                np.tanh(
                    _f64(model.query[...]) @ _f64(att.query_projection.kernel[...])
                    + real @ _f64(att.key_projection.kernel[...])
                    + _f64(att.key_projection.bias[...])
                )
                @ _f64(att.v.kernel[...])[:, 0]
            )
            a = np.exp(scores - scores.max())
            a /= a.sum()
            want = a @ real
            np.testing.assert_allclose(weights[b, :length], a, rtol=1e-5, atol=1e-7)
            assert np.all(np.asarray(weights[b, length:]) == 0.0)
        np.testing.assert_allclose(pooled[b], want, rtol=1e-5, atol=1e-6)
    if pooling == "max":  # sharp only if a padded row (length < 5) has an all-negative feature
        assert np.any(np.asarray(pooled)[np.asarray(lengths) < tokens.shape[1]] < 0)


@pytest.mark.parametrize("prob", [1.5, -0.5])
def test_teacher_forcing_probability_outside_zero_one_is_refused(prob):
    """u < p with u ~ U[0, 1) read 1.5 as teacher forcing and -0.5 as free running."""
    model = Seq2Seq(SRC_VOCAB, TGT_VOCAB, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    args = (jnp.asarray(SOURCE), jnp.asarray(SOURCE_LENGTHS), jnp.asarray(TARGET_INPUTS))
    with pytest.raises(ValueError, match=rf"teacher_forcing_prob={prob}; allowed: \[0, 1\]"):
        model(*args, teacher_forcing_prob=prob, rng=jax.random.key(0))


def test_decoder_inputs_past_the_target_length_may_hold_any_id():
    """Seq2Seq.loss checked every decoder input and, under jit, embedded an out-of-range
    padding input as NaN: the loss stayed finite (masked) but the gradients did not."""
    model = Seq2Seq(SRC_VOCAB, TGT_VOCAB, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    real = np.arange(TARGET_INPUTS.shape[1]) < TARGET_LENGTHS[:, None]

    @nnx.jit
    def loss_and_grads(model, target_inputs):
        def loss(m):
            return jnp.sum(m.loss(SOURCE, SOURCE_LENGTHS, target_inputs, TARGETS, TARGET_LENGTHS))

        return loss(model), nnx.state(nnx.grad(loss)(model), nnx.Param)

    reference = loss_and_grads(model, jnp.asarray(np.where(real, TARGET_INPUTS, 0)))
    for pad in (TGT_VOCAB, 10_000):
        padded = jnp.asarray(np.where(real, TARGET_INPUTS, pad))
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            loss_and_grads(model, padded),
            reference,
        )
    # Eagerly, a padding id outside the vocabulary is not refused either.
    padded = jnp.asarray(np.where(real, TARGET_INPUTS, TGT_VOCAB))
    model.loss(SOURCE, SOURCE_LENGTHS, padded, TARGETS, TARGET_LENGTHS)
