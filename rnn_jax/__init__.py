"""rnn_jax: recurrent networks for NLP in JAX/Flax.

The core is pure functions over plain pytrees: cells (`rnn_jax.cells`), scans over time
(`rnn_jax.scan`, `rnn_jax.bidirectional_scan`, `rnn_jax.truncated_scan`), bidirectional and
stacked layers (`rnn_jax.layers`). Flax NNX modules (`rnn_jax.modules`), models
(`rnn_jax.models`), data (`rnn_jax.data`) and the training runtime (`rnn_jax.train`) are
built on top and never re-implement the maths.
"""

__version__ = "0.1.0"
