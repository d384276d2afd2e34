"""Decoding from any autoregressive model through one generic single-step function.

A model exposes `step_fn(state, tokens [batch] int) -> (state, logits [batch, vocab])`, where
`state` is a pytree whose leaves all have the batch as their leading axis (an RNN's carries, a
transformer's KV cache, plus the encoder memory for seq2seq). The decoders below feed
`bos_id` first, run a fixed `max_length` steps inside `lax.scan` (so they jit with static
shapes), and write `pad_id` after a sequence's `eos_id`.

  greedy_decode   argmax at every step
  sample_decode   ancestral sampling from softmax(logits / temperature), optionally restricted
                  to the top-k tokens (Fan et al. 2018)
  beam_search     beam search with the GNMT length penalty lp(n) = ((5 + n) / 6)^alpha
                  (Wu et al. 2016); alpha = 0 ranks by total log-probability

Sequence scores are sums of log-probabilities under the model (untempered) distribution.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnn_jax.predicates import is_finite_number, is_int

__all__ = ["beam_search", "greedy_decode", "length_penalty", "sample_decode"]

StepFn = Callable[[Any, jax.Array], tuple[Any, jax.Array]]


def _check_common(max_length: int, bos_id: int, eos_id: int, pad_id: int) -> int:
    """-> max_length as a Python int (static shapes and `lax` sizes want one)."""
    if not is_int(max_length) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    # Token ids must be ints: eos_id=1.5 never equals a token, so decoding ran to max_length
    # without a word; pad_id=0.5 failed inside lax.scan with a carry dtype message.
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int token id, got {value!r}")
    if not is_int(pad_id):
        raise ValueError(f"pad_id must be an int token id, got {pad_id!r}")
    return int(max_length)


def _check_vocab(logits: jax.Array, **ids: int) -> None:
    """Called while tracing: the step function's vocabulary must contain bos_id and eos_id."""
    for name, value in ids.items():
        if value >= logits.shape[-1]:
            raise ValueError(
                f"{name}={value} is outside the step function's vocabulary of size "
                f"{logits.shape[-1]} (logits shape {tuple(logits.shape)}); vocabulary sizes "
                "disagree"
            )


def _batch_size(state: Any) -> int:
    """The leading axis every leaf of `state` shares. A leaf without it (a table the batch
    shares) was read as the batch when it came first: greedy decoding then ran one row per
    table row without a word, and beam search failed inside `lax.scan`."""
    leaves = jax.tree.leaves_with_path(state)
    if not leaves:
        raise ValueError("state must contain at least one array with a leading batch axis")
    shapes = {jax.tree_util.keystr(path): jnp.shape(leaf) for path, leaf in leaves}
    leading = {shape[:1] for shape in shapes.values()}
    if len(leading) > 1 or leading == {()}:
        listed = ", ".join(f"state{path} {list(shape)}" for path, shape in shapes.items())
        listed = listed if len(listed) <= 400 else listed[:400] + " ..."
        raise ValueError(
            "every leaf of the decode state must have the batch as axis 0 (close over arrays "
            f"the batch shares in step_fn instead); the leaves' shapes: {listed}"
        )
    return leading.pop()[0]


def _decode_loop(
    step_fn: StepFn,
    initial_state: Any,
    choose: Callable[[jax.Array, jax.Array], jax.Array],
    rng: jax.Array,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One token per step chosen by `choose(logits, key) -> tokens [batch]`."""
    batch = _batch_size(initial_state)

    def body(carry: tuple, key: jax.Array) -> tuple:
        state, previous, done, score = carry
        state, logits = step_fn(state, previous)
        _check_vocab(logits, bos_id=bos_id, eos_id=eos_id)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token = choose(logits, key)
        token_log_prob = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
        score = score + jnp.where(done, 0.0, token_log_prob)
        token = jnp.where(done, pad_id, token)
        return (state, token, done | (token == eos_id), score), token

    carry = (
        initial_state,
        jnp.full((batch,), bos_id, jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.zeros((batch,), jnp.float32),
    )
    (_, _, _, scores), tokens = lax.scan(body, carry, jax.random.split(rng, max_length))
    tokens = tokens.T.astype(jnp.int32)  # [batch, max_length]
    return tokens, _lengths(tokens, eos_id), scores


def _lengths(tokens: jax.Array, eos_id: int) -> jax.Array:
    """Tokens up to and including the first EOS (max_length if there is none). -> int32
    [batch], as beam search's lengths (under jax_enable_x64 argmax alone gives int64)."""
    is_eos = tokens == eos_id
    lengths = jnp.where(jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1) + 1, tokens.shape[-1])
    return lengths.astype(jnp.int32)


def greedy_decode(
    step_fn: StepFn,
    initial_state: Any,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Argmax decoding. -> (tokens [batch, max_length], lengths [batch], log-probs [batch])."""
    max_length = _check_common(max_length, bos_id, eos_id, pad_id)
    return _decode_loop(
        step_fn,
        initial_state,
        lambda logits, key: jnp.argmax(logits, axis=-1).astype(jnp.int32),
        jax.random.key(0),
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        max_length=max_length,
    )


def sample_decode(
    step_fn: StepFn,
    initial_state: Any,
    rng: jax.Array,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample from softmax(logits / temperature), restricted to the `top_k` most likely tokens.

    Exactly `top_k` tokens stay in: ties at the k-th value are broken toward the lower token
    id (`lax.top_k`'s order), so `top_k=1` is greedy decoding.

    -> (tokens [batch, max_length], lengths [batch], log-probs under the model [batch]).
    """
    max_length = _check_common(max_length, bos_id, eos_id, pad_id)
    if not (is_finite_number(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")

    def choose(logits: jax.Array, key: jax.Array) -> jax.Array:
        logits = logits.astype(jnp.float32)
        # Shifted so the largest is 0 before dividing: logits / 1e-40 overflowed to +inf for
        # every token (then token 0 was drawn, not the argmax); this way an overflow goes to
        # -inf, the greedy limit. The `where` keeps 0 / 0 (a temperature flushed to 0) out.
        shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
        tempered = jnp.where(shifted == 0, 0.0, shifted / temperature)
        if top_k is not None and top_k < logits.shape[-1]:
            # Exactly top_k tokens: a `logits >= k-th largest` test would keep every token tied
            # with the k-th, so top_k=1 would not be greedy on exact ties. Chosen on the
            # untempered logits: at temperature 1e38 the tempered ones all round to 0, and the
            # lowest ids were kept.
            _, kept = lax.top_k(logits, top_k)  # [batch, top_k]
            rows = jnp.arange(logits.shape[0])[:, None]
            allowed = jnp.zeros(logits.shape, bool).at[rows, kept].set(True)
            tempered = jnp.where(allowed, tempered, -jnp.inf)
        return jax.random.categorical(key, tempered, axis=-1).astype(jnp.int32)

    return _decode_loop(
        step_fn,
        initial_state,
        choose,
        rng,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        max_length=max_length,
    )


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6)^alpha (Wu et al. 2016); 1 when alpha = 0."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    step_fn: StepFn,
    initial_state: Any,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_length: int,
    alpha: float = 0.0,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search; returns the `beam_size` best hypotheses per example, best first.

    At each step the `beam_size` best extensions (by total log-probability) of the live
    hypotheses are kept; an extension that ends in EOS leaves the beam as a finished hypothesis
    (its slot stays empty), as in Sutskever et al. (2014). Hypotheses still alive after
    `max_length` steps are finished there. Finished hypotheses are ranked by
    log p(y) / length_penalty(|y|, alpha). With beam_size 1 this is greedy decoding, except
    where two logits are within float32 rounding of the running log-probability (beam search
    ranks prefix + log-prob sums, so such a near-tie rounds to a tie and the lower id wins,
    where greedy's argmax of the logits may pick the other: both have the same score); with a
    beam as large as the number of prefixes it is exhaustive search.

    -> (tokens [batch, beam_size, max_length], lengths [batch, beam_size],
        normalised scores [batch, beam_size]).
    """
    max_length = _check_common(max_length, bos_id, eos_id, pad_id)
    if not is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not is_finite_number(alpha):
        # alpha=nan made every score NaN and the ranking arbitrary, without an error.
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    batch = _batch_size(initial_state)
    k = int(beam_size)
    neg_inf = jnp.array(-jnp.inf, jnp.float32)

    # Beams are folded into the batch axis for the step function: [batch * beam, ...].
    state = jax.tree.map(lambda leaf: jnp.repeat(leaf, k, axis=0), initial_state)
    alive_tokens = jnp.full((batch, k, max_length), pad_id, jnp.int32)
    # Only beam 0 is live at the start, so the first expansion has no duplicates.
    alive_log_prob = jnp.where(jnp.arange(k) == 0, 0.0, neg_inf)[None, :].repeat(batch, 0)
    finished_tokens = jnp.full((batch, k, max_length), pad_id, jnp.int32)
    finished_scores = jnp.full((batch, k), neg_inf)
    finished_lengths = jnp.zeros((batch, k), jnp.int32)

    def keep_best(tokens: jax.Array, scores: jax.Array, lengths: jax.Array) -> tuple:
        """Top-k along axis 1 of the pooled hypotheses."""
        scores, index = lax.top_k(scores, k)
        take = lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), 1)
        return take(tokens), scores, take(lengths)

    def body(carry: tuple, t: jax.Array) -> tuple:
        state, alive_tokens, alive_log_prob, finished = carry
        previous = jnp.where(t == 0, bos_id, alive_tokens[:, :, jnp.maximum(t - 1, 0)])
        state, logits = step_fn(state, previous.reshape(batch * k))
        _check_vocab(logits, bos_id=bos_id, eos_id=eos_id)
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        candidates = alive_log_prob[:, :, None] + log_probs.reshape(batch, k, vocab)
        top_log_prob, flat_index = lax.top_k(candidates.reshape(batch, k * vocab), k)
        source_beam, token = flat_index // vocab, (flat_index % vocab).astype(jnp.int32)

        tokens = jnp.take_along_axis(alive_tokens, source_beam[:, :, None], axis=1)
        tokens = lax.dynamic_update_index_in_dim(
            tokens.transpose(2, 0, 1), token, t, axis=0
        ).transpose(1, 2, 0)
        gather = (jnp.arange(batch)[:, None] * k + source_beam).reshape(-1)
        state = jax.tree.map(lambda leaf: leaf[gather], state)

        is_eos = (token == eos_id) & jnp.isfinite(top_log_prob)
        new_scores = jnp.where(is_eos, top_log_prob / length_penalty(t + 1.0, alpha), neg_inf)
        new_lengths = jnp.full((batch, k), t + 1, jnp.int32)
        pooled = (
            jnp.concatenate([finished[0], tokens], axis=1),
            jnp.concatenate([finished[1], new_scores], axis=1),
            jnp.concatenate([finished[2], new_lengths], axis=1),
        )
        finished = keep_best(*pooled)
        alive_log_prob = jnp.where(is_eos, neg_inf, top_log_prob)
        return (state, tokens, alive_log_prob, finished), None

    carry = (
        state,
        alive_tokens,
        alive_log_prob,
        (finished_tokens, finished_scores, finished_lengths),
    )
    (_, alive_tokens, alive_log_prob, finished), _ = lax.scan(body, carry, jnp.arange(max_length))
    truncated_scores = alive_log_prob / length_penalty(float(max_length), alpha)
    tokens, scores, lengths = keep_best(
        jnp.concatenate([finished[0], alive_tokens], axis=1),
        jnp.concatenate([finished[1], truncated_scores], axis=1),
        jnp.concatenate([finished[2], jnp.full((batch, k), max_length, jnp.int32)], axis=1),
    )
    return tokens, lengths, scores
