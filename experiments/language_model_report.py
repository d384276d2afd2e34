"""Tables and seed answer of `experiments.language_model` (Q7), from a finished run's files.

W/language_model.md (NLL, bits and perplexity per split beside the context-free unigram and
uniform baselines), the answer to question 7, and W/eval_context.md (the context study's
NLLs with one row and with several rows at each context, and their differences).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

from experiments import run_report
from rnn_jax.metrics import perplexity

NAME = "language_model"


def unit_of(corpus: str) -> str:
    """'char' for the character corpus, else 'token': what a model of `corpus` (`data.corpus`)
    predicts. Not read off the vocabulary: a Markov language of at most 10 symbols has
    one-character token names ("0".."9") but its tokens are symbols, not characters."""
    return "char" if corpus == "tiny_shakespeare" else "token"


def _corpus_and_unit(workdir: pathlib.Path, data: dict) -> tuple[str, str]:
    """('Tiny Shakespeare', 'char') etc.: what the run modelled, and per what its NLL is."""
    vocab = run_report.read_json(workdir, "vocab.json")
    unit = unit_of(data["corpus"])
    corpus = {
        "markov": f"a synthetic order-{data['markov_order']} Markov language",
        "ptb": "Penn Treebank words",
        "tiny_shakespeare": "Tiny Shakespeare characters",
    }.get(data["corpus"], data["corpus"])
    return f"{corpus} (vocabulary {len(vocab)})", unit


def _split_rows(workdir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Per split: the model's NLL per seed (train: last logging window's `train_nll`, without
    AR/TAR terms; valid/test: best-validation checkpoint) and the unigram baseline's."""
    final = run_report.read_json(workdir, run_report.RESULTS_FILE)["final"]
    unigram = run_report.read_json(workdir, "baselines.json")["unigram"]
    rows = {}
    for split in ("train", "valid", "test"):
        nll = run_report.seed_values(final, "train_nll" if split == "train" else f"{split}_loss")
        if nll is not None:
            rows[split] = {"nll": nll, "unigram": unigram.get(f"{split}_loss")}
    return rows


def report_markdown(workdir: pathlib.Path) -> str:
    """W/language_model.md: NLL, bits and perplexity per split beside the unigram baseline."""
    config = run_report.read_json(workdir, "config.json")
    final = run_report.read_json(workdir, run_report.RESULTS_FILE)["final"]
    uniform = run_report.read_json(workdir, "baselines.json")["uniform"]
    corpus, unit = _corpus_and_unit(workdir, config["data"])
    header = ["split", f"NLL (nats/{unit})", f"bits/{unit}", "perplexity"]
    header += [f"unigram bits/{unit}", "unigram perplexity"]
    table = []
    for split, row in _split_rows(workdir).items():
        nll, base = row["nll"], row["unigram"]
        table.append(
            [
                split,
                nll,
                [v / math.log(2) for v in nll],
                [perplexity(v) for v in nll],
                None if base is None else base / math.log(2),
                None if base is None else perplexity(base),
            ]
        )
    return "\n".join(
        [
            "# RNN language model (seed question 7)",
            "",
            f"{run_report.describe_model(config['model'])} on {corpus}, truncated BPTT over "
            f"{config['data']['bptt_length']} steps with the state carried across batches; "
            f"`{run_report.config_name(workdir, NAME)}`. "
            + run_report.protocol_text(config, final)
            + f" Baselines without context: the add-one smoothed unigram model of the training "
            f"{unit}s, and the uniform model ({math.log2(uniform['perplexity']):.3f} "
            f"bits/{unit}, perplexity {uniform['perplexity']:.0f}).",
            "",
            run_report.metric_table(header, table),
        ]
    )


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Question 7 from a finished run: the measured bits/perplexity vs the unigram baseline."""
    config = run_report.read_json(workdir, "config.json")
    uniform = run_report.read_json(workdir, "baselines.json")["uniform"]
    corpus, unit = _corpus_and_unit(workdir, config["data"])
    rows = _split_rows(workdir)
    split = "test" if "test" in rows else "valid"
    nll, base = rows[split]["nll"], rows[split]["unigram"]
    bits = [v / math.log(2) for v in nll]
    text = (
        f"A language model predicts each next {unit} from a recurrent state that summarises "
        f"everything before it. The {run_report.describe_model(config['model'])} trained with "
        f"truncated BPTT ({config['data']['bptt_length']} steps, state carried across "
        f"batches) on {corpus} (`{run_report.config_name(workdir, NAME)}`) reaches a {split} "
        f"NLL of {run_report.summary_text(nll, unit=f' nats/{unit}')}, i.e. "
        f"{run_report.summary_text(bits, seeds=False, unit=f' bits/{unit}')}, "
        f"perplexity {run_report.summary_text([perplexity(v) for v in nll], 2, seeds=False)}; "
        f"a unigram model of the "
        f"training {unit}s (no context) gets {base / math.log(2):.3f} bits/{unit} (perplexity "
        f"{perplexity(base):.2f}) and uniform guessing {math.log2(uniform['perplexity']):.3f} "
        f"(perplexity {uniform['perplexity']:.0f})."
    )
    return {7: text}


def _difference(value: float) -> str:
    """'+0.00295'; a difference that rounds to zero at 5 decimals is '0' (not '-0.00000')."""
    return "0" if abs(value) < 5e-6 else f"{value:+.5f}"


def context_markdown(
    table: dict[str, dict[str, float]], step: int, unit: str, checkpoint: str = "best checkpoint"
) -> str:
    """W/eval_context.md: the NLLs of `context_study` and their difference from one row;
    `checkpoint` names the one evaluated (`checkpoint_label`)."""
    columns = list(next(iter(table.values())))
    header = ["split"] + [f"{c} (nats/{unit})" for c in columns]
    rows = []
    for split, row in table.items():
        exact = row["1 row"]
        rows.append(
            [split]
            + [
                f"{row[c]:.5f}" + ("" if c == "1 row" else f" ({_difference(row[c] - exact)})")
                for c in columns
            ]
        )
    return "\n".join(
        [
            "# LM evaluation: how much history the evaluation rows need",
            "",
            f"{checkpoint[0].upper()}{checkpoint[1:]} (step {step}), replica 0. `1 row`: the "
            "whole split as one row, every target seeing all the text before it (the "
            "tutorial's 1 x 1 evaluation); "
            "`k rows, context c`: `rnn_jax.data.LMEvalStream`, each row reading up to c "
            "unscored tokens before its first target (in brackets: the difference from 1 row).",
            "",
            run_report.metric_table(header, rows),
            "",
        ]
    )
