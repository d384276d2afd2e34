"""RNN encoder-decoder for translation (seed question 16), with or without attention.

Encoder: embeddings -> (Bi)RNN (rnn_jax.models.encoder.SequenceEncoder) -> memory h_1..h_S.
Decoder (one step, Luong, Pham & Manning 2015, with input feeding):

  x_t   = [E y_{t-1} ; h~_{t-1}]            (input feeding; h~_0 = 0)
  s_t   = RNN(s_{t-1}, x_t)                 (stacked, unidirectional)
  c_t, a_t = attention(s_t, h_1..h_S)       additive (Bahdanau et al. 2014), dot or general
  h~_t  = tanh(W_c [c_t ; s_t])
  p(y_t | y_<t, x) = softmax(W_out h~_t + b)

attention='none' is the Sutskever et al. (2014) ablation: x_t = E y_{t-1}, logits = W_out s_t,
and the source reaches the decoder only through its initial state. The decoder starts from the
encoder's final state: copied for a unidirectional encoder, tanh(W [forward; backward]) per
carry part for a bidirectional one (Bahdanau et al. 2014 used the backward state).

Training feeds y_{t-1} by teacher forcing (`teacher_forcing_prob=None`), by scheduled sampling
(gold with probability p, else the model's argmax, rnn_jax.scheduled_sampling), or free running
(p = 0). `init_decode_state` + `step` is the single-step API rnn_jax.decoding uses; `__call__`
runs the same step function inside `lax.scan`, so both give the same numbers.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from rnn_jax.attention import make_attention
from rnn_jax.layers import dropout
from rnn_jax.models.checks import (
    check_choice,
    check_ids,
    check_positive,
    check_same_batch,
    check_sequences,
    check_step_tokens,
    length_mask,
)
from rnn_jax.models.encoder import SequenceEncoder
from rnn_jax.modules import RNN
from rnn_jax.scan_checks import check_length_range
from rnn_jax.scheduled_sampling import choose_decoder_inputs, concrete_probability

ATTENTIONS = ("additive", "dot", "general", "none")


class Seq2Seq(nnx.Module):
    """Args:
    source_vocab_size, target_vocab_size, embed_size, hidden_size: sizes.
    num_layers, cell: encoder and decoder stacks (same depth, so states can be bridged).
    bidirectional_encoder: BiRNN encoder (memory width 2 * hidden_size).
    attention: 'additive', 'dot', 'general' or 'none' (Sutskever et al. 2014).
    input_feeding: feed h~_{t-1} into the decoder input (attention models only).
    dropout_rate: on embeddings, between layers and on the decoder output.
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        *,
        embed_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional_encoder: bool = True,
        attention: str = "additive",
        input_feeding: bool = True,
        attention_size: int | None = None,
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        check_choice("attention", attention, ATTENTIONS)
        check_positive(target_vocab_size=target_vocab_size, num_layers=num_layers)
        if attention_size is not None:
            check_positive(attention_size=attention_size)
        if attention == "dot" and bidirectional_encoder:
            # s^T h needs equal widths; the attention module's own error names its arguments.
            raise ValueError(
                f"attention='dot' needs query_size == key_size, but the decoder state is "
                f"hidden_size={hidden_size} wide and a bidirectional encoder's states are "
                f"{2 * hidden_size}; use bidirectional_encoder=False, or attention='general' "
                "or 'additive'"
            )
        self.target_vocab_size = target_vocab_size
        self.hidden_size = hidden_size
        self.dropout_rate = dropout_rate
        self.use_attention = attention != "none"
        self.input_feeding = input_feeding and self.use_attention
        self.encoder = SequenceEncoder(
            source_vocab_size,
            embed_size=embed_size,
            hidden_size=hidden_size,
            cell=cell,
            num_layers=num_layers,
            bidirectional=bidirectional_encoder,
            dropout_rate=dropout_rate,
            rngs=rngs,
        )
        memory_size = self.encoder.output_size
        self.target_embed = nnx.Embed(target_vocab_size, embed_size, rngs=rngs)
        decoder_input = embed_size + (hidden_size if self.input_feeding else 0)
        self.decoder = RNN(
            cell, decoder_input, hidden_size, num_layers=num_layers, dropout=dropout_rate, rngs=rngs
        )
        if self.use_attention:
            self.attention = make_attention(
                attention, hidden_size, memory_size, attention_size=attention_size, rngs=rngs
            )
            self.combine = nnx.Linear(
                memory_size + hidden_size, hidden_size, use_bias=False, rngs=rngs
            )
        num_parts = len(jax.tree.leaves(self.decoder.zero_carry(1)))
        self.bridge = (
            nnx.List(
                [nnx.Linear(2 * hidden_size, hidden_size, rngs=rngs) for _ in range(num_parts)]
            )
            if bidirectional_encoder
            else None
        )
        self.output = nnx.Linear(hidden_size, target_vocab_size, rngs=rngs)

    def _bridge(self, encoder_carries: list) -> list:
        if self.bridge is None:
            return encoder_carries
        structure = jax.tree.structure(self.decoder.zero_carry(1))
        forward = jax.tree.leaves([pair[0] for pair in encoder_carries])
        backward = jax.tree.leaves([pair[1] for pair in encoder_carries])
        parts = [
            jnp.tanh(linear(jnp.concatenate([f, b], axis=-1)))
            for linear, f, b in zip(self.bridge, forward, backward, strict=True)
        ]
        return jax.tree.unflatten(structure, parts)

    def _init_state(
        self, source: jax.Array, source_lengths: jax.Array, rng: jax.Array | None
    ) -> dict:
        memory, encoder_carries = self.encoder(source, source_lengths, rng=rng)
        batch, source_time = source.shape
        state = {"carries": self._bridge(encoder_carries)}
        if self.use_attention:
            # Prepared keys and padding zeroing once per source, not at every target step.
            mask = length_mask(source_lengths, source_time)
            state["memory"] = self.attention.memory(memory, mask)
            state["attention"] = jnp.zeros((batch, source_time))
        if self.input_feeding:
            state["feed"] = jnp.zeros((batch, self.hidden_size))
        # The zeros in the dtypes the step returns: under jax_enable_x64 they were float64
        # beside the step's float32 (the params' dtype), and lax.scan refused the carry.
        after, _ = jax.eval_shape(lambda: self._step(state, jnp.zeros((batch,), jnp.int32), None))
        return jax.tree.map(lambda x, a: x.astype(a.dtype), state, after)

    def init_decode_state(self, source: jax.Array, source_lengths: jax.Array) -> dict:
        """Encode source [batch, source_time] once; every leaf has the batch as axis 0."""
        return self._init_state(source, source_lengths, None)

    def _step(
        self, state: dict, tokens: jax.Array, rng: jax.Array | None
    ) -> tuple[dict, jax.Array]:
        input_rng, output_rng = (None, None) if rng is None else jax.random.split(rng)
        x = dropout(input_rng, self.dropout_rate, self.target_embed(tokens))
        if self.input_feeding:
            x = jnp.concatenate([x, state["feed"]], axis=-1)
        # The layers' rng is folded in, not split off, so a one-layer decoder's input and
        # output masks are what they were before inter-layer dropout was applied here.
        layers_rng = None if rng is None else jax.random.fold_in(rng, 2)
        carries, s = self.decoder.step(state["carries"], x, rng=layers_rng)
        state = {**state, "carries": carries}
        if self.use_attention:
            context, weights = self.attention.attend(s, state["memory"])
            s = jnp.tanh(self.combine(jnp.concatenate([context, s], axis=-1)))
            state["attention"] = weights
            if self.input_feeding:
                state["feed"] = s
        return state, self.output(dropout(output_rng, self.dropout_rate, s))

    def step(self, state: dict, tokens: jax.Array) -> tuple[dict, jax.Array]:
        """Feed target tokens [batch] -> (state, next-token logits [batch, target_vocab]).
        The last attention weights are in state['attention'] [batch, source_time]."""
        check_ids("tokens", tokens, self.target_vocab_size, "target_vocab_size")
        check_step_tokens(tokens, state)
        return self._step(state, tokens, None)

    def __call__(
        self,
        source: jax.Array,
        source_lengths: jax.Array,
        target_inputs: jax.Array,
        *,
        teacher_forcing_prob: float | jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """source [batch, source_time], target_inputs [batch, time] (BOS first) ->
        (logits [batch, time, target_vocab], attention [batch, time, source_time] or None).

        teacher_forcing_prob: None = teacher forcing; p in [0, 1] = scheduled sampling (the
        input at t >= 1 is gold with probability p, else the argmax of step t-1's logits);
        0.0 = free running. Probabilities other than 0/1 need `rng`.
        """
        check_sequences("source", source)
        check_sequences("target_inputs", target_inputs)
        check_ids("target_inputs", target_inputs, self.target_vocab_size, "target_vocab_size")
        check_same_batch(source, target_inputs)
        value = None if teacher_forcing_prob is None else concrete_probability(teacher_forcing_prob)
        if teacher_forcing_prob is not None and rng is None and value not in (0.0, 1.0):
            raise ValueError(
                "rng is required for scheduled sampling with teacher_forcing_prob="
                f"{teacher_forcing_prob!r} (only the constants 0.0 and 1.0 need none)"
            )
        encoder_rng, decoder_rng = (None, None) if rng is None else jax.random.split(rng)
        state = self._init_state(source, source_lengths, encoder_rng)
        batch, time = target_inputs.shape
        keys = jax.random.split(decoder_rng if rng is not None else jax.random.key(0), time)

        def body(carry: tuple, inputs: tuple) -> tuple:
            # `predicted [batch]`: the argmax of the previous step's logits (unused at t = 0).
            state, predicted = carry
            gold, t, key = inputs
            choose_rng, step_rng = (None, None) if rng is None else jax.random.split(key)
            token = gold
            if teacher_forcing_prob is not None:
                sampled = choose_decoder_inputs(gold, predicted, teacher_forcing_prob, choose_rng)
                token = jnp.where(t == 0, gold, sampled)
            state, logits = self._step(state, token, step_rng)
            if teacher_forcing_prob is not None:
                predicted = jnp.argmax(logits, axis=-1).astype(gold.dtype)
            return (state, predicted), (logits, state.get("attention"))

        _, (logits, weights) = lax.scan(
            body,
            (state, jnp.zeros_like(target_inputs[:, 0])),
            (target_inputs.T, jnp.arange(time), keys),
        )
        weights = None if weights is None else weights.transpose(1, 0, 2)
        return logits.transpose(1, 0, 2), weights

    def loss(
        self,
        source: jax.Array,
        source_lengths: jax.Array,
        target_inputs: jax.Array,
        targets: jax.Array,
        target_lengths: jax.Array,
        *,
        teacher_forcing_prob: float | jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Token NLL of targets [batch, time] summed per sentence (padding excluded): [batch].
        Decoder inputs and targets past `target_lengths` are padding and may hold any id."""
        if jnp.shape(target_inputs) != jnp.shape(targets):
            raise ValueError(
                f"target_inputs {list(jnp.shape(target_inputs))} and targets "
                f"{list(jnp.shape(targets))} must have the same [batch, time] shape"
            )
        # As the encoder does for source_lengths: one past the time was read as the time and
        # 0 dropped the sentence from the loss, both silently.
        check_length_range(
            target_lengths,
            targets.shape[1],
            name="target_lengths",
            time_name="targets.shape[1]",
            batch=targets.shape[0],
        )
        mask = length_mask(target_lengths, targets.shape[1])
        check_ids("targets", targets, self.target_vocab_size, "target_vocab_size", mask)
        # The decoder is causal: inputs past the length only feed masked positions, but an
        # out-of-range id there embeds as NaN and 0 * NaN reaches the gradients.
        logits, _ = self(
            source,
            source_lengths,
            jnp.where(mask, target_inputs, 0),
            teacher_forcing_prob=teacher_forcing_prob,
            rng=rng,
        )
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, targets, 0))
        return jnp.sum(jnp.where(mask, nll, 0.0), axis=1)
