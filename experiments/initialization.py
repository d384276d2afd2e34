"""Does the recurrent initialisation decide whether an RNN learns long-range tasks? (seed Q19)

For every grid point (task, T, cell, recurrent init) this trains `num_seeds` replicas with the
shared runtime and measures, with rnn_jax.diagnostics on held-out sequences of the *actual*
cell, at initialisation and after training:
- ‖∂L/∂h_{T−d}‖ for distances d from the last state h_T (the vanishing-gradient picture);
  for the copy task L is the recall steps' part of the loss (`diagnosed_loss`);
- log10 σ_max of the Jacobian product ∂h_T/∂h_{T−k} (not of W_hh alone), up to ∂h_T/∂h_1;
  a product that is exactly 0 (σ_max = 0: a ReLU RNN with every unit off at one step) is
  counted apart, as a fraction of the sequences, and left out of the mean of log10 σ_max;
- for LSTM/GRU, how often their sigmoid gates are saturated (< 0.1 or > 0.9).
It writes W/results.json, W/initialization.md and W/loss_curves.png, W/grad_vs_distance.png.
h_1 … h_T are the states of the whole input sequence: T steps for the adding problem, the
blank length plus twice the number of symbols for the copy task (its summary's `steps`).
h_t is the cell's whole carry: for the LSTM (h_t, c_t), so its ‖∂L/∂h_t‖ and Jacobians
(2H × 2H) include the cell-state path (rnn_jax.diagnostics flattens the carry).

    python -m experiments.initialization --workdir=W \
        --config=experiments/configs/initialization.py:quick
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import grid
from experiments import initialization_report as report
from rnn_jax import diagnostics
from rnn_jax.cells import get_cell
from rnn_jax.data.synthetic import AddingProblem, CopyTask
from rnn_jax.modules import RNN
from rnn_jax.train import seeds
from rnn_jax.train.config import ConfigError
from rnn_jax.train.config_checks import validate
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import write_text_atomic
from rnn_jax.train.rules import int_at_least, one_of, positive, positive_fraction
from rnn_jax.train.task import Task

CELLS = {
    "elman_tanh": ("elman", {"nonlinearity": "tanh"}),
    "elman_relu": ("elman", {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
}
SIGMOID_GATES = {"lstm": diagnostics.LSTM_SIGMOID_GATES, "gru": diagnostics.GRU_SIGMOID_GATES}
INITS = ("orthogonal", "normal_0.01", "normal_inv_sqrt_h", "normal_1.0", "identity", "glorot")
TASKS = ("adding", "copy")
EVAL_SEED_OFFSET = 1_000_003  # held-out batches come from a stream training never reads

RULES = {
    "data.eval_batches": positive,
    "diagnostics.num_sequences": positive,
    # a fraction of the baseline loss: above 1, a model worse than the baseline "succeeds"
    "diagnostics.success_fraction": positive_fraction,
    "model.input_init": one_of("glorot_uniform", "glorot_normal", "lecun_normal", "orthogonal"),
    # the copy task's (CopyTask refuses < 1, but only when its grid point is reached)
    "data.num_symbols": int_at_least(1),
    "data.num_categories": int_at_least(1),
}


def recurrent_init(name: str, hidden_size: int) -> dict:
    """Init name of the grid -> `recurrent_init`/`recurrent_scale` options of `cell.init`."""
    if name.startswith("normal_"):
        scale = name.removeprefix("normal_")
        value = 1.0 / math.sqrt(hidden_size) if scale == "inv_sqrt_h" else float(scale)
        return {"recurrent_init": "normal", "recurrent_scale": value}
    named = {"orthogonal": "orthogonal", "identity": "identity", "glorot": "glorot_uniform"}
    return {"recurrent_init": named[name]}


def product_lengths(steps: int) -> list[int]:
    """Lengths k of the Jacobian products ∂h_T/∂h_{T−k} that are reported (1 … T−1; the
    longest, k = T−1, is ∂h_T/∂h_1, the span of the gradient ratio h_1 vs h_T). k = T would be
    ∂h_T/∂h_0, a derivative with respect to the fixed zero initial carry."""
    return sorted({k for k in (1, 10, steps // 2, steps - 1) if 1 <= k <= steps - 1})


class Model(nnx.Module):
    """One recurrent layer and a linear readout: of the last h (adding) or of every h (copy)."""

    def __init__(
        self,
        cell_name: str,
        init_name: str,
        input_size: int,
        output_size: int,
        config: ml_collections.ConfigDict,
        rngs: nnx.Rngs,
    ) -> None:
        name, options = CELLS[cell_name]
        hidden = config.model.hidden_size
        self.rnn = RNN(
            get_cell(name, **options),
            input_size,
            hidden,
            input_init=config.model.input_init,
            **recurrent_init(init_name, hidden),
            rngs=rngs,
        )
        self.readout = nnx.Linear(hidden, output_size, rngs=rngs)


class LongRangeTask(Task):
    """Adding problem (regression on the last step) or copy task (classification at every
    step) for one (T, cell, init); evaluation adds the gradient-flow diagnostics."""

    # "diagnostics" is the valid batches marked for the (costly) gradient-flow measurements:
    # the marker changes the batch's pytree, so the jitted eval step traces a second version
    # that runs them, once at the end, while periodic evaluations stay cheap.
    eval_splits = ("valid",)
    final_splits = ("valid", "diagnostics")

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        task: str,
        length: int,
        cell_name: str,
        init_name: str,
    ) -> None:
        self.config, self.task, self.length = config, task, length  # length: the grid's T
        self.cell_name, self.init_name = cell_name, init_name
        if task == "adding":
            self.data = AddingProblem(length=length)
            self.baseline = AddingProblem.baseline_mse()
            self.input_size, self.output_size = 2, 1
        else:
            self.data = CopyTask(
                blank_length=length,
                num_symbols=config.data.num_symbols,
                num_categories=config.data.num_categories,
            )
            self.baseline = self.data.baseline_cross_entropy()
            self.input_size = self.output_size = self.data.vocab_size
        # The sequence's own length, which the diagnostics index: T for the adding problem,
        # T + 2S for the copy task (its blank length T is what the grid names).
        self.steps = self.data.length
        self.threshold = config.diagnostics.success_fraction * self.baseline
        self.batch_size = config.train.batch_size

    # ---- model and data -----------------------------------------------------------------------
    def init_model(self, rng: jax.Array) -> Model:
        return Model(
            self.cell_name,
            self.init_name,
            self.input_size,
            self.output_size,
            self.config,
            nnx.Rngs(params=rng),
        )

    def train_data(self) -> grid.TaskStream:
        return grid.TaskStream(lambda i: self.data.batch(self.config.seed, i, self.batch_size))

    def eval_data(self, split: str) -> list[dict]:
        batches = [
            self.data.batch(self.config.seed + EVAL_SEED_OFFSET, i, self.batch_size)
            for i in range(self.config.data.eval_batches)
        ]
        if split == "diagnostics":
            return [{**b, "diagnose": np.zeros(len(b["targets"]), np.int32)} for b in batches]
        return batches

    def eval_batch_size(self, split: str) -> int:
        return self.batch_size

    def _inputs(self, batch: dict) -> jax.Array:
        if self.task == "copy":
            return jax.nn.one_hot(batch["inputs"], self.input_size)
        return jnp.asarray(batch["inputs"])

    def per_example_loss(self, model: Model, ys: jax.Array, targets: jax.Array) -> jax.Array:
        """`ys [batch, time, hidden]` -> `[batch]`: squared error of the last step's prediction
        (adding) or the mean cross-entropy over all steps (copy)."""
        if self.task == "adding":
            prediction = model.readout(ys[:, -1])[:, 0]
            return (prediction - targets) ** 2
        logits = model.readout(ys)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(axis=-1)

    def diagnosed_loss(self, model: Model, ys: jax.Array, targets: jax.Array) -> jax.Array:
        """`ys [batch, time, hidden]` -> `[batch]`: the loss whose ∂L/∂h_t the diagnostics
        measure. Adding problem: `per_example_loss` (it reads the last step only). Copy task:
        its terms of the S recall steps only. The blanks it also scores at every earlier step
        give each h_t a gradient of its own that hides how much of the recall's reaches it: at
        initialisation with N(0, 0.01²) W_hh (blank length 50, hidden 32) ‖∂L/∂h_1‖/‖∂L/∂h_T‖
        was 10^0.05 with every step's loss, where the recall's underflows float32."""
        if self.task == "adding":
            return self.per_example_loss(model, ys, targets)
        s = self.data.num_symbols
        recall = optax.softmax_cross_entropy_with_integer_labels(
            model.readout(ys[:, -s:]), targets[:, -s:]
        )
        return recall.sum(axis=-1) / ys.shape[1]  # as in per_example_loss's mean over steps

    # ---- training and evaluation --------------------------------------------------------------
    def loss_fn(self, model: Model, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        ys, _ = model.rnn(self._inputs(batch))
        loss = self.per_example_loss(model, ys, batch["targets"]).mean()
        return loss, ((), {})

    def eval_step(self, model: Model, batch: dict, carry: tuple) -> tuple:
        xs, targets = self._inputs(batch), batch["targets"]
        ys, _ = model.rnn(xs)
        sums = {
            "loss": self.per_example_loss(model, ys, targets).sum(),
            "examples": jnp.asarray(xs.shape[0], jnp.float32),
        }
        if "diagnose" in batch:
            sums.update(self.diagnostics(model, xs, targets))
        return (), sums

    def diagnostics(self, model: Model, xs: jax.Array, targets: jax.Array) -> dict:
        """Sums over the batch of ‖∂L/∂h_{T−d}‖ (L: `diagnosed_loss`), of log10
        σ_max(∂h_T/∂h_{T−k}) over the first `num_sequences` examples whose product is not
        exactly 0, the number of those that are (`sigma_zero_count_k{k}`), and of the fraction
        of saturated sigmoid gates. T is the last step of `xs [batch, steps, features]`."""
        cell, params = model.rnn.cell, model.rnn.params[0]
        carry0 = cell.zero_carry((xs.shape[0],), model.rnn.hidden_size, xs.dtype)
        step_fn = functools.partial(cell.step, params)
        sums = {}
        # Summing per-example losses keeps each example's dL/dh_t its own.
        norms = diagnostics.hidden_state_grad_norms(
            step_fn,
            cell.output,
            lambda hs: self.diagnosed_loss(model, hs, targets).sum(),
            carry0,
            xs,
        )
        for d in report.distances(self.steps):
            sums[f"grad_norm_d{d}"] = norms[:, self.steps - 1 - d].sum()
        n = min(self.config.diagnostics.num_sequences, xs.shape[0])
        sub_carry = jax.tree.map(lambda c: c[:n], carry0)
        jacobians = diagnostics.state_jacobians(step_fn, sub_carry, xs[:n])
        ks = product_lengths(self.steps)
        log_sv = diagnostics.jacobian_product_log10_singular_values(jacobians, ks)
        for row, k in enumerate(ks):
            zero = jnp.isneginf(log_sv[:, row, 0])  # the product is exactly 0: σ_max = 0
            sums[f"log10_sigma_max_k{k}"] = jnp.where(zero, 0.0, log_sv[:, row, 0]).sum()
            sums[f"sigma_zero_count_k{k}"] = zero.sum().astype(jnp.float32)
        sums["diag_sequences"] = jnp.asarray(n, jnp.float32)
        if self.cell_name in SIGMOID_GATES:
            pre = diagnostics.sigmoid_gate_preactivations(cell, params, carry0, xs)
            saturation = diagnostics.gate_saturation(pre, SIGMOID_GATES[self.cell_name])
            for gate, stats in saturation.items():
                sums[f"gate_{gate}_saturated"] = (stats["left"] + stats["right"]) * xs.shape[0]
        return sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Means per example; `log10_sigma_max_k{k}` is the mean over the diagnosed sequences
        whose product is not 0 (NaN when none is), `sigma_zero_fraction_k{k}` the fraction of
        diagnosed sequences whose product is 0."""
        out = {}
        for name, value in sums.items():
            if name in ("examples", "diag_sequences") or name.startswith("sigma_zero_count_"):
                continue
            if name.startswith("log10_sigma_max_k"):
                k = name.removeprefix("log10_sigma_max_k")
                zeros, sequences = sums[f"sigma_zero_count_k{k}"], sums["diag_sequences"]
                nonzero = sequences - zeros
                out[name] = value / nonzero if nonzero > 0 else float("nan")
                out[f"sigma_zero_fraction_k{k}"] = zeros / sequences
            else:
                out[name] = value / sums["examples"]
        return out


def initial_diagnostics(task: LongRangeTask, config: ml_collections.ConfigDict) -> dict:
    """Eval metrics of each seed's model at initialisation (the same init keys as training);
    a value that is not finite (a diverged model, no non-zero Jacobian product) is None."""
    per_seed: dict[str, list[float | None]] = {}
    step = None
    for base_key in seeds.base_keys(config.seed, config.num_seeds):
        model = task.init_model(seeds.init_key(base_key))
        if step is None:  # one compilation for every seed
            step = jax.jit(functools.partial(_eval_sums, task, nnx.graphdef(model)))
        totals: dict[str, float] = {}
        for batch in task.eval_data("diagnostics"):
            for name, value in step(nnx.state(model), batch).items():
                totals[name] = totals.get(name, 0.0) + float(value)
        for name, value in task.eval_metrics(totals).items():
            per_seed.setdefault(name, []).append(grid.finite_or_none(value))
    return per_seed


def _eval_sums(task: LongRangeTask, graphdef: nnx.GraphDef, state: nnx.State, batch: dict) -> dict:
    return task.eval_step(nnx.merge(graphdef, state), batch, ())[1]


def run_point(
    config: ml_collections.ConfigDict,
    task_name: str,
    length: int,
    cell: str,
    init: str,
    point_dir: pathlib.Path,
) -> dict:
    """Train one grid point; returns its summary (per-seed lists)."""
    task = LongRangeTask(config, task_name, length, cell, init)
    at_init = initial_diagnostics(task, config)
    results = train_and_evaluate(config, point_dir, task)
    final = results["final"]
    per_seed = final.get("per_seed", {})
    trained = {
        name.removeprefix("diagnostics_"): per_seed.get(name, [final[name]])
        for name in final
        if name.startswith("diagnostics_") and not name.endswith("_std")
    }
    steps, valid = grid.read_metric_curve(point_dir, "valid_loss")
    finals = np.asarray(trained["loss"], np.float64)
    success = np.isfinite(finals) & (finals < task.threshold)
    reached = []
    for seed_index in range(config.num_seeds):
        below = [s for s, v in zip(steps, valid[:, seed_index], strict=True) if v < task.threshold]
        reached.append(float(below[0]) if below else None)
    return {
        "task": task_name,
        "length": length,
        "steps": task.steps,
        "cell": cell,
        "init": init,
        "baseline": task.baseline,
        "threshold": task.threshold,
        "success": success.astype(float).tolist(),
        "steps_to_success": reached,
        "at_init": at_init,
        "trained": {
            name: [grid.finite_or_none(v) for v in values] for name, values in trained.items()
        },
        "curve_steps": steps,
        "curve_valid_loss": [[grid.finite_or_none(v) for v in row] for row in valid.tolist()],
    }


def grid_points(config: ml_collections.ConfigDict) -> list[tuple[str, int, str, str]]:
    tasks = grid.split_axis(config, "tasks", TASKS)
    cells = grid.split_axis(config, "cells", tuple(CELLS))
    inits = grid.split_axis(config, "inits", INITS)
    points = []
    for task in tasks:
        key = "copy_lengths" if task == "copy" and config.grid.copy_lengths else "lengths"
        for length in grid.split_ints(config, key):
            try:  # every point's task, before any trains (the adding problem needs T >= 2)
                LongRangeTask(config, task, length, cells[0], inits[0])
            except ValueError as error:
                text = config.grid[key]
                raise ConfigError(
                    f"grid.{key}={text!r}: {task} task, T={length}: {error}"
                ) from None
            points += [(task, length, cell, init) for cell in cells for init in inits]
    return points


# The grid's points need the config alone (no data, nothing trained): `launch.sweep` checks
# each of its runs' grids with them before any starts.
check_grid = grid_points


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """The whole grid of `config`; writes results.json, initialization.md and the plots."""
    validate(config, RULES)
    points = grid_points(config)
    _drop_stale_summaries(workdir, [report.point_name(*p) for p in points])
    start = time.perf_counter()
    print(f"initialization: {len(points)} grid points, {config.num_seeds} seeds each", flush=True)
    summaries = grid.run_points(
        workdir,
        [(report.point_name(*p), functools.partial(run_point, config, *p)) for p in points],
        config,
    )
    final = {
        name: {
            # one 0/1 per seed, like every other metric here: as the seeds' mean, one number,
            # launch.report counted a run's rate as one seed
            "success_rate": [float(x) for x in s["success"]],
            "valid_loss": s["trained"]["loss"],
            "init_log10_sigma_max": s["at_init"][report.longest(s)],
            "init_sigma_zero_fraction": s["at_init"][report.longest(s, "sigma_zero_fraction")],
            "trained_log10_sigma_max": s["trained"][report.longest(s)],
            "trained_sigma_zero_fraction": s["trained"][report.longest(s, "sigma_zero_fraction")],
        }
        for name, s in summaries.items()
    }
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    write_text_atomic(workdir / "initialization.md", report.report_markdown(summaries))
    report.plot_loss_curves(summaries, workdir / "loss_curves.png")
    report.plot_grad_vs_distance(summaries, workdir / "grad_vs_distance.png")
    grid.write_results(
        workdir, final, {"points": summaries, "timing": {"wall_s": time.perf_counter() - start}}
    )
    return final


def _drop_stale_summaries(workdir: pathlib.Path, names: list[str]) -> None:
    """Summaries written before the diagnostics measured the whole copy sequence and
    ∂h_T/∂h_1 have no `steps`; they are removed so that `grid.run_points` redoes those points
    (resuming from their finished checkpoints: only the evaluation and diagnostics rerun)."""
    for name in names:
        path = workdir / "points" / name / "summary.json"
        if path.is_file() and "steps" not in json.loads(path.read_text()):
            print(f"  {name}: summary from an older experiments.initialization, redone", flush=True)
            if jax.process_index() == 0:
                path.unlink()


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 3, 4, 5 and 19 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
