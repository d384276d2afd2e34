"""Linear probes: what a frozen model's states encode, read out by a linear classifier.

A probe (Alain & Bengio 2017; Adi et al. 2017; Belinkov et al. 2017) is a classifier trained on
frozen representations to predict a property; its held-out accuracy, beside a majority
baseline and the same probe on an untrained model's states (Hewitt & Liang 2019), says how
linearly decodable the property is.

Two probes, both linear classifiers on standardised features returning a `LinearProbe`.

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

`fit_logistic_probes`: multinomial logistic regression (a softmax linear classifier, the usual
probe: Belinkov et al. 2017; Hewitt & Liang 2019) with an L2 penalty on the weights,

    minimise_{W, b}  (1/n) sum_i -log softmax(z_i W + b)_{y_i}  +  (l2 / 2) ||W||_F^2,

full batch, by L-BFGS (optax) for a fixed number of iterations in one jitted loop,
preconditioned by the features' inverse square-root covariance (a change of variables that
leaves the minimum where it is and makes the curvature nearly isotropic). It makes no
Gaussian assumption, so it reads classes LDA cannot (a class of several clusters, whose mean
and pooled covariance misplace LDA's boundary). Every (target, l2) problem on one feature set
is fitted in one jitted call, each by its own L-BFGS (`lax.map`), so a probe is the one it
would be if fitted alone; the L2 strength is chosen per target on held-out rows as for LDA,
then the probe is refitted on all rows from the chosen solution.

Baselines beside them: `majority_accuracy`; `lexical_accuracy`, a per-type lookup (each word's
most frequent class in the fitting set), the non-linear reference of what word identity alone
gives; `control_task`, Hewitt & Liang's control task (a random class per word type), whose
probe accuracy, subtracted from the real task's, is the probe's selectivity.

Also `layer_states`: every layer's output of an `RNNLanguageModel` (the embeddings as layer
0), the states a probe reads.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def softmax_losses(
    params: tuple[jax.Array, jax.Array],
    z: jax.Array,
    labels: jax.Array,
    class_mask: jax.Array,
    l2: jax.Array,
) -> jax.Array:
    """The penalised objective of `problems` softmax classifiers sharing the features `z`.

    Args:
      params: (weights `[features, problems, classes]`, bias `[problems, classes]`).
      z: standardised features `[n, features]`.
      labels: int `[problems, n]`.
      class_mask: bool `[problems, classes]`; a masked class has logit -inf.
      l2: `[problems]`.

    Returns:
      `[problems]`: per problem, the mean negative log-likelihood of its labels plus
      `l2 / 2 * ||weights||^2` (the bias is not penalised).
    """
    weights, bias = params
    features, problems, classes = weights.shape
    # One matmul for every problem: vmapping a per-problem `z @ w` is ~2.5x slower on CPU.
    logits = (z @ weights.reshape(features, problems * classes)).reshape(-1, problems, classes)
    logits = jnp.where(class_mask, logits + bias, -jnp.inf)
    log_probs = jax.nn.log_softmax(logits)  # [n, problems, classes]
    nll = -jnp.take_along_axis(log_probs, labels.T[:, :, None], axis=2)[:, :, 0]
    return jnp.mean(nll, axis=0) + 0.5 * l2 * jnp.sum(weights * weights, axis=(0, 2))


# Added to the standardised features' covariance eigenvalues (which sum to `features`) before
# the preconditioner inverts their square roots.
PRECONDITION_FLOOR = 1e-3


@functools.partial(jax.jit, static_argnames="iterations")
def _fit_softmax(
    z: jax.Array,
    labels: jax.Array,
    class_mask: jax.Array,
    l2: jax.Array,
    init: tuple[jax.Array, jax.Array],
    precondition: jax.Array,
    iterations: int,
) -> tuple[jax.Array, jax.Array]:
    """`iterations` L-BFGS steps from `init` on each problem of `softmax_losses` (arguments
    as there), every problem on its own: its own line searches and curvature pairs, one
    problem after another (`lax.map`), so that a probe is the one it would be if fitted alone.

    One L-BFGS on the problems' summed loss would be ~3x faster (one wide matmul per step
    instead of one narrow one per problem) and has the same minimum, but after a fixed number
    of steps its solution depends on which other problems share the line search: on the state
    probe's quick run, redefining the control tasks moved the UPOS probes' accuracy by up to
    0.0008 (docs/design.md, "State-probe experiment").

    The steps are taken in `v`, where weights = `precondition [features, features]` @ v (a
    change of variables: the minimum is the same). With `precondition` ~ the inverse square
    root of the features' covariance, the loss's curvature in `v` is nearly isotropic: on the
    quick run's layer 2, 25 steps come within 0.004 of the objective 400 plain steps reach,
    where 100 plain steps stay 0.012 above it.

    Args:
      init: (v `[features, problems, classes]`, bias `[problems, classes]`).

    Returns:
      The final (weights `[features, problems, classes]`, bias `[problems, classes]`).
    """
    optimizer = optax.lbfgs()

    def fit_one(problem: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        labels_p, mask_p, l2_p, v_p, bias_p = problem

        def loss(params: tuple[jax.Array, jax.Array]) -> jax.Array:
            v, bias = params  # [features, classes], [classes]
            weights = (precondition @ v)[:, None, :]
            return softmax_losses((weights, bias[None]), z, labels_p[None], mask_p[None], l2_p)[0]

        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(_: jax.Array, carry: tuple) -> tuple:
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = optimizer.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            return optax.apply_updates(params, updates), state

        start = (v_p, bias_p)
        (v, bias), _ = jax.lax.fori_loop(0, iterations, step, (start, optimizer.init(start)))
        return precondition @ v, bias

    weights, bias = jax.lax.map(
        fit_one, (labels, class_mask, l2, jnp.moveaxis(init[0], 1, 0), init[1])
    )
    return jnp.moveaxis(weights, 0, 1), bias


class _SoftmaxProblems:
    """Softmax probes of several targets on one feature set, standardised with all its rows."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: Sequence[int]):
        """features `[n, features]`; labels int `[n, targets]`, column j in `[0,
        num_classes[j])`."""
        self.mean, self.scale = _standardisation(features)
        self.z = ((np.asarray(features, np.float64) - self.mean) / self.scale).astype(np.float32)
        self.labels, self.num_classes = labels, list(num_classes)
        self.classes = max(self.num_classes)  # every problem padded to the widest target
        # (covariance + floor)^(-1/2) and its inverse; the floor keeps dead or collinear
        # units' directions finite (any invertible matrix leaves the minimum unchanged).
        eigenvalues, eigenvectors = np.linalg.eigh(
            self.z.T.astype(np.float64) @ self.z / len(self.z)
        )
        root = np.sqrt(np.maximum(eigenvalues, 0.0) + PRECONDITION_FLOOR)
        self.precondition = (eigenvectors / root) @ eigenvectors.T
        self.unprecondition = (eigenvectors * root) @ eigenvectors.T

    def fit(
        self,
        targets: Sequence[int],
        l2: Sequence[float],
        fitted: np.ndarray,
        iterations: int,
        init: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Problem p: target `targets[p]` at `l2[p]` on the `fitted` rows (bool `[n]`), from
        `init` (zeros if None). Returns (weights `[features, problems, classes]`, bias
        `[problems, classes]` with -inf for classes absent from the fitted rows or beyond the
        target's, class_mask)."""
        problems = len(targets)
        labels = self.labels[fitted][:, list(targets)].T  # [problems, fitted rows]
        class_mask = np.zeros((problems, self.classes), bool)
        for p, j in enumerate(targets):
            counts = np.bincount(labels[p], minlength=self.classes)
            class_mask[p] = (counts > 0) & (np.arange(self.classes) < self.num_classes[j])
        if init is None:
            init = (
                np.zeros((self.z.shape[1], problems, self.classes)),
                np.zeros((problems, self.classes)),
            )
        init = (np.einsum("fg,gpc->fpc", self.unprecondition, init[0]), init[1])
        weights, bias = _fit_softmax(
            jnp.asarray(self.z[fitted]),
            jnp.asarray(labels, jnp.int32),
            jnp.asarray(class_mask),
            jnp.asarray(l2, jnp.float32),
            jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init),
            jnp.asarray(self.precondition, jnp.float32),
            iterations,
        )
        bias = np.where(class_mask, np.asarray(bias, np.float64), -np.inf)
        return np.asarray(weights, np.float64), bias, class_mask

    def probe(self, weights: np.ndarray, bias: np.ndarray, j: int, l2: float) -> LinearProbe:
        """The probe of target j from one problem's `weights [features, classes]` and `bias
        [classes]`, cut to the target's classes."""
        classes = self.num_classes[j]
        return LinearProbe(self.mean, self.scale, weights[:, :classes], bias[:classes], l2)


def fit_logistic_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, iterations: int
) -> LinearProbe:
    """The logistic-regression probe of `labels int [n]` on `features [n, features]` at L2
    penalty `l2` (> 0), after `iterations` L-BFGS steps from zero."""
    _check_regularization("l2", l2)
    labels = _check_labels(labels, num_classes)[:, None]
    problems = _SoftmaxProblems(features, labels, [num_classes])
    weights, bias, _ = problems.fit([0], [l2], np.ones(len(labels), bool), iterations)
    return problems.probe(weights[:, 0], bias[0], 0, float(l2))


def fit_logistic_probes(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: Sequence[int],
    l2_penalties: Sequence[float],
    holdout: np.ndarray,
    iterations: int,
) -> list[LinearProbe]:
    """One logistic-regression probe per target column, each at the L2 penalty of
    `l2_penalties` with the best accuracy on the `holdout` rows when fitted on the others
    (ties: the larger penalty), refitted on all rows starting from that solution.

    Features are standardised with all rows (label-free, so the held-out labels stay unseen).
    Every (target, penalty) pair is fitted in one call (`_fit_softmax`, each pair on its own),
    then every target's refit: two compilations per feature shape. A target's probe does not
    depend on the other targets fitted with it.

    Args:
      features: `[n, features]`.
      labels: int `[n, targets]`; column j has classes `[0, num_classes[j])`.
      num_classes: per target.
      l2_penalties: the grid (each > 0).
      holdout: bool `[n]`, the rows that choose the penalty (some true, some false).
      iterations: L-BFGS steps of each fit (and of each refit).
    """
    labels, holdout = _check_grid_inputs(labels, num_classes, l2_penalties, "l2_penalties", holdout)
    grid = [float(v) for v in l2_penalties]
    problems = _SoftmaxProblems(features, labels, num_classes)
    targets = range(len(num_classes))
    pairs = [(j, l2) for j in targets for l2 in grid]
    weights, bias, _ = problems.fit(
        [j for j, _ in pairs], [l2 for _, l2 in pairs], ~holdout, iterations
    )
    held_features = features[holdout]
    chosen = []
    for j in targets:
        held_labels = labels[holdout, j]
        accuracies = [
            problems.probe(weights[:, p], bias[p], j, l2).accuracy(held_features, held_labels)
            for p, (target, l2) in enumerate(pairs)
            if target == j
        ]
        chosen.append(j * len(grid) + _best(accuracies, grid))
    # Classes absent from the fitted rows start the refit at a finite logit (bias 0).
    init = (weights[:, chosen], np.where(np.isfinite(bias[chosen]), bias[chosen], 0.0))
    l2 = [pairs[p][1] for p in chosen]
    weights, bias, _ = problems.fit(list(targets), l2, np.ones(len(labels), bool), iterations, init)
    return [problems.probe(weights[:, j], bias[j], j, l2[j]) for j in targets]


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
