"""Logistic-regression probes: a softmax linear classifier read from a frozen model's states.

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

The probes are `rnn_jax.probes.LinearProbe`s, on features standardised and checked, and with
the strength chosen, as the LDA probe's (`rnn_jax.probes`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax.probes import (
    LinearProbe,
    _best,
    _check_grid_inputs,
    _check_labels,
    _check_regularization,
    _standardisation,
)


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
