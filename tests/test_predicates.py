"""One meaning of "an integer" and "a finite number" across every argument check.

Each check used to have its own copy, and they disagreed: `True` was a size of 1 for the
models' `check_positive` but refused by `Cell.init`; NumPy integers passed `Cell.init` but not
the config rules."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, decoding, initializers
from rnn_jax.models import checks
from rnn_jax.predicates import is_decimal, is_finite_number, is_int
from rnn_jax.train.rules import int_at_least, multiple_of, positive, probability

INTS = [0, 3, -2, np.int32(4), np.int64(5), np.uint8(6)]
NOT_INTS = [True, False, np.bool_(True), 2.0, np.float32(2.0), "3", None, np.array([1, 2])]
FINITE = [0, 1.5, -2, np.float32(0.25), np.float64(-1e300), np.int64(3), np.array(1.0)]
NOT_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan"), True, np.bool_(False), "1.0"]
NOT_FINITE += [None, [1.0], np.array([1.0, 2.0])]


class _OldNumPyArray(np.ndarray):
    """An array that converts to float with one element, as every array did on NumPy < 2.4
    (setup.cfg allows 2.0): on 2.4 the plain arrays below are refused by `float` itself."""

    def __float__(self):
        return float(self.view(np.ndarray).reshape(()))


# One element is not a number either: NumPy < 2.4 converts np.array([0.5]) to float.
NOT_FINITE += [np.array([0.5]), np.array([[2.0]]), jnp.array([1.0])]
NOT_FINITE += [np.array([0.5]).view(_OldNumPyArray)]


@pytest.mark.parametrize("value", INTS)
def test_is_int_accepts_python_and_numpy_integers(value):
    assert is_int(value)


@pytest.mark.parametrize("value", NOT_INTS, ids=repr)
def test_is_int_refuses_bools_floats_and_non_numbers(value):
    assert not is_int(value)


@pytest.mark.parametrize("value", FINITE, ids=repr)
def test_is_finite_number_accepts_finite_reals(value):
    assert is_finite_number(value)


@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
def test_is_finite_number_refuses_nan_inf_bools_and_non_numbers(value):
    assert not is_finite_number(value)


def test_every_size_check_refuses_true_as_one():
    with pytest.raises(ValueError, match="num_tags=True"):
        checks.check_positive(num_tags=True)
    with pytest.raises(ValueError, match="hidden_size=True"):
        cells.LSTM().init(None, 4, True)
    with pytest.raises(ValueError, match="max_length"):
        decoding._check_common(True, 1, 2, 0)
    assert int_at_least(1)(True) is not None
    assert multiple_of(1)(True) is not None


def test_every_size_check_takes_numpy_integers():
    checks.check_positive(num_tags=np.int64(3))
    assert decoding._check_common(np.int32(7), 1, 2, 0) == 7
    assert int_at_least(1)(np.int64(2)) is None
    assert multiple_of(2)(np.int64(4)) is None


def test_number_checks_refuse_bools():
    with pytest.raises(ValueError, match="forget_bias=True"):
        cells.LSTM().init(None, 4, 8, forget_bias=True)
    with pytest.raises(ValueError, match="scale=True"):
        initializers.get_initializer("orthogonal", scale=True)
    assert positive(True) is not None
    assert probability(np.float32(0.5)) is None


# A 0-d array is a number when its dtype is one: `math.isfinite` alone reads a 0-d bool array
# as 1 and a 0-d string array by parsing it ("1.0" -> 1.0), the very values refused above.
ZERO_D_NOT_FINITE = [np.array(True), np.array(False), np.array("1.0"), np.array(b"2")]
ZERO_D_NOT_FINITE += [np.array(True, dtype=object), np.array("1.0", dtype=object)]


@pytest.mark.parametrize("value", ZERO_D_NOT_FINITE, ids=repr)
def test_is_finite_number_refuses_0d_arrays_of_bools_and_strings(value):
    assert not is_finite_number(value)


@pytest.mark.parametrize(
    "value",
    [np.array(2, np.int8), np.array(0.5, np.float16), np.array(1.5, dtype=object)],
    ids=repr,
)
def test_is_finite_number_accepts_0d_arrays_of_numbers(value):
    assert is_finite_number(value)


def test_is_finite_number_refuses_complex_and_answers_for_huge_ints():
    """np.complex128(1+5j) passed (math.isfinite drops the imaginary part, with a warning);
    an int beyond a float's range raised OverflowError instead of answering."""
    assert not is_finite_number(np.complex128(1 + 5j))
    assert not is_finite_number(np.complex64(2))
    assert not is_finite_number(np.array(1 + 0j))
    assert is_finite_number(10**400)
    assert not is_finite_number(np.array(np.nan)) and not is_finite_number(jnp.array(-np.inf))
    assert is_finite_number(np.array(3, np.int8)) and is_finite_number(jnp.bfloat16(1.5))


def test_is_decimal_takes_ascii_digits_only():
    # str.isdigit() takes '²' (then int() fails) and '٣' (int() reads 3).
    assert is_decimal("0") and is_decimal("0123")
    for text in ("", "²", "\u0663", "1\u0663", "-1", "+1", "1.0", " 1", "1_0", 1):
        assert not is_decimal(text), text
