"""Batching: padding/masks vs a per-example loop, plans, resume, and Zaremba LM streams."""

import numpy as np
import pytest

from rnn_jax.data.batching import (
    BatchIterator,
    LMEvalStream,
    LMStream,
    epoch_plan,
    pad_batch,
    repeat_epochs,
    sorted_eval_batches,
)


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(1, 30))
        ids = rng.integers(1, 50, size=length).astype(np.int32)
        out.append({"inputs": ids, "targets": ids[::-1].copy(), "label": i})
    return out


def test_pad_batch_matches_per_example_loop():
    examples = _examples(7)
    batch = pad_batch(examples, pad_id=-1, time_multiple=8)  # not 0: an ignored pad_id shows
    time = batch["inputs"].shape[1]
    longest = max(len(e["inputs"]) for e in examples)
    assert time % 8 == 0 and longest <= time < longest + 8
    for row, example in enumerate(examples):
        n = len(example["inputs"])
        assert batch["lengths"][row] == n
        for t in range(time):
            real = t < n
            assert batch["mask"][row, t] == (1.0 if real else 0.0)
            assert batch["inputs"][row, t] == (example["inputs"][t] if real else -1)
            assert batch["targets"][row, t] == (example["targets"][t] if real else -1)
    np.testing.assert_array_equal(batch["label"], np.arange(7))
    assert batch["lengths"].dtype == np.int32 and batch["mask"].dtype == np.float32


def test_pad_batch_seq2seq_fields_get_their_own_lengths():
    examples = [
        {"source": np.array([1, 2, 3]), "targets": np.array([4])},
        {"source": np.array([5]), "targets": np.array([6, 7])},
    ]
    batch = pad_batch(examples, length_fields=("source", "targets"))
    np.testing.assert_array_equal(batch["source_lengths"], [3, 1])
    np.testing.assert_array_equal(batch["targets_lengths"], [1, 2])
    np.testing.assert_array_equal(batch["targets_mask"], [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="length field 'inputs'"):
        pad_batch(examples)
    # a length field of scalars got neither lengths nor a mask, and no error
    labelled = [{**e, "label": 1} for e in examples]
    with pytest.raises(ValueError, match="length field 'label' holds scalars"):
        pad_batch(labelled, length_fields=("source", "label"))
    with pytest.raises(ValueError, match="empty list"):
        pad_batch([])


def test_pad_batch_keeps_every_example_value_whatever_the_first_examples_dtype():
    """The padded array took the first example's dtype: a weight 0.5 after an integer row
    became 0, and an id of 300 after an int8 row became 44."""
    batch = pad_batch(
        [
            {"inputs": np.array([1, 2], np.int8), "weight": np.array([1, 1])},
            {"inputs": np.array([300], np.int32), "weight": np.array([0.5])},
        ]
    )
    np.testing.assert_array_equal(batch["inputs"], [[1, 2], [300, 0]])
    np.testing.assert_array_equal(batch["weight"], [[1.0, 1.0], [0.5, 0.0]])


def test_epoch_plan_is_a_deterministic_permutation_per_epoch():
    lengths = np.arange(103) % 17 + 1
    plan = epoch_plan(lengths, 10, seed=3, epoch=0)
    assert sorted(np.concatenate(plan).tolist()) == list(range(103))
    assert [len(b) for b in plan] == [10] * 10 + [3]
    again = epoch_plan(lengths, 10, seed=3, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))
    other = epoch_plan(lengths, 10, seed=3, epoch=1)
    assert not np.array_equal(np.concatenate(plan), np.concatenate(other))
    assert len(epoch_plan(lengths, 10, 3, 0, drop_remainder=True)) == 10
    assert np.array_equal(
        np.concatenate(epoch_plan(lengths, 10, 3, 0, shuffle=False)), np.arange(103)
    )


def test_dropped_remainder_is_random_not_the_longest_examples():
    """With bucketing and drop_remainder, which examples an epoch drops must not depend on
    their length (cutting after the sort by length always dropped the longest of the last
    window: the longest example here was dropped in ~19% of epochs, the shortest never)."""
    lengths = np.arange(1, 46)  # 45 examples, batches of 4: one example dropped per epoch
    dropped = np.zeros(45)
    epochs = 2000
    for epoch in range(epochs):
        plan = epoch_plan(lengths, 4, 0, epoch, True, 3, True)
        assert [len(b) for b in plan] == [4] * 11
        kept = np.concatenate(plan)
        assert len(set(kept.tolist())) == 44
        dropped[np.setdiff1d(np.arange(45), kept)] += 1
    rate = dropped / epochs  # 1/45 = 0.022 for every example if the drop is uniform
    assert rate.max() < 0.045 and rate[-5:].mean() < 0.04


def test_bucketing_reduces_padding_and_keeps_every_example():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=2000)

    def padding(plan):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in plan)

    plain = epoch_plan(lengths, 32, seed=0, epoch=0)
    bucketed = epoch_plan(lengths, 32, seed=0, epoch=0, bucket_pool=50)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(2000))
    assert padding(bucketed) < 0.1 * padding(plain)
    # Sorted within pools of 50 batches (2 here), not over the whole epoch: batches of the two
    # pools overlap in length (a global sort gives disjoint length ranges), and the batch order
    # is shuffled (unshuffled, the first pool's 50 batches come shortest first).
    low, high = (np.array([f(lengths[b]) for b in bucketed]) for f in (np.min, np.max))
    overlap = (low[:, None] < high[None, :]) & (low[None, :] < high[:, None])
    assert np.any(overlap & ~np.eye(len(bucketed), dtype=bool))
    assert np.any(np.diff(high[:50]) < 0)
    evaluation = sorted_eval_batches(lengths, 32)
    # Decreasing length, ties in index order (Python's sort is stable): the same every run.
    assert np.concatenate(evaluation).tolist() == sorted(range(2000), key=lambda i: -lengths[i])
    assert [len(b) for b in evaluation] == [32] * 62 + [16]


@pytest.mark.parametrize("bucket_pool, drop", [(None, True), (2, False), (2, True)])
def test_an_unshuffled_plan_is_the_brute_force_order(bucket_pool, drop):
    """shuffle=False: the examples in order (drop_remainder drops the last ones), each window
    of bucket_pool batches sorted by length (ties in order), batches in order, any epoch."""
    lengths = np.array([5, 3, 9, 3, 1, 7, 2, 8, 6, 4, 3])
    order = list(range(len(lengths) - (len(lengths) % 3 if drop else 0)))
    if bucket_pool:
        window = bucket_pool * 3
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda i: lengths[i])
        ]
    want = [order[i : i + 3] for i in range(0, len(order), 3)]
    for epoch in (0, 1):
        plan = epoch_plan(lengths, 3, 5, epoch, False, bucket_pool, drop)
        assert [b.tolist() for b in plan] == want


def test_iterator_resumes_exactly_from_its_state_dict():
    examples = _examples(45)
    reference = BatchIterator(examples, 4, seed=7, bucket_pool=3)
    stream = repeat_epochs(reference)
    expected = [next(stream) for _ in range(30)]  # crosses two epoch boundaries (12 per epoch)

    interrupted = BatchIterator(examples, 4, seed=7, bucket_pool=3)
    it = repeat_epochs(interrupted)
    first = [next(it) for _ in range(17)]
    state = interrupted.state_dict()
    assert state == {"seed": 7, "epoch": 1, "batch_index": 5}
    resumed = BatchIterator(examples, 4, seed=0, bucket_pool=3)
    resumed.load_state_dict(state)
    it = repeat_epochs(resumed)
    rest = [next(it) for _ in range(13)]
    for got, want in zip(first + rest, expected, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match="missing"):
        resumed.load_state_dict({"epoch": 0})


@pytest.mark.parametrize("n", [1003, 115, 116])  # rows of 250, 28, 29 tokens: 5, 0, 1 mod 7
def test_lm_stream_matches_the_zaremba_reader_formula(n):
    ids = np.arange(1000, 1000 + n)
    batch_size, steps = 4, 7
    stream = LMStream(ids, batch_size, steps)
    row_length = len(ids) // batch_size
    # as many batches as fit a row with their targets (one token past the inputs), no fewer
    assert len(stream) * steps + 1 <= row_length < (len(stream) + 1) * steps + 1
    batches = list(stream)
    assert all(b[k].shape == (batch_size, steps) for b in batches for k in ("inputs", "targets"))
    assert len(batches) == len(stream) and stream.state_dict() == {"epoch": 1, "batch_index": 0}
    for i, batch in enumerate(batches):
        for b in range(batch_size):
            for t in range(steps):
                assert batch["inputs"][b, t] == ids[b * row_length + i * steps + t]
                assert batch["targets"][b, t] == ids[b * row_length + i * steps + t + 1]
    # Row b continues across batches: that is why the hidden state can be carried over.
    joined = np.concatenate([b["inputs"] for b in batches], axis=1)
    for b in range(batch_size):
        np.testing.assert_array_equal(
            joined[b], ids[b * row_length : b * row_length + joined.shape[1]]
        )


def test_lm_stream_resume_and_errors():
    ids = np.arange(500)
    stream = LMStream(ids, 3, 5)
    list(stream)  # one whole epoch
    it = iter(stream)
    next(it), next(it)
    state = stream.state_dict()
    assert state == {"epoch": 1, "batch_index": 2}
    resumed = LMStream(ids, 3, 5)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    np.testing.assert_array_equal(next(iter(resumed))["inputs"], stream.batch(2)["inputs"])
    with pytest.raises(ValueError, match="too short"):
        LMStream(np.arange(10), 4, 5)
    with pytest.raises(ValueError, match="1-D"):
        LMStream(np.zeros((2, 3)), 1, 1)


@pytest.mark.parametrize(
    "n, batch_size, steps, context",
    [
        (2, 1, 1, 0),
        (11, 8, 3, 0),
        (100, 4, 7, 0),
        (1003, 4, 7, 0),
        (57, 8, 35, 0),
        (11, 8, 3, 5),
        (100, 4, 7, 10),
        (1003, 4, 7, 300),
        (57, 8, 35, 35),
        (2, 3, 1, 3),  # more rows than targets: rows 1 and 2 read nothing
        (11, 8, 2, 256),  # a short last row read from far back
    ],
)
def test_lm_eval_stream_scores_every_target_once_in_contiguous_rows(n, batch_size, steps, context):
    """Brute force: each (input, target) pair of weight 1 is (ids[p], ids[p + 1]); together
    they are every p in [0, n - 1) exactly once; each row reads consecutive positions across
    batches (so a carried state sees the row's text in order), from a zero state at its first
    column, and that first column is min(context, p) positions before the row's first scored
    p; after the row's last scored target only padding (0, weight 0) follows; no batch is
    all padding (the stream ends at the last scored column of any row)."""
    ids = np.arange(5000, 5000 + n)  # value - 5000 = position
    stream = LMEvalStream(ids, batch_size, steps, context=context)
    batches = list(stream)
    assert len(batches) == len(stream) and all(
        b["inputs"].shape == (batch_size, steps) for b in batches
    )
    inputs, targets, weights = (
        np.concatenate([b[k] for b in batches], 1) for k in ("inputs", "targets", "weights")
    )
    assert set(np.unique(weights)) <= {0.0, 1.0} and weights.sum() == n - 1
    assert all(b["weights"].sum() > 0 for b in batches)
    real = weights == 1.0
    positions = inputs[real] - 5000
    assert sorted(positions.tolist()) == list(range(n - 1))
    np.testing.assert_array_equal(targets[real], inputs[real] + 1)
    for b in range(batch_size):
        read = inputs[b] != 0
        width = int(read.sum())
        assert read[:width].all() and not read[width:].any()  # padding only at the end
        assert not targets[b][width:].any() and not real[b][width:].any()
        row = inputs[b][:width] - 5000
        np.testing.assert_array_equal(np.diff(row), np.ones(max(width - 1, 0)))
        np.testing.assert_array_equal(targets[b][:width], inputs[b][:width] + 1)
        if real[b].any():
            first_scored = int(np.argmax(real[b]))
            assert first_scored == min(context, int(row[first_scored]))  # the history read
            assert real[b][first_scored:width].all()  # scored through to the row's end
        else:
            assert width == 0


def test_lm_eval_stream_context_costs_only_the_extra_columns():
    """1000 targets in 4 rows of 250: context 40 widens every row by 40 columns, no more."""
    plain = LMEvalStream(np.arange(1001), 4, 10)
    wide = LMEvalStream(np.arange(1001), 4, 10, context=40)
    assert (len(plain), len(wide)) == (25, 29)


def test_lm_eval_stream_errors():
    with pytest.raises(ValueError, match=">= 2 tokens"):
        LMEvalStream(np.arange(1), 1, 1)
    with pytest.raises(ValueError, match="1-D"):
        LMEvalStream(np.zeros((2, 3)), 1, 1)
    with pytest.raises(ValueError, match="batch_size=0 must be a positive int"):
        LMEvalStream(np.arange(10), 0, 3)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="context="):
            LMEvalStream(np.arange(10), 2, 3, context=bad)


@pytest.mark.parametrize(
    "position", [{"epoch": 0, "batch_index": -1}, {"epoch": -1, "batch_index": 0}]
)
def test_an_iterator_state_outside_the_data_is_refused(position):
    """A negative batch index resumed at the epoch's last batch (plan[-1]) and one past the
    end skipped the rest of the epoch; a corrupt state must not resume silently."""
    examples = [{"inputs": np.arange(n + 1)} for n in range(10)]
    iterator = BatchIterator(examples, 4, collate=list, seed=0)
    stream = LMStream(np.arange(101), batch_size=2, num_steps=5)
    for data, extra in ((iterator, {"seed": 0}), (stream, {})):
        with pytest.raises(ValueError, match="outside this data"):
            data.load_state_dict({**position, **extra})
        with pytest.raises(ValueError, match="outside this data"):
            data.load_state_dict({"epoch": 0, "batch_index": len(data) + 1, **extra})
        data.load_state_dict({"epoch": 1, "batch_index": len(data), **extra})  # epoch's end


def test_bad_arguments_are_refused_naming_the_value():
    one = [{"inputs": np.arange(3)}]
    cases = [
        (lambda: pad_batch(one, time_multiple=0), "time_multiple=0 must be a positive int"),
        (lambda: pad_batch([{"inputs": np.arange(0)}]), "field 'inputs' has an empty sequence"),
        (lambda: epoch_plan(np.arange(5), 0, 0, 0), "batch_size=0 must be a positive int"),
        (lambda: epoch_plan(np.arange(5), 2, 0, 0, True, 0), "bucket_pool=0 must be None"),
        (lambda: BatchIterator([], 2), "no examples"),
        (lambda: BatchIterator(one, 2, length_key="x"), r"length_key='x' .*\['inputs'\]"),
        (lambda: LMStream(np.arange(50), 2, 0), "num_steps=0 must be a positive int"),
        (lambda: LMStream(np.arange(50), 2, 3).batch(8), r"index 8 is outside \[0, 8\)"),
        (lambda: LMEvalStream(np.arange(50), 2, 3).batch(-1), r"index -1 is outside \[0, 9\)"),
        (lambda: LMStream(np.arange(50), 2, 3).load_state_dict({"epoch": 0}), "'batch_index'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # a field outside length_fields may be empty: it is padded to width 0, not refused
    assert pad_batch([{"inputs": np.arange(0)}], length_fields=())["inputs"].shape == (1, 0)


@pytest.mark.parametrize("stream", [LMStream, LMEvalStream])
def test_lm_streams_refuse_ids_that_are_not_int32_token_ids(stream):
    """`astype(np.int32)` read float ids 0.7, 1.9 as 0, 1, bools as 0/1 and an id of 2**31 + 5
    as a negative one, silently."""
    good = stream(np.arange(20, dtype=np.int64), 2, 3)
    assert good.batch(0)["inputs"].dtype == np.int32
    for ids, message in [
        (np.linspace(0.7, 9.7, 20), "integer token ids, got dtype float64"),
        (np.arange(20) % 2 == 0, "integer token ids, got dtype bool"),
        (np.arange(20) + 2**31 - 10, r"in \[0, 2\*\*31\)"),
        (np.arange(20) - 1, r"got -1\.\.18"),
        (np.zeros((4, 5), np.int32), "1-D token stream"),
    ]:
        with pytest.raises(ValueError, match=message):
            stream(ids, 2, 3)


def test_pad_batch_refuses_examples_of_other_keys_or_ranks_and_sizes_that_are_not_integers():
    """A key of a later example only was dropped silently, a key it lacked a bare KeyError, a
    2-D field numpy's broadcast error; batch_size=True ran as 1, and 2.0 failed later (LMStream
    at len()) naming no argument."""
    a, b = {"inputs": np.array([1, 2])}, {"inputs": np.array([3])}
    with pytest.raises(ValueError, match=r"example 1 has keys \['inputs', 'x'\]; example 0"):
        pad_batch([a, {**b, "x": np.array([1])}])
    with pytest.raises(ValueError, match=r"example 1 has keys \['inputs'\]; example 0 has"):
        pad_batch([{**a, "x": 1}, b])
    with pytest.raises(ValueError, match=r"example 1's 'inputs' has shape \(1, 2\); expected"):
        pad_batch([a, {"inputs": np.ones((1, 2), np.int32)}])
    ids = np.arange(50, dtype=np.int32)
    for size in (True, 2.0, 0):
        message = rf"batch_size={size!r} must be a positive int"
        for call, args in (
            (epoch_plan, (np.ones(4), size, 0, 0)),
            (sorted_eval_batches, (np.ones(4), size)),
            (LMStream, (ids, size, 3)),
            (LMEvalStream, (ids, size, 3)),
        ):
            with pytest.raises(ValueError, match=message):
                call(*args)
    with pytest.raises(ValueError, match=r"num_steps=2.5 must be a positive int"):
        LMStream(ids, 2, 2.5)
    assert len(LMStream(ids, np.int64(2), np.int64(3))) == 8  # NumPy integers are integers
