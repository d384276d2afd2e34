"""Real datasets read once per test session, shared by the test_data_* files."""

import functools

from rnn_jax.data.registry import load_dataset


@functools.cache
def cached_dataset(name: str, data_root: str):
    """`load_dataset(name, data_root)`, read once per process (tests must not mutate it)."""
    return load_dataset(name, data_root)
