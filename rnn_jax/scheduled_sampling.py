"""Scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer 2015).

During training the decoder input at step t is the gold token y_{t-1} with probability
epsilon_i (teacher forcing) and the model's own previous prediction otherwise; epsilon_i decays
with the training step i:

  constant         epsilon_i = c      (1.0 = teacher forcing, 0.0 = free running)
  linear           epsilon_i = max(epsilon_min, k - c i)
  exponential      epsilon_i = k^i                       (k < 1)
  inverse_sigmoid  epsilon_i = k / (k + exp(i / k))      (k >= 1)

Schedules accept a traced step, so they can live inside a jitted train step.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnn_jax.predicates import is_finite_number

__all__ = ["SCHEDULES", "choose_decoder_inputs", "teacher_forcing_schedule"]

SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")

Schedule = Callable[[jax.Array | int], jax.Array]


def teacher_forcing_schedule(
    name: str,
    *,
    k: float = 1.0,
    c: float = 0.0,
    minimum: float = 0.0,
) -> Schedule:
    """Build epsilon(step) by name; `k`, `c`, `minimum` are the paper's k, c and epsilon_min.

    For 'constant' the probability is `k` (so k=1 is teacher forcing, k=0 free running).
    `c` and `minimum` belong to 'linear' only; any other schedule refuses a nonzero one.
    """
    if name in SCHEDULES and name != "linear" and (c != 0.0 or minimum != 0.0):
        # They were ignored: exponential with minimum=0.5 decayed to 4e-5 at step 1000, with
        # no floor and no word.
        raise ValueError(
            f"{name} schedule takes only k; c and minimum are the linear schedule's, got "
            f"c={c}, minimum={minimum}"
        )
    if name == "constant":
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"constant teacher-forcing probability k must be in [0, 1], got {k}")
        return lambda step: jnp.asarray(k, jnp.float32)
    if name == "linear":
        # k=nan gave epsilon NaN at every step and c=inf gave NaN at step 0 (inf * 0); under
        # jit `u < NaN` never holds, so such a run trained free-running without a word.
        if not (is_finite_number(k) and is_finite_number(c)) or c < 0:
            raise ValueError(f"linear schedule needs a finite k and a finite c >= 0, got {k}, {c}")
        if not 0.0 <= minimum <= 1.0:
            raise ValueError(f"linear schedule needs minimum in [0, 1], got {minimum}")
        return lambda step: jnp.clip(k - c * jnp.asarray(step, jnp.float32), minimum, 1.0)
    if name == "exponential":
        if not 0.0 < k < 1.0:
            raise ValueError(f"exponential schedule needs 0 < k < 1, got k={k}")
        # exp(i log k) with log k taken in float64: k rounded to float32 (relative error up to
        # 6e-8) and raised to the i-th power drifts by i * 6e-8 (0.9988 instead of 0.999 after
        # 20,000 steps); log k's rounding error is relative to i log k instead.
        log_k = math.log(k)
        return lambda step: jnp.exp(log_k * jnp.asarray(step, jnp.float32))
    if name == "inverse_sigmoid":
        if not (is_finite_number(k) and k >= 1.0):  # k=nan or inf: epsilon NaN at every step
            raise ValueError(f"inverse_sigmoid schedule needs a finite k >= 1, got k={k}")
        return lambda step: k / (k + jnp.exp(jnp.asarray(step, jnp.float32) / k))
    raise ValueError(f"schedule name must be one of {SCHEDULES}, got {name!r}")


def concrete_probability(teacher_forcing_prob: jax.Array | float) -> float | None:
    """The probability as a Python float when it is concrete (a number, or a 0-d array that is
    not traced), None when traced (inside jit: it cannot be checked).

    Raises:
      ValueError: a concrete probability outside [0, 1] (NaN included): with u ~ U[0, 1),
        `u < 1.5` always holds and `u < -0.5` never, so it would act as 1.0 or 0.0 silently;
        one that is not 0-d (traced too).
    """
    if jnp.ndim(teacher_forcing_prob) != 0:  # static: a [batch] one was a TypeError from float()
        raise ValueError(
            f"teacher_forcing_prob has shape {jnp.shape(teacher_forcing_prob)}; expected one "
            "number (a 0-d array)"
        )
    if isinstance(teacher_forcing_prob, jax.core.Tracer):
        return None
    value = float(teacher_forcing_prob)  # a number, or a concrete 0-d NumPy/JAX array
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"teacher_forcing_prob={teacher_forcing_prob!r}; allowed: [0, 1]")
    return value


def choose_decoder_inputs(
    gold: jax.Array,
    predicted: jax.Array,
    teacher_forcing_prob: jax.Array | float,
    rng: jax.Array | None,
) -> jax.Array:
    """Per token, gold with probability `teacher_forcing_prob`, else the model's prediction.

    gold, predicted: [batch] int. A probability of exactly 1.0 always returns `gold` and 0.0
    always returns `predicted` (u ~ U[0, 1) so u < 1 always and u < 0 never holds).
    `rng=None` is allowed only for a concrete probability of 0.0 or 1.0. A concrete
    probability outside [0, 1] raises ValueError (`concrete_probability`; a traced one cannot
    be checked).
    """
    if jnp.shape(gold) != jnp.shape(predicted):
        # jnp.where broadcast them: gold [4] with predicted [4, 1] gave [4, 4] at p=0.5, yet
        # [4] at p=1.0 and [4, 1] at p=0.0 (no rng).
        raise ValueError(
            f"gold {jnp.shape(gold)} and predicted {jnp.shape(predicted)} must share a shape"
        )
    value = concrete_probability(teacher_forcing_prob)
    if rng is None:
        if value in (0.0, 1.0):
            return gold if value == 1.0 else predicted
        raise ValueError(
            "rng is required when teacher_forcing_prob is not the constant 0.0 or 1.0, got "
            f"teacher_forcing_prob={teacher_forcing_prob!r}"
        )
    use_gold = jax.random.uniform(rng, gold.shape) < teacher_forcing_prob
    return jnp.where(use_gold, gold, predicted)
