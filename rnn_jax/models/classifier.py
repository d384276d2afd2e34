"""Many-to-one classification (seed question 18): encoder states -> one vector -> class logits.

Pooling of states h_1..h_L (padding excluded):
  last       h_L (unidirectional); forward h_L ++ backward h_1 (bidirectional)
  mean       (1/L) sum_t h_t
  max        max_t h_t, per feature
  attention  sum_t a_t h_t with a = softmax_t(v^T tanh(W h_t + b)) (Yang et al. 2016: additive
             attention against a learned query), weights returned for plotting

With a unidirectional RNN encoder the classifier also streams (`zero_state`, `step`): the
pooled vector of the prefix is kept as running statistics (attention uses the online
softmax: a running maximum score, normaliser and weighted sum), so `step` after the last
token gives the same logits as the full pass.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax.attention import AdditiveAttention
from rnn_jax.layers import dropout
from rnn_jax.models.checks import check_choice, check_positive, length_mask
from rnn_jax.models.encoder import SequenceEncoder, first_and_last

POOLINGS = ("last", "mean", "max", "attention")


class Classifier(nnx.Module):
    """Sentence classifier. `encoder_options` go to SequenceEncoder (embed_size, hidden_size,
    kind, cell, num_layers, bidirectional, dropout_rate, ...)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        pooling: str = "last",
        attention_size: int | None = None,
        rngs: nnx.Rngs,
        **encoder_options,
    ):
        check_choice("pooling", pooling, POOLINGS)
        check_positive(num_classes=num_classes)
        if attention_size is not None:
            check_positive(attention_size=attention_size)
        if encoder_options.get("num_chars") is not None:
            # `__call__` and `step` take no characters: the encoder would build a char BiRNN
            # and then refuse every call for want of `chars`.
            raise ValueError(
                f"num_chars={encoder_options['num_chars']!r}: the classifier has no character "
                "features (its calls take no chars); leave num_chars unset"
            )
        self.pooling = pooling
        self.encoder = SequenceEncoder(vocab_size, rngs=rngs, **encoder_options)
        if pooling == "last" and self.encoder.kind != "rnn":
            raise ValueError(
                f"pooling='last' needs an RNN encoder, got kind={self.encoder.kind!r}; "
                "use mean, max or attention"
            )
        size = self.encoder.output_size
        if pooling == "attention":
            # `attention_size or size` read an illegal 0 as "the default" without a word.
            width = size if attention_size is None else attention_size
            self.attention = AdditiveAttention(size, size, width, rngs=rngs)
            self.query = nnx.Param(jnp.zeros((size,)))
        self.output = nnx.Linear(size, num_classes, rngs=rngs)

    def pool(self, states: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """states [batch, time, size] -> (sentence vectors [batch, size], attention weights
        [batch, time] or None)."""
        mask = length_mask(lengths, states.shape[1])
        if self.pooling == "last":
            if self.encoder.bidirectional:
                return first_and_last(states, lengths, self.encoder.hidden_size), None
            return jnp.take_along_axis(states, (lengths - 1)[:, None, None], axis=1)[:, 0], None
        if self.pooling == "mean":
            total = jnp.sum(jnp.where(mask[:, :, None], states, 0.0), axis=1)
            return total / lengths[:, None].astype(states.dtype), None
        if self.pooling == "max":
            return jnp.max(jnp.where(mask[:, :, None], states, -jnp.inf), axis=1), None
        query = jnp.broadcast_to(self.query[...], (states.shape[0], states.shape[-1]))
        return self.attention(query, states, mask)

    def __call__(
        self, tokens: jax.Array, lengths: jax.Array, *, rng: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array | None]:
        """tokens [batch, time], lengths [batch] -> (logits [batch, num_classes], attention
        weights [batch, time] or None)."""
        encoder_rng, pool_rng = (None, None) if rng is None else jax.random.split(rng)
        states, _ = self.encoder(tokens, lengths, rng=encoder_rng)
        pooled, weights = self.pool(states, lengths)
        return self.output(dropout(pool_rng, self.encoder.dropout_rate, pooled)), weights

    def zero_state(self, batch_size: int) -> dict:
        """Streaming state: encoder carries and the running pooling statistics."""
        size = self.encoder.output_size
        return {
            "carries": self.encoder.zero_carry(batch_size),
            "count": jnp.zeros((batch_size,)),
            "last": jnp.zeros((batch_size, size)),
            "sum": jnp.zeros((batch_size, size)),
            "max": jnp.full((batch_size, size), -jnp.inf),
            "score_max": jnp.full((batch_size,), -jnp.inf),
            "normaliser": jnp.zeros((batch_size,)),
        }

    def step(self, state: dict, tokens: jax.Array) -> tuple[dict, jax.Array]:
        """Feed tokens [batch]; -> (state, logits [batch, num_classes] of the prefix so far)."""
        carries, h = self.encoder.step(state["carries"], tokens)
        new = {"carries": carries, "count": state["count"] + 1, "last": h}
        new["max"] = jnp.maximum(state["max"], h)
        if self.pooling == "attention":
            # Online softmax: rescale the running sums to the new maximum score.
            query = jnp.broadcast_to(self.query[...], h.shape)
            score = self.attention.scores(query, self.attention.prepare_keys(h[:, None]))[:, 0]
            score_max = jnp.maximum(state["score_max"], score)
            old_scale, weight = jnp.exp(state["score_max"] - score_max), jnp.exp(score - score_max)
            new["score_max"] = score_max
            new["normaliser"] = state["normaliser"] * old_scale + weight
            new["sum"] = state["sum"] * old_scale[:, None] + weight[:, None] * h
            pooled = new["sum"] / new["normaliser"][:, None]
        else:
            new["score_max"], new["normaliser"] = state["score_max"], state["normaliser"]
            new["sum"] = state["sum"] + h
            pooled = {"last": h, "mean": new["sum"] / new["count"][:, None], "max": new["max"]}[
                self.pooling
            ]
        return new, self.output(pooled)
