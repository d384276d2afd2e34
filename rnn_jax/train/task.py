"""The contract between an experiment and the training runtime.

An experiment subclasses `Task` and supplies its model, data, loss and evaluation; the
runtime (`train_and_evaluate`) does everything else. All model-facing methods are pure
functions of their arguments: the runtime calls them under `jax.jit` and `jax.vmap` (over
seed replicas), so they must not read global state or draw hidden random numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx

PyTree = Any
Batch = dict[str, np.ndarray]


class DataSource(Protocol):
    """Global batches, epoch by epoch, with a position that can be saved and restored.

    The protocol of `rnn_jax.data.LMStream` and `rnn_jax.data.BatchIterator`: `for batch in
    source` runs the rest of the current epoch; `state_dict()` is a JSON-serialisable
    position; after `load_state_dict(state)` the next batch is the one that followed when the
    state was taken. The runtime repeats epochs until `train.num_steps`.
    """

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class Task:
    """What an experiment supplies to `train_and_evaluate`.

    Shapes: batches are dicts of numpy arrays whose first axis is the *global* batch
    (a multiple of the device count); a carry is a pytree of arrays `[batch, ...]`.
    """

    #: Splits evaluated every `train.eval_every` steps; `train.best_metric` (a
    #: `<split>_<metric>` of any of them, mean over replicas) drives best/early stopping.
    eval_splits: tuple[str, ...] = ("valid",)
    #: Splits evaluated once at the end, with the best checkpoint (the last state when
    #: `train.keep_best` is False or no evaluation improved).
    final_splits: tuple[str, ...] = ("valid", "test")

    def init_model(self, rng: jax.Array) -> nnx.Module:
        """A freshly initialised model (called once per seed replica, under vmap)."""
        raise NotImplementedError

    def init_carry(self, batch_size: int) -> PyTree:
        """State carried from one batch to the next (truncated BPTT); `()` if none."""
        return ()

    def train_data(self) -> DataSource:
        """The training batches (see `DataSource`)."""
        raise NotImplementedError

    def loss_fn(
        self, model: nnx.Module, batch: PyTree, carry: PyTree, rng: jax.Array
    ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array | tuple[jax.Array, jax.Array]]]]:
        """`(scalar loss, (new carry, {name: value to log}))` for one training batch.

        A value is a scalar, logged as its mean over the logging window's steps, or a pair
        `(numerator, denominator)` of scalars, logged as the ratio of their sums over the
        window: a batch's summed NLL and its real tokens give the NLL per token over the
        window (a mean of per-batch ratios weighs a batch of few tokens like one of many).

        `rng` is this step's key for this replica (dropout masks for the global batch).
        Gradients are taken with respect to the model's `nnx.Param`s only; the carry that
        comes in is a constant (truncated BPTT).
        """
        raise NotImplementedError

    def eval_data(self, split: str) -> Iterable[Batch]:
        """A fresh pass over an evaluation split, in global batches."""
        raise NotImplementedError

    def eval_batch_size(self, split: str) -> int:
        """The batch size of `eval_data(split)` (for its initial carry)."""
        raise NotImplementedError

    def eval_step(
        self, model: nnx.Module, batch: PyTree, carry: PyTree
    ) -> tuple[PyTree, dict[str, jax.Array]]:
        """`(new carry, {name: sum over the batch})`, e.g. `{"nll": ..., "tokens": ...}`.

        Sums (not means) so that the runtime can add them over batches exactly.
        """
        raise NotImplementedError

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics of a whole split from its summed statistics (host floats), e.g.
        `{"loss": nll / tokens, "perplexity": exp(nll / tokens)}`."""
        raise NotImplementedError

    def artifacts(self) -> dict[str, Any]:
        """Files to write into the run directory at start, `{name: JSON object}` (e.g. the
        vocabulary that sampling from a checkpoint needs)."""
        return {}

    def tokens_in(self, batch: Batch) -> int:
        """Tokens in a batch, for the tokens/s throughput (default: batch x time of the first
        leaf, the product of its first two axes, right for unpadded streams; a feature axis,
        e.g. the adding problem's 2 input channels `[batch, T, 2]`, holds no further tokens;
        tasks with padding count their real tokens)."""
        return int(np.prod(np.shape(jax.tree.leaves(batch)[0])[:2]))
