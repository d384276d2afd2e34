"""Linear probes: what a frozen model's states encode, read out by a linear classifier.

A probe (Alain & Bengio 2017; Adi et al. 2017; Belinkov et al. 2017) is a classifier trained on
frozen representations to predict a property; its held-out accuracy, beside a majority
baseline and the same probe on an untrained model's states (Hewitt & Liang 2019), says how
linearly decodable the property is.

Here the probe is linear discriminant analysis with shrinkage (Fisher 1936; Friedman 1989's
regularised discriminant analysis): each class a Gaussian with its own mean and one shared,
shrunk covariance, so the decision rule is linear,

    z = (x - mean) / std                                   standardised with the fitting set
    S = (1/n) sum_i (z_i - mu_{y_i})(z_i - mu_{y_i})^T + shrinkage * I
    score_c(z) = z^T S^{-1} mu_c - mu_c^T S^{-1} mu_c / 2 + log pi_c,   predict argmax_c,

with `mu_c` the class means and `pi_c` the class frequencies of the fitting set (a class it
never saw scores -inf). Closed form and deterministic: the total second moment is computed
once per feature set and each target only adds its class means, so a probe costs one
`[features, features]` eigendecomposition per target, and every shrinkage of a grid is a
rescaling of the eigenvalues. `fit_lda_probes` chooses the shrinkage per target on held-out
rows of the fitting set and refits on all of it.

Also `layer_states`: every layer's output of an `RNNLanguageModel` (the embeddings as layer
0), the states a probe reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax import layers
from rnn_jax.models.lm import RNNLanguageModel


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted linear classifier: `predict(x) = argmax(((x - mean) / scale) @ weights + bias)`.

    mean, scale: `[features]` standardisation; weights `[features, classes]`; bias `[classes]`
    (-inf for classes the fitting set lacked); shrinkage: the covariance shrinkage it was
    fitted with.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    shrinkage: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """`features [n, features]` -> float64 `[n, classes]`."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """`features [n, features]` -> int `[n]` class ids."""
        return np.argmax(self.scores(features), axis=1)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of `labels int [n]` predicted."""
        return float(np.mean(self.predict(features) == np.asarray(labels)))


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}"
        )
    return labels


class _Moments:
    """The standardised features of one fitting set and their second moment, shared by every
    target and shrinkage fitted on it."""

    def __init__(self, features: np.ndarray) -> None:
        x = np.asarray(features, np.float64)
        self.n = x.shape[0]
        self.mean = x.mean(axis=0)
        # A constant feature (a dead unit) gets scale 1: it is zero after centring either way.
        std = x.std(axis=0)
        self.scale = np.where(std > 0, std, 1.0)
        self.z = (x - self.mean) / self.scale
        self.second = self.z.T @ self.z / self.n

    def path(self, labels: np.ndarray, num_classes: int) -> _LDAPath:
        labels = _check_labels(labels, num_classes)
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        sums = np.zeros((num_classes, self.z.shape[1]))
        for c in np.flatnonzero(counts):  # a class at a time: np.add.at is ~10x slower
            sums[c] = self.z[labels == c].sum(axis=0)
        present = counts > 0
        means = np.where(present[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
        # Within-class scatter = total second moment - sum_c pi_c mu_c mu_c^T.
        priors = counts / self.n
        within = self.second - (means * priors[:, None]).T @ means
        return _LDAPath(self, means, priors, present, within)


class _LDAPath:
    """LDA probes of one target at any shrinkage, from one eigendecomposition."""

    def __init__(
        self,
        moments: _Moments,
        means: np.ndarray,
        priors: np.ndarray,
        present: np.ndarray,
        within: np.ndarray,
    ) -> None:
        """means `[classes, features]`, priors and present `[classes]`, within: the
        within-class covariance `[features, features]`."""
        self.moments, self.means, self.present = moments, means, present
        self.log_priors = np.where(present, np.log(np.where(present, priors, 1.0)), -np.inf)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(within)

    def probe(self, shrinkage: float) -> LinearProbe:
        v = self.eigenvectors
        rotated = v.T @ self.means.T  # [features, classes]
        weights = v @ (rotated / (np.maximum(self.eigenvalues, 0.0) + shrinkage)[:, None])
        bias = -0.5 * np.sum(self.means.T * weights, axis=0) + self.log_priors
        m = self.moments
        return LinearProbe(m.mean, m.scale, weights, bias, float(shrinkage))


def fit_lda_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float
) -> LinearProbe:
    """The LDA probe of `labels int [n]` on `features [n, features]` at `shrinkage` (> 0)."""
    if shrinkage <= 0:
        raise ValueError(f"shrinkage={shrinkage!r}; allowed: > 0")
    return _Moments(features).path(labels, num_classes).probe(shrinkage)


def fit_lda_probes(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: Sequence[int],
    shrinkages: Sequence[float],
    holdout: np.ndarray,
) -> list[LinearProbe]:
    """One probe per target column, each at the shrinkage of `shrinkages` with the best
    accuracy on the `holdout` rows when fitted on the others (ties: the larger shrinkage),
    refitted on all rows.

    Args:
      features: `[n, features]`.
      labels: int `[n, targets]`; column j has classes `[0, num_classes[j])`.
      num_classes: per target.
      shrinkages: the grid (each > 0).
      holdout: bool `[n]`, the rows that choose the shrinkage (some true, some false).
    """
    labels = np.asarray(labels)
    holdout = np.asarray(holdout, bool)
    if labels.ndim != 2 or labels.shape[1] != len(num_classes):
        raise ValueError(
            f"labels {labels.shape}: expected [n, {len(num_classes)}] (one column per target)"
        )
    if not 0 < holdout.sum() < len(holdout):
        raise ValueError("holdout must mark some rows, not all")
    if not shrinkages or min(shrinkages) <= 0:
        raise ValueError(f"shrinkages={list(shrinkages)}: expected values > 0")
    fitting, full = _Moments(features[~holdout]), _Moments(features)
    probes = []
    for j, classes in enumerate(num_classes):
        path = fitting.path(labels[~holdout, j], classes)
        accuracies = [
            path.probe(s).accuracy(features[holdout], labels[holdout, j]) for s in shrinkages
        ]
        best = max(range(len(shrinkages)), key=lambda i: (accuracies[i], shrinkages[i]))
        probes.append(full.path(labels[:, j], classes).probe(shrinkages[best]))
    return probes


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on `test_labels int [m]` of always predicting `train_labels`'s most frequent
    class (ties: the smallest id)."""
    majority = np.argmax(np.bincount(np.asarray(train_labels)))
    return float(np.mean(np.asarray(test_labels) == majority))


@nnx.jit
def _layer_states(model: RNNLanguageModel, tokens: jax.Array) -> list[jax.Array]:
    x = model.embedding[...][tokens]
    states, carry = [x], model.zero_carry(tokens.shape[0])
    for params, layer_carry in zip(model.rnn.params, carry, strict=True):
        x, _ = layers.apply_stack(model.rnn.cell, [params], x, None, [layer_carry])
        states.append(x)
    return states


def layer_states(model: RNNLanguageModel, tokens: jax.Array) -> list[np.ndarray]:
    """Every layer's output as the model reads `tokens int [batch, time]` from a zero state,
    in evaluation mode: `[x, h^1, ..., h^L]`, the embeddings `[batch, time, embed]` (layer
    0) then each recurrent layer's `[batch, time, hidden]`; h^L is what the softmax reads.

    Raises:
      ValueError: for a model whose layers do not simply feed each other (residual or
        bidirectional stacks) or that computes in another dtype than float32.
    """
    rnn = model.rnn
    if rnn.residual or rnn.bidirectional or rnn.learned_initial_carry:
        raise ValueError("layer_states needs a plain unidirectional stack without residuals")
    if model.compute_dtype != jnp.float32:
        raise ValueError(f"layer_states needs compute_dtype float32, not {model.compute_dtype}")
    return [np.asarray(s) for s in _layer_states(model, jnp.asarray(tokens, jnp.int32))]
