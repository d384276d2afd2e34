"""Review findings for the models: bad input fails with a message that names the problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.models.transformer import TransformerLM, TransformerSeq2Seq


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


def test_dot_attention_with_a_bidirectional_encoder_names_the_seq2seq_options():
    """The error used to come from the attention module: 'use score=...', an argument that
    Seq2Seq does not have, with no hint that the bidirectional encoder doubles the width."""
    with pytest.raises(ValueError, match="bidirectional_encoder=False"):
        Seq2Seq(9, 9, embed_size=4, hidden_size=4, attention="dot", rngs=nnx.Rngs(0))
    Seq2Seq(
        9,
        9,
        embed_size=4,
        hidden_size=4,
        attention="dot",
        bidirectional_encoder=False,
        rngs=nnx.Rngs(0),
    )


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_padding_ids_outside_the_vocabulary_change_nothing(kind):
    """The id check skips padding, so a pad id of vocab_size (or any) is accepted; it used to
    be embedded anyway, as NaN (nnx.Embed fills out-of-range rows): the transformer's
    attention gives the padded keys weight 0, but 0 * NaN = NaN poisoned every output, and the
    RNN's forward pass stayed finite while its gradients were NaN."""
    model = Classifier(
        9,
        3,
        pooling="mean",
        kind=kind,
        embed_size=4,
        hidden_size=4,
        num_heads=1,
        max_length=8,
        rngs=nnx.Rngs(0),
    )
    lengths = jnp.array([3, 2])

    def logits_and_grads(pad):
        tokens = jnp.array([[1, 2, 3, pad], [4, 5, pad, pad]])
        loss = lambda m: jnp.sum(m(tokens, lengths)[0] ** 2)
        return model(tokens, lengths)[0], nnx.state(nnx.grad(loss)(model), nnx.Param)

    reference = logits_and_grads(0)
    for pad in (9, 100):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            logits_and_grads(pad),
            reference,
        )
