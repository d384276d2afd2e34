"""Task metrics: token accuracy, conlleval span P/R/F1, perplexity, bits per char.

Span scoring follows conlleval (the CoNLL-2000 shared-task script) chunk boundary rules, which
cover IOB1, IOB2 (= BIO) and IOBES tags: a chunk ends before a tag when the previous tag closes
it (B/I followed by B, S, O or a new type; E or S followed by anything) and starts at
B/S, or at an I/E that follows O/E/S or a tag of another type.

BLEU and its paired significance tests are in `rnn_jax.bleu`.
"""

import collections
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "SCHEMES",
    "bits_per_char",
    "extract_spans",
    "f1_from_counts",
    "perplexity",
    "span_counts",
    "span_f1",
    "tag_tables",
    "token_accuracy",
]

SCHEMES = {"IOB1": "BIO", "IOB2": "BIO", "BIO": "BIO", "IOBES": "BIOES"}


def token_accuracy(predictions: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of real tokens predicted right. All arrays [batch, time]; `mask` is any
    dtype, nonzero = real token (bool, or `pad_batch`'s float32 1.0/0.0)."""
    predictions, targets, mask = map(np.asarray, (predictions, targets, mask))
    if predictions.shape != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"predictions, targets and mask must share a shape, got {predictions.shape}, "
            f"{targets.shape}, {mask.shape}"
        )
    mask = mask.astype(bool)  # `&` on a float mask raises; on an int mask 2 it is bitwise
    total = mask.sum()
    return float(((predictions == targets) & mask).sum() / max(total, 1))


def majority_tag_per_word(train: Sequence[dict], sentences: Sequence[dict]) -> list[list[str]]:
    """The baseline a tagger must beat to have used context: each word's most frequent
    training tag (ties: the tag seen first), unseen words the most frequent tag overall.
    Sentences are `{"tokens": [...], "tags": [...]}` (tags needed in `train` only)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    overall: collections.Counter = collections.Counter()
    for sentence in train:
        for word, tag in zip(sentence["tokens"], sentence["tags"], strict=True):
            counts[word][tag] += 1
            overall[tag] += 1
    if not overall:  # most_common(1)[0] would die with a bare IndexError
        raise ValueError(f"train has no tagged token ({len(train)} sentences): no majority tag")
    default = overall.most_common(1)[0][0]
    return [
        [counts[w].most_common(1)[0][0] if w in counts else default for w in s["tokens"]]
        for s in sentences
    ]


def _split_tag(tag: str, scheme: str, position: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, label = tag.partition("-")
    # One letter of the scheme's: `in` on the string alone would also take "", "BI", "IO".
    if len(prefix) != 1 or prefix not in SCHEMES[scheme] or not label:
        raise ValueError(
            f"tag {tag!r} at position {position} is not a valid {scheme} tag "
            f"(expected 'O' or one of {sorted(SCHEMES[scheme])} + '-TYPE')"
        )
    return prefix, label


def _chunk_end(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I"):
        return tag in ("B", "S", "O") or tag_type != prev_type
    return False


def _chunk_start(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E"):
        return prev in ("O", "E", "S") or tag_type != prev_type
    return False


def extract_spans(tags: Sequence[str], scheme: str = "IOB2") -> set[tuple[str, int, int]]:
    """Chunks of one sentence as {(type, start, end_exclusive)}, by conlleval's rules."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    spans = set()
    prev, prev_type, start = "O", "", None
    for position, tag in enumerate(tags):
        prefix, tag_type = _split_tag(tag, scheme, position)
        if start is not None and _chunk_end(prev, prev_type, prefix, tag_type):
            spans.add((prev_type, start, position))
            start = None
        if _chunk_start(prev, prev_type, prefix, tag_type):
            start = position
        prev, prev_type = prefix, tag_type
    if start is not None:
        spans.add((prev_type, start, len(tags)))
    return spans


def span_f1(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str = "IOB2"
) -> dict[str, float]:
    """Corpus-level span precision, recall and F1 (in %, like conlleval) over sentences."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} sentences but predicted has {len(predicted)}")
    correct = num_gold = num_predicted = 0
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted"
            )
        gold_spans = extract_spans(gold_tags, scheme)
        predicted_spans = extract_spans(predicted_tags, scheme)
        correct += len(gold_spans & predicted_spans)
        num_gold += len(gold_spans)
        num_predicted += len(predicted_spans)
    return f1_from_counts(correct, num_gold, num_predicted)


PREFIX_IDS = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}


def tag_tables(tags: Sequence[str], scheme: str = "IOB2") -> tuple[np.ndarray, np.ndarray]:
    """Per tag id: prefix id (O/B/I/E/S = 0..4) and chunk-type id (0 for O), for `span_counts`.

    A vocabulary's special tokens, written in angle brackets ('<pad>', '<unk>', '</s>'), count
    as O. Every other tag must be one `extract_spans` reads, 'O' or a prefix of the scheme +
    '-TYPE'; any other (e.g. 'PER' without its prefix) raises the same error, naming the tag
    and its id.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    type_ids: dict[str, int] = {"": 0}
    prefixes, types = [], []
    for position, tag in enumerate(tags):
        special = tag.startswith("<") and tag.endswith(">")
        prefix, label = ("O", "") if special else _split_tag(tag, scheme, position)
        prefixes.append(PREFIX_IDS[prefix])
        types.append(type_ids.setdefault(label, len(type_ids)))
    return np.array(prefixes, np.int32), np.array(types, np.int32)


def _boundaries(prefix: jax.Array, kind: jax.Array) -> tuple[jax.Array, jax.Array]:
    """conlleval's chunk end (before t) and start (at t) flags over [batch, time] arrays."""
    begin, inner, last, single = (PREFIX_IDS[p] for p in "BIES")
    prev, prev_kind = prefix[:, :-1], kind[:, :-1]
    cur, cur_kind = prefix[:, 1:], kind[:, 1:]
    changed = cur_kind != prev_kind
    end = ((prev == last) | (prev == single)) | (
        ((prev == begin) | (prev == inner))
        & ((cur == begin) | (cur == single) | (cur == 0) | changed)
    )
    start = ((cur == begin) | (cur == single)) | (
        ((cur == inner) | (cur == last))
        & ((prev == 0) | (prev == last) | (prev == single) | changed)
    )
    return end, start


def span_counts(
    gold: jax.Array,
    predicted: jax.Array,
    lengths: jax.Array,
    prefixes: jax.Array,
    types: jax.Array,
) -> dict[str, jax.Array]:
    """conlleval's chunk counts in JAX (jit-able), for evaluation sums inside a jitted step.

    gold, predicted: [batch, time] tag ids; lengths [batch]; prefixes/types from `tag_tables`.
    Returns {"correct_spans", "gold_spans", "predicted_spans"} as scalars; P/R/F1 follow
    from the sums over a split exactly as in `span_f1`.
    """
    batch, time = gold.shape
    inside = jnp.arange(time)[None, :] < lengths[:, None]
    # An O column before and after each sentence opens and closes every chunk.
    pad = jnp.zeros((batch, 1), jnp.int32)

    def tables(tags: jax.Array) -> tuple[jax.Array, jax.Array]:
        prefix = jnp.where(inside, prefixes[tags], 0)
        kind = jnp.where(inside, types[tags], 0)
        return jnp.concatenate([pad, prefix, pad], 1), jnp.concatenate([pad, kind, pad], 1)

    gold_prefix, gold_kind = tables(gold)
    pred_prefix, pred_kind = tables(predicted)
    gold_end, gold_start = _boundaries(gold_prefix, gold_kind)
    pred_end, pred_start = _boundaries(pred_prefix, pred_kind)

    def step(in_correct: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        eg, ep, sg, sp = gold_end[:, t], pred_end[:, t], gold_start[:, t], pred_start[:, t]
        same_prev = gold_kind[:, t] == pred_kind[:, t]  # types at t - 1 (shifted by the pad)
        same_now = gold_kind[:, t + 1] == pred_kind[:, t + 1]
        closes = in_correct & eg & ep & same_prev
        broken = in_correct & ~closes & ((eg != ep) | ~same_now)
        in_correct = (in_correct & ~closes & ~broken) | (sg & sp & same_now)
        return in_correct, closes

    _, closes = lax.scan(step, jnp.zeros((batch,), bool), jnp.arange(time + 1))
    return {
        "correct_spans": jnp.sum(closes).astype(jnp.float32),
        "gold_spans": jnp.sum(gold_start).astype(jnp.float32),
        "predicted_spans": jnp.sum(pred_start).astype(jnp.float32),
    }


def f1_from_counts(correct: float, num_gold: float, num_predicted: float) -> dict[str, float]:
    """Precision, recall and F1 in % from span counts (0 where undefined), as conlleval."""
    precision = 100.0 * correct / num_predicted if num_predicted else 0.0
    recall = 100.0 * correct / num_gold if num_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def perplexity(total_nll: float, num_tokens: float = 1) -> float:
    """exp(mean negative log-likelihood in nats per token): `perplexity(sum, count)`, or
    `perplexity(mean_nll)`. inf where that overflows a float (a mean NLL above ~709.78: a
    diverged model with finite but huge logits), so a run records it instead of dying."""
    if not num_tokens > 0 or not math.isfinite(num_tokens):  # `not >`: NaN is refused too
        raise ValueError(f"num_tokens must be a finite number > 0, got {num_tokens}")
    try:
        return float(math.exp(total_nll / num_tokens))
    except OverflowError:
        return math.inf


def bits_per_char(total_nll: float, num_chars: int) -> float:
    """Mean negative log-likelihood in bits per character (nats / ln 2)."""
    if not num_chars > 0 or not math.isfinite(num_chars):  # `not >`: NaN is refused too
        raise ValueError(f"num_chars must be a finite number > 0, got {num_chars}")
    return float(total_nll / num_chars / math.log(2.0))
