"""What the library's argument checks count as an integer and as a finite number.

One definition for every check (cell sizes, initialiser scales, forget biases, decoding
lengths, the models' sizes and the config rules), so that `True` is not a size of 1 in one
place and refused in another, and NumPy scalars read from shapes or configs pass everywhere.
`check_positive` is the one "a size must be a positive int" check of the library's arguments
(the models' sizes, the data batches' sizes, cell and stack sizes, `bptt_length`); it lives
here, beside `is_int`, so that `rnn_jax.data` uses it without importing the models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_positive", "is_decimal", "is_finite_number", "is_int"]


def is_int(value: Any) -> bool:
    """A Python or NumPy integer (e.g. `lengths.max() + 5`); not a bool, not a float like 2.0."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_positive(**sizes: Any) -> None:
    """ValueError naming the first size that is not a positive `is_int` (keyword name = the
    caller's argument name): `True` was a size of 1 and 2.0 failed later naming nothing."""
    for name, size in sizes.items():
        if not is_int(size) or size < 1:
            raise ValueError(f"{name}={size!r} must be a positive int")


def is_finite_number(value: Any) -> bool:
    """A finite real number, Python or NumPy (or a 0-d array); False for NaN, ±inf, bools and
    non-numbers such as the string "1.0"."""
    if isinstance(value, bool | np.bool_):
        return False
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        # An array of any other shape is not a number, whatever its size: NumPy before 2.4
        # (setup.cfg allows 2.0) converts a one-element array to float, so np.array([0.5])
        # passed there (an eps that stayed an unhashable array) and was refused on 2.4.
        if getattr(value, "ndim", 0) != 0:
            return False
        # A 0-d array converts to float whatever it holds: np.array(True) reads as 1.0 and
        # np.array("1.0") is parsed; its dtype says whether it holds a number.
        kind = np.dtype(dtype).kind
        if kind == "O":
            return getattr(value, "ndim", None) == 0 and is_finite_number(value.item())
        if kind in "bcSU":  # complex: math.isfinite would drop the imaginary part
            return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int (or Fraction) too large for a float is still finite
        return True
    except (TypeError, ValueError):  # ValueError: float(Decimal("sNaN"))
        return False


def is_decimal(text: str) -> bool:
    """A non-empty string of ASCII digits 0-9, the integers a flag, config list or data file
    may spell. `str.isdigit()` (and `int()`) also take other scripts' digits: '²' passed
    `isdigit` and then failed in `int`, and '٣' was read as 3."""
    return isinstance(text, str) and text.isascii() and text.isdigit()
