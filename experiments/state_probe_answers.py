"""The answers to seed Q1 and Q12 from `experiments.state_probe`'s results, and the rules of
their verdicts: `MARGIN`; the word t-k probes that hold (`held_distances`, `memory_reach`) and
whether decodability falls with k (Q1); Q12's relative verdict from one layer to the next
(`q12_verdict`, `VERDICTS`: UPOS's change minus word identity's, Hewitt & Liang's (2019)
selectivity beside it) and the layers tied for best. `results` and the readings of it are
`experiments.state_probe_report`'s.
"""

from __future__ import annotations

import numpy as np

from experiments import grid
from experiments.state_probe_report import (
    PROBE_NAMES,
    _kinds,
    _layers,
    _mean,
    _test_split,
    abstraction,
    primary_probe,
    selectivity,
)

# A probe "holds" a target when its mean accuracy beats both the majority class and the
# untrained LM's same layer by more than this (absolute accuracy). The committed quick run's
# word-probe std over its 2 seeds is mostly below 0.007 but reaches 0.022 (trained L1, word
# t-2; experiments/README.md): the margin is about one std at the widest, so a "held" k is a
# reading of the means, not a significance test.
MARGIN = 0.02


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
