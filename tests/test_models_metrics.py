"""Metrics: conlleval span rules on hand-worked cases and against a transcription of the
script, accuracy, perplexity, BLEU statistics against sacrebleu, schedules, tag tables."""

import math

import jax
import numpy as np
import pytest

from rnn_jax import metrics, scheduled_sampling
from rnn_jax.bleu import bleu_from_statistics, bleu_statistics, corpus_bleu


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
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG"], []]
    # A predicted I- after O opens a chunk (gold's LOC); ORG cut short, MISC spurious.
    predicted = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "B-MISC"], []]
    # gold 3 spans, predicted 4, 2 correct: P 50 and R 66.7 differ, so a swap would show.
    result = metrics.span_f1(gold, predicted)
    assert result["precision"] == pytest.approx(50.0)
    assert result["recall"] == pytest.approx(200 / 3)
    assert result["f1"] == pytest.approx(2 * 50 * (200 / 3) / (50 + 200 / 3))


def test_bad_tags_and_schemes_raise():
    with pytest.raises(ValueError, match="not a valid IOB2 tag"):
        metrics.extract_spans(["S-PER"], "IOB2")
    with pytest.raises(ValueError, match="scheme"):
        metrics.extract_spans(["O"], "BILOU")
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.span_f1([["O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="gold has 1 sentences but predicted has 0"):
        metrics.span_f1([["O"]], [])
    with pytest.raises(ValueError, match=r"scheme must be one of .*, got 'BILOU'"):
        metrics.tag_tables(["O"], "BILOU")


def test_token_accuracy_ignores_padding():
    # Padding predicted as the pad id (0 == 0): counted as hits, the accuracy would be 4/4.
    predictions = np.array([[1, 2, 3], [1, 0, 0]])
    targets = np.array([[1, 2, 0], [2, 0, 0]])
    mask = np.array([[True, True, True], [True, False, False]])
    assert metrics.token_accuracy(predictions, targets, mask) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match=r"must share a shape, got \(2, 3\), \(2, 3\), \(2, 2\)"):
        metrics.token_accuracy(predictions, targets, mask[:, :2])


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
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["x y z w", "q r s t"], refs) == pytest.approx(0.0)
    # One sentence, 4-gram precisions 5/6, 3/5, 2/4, 1/3, hypothesis as long as the reference.
    hyp, ref = "the cat sat on a mat", "the cat sat on the mat"
    expected = 100 * math.exp(np.mean(np.log([5 / 6, 3 / 5, 2 / 4, 1 / 3])))
    assert corpus_bleu([hyp], [ref]) == pytest.approx(expected, rel=1e-4)
    # `tokenize` reaches sacrebleu: 13a splits off the final '.', 'none' keeps "mat." a word.
    assert corpus_bleu([ref + "."], [ref + " ."]) == pytest.approx(100.0)
    assert corpus_bleu([ref + "."], [ref + " ."], tokenize="none") < 70.0


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


def test_tag_tables_refuses_tags_extract_spans_refuses():
    """tag_tables read any tag without '-' as O ('PER', 'B', ''), so the jitted span counts
    scored a tag set that span_f1 refused; now both raise the same error. A vocabulary's
    specials in angle brackets ('<pad>') still count as O."""
    for tag, scheme in (("PER", "IOB2"), ("B", "IOB1"), ("", "IOBES"), ("<pad", "IOB2")):
        with pytest.raises(ValueError) as spans_error:
            metrics.extract_spans(["B-LOC", tag], scheme)
        with pytest.raises(ValueError) as tables_error:
            metrics.tag_tables(["<pad>", tag], scheme)
        assert str(tables_error.value) == str(spans_error.value)
        assert f"tag {tag!r} at position 1 is not a valid {scheme} tag" in str(spans_error.value)
    prefixes, types = metrics.tag_tables(["<pad>", "O", "B-PER", "I-PER", "</s>", "S-LOC"], "IOBES")
    assert prefixes.tolist() == [0, 0, 1, 2, 0, 4] and types.tolist() == [0, 0, 1, 1, 0, 2]


def _parse(tag):
    prefix, sep, kind = tag.partition("-")
    return (prefix, kind) if sep else (tag, "")


def _end_of_chunk(prev_tag, tag, prev_type, kind):
    end = prev_tag in ("E", "S")
    end |= (prev_tag, tag) in {("B", "B"), ("B", "S"), ("B", "O")}
    end |= (prev_tag, tag) in {("I", "B"), ("I", "S"), ("I", "O")}
    return end or (prev_tag not in ("O", ".") and prev_type != kind)


def _start_of_chunk(prev_tag, tag, prev_type, kind):
    start = tag in ("B", "S")
    start |= (prev_tag, tag) in {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I")}
    start |= (prev_tag, tag) in {("O", "E"), ("O", "I")}
    return start or (tag not in ("O", ".") and prev_type != kind)


def _conlleval_counts(gold, predicted):
    """(correct, gold, predicted) chunk counts as conlleval counts them over a corpus whose
    sentences are separated by boundary lines (tags O O)."""
    lines = []
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        lines += list(zip(gold_tags, predicted_tags, strict=True)) + [("O", "O")]
    correct = found_gold = found_predicted = 0
    in_correct = False
    last_c, last_ct, last_g, last_gt = "O", "", "O", ""
    for gold_tag, predicted_tag in lines:
        c, ct = _parse(gold_tag)
        g, gt = _parse(predicted_tag)
        end_c, end_g = _end_of_chunk(last_c, c, last_ct, ct), _end_of_chunk(last_g, g, last_gt, gt)
        start_c = _start_of_chunk(last_c, c, last_ct, ct)
        start_g = _start_of_chunk(last_g, g, last_gt, gt)
        if in_correct:
            if end_c and end_g and last_gt == last_ct:
                in_correct, correct = False, correct + 1
            elif end_c != end_g or gt != ct:
                in_correct = False
        in_correct |= start_c and start_g and gt == ct
        found_gold += start_c
        found_predicted += start_g
        last_c, last_ct, last_g, last_gt = c, ct, g, gt
    return correct, found_gold, found_predicted


def test_chunking_matches_conlleval_on_random_and_invalid_tag_sequences():
    """IOB1 (I- opens a chunk, B- only between same-type chunks), IOB2 and IOBES with every
    invalid order (E- or I- without B-, B- B-, S- then E-), type changes, a type with a
    hyphen, 'O-A' and non-chunk tags inside sentences; extract_spans and span_counts (jit, padded
    batch, lengths 0..time) against the transcription, on the same sentences."""
    rng = np.random.default_rng(0)
    batch, time = 48, 7
    counts = jax.jit(metrics.span_counts)
    for scheme, prefixes in (("IOB1", "BI"), ("IOB2", "BI"), ("IOBES", "BIES")):
        chunk_tags = [f"{p}-{t}" for t in ("A", "B-C") for p in prefixes]
        # Same table size for every scheme (one compilation); '<s>' etc. count as O, and
        # conlleval reads 'O-A' as an O that carries a type.
        tags = ["<pad>", "O", *chunk_tags, "O-A", "<s>", "</s>", "<unk>", "O"][:11]
        gold = rng.integers(1, len(tags), (batch, time))
        noise = rng.integers(1, len(tags), (batch, time))
        predicted = np.where(rng.random((batch, time)) < 0.6, gold, noise)
        lengths = rng.integers(0, time + 1, batch)
        lengths[:2] = 0, time

        gold_tags, predicted_tags = (
            [
                ["O" if tags[i].startswith("<") else tags[i] for i in row[:n]]
                for row, n in zip(ids, lengths, strict=True)
            ]
            for ids in (gold, predicted)
        )
        expected = _conlleval_counts(gold_tags, predicted_tags)
        ours = [0, 0, 0]
        for g, p in zip(gold_tags, predicted_tags, strict=True):
            gold_spans, predicted_spans = (
                metrics.extract_spans(g, scheme),
                metrics.extract_spans(p, scheme),
            )
            ours = [
                ours[0] + len(gold_spans & predicted_spans),
                ours[1] + len(gold_spans),
                ours[2] + len(predicted_spans),
            ]
        assert tuple(ours) == expected, scheme
        assert expected[0] > 10 and expected[1] > expected[0], scheme  # not vacuous
        table = metrics.tag_tables(tags, scheme)
        jitted = counts(gold, predicted, lengths, *table)
        assert (
            int(jitted["correct_spans"]),
            int(jitted["gold_spans"]),
            int(jitted["predicted_spans"]),
        ) == expected, scheme


def test_prefixes_that_are_not_one_letter_of_the_scheme_are_refused():
    """`prefix in "BIO"` took "", "BI" and "IO" (substrings): extract_spans read "BI-PER" as
    some chunk tag and tag_tables died with a bare KeyError."""
    for tag, scheme in (("BI-PER", "IOB2"), ("-PER", "IOB1"), ("IO-X", "IOB2"), ("ES-X", "IOBES")):
        with pytest.raises(ValueError, match=f"tag '{tag}' at position 1 is not a valid {scheme}"):
            metrics.extract_spans(["B-PER", tag, "I-PER"], scheme)
        with pytest.raises(ValueError, match=f"tag '{tag}' at position 1"):
            metrics.tag_tables(["O", tag], scheme)
    assert metrics.extract_spans(["S-X", "B-Y", "E-Y"], "IOBES") == {("X", 0, 1), ("Y", 1, 3)}


def test_bleu_statistics_equal_sacrebleu_segment_statistics_on_ragged_shapes():
    """Empty references and hypotheses, padded widths shorter than max_order, orders 1..5, a
    three-word vocabulary (repeated n-grams, clipping)."""
    bleu = pytest.importorskip("sacrebleu.metrics").BLEU
    statistics = jax.jit(bleu_statistics, static_argnames="max_order")
    rng = np.random.default_rng(2)
    for hyp_time, ref_time, order in ((1, 3, 4), (5, 2, 2), (6, 6, 5), (3, 1, 1)):
        batch = 6
        hyp = rng.integers(0, 3, (batch, hyp_time))
        ref = rng.integers(0, 3, (batch, ref_time))
        hyp_len = rng.integers(0, hyp_time + 1, batch)
        ref_len = rng.integers(0, ref_time + 1, batch)
        hyp_len[0], ref_len[1] = 0, 0
        matches, totals = map(np.asarray, statistics(hyp, hyp_len, ref, ref_len, max_order=order))
        reference = bleu(tokenize="none", force=True, max_ngram_order=order)
        for b in range(batch):
            text = [
                " ".join(f"w{t}" for t in row[:n])
                for row, n in ((hyp[b], hyp_len[b]), (ref[b], ref_len[b]))
            ]
            stats = reference._extract_corpus_statistics([text[0]], [[text[1]]])[0]
            assert stats[:2] == [hyp_len[b], ref_len[b]]
            assert list(matches[b]) == stats[2 : 2 + order], text
            assert list(totals[b]) == stats[2 + order :], text
        # The corpus score at orders other than 4 (max_ngram_order follows the statistics).
        summed = [int(hyp_len.sum()), int(ref_len.sum()), *matches.sum(0), *totals.sum(0)]
        score = bleu_from_statistics(matches.sum(0), totals.sum(0), *summed[:2])
        assert score == pytest.approx(reference._compute_score_from_stats(summed).score, abs=1e-9)


def test_perplexity_and_bits_per_char_convert_and_refuse_nan_or_infinite_counts():
    total, count = 1234.5678, 1000
    assert metrics.perplexity(total, count) == pytest.approx(math.exp(total / count), rel=1e-15)
    assert metrics.bits_per_char(total, count) == pytest.approx(
        total / count / math.log(2), rel=1e-15
    )
    assert 2 ** metrics.bits_per_char(total, count) == pytest.approx(
        metrics.perplexity(total, count), rel=1e-12
    )
    assert metrics.perplexity(np.float32(800.0)) == math.inf  # overflow, recorded as inf
    assert math.isnan(metrics.perplexity(math.nan, 3))  # a diverged model's NaN loss is kept
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="num_tokens must be a finite number > 0"):
            metrics.perplexity(1.0, bad)
        with pytest.raises(ValueError, match="num_chars must be a finite number > 0"):
            metrics.bits_per_char(1.0, bad)


def test_provenance_git_dirty_follows_the_status_output(monkeypatch):
    """rnn_jax.train.metrics: a clean tree (empty `git status --porcelain`) is not dirty."""
    from rnn_jax.train import metrics as run_metrics

    for status, dirty in (("", False), (" M rnn_jax/metrics.py", True)):
        answers = {"status": status, "rev-parse": "0" * 40}
        monkeypatch.setattr(run_metrics, "_git", lambda repo, c, *a, d=answers: d[c])
        record = run_metrics.provenance()
        assert record["git_dirty"] is dirty and record["git_sha"] == "0" * 40
