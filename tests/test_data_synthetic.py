"""Synthetic tasks checked against their known answers (Monte Carlo and brute force), and their
argument checks (integer sizes, a finite concentration)."""

import itertools
import math

import numpy as np
import pytest

from rnn_jax.data.synthetic import (
    AddingProblem,
    CopyTask,
    EchoTask,
    MarkovLanguage,
    TemporalOrder,
    sample_rng,
)


def test_copy_task_layout_and_memoryless_baseline():
    task = CopyTask(blank_length=30, num_symbols=10, num_categories=8)
    batch = task.sample(np.random.default_rng(0), 4000)
    x, y = batch["inputs"], batch["targets"]
    assert x.shape == y.shape == (4000, 50)
    np.testing.assert_array_equal(y[:, -10:], x[:, :10])
    assert np.all(x[:, 10 + 30 - 1] == task.delimiter)
    assert np.all(np.delete(x, list(range(10)) + [39], axis=1) == 0)
    assert np.all(y[:, :-10] == 0) and x[:, :10].min() == 1 and x[:, :10].max() == 8
    # Best memoryless predictor = the empirical distribution of each target position.
    nll = 0.0
    for t in range(task.length):
        p = np.bincount(y[:, t], minlength=task.vocab_size) / len(y)
        nll -= np.log(p[y[:, t]]).mean()
    assert nll / task.length == pytest.approx(task.baseline_cross_entropy(), rel=0.01)
    assert CopyTask(blank_length=100).baseline_cross_entropy() == pytest.approx(
        10 * math.log(8) / 120
    )
    with pytest.raises(ValueError, match="blank_length=0"):
        CopyTask(blank_length=0)


def test_adding_problem_targets_and_baseline():
    task = AddingProblem(length=50)
    batch = task.sample(np.random.default_rng(1), 20000)
    x, y = batch["inputs"], batch["targets"]
    assert x.shape == (20000, 50, 2) and x.dtype == np.float32
    for row in range(50):
        marked = np.nonzero(x[row, :, 1])[0]
        assert len(marked) == 2 and marked[0] < 25 <= marked[1]
        assert y[row] == pytest.approx(x[row, marked, 0].sum())
    # Each marker is uniform over its whole half: every position occurs.
    columns = np.nonzero(x[:, :, 1])[1].reshape(-1, 2)
    assert set(columns[:, 0]) == set(range(25)) and set(columns[:, 1]) == set(range(25, 50))
    assert np.mean((y - 1.0) ** 2) == pytest.approx(task.baseline_mse(), abs=0.005)


def test_temporal_order_class_matches_the_symbols():
    task = TemporalOrder(windows=((0.1, 0.2), (0.33, 0.43), (0.66, 0.76)))
    batch = task.sample(np.random.default_rng(2), 300)
    assert task.num_classes == 8
    # L ~ U{min_length..max_length} and each window's positions [lo, hi], both ends included.
    assert set(batch["lengths"]) == set(range(100, 111))
    seen = [set(), set(), set()]
    for row in range(300):
        n = batch["lengths"][row]
        seq = batch["inputs"][row]
        assert 100 <= n <= 110 and seq[0] == task.START and seq[n - 1] == task.END
        assert np.all(seq[n:] == task.PAD) and batch["mask"][row].sum() == n
        relevant = [(t, s) for t, s in enumerate(seq[:n]) if s in (task.X, task.Y)]
        windows = [(10, 20), (33, 43), (66, 76)]
        assert all(lo <= t <= hi for (t, _), (lo, hi) in zip(relevant, windows, strict=True))
        for positions, (t, _) in zip(seen, relevant, strict=True):
            positions.add(t)
        label = int("".join("1" if s == task.Y else "0" for _, s in relevant), 2)
        assert batch["targets"][row] == label
    assert seen == [set(range(lo, hi + 1)) for lo, hi in windows]
    assert np.bincount(batch["targets"], minlength=8).min() > 15
    with pytest.raises(ValueError, match="increasing and disjoint"):
        TemporalOrder(windows=((0.5, 0.6), (0.1, 0.2)))
    # A relevant symbol at position 0 or from min_length - 1 on would overwrite B or E.
    for windows in (((0.0, 0.1),), ((0.9, 0.99),)):
        with pytest.raises(ValueError, match=r"positions inside 1\.\.98"):
            TemporalOrder(windows=windows)


def test_echo_task_targets_and_mask_by_a_per_step_loop():
    task = EchoTask(delay=3, num_symbols=4, length=9)
    batch = task.sample(np.random.default_rng(0), 5)
    x = batch["inputs"]
    assert x.shape == (5, 9) and set(np.unique(x)) == set(range(4))
    for b in range(5):
        for t in range(9):
            assert batch["targets"][b, t] == (x[b, t - 3] if t >= 3 else 0)
            assert batch["mask"][b, t] == (1.0 if t >= 3 else 0.0)


def test_batches_are_reproducible_from_seed_and_step():
    task = CopyTask(blank_length=5)
    a, b, c = task.batch(3, 10, 8), task.batch(3, 10, 8), task.batch(3, 11, 8)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])


def test_markov_stationary_distribution_is_invariant():
    lang = MarkovLanguage(vocab_size=5, order=2, concentration=0.3, seed=1)
    pi = lang.stationary
    assert pi.sum() == pytest.approx(1.0)
    # One step of the context chain, written as an explicit loop.
    moved = np.zeros_like(pi)
    for a, b, c in itertools.product(range(5), repeat=3):
        moved[b, c] += pi[a, b] * lang.transitions[a, b, c]
    np.testing.assert_allclose(moved, pi, atol=1e-12)


def test_markov_log_prob_is_a_distribution_and_gives_the_entropy_rate():
    lang = MarkovLanguage(vocab_size=3, order=2, concentration=0.5, seed=4)
    length = 5
    sequences = np.array(list(itertools.product(range(3), repeat=length)))
    log_p = lang.log_prob(sequences)
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)

    def joint_entropy(k):
        # Entropy of the first k tokens, by enumerating and marginalising the full joint.
        p = np.exp(log_p).reshape((3,) * length).sum(axis=tuple(range(k, length)))
        return -(p * np.log(p)).sum()

    # For a stationary order-n chain, H(X_k | X_<k) equals the entropy rate for every k >= n.
    for k in (3, 4, 5):
        assert joint_entropy(k) - joint_entropy(k - 1) == pytest.approx(lang.entropy_rate())


def test_markov_entropy_rate_matches_monte_carlo():
    lang = MarkovLanguage(vocab_size=8, order=2, concentration=0.3, seed=0)
    nll = -lang.conditional_log_probs(lang.stream(0, 200_002)[None])[0, lang.order :]
    # Batched sampler too: both samplers must draw from the same process.
    batched = lang.sample_sequences(np.random.default_rng(1), 100, 1000)
    nll_batched = -lang.conditional_log_probs(batched)[:, lang.order :]
    rate = lang.entropy_rate()
    assert 0.5 < rate < math.log(8) - 0.5  # far from uniform: the context matters
    # Tokens of one chain are correlated: use the spread of block (or sequence) means.
    for block_means in (nll.reshape(200, -1).mean(1), nll_batched.mean(1)):
        stderr = block_means.std() / math.sqrt(len(block_means))
        assert abs(block_means.mean() - rate) < 4 * stderr
    # The test can fail: weighting contexts uniformly instead of by pi is many stderrs off.
    entropy = -(lang.transitions * np.log(lang.transitions)).sum(-1)
    assert abs(entropy.mean() - rate) > 10 * stderr


def test_markov_first_tokens_follow_the_stationary_marginal():
    lang = MarkovLanguage(vocab_size=4, order=2, seed=2)
    x = lang.sample_sequences(np.random.default_rng(0), 40000, 3)
    counts = np.zeros((4, 4))
    np.add.at(counts, (x[:, 1], x[:, 2]), 1)
    np.testing.assert_allclose(counts / 40000, lang.stationary, atol=0.01)


def test_markov_samples_never_reuse_the_draws_that_made_the_language():
    # SeedSequence drops trailing zero words: default_rng([7, 0]) is default_rng(7), the
    # generator of the transitions. A stream's first batch or first split with the language's
    # own seed sampled those very uniforms before sample_rng.
    lang = MarkovLanguage(vocab_size=4, order=1, seed=7)
    reused = lang.sample(np.random.default_rng(7), 8, 16)["inputs"]
    assert not np.array_equal(lang.batch(7, 0, 8, 16)["inputs"], reused)
    assert not np.array_equal(sample_rng([7, 0]).random(8), np.random.default_rng(7).random(8))
    # A batch is one sample of length + 1 tokens, targets one ahead, drawn by sample_rng([seed,
    # step]); the stream is the batched sampler's single row (same draws, bisect for the sum).
    for step in (0, 1):
        tokens = lang.sample_sequences(sample_rng([7, step]), 8, 17)
        batch = lang.batch(7, step, 8, 16)
        np.testing.assert_array_equal(batch["inputs"], tokens[:, :-1])
        np.testing.assert_array_equal(batch["targets"], tokens[:, 1:])
    order2 = MarkovLanguage(vocab_size=4, order=2, seed=7)
    for seed in ([3, 1], 5):
        expected = order2.sample_sequences(sample_rng(seed), 1, 40)[0]
        np.testing.assert_array_equal(order2.stream(seed, 40), expected)
    # still deterministic, and a different seed gives a different stream
    np.testing.assert_array_equal(lang.stream([7, 0], 200), lang.stream([7, 0], 200))
    assert not np.array_equal(lang.stream([7, 0], 200), lang.stream([7, 1], 200))


def test_markov_bad_arguments():
    with pytest.raises(ValueError, match="order >= 1"):
        MarkovLanguage(order=0)
    lang = MarkovLanguage(vocab_size=4)
    with pytest.raises(ValueError, match="length=1 must be >= order=2"):
        lang.sample_sequences(np.random.default_rng(0), 2, 1)
    with pytest.raises(ValueError, match="num_tokens=1 must be >= order=2"):
        lang.stream(0, 1)
    # Too many contexts to solve directly: refused before building the 4225 x 4225 system.
    with pytest.raises(RuntimeError, match="of 4225 contexts did not converge"):
        MarkovLanguage(vocab_size=65, order=2)._stationary_by_solve()
    with pytest.raises(ValueError, match="ids in"):
        lang.log_prob(np.array([[0, 5]]))
    # Float or bool ids failed inside the indexing (IndexError), not as documented.
    for ids in ([[0.0, 1.0, 2.0]], [[True, False, True]]):
        with pytest.raises(ValueError, match=r"ids in \[0, 4\), got (float64|bool)"):
            lang.log_prob(np.array(ids))
    # An empty batch, or empty sequences (log 1 = 0), raised numpy's "zero-size array to
    # reduction operation minimum".
    np.testing.assert_array_equal(lang.log_prob(np.zeros((2, 0), np.int32)), [0.0, 0.0])
    assert lang.log_prob(np.zeros((0, 3), np.int32)).shape == (0,)


def test_slowly_mixing_markov_chain_is_solved_not_refused():
    """A small concentration (accepted by the constructor) mixes too slowly for the power
    iteration; the stationary distribution is then solved directly (it used to raise "chain
    not mixing") and is a fixed point of the context chain. Where the iteration converges,
    the direct solve agrees with it."""
    import numpy as np

    from rnn_jax.data.synthetic import MarkovLanguage

    slow = MarkovLanguage(vocab_size=8, order=1, concentration=0.02, seed=2)
    pi = slow.stationary
    assert abs(pi.sum() - 1) < 1e-12 and pi.min() >= 0
    np.testing.assert_allclose(pi @ slow.transitions, pi, atol=1e-12)
    mixing = MarkovLanguage(vocab_size=5, order=2, concentration=0.5, seed=1)
    np.testing.assert_allclose(mixing._stationary_by_solve(), mixing.stationary, atol=1e-12)


def test_synthetic_task_sizes_must_be_integers_and_the_concentration_finite():
    """A float size failed only when sampling, inside numpy ("'float' object cannot be
    interpreted as an integer"), True was a size of 1, and a NaN concentration passed
    `concentration <= 0`: `stationary` then iterated 100,000 times and failed in LAPACK. A seed
    of None made a new random language on each construction."""
    bad = [
        (lambda: CopyTask(blank_length=2.5), "CopyTask blank_length=2.5 must be an integer"),
        (lambda: CopyTask(num_symbols=True), "CopyTask num_symbols=True must be an integer"),
        (lambda: AddingProblem(length=10.0), "AddingProblem length=10.0 must be an integer >= 2"),
        (lambda: EchoTask(delay=2.5), "EchoTask delay=2.5 must be an integer"),
        (lambda: TemporalOrder(min_length=100.0), "TemporalOrder min_length=100.0"),
        (lambda: TemporalOrder(min_length=9, max_length=8), "min_length <= max_length, got 9, 8"),
        (lambda: MarkovLanguage(vocab_size=4.0), "integers vocab_size >= 2"),
        (lambda: MarkovLanguage(concentration=float("nan")), "finite concentration > 0"),
        (lambda: MarkovLanguage(concentration=float("inf")), "finite concentration > 0"),
        # seed=None drew a different language from OS entropy on every construction
        (lambda: MarkovLanguage(seed=None), "MarkovLanguage seed=None must be an integer"),
        (lambda: MarkovLanguage(seed=-1), "MarkovLanguage seed=-1 must be an integer >= 0"),
    ]
    for make, message in bad:
        with pytest.raises(ValueError, match=message):
            make()
    # NumPy scalars (read from shapes or arrays) are still sizes.
    task = CopyTask(blank_length=np.int64(3), num_symbols=2, num_categories=4)
    assert task.sample(np.random.default_rng(0), 2)["inputs"].shape == (2, 7)
    assert MarkovLanguage(vocab_size=3, order=1, concentration=np.float32(0.5)).entropy_rate() > 0
