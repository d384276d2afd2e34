"""Reading a stack's inter-layer dropout mask by spying on its per-layer scans."""

import numpy as np

from rnn_jax import layers


def layer_one_input_mask(monkeypatch, run) -> np.ndarray:
    """The multiplier between layer 0's output and layer 1's input `[batch, time, features]`
    in `run()` of a 2-layer unidirectional stack (`rnn_jax.layers.apply_stack` underneath)."""
    calls = []
    real = layers.unroll

    def spy(cell, params, xs, *args, **kwargs):
        ys, carry = real(cell, params, xs, *args, **kwargs)
        calls.append((np.asarray(xs), np.asarray(ys)))
        return ys, carry

    monkeypatch.setattr(layers, "unroll", spy)
    run()
    (_, y0), (x1, _) = calls
    assert np.all(y0 != 0)
    return x1 / y0
