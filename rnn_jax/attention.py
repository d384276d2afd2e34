"""Attention for encoder-decoder RNNs, and the scaled dot-product attention of transformers.

Shapes (batch-major): a decoder query `[batch, query_size]`, encoder keys/values
`[batch, source_time, key_size]`, and `mask [batch, source_time]` bool, True at real (non-pad)
source positions. Every attention returns its weights `[batch, source_time]` (rows sum to 1,
exactly 0 at padding) beside the context vector, so they can be plotted.

Scores, for decoder state s and encoder state h:
  additive (Bahdanau, Cho & Bengio 2014):  v^T tanh(W_q s + W_k h)
  dot      (Luong, Pham & Manning 2015):   s^T h              (query_size == key_size)
  general  (Luong et al. 2015):            s^T W_a h

The key-side half of each score and the zeroing of padded positions do not depend on the decoder
step, so a decoder calls `memory` once per source sentence and `attend` at every step;
`__call__` is the two in one (`prepared_keys=` reuses a `prepare_keys` result).
"""

import jax
import jax.numpy as jnp
from flax import nnx, struct

from rnn_jax.predicates import is_int

__all__ = [
    "AdditiveAttention",
    "AttentionMemory",
    "MultiplicativeAttention",
    "make_attention",
    "masked_softmax",
    "scaled_dot_product_attention",
]

ATTENTION_TYPES = ("additive", "dot", "general")


def masked_softmax(scores: jax.Array, mask: jax.Array | None, axis: int = -1) -> jax.Array:
    """Softmax over `axis` that puts exactly zero weight where `mask` is False.

    A fully masked row gives all-zero weights rather than NaN. `mask` must be boolean: an
    additive float mask (0 = attend, -inf = blocked) read as `where(mask, ...)` would attend
    only to the blocked positions (-inf is truthy), so any other dtype is refused.
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=axis)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(
            f"mask must be boolean (True = may attend), got dtype {mask.dtype}; an additive "
            "0/-inf mask would be read inverted"
        )
    # finfo.min (not -inf) keeps a fully masked row finite; exp(min - max) underflows to 0.
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jnp.where(mask, jax.nn.softmax(scores, axis=axis), 0.0)


def _context(weights: jax.Array, values: jax.Array) -> jax.Array:
    """[batch, source_time] x [batch, source_time, value_size] -> [batch, value_size]."""
    return jnp.einsum("bs,bsv->bv", weights, values)


@struct.dataclass
class AttentionMemory:
    """What a decoder attends over, built once per source by `_Attention.memory`.

    keys: prepared keys (the key-side half of the score) [batch, source_time, ...];
    values [batch, source_time, value_size]; mask [batch, source_time] bool or None.
    Padded positions of the values are zero, and so were the keys' before `prepare_keys`
    (additive attention's prepared keys hold its key bias there). A pytree, so it rides in
    a decoder state through `lax.scan` and beam search's per-leaf reordering.
    """

    keys: jax.Array
    values: jax.Array
    mask: jax.Array | None = None


class _Attention(nnx.Module):
    """Shared step: scores against prepared keys -> masked softmax -> weighted sum of values."""

    def prepare_keys(self, keys: jax.Array) -> jax.Array:
        raise NotImplementedError

    def scores(self, query: jax.Array, prepared_keys: jax.Array) -> jax.Array:
        raise NotImplementedError

    def memory(
        self,
        keys: jax.Array,
        mask: jax.Array | None = None,
        *,
        values: jax.Array | None = None,
        prepared_keys: jax.Array | None = None,
    ) -> AttentionMemory:
        """Once per source: the prepared keys and the values (= keys if None), padding zeroed.

        Padded positions may hold anything, inf and NaN included: they are zeroed here, because
        a zero weight alone does not hide them (0 * inf and 0 * NaN are NaN, in the context and
        in the gradients). `prepared_keys` computed by the caller are zeroed too, but gradients
        into whatever computed them are the caller's business.
        """
        values = keys if values is None else values
        scored, scored_name = (
            (keys, "keys") if prepared_keys is None else (prepared_keys, "prepared_keys")
        )
        # Static shapes, checked before the mask is broadcast against them: values [1, S]
        # (no feature axis) with a mask became [1, S, S] in `jnp.where`, and the context
        # [1, S] without an error; without a mask einsum refused them naming no argument.
        for name, array in ((scored_name, scored), ("values", values)):
            if jnp.ndim(array) != 3:
                raise ValueError(
                    f"{name} must be [batch, source_time, features], got shape "
                    f"{list(jnp.shape(array))}"
                )
        if jnp.shape(values)[:2] != jnp.shape(scored)[:2]:
            raise ValueError(
                f"values {list(jnp.shape(values))} and {scored_name} {list(jnp.shape(scored))} "
                "must share [batch, source_time]"
            )
        if mask is not None:
            mask = jnp.asarray(mask)
            batch, source_time = jnp.shape(scored)[:2]
            if mask.shape != (batch, source_time):
                raise ValueError(
                    f"mask must be [batch, source_time] = {[batch, source_time]} like the keys, "
                    f"got shape {list(mask.shape)}"
                )
            real = mask[:, :, None]
            values = jnp.where(real, values, 0)
            if prepared_keys is None:
                keys = jnp.where(real, keys, 0)
            else:
                prepared_keys = jnp.where(real, prepared_keys, 0)
        if prepared_keys is None:
            prepared_keys = self.prepare_keys(keys)
        return AttentionMemory(keys=prepared_keys, values=values, mask=mask)

    def attend(self, query: jax.Array, memory: AttentionMemory) -> tuple[jax.Array, jax.Array]:
        """One decoder step: query [batch, query_size] ->
        (context [batch, value_size], weights [batch, source_time])."""
        if jnp.ndim(query) != 2 or jnp.shape(query)[0] != memory.keys.shape[0]:
            # a query batch of 1 against keys of 3 (or 3 against 1) was broadcast silently
            raise ValueError(
                f"query has shape {jnp.shape(query)}; expected [batch, query_size] with the "
                f"keys' batch {memory.keys.shape[0]}"
            )
        weights = masked_softmax(self.scores(query, memory.keys), memory.mask)
        return _context(weights, memory.values), weights

    def __call__(
        self,
        query: jax.Array,
        keys: jax.Array,
        mask: jax.Array | None = None,
        *,
        values: jax.Array | None = None,
        prepared_keys: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """-> (context [batch, value_size], weights [batch, source_time]); values = keys if None.

        `memory` then `attend`: padded positions may hold anything (see `memory`).
        """
        memory = self.memory(keys, mask, values=values, prepared_keys=prepared_keys)
        return self.attend(query, memory)


class AdditiveAttention(_Attention):
    """Bahdanau et al. (2014) attention: score = v^T tanh(W_q s + W_k h)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int, *, rngs: nnx.Rngs):
        self.query_projection = nnx.Linear(query_size, attention_size, use_bias=False, rngs=rngs)
        self.key_projection = nnx.Linear(key_size, attention_size, use_bias=True, rngs=rngs)
        self.v = nnx.Linear(attention_size, 1, use_bias=False, rngs=rngs)

    def prepare_keys(self, keys: jax.Array) -> jax.Array:
        """W_k h for all source positions: [batch, source_time, attention_size]."""
        return self.key_projection(keys)

    def scores(self, query: jax.Array, prepared_keys: jax.Array) -> jax.Array:
        """[batch, query_size], [batch, source_time, attention_size] -> [batch, source_time]."""
        hidden = jnp.tanh(self.query_projection(query)[:, None, :] + prepared_keys)
        return self.v(hidden)[..., 0]


class MultiplicativeAttention(_Attention):
    """Luong et al. (2015) `dot` (s^T h) or `general` (s^T W_a h) attention."""

    def __init__(self, query_size: int, key_size: int, score: str, *, rngs: nnx.Rngs):
        if score not in ("dot", "general"):
            raise ValueError(f"score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                f"dot attention needs query_size == key_size, got query_size={query_size} and "
                f"key_size={key_size}; use score='general' or 'additive'"
            )
        self.score = score
        # W_a maps keys into query space, so s^T (W_a h) is one batched dot per step.
        self.key_projection = (
            nnx.Linear(key_size, query_size, use_bias=False, rngs=rngs)
            if score == "general"
            else None
        )

    def prepare_keys(self, keys: jax.Array) -> jax.Array:
        """W_a h (general) or h (dot): [batch, source_time, query_size]."""
        return keys if self.key_projection is None else self.key_projection(keys)

    def scores(self, query: jax.Array, prepared_keys: jax.Array) -> jax.Array:
        return jnp.einsum("bq,bsq->bs", query, prepared_keys)


def make_attention(
    attention_type: str,
    query_size: int,
    key_size: int,
    *,
    attention_size: int | None = None,
    rngs: nnx.Rngs,
) -> AdditiveAttention | MultiplicativeAttention:
    """Build an attention by name: 'additive', 'dot' or 'general'. `attention_size` (additive
    only; None: `query_size`) is the width of v and the two projections."""
    if attention_type == "additive":
        # `attention_size or query_size` read an illegal 0 as "the default" without a word.
        size = query_size if attention_size is None else attention_size
        if not is_int(size) or size < 1:  # a ZeroDivisionError (0) or a shape error (< 0)
            raise ValueError(f"attention_size={attention_size!r} must be a positive int")
        return AdditiveAttention(query_size, key_size, size, rngs=rngs)
    if attention_type in ("dot", "general"):
        return MultiplicativeAttention(query_size, key_size, attention_type, rngs=rngs)
    raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")


def scaled_dot_product_attention(
    queries: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Vaswani et al. (2017) attention, softmax(q k^T / sqrt(d)) v, per head.

    queries [batch, heads, query_time, head_size], keys/values [batch, heads, key_time, head_size],
    mask broadcastable to [batch, heads, query_time, key_time] (True = may attend).
    Returns (outputs [batch, heads, query_time, head_size], weights [..., query_time, key_time]).
    """
    scale = 1.0 / jnp.sqrt(jnp.asarray(queries.shape[-1], queries.dtype))
    scores = jnp.einsum("bhqd,bhkd->bhqk", queries, keys) * scale
    weights = masked_softmax(scores, mask)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, values), weights
