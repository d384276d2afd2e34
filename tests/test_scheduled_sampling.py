"""rnn_jax.scheduled_sampling: the schedules refuse parameters that make epsilon NaN, and the
decoder-input choice refuses a probability outside [0, 1]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import scheduled_sampling


@pytest.mark.parametrize(
    "name, options",
    [
        ("linear", dict(k=float("nan"), c=0.1)),
        ("linear", dict(k=1.0, c=float("inf"))),
        ("inverse_sigmoid", dict(k=float("nan"))),
        ("inverse_sigmoid", dict(k=float("inf"))),
        ("exponential", dict(k=0.99, minimum=0.5)),
        ("inverse_sigmoid", dict(k=10.0, c=0.1)),
        ("constant", dict(k=1.0, minimum=0.2)),
        ("constant", dict(k=1.5)),
        ("linear", dict(k=1.0, c=0.1, minimum=2.0)),
    ],
)
def test_schedules_refuse_parameters_that_make_epsilon_nan_or_go_unused(name, options):
    """These schedules returned NaN (c=inf: NaN at step 0 only, from inf * 0); under jit a NaN
    probability cannot be checked and `u < NaN` never holds, so training ran free-running.
    `c` and `minimum` are linear's only: the others ignored them (no floor, no word)."""
    with pytest.raises(ValueError, match=name):
        scheduled_sampling.teacher_forcing_schedule(name, **options)


def test_choose_decoder_inputs_refuses_a_probability_outside_0_1():
    """1.5 acted as 1.0 (u < 1.5 always holds); without an rng it asked for one instead of
    naming the bad probability."""
    gold, predicted = np.zeros(4, np.int32), np.ones(4, np.int32)
    for bad, rng in ((1.5, jax.random.key(0)), (-0.1, jax.random.key(0)), (1.5, None)):
        with pytest.raises(ValueError, match=rf"teacher_forcing_prob={bad}; allowed: \[0, 1\]"):
            scheduled_sampling.choose_decoder_inputs(gold, predicted, bad, rng)
    # A concrete 0-d array is checked as a number (np.float32(1.5) also acted as 1.0); a
    # traced probability cannot be, and is used as it is.
    for bad in (np.float32(1.5), jnp.asarray(float("nan"))):
        with pytest.raises(ValueError, match="allowed: \\[0, 1\\]"):
            scheduled_sampling.choose_decoder_inputs(gold, predicted, bad, jax.random.key(0))
    assert scheduled_sampling.concrete_probability(jnp.float32(1.0)) == 1.0
    traced = jax.jit(
        lambda p: scheduled_sampling.choose_decoder_inputs(gold, predicted, p, jax.random.key(0))
    )
    np.testing.assert_array_equal(traced(jnp.float32(1.0)), gold)
    # jnp.where broadcast mismatched shapes: [4] and [4, 1] gave [4, 4] at p=0.5
    with pytest.raises(ValueError, match=r"gold \(4,\) and predicted \(4, 1\)"):
        scheduled_sampling.choose_decoder_inputs(gold, predicted[:, None], 0.5, jax.random.key(0))


def test_constant_schedule_and_the_rng_free_extremes():
    """'constant' is epsilon = k (the probability of the gold token); with no rng a
    probability of exactly 1.0 gives the gold tokens and 0.0 the model's predictions."""
    schedule = scheduled_sampling.teacher_forcing_schedule("constant", k=0.25)
    assert float(schedule(0)) == float(schedule(10_000)) == 0.25
    gold, predicted = np.zeros(3, np.int32), np.ones(3, np.int32)
    assert scheduled_sampling.choose_decoder_inputs(gold, predicted, 1.0, None) is gold
    assert scheduled_sampling.choose_decoder_inputs(gold, predicted, 0.0, None) is predicted
