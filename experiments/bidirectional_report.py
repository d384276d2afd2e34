"""Tables, plot and seed answers of `experiments.bidirectional` (Q6, and Q14's softmax vs CRF),
from the point summaries that its `run` stores (results.json `points`).

A difference between two points is called clear only when every seed of one is above every
seed of the other, each having at least two; otherwise it is within the seed spread, or a
seed of either diverged (not finite), or one has a single seed (no spread to be beyond, nor to
be within): inconclusive. Even
"clear" is weak evidence with few seeds. The seeds are paired: seed i of every point starts
from the same initialisation key and all see the same batches, so under no difference only
the two runs of each pair are exchangeable, and "every seed apart" (which needs every pair
to differ the same way) happens by chance with probability at most 2^(1-n), the sign
test's (1/2 for 2 seeds, 1/4 for 3, 1/16 for 5), which the answers state. 2 / C(2n, n)
(1/10 at 3 seeds) would need all 2n runs exchangeable, which shared keys and batches do not
give.
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import grid

CLASS_TEXT = {
    "majority": "gold = the word's majority training tag",
    "minority": "gold ≠ the word's majority training tag",
    "unk": "word out of the vocabulary, read as `<unk>`",
}
CLASSES = tuple(CLASS_TEXT)
DIRECTION_TEXT = {"forward": "forward LSTM", "backward": "backward LSTM", "bi": "BiLSTM"}


def _label(s: dict) -> str:
    head = "CRF" if s["head"] == "crf" else "softmax"
    return f"{DIRECTION_TEXT[s['direction']]} + {head}"


def accuracies(s: dict, split: str = "test", token_class: str | None = None) -> np.ndarray:
    """Per-seed accuracy of a point summary on `split` (of one token class), null -> NaN."""
    key = f"{split}_accuracy" + (f"_{token_class}" if token_class else "")
    return grid.none_to_nan(s[key])


def seeds_text(values: np.ndarray) -> str:
    """'0.9005, 0.9003, 0.9015' (a missing seed: '–')."""
    return ", ".join("–" if not np.isfinite(v) else f"{v:.4f}" for v in values)


def _share(s: dict, split: str, token_class: str) -> float:
    counts = s["class_tokens"][split]
    return counts[token_class] / sum(counts.values())


def _describe(s: dict) -> str:
    chars = ", character BiLSTM features" if s["char_features"] else ""
    return (
        f"UD English-EWT UPOS ({s['train_sentences']:,} training sentences; "
        f"{s['eval_sentences']['valid']:,} valid, {s['eval_sentences']['test']:,} test), "
        # `vocab_size` counts the embedding table's rows: the training words seen min_freq+
        # times and the specials (it was called that many "training words": 2 too many).
        f"word embeddings {s['embed_size']} over {s['vocab_size']:,} vocabulary entries (the "
        f"training words seen {s['min_freq']}+ times, `<pad>` and `<unk>`){chars}, "
        f"{s['num_steps']} steps of {s['batch_size']} sentences (~{s['epochs']:.1f} epochs), "
        f"{s['num_seeds']} seeds"
    )


def _rows(summaries: dict[str, dict]) -> list[dict]:
    order = {d: i for i, d in enumerate(DIRECTION_TEXT)}
    return sorted(summaries.values(), key=lambda s: (s["head"] != "softmax", order[s["direction"]]))


def _reference_params(rows: list[dict]) -> int | None:
    """bi-softmax's count outside the embeddings, which every point was matched to: stored by
    each point (`params_reference`; bi-softmax need not be a point of the run), in results
    written before that from bi-softmax's row; None when neither is there."""
    if "params_reference" in rows[0]:
        return rows[0]["params_reference"]
    return next((s["params_varying"] for s in rows if s["point"] == "bi-softmax"), None)


def markdown(summaries: dict[str, dict]) -> str:
    """The accuracy table (all tokens, per seed) and the per-token-class table (test)."""
    rows = _rows(summaries)
    first, target = rows[0], _reference_params(rows)
    baseline = first["majority_baseline"]
    lines = [
        "# Uni- vs bidirectional LSTM taggers at equal size (seed questions 6 and 14)",
        "",
        f"{_describe(first)}. 'params': the LSTM, output layer and CRF (the part that differs "
        "between points; the embeddings, the same at every point, are in 'all params'), "
        f"matched to bi-softmax's{'' if target is None else f' ({target:,})'} by the LSTM "
        "width. Token accuracy of the final evaluation, "
        "mean ± std over seeds, then each seed's test value. backward = the same LSTM reading "
        "every sentence right to left.",
        "",
        "## All tokens",
        "",
    ]
    table = [
        [
            _label(s),
            s["hidden"],
            f"{s['params_varying']:,}",
            "–" if target is None else f"{100 * (s['params_varying'] / target - 1):+.1f}%",
            f"{s['params']:,}",
            grid.mean_std(accuracies(s, "valid")),
            grid.mean_std(accuracies(s, "test")),
            seeds_text(accuracies(s, "test")),
        ]
        for s in rows
    ]
    table.append(
        [
            "majority tag per word",
            "–",
            "–",
            "–",
            "–",
            grid.fmt(baseline["valid_accuracy"]),
            grid.fmt(baseline["test_accuracy"]),
            "–",
        ]
    )
    header = ["tagger", "LSTM width", "params", "vs bi-softmax", "all params"]
    lines += [grid.markdown_table(header + ["valid acc", "test acc", "test per seed"], table)]
    lines += [
        "## By token class (test)",
        "",
        "Test accuracy by token class (share of test tokens in the header). A context-free "
        "tagger that knows each word's majority tag scores 1 on 'majority' and 0 on "
        "'minority' by construction, so what a tagger gets right on 'minority' it gets from "
        "context.",
        "",
    ]
    header = ["tagger"] + [
        f"{c}: {CLASS_TEXT[c]} ({100 * _share(first, 'test', c):.1f}%)" for c in CLASSES
    ]
    table = [[_label(s)] + [grid.mean_std(accuracies(s, "test", c)) for c in CLASSES] for s in rows]
    lines += [grid.markdown_table(header, table)]
    return "\n".join(lines)


def plot(summaries: dict[str, dict], workdir: pathlib.Path) -> None:
    """bidirectional.png: test accuracy per point (each seed a dot, the mean a bar), all
    tokens and per token class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(summaries)
    groups = [("all tokens", None)] + [(c, c) for c in CLASSES]
    fig, axes = plt.subplots(1, len(groups), figsize=(13, 3.8))
    x = np.arange(len(rows))
    for ax, (title, token_class) in zip(axes, groups, strict=True):
        for i, s in enumerate(rows):
            values = accuracies(s, "test", token_class)
            color = f"C{list(DIRECTION_TEXT).index(s['direction'])}"
            hatch = "//" if s["head"] == "crf" else None
            ax.bar(i, grid.nan_mean(values), color=color, alpha=0.5, hatch=hatch)
            ax.plot(np.full(values.shape, i), values, "k.", markersize=4)
        # Every finite seed inside the axes; a class without test tokens (no accuracy at any
        # point: a short `data.eval_sentences` cut) keeps the default limits.
        shown = np.concatenate([accuracies(s, "test", token_class) for s in rows])
        shown = shown[np.isfinite(shown)]
        if shown.size:
            low, high = shown.min(), shown.max()
            pad = max(0.01, 0.6 * (high - low))
            ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
        ax.set_xticks(x, [s["point"] for s in rows], rotation=45, ha="right", fontsize="small")
        text = title if token_class is None else f"{title} ({CLASS_TEXT[title]})"
        ax.set_title(text.replace("`", ""), fontsize=8)
    axes[0].set_ylabel("test token accuracy")
    fig.tight_layout()
    fig.savefig(workdir / "bidirectional.png", dpi=90)
    plt.close(fig)


def compare(a: dict, b: dict, token_class: str | None = None, split: str = "test") -> dict:
    """Mean accuracy of `a` minus `b` (fraction, over the finite seeds), whether every seed
    of one is above every seed of the other, each having at least two ('clear'), or not
    ('within seed spread'), whether a seed of either is not finite ('diverged': never clear,
    since that seed is above or below nothing and `chance_apart` no longer bounds the event's
    chance), and whether either has a single seed ('one_seed': never clear, one seed has no
    spread to be beyond and `chance_apart(1)` is 1; `grid.finite_seeds_below`'s rule)."""
    x, y = accuracies(a, split, token_class), accuracies(b, split, token_class)
    delta = grid.nan_mean(x) - grid.nan_mean(y)
    diverged = not (np.isfinite(x).all() and np.isfinite(y).all())
    clear = grid.all_seeds_below(x, y) or grid.all_seeds_below(y, x)
    one_seed = min(x.size, y.size) < 2
    return {"delta": delta, "clear": clear, "diverged": diverged, "one_seed": one_seed}


def claim(c: dict) -> str:
    """Whether `compare(a, b)`'s result `c` supports "a is better than b", for the answers
    that test such a claim (Q6: BiLSTM over forward, Q2: ordered over shuffled):
    'not measured' (every seed of a or b diverged: a NaN mean is neither above nor below);
    'supported' (a above, every seed apart); 'diverged' (a seed of either is not finite,
    whichever mean is higher: the finite seeds alone would decide, and "did not help" was
    said of a BiLSTM against a forward LSTM whose surviving seeds were above it);
    'one_seed' or 'overlap' (a's mean higher, nothing beyond it); 'not supported' (a's mean
    not higher, every seed finite)."""
    if not np.isfinite(c["delta"]):
        return "not measured"
    if c["clear"] and c["delta"] > 0:
        return "supported"
    if c["diverged"]:
        return "diverged"
    if c["delta"] > 0:
        return "one_seed" if c["one_seed"] else "overlap"
    return "not supported"


def chance_apart(num_seeds: int) -> float:
    """An upper bound on the chance that n seeds of one point all lie above or all below n of
    another when the points do not differ, for seeds paired across points (seed i of each
    shares its initialisation key and batches): 2^(1-n). Every seed apart implies every
    pair's difference has the same sign, which, with the two runs of each pair exchangeable
    and pairs independent, has probability 2 / 2^n (the sign test); the bound is reached when
    pairs are anti-correlated. 2 / C(2n, n) holds only for 2n exchangeable runs."""
    return 2.0 ** (1 - num_seeds)


def chance_text(num_seeds: int) -> str:
    """The answers' sentence on how often 'every seed apart' happens by chance."""
    return (
        f"'Every seed apart' happens by chance with probability at most "
        f"{chance_apart(num_seeds):.2g} at {num_seeds} seeds (seed i of every point shares "
        f"its initialisation and batches: a paired sign test's bound)."
    )


def _points(delta: float) -> str:
    """'+1.23 points'; 'n/a' when a point has no finite seed (it read '+nan points')."""
    return f"{100 * delta:+.2f} points" if np.isfinite(delta) else "n/a"


def diff_text(a: dict, b: dict, token_class: str | None = None) -> str:
    """'+1.23 points (every seed apart)': `compare`'s difference in accuracy points, and
    whether the seeds separate, overlap, include one that diverged or are one a side (no spread:
    "within the seed spread" said so of 0.90 against 0.80); a `token_class` without test
    tokens (a short `data.eval_sentences` cut: no accuracy, at every seed) is said so."""
    if token_class is not None and a["class_tokens"]["test"][token_class] == 0:
        return "no test tokens in this class: not compared"
    c = compare(a, b, token_class)
    spread = (
        "every seed apart"
        if c["clear"]
        else "a seed diverged: not compared seed by seed"
        if c["diverged"]
        else "one seed: no seed spread to compare"
        if c["one_seed"]
        else "within the seed spread"
    )
    return f"{_points(c['delta'])} ({spread})"


def _by_point(points: dict[str, dict]) -> dict[str, dict]:
    return {s["point"]: s for s in points.values()}


def _answer_6(p: dict[str, dict]) -> str:
    rows = _rows(p)
    first = rows[0]
    target = _reference_params(rows) or first["params_varying"]
    text = [
        f"Measured ({_describe(first)}; every tagger has ~{target:,} "
        "parameters outside the embeddings): test token accuracy "
        + "; ".join(f"{_label(s)} {grid.mean_std(accuracies(s))}" for s in rows)
        + f" (majority tag per word {first['majority_baseline']['test_accuracy']:.4f})."
    ]
    fw, bw, bi = p.get("forward-softmax"), p.get("backward-softmax"), p.get("bi-softmax")
    if fw is None or bi is None:
        text.append("forward-softmax or bi-softmax was not run: no uni- vs bidirectional answer.")
        return " ".join(text)
    gain = compare(bi, fw)
    kind = claim(gain)
    if kind == "not measured":
        # Every seed of a tagger diverged: its mean is NaN, not "> 0", which read "Not
        # supported: the BiLSTM did not tag better" of a BiLSTM measured against nothing.
        verdict = (
            "Not measured (inconclusive): every seed of the BiLSTM or of the forward LSTM diverged"
        )
    elif kind == "supported":
        verdict = "Supported: at equal size the BiLSTM tags better than the forward LSTM"
    elif kind == "not supported":
        verdict = "Not supported: the BiLSTM did not tag better than the forward LSTM"
    else:
        higher = "higher" if gain["delta"] > 0 else "not higher"
        verdict = (
            f"Not supported at this scale (inconclusive): the BiLSTM's mean is {higher} but "
            + (
                {
                    "diverged": "a seed diverged",
                    "one_seed": "one seed per tagger has no spread to be beyond",
                    "overlap": "its seeds overlap the forward LSTM's",
                }[kind]
            )
        )
    text.append(f"{verdict}, {diff_text(bi, fw)}. {chance_text(first['num_seeds'])}")
    shares = {c: 100 * _share(first, "test", c) for c in CLASSES}
    text.append(
        "Where the gain comes from (test accuracy by token class, BiLSTM vs forward): "
        + "; ".join(
            f"{c} ({shares[c]:.1f}% of tokens) "
            f"{grid.number_text(grid.nan_mean(accuracies(fw, 'test', c)), '.4f')} → "
            f"{grid.number_text(grid.nan_mean(accuracies(bi, 'test', c)), '.4f')}, "
            f"{diff_text(bi, fw, c)}"
            if shares[c]
            else f"{c} (no test tokens)"
            for c in CLASSES
        )
        + ". On 'minority' tokens the word alone points to the wrong tag, so what a tagger "
        "gets right there it gets from context; the forward LSTM already has the left context, "
        "so the BiLSTM's gain over it is what adding the right context is worth (at the price "
        "of fewer units per direction, at equal size)."
    )
    if bw is not None:
        text.append(
            f"Reading right to left instead (backward LSTM, same size): {diff_text(bw, fw)} "
            f"against the forward LSTM; the BiLSTM is {diff_text(bi, bw)} against the "
            "backward one."
        )
    text.append("The seed's 'or classification' half is not measured here (tagging only).")
    return " ".join(text)


def _answer_14(p: dict[str, dict]) -> str:
    rows = _rows(p)
    text = [
        f"Softmax vs CRF head at equal size ({_describe(rows[0])}; test token accuracy): "
        + "; ".join(f"{_label(s)} {grid.mean_std(accuracies(s))}" for s in rows)
        + "."
    ]
    fw, fw_crf = p.get("forward-softmax"), p.get("forward-crf")
    bi, bi_crf = p.get("bi-softmax"), p.get("bi-crf")
    if fw is not None and fw_crf is not None:
        sentence = f"A CRF on the forward LSTM: {diff_text(fw_crf, fw)}"
        if bi is not None:
            gap, crf_gain = compare(bi, fw)["delta"], compare(fw_crf, fw)["delta"]
            # A NaN gap or CRF gain (every seed of a point diverged) said the BiLSTM "had no
            # gain over the forward LSTM to recover", whatever the BiLSTM's gain was.
            sentence += (
                f", i.e. {100 * crf_gain / gap:.0f}% of the forward-to-BiLSTM gap "
                f"({_points(gap)}); on minority tokens {diff_text(fw_crf, fw, 'minority')}"
                if gap > 0 and np.isfinite(crf_gain)
                else " (no share of the forward-to-BiLSTM gap: a point has no finite accuracy)"
                if not np.isfinite(gap + crf_gain)
                else " (the BiLSTM had no gain over the forward LSTM to recover)"
            )
        text.append(sentence + ".")
    if bi is not None and bi_crf is not None:
        c = compare(bi_crf, bi)
        # A diverged seed or one seed a side fell to "no measurable difference ... both work",
        # of a CRF tagger every seed of which had diverged (Q6's rule since session 28).
        if not np.isfinite(c["delta"]):
            verdict = "not measured (inconclusive): every seed of one of the two taggers diverged"
        elif c["clear"]:
            verdict = "the CRF helps" if c["delta"] > 0 else "the CRF hurts"
        elif c["diverged"]:
            verdict = "not compared seed by seed (inconclusive): a seed diverged"
        elif c["one_seed"]:
            verdict = "not ranked (inconclusive): one seed per tagger has no spread to be beyond"
        else:
            verdict = (
                "no measurable difference: the seed's 'classifier or CRF' holds only in that "
                "both work; a CRF advantage is not supported at this scale"
            )
        text.append(f"A CRF on the BiLSTM: {diff_text(bi_crf, bi)}, {verdict}.")
    return " ".join(text)


def answers(points: dict[str, dict]) -> dict[int, str]:
    """Q6 and Q14 (softmax vs CRF) in words, every claim with its measured numbers."""
    p = _by_point(points)
    out = {6: _answer_6(p)}
    if any(s["head"] == "crf" for s in p.values()):
        out[14] = _answer_14(p)
    return out
