"""The task of `experiments.language_model` (seed question 7): next-token prediction with
truncated BPTT on contiguous streams, the hidden state carried across batches (Zaremba et al.
2014; each epoch starts from a zero state, as in the TensorFlow PTB tutorial).

`RULES` (the config keys' rules), `load_corpus` (PTB, Tiny Shakespeare or a synthetic Markov
language), `EpochStarts` (the training stream with the epoch's first batch marked) and
`LanguageModelTask` (the model, the loss with AR/TAR, evaluation over every target and the
context-free baselines). `experiments.regularization`, `experiments.state_probe` and
`experiments.data_throughput` reuse the task.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from rnn_jax.cells import get_cell
from rnn_jax.data import LMEvalStream, LMStream, MarkovLanguage, lm_corpus
from rnn_jax.data.lm_corpus import LMCorpus, markov_lm
from rnn_jax.metrics import perplexity
from rnn_jax.models import RNNLanguageModel
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
