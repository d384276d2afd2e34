"""Tables, plots and seed answers of `experiments.regularization` (Q17 and Q12), from the
point summaries that its `run` stores (results.json `points`)."""

from __future__ import annotations

import math
import pathlib

import numpy as np

from experiments import grid

# Validation bits/token differences smaller than this are "no difference" in the answers
# (the std over 2 seeds of the quick run's best valid was up to 0.014 bits/char). A larger
# difference is still claimed only when it also exceeds the seed spread, every seed finite
# (`grid.all_seeds_below`).
TIE = 0.02


def _gap(s: dict, when: str) -> np.ndarray:
    """Valid minus train bits per seed, at the final (`when`="final") or best evaluation."""
    train = "final_train_bits" if when == "final" else "train_at_best_bits"
    valid = "final_valid_bits" if when == "final" else "best_valid_bits"
    return grid.none_to_nan(s[valid]) - grid.none_to_nan(s[train])


def _setting(s: dict) -> str:
    settings = s["settings"]
    return ", ".join(f"{k.split('.')[1]}={v}" for k, v in settings.items()) or "–"


def _split(summaries: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    rows = list(summaries.values())
    return [s for s in rows if 17 in s["questions"]], [s for s in rows if 12 in s["questions"]]


def _describe(s: dict) -> str:
    return (
        f"{s['corpus']} ({s['train_tokens']:,} training {s['unit']}s, {s['valid_tokens']:,} "
        f"validation), {s['cell'].upper()} language model, {s['num_steps']} steps "
        f"(~{s['epochs']:.0f} epochs of the slice), {len(s['final_valid_bits'])} seeds"
    )


def markdown(summaries: dict[str, dict]) -> str:
    """One table per question (a question without points is left out)."""
    q17, q12 = _split(summaries)
    lines = ["# Regularisation and depth in a language model (seed questions 17 and 12)", ""]
    unit = next(iter(summaries.values()))["unit"]
    if q17:
        first = q17[0]
        lines += [
            f"## Regularisers: {first['layers']} x {first['hidden']} ({first['params']:,} "
            f"parameters), {_describe(first)}",
            "",
            f"Bits per {unit}, evaluation mode (no dropout), mean ± std over seeds. 'train': the "
            "training slice itself; 'best valid': the lowest validation evaluation (chosen on "
            "the mean over seeds) and its step; gap: valid − train on the same weights. "
            "'early stopping' is the unregularised run read at its best validation "
            "evaluation, not another run.",
            "",
        ]
        table = []
        for s in q17:
            table.append(
                [
                    s["regularizer"],
                    _setting(s),
                    grid.mean_std(s["final_train_bits"]),
                    grid.mean_std(s["final_valid_bits"]),
                    grid.mean_std(s["best_valid_bits"]),
                    s["best_step"],
                    grid.mean_std(_gap(s, "final")),
                ]
            )
            if s["regularizer"] == "none":
                table.append(
                    [
                        "early stopping",
                        f"none, stopped at step {s['best_step']}",
                        grid.mean_std(s["train_at_best_bits"]),
                        grid.mean_std(s["best_valid_bits"]),
                        grid.mean_std(s["best_valid_bits"]),
                        s["best_step"],
                        grid.mean_std(_gap(s, "best")),
                    ]
                )
        header = ["regulariser", "setting", "final train", "final valid", "best valid"]
        lines += [grid.markdown_table(header + ["best at step", "final gap"], table)]
    if q12:
        first = q12[0]
        # The Q17 model's count is known only from a Q17 point: q12[0] is another depth's
        # matched model when the run has no Q17 point of a depth regulariser (a sweep's
        # depth-only run).
        reference = f"{q17[0]['params']:,}-parameter Q17 model" if q17 else "Q17 model"
        lines += [
            f"## Depth at equal parameter count: {_describe(first)}",
            "",
            f"Hidden size chosen per depth so that the parameter count matches the "
            f"{reference} within depth.tolerance (embedding size fixed). Bits per {unit} as "
            "above.",
            "",
        ]
        rows = sorted(q12, key=lambda s: (s["regularizer"], s["layers"]))
        table = [
            [
                s["layers"],
                s["hidden"],
                f"{s['params']:,}",
                s["regularizer"],
                grid.mean_std(s["final_train_bits"]),
                grid.mean_std(s["final_valid_bits"]),
                grid.mean_std(s["best_valid_bits"]),
                s["best_step"],
            ]
            for s in rows
        ]
        header = ["layers", "hidden", "params", "regulariser", "final train", "final valid"]
        lines += [grid.markdown_table(header + ["best valid", "best at step"], table)]
    return "\n".join(lines)


def plot(summaries: dict[str, dict], workdir: pathlib.Path) -> None:
    """regularization.png (train and valid bits against step per Q17 point, mean over
    seeds) and depth.png (best and final valid bits against depth per regulariser)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q17, q12 = _split(summaries)
    unit = next(iter(summaries.values()))["unit"]
    if q17:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
        for s, color in zip(q17, [f"C{i}" for i in range(10)], strict=False):
            for ax, key in zip(axes, ("curve_train_bits", "curve_valid_bits"), strict=True):
                curve = grid.none_to_nan(s[key])
                ax.plot(s["curve_steps"], np.nanmean(curve, 1), color=color, label=s["regularizer"])
        for ax, title in zip(axes, ("training slice", "validation"), strict=True):
            ax.set_title(f"{title} (evaluation mode)")
            ax.set_xlabel("step")
        axes[0].set_ylabel(f"bits / {unit}")
        axes[1].legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(workdir / "regularization.png", dpi=90)
        plt.close(fig)
    if q12:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for i, reg in enumerate(dict.fromkeys(s["regularizer"] for s in q12)):
            color = f"C{i}"
            rows = sorted((s for s in q12 if s["regularizer"] == reg), key=lambda s: s["layers"])
            layers = [s["layers"] for s in rows]
            ax.plot(
                layers,
                [grid.nan_mean(s["best_valid_bits"]) for s in rows],
                "o-",
                color=color,
                label=f"{reg}: best valid",
            )
            ax.plot(
                layers,
                [grid.nan_mean(s["final_valid_bits"]) for s in rows],
                "x--",
                color=color,
                label=f"{reg}: final valid",
            )
        ax.set_xlabel("layers (equal parameter count)")
        ax.set_ylabel(f"validation bits / {unit}")
        ax.set_xticks(sorted({s["layers"] for s in q12}))
        ax.legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(workdir / "depth.png", dpi=90)
        plt.close(fig)


def _diverged(point: dict) -> bool:
    """Some seed of the point has no finite best validation loss."""
    return grid.some_seed_diverged(point["best_valid_bits"])


def _beats(a: dict, b: dict) -> bool:
    """Point `a`'s best valid below `b`'s by more than `TIE` on the mean and with every seed
    below every seed of `b` (beyond the seed spread), every seed of both finite
    (`grid.all_seeds_below`: a diverged seed leaves the pair not compared)."""
    delta = grid.nan_mean(a["best_valid_bits"]) - grid.nan_mean(b["best_valid_bits"])
    return delta < -TIE and grid.all_seeds_below(a["best_valid_bits"], b["best_valid_bits"])


def _answer_17(q17: list[dict]) -> str:
    first = q17[0]
    unit = first["unit"]
    text = [
        f"Measured ({_describe(first)}; {first['layers']} x {first['hidden']}, "
        f"{first['params']:,} parameters; bits/{unit} in evaluation mode): "
        + "; ".join(
            f"{s['regularizer']} final train {grid.mean_std(s['final_train_bits'])}, "
            f"final valid {grid.mean_std(s['final_valid_bits'])}, "
            f"best valid {grid.mean_std(s['best_valid_bits'])} at step {s['best_step']}"
            for s in q17
        )
        + "."
    ]
    none = next((s for s in q17 if s["regularizer"] == "none"), None)
    if none is None:
        return " ".join(text)
    num = grid.number_text
    if not math.isfinite(grid.nan_mean(none["best_valid_bits"])):
        # NaN against NaN read "within the seed spread" and every regulariser "not supported",
        # with '+nan bits': a run that trained set against nothing.
        text.append(
            "Not measured (inconclusive): every seed of the unregularised run diverged, so no "
            "regulariser is compared with it."
        )
        return " ".join(text)
    rise = grid.nan_mean(none["final_valid_bits"]) - grid.nan_mean(none["best_valid_bits"])
    # Overfitting: validation up by more than TIE with every final seed above every best one,
    # every seed finite, while the loss on the training slice went down (up too would be
    # instability).
    beyond_spread = grid.all_seeds_below(none["best_valid_bits"], none["final_valid_bits"])
    train_fell = grid.nan_mean(none["final_train_bits"]) < grid.nan_mean(none["train_at_best_bits"])
    if not math.isfinite(rise):
        why = "no seed has a finite final validation loss"
    elif rise <= TIE:
        why = f"validation rose by only {rise:.3g} bits after its best evaluation"
    elif not beyond_spread:
        # one seed has no spread to be within, nor has a diverged one (`unranked_reason`)
        reason = grid.unranked_reason(none["best_valid_bits"], none["final_valid_bits"])
        why = f"validation rose by {rise:.3g} bits after its best evaluation, {reason}"
    else:
        why = (
            f"validation rose by {rise:.3g} bits after its best evaluation, but the training "
            f"slice's loss rose too ({num(grid.nan_mean(none['train_at_best_bits']), '.3g')} -> "
            f"{num(grid.nan_mean(none['final_train_bits']), '.3g')})"
        )
    overfit = rise > TIE and beyond_spread and train_fell and none["best_step"] < none["num_steps"]
    text.append(
        (
            f"Unregularised, the model overfits: validation bottoms out at step "
            f"{none['best_step']} and then rises by {rise:.3g} bits while the train loss falls "
            f"to {grid.nan_mean(none['final_train_bits']):.3g} (final gap "
            f"{num(grid.nan_mean(_gap(none, 'final')), '.3g')})."
            if overfit
            else f"Unregularised, the model is not shown to overfit in this budget ({why}): "
            "the comparison below says little."
        )
        + f" Early stopping at step {none['best_step']} keeps "
        f"{grid.nan_mean(none['best_valid_bits']):.3g} bits/{unit} instead of "
        f"{num(grid.nan_mean(none['final_valid_bits']), '.3g')}."
    )
    base = grid.nan_mean(none["best_valid_bits"])
    helped, not_helped, untested = [], [], []
    for s in q17:
        if s is none:
            continue
        delta = grid.nan_mean(s["best_valid_bits"]) - base
        gap = grid.nan_mean(_gap(s, "final"))
        entry = (
            f"{s['regularizer']} ({num(delta, '+.3g')} bits best valid, final gap "
            f"{num(gap, '.3g')})"
        )
        if _beats(s, none):
            helped.append(entry)
            continue
        # "Not supported" needs seeds to compare: one seed a side, or a diverged seed, cannot
        # test the claim either way (Q11's rule; this said "not supported" for them too).
        reason = grid.unranked_reason(s["best_valid_bits"], none["best_valid_bits"])
        if reason == grid.WITHIN_SPREAD:
            not_helped.append(entry)
        else:
            untested.append(f"{entry}: {reason}")
    kept = [
        f"{s['regularizer']} "
        + num(grid.nan_mean(s["final_valid_bits"]) - grid.nan_mean(s["best_valid_bits"]), "+.3g")
        for s in q17
    ]
    text.append(
        "Final valid minus best valid (how far each run had drifted up by the last step, "
        "without early stopping): " + ", ".join(kept) + "."
    )
    if helped:
        text.append("Better than early stopping alone: " + ", ".join(helped) + ".")
    if not_helped:
        text.append(
            f"Not better than early stopping by more than {TIE} bits with every seed below "
            "every early-stopped seed: "
            + ", ".join(not_helped)
            + " (the seed's claim is not supported for these, at this scale and strength)."
        )
    if untested:
        text.append(
            "Not compared (this run cannot test the claim for these): " + "; ".join(untested) + "."
        )
    return " ".join(text)


def _answer_12(q12: list[dict]) -> str:
    first = q12[0]
    unit = first["unit"]
    text = [
        f"Measured ({_describe(first)}), depth at equal parameter count (~{first['params']:,}"
        f"): "
        + "; ".join(
            f"{s['layers']} x {s['hidden']} ({s['params']:,} params) {s['regularizer']}: best "
            f"valid {grid.mean_std(s['best_valid_bits'])} bits/{unit}"
            for s in sorted(q12, key=lambda s: (s["regularizer"], s["layers"]))
        )
        + "."
    ]
    for reg in dict.fromkeys(s["regularizer"] for s in q12):
        rows = sorted((s for s in q12 if s["regularizer"] == reg), key=lambda s: s["layers"])
        if len(rows) < 2:
            continue
        # A depth with a diverged seed is not ranked (a NaN mean is not "worse", and its
        # finite seeds alone were called "best"): named instead.
        diverged = [s for s in rows if _diverged(s)]
        if rows[0] in diverged:
            text.append(
                f"With {reg}: not measured (inconclusive): a seed of the shallowest stack, "
                f"{rows[0]['layers']} layer(s), diverged."
            )
            continue
        depths = ", ".join(str(s["layers"]) for s in diverged)
        skipped = f" (not compared, a seed diverged: depth {depths})" if diverged else ""
        rows = [s for s in rows if s not in diverged]
        one = rows[0]
        if len(rows) < 2:
            text.append(f"With {reg}: no deeper stack to compare with{skipped}.")
            continue
        # The lowest mean among the depths that beat the shallowest: the lowest mean overall
        # may have a seed within the shallowest's spread while another depth beats it.
        winners = [s for s in rows[1:] if _beats(s, one)]
        if not winners:
            nearest = min(rows[1:], key=lambda s: grid.ranking_mean(s["best_valid_bits"]))
            reason = grid.unranked_reason(nearest["best_valid_bits"], one["best_valid_bits"])
            verdict = (
                f"more layers did not beat {one['layers']} by more than {TIE} bits with every "
                "seed apart" + ("" if reason == grid.WITHIN_SPREAD else f" ({reason})")
            )
        else:
            best = min(winners, key=lambda s: grid.ranking_mean(s["best_valid_bits"]))
            delta = grid.nan_mean(best["best_valid_bits"]) - grid.nan_mean(one["best_valid_bits"])
            # "best" only against every other depth: a middle depth may be as good.
            close = [str(s["layers"]) for s in rows if s is not best and not _beats(best, s)]
            verdict = (
                f"{best['layers']} layers beat {one['layers']} ({delta:+.3g} bits) but not "
                f"{', '.join(close)} by more than {TIE} bits with every seed apart"
                if close
                else f"{best['layers']} layers are best, {delta:+.3g} bits against {one['layers']}"
            )
        text.append(f"With {reg}: {verdict}{skipped}.")
    text.append(
        "Only the validation loss at equal size is measured here; the seed's 'more abstract "
        "representations at higher layers' is not (no probe of the layers' states)."
    )
    return " ".join(text)


def answers(points: dict[str, dict]) -> dict[int, str]:
    """Q17 and Q12 in words, every claim with its measured numbers."""
    q17, q12 = _split(points)
    out = {}
    if q17:
        out[17] = _answer_17(q17)
    if q12:
        out[12] = _answer_12(q12)
    return out
