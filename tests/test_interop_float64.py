"""`rnn_jax.interop.from_torch` with float64 torch modules: a warning without jax_enable_x64,
float64 kept with it."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
