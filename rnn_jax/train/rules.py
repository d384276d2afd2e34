"""Config rules: each checks one value and returns None when it is allowed, else a
description of what is allowed (`validate` reports it as `key=value: must be <description>`).

An experiment's `RULES` maps its config keys to these (`{"model.dropout": probability, ...}`);
the runtime's own keys are checked with them too (rnn_jax.train.config_checks). Numbers follow
`rnn_jax.predicates` (an int is not a bool; NumPy scalars pass); the float32 and step-count
bounds are what the device holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rnn_jax.predicates import is_finite_number, is_int

# The largest finite float32 (a learning rate above it is inf in the float32 update), the
# smallest positive one (a subnormal: an eps below it is 0 there) and the largest below 1.
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.401298464324817e-45
_FLOAT32_BELOW_ONE = 1 - 2**-24

# The training loop's step counter is int32 on the device (so are optax's update counts): a
# longer run would wrap it, and a huge value failed only after the run directory was written.
_STEP_MAX = 2**31 - 1

# A rule checks one value and returns a description of what is allowed when it is not.
Rule = Callable[[Any], str | None]
Rules = Mapping[str, Rule]

# ----------------------------------------------------------------------------------------------
# Rules: each returns None when the value is allowed, else a description of what is.


def positive(value: Any) -> str | None:
    return None if is_finite_number(value) and value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if is_finite_number(value) and value >= 0 else "a number >= 0"


def positive_or_none(value: Any) -> str | None:
    ok = value is None or (is_finite_number(value) and value > 0)
    return None if ok else "None or a number > 0"


def number_or_none(value: Any) -> str | None:
    """None or any finite number (a bias or offset: negative and 0 are allowed, NaN/inf not)."""
    return None if value is None or is_finite_number(value) else "None or a finite number"


def probability(value: Any) -> str | None:
    """A dropout-style rate: in [0, 1)."""
    return None if is_finite_number(value) and 0 <= value < 1 else "a number in [0, 1)"


def open_fraction(value: Any) -> str | None:
    """A factor strictly between 0 and 1 (reduce-on-plateau's `factor`)."""
    return None if is_finite_number(value) and 0 < value < 1 else "a number in (0, 1)"


def positive_fraction(value: Any) -> str | None:
    """In (0, 1] (reduce-on-plateau's relative tolerance, a step decay's rate)."""
    return None if is_finite_number(value) and 0 < value <= 1 else "a number in (0, 1]"


def positive_float32(value: Any) -> str | None:
    """> 0 and finite in float32: 1e300 passes `positive` but is inf on the device, and 1e-46 is
    0 there (a learning rate that trains nothing; an Adam eps giving 0/0 = NaN updates)."""
    ok = is_finite_number(value) and _FLOAT32_TINY <= value <= _FLOAT32_MAX
    allowed = f"[{_FLOAT32_TINY:.4g}, {_FLOAT32_MAX:.4g}]"
    return None if ok else f"a number in {allowed} (> 0 and finite in float32)"


def positive_float32_or_none(value: Any) -> str | None:
    """None, or `positive_float32`: a clipping threshold of 1e-50 is 0 on the device, where
    clipping by it zeroes every update (the run trains nothing, silently)."""
    allowed = None if value is None else positive_float32(value)
    return None if allowed is None else f"None or {allowed}"


def moment_decay(value: Any) -> str | None:
    """An optimiser's moment decay (Adam's b1, b2; momentum): in [0, 1) and below 1 in float32.
    0.99999999 is 1.0 there: Adam's bias correction `1 - b2**t` is 0 and its updates NaN."""
    ok = is_finite_number(value) and 0 <= value <= _FLOAT32_BELOW_ONE
    return None if ok else "a number in [0, 1 - 2**-24] (below 1 in float32)"


def boolean(value: Any) -> str | None:
    """A switch: True or False (a `--config.k=None` on the command line is neither)."""
    return None if isinstance(value, bool) else "True or False"


def metric_name(value: Any) -> str | None:
    """A metric's name; which names a task's evaluation gives is checked before training."""
    ok = isinstance(value, str) and value
    return None if ok else "the name of an evaluation metric, e.g. 'valid_loss'"


def one_of(*allowed: Any) -> Rule:
    return lambda value: None if value in allowed else f"one of {', '.join(map(repr, allowed))}"


def in_range(low: float, high: float) -> Rule:
    return lambda value: (
        None if is_finite_number(value) and low <= value <= high else f"a number in [{low}, {high}]"
    )


def multiple_of(k: int) -> Rule:
    return lambda value: (
        None if is_int(value) and value > 0 and value % k == 0 else f"a multiple of {k}"
    )


def int_at_least(low: int) -> Rule:
    """An int (not a bool) >= `low`: counts and lengths, where 2.5 steps is a typo."""
    return lambda value: None if is_int(value) and value >= low else f"an integer >= {low}"


def step_count(value: Any) -> str | None:
    """`train.num_steps`: an int in [1, 2**31 - 1], what the device's int32 step counter holds."""
    ok = is_int(value) and 1 <= value <= _STEP_MAX
    return None if ok else f"an integer in [1, {_STEP_MAX}] (the step counter is int32)"
