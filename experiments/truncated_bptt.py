"""What does truncated BPTT cost and lose, and does gradient clipping matter? (seed Q13, Q11)

Q13 trains a cell on the echo stream (rnn_jax.data.EchoTask: the target at step t is the input
at t − d) with truncated BPTT: each sequence of T steps is cut into T/k windows of
k = `bptt_length` steps, one optimiser update per window, the state carried from window to
window as a constant (the runtime's carry, as the language model trains; zeroed at the first
window of each sequence). Every k sees the same tokens. Measured per (cell, k): held-out echo
accuracy (evaluated on whole sequences: the forward pass does not depend on k), and the cost
of one compiled training step over a window (XLA temp memory from `memory_analysis()`, time
per token).

Q11 trains an Elman-tanh RNN with an expanding recurrence (orthogonal W_hh times a scale > 1)
with full BPTT and SGD, with and without `optimizer.clip_global_norm`, and reports per seed the
largest pre-clip gradient norm the runtime logged, the final loss and whether it diverged.

It writes W/results.json, W/truncated_bptt.md, W/truncated_bptt.png and W/clipping.png.

    python -m experiments.truncated_bptt --workdir=W \
        --config=experiments/configs/truncated_bptt.py:quick
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import grid
from experiments import truncated_bptt_report as report
from rnn_jax.cells import get_cell
from rnn_jax.data.synthetic import EchoTask
from rnn_jax.modules import RNN
from rnn_jax.predicates import is_decimal, is_int
from rnn_jax.train import distributed
from rnn_jax.train.config import ConfigError
from rnn_jax.train.config_checks import OPTIMIZERS, validate
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.rules import int_at_least, one_of, positive, positive_float32
from rnn_jax.train.steps import build_steps
from rnn_jax.train.task import Task

CELLS = {
    "elman_tanh": ("elman", {"nonlinearity": "tanh"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
}
EVAL_SEED_OFFSET = 1_000_003  # held-out sequences come from a stream training never reads


def one_update_per_window(value: object) -> str | None:
    """`train.grad_accum_steps` must be 1: the question is one update per k-step window.

    With a > 1 the runtime (optax.MultiSteps) would average the gradients of a consecutive
    windows, all computed with the same parameters, into one update: a different algorithm
    (truncation every k steps, an update every a·k), the 'updates' column would count
    windows (a times the real updates), and a warm-up or step decay that `point_config`
    scales to one update per window would last a times as many sequences."""
    if is_int(value) and value == 1:
        return None
    return (
        "1 (truncated_bptt makes one optimiser update per window of k steps; accumulating "
        "would average consecutive windows into one update and mislabel the update counts)"
    )


RULES = {
    "train.grad_accum_steps": one_update_per_window,
    "data.delay": int_at_least(1),
    "data.num_symbols": int_at_least(2),
    "data.length": int_at_least(2),
    "data.eval_batches": int_at_least(1),
    "model.input_init": one_of("glorot_uniform", "glorot_normal", "lecun_normal", "orthogonal"),
    "clipping.cell": one_of(*CELLS),
    "clipping.recurrent_scale": positive,
    "clipping.optimizer": one_of(*OPTIMIZERS),
    "clipping.learning_rate": positive_float32,
    "clipping.num_seeds": int_at_least(1),
    "measure.timing_repeats": int_at_least(1),
}


def _entries(config: ml_collections.ConfigDict, key: str) -> list[str]:
    """`grid.<key>` "a,b" -> ["a", "b"]; "" -> [] (that question's points are not run)."""
    return [v.strip() for v in str(config.grid[key]).split(",") if v.strip()]


def bptt_lengths(config: ml_collections.ConfigDict) -> list[int]:
    """`grid.bptt_lengths` -> window lengths k: positive ints that divide `data.length` (the
    windows tile each sequence), "full" meaning `data.length`."""
    text, length = config.grid.bptt_lengths, config.data.length
    if length <= config.data.delay:
        raise ConfigError(f"data.length={length}: must exceed data.delay={config.data.delay}")
    out = []
    for entry in _entries(config, "bptt_lengths"):
        # ASCII digits only (`is_decimal`): '²' passed str.isdigit() and then failed in int()
        # naming no key, and '٣' was read as 3.
        k = length if entry == "full" else int(entry) if is_decimal(entry) else 0
        if k < 1:
            raise ConfigError(
                f"grid.bptt_lengths={text!r}: {entry!r} must be a positive integer or 'full'"
            )
        if length % k:
            raise ConfigError(
                f"grid.bptt_lengths={text!r}: {k} must divide data.length={length} (the "
                "windows tile each sequence)"
            )
        out.append(k)
    grid.check_distinct("grid.bptt_lengths", text, out)  # "8,full" is 8 twice at length 8
    return out


def clip_norms(config: ml_collections.ConfigDict) -> list[float | None]:
    """`grid.clip_global_norms` -> thresholds of the Q11 points ("none": no clipping)."""
    text, out = config.grid.clip_global_norms, []
    for entry in _entries(config, "clip_global_norms"):
        try:
            value = None if entry == "none" else float(entry)
        except ValueError:
            value = -1.0
        # in float32 too: 1e-50 is 0 there, and clipping by it zeroed every update
        if value is not None and positive_float32(value) is not None:
            raise ConfigError(
                f"grid.clip_global_norms={text!r}: {entry!r} must be 'none' or a number > 0 "
                "(and finite in float32)"
            )
        out.append(value)
    grid.check_distinct("grid.clip_global_norms", text, out)
    return out


class EchoModel(nnx.Module):
    """One recurrent layer over one-hot symbols and a linear readout of every step."""

    def __init__(
        self,
        cell_name: str,
        config: ml_collections.ConfigDict,
        rngs: nnx.Rngs,
        recurrent_scale: float | None = None,
    ) -> None:
        name, options = CELLS[cell_name]
        symbols, hidden = config.data.num_symbols, config.model.hidden_size
        scale = {} if recurrent_scale is None else {"recurrent_scale": recurrent_scale}
        self.rnn = RNN(
            get_cell(name, **options),
            symbols,
            hidden,
            input_init=config.model.input_init,
            recurrent_init="orthogonal",
            **scale,
            rngs=rngs,
        )
        self.readout = nnx.Linear(hidden, symbols, rngs=rngs)

    def __call__(self, inputs: jax.Array, carry: list | None) -> tuple[jax.Array, list]:
        """int `inputs [batch, time]`, per-layer `carry` (None: zeros) -> (logits
        `[batch, time, symbols]`, the carry after the last step)."""
        xs = jax.nn.one_hot(inputs, self.readout.out_features)
        ys, carry = self.rnn(xs, initial_carry=carry)
        return self.readout(ys), carry


def masked_sums(logits: jax.Array, batch: dict) -> dict[str, jax.Array]:
    """Sums over the scored steps (mask 1: t >= d) of the cross-entropy and correct argmaxes."""
    mask = batch["mask"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    return {"nll": jnp.sum(nll * mask), "correct": jnp.sum(correct * mask), "scored": mask.sum()}


class EchoStreamTask(Task):
    """The echo stream trained in windows of `bptt_length` steps (truncated BPTT)."""

    eval_splits = ("valid",)
    final_splits = ("valid",)

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        cell_name: str,
        bptt_length: int,
        recurrent_scale: float | None = None,
    ) -> None:
        self.config, self.cell_name, self.bptt_length = config, cell_name, bptt_length
        self.recurrent_scale = recurrent_scale
        d = config.data
        self.data = EchoTask(delay=d.delay, num_symbols=d.num_symbols, length=d.length)
        self.windows = d.length // bptt_length
        self.batch_size = config.train.batch_size

    def init_model(self, rng: jax.Array) -> EchoModel:
        return EchoModel(self.cell_name, self.config, nnx.Rngs(params=rng), self.recurrent_scale)

    def init_carry(self, batch_size: int) -> list:
        name, options = CELLS[self.cell_name]
        return [get_cell(name, **options).zero_carry(batch_size, self.config.model.hidden_size)]

    def window(self, seed: int, index: int) -> dict:
        """Training batch `index`: window `index % (T/k)` of sequence batch `index // (T/k)`,
        int32 inputs/targets and float32 mask `[batch, k]`, and int32 `reset [batch]` (1 at a
        sequence's first window: the carry restarts from zero there)."""
        sequence = self.data.batch(seed, index // self.windows, self.batch_size)
        start = (index % self.windows) * self.bptt_length
        out = {k: v[:, start : start + self.bptt_length] for k, v in sequence.items()}
        out["reset"] = np.full(self.batch_size, start == 0, np.int32)
        return out

    def train_data(self) -> grid.TaskStream:
        return grid.TaskStream(functools.partial(self.window, self.config.seed))

    def loss_fn(self, model: EchoModel, batch: dict, carry: list, rng: jax.Array) -> tuple:
        restart = batch["reset"][:, None] > 0
        carry = jax.tree.map(lambda c: jnp.where(restart, jnp.zeros_like(c), c), carry)
        # The runtime already differentiates only w.r.t. the params; stop_gradient states the
        # truncation here too: no gradient reaches an earlier window through the carry.
        logits, carry = model(batch["inputs"], jax.lax.stop_gradient(carry))
        sums = masked_sums(logits, batch)
        # Mean over the window's scored steps (a window with none, t < d only, gives 0).
        # Those floor(d/k) windows per sequence still count as updates, and Adam's update
        # there is not zero: its momentum moves the params. Skipping them (quick, session
        # 24) moved the k <= d accuracies by at most 0.008, about one seed std, both ways;
        # the committed tables keep them.
        return sums["nll"] / jnp.maximum(sums["scored"], 1.0), (carry, {})

    def eval_data(self, split: str) -> list[dict]:
        seed = self.config.seed + EVAL_SEED_OFFSET
        return [
            self.data.batch(seed, i, self.batch_size) for i in range(self.config.data.eval_batches)
        ]

    def eval_batch_size(self, split: str) -> int:
        return self.batch_size

    def eval_step(self, model: EchoModel, batch: dict, carry: list) -> tuple:
        # Whole sequences from a zero state: the forward values do not depend on k.
        logits, _ = model(batch["inputs"], None)
        return carry, masked_sums(logits, batch)

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["nll"] / sums["scored"], "accuracy": sums["correct"] / sums["scored"]}


def point_config(
    config: ml_collections.ConfigDict, bptt_length: int, **optimizer: object
) -> ml_collections.ConfigDict:
    """The runtime config of one point: `train.*` and `schedule.*` step counts (in sequences)
    times the windows per sequence (one update per window), so every k sees the same
    learning-rate schedule per token, and the `optimizer.*` overrides given."""
    point = config.copy_and_resolve_references()
    windows = config.data.length // bptt_length
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
        point.train[key] = config.train[key] * windows
    # Counted in updates too: unscaled, a warm-up or step decay ended k times sooner per token
    # at k = T/k windows (session 23; the quick config's constant schedule was not affected).
    for key in (
        "warmup_steps",
        "decay_begin_step",
        "decay_every_steps",
        "plateau_accumulation_steps",
    ):
        point.schedule[key] = config.schedule[key] * windows
    for key, value in optimizer.items():
        point.optimizer[key] = value
    return point


def step_cost(config: ml_collections.ConfigDict, task: EchoStreamTask) -> dict[str, float]:
    """Cost of one training step as the runtime compiles it (all seed replicas): XLA's temp
    memory (`memory_analysis().temp_size_in_bytes`: activations kept for the backward pass and
    scratch; parameters and batch excluded) and the time per token (seconds / (seeds x batch x
    k)), the median of `measure.timing_repeats` timed steps after one warm-up step."""
    mesh, state, train_step, _ = build_steps(config, task)
    batch = distributed.put_global_batch(task.window(config.seed, 0), mesh)
    compiled = train_step.lower(state, batch).compile()
    memory = compiled.memory_analysis()
    state, _ = jax.block_until_ready(compiled(state, batch))
    times = []
    for _ in range(config.measure.timing_repeats):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(compiled(state, batch))
        times.append(time.perf_counter() - start)
    tokens = config.num_seeds * task.batch_size * task.bptt_length
    return {
        "temp_bytes": float(memory.temp_size_in_bytes) if memory is not None else None,
        "step_s": float(np.median(times)),
        "s_per_token": float(np.median(times)) / tokens,
    }


def _per_seed(results: dict, name: str) -> list[float | None]:
    final = results["final"]
    return [grid.finite_or_none(v) for v in final.get("per_seed", {}).get(name, [final[name]])]


def run_bptt_point(
    config: ml_collections.ConfigDict, cell: str, bptt_length: int, point_dir: pathlib.Path
) -> dict:
    """Q13: train (cell, k), then measure one step's cost; returns its summary."""
    point = point_config(config, bptt_length)
    task = EchoStreamTask(point, cell, bptt_length)
    results = train_and_evaluate(point, point_dir, task)
    steps, accuracy = grid.read_metric_curve(point_dir, "valid_accuracy")
    d, length = config.data.delay, config.data.length
    return {
        "question": 13,
        "cell": cell,
        "bptt_length": bptt_length,
        "length": length,
        "delay": d,
        "updates": point.train.num_steps,
        # Scored steps whose (t − d, t) pair lies inside one window (windows start at 0, k, …).
        "inside_fraction": task.windows * max(bptt_length - d, 0) / (length - d),
        "chance_accuracy": 1.0 / config.data.num_symbols,
        "accuracy": _per_seed(results, "valid_accuracy"),
        "loss": _per_seed(results, "valid_loss"),
        **step_cost(point, task),
        "curve_steps": steps,
        "curve_valid_accuracy": [[grid.finite_or_none(v) for v in row] for row in accuracy],
    }


def run_clip_point(
    config: ml_collections.ConfigDict, clip: float | None, point_dir: pathlib.Path
) -> dict:
    """Q11: full BPTT on the expanding Elman RNN with clipping at `clip` (None: off)."""
    c, length = config.clipping, config.data.length
    point = point_config(
        config, length, name=c.optimizer, learning_rate=c.learning_rate, clip_global_norm=clip
    )
    point.num_seeds = c.num_seeds
    task = EchoStreamTask(point, c.cell, length, recurrent_scale=c.recurrent_scale)
    results = train_and_evaluate(point, point_dir, task)
    steps, grad_max = grid.read_metric_curve(point_dir, "grad_norm_max")
    _, train_loss = grid.read_metric_curve(point_dir, "train_loss")
    baseline = task.data.baseline_cross_entropy()
    loss = _per_seed(results, "valid_loss")
    return {
        "question": 11,
        "cell": c.cell,
        "recurrent_scale": c.recurrent_scale,
        "optimizer": f"{c.optimizer} lr={c.learning_rate:g}",
        "clip": clip,
        "baseline": baseline,
        "loss": loss,
        "accuracy": _per_seed(results, "valid_accuracy"),
        "diverged": [v is None or v >= baseline for v in loss],
        "max_grad_norm": [grid.finite_or_none(v) for v in np.nanmax(grad_max, axis=0)],
        "curve_steps": steps,
        "curve_grad_norm_max": [[grid.finite_or_none(v) for v in r] for r in grad_max.tolist()],
        "curve_train_loss": [[grid.finite_or_none(v) for v in r] for r in train_loss.tolist()],
    }


def grid_points(config: ml_collections.ConfigDict) -> list[tuple[str, object]]:
    """(point name, fn(point_dir) -> summary) for every Q13 and Q11 point of the config."""
    lengths, norms = bptt_lengths(config), clip_norms(config)
    if not lengths and not norms:
        raise ConfigError("grid.bptt_lengths and grid.clip_global_norms are both empty: no point")
    cells = grid.split_axis(config, "cells", ("lstm", "gru")) if lengths else []
    d, scale = config.data.delay, config.clipping.recurrent_scale
    points = [
        (f"echo-d{d}-{cell}-k{k}", functools.partial(run_bptt_point, config, cell, k))
        for cell in cells
        for k in lengths
    ]
    points += [
        (
            f"clip-{config.clipping.cell}-s{scale:g}-"
            + ("none" if n is None else grid.value_name(n)),
            functools.partial(run_clip_point, config, n),
        )
        for n in norms
    ]
    return points


# The grid's points need the config alone (no data, nothing trained): `launch.sweep` checks
# each of its runs' grids with them before any starts.
check_grid = grid_points


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Every point of `config`; writes results.json, truncated_bptt.md and the plots."""
    validate(config, RULES)
    points = grid_points(config)
    return grid.run_grid("truncated_bptt", config, workdir, points, report, _final_entry)


def _final_entry(s: dict) -> dict:
    """results.json's `final` entry of one point (Q13: window points; Q11: clipping points)."""
    if s["question"] == 13:
        return {
            "valid_accuracy": s["accuracy"],
            "temp_bytes": s["temp_bytes"],
            "s_per_token": s["s_per_token"],
        }
    return {
        "valid_loss": s["loss"],
        "max_grad_norm": s["max_grad_norm"],
        "diverged_seeds": float(sum(s["diverged"])),
    }


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 11 and 13 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
