"""Linear probes: what a frozen model's states encode, read out by a linear classifier.

A probe (Alain & Bengio 2017; Adi et al. 2017; Belinkov et al. 2017) is a classifier trained on
frozen representations to predict a property; its held-out accuracy, beside a majority
baseline and the same probe on an untrained model's states (Hewitt & Liang 2019), says how
linearly decodable the property is.

Two probes, both linear classifiers on standardised features returning a `LinearProbe`: LDA,
here, and multinomial logistic regression (`rnn_jax.logistic_probes`). This module holds what
both share (`LinearProbe`, the standardisation, the checks of features, labels and
regularisation grids, the choice on held-out rows), the LDA probe and the states a probe
reads; the baselines beside a probe are in `rnn_jax.probe_baselines`.

`fit_lda_probes`: linear discriminant analysis with shrinkage (Fisher 1936; Friedman 1989's
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
from rnn_jax.models.checks import check_ids
from rnn_jax.models.lm import RNNLanguageModel
from rnn_jax.predicates import is_finite_number


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted linear classifier: `predict(x) = argmax(((x - mean) / scale) @ weights + bias)`.

    mean, scale: `[features]` standardisation; weights `[features, classes]`; bias `[classes]`
    (-inf for classes the fitting set lacked); regularization: the strength it was fitted with
    (LDA: the covariance shrinkage; logistic regression: the L2 penalty).
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    regularization: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """`features [n, features]` -> float64 `[n, classes]`."""
        x = np.asarray(features, np.float64)
        _check_finite(x)
        z = (x - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """`features [n, features]` -> int `[n]` class ids."""
        return np.argmax(self.scores(features), axis=1)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of `labels int [n]` predicted."""
        return _accuracy(self.predict(features), labels)


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of `labels int [n]` equal to `predictions [n]`. Other shapes are refused:
    `==` broadcast a `[n, 1]` column (or a `[1]` label) against the predictions and averaged
    an `[n, n]` table, a wrong accuracy without an error."""
    labels = np.asarray(labels)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels of shape {labels.shape}: expected {predictions.shape}, one per prediction"
        )
    return float(np.mean(predictions == labels))


def _check_finite(x: np.ndarray) -> None:
    """A diverged model's NaN/inf states: named here, not left to the eigendecomposition's
    "Eigenvalues did not converge" (fitting) or to argmax reading a NaN row as class 0
    (predicting)."""
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"features hold non-finite values in {len(rows)} of {len(x)} rows (first: row "
            f"{rows[0]}); a diverged model's states?"
        )


def _standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) `[features]` of `features [n, features]`; a constant feature (a dead unit)
    gets its value as mean and scale 1, so that it is exactly zero after centring.

    Constancy is tested exactly, not by `std > 0`: the float64 mean of n equal float64 values
    can miss them by an ulp (200 rows of 0.1: std 6.9e-17), and dividing by that std made the
    feature -1 on every fitting row and ~1e15 on a row where it is 0.2."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"features {x.shape}: expected [n, features] with n >= 1 rows")
    _check_finite(x)
    constant = (x == x[0]).all(axis=0)
    mean, std = np.where(constant, x[0], x.mean(axis=0)), x.std(axis=0)
    return mean, np.where(constant | (std == 0), 1.0, std)  # std 0: differences that underflow


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
        self.mean, self.scale = _standardisation(x)
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


def _check_regularization(name: str, value: float) -> None:
    """Raises ValueError unless `value` is a finite number > 0: a NaN shrinkage or L2 penalty
    (or an infinite penalty) gave NaN weights, and a probe that predicts class 0 everywhere."""
    if not (is_finite_number(value) and value > 0):
        raise ValueError(f"{name}={value!r}; allowed: a finite number > 0")


def fit_lda_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float
) -> LinearProbe:
    """The LDA probe of `labels int [n]` on `features [n, features]` at `shrinkage` (> 0)."""
    _check_regularization("shrinkage", shrinkage)
    return _Moments(features).path(labels, num_classes).probe(shrinkage)


def _check_grid_inputs(
    labels: np.ndarray,
    num_classes: Sequence[int],
    grid: Sequence[float],
    grid_name: str,
    holdout: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    holdout = np.asarray(holdout, bool)
    if labels.ndim != 2 or labels.shape[1] != len(num_classes):
        raise ValueError(
            f"labels {labels.shape}: expected [n, {len(num_classes)}] (one column per target)"
        )
    if not 0 < holdout.sum() < len(holdout):
        raise ValueError("holdout must mark some rows, not all")
    # `not grid` raised NumPy's "truth value ... is ambiguous" for a grid such as
    # np.logspace(-3, 0, 4); an empty array leant on NumPy's deprecated empty truth value.
    if len(grid) == 0:
        raise ValueError(f"{grid_name}={list(grid)}: expected at least one value")
    for value in grid:
        _check_regularization(f"{grid_name} value", value)
    for j, classes in enumerate(num_classes):
        _check_labels(labels[:, j], classes)
    return labels, holdout


def _best(accuracies: Sequence[float], grid: Sequence[float]) -> int:
    """The index of the best accuracy; ties: the stronger regularisation."""
    return max(range(len(grid)), key=lambda i: (accuracies[i], grid[i]))


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
    labels, holdout = _check_grid_inputs(labels, num_classes, shrinkages, "shrinkages", holdout)
    full, fitting = _Moments(features), _Moments(features[~holdout])  # full: checks every row
    probes = []
    for j, classes in enumerate(num_classes):
        path = fitting.path(labels[~holdout, j], classes)
        accuracies = [
            path.probe(s).accuracy(features[holdout], labels[holdout, j]) for s in shrinkages
        ]
        best = _best(accuracies, shrinkages)
        probes.append(full.path(labels[:, j], classes).probe(shrinkages[best]))
    return probes


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
        bidirectional stacks) or that computes in another dtype than float32, and for a
        token id outside [0, vocab_size) (the embedding gather would clamp it, silently).
    """
    rnn = model.rnn
    if rnn.residual or rnn.bidirectional or rnn.learned_initial_carry:
        raise ValueError("layer_states needs a plain unidirectional stack without residuals")
    if model.compute_dtype != jnp.float32:
        raise ValueError(f"layer_states needs compute_dtype float32, not {model.compute_dtype}")
    check_ids("tokens", tokens, model.vocab_size, "vocab_size")
    return [np.asarray(s) for s in _layer_states(model, jnp.asarray(tokens, jnp.int32))]
