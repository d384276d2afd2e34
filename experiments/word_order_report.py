"""Tables, plot and the seed answer (Q2) of `experiments.word_order`, from the point summaries
that its `run` stores (results.json `points`).

Differences between points are read as in `experiments.bidirectional_report`: "every seed
apart" when every seed of one point is above every seed of the other (at least two seeds
each), "a seed diverged" when a seed of either is not finite, "one seed" when either has a
single seed (no spread), else "within the seed spread";
the answer bounds the first event's chance under no difference by the paired sign test's
2^(1-n) (`bidirectional_report.chance_apart`: seed i of every point shares its
initialisation and batches).
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import grid
from experiments.bidirectional_report import (
    CLASS_TEXT,
    accuracies,
    chance_text,
    claim,
    compare,
    diff_text,
    seeds_text,
)

TASK_TEXT = {"tag": "UD English-EWT UPOS tagging", "sst": "SST-2 sentence sentiment"}
ORDER_TEXT = {
    "bag": "bag: per-token Dense + tanh, no context",
    "shuffled": "BiLSTM, words shuffled",
    "ordered": "BiLSTM, real order",
}
UNIT = {"tag": "token", "sst": "sentence"}
# (label, minuend, subtrahend): what each difference of test accuracy measures.
EFFECTS = (
    ("context without order (shuffled − bag)", "shuffled", "bag"),
    ("order (ordered − shuffled)", "ordered", "shuffled"),
    ("context and order (ordered − bag)", "ordered", "bag"),
)


def _by_task(summaries: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """task -> order -> summary, tasks and orders in the experiment's order."""
    out: dict[str, dict[str, dict]] = {}
    for task in TASK_TEXT:
        rows = {s["order"]: s for s in summaries.values() if s["task"] == task}
        if rows:
            out[task] = {o: rows[o] for o in ORDER_TEXT if o in rows}
    return out


def _describe(rows: dict[str, dict]) -> str:
    s = next(iter(rows.values()))
    pooling = f", {s['pooling']} pooling" if "pooling" in s else ""
    return (
        f"{TASK_TEXT[s['task']]} ({s['train_sentences']:,} training sentences; "
        f"{s['eval_sentences']['valid']:,} valid, {s['eval_sentences']['test']:,} test), "
        # `vocab_size` counts the embedding table's rows, `<pad>` and `<unk>` among them (it
        # was called that many "words": 2 too many).
        f"word embeddings {s['embed_size']} over {s['vocab_size']:,} vocabulary entries "
        f"(training words, `<pad>` and `<unk>`){pooling}, "
        f"{s['num_steps']} steps of {s['batch_size']} sentences (~{s['epochs']:.1f} epochs), "
        f"{s['num_seeds']} seeds"
    )


def _sizes_text(rows: dict[str, dict]) -> str:
    """' The bag (no recurrent weights) has N parameters outside the embeddings, the BiLSTM
    M: the bag is the smaller model.' from the counts ('' without a bag and a BiLSTM)."""
    lstm = next((rows[o] for o in ("ordered", "shuffled") if o in rows), None)
    if "bag" not in rows or lstm is None:
        return ""
    bag, rnn = rows["bag"]["params_outside_embeddings"], lstm["params_outside_embeddings"]
    verdict = "the smaller model" if bag < rnn else "not the smaller model here"
    return (
        f" The bag (no recurrent weights) has {bag:,} parameters outside the embeddings, the "
        f"BiLSTM {rnn:,}: the bag is {verdict}."
    )


def _task_section(task: str, rows: dict[str, dict]) -> list[str]:
    first = next(iter(rows.values()))
    baseline = first["majority_baseline"]
    name = "majority tag per word" if task == "tag" else "majority class"
    table = [
        [
            ORDER_TEXT[o],
            s["hidden"],
            f"{s['params_outside_embeddings']:,}",
            f"{s['params']:,}",
            grid.mean_std(accuracies(s, "valid")),
            grid.mean_std(accuracies(s, "test")),
            seeds_text(accuracies(s, "test")),
        ]
        for o, s in rows.items()
    ]
    table.append(
        [name, "–", "–", "–"]
        + [grid.fmt(baseline["valid_accuracy"]), grid.fmt(baseline["test_accuracy"]), "–"]
    )
    header = ["encoder", "width", "params outside embeddings", "all params"]
    lines = [
        f"## {TASK_TEXT[task]}",
        "",
        f"{_describe(rows)}. Width: the bag's Dense layer, or the BiLSTM's per direction."
        + _sizes_text(rows),
        "",
        grid.markdown_table(header + ["valid acc", "test acc", "test per seed"], table),
    ]
    effects = [
        [label, diff_text(rows[a], rows[b])] for label, a, b in EFFECTS if {a, b} <= set(rows)
    ]
    if effects:
        lines += [grid.markdown_table(["test accuracy difference", "points"], effects)]
    if task == "tag":
        counts = first["class_tokens"]["test"]
        total = sum(counts.values())
        header = ["encoder"] + [
            f"{c}: {text} ({100 * counts[c] / total:.1f}%)" for c, text in CLASS_TEXT.items()
        ]
        table = [
            [ORDER_TEXT[o]] + [grid.mean_std(accuracies(s, "test", c)) for c in CLASS_TEXT]
            for o, s in rows.items()
        ]
        lines += [
            "Test accuracy by token class (share of test tokens in the header):",
            "",
            grid.markdown_table(header, table),
        ]
    return lines


def markdown(summaries: dict[str, dict]) -> str:
    """Per task: accuracy per point (mean ± std over seeds, each seed's test value), what
    context and order are worth, and for tagging the accuracy by token class."""
    lines = [
        "# Context and word order (seed question 2)",
        "",
        "Accuracy of the final evaluation. 'bag' sees each token alone; 'shuffled' is the "
        "ordered BiLSTM trained and evaluated on sentences whose words were permuted (one "
        "fixed permutation per sentence), so ordered − shuffled is what order is worth and "
        "shuffled − bag what unordered context is worth.",
        "",
    ]
    for task, rows in _by_task(summaries).items():
        lines += _task_section(task, rows)
    return "\n".join(lines)


def plot(summaries: dict[str, dict], workdir: pathlib.Path) -> None:
    """word_order.png: test accuracy per point, one panel per task (each seed a dot, the
    mean a bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _by_task(summaries)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, (task, rows) in zip(axes[0], tasks.items(), strict=True):
        for i, (order, s) in enumerate(rows.items()):
            values = accuracies(s)
            ax.bar(i, grid.nan_mean(values), color=f"C{list(ORDER_TEXT).index(order)}", alpha=0.5)
            ax.plot(np.full(values.shape, i), values, "k.", markersize=4)
        baseline = next(iter(rows.values()))["majority_baseline"]["test_accuracy"]
        ax.axhline(baseline, color="grey", linestyle=":", label="majority baseline")
        # Every finite seed inside the axes (a poor seed must not fall off the plot).
        shown = np.concatenate([accuracies(s) for s in rows.values()] + [[baseline]])
        shown = shown[np.isfinite(shown)]
        ax.set_ylim(max(0.0, shown.min() - 0.05), min(1.0, shown.max() + 0.03))
        ax.set_xticks(range(len(rows)), list(rows))
        ax.set_title(TASK_TEXT[task], fontsize=9)
        ax.set_ylabel(f"test {UNIT[task]} accuracy")
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(workdir / "word_order.png", dpi=90)
    plt.close(fig)


def _task_answer(task: str, rows: dict[str, dict]) -> str:
    first = next(iter(rows.values()))
    baseline = first["majority_baseline"]["test_accuracy"]
    text = (
        f"{_describe(rows)}; test {UNIT[task]} accuracy: "
        + "; ".join(
            f"{ORDER_TEXT[o]} ({s['params']:,} parameters) {grid.mean_std(accuracies(s))}"
            for o, s in rows.items()
        )
        + f" (majority baseline {baseline:.4f})."
    )
    effects = [
        f"{label}: {diff_text(rows[a], rows[b])}" for label, a, b in EFFECTS if {a, b} <= set(rows)
    ]
    if effects:
        text += " " + "; ".join(effects) + "."
    if {"shuffled", "ordered"} <= set(rows):
        order = compare(rows["ordered"], rows["shuffled"])
        kind = claim(order)
        if kind == "not measured":
            # Every seed of a point diverged: its mean is NaN, which is not "> 0", and this
            # once said "order did not help" of an ordered BiLSTM measured against nothing.
            verdict = (
                "every seed of the ordered or the shuffled point diverged: that word order "
                "matters is not measured here (inconclusive)"
            )
        elif kind == "supported":
            verdict = "that word order matters is supported"
        elif kind == "not supported":
            verdict = "order did not help: that word order matters is not supported here"
        else:
            verdict = (
                f"the ordered mean is {'higher' if order['delta'] > 0 else 'not higher'} but "
                + {
                    "diverged": "a seed diverged",
                    "one_seed": "one seed per point has no spread to be beyond",
                    "overlap": "the seeds overlap",
                }[kind]
                + ": that word order matters is not supported at this scale (inconclusive)"
            )
        text += f" On this task {verdict}"
        if "bag" in rows:
            over_bag = compare(rows["ordered"], rows["bag"])
            if over_bag["clear"] and over_bag["delta"] > 0:
                text += (
                    f", and the ordered BiLSTM is {diff_text(rows['ordered'], rows['bag'])} over "
                    "the context-free bag"
                )
            elif over_bag["clear"]:
                text += (
                    f", but the context-free bag is {diff_text(rows['bag'], rows['ordered'])} "
                    "against the ordered BiLSTM: the RNN's use of order does not make it beat "
                    "a bag of words here"
                )
            else:
                # Overlapping seeds, a diverged one or one seed a side: neither "beats" nor
                # "does not beat" is measured (this branch once said "does not make it beat a
                # bag" of an ordered BiLSTM 10 points above the bag with one seed diverged).
                text += (
                    f"; the ordered BiLSTM is {diff_text(rows['ordered'], rows['bag'])} against "
                    "the context-free bag: not shown to beat a bag of words, nor to lose to it, "
                    "at this scale"
                )
        text += "."
        if task == "tag":
            text += (
                " By token class, order is worth "
                + "; ".join(
                    f"{c} {diff_text(rows['ordered'], rows['shuffled'], c)}" for c in CLASS_TEXT
                )
                + " (minority: the word alone points to a wrong tag)."
            )
    return text


def answers(points: dict[str, dict]) -> dict[int, str]:
    """Q2 in words, every claim with its measured numbers."""
    tasks = _by_task(points)
    seeds = next(iter(points.values()))["num_seeds"]
    parts = [
        "Measured by removing word order (the same BiLSTM on sentences with their words "
        "shuffled) and all context (a per-token bag) on two real tasks."
    ]
    parts += [_task_answer(task, rows) for task, rows in tasks.items()]
    parts.append(chance_text(seeds))
    return {2: " ".join(parts)}
