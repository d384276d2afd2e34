"""Metrics: conlleval span rules on hand-worked cases, accuracy, perplexity, BLEU, schedules."""

import math

import jax
import numpy as np
import pytest

from rnn_jax import metrics, scheduled_sampling


@pytest.mark.parametrize(
    "tags, scheme, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "IOB2", {("PER", 0, 2), ("LOC", 3, 4)}),
        # conlleval: an I- after O starts a chunk; a type change splits a chunk.
        (["O", "I-ORG", "I-ORG", "I-LOC"], "IOB2", {("ORG", 1, 3), ("LOC", 3, 4)}),
        (["B-PER", "B-PER", "I-PER"], "BIO", {("PER", 0, 1), ("PER", 1, 3)}),
        (["I-MISC", "B-MISC", "O"], "IOB1", {("MISC", 0, 1), ("MISC", 1, 2)}),
        (
            ["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "O"],
            "IOBES",
            {
                ("PER", 0, 1),
                ("LOC", 1, 4),
                ("LOC", 4, 5),
            },
        ),
        (["B-LOC", "E-LOC", "I-LOC"], "IOBES", {("LOC", 0, 2), ("LOC", 2, 3)}),
        (["O", "O"], "IOB2", set()),
    ],
)
def test_extract_spans_follows_conlleval(tags, scheme, expected):
    assert metrics.extract_spans(tags, scheme) == expected


def test_span_f1_counts():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-MISC"]]
    # gold 3 spans, predicted 3 spans, 2 correct.
    result = metrics.span_f1(gold, predicted)
    assert result["precision"] == pytest.approx(200 / 3)
    assert result["recall"] == pytest.approx(200 / 3)
    assert result["f1"] == pytest.approx(200 / 3)


def test_bad_tags_and_schemes_raise():
    with pytest.raises(ValueError, match="not a valid IOB2 tag"):
        metrics.extract_spans(["S-PER"], "IOB2")
    with pytest.raises(ValueError, match="scheme"):
        metrics.extract_spans(["O"], "BILOU")
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.span_f1([["O"]], [["O", "O"]])


def test_token_accuracy_ignores_padding():
    predictions = np.array([[1, 2, 3], [1, 0, 0]])
    targets = np.array([[1, 2, 0], [2, 5, 5]])
    mask = np.array([[True, True, True], [True, False, False]])
    assert metrics.token_accuracy(predictions, targets, mask) == pytest.approx(2 / 4)


def test_token_accuracy_takes_pad_batch_float_mask_and_nonbinary_int_mask():
    from rnn_jax.data.batching import pad_batch

    sentences = [([4, 5, 6], [1, 2, 0]), ([7], [2])]
    batch = pad_batch([{"inputs": np.array(x), "targets": np.array(y)} for x, y in sentences])
    assert batch["mask"].dtype == np.float32  # the project's mask, which `&` refused
    predictions = np.array([[1, 2, 3], [1, 9, 9]])
    # the reference: a loop over the real tokens of each sentence
    hits = [
        p == t
        for (_, tags), row in zip(sentences, predictions, strict=True)
        for p, t in zip(row[: len(tags)], tags, strict=True)
    ]
    expected = sum(hits) / len(hits)  # 2 of 4
    assert metrics.token_accuracy(predictions, batch["targets"], batch["mask"]) == expected
    # an int mask with weight 2 on real tokens: True & 2 == 0 counted the hits as misses
    int_mask = (2 * batch["mask"]).astype(np.int32)
    assert metrics.token_accuracy(predictions, batch["targets"], int_mask) == expected


def test_perplexity_of_uniform_model_is_vocab_size():
    vocab, tokens = 37, 100
    assert metrics.perplexity(tokens * math.log(vocab), tokens) == pytest.approx(vocab)
    assert metrics.bits_per_char(tokens * math.log(2.0) * 3, tokens) == pytest.approx(3.0)


def test_bleu_extremes_and_hand_computed_case():
    refs = ["the cat sat on the mat", "a dog runs in the park"]
    assert metrics.corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.corpus_bleu(["x y z w", "q r s t"], refs) == pytest.approx(0.0)
    # One sentence, 4-gram precisions 5/6, 3/5, 2/4, 1/3, hypothesis as long as the reference.
    hyp, ref = "the cat sat on a mat", "the cat sat on the mat"
    expected = 100 * math.exp(np.mean(np.log([5 / 6, 3 / 5, 2 / 4, 1 / 3])))
    assert metrics.corpus_bleu([hyp], [ref]) == pytest.approx(expected, rel=1e-4)


def test_schedules_follow_bengio_et_al():
    steps = np.array([0, 10, 100, 1000])
    linear = scheduled_sampling.teacher_forcing_schedule("linear", k=1.0, c=0.002, minimum=0.1)
    np.testing.assert_allclose(linear(steps), np.maximum(0.1, 1.0 - 0.002 * steps), rtol=1e-6)
    exponential = scheduled_sampling.teacher_forcing_schedule("exponential", k=0.99)
    np.testing.assert_allclose(exponential(steps), 0.99**steps, rtol=1e-5)
    inverse = scheduled_sampling.teacher_forcing_schedule("inverse_sigmoid", k=50.0)
    np.testing.assert_allclose(inverse(steps), 50 / (50 + np.exp(steps / 50)), rtol=1e-5)
    assert np.all(np.diff(inverse(steps)) < 0)
    with pytest.raises(ValueError, match="inverse_sigmoid"):
        scheduled_sampling.teacher_forcing_schedule("inverse_sigmoid", k=0.5)
    with pytest.raises(ValueError, match="schedule name"):
        scheduled_sampling.teacher_forcing_schedule("cosine")


def test_choose_decoder_inputs_extremes_and_rate():
    gold, predicted = np.zeros(20000, np.int32), np.ones(20000, np.int32)
    key = jax.random.key(0)
    np.testing.assert_array_equal(
        scheduled_sampling.choose_decoder_inputs(gold, predicted, 1.0, key), gold
    )
    np.testing.assert_array_equal(
        scheduled_sampling.choose_decoder_inputs(gold, predicted, 0.0, key), predicted
    )
    mixed = scheduled_sampling.choose_decoder_inputs(gold, predicted, 0.3, key)
    assert abs(float(np.mean(np.asarray(mixed) == 0)) - 0.3) < 0.02
    with pytest.raises(ValueError, match="rng is required"):
        scheduled_sampling.choose_decoder_inputs(gold, predicted, 0.5, None)


@pytest.mark.parametrize("scheme", ["IOB2", "IOBES"])
def test_jax_span_counts_match_the_python_conlleval_rules(scheme):
    types = ["PER", "LOC"]
    prefixes = "BIES" if scheme == "IOBES" else "BI"
    tags = ["<pad>", "O"] + [f"{p}-{t}" for t in types for p in prefixes]
    rng = np.random.default_rng(0)
    batch, time = 64, 9
    gold = rng.integers(1, len(tags), size=(batch, time))
    # Predictions agree with gold most of the time, so there are correct spans to count.
    predicted = np.where(
        rng.random((batch, time)) < 0.7, gold, rng.integers(1, len(tags), (batch, time))
    )
    lengths = rng.integers(1, time + 1, size=batch)
    gold = np.where(np.arange(time)[None] < lengths[:, None], gold, 0)
    prefix_table, type_table = metrics.tag_tables(tags, scheme)
    counts = jax.jit(metrics.span_counts)(gold, predicted, lengths, prefix_table, type_table)
    gold_sentences = [[tags[i] for i in row[:n]] for row, n in zip(gold, lengths, strict=True)]
    predicted_sentences = [
        [tags[i] for i in row[:n]] for row, n in zip(predicted, lengths, strict=True)
    ]
    reference = metrics.span_f1(gold_sentences, predicted_sentences, scheme)
    ours = metrics.f1_from_counts(
        float(counts["correct_spans"]),
        float(counts["gold_spans"]),
        float(counts["predicted_spans"]),
    )
    assert counts["correct_spans"] > 10
    for key in ("precision", "recall", "f1"):
        assert ours[key] == pytest.approx(reference[key], rel=1e-9), key
