"""Transformer baselines (Vaswani et al. 2017) in the pre-LayerNorm form (Xiong et al. 2020).

  TransformerLM        causal decoder-only LM; learned or sinusoidal positions; a KV cache for
                       token-by-token generation (`init_cache`, `step`).
  TransformerEncoder   bidirectional encoder over padded tokens, for taggers and classifiers.
  TransformerSeq2Seq   encoder-decoder baseline for translation, with the same `step` API as
                       the RNN seq2seq model (`init_decode_state`, `step`).

A pre-LN block is  x + Attn(LN(x))  then  x + MLP(LN(x)), with a final LayerNorm on the stack
(pre-LN trains without learning-rate warm-up tricks at these small sizes). Dropout (on the
embeddings, attention output and MLP output) uses an explicit `rng` (None = evaluation).

The KV cache holds keys/values `[batch, heads, max_length, head_size]` per layer and a
`position [batch]`; a step writes the new key/value at `position` and attends to positions
<= `position`, so `step` reproduces the causal forward pass token by token. A step at a
position past the cache's length returns NaN logits (make the cache as long as the decode).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.attention import scaled_dot_product_attention
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
from rnn_jax.scan_checks import check_length_range

__all__ = [
    "TransformerEncoder",
    "TransformerLM",
    "TransformerSeq2Seq",
    "sinusoidal_positions",
]

POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(max_length: int, d_model: int) -> np.ndarray:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...). -> [max_length, d_model]."""
    positions = np.arange(max_length)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_length, d_model), np.float32)
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates[: d_model // 2])
    return table


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


def _split_rng(rng: jax.Array | None, num: int) -> list[jax.Array | None]:
    return [None] * num if rng is None else list(jax.random.split(rng, num))


class Embedder(nnx.Module):
    """Token embedding + learned or sinusoidal position encoding: [batch, time] -> [b, t, d].

    With sinusoidal positions the token embedding is multiplied by sqrt(d_model), as in
    Vaswani et al. (2017, section 3.4): `nnx.Embed` draws entries with std 1/sqrt(d_model),
    while the sine/cosine entries have RMS 1/sqrt(2), so unscaled the positions outweighed the
    tokens by sqrt(d_model / 2) (5.7x at d_model = 64). Learned positions start at std 0.02
    and need no scale. A tied output head reads the unscaled table.
    """

    def __init__(
        self, vocab_size: int, d_model: int, max_length: int, positions: str, *, rngs: nnx.Rngs
    ):
        if vocab_size < 1 or d_model < 1 or max_length < 1:
            raise ValueError(
                f"vocab_size, d_model and max_length must be >= 1, got {vocab_size}, {d_model}, "
                f"{max_length}"
            )
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.token = nnx.Embed(vocab_size, d_model, rngs=rngs)
        if positions == "learned":
            init = nnx.initializers.normal(0.02)
            self.position = nnx.Param(init(rngs.params(), (max_length, d_model)))
            self.token_scale = 1.0
        else:
            self.position = nnx.Variable(jnp.asarray(sinusoidal_positions(max_length, d_model)))
            self.token_scale = float(np.sqrt(d_model))

    def __call__(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        return self.token(tokens) * self.token_scale + self.position[...][positions]


class MultiHeadAttention(nnx.Module):
    """Multi-head attention with fused key/value projection; keys may come from a memory."""

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key_value = nnx.Linear(d_model, 2 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def _heads(self, x: jax.Array) -> jax.Array:
        """[batch, time, d] -> [batch, heads, time, d / heads]."""
        batch, time, d_model = x.shape
        return x.reshape(batch, time, self.num_heads, d_model // self.num_heads).transpose(
            0, 2, 1, 3
        )

    def keys_values(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values of `memory [batch, time, d]`, each [batch, heads, time, head_size]."""
        keys, values = jnp.split(self.key_value(memory), 2, axis=-1)
        return self._heads(keys), self._heads(values)

    def attend(
        self, x: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array | None
    ) -> jax.Array:
        """Queries from x [batch, time, d] against precomputed keys/values -> [batch, time, d]."""
        outputs, _ = scaled_dot_product_attention(self._heads(self.query(x)), keys, values, mask)
        batch, heads, time, head_size = outputs.shape
        return self.out(outputs.transpose(0, 2, 1, 3).reshape(batch, time, heads * head_size))


class Block(nnx.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, GELU MLP."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        mlp_size: int,
        dropout_rate: float,
        cross_attention: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.dropout_rate = dropout_rate
        self.self_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.self_attention = MultiHeadAttention(d_model, num_heads, rngs=rngs)
        if cross_attention:
            self.cross_norm = nnx.LayerNorm(d_model, rngs=rngs)
            self.cross_attention = MultiHeadAttention(d_model, num_heads, rngs=rngs)
        else:
            self.cross_norm = self.cross_attention = None
        self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, mlp_size, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_size, d_model, rngs=rngs)

    def _mlp_and_cross(
        self,
        x: jax.Array,
        memory_kv: tuple[jax.Array, jax.Array] | None,
        memory_mask: jax.Array | None,
        rngs: list,
    ) -> jax.Array:
        if self.cross_attention is not None:
            attended = self.cross_attention.attend(self.cross_norm(x), *memory_kv, memory_mask)
            x = x + dropout(rngs[1], self.dropout_rate, attended)
        hidden = jax.nn.gelu(self.mlp_in(self.mlp_norm(x)))
        return x + dropout(rngs[2], self.dropout_rate, self.mlp_out(hidden))

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        memory_kv: tuple[jax.Array, jax.Array] | None = None,
        memory_mask: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """x [batch, time, d]; mask broadcastable to [batch, heads, time, time]."""
        rngs = _split_rng(rng, 3)
        normed = self.self_norm(x)
        attended = self.self_attention.attend(
            normed, *self.self_attention.keys_values(normed), mask
        )
        x = x + dropout(rngs[0], self.dropout_rate, attended)
        return self._mlp_and_cross(x, memory_kv, memory_mask, rngs)

    def step(
        self,
        x: jax.Array,
        cache: dict,
        position: jax.Array,
        memory_kv: tuple[jax.Array, jax.Array] | None = None,
        memory_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, dict]:
        """One causal step: x [batch, 1, d] at `position [batch]`; returns (y, updated cache)."""
        normed = self.self_norm(x)
        key, value = self.self_attention.keys_values(normed)  # [batch, heads, 1, head_size]
        slots = jnp.arange(cache["key"].shape[2])
        write = (slots[None, :] == position[:, None])[:, None, :, None]
        cache = {
            "key": jnp.where(write, key, cache["key"]),
            "value": jnp.where(write, value, cache["value"]),
        }
        visible = (slots[None, :] <= position[:, None])[:, None, None, :]
        x = x + self.self_attention.attend(normed, cache["key"], cache["value"], visible)
        y = self._mlp_and_cross(x, memory_kv, memory_mask, [None] * 3)
        # Past the cache's last slot the key/value has nowhere to go: poison the output with
        # NaN (position is traced, so it cannot raise) rather than return logits that silently
        # ignore this token.
        fits = (position < slots.size)[:, None, None]
        return jnp.where(fits, y, jnp.nan), cache


class Stack(nnx.Module):
    """`num_layers` blocks plus the final LayerNorm of the pre-LN form."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        mlp_size: int,
        dropout_rate: float,
        cross_attention: bool,
        *,
        rngs: nnx.Rngs,
    ):
        check_positive(num_layers=num_layers)
        self.blocks = nnx.List(
            [
                Block(d_model, num_heads, mlp_size, dropout_rate, cross_attention, rngs=rngs)
                for _ in range(num_layers)
            ]
        )
        self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        memory: jax.Array | None = None,
        memory_mask: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        for block, block_rng in zip(self.blocks, _split_rng(rng, len(self.blocks)), strict=True):
            memory_kv = None if memory is None else block.cross_attention.keys_values(memory)
            x = block(x, mask, memory_kv, memory_mask, block_rng)
        return self.final_norm(x)

    def init_cache(self, batch_size: int, max_length: int) -> list[dict]:
        """Per block: zero keys and values [batch, heads, max_length, head_size]."""
        if max_length < 1:
            raise ValueError(f"a KV cache needs max_length >= 1, got {max_length}")
        heads = self.blocks[0].self_attention.num_heads
        head_size = self.final_norm.num_features // heads
        shape = (batch_size, heads, max_length, head_size)
        return [{"key": jnp.zeros(shape), "value": jnp.zeros(shape)} for _ in self.blocks]

    def step(
        self,
        x: jax.Array,
        caches: list[dict],
        position: jax.Array,
        memory_kvs: list | None = None,
        memory_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, list[dict]]:
        new_caches = []
        for index, block in enumerate(self.blocks):
            memory_kv = None if memory_kvs is None else memory_kvs[index]
            x, cache = block.step(x, caches[index], position, memory_kv, memory_mask)
            new_caches.append(cache)
        return self.final_norm(x), new_caches


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
