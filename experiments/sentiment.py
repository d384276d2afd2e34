"""Seed question 18: many-to-one RNNs, a sentence in, one label out (SST sentiment).

    python -m experiments.sentiment --workdir=W \
        --config=experiments/configs/sentiment.py:<smoke|quick|full>

The claim: a many-to-one RNN reads the whole sequence and maps it to a single output. The
sweep (configs/sentiment.py:get_sweep) compares how the per-token states become that one
output (last state, mean, max, attention pooling), uni- vs bidirectional, and the transformer
encoder baseline. Measured: accuracy and loss on the SST-2 (or SST-5) dev and test sets,
beside the majority class (W/baselines.json); W/sentiment.md and W/learning_curves.png
(experiments/run_report.py).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import run_report
from rnn_jax.data.batching import BatchIterator, pad_batch
from rnn_jax.data.pipeline import (
    build_vocabs,
    check_training_batch_size,
    encode_split,
    evaluation_batches,
    training_batches,
)
from rnn_jax.data.registry import load_dataset
from rnn_jax.files import RESULTS_FILE
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.encoder import config_problems, encoder_options, position_problems
from rnn_jax.models.params import count_params
from rnn_jax.train import Task
from rnn_jax.train import config as cfg
from rnn_jax.train.rules import Rules, boolean, int_at_least, one_of, positive, probability

NAME = "sentiment"
DATASETS = {"sst2": "SST-2 (binary, sentence labels)", "sst": "SST-5 (five classes)"}
RULES: Rules = {
    "data.dataset": one_of("sst2", "sst"),
    "data.min_freq": positive,
    "data.time_multiple": positive,
    "data.eval_batch_size": positive,
    "model.kind": one_of("rnn", "transformer"),
    "model.cell": one_of("elman", "lstm", "gru"),
    "model.pooling": one_of("last", "mean", "max", "attention"),
    "model.embed_size": positive,
    "model.bidirectional": boolean,  # a `--config.k=None` would read as False
    "model.num_layers": positive,
    "model.dropout_rate": probability,
    "model.num_heads": int_at_least(1),  # transformer only
    "model.max_length": int_at_least(1),  # transformer only
}


class SentimentTask(Task):
    """Sentence -> label; loss = mean cross-entropy over the batch's sentences."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        self.config = config
        # The model's constructor refused these only once training began: a traceback, exit 1.
        if problems := config_problems(config.model):
            raise cfg.ConfigError("; ".join(problems))
        dataset = load_dataset(config.data.dataset, config.data.root)
        self.vocabs = build_vocabs(dataset, min_freq=config.data.min_freq)
        self.splits = {split: encode_split(dataset, split, self.vocabs) for split in dataset.splits}
        if problems := position_problems(config.model, self.splits, config.data.time_multiple):
            raise cfg.ConfigError("; ".join(problems))
        check_training_batch_size(
            self.splits["train"], config.train.batch_size, dataset=config.data.dataset
        )

    def _collate(self, examples: list[dict]) -> dict:
        return pad_batch(examples, 0, ("inputs",), self.config.data.time_multiple)

    def init_model(self, rng: jax.Array) -> Classifier:
        m = self.config.model
        return Classifier(
            len(self.vocabs["tokens"]),
            len(self.vocabs["label"]),
            pooling=m.pooling,
            rngs=nnx.Rngs(params=rng),
            **encoder_options(m),
        )

    def train_data(self) -> BatchIterator:
        return training_batches(
            self.splits["train"],
            self.config.train.batch_size,
            seed=self.config.seed,
            collate=self._collate,
        )

    def loss_fn(self, model: Classifier, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        logits, _ = model(batch["inputs"], batch["lengths"], rng=rng)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["targets"])
        return jnp.mean(nll), (carry, {"train_accuracy": accuracy})

    def eval_data(self, split: str) -> list[dict]:
        return evaluation_batches(self.splits[split], self.eval_batch_size(split), self._collate)

    def eval_batch_size(self, split: str) -> int:
        return self.config.data.eval_batch_size

    def eval_step(self, model: Classifier, batch: dict, carry: tuple) -> tuple:
        # `weight` [batch] is 0 on the rows that fill the last batch (`evaluation_batches`).
        weight = batch["weight"]
        logits, _ = model(batch["inputs"], batch["lengths"])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = jnp.argmax(logits, -1) == batch["targets"]
        return carry, {
            "nll": jnp.sum(weight * nll),
            "correct": jnp.sum(weight * correct),
            "sentences": jnp.sum(weight),
        }

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "loss": sums["nll"] / sums["sentences"],
            "accuracy": sums["correct"] / sums["sentences"],
        }

    def baselines(self) -> dict[str, float | int]:
        """Majority class of the training labels, and its accuracy on every evaluation split."""
        majority = int(np.bincount([e["targets"] for e in self.splits["train"]]).argmax())
        scores: dict[str, float | int] = {"label": self.vocabs["label"].tokens[majority]}
        for split in (name for name in self.splits if name != "train"):
            targets = np.array([e["targets"] for e in self.splits[split]])
            scores[f"{split}_accuracy"] = float(np.mean(targets == majority))
        return scores

    def artifacts(self) -> dict:
        # Written beside results.json so that comparisons across the sweep report sizes, and
        # the trivial baseline the accuracies are to be read against.
        params = count_params(nnx.eval_shape(lambda: self.init_model(jax.random.key(0))))
        return {
            "model_params.json": {"params": params},
            "baselines.json": {"majority_class": self.baselines()},
            "vocab.json": list(self.vocabs["tokens"].tokens),
            "labels.json": list(self.vocabs["label"].tokens),
        }

    def tokens_in(self, batch: dict) -> int:
        return int(np.sum(batch["lengths"]))


def _model_text(model: dict) -> str:
    return f"{run_report.describe_model(model)} with {model['pooling']} pooling"


def report_markdown(workdir: pathlib.Path) -> str:
    """W/sentiment.md: loss and accuracy per split beside the majority class's accuracy."""
    config = run_report.read_json(workdir, "config.json")
    final = run_report.read_json(workdir, RESULTS_FILE)["final"]
    majority = run_report.read_json(workdir, "baselines.json")["majority_class"]
    return "\n".join(
        [
            "# Many-to-one sentiment classification (seed question 18)",
            "",
            f"{_model_text(config['model'])} (one label per sentence) on "
            f"{DATASETS[config['data']['dataset']]}; `{run_report.config_name(workdir, NAME)}`. "
            + run_report.protocol_text(config, final)
            + f" Baseline: always the majority training class ({majority['label']!r}).",
            "",
            run_report.split_table(
                final, ("loss", "accuracy"), majority, "majority class", ("accuracy",)
            ),
        ]
    )


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Question 18 from a finished run: many-to-one accuracy vs the majority class."""
    config = run_report.read_json(workdir, "config.json")
    final = run_report.read_json(workdir, RESULTS_FILE)["final"]
    majority = run_report.read_json(workdir, "baselines.json")["majority_class"]
    split = "test" if run_report.seed_values(final, "test_accuracy") else "valid"
    text = (
        f"Many-to-one: the {_model_text(config['model'])} reads the whole sentence and emits "
        f"one label. On {DATASETS[config['data']['dataset']]} "
        f"(`{run_report.config_name(workdir, NAME)}`) its {split} accuracy is "
        f"{run_report.summary_text(run_report.seed_values(final, f'{split}_accuracy'))}, "
        f"against {majority[f'{split}_accuracy']:.3f} for always predicting the majority "
        f"training class ({majority['label']!r}). The many-to-many counterparts, one output "
        "per token, are the tagger (Q14) and the language model (Q7)."
    )
    return {18: text}


# What the command line runs: train, then the table and the learning curves.
train_and_report = functools.partial(run_report.train_and_report, name=NAME, report=report_markdown)


if __name__ == "__main__":
    from rnn_jax.train import cli

    cli.main(SentimentTask, RULES, run=train_and_report)
