"""Tables, plot and answers (seed Q1 and Q12) of `experiments.state_probe`, from its results.

`results` is W/results.json as a dict: `final` = {"<trained|untrained>-L<layer>": {target:
[accuracy per seed]}, "majority": {target: accuracy}}, `setup` (targets, distances, sizes),
`lm` (perplexities per seed), `shrinkages`, `timing`.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from experiments import grid

# A probe "holds" a target when its mean accuracy beats both the majority class and the
# untrained LM's same layer by more than this (absolute accuracy; the seeds' spread in the
# quick run is ~0.005).
MARGIN = 0.02
MODELS = ("trained", "untrained")
LABELS = {"upos": "UPOS", "upos_next": "next UPOS"}


def read_results(workdir: pathlib.Path) -> dict:
    return json.loads((pathlib.Path(workdir) / grid.RESULTS_FILE).read_text())


def _label(target: str) -> str:
    return LABELS.get(target, target.replace("word_k", "word t-"))


def _layers(results: dict) -> list[int]:
    return list(range(results["setup"]["num_layers"] + 1))


def _mean(results: dict, kind: str, layer: int, target: str) -> float:
    return grid.nan_mean(results["final"][f"{kind}-L{layer}"][target])


def _per_seed(results: dict, kind: str, layer: int, target: str) -> np.ndarray:
    return grid.none_to_nan(results["final"][f"{kind}-L{layer}"][target])


def _layer_name(layer: int) -> str:
    return "L0 (embedding)" if layer == 0 else f"L{layer}"


def accuracy_table(results: dict) -> str:
    """Rows: model x layer, then the majority class; columns: every target."""
    targets = results["setup"]["targets"]
    rows = []
    for kind in MODELS:
        for layer in _layers(results):
            cells = [grid.mean_std(results["final"][f"{kind}-L{layer}"][t]) for t in targets]
            rows.append([f"{kind} {_layer_name(layer)}", *cells])
    rows.append(["majority class", *[grid.fmt(results["final"]["majority"][t]) for t in targets]])
    return grid.markdown_table(["model, layer", *[_label(t) for t in targets]], rows)


def gain_table(results: dict) -> str:
    """Trained minus untrained mean accuracy, per layer and target (what training put there)."""
    targets = results["setup"]["targets"]
    rows = []
    for layer in _layers(results):
        gains = [
            _mean(results, "trained", layer, t) - _mean(results, "untrained", layer, t)
            for t in targets
        ]
        rows.append([_layer_name(layer), *[f"{g:+.3f}" for g in gains]])
    return grid.markdown_table(["layer", *[_label(t) for t in targets]], rows)


def memory_reach(results: dict, kind: str, layer: int) -> int | None:
    """The largest k whose word t-k probe beats the majority class and (for the trained LM)
    the untrained LM's same layer by more than `MARGIN`; None when no k does."""
    reach = None
    for k in results["setup"]["distances"]:
        target = f"word_k{k}"
        floor = results["final"]["majority"][target]
        if kind == "trained":
            floor = max(floor, _mean(results, "untrained", layer, target))
        if _mean(results, kind, layer, target) > floor + MARGIN:
            reach = k
    return reach


def abstraction(results: dict, kind: str, upper: int) -> dict[str, np.ndarray]:
    """Per seed, from layer `upper - 1` to `upper`: the change of UPOS, next-UPOS and word
    (k = 0) accuracy, and UPOS's change minus the word's (> 0: more categorical, less lexical
    relative to the layer below)."""
    change = {
        t: _per_seed(results, kind, upper, t) - _per_seed(results, kind, upper - 1, t)
        for t in ("upos", "upos_next", "word_k0")
    }
    change["upos_minus_word"] = change["upos"] - change["word_k0"]
    return change


def abstraction_table(results: dict) -> str:
    rows = []
    for kind in MODELS:
        for upper in _layers(results)[1:]:
            change = abstraction(results, kind, upper)
            rows.append(
                [
                    f"{kind} L{upper - 1} -> L{upper}",
                    *[
                        grid.mean_std(change[t])
                        for t in ("word_k0", "upos", "upos_next", "upos_minus_word")
                    ],
                ]
            )
    header = ["model, layers", "Δ word t", "Δ UPOS", "Δ next UPOS", "Δ UPOS − Δ word t"]
    return grid.markdown_table(header, rows)


def setup_text(results: dict) -> str:
    s, lm = results["setup"], results["lm"]
    valid = grid.mean_std(lm["valid_perplexity"])
    return (
        f"{s['num_layers']}-layer {s['cell'].upper()} LM (hidden {s['hidden_size']}, "
        f"embeddings {s['embed_size']}, vocabulary {s['vocab_size']}) trained on UD "
        f"English-EWT's {s['lm_train_tokens']:,} training tokens for {s['num_steps']} steps "
        f"(~{s['epochs']:.1f} epochs), {s['num_seeds']} seed(s); validation perplexity {valid}. "
        f"Linear probes (LDA, shrunk covariance) fitted on {s['probe_train_positions']:,} word "
        f"positions of the first {s['probe_train_sentences']:,} training sentences (shrinkage "
        f"from {s['shrinkages']} chosen on the last {s['holdout_fraction']:.0%}), accuracy on "
        f"{s['probe_test_positions']:,} positions of UD {s['probe_test_split']}. Word targets: "
        f"the {s['num_words']} most frequent training tokens + other. Untrained: each seed's "
        "initial weights. Cells: mean ± std over seeds."
    )


def markdown(results: dict) -> str:
    return "\n".join(
        [
            "# What the hidden state holds, per layer (seed Q1, Q12)",
            "",
            setup_text(results),
            "",
            "## Probe accuracy on probe-test",
            "",
            accuracy_table(results),
            "## Trained minus untrained",
            "",
            gain_table(results),
            "## From one layer to the next",
            "",
            abstraction_table(results),
            "![memory curves](state_probe.png)",
            "",
        ]
    )


def plot(results: dict, workdir: pathlib.Path) -> None:
    """W/state_probe.png: accuracy vs k per layer (trained solid, untrained dashed, majority
    dotted), and the UPOS / word targets by layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["setup"]
    ks = s["distances"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for layer in _layers(results):
        for kind, style in (("trained", "-"), ("untrained", "--")):
            means = [_mean(results, kind, layer, f"word_k{k}") for k in ks]
            left.plot(ks, means, style, marker="o", color=colors[layer], label=f"{kind} L{layer}")
    majority = [results["final"]["majority"][f"word_k{k}"] for k in ks]
    left.plot(ks, majority, ":", color="gray", label="majority class")
    left.set(xlabel="k (tokens back)", ylabel="accuracy on probe-test", title="word t-k")
    left.set_xticks(ks)
    left.legend(fontsize=7)
    layers = _layers(results)
    for i, target in enumerate(("word_k0", "upos", "upos_next")):
        for kind, style in (("trained", "-"), ("untrained", "--")):
            means = [_mean(results, kind, layer, target) for layer in layers]
            right.plot(
                layers, means, style, marker="o", color=colors[i], label=f"{_label(target)}, {kind}"
            )
    right.set(xlabel="layer (0 = embedding)", ylabel="accuracy on probe-test", title="by layer")
    right.set_xticks(layers)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(pathlib.Path(workdir) / "state_probe.png", dpi=100)
    plt.close(fig)


def _row(results: dict, kind: str, layer: int, targets: list[str]) -> str:
    return ", ".join(f"k={t[6:]} {_mean(results, kind, layer, t):.3f}" for t in targets)


def answer_q1(results: dict) -> str:
    s = results["setup"]
    words = [f"word_k{k}" for k in s["distances"]]
    majority = results["final"]["majority"]
    baseline = ", ".join(f"k={w[6:]} {majority[w]:.3f}" for w in words)
    lines = [
        "Measured with linear probes on a frozen LSTM language model "
        "(`experiments.state_probe`): from a layer's state at word t, the identity of the "
        f"token k back, for k in {s['distances']} (accuracy on UD dev; majority class: "
        f"{baseline})."
    ]
    for layer in _layers(results)[1:]:
        reach = memory_reach(results, "trained", layer)
        control = memory_reach(results, "untrained", layer)
        held = (
            f"holds the word up to k={reach} back"
            if reach is not None
            else "holds no word back beyond the margin"
        )
        lines.append(
            f"- Trained layer {layer} {held} (accuracy above both the majority class and the "
            f"untrained LSTM's layer {layer} by > {MARGIN}): "
            f"{_row(results, 'trained', layer, words)}; "
            f"untrained: {_row(results, 'untrained', layer, words)} ("
            + (
                "beats the majority at no k"
                if control is None
                else f"beats the majority up to k={control}"
            )
            + ")."
        )
    reaches = [memory_reach(results, "trained", layer) for layer in _layers(results)[1:]]
    summary = (
        "No layer holds a past word beyond the margin: this measurement does not show the "
        "state carrying the past."
        if all(r is None or r == 0 for r in reaches)
        else "So the state is a memory of the recent past whose decodability falls with k."
    )
    lines.append(
        summary + " An untrained LSTM of the same shape also "
        "keeps some of the past (a random recurrence is already a memory), which is why the "
        "control matters; what training adds is in state_probe.md's trained-minus-untrained "
        "table. Caveat: the probe is linear (LDA with a shared, shrunk covariance) over the most "
        f"frequent {s['num_words']} tokens only; a more expressive probe could read more."
    )
    return "\n".join(lines)


def q12_verdict(relative: np.ndarray) -> str:
    """'rises' / 'falls' when Δ UPOS − Δ word (per seed) is beyond `MARGIN` in mean and of
    one sign in every seed; 'flat' otherwise."""
    finite = relative[np.isfinite(relative)]
    if finite.size and finite.mean() > MARGIN and (finite > 0).all():
        return "rises"
    if finite.size and finite.mean() < -MARGIN and (finite < 0).all():
        return "falls"
    return "flat"


def answer_q12(results: dict) -> str:
    s = results["setup"]
    layers = _layers(results)
    best_upos = max(layers, key=lambda layer: _mean(results, "trained", layer, "upos"))
    best_next = max(layers, key=lambda layer: _mean(results, "trained", layer, "upos_next"))
    top = layers[-1]
    change = abstraction(results, "trained", top)
    relative = change["upos_minus_word"]
    control = abstraction(results, "untrained", top)["upos_minus_word"]
    table = "; ".join(
        f"L{layer}: word {_mean(results, 'trained', layer, 'word_k0'):.3f}, UPOS "
        f"{_mean(results, 'trained', layer, 'upos'):.3f}, next UPOS "
        f"{_mean(results, 'trained', layer, 'upos_next'):.3f}"
        for layer in layers
    )
    upos_change = grid.nan_mean(change["upos"])
    direction = "falls" if upos_change < 0 else "rises"
    measured = (
        f"From layer {top - 1} to {top}, UPOS accuracy {direction} by {abs(upos_change):.3f} "
        f"and word identity changes by {grid.nan_mean(change['word_k0']):+.3f}: Δ UPOS − Δ word "
        f"= {grid.mean_std(relative)} (untrained LSTM: {grid.mean_std(control)}, a reminder "
        "that losing lexical detail alone raises this number)."
    )
    verdict = {
        "rises": " UPOS gains on word identity by more than the margin in every seed: in this "
        "relative sense the upper layer is more abstract.",
        "falls": " UPOS loses against word identity in every seed: this measurement does not "
        "support 'more abstract representations at higher layers'.",
        "flat": f" That is within ±{MARGIN} or of mixed sign over seeds: this measurement does "
        "not show the upper layer to be more abstract than the one below.",
    }[q12_verdict(relative)]
    return "\n".join(
        [
            f"Measured by probing each layer of a {s['num_layers']}-layer LSTM LM "
            f"(`experiments.state_probe`; accuracy on UD dev, trained LM): {table}. "
            f"UPOS is best decoded from layer {best_upos}, the next word's UPOS from layer "
            f"{best_next}.",
            measured + verdict,
            "Published probing of stacked LSTMs often finds POS best decoded from the first "
            "layer, with higher layers more task- or semantics-specific (Belinkov et al. 2017 "
            "for NMT encoders; Peters et al. 2018, ELMo; Blevins et al. 2018 find deeper "
            "syntax higher up), so 'more abstract' is not a given. Stacking's capacity "
            "question at equal size is `experiments.regularization`'s; this probe asks what "
            "the layers hold, with a linear probe and the untrained LSTM as control.",
        ]
    )


def answers(results: dict) -> dict[int, str]:
    return {1: answer_q1(results), 12: answer_q12(results)}
