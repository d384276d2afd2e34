"""Tables, plots and seed answers of `experiments.truncated_bptt` (Q13 and Q11), from the
point summaries that its `run` stores (results.json `points`)."""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import grid

# |mean accuracy − chance| below this counts as "at chance" in the answers (the seed-to-seed
# std of a memoryless model on 4 x 32 x 70 scored steps is ~0.005; 0.02 leaves room).
CHANCE_TOLERANCE = 0.02


def _bytes(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.3g} MiB"


def _k_label(s: dict) -> str:
    k = s["bptt_length"]
    return f"full ({k})" if k == s["length"] else str(k)


def _clip_label(s: dict) -> str:
    return "no clipping" if s["clip"] is None else f"clipping at {s['clip']:g}"


def _split(summaries: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    rows = list(summaries.values())
    return [s for s in rows if s["question"] == 13], [s for s in rows if s["question"] == 11]


def markdown(summaries: dict[str, dict]) -> str:
    """One table per question (a question without points is left out)."""
    bptt, clip = _split(summaries)
    lines = ["# Truncated BPTT and gradient clipping (seed questions 13 and 11)", ""]
    if bptt:
        first = bptt[0]
        lines += [
            f"## Truncated BPTT: echo task, delay d = {first['delay']}, sequences of T = "
            f"{first['length']} steps, {len(first['accuracy'])} seeds",
            "",
            "Windows of k steps, one update each, the state carried across windows without "
            "gradient; every k trains on the same tokens. 'pairs in a window': share of the "
            "scored steps t whose input t − d lies in the same window (the only ones a gradient "
            "can teach). Accuracy: held-out, mean ± std over seeds. Memory: XLA temp buffers of "
            "one compiled training step (all seeds); time: median step time / (seeds × batch × "
            "k), on this machine under its load at the time.",
            "",
        ]
        table = [
            [
                s["cell"],
                _k_label(s),
                s["updates"],
                f"{s['inside_fraction']:.2f}",
                grid.mean_std(s["accuracy"]),
                grid.fmt(s["chance_accuracy"]),
                _bytes(s["temp_bytes"]),
                f"{s['s_per_token'] * 1e6:.3g} µs",
            ]
            for s in bptt
        ]
        header = ["cell", "k", "updates", "pairs in a window", "echo accuracy", "chance"]
        lines += [grid.markdown_table(header + ["temp memory / step", "time / token"], table)]
    if clip:
        first = clip[0]
        lines += [
            f"## Gradient clipping: {first['cell']}, orthogonal W_hh × {first['recurrent_scale']:g}"
            f", {first['optimizer']}, full BPTT, {len(first['loss'])} seeds",
            "",
            "Diverged: final held-out loss not finite or not below the chance cross-entropy "
            f"{grid.fmt(first['baseline'])} (log K). Max pre-clip gradient norm: the largest "
            "global norm the runtime logged (`grad_norm_max`, before clipping) over the run, "
            "per seed; steps with a non-finite gradient were skipped and are not in it.",
            "",
        ]
        table = [
            [
                "none" if s["clip"] is None else grid.fmt(s["clip"]),
                f"{sum(s['diverged'])}/{len(s['diverged'])}",
                grid.mean_std(s["loss"]),
                grid.mean_std(s["accuracy"]),
                grid.mean_std(s["max_grad_norm"]),
                grid.fmt(float(np.nanmax(grid.none_to_nan(s["max_grad_norm"])))),
            ]
            for s in clip
        ]
        header = ["clip_global_norm", "diverged", "final loss", "echo accuracy"]
        lines += [grid.markdown_table(header + ["max pre-clip ‖g‖", "largest"], table)]
    return "\n".join(lines)


def plot(summaries: dict[str, dict], workdir: pathlib.Path) -> None:
    """truncated_bptt.png (accuracy, memory, time against k) and clipping.png (pre-clip
    gradient norm and training loss against the step, per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bptt, clip = _split(summaries)
    if bptt:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for cell in dict.fromkeys(s["cell"] for s in bptt):
            rows = sorted((s for s in bptt if s["cell"] == cell), key=lambda s: s["bptt_length"])
            ks = [s["bptt_length"] for s in rows]
            accuracy = [grid.none_to_nan(s["accuracy"]) for s in rows]
            axes[0].errorbar(
                ks, [np.nanmean(a) for a in accuracy], [np.nanstd(a) for a in accuracy], label=cell
            )
            axes[1].plot(ks, [(s["temp_bytes"] or np.nan) / 2**20 for s in rows], "o-", label=cell)
            axes[2].plot(ks, [s["s_per_token"] * 1e6 for s in rows], "o-", label=cell)
        first = bptt[0]
        axes[0].axhline(first["chance_accuracy"], color="gray", linestyle=":", label="chance")
        axes[0].axvline(first["delay"], color="gray", linestyle="--", label="k = d")
        labels = ["held-out echo accuracy", "XLA temp memory / step (MiB)", "time / token (µs)"]
        for ax, label in zip(axes, labels, strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("bptt_length k")
            ax.set_ylabel(label)
        axes[0].legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(workdir / "truncated_bptt.png", dpi=90)
        plt.close(fig)
    if clip:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, s in enumerate(clip):  # every clip point (a zip with 5 colours dropped a 6th)
            color = f"C{i % 10}"
            for key, ax in (("curve_grad_norm_max", axes[0]), ("curve_train_loss", axes[1])):
                values = grid.none_to_nan(s[key])
                for seed in range(values.shape[1] if values.ndim == 2 else 0):
                    label = _clip_label(s) if seed == 0 else None
                    ax.plot(s["curve_steps"], values[:, seed], color=color, alpha=0.7, label=label)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("max pre-clip ‖g‖ per log window")
        axes[1].axhline(clip[0]["baseline"], color="gray", linestyle=":", label="chance (log K)")
        axes[1].set_ylabel("training loss")
        for ax in axes:
            ax.set_xlabel("step")
            ax.legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(workdir / "clipping.png", dpi=90)
        plt.close(fig)


def _answer_13(bptt: list[dict]) -> str:
    first = bptt[0]
    d, chance = first["delay"], first["chance_accuracy"]
    text = [
        f"Measured (echo task, delay d = {d}, T = {first['length']}, windows of k steps, "
        f"{len(first['accuracy'])} seeds, the same tokens for every k; chance accuracy "
        f"{chance:.3g}): held-out accuracy "
        + "; ".join(f"{s['cell']} k={_k_label(s)} {grid.mean_std(s['accuracy'])}" for s in bptt)
        + "."
    ]
    # Each point's mean is placed on its own side of chance (finite means only): the whole
    # k <= d range was worded "above chance by more than" the tolerance as soon as one point
    # was not within it, also for a point at chance beside it or one below chance.
    means = [(s["bptt_length"], grid.nan_mean(s["accuracy"])) for s in bptt]
    short = [a for k, a in means if k <= d and np.isfinite(a)]
    long = [a for k, a in means if k > d and np.isfinite(a)]
    if short:
        above = sum(a - chance >= CHANCE_TOLERANCE for a in short)
        below = sum(chance - a >= CHANCE_TOLERANCE for a in short)
        if above == len(short) or below == len(short):
            side = f"{'above' if above else 'below'} chance by more than {CHANCE_TOLERANCE}"
        elif above or below:
            counts = ((above, "above chance by more than"), (below, "below chance by more than"))
            side = ", ".join(
                [
                    f"{n} of {len(short)} points {where} {CHANCE_TOLERANCE}"
                    for n, where in counts
                    if n
                ]
                + [f"{len(short) - above - below} within {CHANCE_TOLERANCE} of chance"]
            )
        else:
            side = f"at chance (within {CHANCE_TOLERANCE})"
        text.append(
            f"With k ≤ d no gradient links a target to its input: accuracy "
            f"{min(short):.3g}–{max(short):.3g}, "
            + side
            + (f", against {min(long):.3g}–{max(long):.3g} with k > d" if long else "")
            + "."
        )
        if above:
            text.append(
                "So the prediction 'at chance' does not hold exactly: the carried state, a "
                "constant input to each window, still holds some information about older "
                "inputs, which the within-window gradients can learn to read and keep (this run "
                "does not separate the two); learning the delay itself needs k > d."
            )
        elif below:
            text.append(
                "So the prediction 'at chance' does not hold here either, though not in the "
                "direction memory of older inputs would move it (a predictor that ignores the "
                "input d steps back has expected accuracy 1/K exactly)."
            )
    ratios = []  # (memory, time per token) of the longest over the shortest window, per cell
    for cell in dict.fromkeys(s["cell"] for s in bptt):
        rows = sorted((s for s in bptt if s["cell"] == cell), key=lambda s: s["bptt_length"])
        lo, hi = rows[0], rows[-1]
        if lo is hi or lo["temp_bytes"] is None or hi["temp_bytes"] is None:
            continue
        ratios.append(
            (hi["temp_bytes"] / max(lo["temp_bytes"], 1), hi["s_per_token"] / lo["s_per_token"])
        )
        text.append(
            f"Cost ({cell}, one compiled training step): temp memory {_bytes(lo['temp_bytes'])} "
            f"at k={_k_label(lo)} vs {_bytes(hi['temp_bytes'])} at k={_k_label(hi)} "
            f"({ratios[-1][0]:.3g}x); time per token "
            f"{lo['s_per_token'] * 1e6:.3g} µs vs {hi['s_per_token'] * 1e6:.3g} µs."
        )
    if ratios:
        memory = min(m for m, _ in ratios) > 1.5  # the longest window needs more memory
        same_time = all(0.5 < t < 2.0 for _, t in ratios)  # per token, within a factor 2
        text.append(
            "So truncation "
            + ("cuts" if memory else "did not cut")
            + " the memory of an update (longest vs shortest window: "
            + ", ".join(f"{m:.3g}x" for m, _ in ratios)
            + ") "
            + (
                # "did not cut the memory ... but not the computation" read as if it had cut it
                f"{'but not' if memory else 'nor'} the computation per token (time per token "
                "within a factor 2: True)"
                if same_time
                # "and changed the computation per token", then "every k runs each step once
                # forward and once backward": the time changed, the arithmetic per token not.
                else "and its time per token was not within a factor 2 (longest vs shortest: "
                + ", ".join(f"{t:.3g}x" for _, t in ratios)
                + "), although"
            )
            + (": " if same_time else " ")
            + "every k runs each step once forward and once backward."
        )
    return " ".join(text)


def _answer_11(clip: list[dict]) -> str:
    first = clip[0]
    parts = [
        f"{_clip_label(s)}: {sum(s['diverged'])}/{len(s['diverged'])} seeds diverged, final "
        f"loss {grid.mean_std(s['loss'])}, max pre-clip gradient norm "
        f"{grid.mean_std(s['max_grad_norm'])}"
        for s in clip
    ]
    text = [
        f"Measured ({first['cell']}, orthogonal W_hh × {first['recurrent_scale']:g}, "
        f"{first['optimizer']}, full BPTT over the echo task, chance loss "
        f"{first['baseline']:.3g}): " + "; ".join(parts) + "."
    ]
    unclipped = [s for s in clip if s["clip"] is None]
    clipped = [s for s in clip if s["clip"] is not None]
    if unclipped and clipped:
        lost = sum(unclipped[0]["diverged"])
        counts = [sum(s["diverged"]) for s in clipped]
        fewer = lost > min(counts)
        # every clipped run lost more seeds: "did not reduce" and no verdict hid it
        more = min(counts) > lost
        # every seed of every run diverged by the report's rule (a finite loss at or above
        # chance counts): the same whether the losses ended finite or not (a finite one
        # compared its losses and said "lowered the final loss" of runs that learned nothing)
        every = all(unclipped[0]["diverged"]) and all(all(s["diverged"]) for s in clipped)
        # Final losses are means over the finite seeds (NaN when none), and a seed whose
        # finite loss ended at or above chance counts as diverged too. Where every unclipped
        # seed went non-finite, a clipped run beats it only with a seed that did not diverge
        # (a finite loss at chance learned nothing). Otherwise a lower mean is claimed only
        # beyond the seed spread: every finite seed of a clipped run below every finite seed
        # of the unclipped one.
        base = grid.nan_mean(unclipped[0]["loss"])
        finite = [s for s in clipped if np.isfinite(grid.nan_mean(s["loss"]))]
        below = [s for s in finite if grid.finite_seeds_below(s["loss"], unclipped[0]["loss"])]
        kept = [s for s in finite if not all(s["diverged"])]
        lower = bool(kept if not np.isfinite(base) else below)
        # With several thresholds, a claim that holds at some of them names them: one
        # threshold's fewer diverged seeds read "Clipping reduced" beside another's 3/3.
        fewer_at = _only_at([s for s, n in zip(clipped, counts, strict=True) if n < lost], clipped)
        lower_at = _only_at(below if np.isfinite(base) else kept, clipped)
        # Why no clipped run is ranked below the unclipped one: the seeds overlap, or one
        # seed a side or a diverged seed leaves no spread to compare (then the run cannot
        # test the claim; it said "not supported ... beyond the seed spread" for all three).
        best = min(finite, key=lambda s: grid.nan_mean(s["loss"]), default=None)
        reason = (
            grid.unranked_reason(best["loss"], unclipped[0]["loss"])
            if best is not None and not lower
            else grid.WITHIN_SPREAD
        )
        # "every seed apart" of finite seeds beside a diverged one
        some_lost = any(grid.some_seed_diverged(s["loss"]) for s in below + unclipped[:1])
        apart = f"every {'finite ' if some_lost else ''}seed apart" + (
            f"; {lower_at}" if lower_at else ""
        )
        loss_text = (
            f"lowered the final loss ({apart})"
            if lower
            else "did not lower the final loss beyond the seed spread"
            if reason == grid.WITHIN_SPREAD
            else f"did not lower the final loss measurably ({reason})"
        )
        if every:
            loss_text = (
                "did not help: every seed diverged with and without clipping (a finite loss at "
                "or above chance counts as diverged)"
            )
        elif not np.isfinite(base):
            loss_text = (
                "kept a finite final loss"
                + (f" ({lower_at})" if lower_at else "")
                + " where every unclipped seed diverged"
                if lower
                else "did not help: every seed diverged with and without clipping (a finite "
                "loss at or above chance counts as diverged)"
            )
        text.append(
            "Clipping "
            + ("reduced" if fewer else "increased" if more else "did not reduce")
            + " the number of diverged seeds"
            + (f" ({fewer_at})" if fewer and fewer_at else "")
            + " and "
            + loss_text
            + " in this run"
            + (
                ": the seed's claim is not supported here."
                if every
                else "."
                if fewer
                else ": it made training less stable, so the seed's claim is not supported here."
                if more
                else "."
                if lower
                else ": the seed's claim is not supported here."
                if reason == grid.WITHIN_SPREAD or not np.isfinite(base)
                else ": this run cannot test the seed's claim."
            )
        )
    return " ".join(text)


def _only_at(some: list[dict], clipped: list[dict]) -> str:
    """'' when a claim holds at every clipped run; else the thresholds (`clip_global_norm`)
    it holds at and those it does not: 'at 1; not at 10'."""
    if len(some) == len(clipped):
        return ""

    def norms(runs: list[dict]) -> str:
        return ", ".join(format(s["clip"], "g") for s in runs)

    held = {id(s) for s in some}  # by identity: `in` compared whole summaries, curves and all
    return f"at {norms(some)}; not at {norms([s for s in clipped if id(s) not in held])}"


def answers(points: dict[str, dict]) -> dict[int, str]:
    """Q13 and Q11 in words, every claim with its measured numbers."""
    bptt, clip = _split(points)
    out = {}
    if bptt:
        out[13] = _answer_13(bptt)
    if clip:
        out[11] = _answer_11(clip)
    return out
