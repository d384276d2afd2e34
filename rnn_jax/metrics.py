"""Task metrics: token accuracy, conlleval span P/R/F1, perplexity, bits per char, BLEU.

Span scoring follows conlleval (the CoNLL-2000 shared-task script) chunk boundary rules, which
cover IOB1, IOB2 (= BIO) and IOBES tags: a chunk ends before a tag when the previous tag closes
it (B/I/E/S followed by B, O or a new type; E or S followed by anything) and starts at
B/S, at an I/E that follows O/E/S, or at any change of type.
"""

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "SCHEMES",
    "bits_per_char",
    "corpus_bleu",
    "extract_spans",
    "perplexity",
    "span_f1",
    "token_accuracy",
]

SCHEMES = {"IOB1": "BIO", "IOB2": "BIO", "BIO": "BIO", "IOBES": "BIOES"}


def token_accuracy(predictions: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of real (mask True) tokens predicted right. All arrays [batch, time]."""
    predictions, targets, mask = map(np.asarray, (predictions, targets, mask))
    if predictions.shape != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"predictions, targets and mask must share a shape, got {predictions.shape}, "
            f"{targets.shape}, {mask.shape}"
        )
    total = mask.sum()
    return float(((predictions == targets) & mask).sum() / max(total, 1))


def _split_tag(tag: str, scheme: str, position: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, label = tag.partition("-")
    if prefix not in SCHEMES[scheme] or not label:
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
    precision = 100.0 * correct / num_predicted if num_predicted else 0.0
    recall = 100.0 * correct / num_gold if num_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood in nats per token)."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be > 0, got {num_tokens}")
    return float(math.exp(total_nll / num_tokens))


def bits_per_char(total_nll: float, num_chars: int) -> float:
    """Mean negative log-likelihood in bits per character (nats / ln 2)."""
    if num_chars <= 0:
        raise ValueError(f"num_chars must be > 0, got {num_chars}")
    return float(total_nll / num_chars / math.log(2.0))


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a"
) -> float:
    """Corpus BLEU (Papineni et al. 2002) with sacrebleu (Post 2018), one reference each.

    Use tokenize='none' for text that is already tokenised (e.g. Multi30k's tok/ files).
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses ({len(hypotheses)}) and references ({len(references)}) differ in number"
        )
    return float(
        sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score
    )
