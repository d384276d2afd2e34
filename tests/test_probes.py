"""rnn_jax.probes, logistic_probes and probe_baselines: the layer states, the control task, the
probes and their accuracies refuse inputs that are out of range; a constant float64 feature
standardises to exactly zero."""

import numpy as np
import pytest
from flax import nnx

from rnn_jax import logistic_probes, probe_baselines, probes
from rnn_jax.models.lm import RNNLanguageModel


def test_layer_states_refuse_token_ids_outside_the_vocabulary():
    # The embedding gather clamps an id >= vocab_size to the last row: the probe read the
    # states of another word, with no error. (An abstract model: the ids are checked first.)
    model = nnx.eval_shape(lambda: RNNLanguageModel(11, 6, embed_size=4, rngs=nnx.Rngs(3)))
    for bad in (11, -1):
        with pytest.raises(ValueError, match=r"tokens holds ids in .* but vocab_size=11"):
            probes.layer_states(model, np.array([[1, bad, 2]]))
    half = nnx.eval_shape(
        lambda: RNNLanguageModel(11, 6, compute_dtype="bfloat16", rngs=nnx.Rngs(3))
    )
    with pytest.raises(ValueError, match=r"needs compute_dtype float32, not bfloat16"):
        probes.layer_states(half, np.array([[1, 2]]))


def test_control_task_refuses_class_probs_that_are_not_finite():
    # NaN or inf weights passed the checks and gave every type class 0.
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"class_probs must be finite non-negative"):
            probe_baselines.control_task(["a", "b", "c"], np.array([bad, 1.0]), seed=0)


def test_probes_refuse_a_regularization_that_is_not_finite_and_positive():
    # A NaN shrinkage or L2 penalty (or an infinite penalty) gave NaN weights: a probe that
    # predicted class 0 everywhere, with no error.
    x, labels = np.eye(4), np.array([0, 1, 0, 1])
    holdout = np.array([True, False, False, False])
    for bad in (np.nan, np.inf, 0.0):
        with pytest.raises(ValueError, match=r"shrinkage=.*allowed: a finite number > 0"):
            probes.fit_lda_probe(x, labels, 2, bad)
        with pytest.raises(ValueError, match=r"l2=.*allowed: a finite number > 0"):
            logistic_probes.fit_logistic_probe(x, labels, 2, bad, iterations=1)
        with pytest.raises(ValueError, match=r"shrinkages value=.*a finite number > 0"):
            probes.fit_lda_probes(x, labels[:, None], [2], [1.0, bad], holdout)
        with pytest.raises(ValueError, match=r"l2_penalties value=.*a finite number > 0"):
            logistic_probes.fit_logistic_probes(
                x, labels[:, None], [2], [bad], holdout, iterations=1
            )
    # A NumPy grid (np.logspace) died in `not grid` ("truth value ... is ambiguous").
    grid = np.array([0.5, 1.0])
    by_array = probes.fit_lda_probes(x, labels[:, None], [2], grid, holdout)[0]
    by_list = probes.fit_lda_probes(x, labels[:, None], [2], grid.tolist(), holdout)[0]
    np.testing.assert_array_equal(by_array.predict(x), by_list.predict(x))
    assert by_array.regularization == by_list.regularization
    with pytest.raises(ValueError, match=r"shrinkages=\[\]: expected at least one value"):
        probes.fit_lda_probes(x, labels[:, None], [2], np.array([]), holdout)
    with pytest.raises(ValueError, match=r"labels \(4,\): expected \[n, 1\]"):
        probes.fit_lda_probes(x, labels, [2], [1.0], holdout)


def test_a_constant_float64_feature_is_zero_after_standardising():
    # np.std of 200 rows of 0.1 (float64) is 6.9e-17, not 0: the feature was scaled by it, -1
    # on every fitting row and ~1e15 where a scored row has 0.2, which then decided the class.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    x = rng.normal(size=(200, 3)) + labels[:, None]
    probe = probes.fit_lda_probe(np.hstack([x, np.full((200, 1), 0.1)]), labels, 3, 0.01)
    alone = probes.fit_lda_probe(x, labels, 3, 0.01)
    shifted = np.hstack([x, np.full((200, 1), 0.2)])
    np.testing.assert_array_equal(probe.predict(shifted), alone.predict(x))
    # A label column ([n, 1]) was broadcast against the predictions: the mean of an [n, n] table.
    with pytest.raises(ValueError, match=r"labels of shape \(200, 1\): expected \(200,\)"):
        probe.accuracy(shifted, labels[:, None])
    with pytest.raises(ValueError, match=r"labels of shape \(2, 1\): expected \(2,\)"):
        probe_baselines.lexical_accuracy(["a", "b"], [0, 1], ["a", "b"], np.array([[0], [1]]))
    # No rows to fit: "Eigenvalues did not converge" (the eigendecomposition of a NaN moment).
    with pytest.raises(ValueError, match=r"features \(0, 3\): expected \[n, features\]"):
        probes.fit_lda_probe(np.zeros((0, 3)), np.zeros(0, int), 2, 0.1)


def test_unseen_types_get_the_majority_label_and_each_target_refits_from_its_own_choice(
    monkeypatch,
):
    # A type absent from training gets the overall majority (1), not e.g. the first label (3).
    assert probe_baselines.lexical_predictions(
        ["a", "b", "b"], [3, 1, 1], ["new", "a"]
    ).tolist() == [1, 3]

    # Target j's refit must start from target j's chosen fit (problem j * len(grid) + best), not
    # from problem `best` (target 0's). A stand-in for the L-BFGS fit (no compile): it adds
    # the mean label of the problem's fitted rows to the starting weights.
    def fit(z, labels, class_mask, l2, init, precondition, iterations):
        start = np.einsum("fg,gpc->fpc", np.asarray(precondition), np.asarray(init[0]))
        return start + np.mean(labels, axis=1)[None, :, None], np.asarray(init[1])

    monkeypatch.setattr(logistic_probes, "_fit_softmax", fit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    labels = np.stack([np.arange(20) % 2, (np.arange(20) % 5 == 0)], 1).astype(int)
    holdout = np.arange(20) >= 14
    fitted = logistic_probes.fit_logistic_probes(x, labels, [2, 2], [1e-3, 1.0], holdout, 1)
    for j, probe in enumerate(fitted):
        expected = labels[~holdout, j].mean() + labels[:, j].mean()  # selection fit + refit
        np.testing.assert_allclose(probe.weights, np.full((2, 2), expected), atol=1e-5)
