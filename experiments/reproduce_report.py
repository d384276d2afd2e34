"""The main job's report: W/report.md, the seed's 20 questions answered by the numbers measured.

Each question gets the `answers(workdir) -> {question: markdown}` of the experiments that
supply one (several answers are paragraphs of their own), or the library code that answers
it, or "not measured"; then each experiment gets a section with its tables and plots, saying
when its run failed, was not finished or was skipped. A line names the machine the timings
come from.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import platform
import sys
import time
from collections.abc import Sequence

from experiments.reproduce_run import IN_USE, NO_RESULTS, NOT_STARTED, STALLED
from experiments.reproduce_variants import finished_variant
from rnn_jax import hardware, predicates
from rnn_jax.files import RESULTS_FILE, write_text_atomic
from rnn_jax.train.saved_config import read_json_object

QUESTIONS = {
    1: "What is a recurrent neural network?",
    2: "Why are RNNs useful for NLP tasks?",
    3: "What is the vanishing gradient problem?",
    4: "How do LSTMs address vanishing gradients?",
    5: "What is a GRU and how does it differ from an LSTM?",
    6: "What is a bidirectional RNN and why is it useful?",
    7: "How are RNNs used in language modelling?",
    8: "What is teacher forcing (and exposure bias)?",
    9: "How do RNNs compare to transformers?",
    10: "Do RNNs still have a role in modern NLP?",
    11: "What is gradient clipping and why is it used?",
    12: "How do stacked RNNs increase capacity?",
    13: "What is truncated BPTT?",
    14: "How are RNNs used for sequence labelling?",
    15: "What are the drawbacks of RNNs for long sequences?",
    16: "How did RNNs contribute to early neural MT?",
    17: "What regularisation is used with RNNs?",
    18: "Many-to-one vs many-to-many?",
    19: "Why is weight initialisation important?",
    20: "What should you know about RNNs for interviews?",
}
# Where a question is answered by library code and its tests rather than by a measurement.
LIBRARY = {
    1: "rnn_jax/cells.py (each cell's equations) and rnn_jax/scan.py (unroll), tested against "
    "per-step numpy loops; what the state holds is measured by experiments/state_probe.py "
    "(linear probes of each layer of an LSTM LM on UD English-EWT), whose answer replaces this "
    "line once it has run.",
    2: "the language, tagging and classification models in rnn_jax/models/ and their tests on "
    "PTB/Tiny Shakespeare, UD-EWT, CoNLL-2003 and SST slices; measured by "
    "experiments/word_order.py (a context-free bag, a BiLSTM on shuffled words and on the real "
    "order, on UD English-EWT tagging and SST-2), whose answer replaces this line once it has run.",
    6: "rnn_jax/layers.py (bidirectional stacks), tested against two manual passes; measured "
    "by experiments/bidirectional.py (forward, backward and bidirectional LSTM taggers at equal "
    "size on UD English-EWT), whose answer replaces this line once it has run.",
    11: "rnn_jax/train/optim.py (clip_global_norm; the pre-clip norm is logged every step).",
    12: "rnn_jax/layers.py (stacked layers, inter-layer dropout, residuals); measured by "
    "experiments/regularization.py (depth at equal size) and experiments/state_probe.py (what "
    "each layer holds), whose answers replace this line once they have run.",
    13: "rnn_jax/truncated_scan.py truncated_unroll and the language model's carried state.",
    14: "rnn_jax/models/tagger.py and rnn_jax/crf.py (BiRNN-CRF); measured by "
    "experiments/sequence_labelling.py and, softmax vs CRF head, experiments/bidirectional.py.",
    16: "rnn_jax/models/seq2seq.py (attention, scheduled sampling), rnn_jax/decoding.py "
    "(greedy, beam) and BLEU in rnn_jax/bleu.py.",
    17: "rnn_jax/train/regularizers.py and rnn_jax/models/lm.py (dropout variants, weight "
    "drop, AR/TAR).",
    18: "rnn_jax/models/classifier.py (many-to-one) vs tagger.py / lm.py (many-to-many).",
    20: 'this report, and experiments/README.md\'s "Q20 in short" (what Q1-Q19 measured and '
    "did not reproduce).",
}


def experiment_section(
    name: str, workdir: pathlib.Path, exit_code: int = 0
) -> tuple[str, dict[int, str]]:
    """(markdown section with the experiment's tables and plots, its answers by question).

    `exit_code`: the status its run in this reproduction ended with (0: it succeeded or ran
    earlier); a failed run says so, and its answers are reported only if it finished."""
    lines = [f"## `{name}`", ""]
    if exit_code:
        how = (
            "stalled (no CPU time) on its last attempt and was killed by the watchdog"
            if exit_code == STALLED
            else f"exited with status 0 but wrote no {RESULTS_FILE}"
            if exit_code == NO_RESULTS
            else "was not run: another process held its folder's run.lock"
            if exit_code == IN_USE
            else "could not be started: its folder could not be made (the job's output says why)"
            if exit_code == NOT_STARTED
            else f"exited with status {exit_code}"
        )
        lines += [f"**FAILED in this run**: it {how} (log: `{name}/log.txt`).", ""]
    results_path = workdir / RESULTS_FILE
    if not results_path.is_file():
        lines += [f"Not finished: no {RESULTS_FILE} (log: `{name}/log.txt`).", ""]
        return "\n".join(lines), {}
    try:
        # JSON that is not an object (a hand-edited file) was an AttributeError traceback.
        results = read_json_object(results_path)
    except (OSError, ValueError) as error:
        lines += [f"Its results.json could not be read ({type(error).__name__}: {error}).", ""]
        return "\n".join(lines), {}
    # A member of another type (`"timing": null`, `"final": [...]`, a wall time in quotes)
    # was a traceback that lost the whole report after every experiment had run.
    timing, final = results.get("timing", {}), results.get("final", {})
    wall = timing.get("wall_s") if isinstance(timing, dict) else None
    if not predicates.is_finite_number(wall):
        wall = None
    if not isinstance(final, dict):
        lines += [f"Its results.json's `final` is not an object: {str(final)[:80]!r}.", ""]
        final = {}
    # a run finished before variants were recorded was labelled ':quick' whatever it ran
    variant = finished_variant(workdir)
    command = (
        f"python -m experiments.{name} --workdir=W/{name} "
        f"--config=experiments/configs/{name}.py:{variant or '<variant not recorded>'}"
    )
    lines += [f"Command: `{command}`" + (f" ({wall / 60:.1f} min)." if wall else "."), ""]
    answers: dict[int, str] = {}
    module = importlib.import_module(f"experiments.{name}")
    if hasattr(module, "answers"):
        try:
            answers = module.answers(workdir)
        except Exception as error:  # e.g. a run from an older version, or a bug in answers():
            # one experiment's answers must not cost the report of all the others
            lines += [f"Its answers could not be read ({type(error).__name__}: {error}).", ""]
            print(f"experiments.reproduce: {name}: answers failed: {error!r}", file=sys.stderr)
    for table in sorted(workdir.glob("*.md")):
        text = table.read_text().strip()
        lines += [_demote_headings(text), ""]
    if not list(workdir.glob("*.md")):
        scalars = {k: v for k, v in final.items() if predicates.is_finite_number(v)}
        lines += [f"- {k}: {v:.6g}" for k, v in scalars.items()] + [""]
    lines += [f"![{p.name}]({name}/{p.name})" for p in sorted(workdir.glob("*.png"))] + [""]
    return "\n".join(lines), answers


def _demote_headings(text: str) -> str:
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def write_report(
    root: pathlib.Path,
    names: Sequence[str],
    wall: dict[str, float],
    *,
    failed: dict[str, int] | None = None,
    skipped: Sequence[str] = (),
    variant: str = "quick",
) -> str:
    """W/report.md: answers by question, then each experiment's tables and plots.

    `failed`: exit status by experiment, of those whose run in this reproduction failed;
    `skipped`: experiments left out by --only/--skip that have no finished run of this variant
    in `root` (`main` passes those that have one in `names`: `wall` lacks them). Both are
    named in the header and get a section saying so, instead of silently missing. `variant`:
    the config variant this reproduction ran (named in the header's command unless `quick`)."""
    failed = failed or {}
    sections, answers = [], {}
    for name in names:
        section, found = experiment_section(name, root / name, failed.get(name, 0))
        sections.append(section)
        for question, text in found.items():
            answers.setdefault(question, []).append(text)
    for name in skipped:
        sections.append(
            f"## `{name}`\n\nSkipped (--only/--skip): not run, and not reported, by this "
            "reproduction.\n"
        )
    lines = [
        "# rnn_jax: the seed's 20 questions, measured",
        "",
        f"Produced by `python -m experiments.reproduce --workdir={root}"
        + ("" if variant == "quick" else f" --variant={variant}")
        + f"` on {time.strftime('%Y-%m-%d %H:%M')}; experiments run: "
        + ", ".join(f"{n} ({wall[n] / 60:.1f} min)" if n in wall else n for n in names)
        + (
            f" (not run this time: {', '.join(n for n in names if n not in wall)}, reported "
            "from their earlier finished runs in this workdir)"
            if len(wall) < len(names)
            else ""
        )
        + ". experiments/README.md maps each question to its experiment and to published results.",
        "",
    ]
    if failed:
        lines += [
            "**Failed in this run** (their sections below say how; questions only they answer "
            "fall back to the text below): " + ", ".join(failed) + ".",
            "",
        ]
    if skipped:
        lines += [
            "**Skipped** (--only/--skip; questions only they answer fall back to the text "
            "below): " + ", ".join(skipped) + ".",
            "",
        ]
    lines += [_machine_line(wall), "", "## Answers by question", ""]
    for number, question in QUESTIONS.items():
        found = answers.get(number)
        fallback = (
            f"Answered by library code: {LIBRARY[number]}"
            if number in LIBRARY
            else "Not measured by this run (its experiment did not run, did not finish or was "
            "skipped)."
        )
        # Answers from several experiments are paragraphs of their own: one may end in a
        # table, which a following line would otherwise join as a row.
        lines.append(f"**Q{number}. {question}** " + ("\n\n".join(found) if found else fallback))
        lines.append("")
    text = "\n".join(lines + sections)
    write_text_atomic(root / "report.md", text)  # a stop mid-write keeps the old report whole
    return text


def _machine_line(wall: dict[str, float]) -> str:
    """Where the timings come from: they are only comparable on the same machine and load."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    total = sum(wall.values()) / 60
    cpu = hardware.cpu_description()
    return (
        f"Machine: {platform.machine()} {cpu['cpu_model']} ({cpu['cpu_simd']}), "
        f"{os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load average (1, 5, 15 min) when the report was "
        f"written: {load}; experiments run now: {total:.1f} min in total."
    )
