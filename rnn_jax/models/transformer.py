"""Transformer baselines (Vaswani et al. 2017) in the pre-LayerNorm form (Xiong et al. 2020).

  TransformerLM        causal decoder-only LM; learned or sinusoidal positions; a KV cache for
                       token-by-token generation (`init_cache`, `step`).
  TransformerEncoder   bidirectional encoder over padded tokens, for taggers and classifiers.
  TransformerSeq2Seq   encoder-decoder baseline for translation, with the same `step` API as
                       the RNN seq2seq model (`init_decode_state`, `step`).

A pre-LN block is  x + Attn(LN(x))  then  x + MLP(LN(x)), with a final LayerNorm on the stack
(pre-LN trains without learning-rate warm-up tricks at these small sizes); the embeddings, the
attention, the block and the stack are in `rnn_jax.models.transformer_blocks`. Dropout (on the
embeddings, attention output and MLP output) uses an explicit `rng` (None = evaluation).

The KV cache holds keys/values `[batch, heads, max_length, head_size]` per layer and a
`position [batch]`; a step writes the new key/value at `position` and attends to positions
<= `position`, so `step` reproduces the causal forward pass token by token. A step at a
position past the cache's length returns NaN logits (make the cache as long as the decode).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax.layers import dropout
from rnn_jax.models.checks import (
    check_ids,
    check_positive,
    check_rates,
    check_same_batch,
    check_sequences,
    check_step_tokens,
    length_mask,
)
from rnn_jax.models.transformer_blocks import POSITIONS, Embedder, Stack, _split_rng
from rnn_jax.scan_checks import check_length_range

__all__ = [
    "TransformerEncoder",
    "TransformerLM",
    "TransformerSeq2Seq",
]


def _check_sizes(
    d_model: int,
    num_heads: int,
    positions: str,
    mlp_size: int | None,
    dropout_rate: float,
    **layer_counts: int,
) -> int:
    """Constructor checks, run before any parameter is allocated; -> the MLP width.

    `mlp_size=None` is 4 * d_model; 0 is refused (`mlp_size or 4 * d_model` read it as None).
    The layer counts are named as the caller's arguments (`num_decoder_layers=0` was
    "num_layers must be >= 1", and `num_layers=True` built one layer); a dropout rate outside
    [0, 1) failed only at the first call, where the RNN models refuse it when built.
    """
    check_positive(**layer_counts)
    check_rates(dropout_rate=dropout_rate)
    if mlp_size is not None:
        check_positive(mlp_size=mlp_size)
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    check_positive(d_model=d_model, num_heads=num_heads)  # True ran as 1 head, 2.0 failed later
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} (>= 1)")
    return 4 * d_model if mlp_size is None else mlp_size


def _check_length(time: int, max_length: int) -> None:
    if time > max_length:
        raise ValueError(f"sequence length {time} exceeds the model's max_length={max_length}")


def _causal_mask(time: int) -> jax.Array:
    return jnp.tril(jnp.ones((time, time), bool))[None, None]


def _padding_mask(lengths: jax.Array, time: int) -> jax.Array:
    """[batch] -> [batch, 1, 1, time] (True = real key position)."""
    return (jnp.arange(time)[None, :] < lengths[:, None])[:, None, None, :]


class TransformerLM(nnx.Module):
    """Causal pre-LN transformer language model: tokens [batch, time] -> logits [b, t, vocab]."""

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int,
        num_heads: int,
        num_layers: int,
        max_length: int,
        mlp_size: int | None = None,
        positions: str = "learned",
        dropout_rate: float = 0.0,
        tie_embeddings: bool = False,
        rngs: nnx.Rngs,
    ):
        mlp_size = _check_sizes(
            d_model, num_heads, positions, mlp_size, dropout_rate, num_layers=num_layers
        )
        self.dropout_rate = dropout_rate
        self.embed = Embedder(vocab_size, d_model, max_length, positions, rngs=rngs)
        self.stack = Stack(num_layers, d_model, num_heads, mlp_size, dropout_rate, False, rngs=rngs)
        self.head = None if tie_embeddings else nnx.Linear(d_model, vocab_size, rngs=rngs)

    def _logits(self, h: jax.Array) -> jax.Array:
        return self.embed.token.attend(h) if self.head is None else self.head(h)

    def __call__(self, tokens: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
        check_sequences("tokens", tokens)
        batch, time = tokens.shape
        _check_length(time, self.embed.max_length)
        check_ids("tokens", tokens, self.embed.vocab_size, "vocab_size")
        embed_rng, stack_rng = _split_rng(rng, 2)
        x = self.embed(tokens, jnp.broadcast_to(jnp.arange(time), (batch, time)))
        x = dropout(embed_rng, self.dropout_rate, x)
        return self._logits(self.stack(x, _causal_mask(time), rng=stack_rng))

    def init_cache(self, batch_size: int, max_length: int | None = None) -> dict:
        """Empty KV cache for up to `max_length` (default: the model's) generated tokens."""
        max_length = self.embed.max_length if max_length is None else max_length
        _check_length(max_length, self.embed.max_length)
        return {
            "position": jnp.zeros((batch_size,), jnp.int32),
            "layers": self.stack.init_cache(batch_size, max_length),
        }

    def step(self, cache: dict, tokens: jax.Array) -> tuple[dict, jax.Array]:
        """Feed tokens [batch] at cache['position'] -> (cache, next-token logits [batch, vocab])."""
        check_ids("tokens", tokens, self.embed.vocab_size, "vocab_size")
        check_step_tokens(tokens, cache["position"])
        position = cache["position"]
        x = self.embed(tokens[:, None], position[:, None])
        h, layers = self.stack.step(x, cache["layers"], position)
        return {"position": position + 1, "layers": layers}, self._logits(h[:, 0])


class TransformerEncoder(nnx.Module):
    """Bidirectional pre-LN encoder: tokens [batch, time], lengths -> states [b, t, d_model]."""

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int,
        num_heads: int,
        num_layers: int,
        max_length: int,
        mlp_size: int | None = None,
        positions: str = "learned",
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        mlp_size = _check_sizes(
            d_model, num_heads, positions, mlp_size, dropout_rate, num_layers=num_layers
        )
        self.dropout_rate = dropout_rate
        self.output_size = d_model
        self.embed = Embedder(vocab_size, d_model, max_length, positions, rngs=rngs)
        self.stack = Stack(num_layers, d_model, num_heads, mlp_size, dropout_rate, False, rngs=rngs)

    def __call__(
        self, tokens: jax.Array, lengths: jax.Array, *, rng: jax.Array | None = None
    ) -> jax.Array:
        """tokens int [batch, time] (ids past `lengths [batch]` are padding: any id) ->
        states [batch, time, d_model]; states at padded positions are not meaningful."""
        check_sequences("tokens", tokens)
        batch, time = tokens.shape
        _check_length(time, self.embed.max_length)
        # A length of 0 left no real key to attend to and one past `time` was read as `time`,
        # both silently.
        check_length_range(lengths, time, batch=batch)
        real = length_mask(lengths, time)
        check_ids("tokens", tokens, self.embed.vocab_size, "vocab_size", real)
        embed_rng, stack_rng = _split_rng(rng, 2)
        # An out-of-range pad id would embed as NaN, and 0 attention weight * NaN is NaN.
        tokens = jnp.where(real, tokens, 0)
        x = self.embed(tokens, jnp.broadcast_to(jnp.arange(time), (batch, time)))
        x = dropout(embed_rng, self.dropout_rate, x)
        return self.stack(x, _padding_mask(lengths, time), rng=stack_rng)


class TransformerSeq2Seq(nnx.Module):
    """Encoder-decoder transformer: (source, source_lengths, target_inputs) -> logits."""

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        *,
        d_model: int,
        num_heads: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        max_length: int,
        mlp_size: int | None = None,
        positions: str = "learned",
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        mlp_size = _check_sizes(
            d_model,
            num_heads,
            positions,
            mlp_size,
            dropout_rate,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
        )
        self.dropout_rate = dropout_rate
        self.encoder = TransformerEncoder(
            source_vocab_size,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_encoder_layers,
            max_length=max_length,
            mlp_size=mlp_size,
            positions=positions,
            dropout_rate=dropout_rate,
            rngs=rngs,
        )
        self.target_embed = Embedder(target_vocab_size, d_model, max_length, positions, rngs=rngs)
        self.decoder = Stack(
            num_decoder_layers, d_model, num_heads, mlp_size, dropout_rate, True, rngs=rngs
        )
        self.head = nnx.Linear(d_model, target_vocab_size, rngs=rngs)

    def _encode(
        self, source: jax.Array, source_lengths: jax.Array, rng: jax.Array | None
    ) -> jax.Array:
        """Memory [batch, src_time, d_model]; ids past source_lengths are padding (any id)."""
        check_length_range(
            source_lengths, source.shape[1], name="source_lengths", batch=source.shape[0]
        )
        real = length_mask(source_lengths, source.shape[1])
        check_ids("source", source, self.encoder.embed.vocab_size, "source_vocab_size", real)
        return self.encoder(source, source_lengths, rng=rng)  # which zeroes the padding ids

    def __call__(
        self,
        source: jax.Array,
        source_lengths: jax.Array,
        target_inputs: jax.Array,
        *,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """source [batch, src_time], target_inputs [batch, tgt_time] (BOS first) -> logits."""
        encoder_rng, embed_rng, decoder_rng = _split_rng(rng, 3)
        check_sequences("source", source)
        check_sequences("target_inputs", target_inputs)
        check_same_batch(source, target_inputs)
        memory = self._encode(source, source_lengths, encoder_rng)
        batch, time = target_inputs.shape
        _check_length(time, self.target_embed.max_length)
        check_ids("target_inputs", target_inputs, self.target_embed.vocab_size, "target_vocab_size")
        x = self.target_embed(target_inputs, jnp.broadcast_to(jnp.arange(time), (batch, time)))
        x = dropout(embed_rng, self.dropout_rate, x)
        memory_mask = _padding_mask(source_lengths, source.shape[1])
        h = self.decoder(x, _causal_mask(time), memory, memory_mask, rng=decoder_rng)
        return self.head(h)

    def init_decode_state(
        self, source: jax.Array, source_lengths: jax.Array, max_length: int
    ) -> dict:
        """Encode once; the state holds per-layer memory keys/values and the self-attn cache."""
        _check_length(max_length, self.target_embed.max_length)
        memory = self._encode(source, source_lengths, None)
        batch = source.shape[0]
        return {
            "position": jnp.zeros((batch,), jnp.int32),
            "layers": self.decoder.init_cache(batch, max_length),
            "memory_kv": [
                block.cross_attention.keys_values(memory) for block in self.decoder.blocks
            ],
            "memory_mask": _padding_mask(source_lengths, source.shape[1]),
        }

    def step(self, state: dict, tokens: jax.Array) -> tuple[dict, jax.Array]:
        """Feed target tokens [batch]; -> (state, next-token logits [batch, target_vocab])."""
        check_ids("tokens", tokens, self.target_embed.vocab_size, "target_vocab_size")
        check_step_tokens(tokens, state["position"])
        position = state["position"]
        x = self.target_embed(tokens[:, None], position[:, None])
        h, layers = self.decoder.step(
            x, state["layers"], position, state["memory_kv"], state["memory_mask"]
        )
        state = {**state, "position": position + 1, "layers": layers}
        return state, self.head(h[:, 0])
