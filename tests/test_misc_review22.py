"""Review 22 of the small pieces: conlleval chunking against a transcription of the script,
BLEU counts against sacrebleu, perplexity/bits, parameter counting and sizing, predicates,
atomic writes, the CPU description, the allocator switch and loop-body counting."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import allocator, hardware, loop_ops, metrics
from rnn_jax.files import write_text_atomic
from rnn_jax.models.params import count_params, match_size
from rnn_jax.predicates import is_finite_number

# --- conlleval -------------------------------------------------------------------------------
# A transcription of conlleval's startOfChunk / endOfChunk and its inCorrect state machine,
# with the IOBES additions (E/S) of the Python ports (E or S closes a chunk; S opens one).


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


# --- BLEU, perplexity, bits -------------------------------------------------------------------


def test_bleu_statistics_equal_sacrebleu_segment_statistics_on_ragged_shapes():
    """Empty references and hypotheses, padded widths shorter than max_order, orders 1..5, a
    three-word vocabulary (repeated n-grams, clipping)."""
    bleu = pytest.importorskip("sacrebleu.metrics").BLEU
    statistics = jax.jit(metrics.bleu_statistics, static_argnames="max_order")
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


# --- parameters -------------------------------------------------------------------------------


class _Stateful(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, width, rngs=rngs)  # 3 * width + width
        self.norm = nnx.BatchNorm(width, rngs=rngs)  # 2 * width params, 2 * width statistics
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.rngs = rngs
        self.cache = nnx.Cache(jnp.zeros((7,)))


def test_count_params_counts_only_params_in_modules_and_pytrees_of_them():
    """A list of models or `nnx.split`'s state counted their batch statistics, RNG keys and
    counts and caches too (45 instead of 24 here)."""
    model = _Stateful(4, nnx.Rngs(0, dropout=1))
    expected = 3 * 4 + 4 + 2 * 4
    assert count_params(model) == expected
    assert count_params(nnx.eval_shape(lambda: _Stateful(4, nnx.Rngs(0)))) == expected
    assert count_params([model, model.linear]) == expected + 16
    assert count_params({"model": model}) == expected
    assert count_params(nnx.split(model)[1]) == expected
    assert count_params(nnx.state(model)) == expected
    assert count_params({"w": np.zeros((2, 3)), "b": np.zeros(3), "s": 1.0}) == 10


def test_match_size_returns_the_brute_force_closest_width_within_tolerance():
    def build(width):  # counts with uneven steps: width * (width // 3 + 1) + width // 3 + 1
        return nnx.Linear(width, width // 3 + 1, rngs=nnx.Rngs(0))

    counts = {w: count_params(nnx.eval_shape(lambda w=w: build(w))) for w in range(1, 25)}
    assert counts[24] == 24 * 9 + 9
    rng = np.random.default_rng(0)
    for target in rng.integers(1, 260, 6):
        for multiple in (1, 5):
            widths = [w for w in counts if w % multiple == 0]
            best = min(widths, key=lambda w: (abs(counts[w] - target), w))
            found = match_size(
                build, int(target), low=1, high=24, tolerance=0.9, multiple_of=multiple
            )
            assert found == (best, counts[best]), (target, multiple)
    # The tolerance is relative and inclusive: count 96 (width 15) is 4% from 100.
    assert match_size(build, 100, low=13, high=15, tolerance=0.04) == (15, 96)
    with pytest.raises(ValueError, match="closest is width 15 with 96 params"):
        match_size(build, 100, low=13, high=15, tolerance=0.039)


# --- predicates, files, hardware, allocator ---------------------------------------------------


def test_is_finite_number_refuses_complex_and_answers_for_huge_ints():
    """np.complex128(1+5j) passed (math.isfinite drops the imaginary part, with a warning);
    an int beyond a float's range raised OverflowError instead of answering."""
    assert not is_finite_number(np.complex128(1 + 5j))
    assert not is_finite_number(np.complex64(2))
    assert not is_finite_number(np.array(1 + 0j))
    assert is_finite_number(10**400)
    assert not is_finite_number(np.array(np.nan)) and not is_finite_number(jnp.array(-np.inf))
    assert is_finite_number(np.array(3, np.int8)) and is_finite_number(jnp.bfloat16(1.5))


def test_atomic_write_leaves_the_old_file_and_no_temporary_when_it_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the file is open
        write_text_atomic(path, "new \ud800")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):  # fails at the rename
        write_text_atomic(tmp_path / "dir", "text")
    assert sorted(os.listdir(tmp_path)) == ["dir", "results.json"]
    write_text_atomic(path, "néw")
    assert path.read_text(encoding="utf-8") == "néw"
    assert sorted(os.listdir(tmp_path)) == ["dir", "results.json"]


def test_cpu_description_reads_cpuinfo_that_is_not_utf8(tmp_path):
    """A model string in Latin-1 raised UnicodeDecodeError, which stopped every run's
    provenance; a model name holding ':' and an empty one are read as they are."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_bytes(b"processor\t: 0\nmodel name\t: Caf\xe9 CPU\nflags\t\t: sse avx avx2\n")
    assert hardware.cpu_description(cpuinfo) == {"cpu_model": "Caf\ufffd CPU", "cpu_simd": "avx2"}
    cpuinfo.write_bytes(b"model name\t: Vendor: X1\nflags\t: sse4_2\n")
    assert hardware.cpu_description(cpuinfo) == {"cpu_model": "Vendor: X1", "cpu_simd": "sse4_2"}
    cpuinfo.write_bytes(b"model name\t:\nflags\t:\n")
    described = hardware.cpu_description(cpuinfo)
    assert described["cpu_model"] and described["cpu_simd"] is None


def test_allocator_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.retain_freed_memory(np.int64(1 << 20)) is False
    with pytest.raises(ValueError, match="needs glibc's mallopt"):
        allocator.configure("retain")
    with pytest.raises(ValueError, match="trim_threshold=True"):
        allocator.retain_freed_memory(True)


# --- loop_ops ---------------------------------------------------------------------------------
# Trimmed from XLA:CPU's text of `lax.scan` over a body that runs a `fori_loop` (jaxlib 0.10.2):
# the inner loop sits in a computation the outer body `call`s. Hand count, bookkeeping left out:
# inner body: copy.2, add_fusion, wrapped_add.1 (3); outer body: copy.16, copy.10, wrapped_add,
# slice_fusion, call, dus_fusion (6). `while.19` is a get-tuple-element named like a loop.
NESTED = """HloModule jit_f, is_scheduled=true

%fused_dus (param_0.2: f32[5,4], param_1.6: s32[], param_2.4: f32[4]) -> f32[5,4] {
  %param_0.2 = f32[5,4]{1,0} parameter(0)
  %param_2.4 = f32[4]{0} parameter(2)
  %bitcast.3 = f32[1,4]{1,0} bitcast(%param_2.4)
  %param_1.6 = s32[] parameter(1)
  %constant.24 = s32[] constant(0)
  ROOT %dynamic_update_slice.2 = f32[5,4]{1,0} dynamic-update-slice(%param_0.2, %bitcast.3, %param_1.6, %constant.24), metadata={op_name="jit(f)/while/body/dus"}
}

%fused_add (param_0.1: s32[], param_1.4: f32[4]) -> f32[4] {
  %param_1.4 = f32[4]{0} parameter(1)
  %sin.5 = f32[4]{0} sine(%param_1.4)
  ROOT %add.23 = f32[4]{0} add(%sin.5, %param_1.4)
}

%inner_body (arg_tuple.8: (s32[], f32[4], f32[4])) -> (s32[], f32[4], f32[4]) {
  %arg_tuple.8 = (s32[], f32[4]{0}, f32[4]{0}) parameter(0), metadata={op_name="jit(f)/while"}
  %constant.22 = s32[] constant(1)
  %get-tuple-element.66 = f32[4]{0} get-tuple-element(%arg_tuple.8), index=2
  %get-tuple-element.61 = s32[] get-tuple-element(%arg_tuple.8), index=0
  %copy.2 = s32[] copy(%get-tuple-element.61)
  %add_fusion = f32[4]{0} fusion(%copy.2, %get-tuple-element.66), kind=kLoop, calls=%fused_add
  %wrapped_add.1 = s32[] fusion(%copy.2, %constant.22), kind=kLoop, calls=%wrapped_add_computation
  ROOT %tuple.18 = (s32[], f32[4]{0}, f32[4]{0}) tuple(%wrapped_add.1, %add_fusion, %get-tuple-element.66)
}

%inner_loop (tuple.22: (s32[], f32[4], f32[4])) -> (s32[], f32[4], f32[4]) {
  %tuple.22 = (s32[], f32[4]{0}, f32[4]{0}) parameter(0)
  ROOT %while.10 = (s32[], f32[4]{0}, f32[4]{0}) while(%tuple.22), condition=%inner_cond, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
}

%outer_body (arg_tuple.5: (s32[], f32[4], f32[5,4], f32[5,4], f32[5,4], /*index=5*/f32[5,4])) -> (s32[], f32[4], f32[5,4], f32[5,4], f32[5,4], /*index=5*/f32[5,4]) {
  %arg_tuple.5 = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) parameter(0)
  %constant.1 = s32[] constant(0)
  %get-tuple-element.73 = f32[5,4]{1,0} get-tuple-element(%arg_tuple.5), index=2
  %get-tuple-element.71 = s32[] get-tuple-element(%arg_tuple.5), index=0
  %copy.16 = s32[] copy(%constant.1)
  %copy.10 = s32[] copy(%get-tuple-element.71)
  %wrapped_add = s32[] fusion(%copy.10, %constant.1), kind=kLoop, calls=%wrapped_add_computation
  %slice_fusion = f32[4]{0} fusion(%get-tuple-element.73, %copy.10), kind=kLoop, calls=%absent
  %tuple.16 = (s32[], f32[4]{0}, f32[4]{0}) tuple(%copy.16, %slice_fusion, %slice_fusion)
  %call = (s32[], f32[4]{0}, f32[4]{0}) call(%tuple.16), to_apply=%inner_loop, frontend_attributes={xla_cpu_small_call="true"}
  %get-tuple-element.76 = f32[4]{0} get-tuple-element(%call), index=1
  %dus_fusion = f32[5,4]{1,0} fusion(%get-tuple-element.73, %copy.10, %get-tuple-element.76), kind=kLoop, calls=%fused_dus
  ROOT %tuple.21 = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) tuple(%wrapped_add, %get-tuple-element.76, %dus_fusion, %get-tuple-element.73, %get-tuple-element.73, %get-tuple-element.73)
}

ENTRY %main.9 (xs.1: f32[5,4]) -> f32[5,4] {
  %xs.1 = f32[5,4]{1,0} parameter(0), metadata={op_name="xs"}
  %w = (s32[], f32[4]{0}, f32[5,4]{1,0}, f32[5,4]{1,0}, f32[5,4]{1,0}, /*index=5*/f32[5,4]{1,0}) while(%t), condition=%outer_cond, body=%outer_body, metadata={op_name="jit(f)/while"}
  ROOT %while.19 = f32[5,4]{1,0} get-tuple-element(%w), index=2, metadata={op_name="jit(f)/while"}
}
"""  # noqa: E501


def test_loop_ops_counts_a_nested_loop_as_hand_counted():
    inner, outer = loop_ops.loop_bodies(NESTED)
    assert [(i.name, i.root) for i in inner] == [
        ("copy.2", "copy"),
        ("add_fusion", "add"),
        ("wrapped_add.1", ""),  # its computation is not in the text
    ]
    assert [i.name for i in outer] == [
        "copy.16",
        "copy.10",
        "wrapped_add",
        "slice_fusion",
        "call",
        "dus_fusion",
    ]
    assert outer[4].shapes == ((), (4,), (4,)) and outer[5].root == "dynamic-update-slice"
    assert loop_ops.ops_per_step(NESTED) == [3, 6]
    assert loop_ops.whole_buffer_writes(NESTED, 5) == []
