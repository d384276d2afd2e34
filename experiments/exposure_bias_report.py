"""Tables, plots and seed answers of `experiments.exposure_bias` (Q8; 7, and with translation
16), from what its `run` stores in results.json (`points`, and `true_process`: the Markov
process's own FR − TF gap): W/exposure_bias.md, W/free_running_gap.png, W/true_process_nll.png
and the answers. The translation points' tables, plot and answer text are
`experiments.exposure_bias_translation_report`'s.

`split` (language-model points apart from translation points) is here too: `run` uses it to
pick the points each report is written from.
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments import exposure_bias_translation as translation
from experiments import exposure_bias_translation_report as translation_report
from experiments import grid


def split(summaries: dict[str, dict]) -> tuple[dict, dict]:
    """(language-model points, translation points)."""
    mt = {n: s for n, s in summaries.items() if s["corpus"] == translation.CORPUS}
    return {n: s for n, s in summaries.items() if n not in mt}, mt


def _ks(summary: dict) -> list[int]:
    return sorted(int(k.removeprefix("fr_nll_k")) for k in summary["metrics"] if "fr_nll_k" in k)


def _gap(summary: dict, k: int) -> list[float]:
    """Per-seed FR − TF NLL at step k; NaN for a seed whose NLL was not finite (stored as
    null by `grid.finite_or_none`)."""
    m = summary["metrics"]
    return [f - t for f, t in zip(_nan(m[f"fr_nll_k{k}"]), _nan(m[f"tf_nll_k{k}"]), strict=True)]


def report_markdown(summaries: dict[str, dict], reference: dict[str, dict] | None = None) -> str:
    """W/exposure_bias.md: one table per corpus; `reference` maps a corpus to its
    `true_process_gaps` (a line under that corpus's table)."""
    reference = reference or {}
    lines = [
        "# Teacher forcing, scheduled sampling and exposure bias (seed question 8)",
        "",
        "NLL in nats per token on held-out windows, mean ± std over seeds, at the positions "
        "after the gold prefix (prefix .. window). TF = teacher-forced (gold inputs); FR = the "
        "model's NLL of the gold token after it has fed on its own samples for k steps "
        "(k = 0: none yet); gap = FR − TF at the same position. For a language model the gold "
        "continuation does not depend on the model's samples, so the gap measures how firmly "
        "the model follows its own history, not damage; where a true process is known, the "
        "true-process NLL of the samples is what scores them.",
        "",
    ]
    for corpus in dict.fromkeys(s["corpus"] for s in summaries.values()):
        rows = [s for s in summaries.values() if s["corpus"] == corpus]
        ks = _ks(rows[0])
        shown = [k for k in ks if k in (1, 4, 16, 64)] or ks[-1:]
        entropy = rows[0]["entropy_rate"]
        header = ["regime", "schedule", "TF NLL", "FR NLL"] + [f"gap k={k}" for k in shown]
        if entropy:
            header.append(f"true-process NLL of samples (entropy rate {entropy:.3f})")
        table = []
        for s in rows:
            sched = s["schedule"]
            params = ", ".join(f"{k}={v:.4g}" for k, v in sched.items() if k != "name")
            row = [
                s["regime"],
                f"{sched['name']} ({params})",
                grid.mean_std(_nan(s["metrics"]["tf_nll"])),
                grid.mean_std(_nan(s["metrics"]["fr_nll"])),
                *(grid.mean_std(_nan(_gap(s, k))) for k in shown),
            ]
            if entropy:
                row.append(grid.mean_std(_nan(s["metrics"]["true_nll"])))
            table.append(row)
        lines += [f"## {corpus} (vocabulary {rows[0]['vocab_size']})", ""]
        lines.append(grid.markdown_table(header, table))
        if corpus in reference:
            lines += [_reference_sentence(reference[corpus], shown), ""]
    return "\n".join(lines)


def _reference_sentence(reference: dict[str, float], ks: list[int]) -> str:
    gaps = ", ".join(
        f"{reference[f'gap_k{k}']:+.3f} at k={k}" for k in ks if f"gap_k{k}" in reference
    )
    return (
        f"The true process itself (no exposure bias: its samples have the data's distribution), "
        f"scored the same way on the same windows: TF NLL {reference['tf_nll']:.3f}, FR NLL "
        f"{reference['fr_nll']:.3f}, gap {gaps}; its samples' NLL under itself "
        f"{reference['own_nll']:.3f}."
    )


def _nan(values: list) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _corpus_axes(summaries: dict[str, dict], corpora: list[str]) -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(corpora), figsize=(4.5 * len(corpora), 3.5), squeeze=False)
    return plt, fig, axes[0]


def plot_gaps(summaries: dict[str, dict], path: pathlib.Path) -> None:
    corpora = list(dict.fromkeys(s["corpus"] for s in summaries.values()))
    plt, fig, axes = _corpus_axes(summaries, corpora)
    for ax, corpus in zip(axes, corpora, strict=True):
        for s in (s for s in summaries.values() if s["corpus"] == corpus):
            ks = _ks(s)
            ax.plot(ks, [np.nanmean(_nan(_gap(s, k))) for k in ks], marker="o", label=s["regime"])
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("steps fed on its own samples (k)")
        ax.set_title(corpus)
    axes[0].set_ylabel("FR − TF NLL (nats)")
    axes[-1].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_true_nll(summaries: dict[str, dict], path: pathlib.Path) -> None:
    rows = [s for s in summaries.values() if s["entropy_rate"]]
    plt, fig, axes = _corpus_axes(summaries, ["markov"])
    ax = axes[0]
    for s in rows:
        ks = _ks(s)
        ax.plot(
            ks,
            [np.nanmean(_nan(s["metrics"][f"true_nll_k{k}"])) for k in ks],
            marker="o",
            label=s["regime"],
        )
    ax.axhline(rows[0]["entropy_rate"], color="gray", linestyle="--", label="entropy rate")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("generated position k")
    ax.set_ylabel("true-process NLL of the sample (nats)")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def answers(results: dict) -> dict[int, str]:
    """Markdown answers to seed questions 7, 8 and (translation) 16 from a finished run.

    Sample quality is judged only where a true process can score the samples (the Markov
    language): the regime whose free-running samples' true-process NLL is closest to the
    entropy rate (what the true process's own samples score) is named best. The FR − TF gap
    is reported as what it is, how firmly a model follows its own history, beside the true
    process's own gap when W/results.json has it (`true_process`).

    A regime is called better than another (lowest teacher-forced NLL, samples closer to the
    entropy rate) only beyond the seed spread: every seed of one better than every seed of
    the other (`grid.finite_seeds_below`); a lower mean with overlapping seeds is reported as
    within the seed spread. Short of that, a pair with a seed that is not finite is "not
    compared seed by seed" and a pair with one seed has "no seed spread to compare" (both
    read "within the seed spread"); a regime with no finite value reads "n/a" (was "nan").
    """
    points, mt = split(results["points"])
    references = results.get("true_process", {})
    out = {}
    q8, q7 = [], []
    for corpus in dict.fromkeys(s["corpus"] for s in points.values()):
        rows = {s["regime"]: s for s in points.values() if s["corpus"] == corpus}
        ks = _ks(next(iter(rows.values())))
        far = ks[-1]

        def mean(s: dict, key: str) -> float:
            return grid.nan_mean(s["metrics"][key])

        tf_seeds = {r: s["metrics"]["tf_nll"] for r, s in rows.items()}
        best_tf, tied_tf = grid.best_within_spread(tf_seeds)
        text = (
            f"{corpus}: teacher-forced NLL after the gold prefix "
            + ", ".join(
                f"{r} {grid.number_text(mean(s, 'tf_nll'), '.3f')}" for r, s in rows.items()
            )
            + (
                " (no regime has a finite value)"
                if best_tf is None
                else f" ({translation_report.ONLY_REGIME})"
                if len(rows) == 1
                else f" (best: {best_tf})"
                if not tied_tf
                else f" (lowest mean: {best_tf}, "
                f"{grid.spread_phrase(tf_seeds[best_tf], {r: tf_seeds[r] for r in tied_tf})})"
            )
            + f"; FR − TF gap at k={far} "
            + ", ".join(
                f"{r} {grid.number_text(grid.nan_mean(_gap(s, far)), '+.3f')}"
                for r, s in rows.items()
            )
            + " (how firmly the model follows its own history, not damage: the gold "
            "continuation does not depend on the model's samples)."
        )
        entropy = next(iter(rows.values()))["entropy_rate"]
        reference = references.get(corpus, {})
        if f"gap_k{far}" in reference:
            text += (
                f" The true process itself, which has no exposure bias, has a gap of "
                f"{reference[f'gap_k{far}']:+.3f} at k={far} "
                f"({reference['fr_nll'] - reference['tf_nll']:+.3f} averaged over the generated "
                "positions) on the same windows."
            )
        if entropy:
            true = {r: mean(s, "true_nll") for r, s in rows.items()}
            # per seed: how far its samples' true-process NLL is from the entropy rate
            distance = {
                r: [None if v is None else abs(v - entropy) for v in s["metrics"]["true_nll"]]
                for r, s in rows.items()
            }
            best, tied = grid.best_within_spread(distance)
            text += (
                " True-process NLL of the free-running samples "
                + ", ".join(f"{r} {grid.number_text(v, '.3f')}" for r, v in true.items())
                + f" against an entropy rate of {entropy:.3f} (what the true process's own "
                + (
                    "samples score); no regime's samples have a finite value."
                    if best is None
                    else f"samples score); {translation_report.ONLY_REGIME}."
                    if len(rows) == 1
                    else f"samples score); best samples by this measure: {best}."
                    if not tied
                    else f"samples score); closest on average: {best}, but "
                    f"{grid.spread_phrase(distance[best], {r: distance[r] for r in tied})}, so no "
                    "regime's samples are named best."
                )
            )
            scheduled = [r for r in ("linear", "exponential", "inverse_sigmoid") if r in true]
            if scheduled and "teacher_forcing" in true:
                text += _scheduled_vs_teacher_forcing(distance, scheduled)
            if "teacher_forcing" in rows:
                tf_nll = mean(rows["teacher_forcing"], "tf_nll")
                finite, total = grid.finite_seeds(rows["teacher_forcing"]["metrics"]["tf_nll"])
                # `model.cell`; a summary stored before the cell was recorded names none
                cell = rows["teacher_forcing"].get("cell", "").upper()
                own = (
                    f", {tf_nll - reference['tf_nll']:+.3f} against the true process's own NLL "
                    f"of the same held-out windows ({reference['tf_nll']:.3f})"
                    if "tf_nll" in reference
                    else ""
                )
                lm = f"the teacher-forced {cell + ' ' if cell else ''}LM"
                seeds = (
                    f" ({finite.size} of {total} seeds; the others' NLL was not finite)"
                    if finite.size < total
                    else ""
                )
                q7.append(
                    f"On the Markov language (entropy rate {entropy:.3f} nats), {lm} reaches "
                    f"{tf_nll:.3f} nats/token on held-out windows{seeds} "
                    f"({tf_nll - entropy:+.3f} against the entropy rate{own})."
                    if finite.size
                    else f"On the Markov language (entropy rate {entropy:.3f} nats), {lm} has "
                    "no finite held-out NLL: every seed diverged."
                )
        else:
            text += (
                f" {corpus} has no known true process to score samples with, so these numbers "
                "do not say which regime generates better text."
            )
        q8.append(text)
    if q8:
        out[8] = " ".join(q8)
    if mt:
        out[8] = (out[8] + " " if q8 else "") + translation_report.answer_text(mt)
        out[16] = translation_report.answer_text(mt)
    if q7:
        out[7] = " ".join(q7)
    return out


def _scheduled_vs_teacher_forcing(distance: dict[str, list], scheduled: list[str]) -> str:
    """The sentence comparing the scheduled-sampling regimes' samples with teacher forcing's
    by their per-seed distance from the entropy rate, claiming only beyond the seed spread."""
    teacher = distance["teacher_forcing"]
    if not grid.finite_seeds(teacher)[0].size:
        # every regime with a finite mean was "closer on average", "within the seed spread"
        return " Teacher forcing's samples have no finite value to compare with (it diverged)."
    closer = [r for r in scheduled if grid.ranking_mean(distance[r]) < grid.ranking_mean(teacher)]
    clear = [r for r in closer if grid.finite_seeds_below(distance[r], teacher)]
    reasons = {r: grid.unranked_reason(distance[r], teacher) for r in scheduled}
    within = [r for r in closer if r not in clear and reasons[r] == grid.WITHIN_SPREAD]
    unranked = [
        f"{r} ({reasons[r]})" for r in closer if r not in clear and reasons[r] != grid.WITHIN_SPREAD
    ]
    text = ""
    if clear:
        text += (
            f" Scheduled sampling comes closer to it than teacher forcing with {', '.join(clear)}."
        )
    if within:
        text += (
            f" {', '.join(within)} closer on average than teacher forcing, but within the "
            "seed spread."
        )
    if unranked:
        text += f" Closer on average than teacher forcing, but not ranked: {', '.join(unranked)}."
    if not closer:
        overlapping = [r for r in scheduled if not grid.finite_seeds_below(teacher, distance[r])]
        labels = [
            f"{r} within the seed spread"
            if reasons[r] == grid.WITHIN_SPREAD
            else f"{r} not ranked ({reasons[r]})"
            for r in overlapping
        ]
        text += " No scheduled-sampling regime comes closer to it than teacher forcing" + (
            f" (on average; {', '.join(labels)})." if labels else "."
        )
    return text
