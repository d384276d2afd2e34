"""Seed question 7: an RNN language model trained with truncated BPTT (Zaremba et al. 2014).

    python -m experiments.language_model --workdir=W \
        --config=experiments/configs/language_model.py:<smoke|quick|full>
    # then, from the best-validation checkpoint and the saved vocabulary:
    python -m experiments.language_model --workdir=W --config=<same> --sample=200 --prompt=The
    python -m experiments.language_model --workdir=W --config=<same> --eval_contexts=0,64,256

Measures per-token cross-entropy and perplexity on the validation and test streams (test with
the best-validation checkpoint; Zaremba et al.'s code and the TF tutorial test the final
model) beside context-free
baselines (W/baselines.json: add-one smoothed unigram of the training tokens, uniform), and
writes W/language_model.md and W/learning_curves.png (experiments/run_report.py; the table,
the answer to question 7 and the context study's table: experiments/language_model_report.py).
Configs, expected runtimes and results: experiments/configs/language_model.py. The task (rules,
corpus, `LanguageModelTask`) is experiments/language_model_task.py, sampling
experiments/language_model_sampling.py, the context study experiments/language_model_context.py.

`--prompt` is in the run's own vocabulary: characters for Tiny Shakespeare, whitespace-separated
tokens otherwise (PTB's words are lower case, so `--prompt=The` is refused there; Markov symbols
as `--prompt="3 4"`); a prompt outside the vocabulary exits 2 naming its unknown tokens. A
Markov run is reported per token, never per character.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import ml_collections

from experiments import language_model_report as report
from experiments import run_report
from experiments.language_model_context import context_study
from experiments.language_model_report import NAME
from experiments.language_model_sampling import generate, sample_prompt
from experiments.language_model_task import RULES, LanguageModelTask
from rnn_jax.predicates import is_decimal
from rnn_jax.train import Task
from rnn_jax.train import config as cfg


def checkpoint_label(config: ml_collections.ConfigDict) -> str:
    """Which checkpoint `_restore` reads, for the outputs that name it: the best-validation
    one, or the newest of a run that kept none (`train.keep_best=False`)."""
    return "best checkpoint" if config.train.keep_best else "newest checkpoint (keep_best=False)"


def _restore(config: ml_collections.ConfigDict, workdir: str, task: Task) -> tuple:
    """`restore_model` for `--sample` / `--eval_contexts`: the best checkpoint, or the newest
    one of a run that kept none (`train.keep_best=False`). A run directory without it, or a
    config other than the run's, is a ConfigError (one line, exit status 2), not a
    traceback."""
    from rnn_jax.train.restore import restore_model

    try:
        return restore_model(config, workdir, task, best=config.train.keep_best)
    except ValueError as error:
        advice = "; train the run first" if str(error).startswith("no checkpoint") else ""
        raise cfg.ConfigError(f"--workdir={workdir}: {error}{advice}") from None


def _evaluate_contexts(config: ml_collections.ConfigDict, workdir: str, task: Task) -> None:
    from absl import flags

    from rnn_jax.train.metrics import write_json_atomic, write_text_atomic

    # ASCII digits only (`is_decimal`): int() read '٣' as 3 and '1_6' as 16
    entries = [c.strip() for c in flags.FLAGS.eval_contexts.split(",")]
    if not all(map(is_decimal, entries)):
        raise cfg.ConfigError(
            f"--eval_contexts={flags.FLAGS.eval_contexts!r}: comma-separated integers >= 0"
        )
    contexts = [int(c) for c in entries]
    model, step = _restore(config, workdir, task)
    table = context_study(model, task, contexts)
    _, unit = report._corpus_and_unit(pathlib.Path(workdir), config.to_dict()["data"])
    text = report.context_markdown(table, step, unit, checkpoint_label(config))
    write_json_atomic(pathlib.Path(workdir) / "eval_context.json", {"step": step, "nll": table})
    write_text_atomic(pathlib.Path(workdir) / "eval_context.md", text)
    print(text)


def _given(flag_values: Any, name: str) -> bool:
    """Whether flag `name` was given on the command line (a test's stand-in namespace of
    values has no such record: taken as not given)."""
    try:
        return bool(flag_values[name].present)
    except (TypeError, KeyError, AttributeError):
        return False


def _train_or_sample(config: ml_collections.ConfigDict, workdir: str, task: Task) -> None:
    from absl import flags

    sample, temperature = flags.FLAGS.sample, flags.FLAGS.temperature
    if sample < 0:
        raise cfg.ConfigError(f"--sample={sample}: must be >= 0 (0: train)")
    if sample and flags.FLAGS.eval_contexts:
        # one of the two would silently be ignored
        raise cfg.ConfigError(
            f"--sample={sample} and --eval_contexts={flags.FLAGS.eval_contexts!r}: give one"
        )
    if sample and not (math.isfinite(temperature) and temperature > 0):
        raise cfg.ConfigError(f"--temperature={temperature}: must be a number > 0")
    unused = [f"--{name}" for name in ("temperature", "prompt") if _given(flags.FLAGS, name)]
    if not sample and unused:
        # ignored without --sample, unchecked too (--temperature=-3 ran the context study)
        raise cfg.ConfigError(f"{' and '.join(unused)}: only used with --sample=N")
    if flags.FLAGS.eval_contexts:
        _evaluate_contexts(config, workdir, task)
        return
    if not flags.FLAGS.sample:
        run_report.train_and_report(
            config, workdir, task, name=NAME, report=report.report_markdown, train_key="train_nll"
        )
        return
    model, step = _restore(config, workdir, task)
    vocab = json.loads((pathlib.Path(workdir) / "vocab.json").read_text())
    char_level = report.unit_of(config.data.corpus) == "char"
    prompt = sample_prompt(flags.FLAGS.prompt, vocab, char_level)
    text = generate(
        model,
        vocab,
        prompt,
        flags.FLAGS.sample,
        jax.random.key(config.seed),
        flags.FLAGS.temperature,
    )
    print(f"[{checkpoint_label(config)}, step {step}]")
    print(("" if char_level else " ").join(prompt + text))


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answer to seed question 7 from a finished run's files."""
    return report.answers(workdir)


if __name__ == "__main__":
    from absl import flags

    from rnn_jax.train import cli

    flags.DEFINE_integer(
        "sample",
        0,
        "If > 0: sample this many tokens from the run's best checkpoint (W/best; the "
        "newest of W/checkpoints with train.keep_best=False; vocabulary W/vocab.json) "
        "instead of training.",
    )
    flags.DEFINE_string("prompt", "The", "Prompt for --sample (characters or words).")
    flags.DEFINE_float("temperature", 1.0, "Softmax temperature for --sample.")
    flags.DEFINE_string(
        "eval_contexts",
        "",
        "If set (e.g. '0,64,256'): instead of training, evaluate the run's best checkpoint "
        "(the newest with train.keep_best=False) on "
        "valid and test with one row (full history) and with data.eval_batch_size rows at "
        "each of these contexts; writes W/eval_context.{json,md}.",
    )
    cli.main(
        LanguageModelTask,
        RULES,
        run=_train_or_sample,
        # sampling and the context study restore a finished run: `_restore` names a config
        # that differs from it
        reads_only=lambda: bool(flags.FLAGS.sample or flags.FLAGS.eval_contexts),
    )
