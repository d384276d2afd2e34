"""Synthetic tasks with known answers: copy, adding, temporal order, a Markov language.

Every task is a frozen dataclass of its options with
`sample(rng: np.random.Generator, batch_size) -> batch` (a dict of numpy arrays, batch-major)
and `batch(seed, step, batch_size)`, which draws batch `step` from `default_rng([seed, step])`
so that a resumed run sees the same data without storing any iterator state.

- `CopyTask` (Arjovsky et al. 2016): int32 inputs/targets `[B, T+2S]`; the memoryless
  baseline cross-entropy is `S log(K) / (T+2S)`.
- `AddingProblem` (Le et al. 2015): float32 inputs `[B, T, 2]`, targets `[B]`; predicting 1
  gives MSE 1/6.
- `EchoTask` (delayed recall): int32 inputs `[B, T]`, targets the input `delay` steps earlier
  with a float32 `mask` that is 0 for the first `delay` steps; chance accuracy `1 / K`.
- `TemporalOrder` (Hochreiter & Schmidhuber 1997, 6a/6b): int32 inputs `[B, time]` with
  `lengths` and `mask`, int32 class targets `[B]`; chance accuracy `1 / 2**k`.
- `MarkovLanguage` (order-n chain): int32 inputs `[B, L]`, targets the next tokens; the
  entropy rate (nats/token) is known exactly.

`MarkovLanguage` is the language-model yardstick: a model's per-token cross-entropy on its
samples can be compared with `entropy_rate()` (the lowest achievable), and
`log_prob(sequences)` scores any sequence exactly under the true process (e.g. free-running
samples of a model, for exposure bias).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from rnn_jax.data.batching import Batch
from rnn_jax.predicates import is_finite_number, is_int


def _check_integers(task: object, names: Sequence[str], minimum: int = 1) -> None:
    """Raises ValueError naming the first of `names` that is not an integer >= `minimum`, at
    construction: a float such as 2.5 would fail only when sampling, inside numpy, and True
    would be a size of 1."""
    for name in names:
        value = getattr(task, name)
        if not is_int(value) or value < minimum:
            raise ValueError(
                f"{type(task).__name__} {name}={value!r} must be an integer >= {minimum}"
            )


class _Task:
    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    def batch(self, seed: int, step: int, batch_size: int) -> Batch:
        """Batch number `step` of the stream seeded by `seed` (deterministic, resumable).

        NumPy's `SeedSequence` ignores trailing zero words, so batch 0 draws exactly the
        numbers of `default_rng(seed)`: do not use `default_rng(seed)` for anything that must be
        independent of this stream (`MarkovLanguage` samples with `sample_rng` for this reason).
        """
        return self.sample(np.random.default_rng([seed, step]), batch_size)


@dataclasses.dataclass(frozen=True)
class CopyTask(_Task):
    """Copy (memory) task of Arjovsky, Shah & Bengio (2016).

    Ids: 0 blank, 1..num_categories data symbols, num_categories + 1 the delimiter
    (`vocab_size = num_categories + 2`). With S = `num_symbols`, T = `blank_length`:
    `inputs  = [s_1..s_S, 0 x (T-1), delimiter, 0 x S]` and
    `targets = [0 x (T+S), s_1..s_S]`, both `[batch, T + 2S]`. The model must output blanks
    and then reproduce the S symbols after the delimiter.
    """

    blank_length: int = 100
    num_symbols: int = 10
    num_categories: int = 8

    def __post_init__(self) -> None:
        _check_integers(self, ("blank_length", "num_symbols", "num_categories"))

    @property
    def vocab_size(self) -> int:
        return self.num_categories + 2

    @property
    def delimiter(self) -> int:
        return self.num_categories + 1

    @property
    def length(self) -> int:
        return self.blank_length + 2 * self.num_symbols

    def baseline_cross_entropy(self) -> float:
        """Nats/step of the best memoryless predictor: blanks, then uniform over categories."""
        return self.num_symbols * math.log(self.num_categories) / self.length

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`{"inputs", "targets"}`, int32 `[batch_size, T + 2S]`."""
        s, t = self.num_symbols, self.blank_length
        symbols = rng.integers(1, self.num_categories + 1, size=(batch_size, s), dtype=np.int32)
        inputs = np.zeros((batch_size, self.length), np.int32)
        inputs[:, :s] = symbols
        inputs[:, s + t - 1] = self.delimiter
        targets = np.zeros((batch_size, self.length), np.int32)
        targets[:, -s:] = symbols
        return {"inputs": inputs, "targets": targets}


@dataclasses.dataclass(frozen=True)
class AddingProblem(_Task):
    """Adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015).

    `inputs [batch, T, 2]`: channel 0 holds values ~ U(0, 1), channel 1 marks two positions
    with 1, one drawn uniformly in the first half and one in the second half (Le et al.).
    `targets [batch]` is the sum of the two marked values. Always predicting 1 (the mean)
    gives MSE = Var(U1 + U2) = 2/12 ~= 0.167, the baseline to beat.
    """

    length: int = 100

    def __post_init__(self) -> None:
        _check_integers(self, ("length",), minimum=2)

    @staticmethod
    def baseline_mse() -> float:
        return 1.0 / 6.0

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`{"inputs": float32 [B, T, 2], "targets": float32 [B]}`."""
        half = self.length // 2
        values = rng.uniform(0.0, 1.0, size=(batch_size, self.length)).astype(np.float32)
        first = rng.integers(0, half, size=batch_size)
        second = rng.integers(half, self.length, size=batch_size)
        markers = np.zeros((batch_size, self.length), np.float32)
        rows = np.arange(batch_size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = values[rows, first] + values[rows, second]
        return {"inputs": np.stack([values, markers], axis=-1), "targets": targets}


@dataclasses.dataclass(frozen=True)
class EchoTask(_Task):
    """Delayed recall ("echo"): output the symbol seen `delay` steps ago.

    `inputs [batch, T]` are i.i.d. uniform over `num_symbols` ids 0..K-1; `targets[:, t] =
    inputs[:, t - delay]` for t >= delay and 0 before, where `mask [batch, T]` (float32) is 0:
    those steps have nothing to recall. A predictor without memory is at chance: accuracy
    1/K, cross-entropy log K. Learning it needs a gradient from step t to step t - delay,
    which truncated BPTT with windows of at most `delay` steps never has.
    """

    delay: int = 10
    num_symbols: int = 8
    length: int = 80

    def __post_init__(self) -> None:
        _check_integers(self, ("delay", "num_symbols", "length"))
        if self.length <= self.delay:
            raise ValueError(f"EchoTask length={self.length} must exceed delay={self.delay}")

    def baseline_cross_entropy(self) -> float:
        """Nats/step of the memoryless predictor (uniform over the symbols)."""
        return math.log(self.num_symbols)

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`{"inputs", "targets"}` int32 `[B, T]` and `{"mask"}` float32 `[B, T]`."""
        inputs = rng.integers(0, self.num_symbols, size=(batch_size, self.length), dtype=np.int32)
        targets = np.zeros_like(inputs)
        targets[:, self.delay :] = inputs[:, : -self.delay]
        mask = np.zeros(inputs.shape, np.float32)
        mask[:, self.delay :] = 1.0
        return {"inputs": inputs, "targets": targets, "mask": mask}


@dataclasses.dataclass(frozen=True)
class TemporalOrder(_Task):
    """Temporal order task (Hochreiter & Schmidhuber 1997, experiment 6a; 6b with 3 symbols).

    Ids: 0 pad, 1-4 distractors a b c d, 5 B (start), 6 E (end), 7 X, 8 Y (`vocab_size` 9).
    A sequence of length L ~ U{min_length..max_length} is `B ... E` with random distractors,
    except that the k = len(windows) relevant symbols (each X or Y) sit at positions drawn
    from `windows` (fractions of min_length: 6a [10,20] and [50,60] of 100 steps). The class
    is the X/Y pattern read as binary (X=0, Y=1, first symbol most significant): 2**k classes.
    Returns `{"inputs": int32 [B, max_length], "lengths", "mask", "targets": int32 [B]}`.
    """

    min_length: int = 100
    max_length: int = 110
    windows: tuple[tuple[float, float], ...] = ((0.1, 0.2), (0.5, 0.6))

    PAD, START, END, X, Y = 0, 5, 6, 7, 8
    vocab_size = 9

    def __post_init__(self) -> None:
        _check_integers(self, ("min_length", "max_length"), minimum=3)
        if not 3 <= self.min_length <= self.max_length:
            raise ValueError(
                f"TemporalOrder needs 3 <= min_length <= max_length, got "
                f"{self.min_length}, {self.max_length}"
            )
        positions = [self._window(w) for w in self.windows]
        ends = [hi for _, hi in positions]
        if (
            not positions
            or any(lo < 1 or hi < lo for lo, hi in positions)
            or (max(ends) > self.min_length - 2)
        ):
            raise ValueError(
                f"windows={self.windows} must be non-empty fractions giving positions inside "
                f"1..{self.min_length - 2} (got {positions})"
            )
        if any(positions[i][1] >= positions[i + 1][0] for i in range(len(positions) - 1)):
            raise ValueError(f"windows={self.windows} must be increasing and disjoint")

    def _window(self, window: tuple[float, float]) -> tuple[int, int]:
        return round(window[0] * self.min_length), round(window[1] * self.min_length)

    @property
    def num_classes(self) -> int:
        return 2 ** len(self.windows)

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        lengths = rng.integers(self.min_length, self.max_length + 1, size=batch_size)
        inputs = rng.integers(1, 5, size=(batch_size, self.max_length), dtype=np.int32)
        rows = np.arange(batch_size)
        inputs[:, 0] = self.START
        inputs[rows, lengths - 1] = self.END
        targets = np.zeros(batch_size, np.int32)
        for lo, hi in (self._window(w) for w in self.windows):
            position = rng.integers(lo, hi + 1, size=batch_size)
            is_y = rng.integers(0, 2, size=batch_size)
            inputs[rows, position] = np.where(is_y == 1, self.Y, self.X)
            targets = 2 * targets + is_y
        mask = np.arange(self.max_length)[None, :] < lengths[:, None]
        inputs[~mask] = self.PAD
        return {
            "inputs": inputs,
            "lengths": lengths.astype(np.int32),
            "mask": mask.astype(np.float32),
            "targets": targets.astype(np.int32),
        }


def sample_rng(seed: int | Sequence[int]) -> np.random.Generator:
    """The generator `MarkovLanguage.batch` and `.stream` sample with: `SeedSequence(seed)`'s
    first spawned child (`spawn_key=(0,)`).

    `transitions` are drawn by `default_rng(language.seed)`, and NumPy's `SeedSequence` ignores
    trailing zero words, so sampling with `default_rng([seed, 0])` (a stream's first batch or
    first split) reused exactly the draws that made the language when `seed` equalled its
    seed. A spawned child is pooled with the spawn key after the entropy padded to the pool
    size, so it differs from every plain seed, `language.seed` included (NumPy's documented way
    to derive independent streams).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


@dataclasses.dataclass(frozen=True, eq=False)
class MarkovLanguage(_Task):
    """A stationary order-n Markov chain over `vocab_size` tokens with a known entropy rate.

    Each context (the previous `order` tokens) has its own next-token distribution
    `transitions[c_1, ..., c_n, :]` drawn from a symmetric Dirichlet(`concentration`) with
    `default_rng(seed)`: `concentration` < 1 makes them peaked and different from each other
    (non-uniform), so a model must use the whole context. Sequences start in the stationary
    distribution of contexts, so every position has the same statistics and

        entropy_rate = sum_c pi(c) H(transitions[c])        (nats/token)

    is the cross-entropy of the true model at every position >= order, and a lower bound on
    any model's expected per-token cross-entropy.
    """

    vocab_size: int = 16
    order: int = 2
    concentration: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        # A NaN or infinite concentration is not `<= 0` but makes every transition NaN, and
        # `stationary` would iterate 100,000 times before failing in LAPACK.
        if (
            not (is_int(self.vocab_size) and is_int(self.order))
            or self.vocab_size < 2
            or self.order < 1
            or not is_finite_number(self.concentration)
            or self.concentration <= 0
        ):
            raise ValueError(
                f"MarkovLanguage needs integers vocab_size >= 2, order >= 1 and a finite "
                f"concentration > 0; got {self.vocab_size!r}, {self.order!r}, "
                f"{self.concentration!r}"
            )
        # `default_rng(None)` drew a fresh language from OS entropy: two equal configurations
        # (or the same one built again to evaluate) were different processes, without a word;
        # a negative or float seed failed only at first use, inside NumPy, without the field.
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"MarkovLanguage seed={self.seed!r} must be an integer >= 0")
        if self.vocab_size ** (self.order + 1) > 50_000_000:
            raise ValueError(
                f"vocab_size**(order+1) = {self.vocab_size ** (self.order + 1)} transition "
                "probabilities is too many (limit 5e7)"
            )

    @cached_property
    def transitions(self) -> np.ndarray:
        """float64 `[V] * order + [V]`: P(next | context)."""
        rng = np.random.default_rng(self.seed)
        shape = (self.vocab_size,) * self.order
        # Dirichlet via normalised Gamma draws; floor at tiny so every log-prob is finite.
        gammas = rng.gamma(self.concentration, size=shape + (self.vocab_size,))
        gammas = np.maximum(gammas, 1e-300)
        return gammas / gammas.sum(axis=-1, keepdims=True)

    @cached_property
    def stationary(self) -> np.ndarray:
        """float64 `[V] * order`: the stationary distribution pi(c_1, ..., c_n) of contexts.

        Found by power iteration of pi'(c_2..c_n, y) = sum_{c_1} pi(c_1..c_n) P(y | c_1..c_n),
        the context chain's transition, until the L1 change is below 1e-13. Every transition
        probability is positive (floored), so the distribution is unique; a chain that mixes
        too slowly for the iteration (a small `concentration`) is solved directly as the null
        vector of (M^T - I) with sum 1, M the `[V^n, V^n]` context transition matrix.
        """
        pi = np.full((self.vocab_size,) * self.order, self.vocab_size**-self.order)
        for _ in range(100_000):
            new = np.einsum("i...,i...y->...y", pi, self.transitions)
            if np.abs(new - pi).sum() < 1e-13:
                return new
            pi = new
        return self._stationary_by_solve()

    def _stationary_by_solve(self) -> np.ndarray:
        v, n = self.vocab_size, self.order
        contexts = v**n
        if contexts > 4096:
            raise RuntimeError(
                f"the stationary distribution of {contexts} contexts did not converge by power "
                f"iteration (concentration={self.concentration} mixes slowly) and is too "
                "large to solve directly; use a larger concentration"
            )
        probabilities = self.transitions.reshape(contexts, v)
        following = np.arange(contexts) % (contexts // v) * v  # (c_2..c_n, 0) of each context
        matrix = np.zeros((contexts, contexts))
        matrix[np.arange(contexts)[:, None], following[:, None] + np.arange(v)] = probabilities
        system = np.vstack([matrix.T - np.eye(contexts), np.ones((1, contexts))])
        target = np.zeros(contexts + 1)
        target[-1] = 1.0
        pi = np.linalg.lstsq(system, target, rcond=None)[0]
        return np.clip(pi, 0.0, None).reshape((v,) * n) / np.clip(pi, 0.0, None).sum()

    def entropy_rate(self) -> float:
        """H = sum_c pi(c) H(P(. | c)) in nats per token."""
        p = self.transitions
        entropy = -(p * np.log(p)).sum(axis=-1)
        return float((self.stationary * entropy).sum())

    def sample(self, rng: np.random.Generator, batch_size: int, length: int = 128) -> Batch:
        """`{"inputs": int32 [B, length], "targets": int32 [B, length]}`, targets one ahead."""
        tokens = self.sample_sequences(rng, batch_size, length + 1)
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def batch(self, seed: int, step: int, batch_size: int, length: int = 128) -> Batch:
        """Batch number `step` of the stream seeded by `seed`, drawn by `sample_rng([seed, step])`
        (never the draws that made `transitions`, whatever the seeds)."""
        return self.sample(sample_rng([seed, step]), batch_size, length)

    def sample_sequences(
        self, rng: np.random.Generator, batch_size: int, length: int
    ) -> np.ndarray:
        """int32 `[batch_size, length]` stationary sequences (length >= order)."""
        if length < self.order:
            raise ValueError(f"length={length} must be >= order={self.order}")
        v, n = self.vocab_size, self.order
        flat = rng.choice(v**n, size=batch_size, p=self.stationary.reshape(-1))
        tokens = np.zeros((batch_size, length), np.int32)
        tokens[:, :n] = np.stack(np.unravel_index(flat, (v,) * n), axis=-1)
        cumulative = np.cumsum(self.transitions.reshape(v**n, v), axis=-1)
        strides = v ** np.arange(n - 1, -1, -1)
        for t in range(n, length):
            context = tokens[:, t - n : t] @ strides
            u = rng.random(batch_size)[:, None]
            tokens[:, t] = np.minimum((cumulative[context] < u).sum(-1), v - 1)
        return tokens

    def stream(self, seed: int | Sequence[int], num_tokens: int) -> np.ndarray:
        """One stationary token stream int32 `[num_tokens]` (for `LMStream`), drawn by
        `sample_rng(seed)`.

        A plain-Python loop over tokens: for one long sequence it is ~20x faster than the
        batched numpy loop of `sample_sequences` (no per-step array overhead).
        """
        rng = sample_rng(seed)
        v, n = self.vocab_size, self.order
        if num_tokens < n:
            raise ValueError(f"num_tokens={num_tokens} must be >= order={n}")
        context = int(rng.choice(v**n, p=self.stationary.reshape(-1)))
        tokens = list(np.unravel_index(context, (v,) * n))
        cumulative = np.cumsum(self.transitions.reshape(v**n, v), axis=-1).tolist()
        for u in rng.random(num_tokens - n).tolist():
            token = min(bisect.bisect_left(cumulative[context], u), v - 1)
            tokens.append(token)
            context = (context * v + token) % v**n
        return np.asarray(tokens, np.int32)

    def conditional_log_probs(self, sequences: np.ndarray) -> np.ndarray:
        """float64 `[batch, time]`: log p(x_t | x_<t) under the true process.

        For t >= order this is log P(x_t | x_{t-n..t-1}); for t < order it is the stationary
        process's own conditional (a ratio of marginals of pi), so the row sums are exact
        sequence log-probabilities; an empty sequence has log-probability 0. Ids that are not
        integers in [0, vocab_size) raise ValueError.
        """
        x = np.asarray(sequences)
        # An empty batch or empty sequences score 0 (log 1), whatever dtype `[[]]` gave: `min`
        # of no ids raised numpy's "zero-size array to reduction operation"; a float or bool
        # array of ids failed inside the indexing (IndexError), not here.
        if x.ndim != 2 or (
            x.size
            and (
                not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() >= self.vocab_size
            )
        ):
            raise ValueError(
                f"sequences must be int [batch, time] with ids in [0, {self.vocab_size}), got "
                f"{x.dtype} shape {x.shape}"
            )
        if not x.size:
            return np.zeros(x.shape, np.float64)
        n = self.order
        out = np.zeros(x.shape, np.float64)
        prefix = min(n, x.shape[1])
        log_marginal_prev = np.zeros(x.shape[0])
        for k in range(1, prefix + 1):
            # Marginal of the first k context coordinates: sum pi over the last n-k axes.
            marginal = self.stationary.sum(axis=tuple(range(k, n)))
            log_marginal = np.log(marginal[tuple(x[:, :k].T)])
            out[:, k - 1] = log_marginal - log_marginal_prev
            log_marginal_prev = log_marginal
        if x.shape[1] > n:
            windows = np.lib.stride_tricks.sliding_window_view(x, n + 1, axis=1)
            out[:, n:] = np.log(self.transitions[tuple(np.moveaxis(windows, -1, 0))])
        return out

    def log_prob(self, sequences: np.ndarray) -> np.ndarray:
        """float64 `[batch]`: exact log-probability of each sequence under the process."""
        return self.conditional_log_probs(sequences).sum(axis=-1)
