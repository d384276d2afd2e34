"""Tables, plot and answers (seed Q1 and Q12) of `experiments.state_probe`, from its results.

`results` is W/results.json as a dict: `final` = {"<probe>-<trained|untrained>-L<layer>":
{target: [accuracy per seed]}, "majority": {target: accuracy}, "lexical": {tag target:
accuracy}}, `setup` (targets, probe kinds and the targets each read, distances, sizes), `lm`
(perplexities per seed), `regularization`, `timing`.
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import grid

# A probe "holds" a target when its mean accuracy beats both the majority class and the
# untrained LM's same layer by more than this (absolute accuracy). The committed quick run's
# word-probe std over its 2 seeds is mostly below 0.007 but reaches 0.022 (trained L1, word
# t-2; experiments/README.md): the margin is about one std at the widest, so a "held" k is a
# reading of the means, not a significance test.
MARGIN = 0.02
MODELS = ("trained", "untrained")
LABELS = {
    "upos": "UPOS",
    "upos_next": "next UPOS",
    "upos_control": "UPOS control",
    "upos_next_control": "next UPOS control",
}
PROBE_NAMES = {"lda": "LDA", "logistic": "logistic"}
TAGS = ("upos", "upos_next")
CONTROL = "_control"


def _label(target: str) -> str:
    return LABELS.get(target, target.replace("word_k", "word t-"))


def _layers(results: dict) -> list[int]:
    return list(range(results["setup"]["num_layers"] + 1))


def _kinds(results: dict) -> list[str]:
    return results["setup"]["probe_kinds"]


def primary_probe(results: dict) -> str:
    """The probe Q12's verdict reads: logistic regression when it ran (the usual, stronger
    probe, without LDA's Gaussian assumption), else LDA."""
    return "logistic" if "logistic" in _kinds(results) else "lda"


def _mean(results: dict, kind: str, layer: int, target: str, probe: str = "lda") -> float:
    return grid.nan_mean(results["final"][f"{probe}-{kind}-L{layer}"][target])


def _per_seed(results: dict, kind: str, layer: int, target: str, probe: str = "lda") -> np.ndarray:
    return grid.none_to_nan(results["final"][f"{probe}-{kind}-L{layer}"][target])


def selectivity(results: dict, probe: str, kind: str, layer: int, target: str) -> np.ndarray:
    """Per seed: accuracy on `target` minus on its control task (Hewitt & Liang 2019)."""
    return _per_seed(results, kind, layer, target, probe) - _per_seed(
        results, kind, layer, target + CONTROL, probe
    )


def _test_split(setup: dict) -> str:
    """The split the probes are scored on, in words: 'UD dev' or 'UD test'."""
    return "UD dev" if setup["probe_test_split"] == "valid" else f"UD {setup['probe_test_split']}"


def _layer_name(layer: int) -> str:
    return "L0 (embedding)" if layer == 0 else f"L{layer}"


def _lda_targets(results: dict) -> list[str]:
    """The LDA tables' columns: every target but the control tasks."""
    return [t for t in results["setup"]["targets"] if not t.endswith(CONTROL)]


def accuracy_table(results: dict) -> str:
    """LDA: rows model x layer, then the majority class; columns: every target but the
    controls (those are in `tag_table`)."""
    targets = _lda_targets(results)
    rows = []
    for kind in MODELS:
        for layer in _layers(results):
            cells = [grid.mean_std(results["final"][f"lda-{kind}-L{layer}"][t]) for t in targets]
            rows.append([f"{kind} {_layer_name(layer)}", *cells])
    rows.append(["majority class", *[grid.fmt(results["final"]["majority"][t]) for t in targets]])
    return grid.markdown_table(["model, layer", *[_label(t) for t in targets]], rows)


def tag_table(results: dict) -> str:
    """Rows: probe x model x layer, then the lexical lookup and the majority class; columns:
    per tag target, its accuracy, its control task's and the selectivity (task − control)."""
    final = results["final"]
    rows = []
    for probe in _kinds(results):
        for kind in MODELS:
            for layer in _layers(results):
                cells = []
                for target in TAGS:
                    row = final[f"{probe}-{kind}-L{layer}"]
                    cells += [
                        grid.mean_std(row[target]),
                        grid.mean_std(row[target + CONTROL]),
                        grid.mean_std(selectivity(results, probe, kind, layer, target)),
                    ]
                rows.append([f"{PROBE_NAMES[probe]} {kind} {_layer_name(layer)}", *cells])
    for name, baseline in (("lexical lookup", "lexical"), ("majority class", "majority")):
        cells = []
        for target in TAGS:
            task, control = final[baseline][target], final[baseline][target + CONTROL]
            cells += [grid.fmt(task), grid.fmt(control), f"{task - control:+.4f}"]
        rows.append([name, *cells])
    header = ["probe, model, layer"]
    for target in TAGS:
        header += [_label(target), _label(target + CONTROL), f"{_label(target)} selectivity"]
    return grid.markdown_table(header, rows)


def gain_table(results: dict) -> str:
    """LDA: trained minus untrained mean accuracy, per layer and target (what training put
    there)."""
    targets = _lda_targets(results)
    rows = []
    for layer in _layers(results):
        gains = [
            _mean(results, "trained", layer, t) - _mean(results, "untrained", layer, t)
            for t in targets
        ]
        rows.append([_layer_name(layer), *[f"{g:+.3f}" for g in gains]])
    return grid.markdown_table(["layer", *[_label(t) for t in targets]], rows)


def held_distances(results: dict, kind: str, layer: int) -> list[int]:
    """The k whose word t-k probe beats the majority class and (for the trained LM) the
    untrained LM's same layer by more than `MARGIN`, in increasing order."""
    held = []
    for k in results["setup"]["distances"]:
        target = f"word_k{k}"
        floor = results["final"]["majority"][target]
        if kind == "trained":
            floor = max(floor, _mean(results, "untrained", layer, target))
        if _mean(results, kind, layer, target) > floor + MARGIN:
            held.append(k)
    return held


def memory_reach(results: dict, kind: str, layer: int) -> int | None:
    """The largest k of `held_distances`; None when no k is held."""
    held = held_distances(results, kind, layer)
    return held[-1] if held else None


def _held_text(results: dict, kind: str, layer: int) -> str | None:
    """'up to k=2 back' when every probed k up to the reach is held, else 'at k=1, 2 back
    (not at k=0)': a nearer word that is not held is named, not covered by 'up to'; None
    when no k is held."""
    held = held_distances(results, kind, layer)
    if not held:
        return None
    missed = [k for k in results["setup"]["distances"] if k < held[-1] and k not in held]
    if not missed:
        return f"up to k={held[-1]} back"
    return f"at k={', '.join(map(str, held))} back (not at k={', '.join(map(str, missed))})"


def abstraction(results: dict, kind: str, upper: int, probe: str = "lda") -> dict[str, np.ndarray]:
    """Per seed, from layer `upper - 1` to `upper`: the change of `probe`'s UPOS and next-UPOS
    accuracy and UPOS selectivity, of word (k = 0) accuracy (LDA's: the only word probe), and
    UPOS's change minus the word's (> 0: more categorical, less lexical relative to the layer
    below)."""

    def change_of(values: dict[int, np.ndarray]) -> np.ndarray:
        return values[upper] - values[upper - 1]

    layers = (upper - 1, upper)
    change = {
        t: change_of({layer: _per_seed(results, kind, layer, t, probe) for layer in layers})
        for t in TAGS
    }
    change["word_k0"] = change_of(
        {layer: _per_seed(results, kind, layer, "word_k0") for layer in layers}
    )
    change["upos_selectivity"] = change_of(
        {layer: selectivity(results, probe, kind, layer, "upos") for layer in layers}
    )
    change["upos_minus_word"] = change["upos"] - change["word_k0"]
    return change


ABSTRACTION_COLUMNS = {
    "word_k0": "Δ word t (LDA)",
    "upos": "Δ UPOS",
    "upos_next": "Δ next UPOS",
    "upos_minus_word": "Δ UPOS − Δ word t",
    "upos_selectivity": "Δ UPOS selectivity",
}


def abstraction_table(results: dict) -> str:
    rows = []
    for probe in _kinds(results):
        for kind in MODELS:
            for upper in _layers(results)[1:]:
                change = abstraction(results, kind, upper, probe)
                rows.append(
                    [
                        f"{PROBE_NAMES[probe]} {kind} L{upper - 1} -> L{upper}",
                        *[grid.mean_std(change[c]) for c in ABSTRACTION_COLUMNS],
                    ]
                )
    return grid.markdown_table(["probe, model, layers", *ABSTRACTION_COLUMNS.values()], rows)


def setup_text(results: dict) -> str:
    s, lm = results["setup"], results["lm"]
    valid = grid.mean_std(lm["valid_perplexity"])
    logistic = (
        f" and multinomial logistic regression (L2 penalty from {s['l2_penalties']}, "
        f"{s['logistic_iterations']} L-BFGS steps; UPOS targets and their controls only)"
        if "logistic" in _kinds(results)
        else ""
    )
    return (
        f"{s['num_layers']}-layer {s['cell'].upper()} LM (hidden {s['hidden_size']}, "
        f"embeddings {s['embed_size']}, vocabulary {s['vocab_size']}) trained on UD "
        f"English-EWT's {s['lm_train_tokens']:,} training tokens for {s['num_steps']} steps "
        f"(~{s['epochs']:.1f} epochs), {s['num_seeds']} seed(s); validation perplexity {valid}. "
        f"Linear probes, LDA (shrunk covariance, shrinkage from {s['shrinkages']}){logistic}, "
        f"fitted on {s['probe_train_positions']:,} word positions of the first "
        f"{s['probe_train_sentences']:,} training sentences (regularisation chosen on the last "
        f"{s['holdout_fraction']:.0%}), accuracy on {s['probe_test_positions']:,} positions of "
        f"{_test_split(s)}. Word targets: the {s['num_words']} most frequent training "
        "tokens + other. Control tasks (Hewitt & Liang 2019): each word type as the LM reads it "
        "(its vocabulary's tokens, every unknown form one `<unk>` type) a random tag drawn "
        "from probe-train's tag distribution; selectivity = task − control accuracy. Lexical "
        "lookup: each word's most frequent tag (next tag) in probe-train, the majority for "
        "unseen words. Untrained: each seed's initial weights. Cells: mean ± std over seeds."
    )


def markdown(results: dict) -> str:
    return "\n".join(
        [
            "# What the hidden state holds, per layer (seed Q1, Q12)",
            "",
            setup_text(results),
            "",
            "## LDA probe accuracy on probe-test",
            "",
            accuracy_table(results),
            "## UPOS by probe: control tasks, selectivity, lexical lookup",
            "",
            tag_table(results),
            "## Trained minus untrained (LDA)",
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
    """W/state_probe.png: LDA's accuracy vs k per layer (trained solid, untrained dashed,
    majority dotted), and by layer the word (LDA) and the UPOS targets (`primary_probe`), the
    lexical lookup dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["setup"]
    ks = s["distances"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for layer in _layers(results):
        color = colors[layer % len(colors)]  # colors[layer] failed from model.num_layers=10 on
        for kind, style in (("trained", "-"), ("untrained", "--")):
            means = [_mean(results, kind, layer, f"word_k{k}") for k in ks]
            left.plot(ks, means, style, marker="o", color=color, label=f"{kind} L{layer}")
    majority = [results["final"]["majority"][f"word_k{k}"] for k in ks]
    left.plot(ks, majority, ":", color="gray", label="majority class")
    left.set(xlabel="k (tokens back)", ylabel="accuracy on probe-test", title="word t-k")
    left.set_xticks(ks)
    left.legend(fontsize=7)
    layers = _layers(results)
    probe = primary_probe(results)
    lines = [("word_k0", "lda"), ("upos", probe), ("upos_next", probe)]
    for i, (target, reader) in enumerate(lines):
        for kind, style in (("trained", "-"), ("untrained", "--")):
            means = [_mean(results, kind, layer, target, reader) for layer in layers]
            label = f"{_label(target)} ({PROBE_NAMES[reader]}), {kind}"
            right.plot(layers, means, style, marker="o", color=colors[i], label=label)
    for i, target in enumerate(TAGS, start=1):
        lexical = results["final"]["lexical"][target]
        right.axhline(lexical, linestyle=":", color=colors[i], label=f"{_label(target)}, lexical")
    right.set(xlabel="layer (0 = embedding)", ylabel="accuracy on probe-test", title="by layer")
    right.set_xticks(layers)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
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
        f"token k back, for k in {s['distances']} (accuracy on {_test_split(s)}; majority class: "
        f"{baseline})."
    ]
    for layer in _layers(results)[1:]:
        reach = _held_text(results, "trained", layer)
        control = _held_text(results, "untrained", layer)
        held = (
            f"holds the word {reach}"
            if reach is not None
            else "holds no word back beyond the margin"
        )
        lines.append(
            f"- Trained layer {layer} {held} (accuracy above both the majority class and the "
            f"untrained LSTM's layer {layer} by > {MARGIN}): "
            f"{_row(results, 'trained', layer, words)}; "
            f"untrained: {_row(results, 'untrained', layer, words)} ("
            + ("beats the majority at no k" if control is None else f"beats the majority {control}")
            + ")."
        )
    recurrent = _layers(results)[1:]
    reaches = [memory_reach(results, "trained", layer) for layer in recurrent]
    if all(r is None or r == 0 for r in reaches):
        summary = (
            "No layer holds a past word beyond the margin: this measurement does not show the "
            "state carrying the past."
        )
    else:
        rising = [layer for layer in recurrent if not _falls_with_k(results, layer)]
        summary = "So the state is a memory of the recent past" + (
            " whose decodability falls with k."
            if not rising
            else ", but its decodability does not fall steadily with k (a farther word is read "
            f"better than a nearer one by more than {MARGIN} at layer "
            + ", ".join(str(layer) for layer in rising)
            + ")."
        )
    untrained = [memory_reach(results, "untrained", layer) for layer in recurrent]
    control = (
        " An untrained LSTM of the same shape also keeps some of the past (a random recurrence "
        "is already a memory), which is why the control matters;"
        if any(r is not None and r > 0 for r in untrained)
        else " The untrained LSTM of the same shape holds no past word beyond the margin;"
    )
    lines.append(
        summary + control + " what training adds is in state_probe.md's trained-minus-untrained "
        "table. Caveat: the word probe is linear (LDA with a shared, shrunk covariance) over "
        f"the most frequent {s['num_words']} tokens only; a more expressive probe could read "
        "more."
    )
    return "\n".join(lines)


def _falls_with_k(results: dict, layer: int) -> bool:
    """The trained LM's word t-k accuracy at `layer` never rises by more than `MARGIN` from one
    k to a larger one (noise at the majority level is not a rise)."""
    means = [_mean(results, "trained", layer, f"word_k{k}") for k in results["setup"]["distances"]]
    return not any(
        later > earlier + MARGIN for i, earlier in enumerate(means) for later in means[i + 1 :]
    )


def q12_verdict(relative: np.ndarray) -> str:
    """'rises' / 'falls' when Δ UPOS − Δ word (per seed) is beyond `MARGIN` in mean and of
    one sign in every seed, with two finite seeds or more ('one seed' with one: "in every
    seed" of one run checks no sign across seeds, and a 1-seed run was called "more
    abstract"); 'flat' otherwise."""
    finite = relative[np.isfinite(relative)]
    if finite.size == 1:
        return "one seed"
    if finite.size and finite.mean() > MARGIN and (finite > 0).all():
        return "rises"
    if finite.size and finite.mean() < -MARGIN and (finite < 0).all():
        return "falls"
    return "flat"


VERDICTS = {
    # `q12_verdict`'s condition: the margin holds for the mean, the sign for every seed.
    "rises": f"UPOS gains on word identity in every seed, by more than {MARGIN} on average: in "
    "this relative sense the upper layer is more abstract",
    "falls": f"UPOS loses against word identity in every seed, by more than {MARGIN} on "
    "average: this measurement does not support 'more abstract representations at higher "
    "layers'",
    "flat": f"that is within ±{MARGIN} or of mixed sign over seeds: this measurement does "
    "not show the upper layer to be more abstract than the one below",
    "one seed": "that is one seed's, which cannot show the sign to hold across seeds: this "
    "measurement does not show the upper layer to be more abstract than the one below, nor "
    "less",
}


def _best_layers(results: dict, target: str, probe: str) -> tuple[int, list[int]]:
    """The layer with the best trained mean accuracy on `target`, and every layer within
    `MARGIN` of it (itself included)."""
    layers = _layers(results)
    means = {layer: _mean(results, "trained", layer, target, probe) for layer in layers}
    best = max(layers, key=lambda layer: means[layer])
    return best, [layer for layer in layers if means[best] - means[layer] <= MARGIN]


def _best_text(results: dict, target: str, probe: str) -> str:
    best, close = _best_layers(results, target, probe)
    tied = [layer for layer in close if layer != best]
    if not tied:
        return f"layer {best}"
    others = ", ".join(str(layer) for layer in tied)
    return f"layer {best} (layer {others} within {MARGIN}: a tie at this margin)"


def answer_q12(results: dict) -> str:
    s = results["setup"]
    layers = _layers(results)
    probe = primary_probe(results)
    name = PROBE_NAMES[probe]
    other = [k for k in _kinds(results) if k != probe]

    def upos_cells(layer: int) -> str:
        cells = f"UPOS {_mean(results, 'trained', layer, 'upos', probe):.3f}"
        cells += "".join(
            f" ({PROBE_NAMES[k]} {_mean(results, 'trained', layer, 'upos', k):.3f})" for k in other
        )
        sel = grid.nan_mean(selectivity(results, probe, "trained", layer, "upos"))
        return (
            f"{cells}, selectivity {sel:.3f}, next UPOS "
            f"{_mean(results, 'trained', layer, 'upos_next', probe):.3f}"
        )

    table = "; ".join(
        f"L{layer}: word {_mean(results, 'trained', layer, 'word_k0'):.3f}, {upos_cells(layer)}"
        for layer in layers
    )
    lexical = results["final"]["lexical"]
    best_upos = max(_mean(results, "trained", layer, "upos", probe) for layer in layers)
    top = layers[-1]
    change = abstraction(results, "trained", top, probe)
    relative = change["upos_minus_word"]
    control = abstraction(results, "untrained", top, probe)["upos_minus_word"]
    upos_change = grid.nan_mean(change["upos"])
    direction = "falls" if upos_change < 0 else "rises"
    verdict = q12_verdict(relative)
    measured = (
        f"From layer {top - 1} to {top}, {name} UPOS accuracy {direction} by "
        f"{abs(upos_change):.3f} and word identity changes by "
        f"{grid.nan_mean(change['word_k0']):+.3f}: Δ UPOS − Δ word = {grid.mean_std(relative)} "
        f"(untrained LSTM: {grid.mean_std(control)}, a reminder that losing lexical detail "
        f"alone raises this number); {VERDICTS[verdict]}. {name.capitalize()} UPOS selectivity "
        f"changes by {grid.mean_std(change['upos_selectivity'])} over the same step."
    )
    for k in other:
        k_verdict = q12_verdict(abstraction(results, "trained", top, k)["upos_minus_word"])
        measured += (
            f" The {PROBE_NAMES[k]} probe gives the same verdict."
            if k_verdict == verdict
            else f" The {PROBE_NAMES[k]} probe disagrees ({VERDICTS[k_verdict]}): the verdict "
            "depends on the probe."
        )
    return "\n".join(
        [
            f"Measured by probing each layer of a {s['num_layers']}-layer LSTM LM "
            f"(`experiments.state_probe`; accuracy on {_test_split(s)}, trained LM; UPOS by the "
            f"{name} probe"
            + "".join(f", {PROBE_NAMES[k]} in parentheses" for k in other)
            + "; selectivity: UPOS minus a control task of random tags per LM token, Hewitt & "
            f"Liang 2019): {table}. UPOS is best decoded from "
            f"{_best_text(results, 'upos', probe)}, the next word's UPOS from "
            f"{_best_text(results, 'upos_next', probe)}. A per-word lookup (each word's most "
            f"frequent tag in probe-train) gets {lexical['upos']:.3f} (next UPOS "
            f"{lexical['upos_next']:.3f}): the best layer's linear probe is "
            f"{abs(lexical['upos'] - best_upos):.3f} "
            f"{'below' if best_upos < lexical['upos'] else 'above'} it.",
            measured,
            "Published probing of stacked LSTMs often finds POS best decoded from the first "
            "layer, with higher layers more task- or semantics-specific (Belinkov et al. 2017 "
            "for NMT encoders; Peters et al. 2018, ELMo; Blevins et al. 2018 find deeper "
            "syntax higher up), so 'more abstract' is not a given. Stacking's capacity "
            "question at equal size is `experiments.regularization`'s; this probe asks what "
            "the layers hold, with linear probes, control tasks and the untrained LSTM as "
            "controls.",
        ]
    )


def answers(results: dict) -> dict[int, str]:
    return {1: answer_q1(results), 12: answer_q12(results)}
