"""Regularisers of recurrent language models that act on activations or weights.

Plain dropout (`rnn_jax.layers.dropout`) and variational recurrent-dropout masks
(`rnn_jax.layers.recurrent_dropout_masks`, Gal & Ghahramani 2016) live in the core; this file
adds the AWD-LSTM family (Merity, Keskar & Socher 2017):

- `locked_dropout` (re-exported from `rnn_jax.layers`, where the stack uses it between layers
  with `apply_stack(locked=True)`): one mask per sequence shared over time on non-recurrent
  connections (Gal & Ghahramani's variational dropout; AWD's `LockedDropout`, `dropouth`);
- `embedding_dropout`: drop whole word types from the embedding matrix (Gal & Ghahramani
  2016, section 4.2), so every occurrence of a dropped word is zero in the batch;
- `weight_drop`: DropConnect (Wan et al. 2013) on the hidden-to-hidden matrices, one mask per
  forward pass shared by every sequence and time step;
- `activation_regularization` (AR) and `temporal_activation_regularization` (TAR).

Every function takes an explicit `rng`; `rng=None` or a zero rate is the identity.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.layers import (
    _check_dropout_rate,
    _check_layers,
    broadcast_dropout,
    dropout,
    locked_dropout,
)

__all__ = [
    "activation_regularization",
    "embedding_dropout",
    "locked_dropout",
    "temporal_activation_regularization",
    "weight_drop",
]


def embedding_dropout(rng: jax.Array | None, rate: float, embedding: jax.Array) -> jax.Array:
    """The embedding matrix `[vocab, features]` with whole rows (word types) dropped with
    probability `rate` and the rest scaled by 1/(1-rate). Raises ValueError unless the table is
    2-D and 0 <= rate < 1, also at evaluation (`rng=None`), as `dropout` does."""
    if embedding.ndim != 2:
        # A [vocab] vector broadcast against the [vocab, 1] mask to [vocab, vocab].
        raise ValueError(
            f"embedding_dropout needs embedding [vocab, features]; got shape {embedding.shape}"
        )
    _check_dropout_rate(rate)
    return broadcast_dropout(rng, rate, embedding, (embedding.shape[0], 1))


def weight_drop(rng: jax.Array | None, rate: float, stack_params: list[Any]) -> list[Any]:
    """A stack's params (`rnn_jax.layers` layout: one dict per layer, `{"fw", "bw"}` pairs for
    bidirectional layers) with DropConnect on every `W_hh [hidden, G]`. Raises ValueError for
    one cell's params dict or an empty list, and unless 0 <= rate < 1, also at evaluation."""
    _check_layers(stack_params, "weight_drop")
    _check_dropout_rate(rate)
    if rng is None or rate == 0.0:
        return stack_params
    cells = [
        cell
        for layer in stack_params
        for cell in ((layer["fw"], layer["bw"]) if "fw" in layer else (layer,))
    ]
    keys = iter(jax.random.split(rng, len(cells)))

    def drop(cell: dict) -> dict:
        return {**cell, "W_hh": dropout(next(keys), rate, cell["W_hh"])}

    return [
        {"fw": drop(layer["fw"]), "bw": drop(layer["bw"])} if "fw" in layer else drop(layer)
        for layer in stack_params
    ]


def activation_regularization(outputs: jax.Array, alpha: float) -> jax.Array:
    """AR: `alpha * mean(h_t^2)` over `outputs [batch, time, hidden]` (Merity et al. apply it
    to the dropped-out output of the last layer)."""
    return alpha * jnp.mean(jnp.square(outputs))


def temporal_activation_regularization(outputs: jax.Array, beta: float) -> jax.Array:
    """TAR: `beta * mean((h_t - h_{t-1})^2)` over `outputs [batch, time, hidden]` (the last
    layer's output before dropout). 0 for a single time step (`data.bptt_length=1`): there is
    no pair of steps to compare, and the mean of none is NaN."""
    if outputs.shape[1] < 2:
        return jnp.zeros((), outputs.dtype)
    return beta * jnp.mean(jnp.square(outputs[:, 1:] - outputs[:, :-1]))
