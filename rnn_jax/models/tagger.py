"""Sequence labelling (seed question 14): (Bi)RNN states -> per-token tag scores -> tags.

  emissions = W_out states + b                          [batch, time, num_tags]
  head='softmax':  loss = sum_t CE(emissions_t, y_t);  tags = argmax_t emissions_t
  head='crf':      loss = -log p_CRF(y | emissions)    (rnn_jax.crf, Lample et al. 2016);
                   tags = Viterbi path

The encoder (rnn_jax.models.encoder.SequenceEncoder) may add character-level BiRNN word
features (Lample et al. 2016) or be the transformer-encoder baseline. Losses are summed over
each sentence's tokens and returned per sentence, `[batch]`; padding never contributes.

The padding tag (`pad_tag_id`, id 0 of `TextDataset.label_vocab`'s tag vocabulary, which has
no other special) is never predicted: `predict` sets its emission to -inf before the argmax or
Viterbi, so the best path is the best over the real tags only. The loss still normalises over
every tag: gold tags are never padding, so training only pushes the padding tag's score down,
and leaving it in keeps the committed training runs as they were.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rnn_jax import crf
from rnn_jax.models.checks import check_choice, check_ids, check_positive, length_mask
from rnn_jax.models.encoder import SequenceEncoder
from rnn_jax.predicates import is_int
from rnn_jax.scan_checks import check_length_range

HEADS = ("softmax", "crf")


class Tagger(nnx.Module):
    """BiRNN(-CRF) tagger. `encoder_options` go to SequenceEncoder (embed_size, hidden_size,
    kind, cell, num_layers, bidirectional, dropout_rate, num_chars, ...).

    `pad_tag_id` is the tag id reserved for padding (default 0, the `<pad>` of the tag
    vocabularies `TextDataset.label_vocab` builds), which `predict` never returns inside a
    sequence; None when every id in [0, num_tags) is a real tag.
    """

    def __init__(
        self,
        vocab_size: int,
        num_tags: int,
        *,
        head: str = "softmax",
        pad_tag_id: int | None = 0,
        rngs: nnx.Rngs,
        **encoder_options,
    ):
        check_choice("head", head, HEADS)
        check_positive(num_tags=num_tags)
        if pad_tag_id is not None and (
            not is_int(pad_tag_id) or not 0 <= pad_tag_id < num_tags or num_tags < 2
        ):
            # With one tag that is padding, nothing is left to predict.
            raise ValueError(
                f"pad_tag_id={pad_tag_id!r} must be None or an int in [0, num_tags={num_tags}) "
                "with at least one other tag"
            )
        self.num_tags = num_tags
        self.head = head
        self.pad_tag_id = pad_tag_id
        self.encoder = SequenceEncoder(vocab_size, rngs=rngs, **encoder_options)
        self.output = nnx.Linear(self.encoder.output_size, num_tags, rngs=rngs)
        if head == "crf":
            init = nnx.initializers.uniform(0.2)  # U(0, 0.2) - 0.1: pytorch-crf's +-0.1
            self.transitions = nnx.Param(init(rngs.params(), (num_tags, num_tags)) - 0.1)
            self.start_transitions = nnx.Param(init(rngs.params(), (num_tags,)) - 0.1)
            self.end_transitions = nnx.Param(init(rngs.params(), (num_tags,)) - 0.1)

    def __call__(
        self,
        tokens: jax.Array,
        lengths: jax.Array,
        *,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Emission scores [batch, time, num_tags] for tokens [batch, time], lengths [batch]."""
        states, _ = self.encoder(tokens, lengths, chars=chars, char_lengths=char_lengths, rng=rng)
        return self.output(states)

    def _crf_params(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.transitions[...], self.start_transitions[...], self.end_transitions[...]

    def loss(
        self,
        tokens: jax.Array,
        tags: jax.Array,
        lengths: jax.Array,
        *,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Negative log-likelihood of the gold tags [batch, time], summed per sentence: [batch]."""
        if jnp.shape(tags) != jnp.shape(tokens):  # the softmax head broadcast [batch, 1] tags
            raise ValueError(
                f"tags must have shape {jnp.shape(tokens)} (tokens'), got {jnp.shape(tags)}"
            )
        check_length_range(lengths, tokens.shape[1], batch=tokens.shape[0])
        mask = length_mask(lengths, tokens.shape[1])
        check_ids("tags", tags, self.num_tags, "num_tags", mask)
        emissions = self(tokens, lengths, chars=chars, char_lengths=char_lengths, rng=rng)
        if self.head == "crf":
            return crf.crf_nll(emissions, tags, lengths, *self._crf_params())
        safe_tags = jnp.where(mask, tags, 0)
        token_nll = optax.softmax_cross_entropy_with_integer_labels(emissions, safe_tags)
        return jnp.sum(jnp.where(mask, token_nll, 0.0), axis=1)

    def predict(
        self,
        tokens: jax.Array,
        lengths: jax.Array,
        *,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
    ) -> jax.Array:
        """Best tags [batch, time] int32 (0 past lengths): argmax, or Viterbi for the CRF, over
        the tags other than `pad_tag_id`."""
        emissions = self._without_pad(self(tokens, lengths, chars=chars, char_lengths=char_lengths))
        if self.head == "crf":
            return crf.viterbi_decode(emissions, lengths, *self._crf_params())[0]
        mask = length_mask(lengths, tokens.shape[1])
        return jnp.where(mask, jnp.argmax(emissions, axis=-1), 0).astype(jnp.int32)

    def _without_pad(self, emissions: jax.Array) -> jax.Array:
        """emissions [..., num_tags] with the padding tag's score at -inf: no argmax or Viterbi
        path can choose it (-inf plus a finite transition score stays -inf, never NaN)."""
        if self.pad_tag_id is None:
            return emissions
        return emissions.at[..., self.pad_tag_id].set(-jnp.inf)

    def zero_carry(self, batch_size: int) -> list:
        """Streaming state (unidirectional RNN encoder only)."""
        return self.encoder.zero_carry(batch_size)

    def step(
        self,
        carries: list,
        tokens: jax.Array,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
    ) -> tuple[list, jax.Array]:
        """One token: tokens [batch] -> (carries, emissions [batch, num_tags])."""
        carries, state = self.encoder.step(carries, tokens, chars, char_lengths)
        return carries, self.output(state)
