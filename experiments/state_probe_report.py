"""Tables and plot of `experiments.state_probe` (W/state_probe.md, W/state_probe.png), from its
results, and the readings of them that the answers (`experiments.state_probe_answers`, seed Q1
and Q12) share: mean and per-seed accuracies, selectivity, the change from one layer to the next.

`results` is W/results.json as a dict: `final` = {"<probe>-<trained|untrained>-L<layer>":
{target: [accuracy per seed]}, "majority": {target: accuracy}, "lexical": {tag target:
accuracy}}, `setup` (targets, probe kinds and the targets each read, distances, sizes), `lm`
(perplexities per seed), `regularization`, `timing`.
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import grid

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
