"""The context study of `experiments.language_model` (`--eval_contexts=0,64,256`): how much
unscored history the evaluation rows need. Per split, the NLL with one row (the whole split as
history, the TensorFlow PTB tutorial's 1 x 1 evaluation) against `data.eval_batch_size` rows of
`rnn_jax.data.LMEvalStream` at each context; its table is
`language_model_report.context_markdown` (W/eval_context.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.language_model_task import LanguageModelTask
from rnn_jax.data import LMEvalStream
from rnn_jax.models import RNNLanguageModel


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
