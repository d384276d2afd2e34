"""Which regularisers stop an RNN language model overfitting, and does depth help? (seed Q17, Q12)

A character LM (the task and model of `experiments.language_model`: `RNNLanguageModel`, the
state carried across batches) trains on a deliberately small slice of the training stream
(`data.train_tokens`), so that without regularisation it overfits within the budget: its loss
on the slice keeps falling while the validation loss turns up. Every `train.eval_every` steps
the runtime evaluates, in evaluation mode (no dropout), both the validation stream (cut to
`data.valid_tokens`) and the training slice itself (split `train_eval`), so the train-valid
gap is measured on the same weights and without dropout noise.

Q17 points (at `model.num_layers` layers, `model.hidden_size` units): one per entry of
`grid.regularizers` (`REGULARIZERS`: none; dropout on the input, between layers and on the
output; variational (locked) dropout with recurrent dropout on h; weight drop; decoupled
weight decay; coupled L2), each switched on through the model or optimiser config keys it
names; the base config must leave every regulariser key off (`OFF`, checked by `RULES`), or it
would regularise every point, "none" included. Early stopping needs no run of its own: it is
the unregularised run stopped at its best validation evaluation (the runtime tracks it as
`best_step`; `train.keep_best` / `patience` would return or stop there), read from that run's
curve.

Q12 points: `grid.depths` layers, each at the parameter count of the Q17 model (hidden size
searched with `rnn_jax.models.params.match_size` within `depth.tolerance`), without and with
each regulariser of `grid.depth_regularizers`. A point that is also a Q17 point is run once.

It writes W/results.json, W/regularization.md, W/regularization.png and W/depth.png.

    python -m experiments.regularization --workdir=W \
        --config=experiments/configs/regularization.py:quick
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments import grid, language_model_report
from experiments import language_model_task as lm
from experiments import regularization_report as report
from rnn_jax.data import LMEvalStream
from rnn_jax.data.lm_corpus import LMCorpus
from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.params import count_params, match_size
from rnn_jax.predicates import is_decimal
from rnn_jax.train import config as cfg
from rnn_jax.train import config_checks
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.rules import (
    Rule,
    Rules,
    in_range,
    int_at_least,
    non_negative,
    positive,
    probability,
)

TRAIN_EVAL = "train_eval"  # the training slice, evaluated like a held-out split


def _regularizer_keys(config: ml_collections.ConfigDict) -> dict[str, dict[str, object]]:
    """Regulariser name -> the config keys (dotted) it sets, with `reg.*` rates."""
    r = config.reg
    between = {f"model.dropout_{w}": r.dropout for w in ("input", "between", "output")}
    return {
        "none": {},
        # Srivastava et al. 2014 as Zaremba et al. 2014 apply it: non-recurrent connections
        # only, a fresh mask at every time step.
        "dropout": between,
        # Gal & Ghahramani 2016: one mask per sequence on inputs, between layers and outputs,
        # and on h before W_hh (the recurrent connection).
        "variational": {
            **between,
            "model.locked_dropout": True,
            "model.recurrent_dropout": r.recurrent_dropout,
        },
        # Merity et al. 2018 (AWD-LSTM): DropConnect on W_hh, one mask per forward pass.
        "weight_drop": {"model.weight_drop": r.weight_drop},
        # Loshchilov & Hutter 2019: w <- w - lr * wd * w beside Adam's step.
        "weight_decay": {
            "optimizer.name": "adamw",
            "optimizer.decoupled_weight_decay": r.decoupled_weight_decay,
        },
        # Krogh & Hertz 1992: the L2 term's gradient wd * w added before Adam normalises it.
        "l2": {"optimizer.weight_decay": r.l2},
    }


REGULARIZERS = ("none", "dropout", "variational", "weight_drop", "weight_decay", "l2")


def _off(off: object) -> Rule:
    """A base-config regulariser key must be `off`: the points switch theirs on from `reg.*`,
    and one left on in the base config would regularise every point, "none" included."""
    return lambda value: (
        None
        if value == off and isinstance(value, bool) == isinstance(off, bool)
        else f"{off!r}: the points set their regularisers from reg.*; on in the base config it "
        "would apply to every point, 'none' included"
    )


# Base-config keys of the regularisers (those `_regularizer_keys` sets and the LM's others).
OFF: dict[str, object] = {
    "model.dropout_input": 0.0,
    "model.dropout_between": 0.0,
    "model.dropout_output": 0.0,
    "model.locked_dropout": False,
    "model.recurrent_dropout": 0.0,
    "model.embedding_dropout": 0.0,
    "model.weight_drop": 0.0,
    "optimizer.decoupled_weight_decay": 0.0,
    "optimizer.weight_decay": 0.0,
    "objective.ar_alpha": 0.0,
    "objective.tar_beta": 0.0,
}


RULES: Rules = {
    **lm.RULES,
    **{key: _off(value) for key, value in OFF.items()},
    "model.embed_size": positive,  # fixed over depths: the stack is what changes
    "data.train_tokens": int_at_least(0),  # 0: the whole training split
    "data.valid_tokens": int_at_least(0),
    "reg.dropout": probability,
    "reg.recurrent_dropout": probability,
    "reg.weight_drop": probability,
    "reg.decoupled_weight_decay": non_negative,
    "reg.l2": non_negative,
    "depth.tolerance": in_range(0.001, 0.5),
}


def _entries(config: ml_collections.ConfigDict, key: str) -> list[str]:
    """`grid.<key>` "a,b" -> ["a", "b"]; "" -> [] (that question's points are not run)."""
    return [v.strip() for v in str(config.grid[key]).split(",") if v.strip()]


def regularizers(config: ml_collections.ConfigDict, key: str) -> list[str]:
    """`grid.<key>` as regulariser names, checked against `REGULARIZERS`."""
    names = _entries(config, key)
    bad = [n for n in names if n not in REGULARIZERS]
    if bad:
        raise cfg.ConfigError(
            f"grid.{key}={config.grid[key]!r}: unknown {bad}; allowed: {', '.join(REGULARIZERS)}"
        )
    grid.check_distinct(f"grid.{key}", config.grid[key], names)
    return names


def depths(config: ml_collections.ConfigDict) -> list[int]:
    """`grid.depths` "1,2,3" -> [1, 2, 3] (layer counts >= 1; "" -> none)."""
    text, out = config.grid.depths, []
    for entry in _entries(config, "depths"):
        if not is_decimal(entry) or int(entry) < 1:
            raise cfg.ConfigError(f"grid.depths={text!r}: {entry!r} must be an integer >= 1")
        out.append(int(entry))
    grid.check_distinct("grid.depths", text, out)
    return out


def point_config(
    config: ml_collections.ConfigDict, regularizer: str, layers: int, hidden: int
) -> ml_collections.ConfigDict:
    """The runtime config of one point: `layers` x `hidden` and the regulariser's keys."""
    point = config.copy_and_resolve_references()
    point.model.num_layers, point.model.hidden_size = layers, hidden
    for dotted, value in _regularizer_keys(config)[regularizer].items():
        section, key = dotted.split(".")
        point[section][key] = value
    return point


def sliced_corpus(config: ml_collections.ConfigDict, corpus: LMCorpus) -> LMCorpus:
    """`corpus` with its train and valid streams cut to their first `data.train_tokens` /
    `data.valid_tokens` tokens (0: whole).

    Raises:
      ConfigError: naming the key when the split is shorter than asked for.
    """
    splits = dict(corpus.splits)
    for split, key in (("train", "train_tokens"), ("valid", "valid_tokens")):
        limit = config.data[key]
        if limit > len(splits[split]):
            raise cfg.ConfigError(
                f"data.{key}={limit}: the {split!r} split of {config.data.corpus!r} has only "
                f"{len(splits[split])} tokens"
            )
        splits[split] = splits[split][: limit or None]
    return dataclasses.replace(corpus, splits=splits)


class SlicedLanguageModelTask(lm.LanguageModelTask):
    """`experiments.language_model`'s task on the first `data.train_tokens` training tokens
    and the first `data.valid_tokens` validation tokens (0: all), evaluating the training
    slice too (split `train_eval`, evaluation mode) so that the gap is measured."""

    eval_splits = ("valid", TRAIN_EVAL)
    final_splits = ("valid", TRAIN_EVAL)

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__(config)
        self.corpus = sliced_corpus(config, self.corpus)
        self._check_split_sizes()  # again: the slices must still hold one batch each

    def eval_data(self, split: str) -> LMEvalStream:
        return super().eval_data("train" if split == TRAIN_EVAL else split)


def _builder(config: ml_collections.ConfigDict, vocab_size: int, layers: int):
    """`width -> RNNLanguageModel` of `config` with `layers` layers (for abstract counting)."""
    m = config.model

    def build(width: int) -> RNNLanguageModel:
        return RNNLanguageModel(
            vocab_size,
            width,
            embed_size=m.embed_size,
            num_layers=layers,
            cell=m.cell,
            tie_embeddings=m.tie_embeddings,
            rngs=nnx.Rngs(params=0),
        )

    return build


def matched_hidden_sizes(
    config: ml_collections.ConfigDict, vocab_size: int, layer_counts: list[int]
) -> dict[int, tuple[int, int]]:
    """Layers -> (hidden size, params) at the parameter count of the Q17 model
    (`model.num_layers` x `model.hidden_size`), within `depth.tolerance` (relative).

    Raises:
      ConfigError: naming `model.tie_embeddings` when another depth is asked for with tied
        embeddings (its hidden size would have to change at the fixed `model.embed_size`,
        which tying forbids), and `depth.tolerance` when no hidden size comes close enough.
    """
    m = config.model
    if m.tie_embeddings and any(layers != m.num_layers for layers in layer_counts):
        raise cfg.ConfigError(
            f"model.tie_embeddings=True: grid.depths={config.grid.depths!r} needs other hidden "
            f"sizes at the fixed model.embed_size={m.embed_size}, which tied embeddings forbid "
            "(set model.tie_embeddings=False, or grid.depths to model.num_layers only)"
        )
    build = _builder(config, vocab_size, m.num_layers)
    target = count_params(nnx.eval_shape(lambda: build(m.hidden_size)))
    out = {}
    for layers in layer_counts:
        if layers == m.num_layers:
            out[layers] = (m.hidden_size, target)
            continue
        try:
            out[layers] = match_size(
                _builder(config, vocab_size, layers),
                target,
                low=1,
                high=8 * m.hidden_size,
                tolerance=config.depth.tolerance,
            )
        except ValueError as error:
            raise cfg.ConfigError(f"depth.tolerance={config.depth.tolerance}: {error}") from None
    return out


def _json(array: np.ndarray) -> list | float | None:
    """A float array as nested lists for JSON (a non-finite value is null)."""
    if array.ndim == 0:
        return grid.finite_or_none(float(array))
    return [_json(row) for row in array]


def _bits(values: np.ndarray) -> list | float | None:
    """nats -> bits, as JSON."""
    return _json(np.asarray(values, np.float64) / math.log(2))


def best_evaluation(valid: np.ndarray) -> int:
    """Row of `valid` [evaluations, seeds] with the lowest mean over seeds, among the rows
    whose seeds are all finite (the runtime's `best_step`: a diverged seed's evaluation is
    never the best); when no row has every seed finite (a seed diverged before the first
    evaluation, where the runtime has no best), the lowest mean of the finite seeds (row 0
    was taken, whatever the surviving seeds measured)."""
    finite = np.isfinite(valid)
    mean = np.where(finite.all(1), valid.mean(1), np.inf)
    if not np.isfinite(mean).any():
        count = finite.sum(1)
        total = np.where(finite, valid, 0.0).sum(1)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.inf)
    return int(np.argmin(mean))


def run_point(
    config: ml_collections.ConfigDict,
    regularizer: str,
    layers: int,
    hidden: int,
    point_dir: pathlib.Path,
) -> dict:
    """Train one point; its summary holds the per-seed curves (bits/token, evaluation mode)
    of the validation stream and the training slice, the final values and the best-valid
    evaluation (`best_evaluation`: on the mean over seeds, as the runtime's `best_step` is)."""
    point = point_config(config, regularizer, layers, hidden)
    task = SlicedLanguageModelTask(point)
    results = train_and_evaluate(point, point_dir, task)
    steps, valid = grid.read_metric_curve(point_dir, "valid_loss")  # [evals, seeds] nats
    _, train = grid.read_metric_curve(point_dir, f"{TRAIN_EVAL}_loss")
    best = best_evaluation(valid)
    d, t = point.data, point.train
    train_tokens = len(task.corpus.splits["train"])
    return {
        "regularizer": regularizer,
        "settings": _regularizer_keys(config)[regularizer],
        "layers": layers,
        "hidden": hidden,
        "params": count_params(nnx.eval_shape(lambda: task.init_model(jax.random.key(0)))),
        "cell": point.model.cell,
        "corpus": d.corpus,
        "unit": language_model_report.unit_of(d.corpus),
        "train_tokens": train_tokens,
        "valid_tokens": len(task.corpus.splits["valid"]),
        "num_steps": t.num_steps,
        "epochs": t.num_steps * t.batch_size * d.bptt_length / train_tokens,
        "curve_steps": steps,
        "curve_valid_bits": _bits(valid),
        "curve_train_bits": _bits(train),
        "final_valid_bits": _bits(valid[-1]),
        "final_train_bits": _bits(train[-1]),
        "best_valid_bits": _bits(valid[best]),
        "train_at_best_bits": _bits(train[best]),
        "best_step": steps[best],
        "runtime_best_step": results["final"].get("best_step"),
    }


def check_grid(config: ml_collections.ConfigDict) -> tuple[list[str], list[int], list[str]]:
    """(Q17 regularisers, depths, Q12 regularisers) of the grid, after every check that needs
    the config alone (no corpus read, nothing trained); `launch.sweep` calls it for each of
    its runs before any starts.

    Raises:
      ConfigError: naming the grid key.
    """
    q17 = regularizers(config, "regularizers")
    layer_counts = depths(config)
    q12 = regularizers(config, "depth_regularizers") if layer_counts else []
    if not q17 and not (layer_counts and q12):
        raise cfg.ConfigError("grid.regularizers and grid.depths are both empty: no point")
    return q17, layer_counts, q12


def grid_points(config: ml_collections.ConfigDict) -> list[tuple[str, object, dict]]:
    """(point name, fn(point_dir) -> summary, {"questions": [17 and/or 12]}): the Q17 points,
    then the Q12 points not already among them; a point in both answers both questions. The
    questions are labels (`grid.run_points`): which ones a point answers depends on this
    run's grid, not on what it trained."""
    q17, layer_counts, q12 = check_grid(config)
    corpus = sliced_corpus(config, lm.load_corpus(config.data))  # a bad slice fails here
    vocab_size = len(corpus.vocab.tokens)
    sizes = matched_hidden_sizes(config, vocab_size, layer_counts)
    specs: dict[tuple[str, int, int], list[int]] = {}
    for reg in q17:
        specs.setdefault((reg, config.model.num_layers, config.model.hidden_size), []).append(17)
    for layers in layer_counts:
        for reg in q12:
            specs.setdefault((reg, layers, sizes[layers][0]), []).append(12)
    return [
        (
            f"L{layers}-h{hidden}-{reg}",
            functools.partial(run_point, config, reg, layers, hidden),
            {"questions": qs},
        )
        for (reg, layers, hidden), qs in specs.items()
    ]


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Every point of `config`; writes results.json, regularization.md and the plots."""
    config_checks.validate(config, RULES)
    points = grid_points(config)
    keys = ("final_train_bits", "final_valid_bits", "best_valid_bits", "params")
    return grid.run_grid("regularization", config, workdir, points, report, keys)


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 17 and 12 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
