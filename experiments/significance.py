"""Paired significance of BLEU differences between translation outputs of the same sentences.

    python -m experiments.significance --references=R.txt --baseline=SMT.txt \
        --systems=NMT_seed0.txt,NMT_seed1.txt [--test=ar|bs] [--samples=10000] \
        [--tokenize=none] [--output=W/significance.json]

Each file holds one sentence a line, in the same order (experiments.smt_baseline writes
`translations.txt` and `references.txt`; experiments.exposure_bias's translation points write
`test_<greedy|beam>_seed<i>.txt` and `test_references.txt`). Every system is compared with the
baseline by `rnn_jax.bleu.paired_bleu_significance` (approximate randomisation or the
paired bootstrap, each counting ties, on sacrebleu's statistics and draws; seeded by
SACREBLEU_SEED); a markdown table goes to stdout and, with --output, the results to JSON. A
file that is missing, is not UTF-8 (named with file:line) or has another number of lines than
the references (or empty references, an empty --systems or one listed twice, an --output that
is a directory or whose folder is not one, a malformed SACREBLEU_SEED) is named, with exit
status 2, before any test runs; an unknown --test or --tokenize, or no --systems flag at all,
is absl's flag error (exit status 1).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app, flags

from experiments import grid
from rnn_jax import bleu
from rnn_jax.exits import refuse
from rnn_jax.train import metrics as run_metrics

FLAGS = flags.FLAGS


def read_lines(path: str | pathlib.Path) -> list[str]:
    """The lines of a one-sentence-a-line file (the last newline ends the last sentence).

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not UTF-8, naming `path:line` of the first bad byte.
    """
    data = pathlib.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Lines end as below: a lone "\r" ends one too (it counted none, so a file with
        # old-Mac line ends named line 1 for every bad byte).
        before = data[: error.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        line = before.count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({error.reason})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def write_lines(path: str | pathlib.Path, lines: Sequence[str]) -> None:
    """One sentence a line, each ended by a newline, written atomically: what `read_lines`
    reads back (an empty output is an empty line)."""
    run_metrics.write_text_atomic(path, "".join(f"{line}\n" for line in lines))


def compare(
    references: Sequence[str],
    baseline: Sequence[str],
    systems: dict[str, Sequence[str]],
    *,
    test: str = "ar",
    samples: int = 10_000,
    tokenize: str = "none",
) -> dict[str, dict]:
    """`{system name: paired_bleu_significance(baseline, system, references)}`."""
    return {
        name: bleu.paired_bleu_significance(
            baseline, output, references, test=test, samples=samples, tokenize=tokenize
        )
        for name, output in systems.items()
    }


def markdown(results: dict[str, dict], baseline_name: str) -> str:
    """One row per system: its BLEU, the baseline's, the difference and the p-value."""
    rows = [
        [
            name,
            f"{r['system_bleu']:.2f}",
            f"{r['baseline_bleu']:.2f}",
            f"{r['difference']:+.2f}",
            p_value_text(r["p_value"]),
        ]
        for name, r in results.items()
    ]
    first = next(iter(results.values()))
    header = ["system", "BLEU", f"baseline ({baseline_name})", "difference", "p"]
    test = "approximate randomisation" if first["test"] == "ar" else "paired bootstrap"
    table = grid.markdown_table(header, rows).rstrip()
    seed = first.get("seed")
    seeded = "unseeded" if seed is None else f"seed {seed} (SACREBLEU_SEED)"
    return f"{table}\n\np: two-sided {test}, {first['samples']} samples, {seeded}."


def p_value_text(p_value: float) -> str:
    """Four decimals, or two significant digits where those would round to 0.0000: with the
    +1 correction p >= 1 / (samples + 1) > 0, and from 20,000 samples on the smallest p read
    `0.0000`, a p-value no test of this kind gives."""
    return f"{p_value:.4f}" if p_value >= 5e-5 else f"{p_value:.1e}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        refuse(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.systems:
        refuse("--systems: expected one or more comma-separated files, got none")
    try:  # the draws' seed: a malformed SACREBLEU_SEED was a traceback from inside the test
        bleu.significance_seed()
    except ValueError as error:
        refuse(str(error))
    files = [("references", FLAGS.references), ("baseline", FLAGS.baseline)]
    files += [("systems", path) for path in FLAGS.systems]
    for flag, path in files:
        if not path:
            # `--systems=a.txt,` read "" as the current folder ("cannot read : Is a
            # directory"), and `--systems=,` was "--systems:  listed more than once".
            value = ",".join(FLAGS.systems) if flag == "systems" else path
            refuse(f"--{flag}={value}: an empty file name")
    repeated = sorted({path for path in FLAGS.systems if FLAGS.systems.count(path) > 1})
    if repeated:
        # `compare` keys results by file: a repeated one would silently become one row.
        refuse(f"--systems: {', '.join(repeated)} listed more than once")
    texts = []
    for flag, path in files:
        try:
            texts.append(read_lines(path))
        except OSError as error:
            refuse(f"--{flag}: cannot read {path}: {error.strerror}")
        except ValueError as error:
            refuse(f"--{flag}: {error}")
    if not texts[0]:
        refuse(f"--references: {FLAGS.references} has no lines")
    folder = pathlib.Path(FLAGS.output).parent
    if FLAGS.output and not folder.is_dir():
        # Checked before the test runs: it failed after the whole test, with a traceback.
        refuse(f"--output: {FLAGS.output}: its folder {folder} is not a directory")
    if FLAGS.output and pathlib.Path(FLAGS.output).is_dir():
        # Likewise: the atomic rename over a directory raised IsADirectoryError at the end.
        refuse(f"--output: {FLAGS.output} is a directory, not a file to write")
    for (flag, path), lines in zip(files, texts, strict=True):
        if len(lines) != len(texts[0]):
            refuse(
                f"--{flag}: {path} has {len(lines)} lines, --references {FLAGS.references} "
                f"{len(texts[0])}"
            )
    results = compare(
        texts[0],
        texts[1],
        dict(zip(FLAGS.systems, texts[2:], strict=True)),
        test=FLAGS.test,
        samples=FLAGS.samples,
        tokenize=FLAGS.tokenize,
    )
    print(markdown(results, FLAGS.baseline))
    if FLAGS.output:
        record = {"references": FLAGS.references, "baseline": FLAGS.baseline, "results": results}
        run_metrics.write_json_atomic(pathlib.Path(FLAGS.output), record)


if __name__ == "__main__":
    from sacrebleu.metrics import BLEU

    flags.DEFINE_string("references", None, "One reference sentence a line.", required=True)
    flags.DEFINE_string("baseline", None, "The baseline system's output.", required=True)
    flags.DEFINE_list("systems", None, "Outputs compared with the baseline.", required=True)
    flags.DEFINE_enum("test", "ar", list(bleu.SIGNIFICANCE_TESTS), "ar or bs (bootstrap).")
    flags.DEFINE_integer("samples", 10_000, "Randomisation trials or bootstrap resamples.", 1)
    flags.DEFINE_enum(
        "tokenize",
        "none",
        list(BLEU.TOKENIZERS),
        "sacrebleu tokenizer ('none': pre-tokenised text).",
    )
    flags.DEFINE_string("output", "", "Also write the results here as JSON.")
    app.run(main)
