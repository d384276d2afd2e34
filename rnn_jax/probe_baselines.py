"""Baselines beside a probe's accuracy: what a probe's number is to be read against.

`majority_accuracy`: always the most frequent class. `lexical_accuracy` (`lexical_predictions`):
a per-type lookup (each word's most frequent class in the fitting set), the non-linear
reference of what word identity alone gives. `control_task`: Hewitt & Liang's (2019) control
task (a random class per word type), whose probe accuracy, subtracted from the real task's, is
the probe's selectivity.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Hashable, Sequence

import numpy as np

from rnn_jax.probes import _accuracy


def lexical_predictions(
    train_types: Sequence[Hashable], train_labels: np.ndarray, test_types: Sequence[Hashable]
) -> np.ndarray:
    """Each of `test_types [m]` -> its most frequent label in (`train_types [n]`,
    `train_labels int [n]`) (ties: the smallest id); a type absent from training -> the
    overall majority label. Returns int `[m]`."""
    train_labels = np.asarray(train_labels)
    counts: dict[Hashable, collections.Counter] = collections.defaultdict(collections.Counter)
    for word_type, label in zip(train_types, train_labels.tolist(), strict=True):
        counts[word_type][label] += 1
    lookup = {t: min(c, key=lambda label: (-c[label], label)) for t, c in counts.items()}
    majority = int(np.argmax(np.bincount(train_labels)))
    return np.array([lookup.get(t, majority) for t in test_types], dtype=np.int64)


def lexical_accuracy(
    train_types: Sequence[Hashable],
    train_labels: np.ndarray,
    test_types: Sequence[Hashable],
    test_labels: np.ndarray,
) -> float:
    """Accuracy on `test_labels int [m]` of `lexical_predictions`: what the identity of the
    type alone gives, read by a lookup rather than a linear probe."""
    return _accuracy(lexical_predictions(train_types, train_labels, test_types), test_labels)


def control_task(types: Sequence[str], class_probs: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang's (2019) control task: every type gets one random class, drawn from
    `class_probs [classes]` (e.g. the real task's empirical distribution) by a hash of
    (`seed`, type); so the map is fixed per type, is defined for any string (types unseen
    when it was drawn included) and is the same in every split and process. Returns int
    `[len(types)]`.

    A probe's accuracy on the control task is what it gets by memorising types; the real
    task's accuracy minus it is the probe's selectivity.
    """
    probs = np.asarray(class_probs, np.float64)
    # NaN and inf passed `< 0` and `sum <= 0` and gave every type class 0.
    if probs.ndim != 1 or not np.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"class_probs must be finite non-negative weights [classes], got {probs}")
    cumulative = np.cumsum(probs / probs.sum())
    drawn: dict[str, int] = {}
    for word_type in set(types):
        digest = hashlib.blake2b(f"{seed}\0{word_type}".encode(), digest_size=8).digest()
        uniform = int.from_bytes(digest, "little") / 2**64  # in [0, 1)
        # side="right": a class of probability 0 (a flat step of the CDF) is never drawn.
        drawn[word_type] = min(int(np.searchsorted(cumulative, uniform, "right")), len(probs) - 1)
    return np.array([drawn[t] for t in types], dtype=np.int64)


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on `test_labels int [m]` of always predicting `train_labels`'s most frequent
    class (ties: the smallest id)."""
    majority = np.argmax(np.bincount(np.asarray(train_labels)))
    return float(np.mean(np.asarray(test_labels) == majority))
