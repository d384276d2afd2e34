"""Helpers for the models' learning tests: a real-data slice, fixed-shape batches, and a short
jitted Adam loop (one compile per model: every batch has the same padded shape).

The runtime's `train_and_evaluate` adds checkpoints, logging and evaluation passes that these
few-second tests do not need; the loop here is only `value_and_grad` + `optax.adam`.
"""

import itertools

import jax
import numpy as np
import optax
from flax import nnx

from rnn_jax.data.batching import pad_batch
from rnn_jax.data.vocab import Vocabulary


def take(examples, count, max_length, field="tokens"):
    """The first `count` examples with 1 <= len(field) <= max_length."""
    fitting = (e for e in examples if 1 <= len(e[field]) <= max_length)
    return list(itertools.islice(fitting, count))


def vocab(sequences, **specials):
    return Vocabulary.build(sequences, **specials)


def fixed_batches(examples, batch_size, time, length_fields=("inputs",), seed=0):
    """Shuffled batches of `batch_size`, every sequence field padded to exactly `time`."""
    order = np.random.default_rng(seed).permutation(len(examples))
    usable = len(order) - len(order) % batch_size
    return [
        pad_batch([examples[i] for i in order[start : start + batch_size]], 0, length_fields, time)
        for start in range(0, usable, batch_size)
    ]


def all_in_one_batch(examples, time, length_fields=("inputs",)):
    return pad_batch(examples, 0, length_fields, time)


def train(model, loss_fn, batches, *, steps, learning_rate, seed=0, clip=5.0, warmup_steps=0):
    """Adam on `mean(loss_fn(model, batch, rng))` over `batches` (cycled); updates `model` in
    place and returns the per-step losses. With `warmup_steps`, the learning rate rises
    linearly from 0 over those steps, then decays to 0 along a cosine (what transformers need
    to train from scratch at a high rate); otherwise it is constant."""
    graphdef, params, others = nnx.split(model, nnx.Param, ...)
    if warmup_steps:
        learning_rate = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, steps)
    optimizer = optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        def objective(p):
            return loss_fn(nnx.merge(graphdef, p, others), batch, key)

        loss, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    key = jax.random.key(seed)
    for index in range(steps):
        batch = batches[index % len(batches)]
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, index))
        losses.append(float(loss))
    nnx.update(model, params)
    return np.array(losses)
