"""The pieces of the transformer baselines (`rnn_jax.models.transformer`): token and position
embeddings, multi-head attention, the pre-LayerNorm block (Xiong et al. 2020) and a stack of them.

A pre-LN block is  x + Attn(LN(x))  then  x + MLP(LN(x)) (optionally with cross-attention over
an encoder's memory between the two), with a final LayerNorm on the stack. Dropout (on the
attention output and MLP output) uses an explicit `rng` (None = evaluation).

The KV cache of a block holds keys/values `[batch, heads, max_length, head_size]`; a step writes
the new key/value at `position [batch]` and attends to positions <= `position`, so stepping
reproduces the causal forward pass token by token. A step at a position past the cache's length
returns NaN (make the cache as long as the decode).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.attention import scaled_dot_product_attention
from rnn_jax.layers import dropout
from rnn_jax.models.checks import check_positive

__all__ = ["Block", "Embedder", "MultiHeadAttention", "Stack", "sinusoidal_positions"]

POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(max_length: int, d_model: int) -> np.ndarray:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...). -> [max_length, d_model]."""
    positions = np.arange(max_length)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_length, d_model), np.float32)
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates[: d_model // 2])
    return table


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
