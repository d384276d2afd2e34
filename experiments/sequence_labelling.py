"""Seed question 14: (Bi)RNN taggers with a softmax or CRF head for POS tagging and NER.

    python -m experiments.sequence_labelling --workdir=W \
        --config=experiments/configs/sequence_labelling.py:<smoke|quick|full>

The claim: a bidirectional RNN gives contextual states that a per-token classifier or a CRF
turns into tags. The sweep (configs/sequence_labelling.py:get_sweep) varies direction
(uni/bi), head (softmax/CRF) and character features, and includes the transformer-encoder
baseline. Measured on the validation/test splits: token accuracy (POS, UD EWT UPOS) and
conlleval span precision/recall/F1 (NER, CoNLL-2003), plus the per-token loss, beside the
majority tag per word (W/baselines.json); W/sequence_labelling.md and W/learning_curves.png
(experiments/run_report.py).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import run_report
from rnn_jax import metrics
from rnn_jax.data.batching import BatchIterator, pad_batch
from rnn_jax.data.data_files import DataFormatError
from rnn_jax.data.pipeline import (
    build_vocabs,
    check_training_batch_size,
    encode_split,
    evaluation_batches,
    singleton_ids,
    training_batches,
)
from rnn_jax.data.registry import load_dataset
from rnn_jax.data.vocab import Vocabulary
from rnn_jax.files import RESULTS_FILE
from rnn_jax.models.encoder import config_problems, encoder_options, position_problems
from rnn_jax.models.params import count_params
from rnn_jax.models.tagger import Tagger
from rnn_jax.train import Task
from rnn_jax.train import config as cfg
from rnn_jax.train.rules import Rules, boolean, int_at_least, one_of, positive, probability

NAME = "sequence_labelling"
DATASETS = {"ud_en_ewt": "UD English-EWT (UPOS tags)", "conll2003": "CoNLL-2003 NER (IOB2)"}
RULES: Rules = {
    "data.dataset": one_of("ud_en_ewt", "conll2003"),
    "data.min_freq": positive,
    "data.singleton_unk_prob": probability,
    "data.max_word_chars": positive,
    "data.time_multiple": positive,
    "data.eval_batch_size": positive,
    "model.kind": one_of("rnn", "transformer"),
    "model.cell": one_of("elman", "lstm", "gru"),
    "model.head": one_of("softmax", "crf"),
    "model.embed_size": positive,
    # switches: a `--config.k=None` would read as False
    "model.bidirectional": boolean,
    "model.char_features": boolean,
    "model.num_layers": positive,
    "model.dropout_rate": probability,
    "model.char_embed_size": positive,
    "model.char_hidden_size": positive,
    "model.num_heads": int_at_least(1),  # transformer only
    "model.max_length": int_at_least(1),  # transformer only
    "objective.time_reduction": one_of("mean", "sum"),
}


def replace_singletons(
    tokens: jax.Array, singletons: jax.Array, unk_id: int, prob: float, rng: jax.Array
) -> jax.Array:
    """Lample et al. (2016)'s training-time `<unk>`: each token whose id is a training
    singleton becomes `unk_id` with probability `prob`, independently (glample/tagger's
    `insert_singletons`; the word's characters are left as they are).

    Args:
      tokens: int32 `[batch, time]` word ids.
      singletons: bool `[vocab]` (`pipeline.singleton_ids` of the training split).
      rng: the key the Bernoulli draws come from (the runtime's per-step key, so a resumed
        run draws the same replacements).
    Returns:
      int32 `[batch, time]`.
    """
    replace = singletons[tokens] & jax.random.bernoulli(rng, prob, tokens.shape)
    return jnp.where(replace, jnp.asarray(unk_id, tokens.dtype), tokens)


def _tag_tables(dataset: object, tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`metrics.tag_tables` of the train split's tags, or DataFormatError naming the first
    training example with a tag that is not IOB2 (file:line of its first token when read from
    a file: `TextDataset.where`; the error named only the tag's position in the vocabulary,
    and was a traceback)."""
    try:
        return metrics.tag_tables(tags)
    except ValueError:
        pass
    for index, example in enumerate(dataset.splits["train"]):
        for tag in example["tags"]:
            try:
                metrics.tag_tables([tag])
            except ValueError:
                raise DataFormatError(
                    f"{dataset.where('train', index)}: tag {tag!r} is not an IOB2 tag ('O', or "
                    "'B-' or 'I-' and a type)"
                ) from None
    return metrics.tag_tables(tags)  # raises: the vocabulary holds a tag no example has


def _check_singleton_replacement(data: ml_collections.ConfigDict) -> None:
    """ConfigError for `data.singleton_unk_prob` > 0 with `data.min_freq` > 1: the vocabulary
    then already reads every training word seen once as `<unk>`, so no word keeps an id that
    could be replaced and the run trained as with 0, silently (Lample et al.'s replacement
    needs the singletons in the vocabulary: `data.min_freq=1`)."""
    if data.singleton_unk_prob and data.min_freq > 1:
        raise cfg.ConfigError(
            f"data.singleton_unk_prob={data.singleton_unk_prob!r} with "
            f"data.min_freq={data.min_freq!r}: no training word seen once has an id of its own "
            "(min_freq > 1 reads them all as <unk>), so none would be replaced; set "
            "data.min_freq=1 (Lample et al.'s replacement) or data.singleton_unk_prob=0"
        )


class SequenceLabellingTask(Task):
    """Tags every token. Loss (`objective.time_reduction`): 'mean' = the batch's summed NLL /
    its number of tokens; 'sum' = each sentence's NLL summed over its tokens, mean over the
    batch's sentences (Lample et al.'s per-sentence objective). Training words that occur
    once become `<unk>` with probability `data.singleton_unk_prob` (0 = never)."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        self.config = config
        # The model's constructor refused these only once training began: a traceback, exit 1.
        if problems := config_problems(config.model):
            raise cfg.ConfigError("; ".join(problems))
        data = config.data
        _check_singleton_replacement(data)
        dataset = load_dataset(data.dataset, data.root)
        self.dataset = dataset
        self.vocabs = build_vocabs(dataset, min_freq=data.min_freq)
        self.tags = self.vocabs["tags"]
        train_words = [w for s in dataset.splits["train"] for w in s["tokens"]]
        self.chars = Vocabulary.build([list(w) for w in train_words], bos=None, eos=None)
        self.splits = {
            split: self._with_chars(encode_split(dataset, split, self.vocabs), dataset, split)
            for split in dataset.splits
        }
        if problems := position_problems(config.model, self.splits, data.time_multiple):
            raise cfg.ConfigError("; ".join(problems))
        check_training_batch_size(
            self.splits["train"], config.train.batch_size, dataset=data.dataset
        )
        self.singletons = singleton_ids(self.splits["train"], len(self.vocabs["tokens"]))
        self.scheme = "IOB2" if data.dataset == "conll2003" else None
        self.tables = None if self.scheme is None else _tag_tables(dataset, self.tags.tokens)

    def _with_chars(self, examples: list[dict], dataset: object, split: str) -> list[dict]:
        if not self.config.model.char_features:
            return examples
        width = self.config.data.max_word_chars
        for example, sentence in zip(examples, dataset.splits[split], strict=True):
            words = [self.chars.encode(list(w[:width])) for w in sentence["tokens"]]
            chars = np.zeros((len(words), width), np.int32)
            for i, ids in enumerate(words):
                chars[i, : len(ids)] = ids
            example["chars"] = chars
            example["char_lengths"] = np.array([len(ids) for ids in words], np.int32)
        return examples

    def _collate(self, examples: list[dict]) -> dict:
        flat = [{"inputs": e["inputs"], "targets": e["targets"]} for e in examples]
        batch = pad_batch(flat, 0, ("inputs",), self.config.data.time_multiple)
        if self.config.model.char_features:
            time = batch["inputs"].shape[1]
            chars = np.zeros((len(examples), time, self.config.data.max_word_chars), np.int32)
            char_lengths = np.zeros((len(examples), time), np.int32)
            for row, e in enumerate(examples):
                chars[row, : len(e["chars"])] = e["chars"]
                char_lengths[row, : len(e["char_lengths"])] = e["char_lengths"]
            batch["chars"], batch["char_lengths"] = chars, char_lengths
        return batch

    def init_model(self, rng: jax.Array) -> Tagger:
        m = self.config.model
        chars = (
            dict(
                num_chars=len(self.chars),
                char_embed_size=m.char_embed_size,
                char_hidden_size=m.char_hidden_size,
            )
            if m.char_features
            else {}
        )
        return Tagger(
            len(self.vocabs["tokens"]),
            len(self.tags),
            head=m.head,
            rngs=nnx.Rngs(params=rng),
            **encoder_options(m),
            **chars,
        )

    def train_data(self) -> BatchIterator:
        return training_batches(
            self.splits["train"],
            self.config.train.batch_size,
            seed=self.config.seed,
            collate=self._collate,
        )

    def _char_kwargs(self, batch: dict) -> dict:
        if not self.config.model.char_features:
            return {}
        return {"chars": batch["chars"], "char_lengths": batch["char_lengths"]}

    def loss_fn(self, model: Tagger, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        inputs, prob = batch["inputs"], self.config.data.singleton_unk_prob
        if prob:  # with 0 the step is exactly what it was before the option existed
            rng, unk_rng = jax.random.split(rng)
            words = self.vocabs["tokens"]
            inputs = replace_singletons(
                inputs, jnp.asarray(self.singletons), words.unk_id, prob, unk_rng
            )
        nll = model.loss(
            inputs, batch["targets"], batch["lengths"], rng=rng, **self._char_kwargs(batch)
        )
        total, tokens = jnp.sum(nll), jnp.sum(batch["lengths"]).astype(nll.dtype)
        loss = jnp.mean(nll) if self.config.objective.time_reduction == "sum" else total / tokens
        # The batch's summed NLL and its tokens, not their ratio: the runtime logs the ratio
        # of their sums over the logging window, the NLL per token over it; a window mean of
        # per-batch ratios weighed every batch alike (length-bucketed CoNLL batches of 16
        # hold 18 to 816 tokens).
        return loss, (carry, {run_report.TRAIN_NLL_PER_TOKEN: (total, tokens)})

    def eval_data(self, split: str) -> list[dict]:
        return evaluation_batches(self.splits[split], self.eval_batch_size(split), self._collate)

    def eval_batch_size(self, split: str) -> int:
        return self.config.data.eval_batch_size

    def eval_step(self, model: Tagger, batch: dict, carry: tuple) -> tuple:
        chars = self._char_kwargs(batch)
        # `weight` [batch] is 0 on the rows that fill the last batch (`evaluation_batches`);
        # they keep their real lengths for the model (a CRF needs >= 1 token) and count 0.
        weight = batch["weight"]
        nll = model.loss(batch["inputs"], batch["targets"], batch["lengths"], **chars)
        predicted = model.predict(batch["inputs"], batch["lengths"], **chars)
        mask = weight[:, None] * batch["mask"]
        sums = {
            "nll": jnp.sum(weight * nll),
            "tokens": jnp.sum(mask),
            "correct": jnp.sum(jnp.where(predicted == batch["targets"], mask, 0.0)),
        }
        if self.tables is not None:
            counted = jnp.where(weight > 0, batch["lengths"], 0)  # length 0: no spans
            sums.update(
                metrics.span_counts(
                    batch["targets"], predicted, counted, *map(jnp.asarray, self.tables)
                )
            )
        return carry, sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        result = {
            "loss": sums["nll"] / sums["tokens"],
            "accuracy": sums["correct"] / sums["tokens"],
        }
        if "gold_spans" in sums:
            result.update(
                metrics.f1_from_counts(
                    sums["correct_spans"], sums["gold_spans"], sums["predicted_spans"]
                )
            )
        return result

    def baselines(self) -> dict[str, float]:
        """Majority tag per word on every evaluation split: token accuracy (and span F1)."""
        splits = self.dataset.splits
        scores = {}
        for split in (name for name in splits if name != "train"):
            gold = [s["tags"] for s in splits[split]]
            predicted = metrics.majority_tag_per_word(splits["train"], splits[split])
            hits = [
                g == p
                for gs, ps in zip(gold, predicted, strict=True)
                for g, p in zip(gs, ps, strict=True)
            ]
            scores[f"{split}_accuracy"] = float(np.mean(hits))
            if self.scheme is not None:
                scores[f"{split}_f1"] = metrics.span_f1(gold, predicted, self.scheme)["f1"]
        return scores

    def tokens_in(self, batch: dict) -> int:
        # Real tokens, as sentiment and translation count them: the default (the first
        # leaf's size) counted padding, so tagging's tokens/s was not comparable.
        return int(np.sum(batch["lengths"]))

    def artifacts(self) -> dict:
        # Written beside results.json so that comparisons across the sweep report sizes, and
        # the trivial baseline the accuracies are to be read against.
        params = count_params(nnx.eval_shape(lambda: self.init_model(jax.random.key(0))))
        return {
            "model_params.json": {"params": params},
            "baselines.json": {"majority_tag_per_word": self.baselines()},
            "vocab.json": list(self.vocabs["tokens"].tokens),
            "tags.json": list(self.tags.tokens),
        }


def _model_text(model: dict) -> str:
    chars = f" + char BiRNN {model['char_hidden_size']}" if model["char_features"] else ""
    head = "CRF" if model["head"] == "crf" else "softmax"
    return f"{run_report.describe_model(model)}{chars} tagger with a {head} head"


def _train_loss_per_token(final: dict) -> dict:
    """`final` whose `train_loss` is the NLL per token over the last logging window
    (`run_report.TRAIN_NLL_PER_TOKEN`), as valid's and test's are per token: under
    `objective.time_reduction='sum'` the optimised loss is per sentence, and under 'mean' its
    window mean averaged per-batch ratios."""
    key = run_report.TRAIN_NLL_PER_TOKEN
    out = {**final, "train_loss": final[key]}
    if "per_seed" in final:  # several seeds: their std too, as `seeds.summarize` takes it
        per_seed = final["per_seed"][key]
        out["per_seed"] = {**final["per_seed"], "train_loss": per_seed}
        out["train_loss_std"] = float(np.std(per_seed))
    return out


def report_markdown(workdir: pathlib.Path) -> str:
    """W/sequence_labelling.md: loss, token accuracy (and span P/R/F1 for NER) per split
    beside the majority tag per word."""
    config = run_report.read_json(workdir, "config.json")
    final = _train_loss_per_token(run_report.read_json(workdir, RESULTS_FILE)["final"])
    majority = run_report.read_json(workdir, "baselines.json")["majority_tag_per_word"]
    spans = run_report.seed_values(final, "valid_f1") is not None
    measured = ("loss", "accuracy", *(("precision", "recall", "f1") if spans else ()))
    compared = ("accuracy", "f1") if spans else ("accuracy",)
    return "\n".join(
        [
            "# Sequence labelling (seed question 14)",
            "",
            f"{_model_text(config['model'])} on {DATASETS[config['data']['dataset']]}; "
            f"`{run_report.config_name(workdir, NAME)}`. Accuracy per token"
            + ("; span precision/recall/F1 in % (conlleval). " if spans else ". ")
            + run_report.protocol_text(config, final)
            + " Baseline: each word's most frequent training tag (unseen words: the most "
            "frequent tag overall).",
            "",
            run_report.split_table(final, measured, majority, "majority tag", compared),
        ]
    )


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Question 14 from a finished run: tagging accuracy vs the majority tag per word."""
    config = run_report.read_json(workdir, "config.json")
    final = run_report.read_json(workdir, RESULTS_FILE)["final"]
    majority = run_report.read_json(workdir, "baselines.json")["majority_tag_per_word"]
    split = "test" if run_report.seed_values(final, "test_accuracy") else "valid"
    model = config["model"]
    # Said of the transformer baseline and of a CRF head, "read from the RNN's state at that
    # token" was not what the measured model did.
    encoder = "the transformer encoder's" if model["kind"] == "transformer" else "the RNN's"
    joint = "; the CRF head decodes the sentence's tags jointly" if model["head"] == "crf" else ""
    text = (
        "Sequence labelling is many-to-many: one tag per token, scored from "
        f"{encoder} state at that token{joint}. "
        f"The {_model_text(model)} on {DATASETS[config['data']['dataset']]} "
        f"(`{run_report.config_name(workdir, NAME)}`) tags {split} tokens with accuracy "
        f"{run_report.summary_text(run_report.seed_values(final, f'{split}_accuracy'))}, "
        f"against {majority[f'{split}_accuracy']:.3f} for each word's most frequent training tag"
    )
    f1 = run_report.seed_values(final, f"{split}_f1")
    if f1 is not None:
        baseline = majority[f"{split}_f1"]
        summary = run_report.summary_text(f1, 1, seeds=False, unit=" %")
        text += f"; span F1 {summary} vs {baseline:.1f} % for that baseline"
    return {14: text + "."}


# What the command line runs: train, then the table and the learning curves.
# The curve's train loss is per token whatever the objective, like the validation loss.
train_and_report = functools.partial(
    run_report.train_and_report,
    name=NAME,
    report=report_markdown,
    train_key=run_report.TRAIN_NLL_PER_TOKEN,
)


if __name__ == "__main__":
    from rnn_jax.train import cli

    cli.main(SequenceLabellingTask, RULES, run=train_and_report)
