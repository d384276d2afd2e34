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
Configs, expected runtimes and results: experiments/configs/language_model.py.

`--prompt` is in the run's own vocabulary: characters for Tiny Shakespeare, whitespace-separated
tokens otherwise (PTB's words are lower case, so `--prompt=The` is refused there; Markov symbols
as `--prompt="3 4"`); a prompt outside the vocabulary exits 2 naming its unknown tokens. A
Markov run is reported per token, never per character.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import language_model_report as report
from experiments import run_report
from experiments.language_model_report import NAME
from rnn_jax import decoding
from rnn_jax.cells import get_cell
from rnn_jax.data import LMEvalStream, LMStream, MarkovLanguage, lm_corpus
from rnn_jax.data.lm_corpus import LMCorpus, markov_lm
from rnn_jax.metrics import perplexity
from rnn_jax.models import RNNLanguageModel
from rnn_jax.predicates import is_decimal
from rnn_jax.train import Task, regularizers
from rnn_jax.train import config as cfg
from rnn_jax.train.rules import (
    Rules,
    boolean,
    int_at_least,
    non_negative,
    number_or_none,
    one_of,
    positive,
    positive_or_none,
    probability,
)

RULES: Rules = {
    "model.cell": one_of("elman", "lstm", "gru"),
    "model.num_layers": positive,
    "model.embed_size": positive_or_none,  # None: = model.hidden_size
    "model.dropout_input": probability,
    "model.dropout_between": probability,
    "model.dropout_output": probability,
    "model.recurrent_dropout": probability,
    "model.embedding_dropout": probability,
    "model.weight_drop": probability,
    "model.init_scale": positive_or_none,
    # cells.init refused NaN/inf only when the model was built: a traceback, exit status 1
    "model.forget_bias": number_or_none,
    # switches: a `--config.k=None` would read as False
    "model.tie_embeddings": boolean,
    "model.locked_dropout": boolean,
    "model.compute_dtype": one_of("float32", "bfloat16"),
    "objective.time_reduction": one_of("mean", "sum"),
    "objective.ar_alpha": non_negative,
    "objective.tar_beta": non_negative,
    "data.corpus": one_of("markov", "ptb", "tiny_shakespeare"),
    "data.bptt_length": positive,
    "data.eval_batch_size": positive,
    "data.eval_context": int_at_least(0),
    # What MarkovLanguage accepts (vocab_size >= 2, concentration > 0; the seed seeds numpy):
    # anything else failed in the task's constructor with a traceback, not exit status 2.
    "data.markov_vocab_size": int_at_least(2),
    "data.markov_order": positive,
    "data.markov_concentration": positive,
    "data.markov_seed": int_at_least(0),
    "data.markov_train_tokens": positive,
    "data.markov_eval_tokens": positive,
}


def load_corpus(data: ml_collections.ConfigDict) -> LMCorpus:
    """The corpus named by `data.corpus` (Markov: sampled from the config's language).

    Raises:
      ConfigError: a Markov language `MarkovLanguage` refuses, e.g. more than 5e7 transition
        probabilities (`data.markov_vocab_size ** (data.markov_order + 1)`, which no
        single-key rule sees): one line naming both keys, not a traceback (exit status 1).
    """
    if data.corpus == "markov":
        try:
            language = MarkovLanguage(
                vocab_size=data.markov_vocab_size,
                order=data.markov_order,
                concentration=data.markov_concentration,
                seed=data.markov_seed,
            )
        except ValueError as error:
            raise cfg.ConfigError(
                f"data.markov_vocab_size={data.markov_vocab_size} with "
                f"data.markov_order={data.markov_order}: {error}"
            ) from None
        tokens = {
            "train": data.markov_train_tokens,
            "valid": data.markov_eval_tokens,
            "test": data.markov_eval_tokens,
        }
        return markov_lm(language, tokens, seed=data.markov_seed)
    return lm_corpus(data.corpus, data.root)


class EpochStarts:
    """`LMStream` batches plus `epoch_start: bool [batch]`, true on each epoch's first batch,
    where the TensorFlow PTB tutorial resets the hidden state; position as the stream's."""

    def __init__(self, stream: LMStream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[dict]:
        for batch in self.stream:
            first = self.stream.batch_index == 1  # already advanced past this batch
            yield {**batch, "epoch_start": np.full(batch["inputs"].shape[0], first)}

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


class LanguageModelTask(Task):
    """Next-token prediction on contiguous streams; the hidden state is carried across batches."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        self.config = config
        self._check_tied_sizes()
        self.corpus = load_corpus(config.data)
        self.vocab_size = len(self.corpus.vocab.tokens)
        self._check_split_sizes()

    def _check_tied_sizes(self) -> None:
        """`model.tie_embeddings` needs the embedding as wide as the hidden state (the output
        kernel is its transpose): a ConfigError here (exit status 2), not the model's
        ValueError as a traceback from `init_model`."""
        m = self.config.model
        if m.tie_embeddings and m.embed_size not in (None, m.hidden_size):
            raise cfg.ConfigError(
                f"model.tie_embeddings=True needs model.embed_size == model.hidden_size (or "
                f"None); got model.embed_size={m.embed_size}, model.hidden_size={m.hidden_size}"
            )
        # Likewise a forget-gate bias on a cell without gates (cells.init's ValueError).
        if m.forget_bias and get_cell(m.cell).keep_gate is None:
            raise cfg.ConfigError(
                f"model.forget_bias={m.forget_bias} needs a gated cell; model.cell={m.cell!r} "
                "has no gates (leave model.forget_bias None or 0)"
            )

    def _check_split_sizes(self) -> None:
        """Every split must hold at least one `[batch, bptt_length + 1]` window (what
        `LMStream` needs; evaluation's `LMEvalStream` would pad a shorter split, but rows of
        mostly padding mean a mistyped size), checked here, before anything is compiled or
        written, rather than at the first evaluation."""
        bptt = self.config.data.bptt_length
        needs = {"train": ("train.batch_size", self.config.train.batch_size)}
        needs.update(
            {s: ("data.eval_batch_size", self.eval_batch_size(s)) for s in ("valid", "test")}
        )
        for split, (key, batch) in needs.items():
            tokens = len(self.corpus.splits[split])
            if tokens < batch * (bptt + 1):
                raise cfg.ConfigError(
                    f"{key}={batch} with data.bptt_length={bptt}: the {split!r} split of "
                    f"{self.config.data.corpus!r} has {tokens} tokens, fewer than the "
                    f"{batch * (bptt + 1)} one batch of {batch} rows x {bptt + 1} tokens needs"
                )

    def init_model(self, rng: jax.Array) -> RNNLanguageModel:
        m = self.config.model
        return RNNLanguageModel(
            self.vocab_size,
            m.hidden_size,
            embed_size=m.embed_size,
            num_layers=m.num_layers,
            cell=m.cell,
            tie_embeddings=m.tie_embeddings,
            dropout_input=m.dropout_input,
            dropout_between=m.dropout_between,
            dropout_output=m.dropout_output,
            locked_dropout=m.locked_dropout,
            recurrent_dropout=m.recurrent_dropout,
            embedding_dropout=m.embedding_dropout,
            weight_drop=m.weight_drop,
            init_scale=m.init_scale,
            forget_bias=m.forget_bias,
            compute_dtype=m.compute_dtype,
            rngs=nnx.Rngs(params=rng),
        )

    def init_carry(self, batch_size: int) -> list:
        zero = get_cell(self.config.model.cell).zero_carry(
            batch_size, self.config.model.hidden_size
        )
        return [zero] * self.config.model.num_layers

    def train_data(self) -> EpochStarts:
        return EpochStarts(
            LMStream(
                self.corpus.splits["train"],
                self.config.train.batch_size,
                self.config.data.bptt_length,
            )
        )

    def loss_fn(self, model: RNNLanguageModel, batch: dict, carry: list, rng: jax.Array) -> tuple:
        # Each epoch starts from a zero state (the stream wraps around to unrelated text).
        restart = batch["epoch_start"][:, None]
        carry = jax.tree.map(lambda c: jnp.where(restart, jnp.zeros_like(c), c), carry)
        logits, carry, hidden = model(batch["inputs"], carry, rng=rng)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        objective = self.config.objective
        loss = jnp.mean(nll)
        if objective.ar_alpha:
            loss += regularizers.activation_regularization(
                hidden["dropped_outputs"], objective.ar_alpha
            )
        if objective.tar_beta:
            loss += regularizers.temporal_activation_regularization(
                hidden["outputs"], objective.tar_beta
            )
        # 'sum' (Zaremba's loss, summed over the window) scales the whole per-token objective,
        # AR/TAR included, so that ar_alpha and tar_beta weigh the same against the NLL under
        # either reduction (Merity et al. add them to the per-token mean).
        if objective.time_reduction == "sum":
            loss = loss * nll.shape[1]
        return loss, (carry, {"train_nll": jnp.mean(nll)})

    def eval_data(self, split: str) -> LMEvalStream:
        """Every target of the split once (`LMEvalStream`; `LMStream` would drop its tail),
        each row first reading up to `data.eval_context` tokens of unscored history."""
        return LMEvalStream(
            self.corpus.splits[split],
            self.eval_batch_size(split),
            self.config.data.bptt_length,
            context=self.config.data.eval_context,
        )

    def eval_batch_size(self, split: str) -> int:
        return self.config.data.eval_batch_size

    def eval_step(self, model: RNNLanguageModel, batch: dict, carry: list) -> tuple:
        logits, carry, _ = model(batch["inputs"], carry)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        weights = batch["weights"]
        return carry, {"nll": jnp.sum(nll * weights), "tokens": jnp.sum(weights)}

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["nll"] / sums["tokens"]
        return {"loss": loss, "perplexity": perplexity(loss)}

    def tokens_in(self, batch: dict) -> int:
        return int(batch["inputs"].size)

    def baselines(self) -> dict[str, dict[str, float]]:
        """Context-free baselines: the add-one smoothed unigram model of the training tokens
        (NLL in nats/token and perplexity over each split's targets `tokens[1:]`, the tokens
        the model's evaluation scores: no model predicts a stream's first token) and the
        uniform model over the vocabulary (perplexity V)."""
        counts = np.bincount(self.corpus.splits["train"], minlength=self.vocab_size) + 1.0
        log_probs = np.log(counts / counts.sum())
        unigram = {}
        for split, tokens in self.corpus.splits.items():
            unigram[f"{split}_loss"] = float(-np.mean(log_probs[tokens[1:]]))
            unigram[f"{split}_perplexity"] = perplexity(unigram[f"{split}_loss"])
        uniform = {"loss": math.log(self.vocab_size), "perplexity": float(self.vocab_size)}
        return {"unigram": unigram, "uniform": uniform}

    def artifacts(self) -> dict:
        return {"vocab.json": list(self.corpus.vocab.tokens), "baselines.json": self.baselines()}


def check_prompt(prompt: list[str], vocab: list[str]) -> None:
    """Raises ValueError unless `prompt` is non-empty and every token is in `vocab`."""
    known = set(vocab)
    unknown = sorted({token for token in prompt if token not in known})
    if not prompt or unknown:
        raise ValueError(f"prompt must be non-empty and in the vocabulary; unknown: {unknown}")


def generate(
    model: RNNLanguageModel,
    vocab: list[str],
    prompt: list[str],
    num_tokens: int,
    rng: jax.Array,
    temperature: float = 1.0,
) -> list[str]:
    """Continue `prompt` (tokens of `vocab`) with `num_tokens` sampled tokens.

    The prompt runs through the model in one call; sampling then streams with `model.step`
    through `rnn_jax.decoding.sample_decode`, with an extra never-sampled end token so that the
    continuation has exactly `num_tokens` tokens.

    Raises:
      ValueError: an empty prompt or one with tokens outside `vocab` (`check_prompt`).
    """
    check_prompt(prompt, vocab)
    index = {token: i for i, token in enumerate(vocab)}
    ids = jnp.asarray([[index[token] for token in prompt]], jnp.int32)
    carry = model.zero_carry(1)
    if ids.shape[1] > 1:
        _, carry, _ = model(ids[:, :-1], carry)

    def step_fn(carry: list, tokens: jax.Array) -> tuple[list, jax.Array]:
        carry, logits = model.step(carry, tokens)
        never = jnp.full((logits.shape[0], 1), -jnp.inf, logits.dtype)
        return carry, jnp.concatenate([logits, never], axis=-1)

    tokens, _, _ = decoding.sample_decode(
        step_fn,
        carry,
        rng,
        bos_id=int(ids[0, -1]),
        eos_id=len(vocab),
        max_length=num_tokens,
        temperature=temperature,
    )
    return [vocab[i] for i in tokens[0].tolist()]


def split_nll(model: RNNLanguageModel, task: LanguageModelTask, stream: LMEvalStream) -> float:
    """Mean NLL per target of `stream` under `model` (one replica), the state carried across
    its batches from a zero state: what the run's evaluation computes for that stream."""
    step = nnx.jit(task.eval_step)
    carry = task.init_carry(stream.batch_size)
    nll = tokens = 0.0
    for batch in stream:
        carry, sums = step(model, jax.tree.map(jnp.asarray, batch), carry)
        nll, tokens = nll + float(sums["nll"]), tokens + float(sums["tokens"])
    return nll / tokens


def context_study(
    model: RNNLanguageModel, task: LanguageModelTask, contexts: list[int]
) -> dict[str, dict[str, float]]:
    """How much history evaluation rows need: per split (valid, test), the NLL with one row
    (`"1 row"`: every target sees the whole split before it, as the tutorial's 1 x 1
    evaluation) and with `data.eval_batch_size` rows of `LMEvalStream` for each `context`."""
    data = task.config.data
    table = {}
    for split in ("valid", "test"):
        ids = task.corpus.splits[split]
        row = {"1 row": split_nll(model, task, LMEvalStream(ids, 1, data.bptt_length))}
        for context in contexts:
            stream = LMEvalStream(ids, data.eval_batch_size, data.bptt_length, context=context)
            row[f"{data.eval_batch_size} rows, context {context}"] = split_nll(model, task, stream)
        table[split] = row
    return table


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


def sample_prompt(prompt: str, vocab: list[str], char_level: bool) -> list[str]:
    """`--prompt` as tokens of the run's vocabulary: its characters for a character-level run,
    else its whitespace-separated words.

    Raises:
      ConfigError: an empty prompt or one with tokens outside `vocab` (exit status 2, naming
        the flag and those tokens), before sampling starts.
    """
    tokens = list(prompt) if char_level else prompt.split()
    try:
        check_prompt(tokens, vocab)
    except ValueError as error:
        raise cfg.ConfigError(f"--prompt={prompt!r}: {error} (W/vocab.json)") from None
    return tokens


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
