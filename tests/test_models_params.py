"""rnn_jax.models.params: `count_params` counts only parameters (modules and pytrees of them),
`match_size` returns the brute-force closest width, and the seq2seq model's count by hand."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax.models.params import count_params, match_size
from rnn_jax.models.seq2seq import Seq2Seq


class _Stateful(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, width, rngs=rngs)  # 3 * width + width
        self.norm = nnx.BatchNorm(width, rngs=rngs)  # 2 * width params, 2 * width statistics
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.rngs = rngs
        self.cache = nnx.Cache(jnp.zeros((7,)))


def test_count_params_counts_only_params_in_modules_and_pytrees_of_them():
    """A list of models or `nnx.split`'s state counted their batch statistics, RNG keys and
    counts and caches too (45 instead of 24 here)."""
    model = _Stateful(4, nnx.Rngs(0, dropout=1))
    expected = 3 * 4 + 4 + 2 * 4
    assert count_params(model) == expected
    assert count_params(nnx.eval_shape(lambda: _Stateful(4, nnx.Rngs(0)))) == expected
    assert count_params([model, model.linear]) == expected  # shared Params count once
    assert count_params({"model": model}) == expected
    assert count_params(nnx.split(model)[1]) == expected
    assert count_params(nnx.state(model)) == expected
    assert count_params({"w": np.zeros((2, 3)), "b": np.zeros(3), "s": 1.0}) == 10


def test_match_size_returns_the_brute_force_closest_width_within_tolerance():
    def build(width):  # counts with uneven steps: width * (width // 3 + 1) + width // 3 + 1
        return nnx.Linear(width, width // 3 + 1, rngs=nnx.Rngs(0))

    counts = {w: count_params(nnx.eval_shape(lambda w=w: build(w))) for w in range(1, 25)}
    assert counts[24] == 24 * 9 + 9
    rng = np.random.default_rng(0)
    for target in rng.integers(1, 260, 6):
        for multiple in (1, 5):
            widths = [w for w in counts if w % multiple == 0]
            best = min(widths, key=lambda w: (abs(counts[w] - target), w))
            found = match_size(
                build, int(target), low=1, high=24, tolerance=0.9, multiple_of=multiple
            )
            assert found == (best, counts[best]), (target, multiple)
    # The tolerance is relative and inclusive: count 96 (width 15) is 4% from 100.
    assert match_size(build, 100, low=13, high=15, tolerance=0.04) == (15, 96)
    # The message gives the tolerance unrounded: `.0%` printed "within 4%" beside a 4% miss.
    with pytest.raises(ValueError, match="within 3.9%: closest is width 15 with 96 params"):
        match_size(build, 100, low=13, high=15, tolerance=0.039)
    # tolerance=None: the closest width however far, never an error (an end of the range
    # when every count lies on one side of the target).
    assert match_size(build, 100, low=13, high=15, tolerance=None) == (15, 96)
    assert match_size(build, 10**6, low=1, high=24, tolerance=None) == (24, counts[24])
    assert match_size(build, 1, low=1, high=24, tolerance=None) == (1, counts[1])
    # Refused up front, naming the argument: without the checks target=0 would end in "no
    # width ... gives 0 params within 5%", tolerance=0 would run, multiple_of=0 divide by 0.
    for bad, kwargs in (
        ("target must be a positive parameter count, got 0", dict(target=0)),
        (r"tolerance must be in \(0, 1\), got 0", dict(target=96, tolerance=0.0)),
        ("multiple_of=0 must be a positive int", dict(target=96, multiple_of=0)),
        # 2.5 returned a width that is no multiple of it
        ("multiple_of=2.5 must be a positive int", dict(target=96, multiple_of=2.5)),
        (r"no multiple of 16 in \[low=13, high=15\]", dict(target=96, multiple_of=16)),
    ):
        with pytest.raises(ValueError, match=bad):
            match_size(build, low=13, high=15, **kwargs)


def test_seq2seq_parameter_count_by_hand():
    """Two-layer bidirectional LSTM encoder, two-layer LSTM decoder with input feeding,
    additive attention, a bridge per layer and carry part (LSTM weights: W_ih, W_hh, b_ih,
    b_hh; E = 4, H = 6, source/target vocabularies 9/11)."""
    e, h, g = 4, 6, 24  # g = 4 gates * H

    def lstm(inputs: int) -> int:
        return inputs * g + h * g + 2 * g

    want = (
        9 * e  # source embedding
        + 2 * lstm(e)
        + 2 * lstm(2 * h)  # bidirectional encoder layers
        + 11 * e  # target embedding
        + lstm(e + h)  # decoder layer 1: embedding ++ fed h~
        + lstm(h)
        + (2 * h * h + h)
        + h * h
        + h  # attention: W_k and b, W_q, v
        + 3 * h * h  # combine W_c [c; s] (no bias)
        + 4 * (2 * h * h + h)  # bridge: 2 layers x (h, c)
        + h * 11
        + 11  # output
    )
    model = nnx.eval_shape(
        lambda: Seq2Seq(9, 11, embed_size=e, hidden_size=h, num_layers=2, rngs=nnx.Rngs(0))
    )
    assert count_params(model) == want == 3001
