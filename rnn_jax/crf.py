"""Linear-chain conditional random field (Lafferty et al. 2001) as pure functions.

Shapes (batch-major, right-padded):
  emissions          [batch, time, num_tags]  float, unary scores from the encoder
  tags               [batch, time]            int, gold tag ids (ignored at/past `lengths`)
  lengths            [batch]                  int, 1 <= length <= time
  transitions        [num_tags, num_tags]     transitions[i, j] = score of tag i followed by j
  start_transitions  [num_tags]               score of a path starting in each tag
  end_transitions    [num_tags]               score of a path ending in each tag

The score of a tag path y of length L is

  s(y) = start[y_0] + sum_{t<L} emissions[t, y_t] + sum_{1<=t<L} transitions[y_{t-1}, y_t]
         + end[y_{L-1}],

and p(y | x) = exp(s(y)) / Z with log Z = `log_partition`. Both the forward algorithm and
Viterbi run in log space over time with `lax.scan`; a padded step leaves the forward variables
unchanged (masking by `t < length`), so one scan serves a batch of mixed lengths.

Dtypes: every function computes in the promoted dtype of its float inputs, but at least
float32 (`_compute_dtype`), and returns scores in it. A bfloat16 log Z or path score (sums of
~T terms of size ~10) is only good to ~1 nat, so an all-bfloat16 NLL could come out negative;
mixed inputs (e.g. bfloat16 start/end with float32 transitions) would otherwise change the
scan carry's dtype after the first step, which `lax.scan` refuses.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["crf_nll", "log_partition", "sequence_score", "viterbi_decode"]


def _is_concrete(x: jax.Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check(
    emissions: jax.Array,
    lengths: jax.Array,
    transitions: jax.Array,
    start_transitions: jax.Array,
    end_transitions: jax.Array,
) -> None:
    """Shape checks (static) and value checks on `lengths` when it is concrete."""
    if emissions.ndim != 3:
        raise ValueError(
            f"emissions must be [batch, time, num_tags], got shape {tuple(emissions.shape)}"
        )
    batch, time, num_tags = emissions.shape
    if time < 1:
        raise ValueError(f"emissions must have time >= 1, got shape {tuple(emissions.shape)}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        # A float length 2.5 passed the range check below, and `t < 2.5` made log Z and
        # Viterbi run over 3 steps (sequence_score refused it in a gather).
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    if tuple(transitions.shape) != (num_tags, num_tags):
        raise ValueError(
            f"transitions must have shape ({num_tags}, {num_tags}) to match num_tags of "
            f"emissions, got {tuple(transitions.shape)}"
        )
    for name, value in (
        ("start_transitions", start_transitions),
        ("end_transitions", end_transitions),
    ):
        if tuple(value.shape) != (num_tags,):
            raise ValueError(f"{name} must have shape ({num_tags},), got {tuple(value.shape)}")
    if _is_concrete(lengths):
        lengths_np = np.asarray(lengths)
        if lengths_np.size and (lengths_np.min() < 1 or lengths_np.max() > time):
            raise ValueError(
                f"lengths must lie in [1, time={time}], got min {lengths_np.min()} "
                f"and max {lengths_np.max()}"
            )


def _compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """The dtype the CRF sums in: the inputs' promoted float dtype, at least float32."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _promote(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """`arrays` cast to `_compute_dtype` (the gradient returns in each input's own dtype)."""
    dtype = _compute_dtype(*arrays)
    return tuple(jnp.asarray(a).astype(dtype) for a in arrays)


def _time_mask(lengths: jax.Array, time: int) -> jax.Array:
    """[time, batch] bool: True where step t is inside sequence b."""
    return jnp.arange(time)[:, None] < lengths[None, :]


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """`logsumexp` over `axis` whose gradient stays finite where every entry is -inf.

    A tag no path can reach (hard constraints as -inf scores, e.g. start = -inf and no finite
    transition into it) makes a whole column -inf; `jax.nn.logsumexp` returns -inf there, as
    this does, but its gradient is 0/0 = NaN, which then spreads to every parameter. Here such
    a column's result is a constant -inf with zero gradient, so the reachable paths' gradients
    are those of the CRF without the unreachable tag.
    """
    top = jnp.max(x, axis=axis, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jnp.sum(jnp.exp(x - lax.stop_gradient(top)), axis=axis)
    alive = total > 0
    safe = jnp.where(alive, total, 1.0)
    top = jnp.squeeze(top, axis)
    return jnp.where(alive, jnp.log(safe) + lax.stop_gradient(top), -jnp.inf)


def log_partition(
    emissions: jax.Array,
    lengths: jax.Array,
    transitions: jax.Array,
    start_transitions: jax.Array,
    end_transitions: jax.Array,
) -> jax.Array:
    """log Z = logsumexp over all tag paths of their scores (forward algorithm). -> [batch].

    alpha_0 = start + e_0;  alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + T[i, j]) + e_t[j];
    log Z = logsumexp_j(alpha_{L-1}[j] + end[j]).
    """
    _check(emissions, lengths, transitions, start_transitions, end_transitions)
    emissions, transitions, start_transitions, end_transitions = _promote(
        emissions, transitions, start_transitions, end_transitions
    )
    time = emissions.shape[1]
    emissions_tm = jnp.swapaxes(emissions, 0, 1)  # [time, batch, num_tags]
    mask = _time_mask(lengths, time)

    def step(alpha: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        emission, valid = inputs
        scores = alpha[:, :, None] + transitions[None, :, :]  # [batch, from, to]
        new_alpha = _logsumexp(scores, axis=1) + emission
        return jnp.where(valid[:, None], new_alpha, alpha), None

    alpha0 = start_transitions[None, :] + emissions_tm[0]
    alpha, _ = lax.scan(step, alpha0, (emissions_tm[1:], mask[1:]))
    return _logsumexp(alpha + end_transitions[None, :], axis=-1)


def _check_tags(tags: jax.Array, emissions: jax.Array, lengths: jax.Array) -> None:
    batch, time, num_tags = emissions.shape
    if tuple(tags.shape) != (batch, time):
        raise ValueError(f"tags must have shape ({batch}, {time}), got {tuple(tags.shape)}")
    if not jnp.issubdtype(tags.dtype, jnp.integer):
        raise ValueError(f"tags must be integer tag ids, got dtype {tags.dtype}")
    if _is_concrete(tags) and _is_concrete(lengths):
        tags_np = np.asarray(tags)
        valid = np.arange(time)[None, :] < np.asarray(lengths)[:, None]
        inside = tags_np[valid]
        if inside.size and (inside.min() < 0 or inside.max() >= num_tags):
            raise ValueError(
                f"tags must lie in [0, num_tags={num_tags}) inside each sequence, got min "
                f"{inside.min()} and max {inside.max()}"
            )


def sequence_score(
    emissions: jax.Array,
    tags: jax.Array,
    lengths: jax.Array,
    transitions: jax.Array,
    start_transitions: jax.Array,
    end_transitions: jax.Array,
) -> jax.Array:
    """Unnormalised score s(y) of the given tag paths (see the module docstring). -> [batch]."""
    _check(emissions, lengths, transitions, start_transitions, end_transitions)
    _check_tags(tags, emissions, lengths)
    emissions, transitions, start_transitions, end_transitions = _promote(
        emissions, transitions, start_transitions, end_transitions
    )
    time = emissions.shape[1]
    # Padded tags may hold any value (e.g. -100); clip so gathers stay in range, then mask.
    tags = jnp.clip(tags, 0, emissions.shape[2] - 1)
    # `where`, not a 0/1 product: a padded step's score may be -inf (a forbidden transition
    # into the clipped padding tag), and -inf * 0 is NaN.
    mask = jnp.arange(time)[None, :] < lengths[:, None]
    unary = jnp.take_along_axis(emissions, tags[:, :, None], axis=2)[:, :, 0]
    pairwise = transitions[tags[:, :-1], tags[:, 1:]]  # [batch, time - 1]
    last_tag = jnp.take_along_axis(tags, (lengths - 1)[:, None], axis=1)[:, 0]
    return (
        start_transitions[tags[:, 0]]
        + jnp.sum(jnp.where(mask, unary, 0.0), axis=1)
        + jnp.sum(jnp.where(mask[:, 1:], pairwise, 0.0), axis=1)
        + end_transitions[last_tag]
    )


def viterbi_decode(
    emissions: jax.Array,
    lengths: jax.Array,
    transitions: jax.Array,
    start_transitions: jax.Array,
    end_transitions: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Highest-scoring tag path per sequence (Viterbi 1967), in log space.

    Returns `(tags [batch, time] int32, scores [batch])`; tags are 0 at/past `lengths`.
    Padded steps store identity back-pointers, so backtracking from the last step carries the
    best final tag unchanged back to step `length - 1`.
    """
    _check(emissions, lengths, transitions, start_transitions, end_transitions)
    emissions, transitions, start_transitions, end_transitions = _promote(
        emissions, transitions, start_transitions, end_transitions
    )
    batch, time, num_tags = emissions.shape
    emissions_tm = jnp.swapaxes(emissions, 0, 1)
    mask = _time_mask(lengths, time)
    identity = jnp.broadcast_to(jnp.arange(num_tags), (batch, num_tags))

    def forward(delta: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple:
        emission, valid = inputs
        scores = delta[:, :, None] + transitions[None, :, :]  # [batch, from, to]
        best_prev = jnp.argmax(scores, axis=1)
        new_delta = jnp.max(scores, axis=1) + emission
        delta = jnp.where(valid[:, None], new_delta, delta)
        return delta, jnp.where(valid[:, None], best_prev, identity)

    delta0 = start_transitions[None, :] + emissions_tm[0]
    delta, backpointers = lax.scan(forward, delta0, (emissions_tm[1:], mask[1:]))
    final = delta + end_transitions[None, :]
    best_last = jnp.argmax(final, axis=-1)
    best_score = jnp.max(final, axis=-1)

    def backward(tag: jax.Array, pointers: jax.Array) -> tuple[jax.Array, jax.Array]:
        previous = jnp.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
        return previous, tag

    first, later = lax.scan(backward, best_last, backpointers, reverse=True)
    path = jnp.concatenate([first[None, :], later], axis=0).T  # [batch, time]
    path = jnp.where(mask.T, path, 0).astype(jnp.int32)
    return path, best_score


def crf_nll(
    emissions: jax.Array,
    tags: jax.Array,
    lengths: jax.Array,
    transitions: jax.Array,
    start_transitions: jax.Array,
    end_transitions: jax.Array,
) -> jax.Array:
    """Negative log-likelihood -log p(tags | emissions) = log Z - s(tags). -> [batch], >= 0."""
    args = (transitions, start_transitions, end_transitions)
    return log_partition(emissions, lengths, *args) - sequence_score(
        emissions, tags, lengths, *args
    )
