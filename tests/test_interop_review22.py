"""Review 22: torch interop with float64 modules, and scheduled sampling's input check."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import scheduled_sampling

BATCH, TIME, INPUT, HIDDEN = 3, 5, 2, 3
LENGTHS = [5, 2, 4]


def test_a_float64_module_warns_without_x64_and_keeps_float64_with_it():
    """Without x64, JAX turned a float64 module's params into float32 without a word, though
    the docstring promised the module's dtype; with x64 on they stay float64 and match torch
    to float64 precision."""
    torch = pytest.importorskip("torch")
    from rnn_jax import interop

    torch.manual_seed(0)
    module = torch.nn.GRU(INPUT, HIDDEN).double().eval()
    with pytest.warns(UserWarning, match=r"float64 parameters \(bias_hh_l0.*jax_enable_x64"):
        _, params = interop.from_torch(module)
    assert params["weight_ih_l0"].dtype == jnp.float32
    xs = np.random.default_rng(0).standard_normal((TIME, BATCH, INPUT))
    with jax.enable_x64(True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            apply_fn, params = interop.from_torch(module)
        assert not [w for w in caught if "float64" in str(w.message)]
        ys, h_n = apply_fn(params, xs, jnp.array(LENGTHS))
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(xs), torch.tensor(LENGTHS), enforce_sorted=False
    )
    out, want_h = module(packed)
    want_ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=TIME)
    assert ys.dtype == jnp.float64 and h_n.dtype == jnp.float64
    np.testing.assert_allclose(ys, want_ys.detach().numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(h_n, want_h.detach().numpy(), rtol=0, atol=1e-13)


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
