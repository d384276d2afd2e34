"""LSTM/GRU vs a transformer of matched size: quality, long range, cost (seed Q9, 10, 15).

Grid tasks: `shakespeare` (character LM, bits per character), `copy` (copy task at growing
blank length T) and `cost` (throughput, memory and generation latency against sequence
length). Writes W/results.json, W/rnn_vs_attention.md, W/shakespeare_curves.png,
W/copy_vs_length.png and W/cost_vs_length.png.

    python -m experiments.rnn_vs_attention --workdir=W \
        --config=experiments/configs/rnn_vs_attention.py:quick
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import grid
from rnn_jax.data.lm_corpus import lm_corpus
from rnn_jax.data.synthetic import CopyTask
from rnn_jax.decoding import greedy_decode
from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.params import count_params, match_size
from rnn_jax.models.transformer import TransformerLM
from rnn_jax.train.config import ConfigError, in_range, int_at_least, positive
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import training_rates, write_text_atomic
from rnn_jax.train.task import Task

MODELS = ("lstm", "gru", "transformer")
TASKS = ("shakespeare", "copy", "cost")
EVAL_SEED_OFFSET = 1_000_003
COST_VOCAB = 65  # Tiny Shakespeare's characters; the data itself does not matter for cost
RULES = {
    "model.transformer_layers": positive,
    "model.transformer_heads": positive,
    "model.size_tolerance": in_range(0.001, 0.5),
    "data.window": positive,
    "data.eval_batches": positive,
    # CopyTask's own check raised inside the run (a traceback, exit status 1)
    "data.num_symbols": int_at_least(1),
    "data.num_categories": int_at_least(1),
    "cost.tokens_per_batch": positive,
    "cost.repeats": positive,
    "cost.decode_tokens": positive,
}


# ---- models of matched size ---------------------------------------------------------------------
def build_model(
    kind: str,
    vocab: int,
    width: int,
    config: ml_collections.ConfigDict,
    max_length: int,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """`width` is the RNN's hidden size or the transformer's d_model."""
    if kind == "transformer":
        return TransformerLM(
            vocab,
            d_model=width,
            num_heads=config.model.transformer_heads,
            num_layers=config.model.transformer_layers,
            max_length=max_length,
            rngs=rngs,
        )
    return RNNLanguageModel(vocab, width, cell=kind, rngs=rngs)


def matched_widths(
    config: ml_collections.ConfigDict, vocab: int, max_length: int, kinds: list[str]
) -> dict[str, tuple[int, int]]:
    """kind -> (width, parameter count): the LSTM at `model.hidden_size`, the others sized
    by `match_size` to its count within `model.size_tolerance`."""

    def build(kind: str, width: int) -> nnx.Module:
        return build_model(kind, vocab, width, config, max_length, nnx.Rngs(0))

    hidden = config.model.hidden_size
    target = count_params(nnx.eval_shape(lambda: build("lstm", hidden)))
    out = {}
    for kind in kinds:
        if kind == "lstm":
            out[kind] = (hidden, target)
            continue
        multiple = config.model.transformer_heads if kind == "transformer" else 1
        try:
            out[kind] = match_size(
                functools.partial(build, kind),
                target,
                low=multiple,
                high=16 * hidden,
                tolerance=config.model.size_tolerance,
                multiple_of=multiple,
            )
        except ValueError as error:
            raise ConfigError(
                f"model.size_tolerance={config.model.size_tolerance!r}: no {kind} matches the "
                f"LSTM of model.hidden_size={hidden} (model.transformer_heads="
                f"{config.model.transformer_heads}, vocabulary {vocab}, {max_length} "
                f"positions): {error}"
            ) from None
    return out


def logits_of(model: nnx.Module, inputs: jax.Array) -> jax.Array:
    """`inputs int [batch, time]` -> `[batch, time, vocab]` for either model family."""
    if isinstance(model, TransformerLM):
        return model(inputs)
    return model(inputs)[0]


# ---- training task: next-symbol prediction, from a zero state ------------------------------------
class SequenceTask(Task):
    """Per-position classification of `targets` from `inputs` (both int `[batch, time]`):
    character LM windows or the copy task; `copy_positions` last positions are scored as
    copy accuracy."""

    eval_splits = ("valid",)
    final_splits = ("valid",)

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        kind: str,
        width: int,
        vocab: int,
        max_length: int,
        draw: callable,
        copy_positions: int = 0,
    ) -> None:
        self.config, self.kind, self.width, self.vocab = config, kind, width, vocab
        self.max_length, self.draw, self.copy_positions = max_length, draw, copy_positions

    def init_model(self, rng: jax.Array) -> nnx.Module:
        return build_model(
            self.kind, self.vocab, self.width, self.config, self.max_length, nnx.Rngs(params=rng)
        )

    def train_data(self) -> grid.TaskStream:
        return grid.TaskStream(lambda i: self.draw(self.config.seed, i, "train"))

    def eval_data(self, split: str) -> list[dict]:
        seed = self.config.seed + EVAL_SEED_OFFSET
        return [self.draw(seed, i, split) for i in range(self.config.data.eval_batches)]

    def eval_batch_size(self, split: str) -> int:
        return self.config.train.batch_size

    def loss_fn(self, model: nnx.Module, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        logits = logits_of(model, batch["inputs"])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return jnp.mean(nll), ((), {})

    def eval_step(self, model: nnx.Module, batch: dict, carry: tuple) -> tuple:
        logits = logits_of(model, batch["inputs"])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        sums = {"nll": nll.sum(), "tokens": jnp.asarray(nll.size, jnp.float32)}
        if self.copy_positions:
            s = self.copy_positions
            hits = jnp.argmax(logits[:, -s:], -1) == batch["targets"][:, -s:]
            sums["copy_hits"] = hits.sum().astype(jnp.float32)
            sums["copy_symbols"] = jnp.asarray(hits.size, jnp.float32)
        return (), sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["nll"] / sums["tokens"]
        out = {"loss": loss, "bits_per_token": loss / math.log(2)}
        if "copy_hits" in sums:
            out["copy_accuracy"] = sums["copy_hits"] / sums["copy_symbols"]
        return out


def train_point(
    config: ml_collections.ConfigDict,
    task: SequenceTask,
    params: int,
    point_dir: pathlib.Path,
    extra: dict,
) -> dict:
    results = train_and_evaluate(config, point_dir, task)
    final = results["final"]
    per_seed = final.get("per_seed", {})
    metrics = {
        name.removeprefix("valid_"): per_seed.get(name, [value])
        for name, value in final.items()
        if name.startswith("valid_") and not name.endswith("_std")
    }
    steps, curve = grid.read_metric_curve(point_dir, "valid_loss")
    # The rate of the invocation that trained the steps: one that only finished the run (a
    # rerun after a failed report) trained none and measured none.
    rates = training_rates(results["timing"])
    return {
        **extra,
        "model": task.kind,
        "width": task.width,
        "params": params,
        "metrics": metrics,
        "steps_per_s": rates["steps_per_s"],
        "steps_per_s_earlier_invocation": rates["earlier_invocation"],
        "curve_steps": steps,
        "curve_valid_loss": curve.tolist(),
    }


def shakespeare_points(config: ml_collections.ConfigDict, models: list[str]) -> list:
    corpus = lm_corpus("tiny_shakespeare", config.data.root or None)
    vocab, window, batch = len(corpus.vocab.tokens), config.data.window, config.train.batch_size
    widths = matched_widths(config, vocab, window, models)

    def draw(seed: int, index: int, split: str) -> dict:
        w = grid.random_windows(corpus.splits[split], seed, index, batch, window + 1)
        return {"inputs": w[:, :-1], "targets": w[:, 1:]}

    points = []
    for kind in models:
        width, params = widths[kind]
        task = SequenceTask(config, kind, width, vocab, window, draw)
        fn = functools.partial(train_point, config, task, params, extra={"task": "shakespeare"})
        points.append((f"shakespeare-{kind}", fn))
    return points


def copy_points(config: ml_collections.ConfigDict, models: list[str]) -> list:
    points = []
    for length in grid.split_ints(config, "copy_lengths"):
        data = CopyTask(length, config.data.num_symbols, config.data.num_categories)
        widths = matched_widths(config, data.vocab_size, data.length, models)

        def draw(seed: int, index: int, split: str, data: CopyTask = data) -> dict:
            return data.batch(seed, index, config.train.batch_size)

        for kind in models:
            width, params = widths[kind]
            task = SequenceTask(
                config, kind, width, data.vocab_size, data.length, draw, data.num_symbols
            )
            extra = {
                "task": "copy",
                "length": length,
                "baseline": data.baseline_cross_entropy(),
                "num_categories": data.num_categories,
            }
            fn = functools.partial(train_point, config, task, params, extra=extra)
            points.append((f"copy-T{length}-{kind}", fn))
    return points


# ---- (c) cost against sequence length -----------------------------------------------------------
def cost_widths(
    config: ml_collections.ConfigDict, vocab: int, models: list[str]
) -> dict[str, tuple[int, int]]:
    """kind -> (width, parameter count) of the cost task's models: those of the Shakespeare
    comparison, matched at `data.window` positions (so they do not depend on `cost.lengths`).

    Matching at max(cost.lengths) positions instead would count an unused position table of
    max(cost.lengths) x d_model parameters against the LSTM's budget and time a much narrower
    transformer than the one whose quality is reported (d_model 56 instead of 76 in `quick`).
    """
    return matched_widths(config, vocab, config.data.window, models)


def measure_cost(
    config: ml_collections.ConfigDict, models: list[str], point_dir: pathlib.Path
) -> dict:
    """Training tokens/s, XLA temp memory, generation latency and generation-state bytes
    against length.

    The models have the widths of the quality comparison (`cost_widths`) and position tables
    of max(cost.lengths) rows. Generation is timed two ways, batch 1, with T tokens of
    context: one jitted step called from Python (`generate_ms_per_token`, dispatch included),
    and `cost.decode_tokens` steps inside one jitted `lax.scan` (`rnn_jax.decoding.
    greedy_decode`, `decode_ms_per_token`: the last `decode_tokens` positions of a cache of T
    slots). `state_bytes` is the generation state's size (the RNN's carries or the KV cache
    with its position counter), summed over its arrays' `nbytes`. Every configuration is
    compiled first; then the models are timed round-robin (A, B, C, A, B, C, ...)
    `cost.repeats` times so that load from other processes hits them alike.
    """
    vocab = COST_VOCAB
    lengths = grid.split_ints(config, "lengths", section="cost")
    widths = cost_widths(config, vocab, models)
    tx = optax.adam(1e-3)
    rows = []
    for length in lengths:
        batch = max(1, config.cost.tokens_per_batch // length)
        tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (batch, length + 1)))
        timed = {}
        for kind in models:
            model = build_model(kind, vocab, widths[kind][0], config, max(lengths), nnx.Rngs(0))
            graphdef, state = nnx.split(model)
            train = jax.jit(functools.partial(_train_step, graphdef, tx))
            compiled = train.lower(state, tx.init(state), tokens).compile()
            memory = compiled.memory_analysis()
            opt_state = tx.init(state)
            jax.block_until_ready(compiled(state, opt_state, tokens))
            generate, gen_state = _generation_step(model, length)
            jax.block_until_ready(generate(*gen_state))
            decode, decode_args = _decode_scan(model, length, config.cost.decode_tokens)
            jax.block_until_ready(decode(*decode_args))
            timed[kind] = {
                "train": (compiled, (state, opt_state, tokens)),
                "generate": (generate, gen_state),
                "decode": (decode, decode_args),
                "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
                "state_bytes": sum(x.nbytes for x in jax.tree.leaves(gen_state[1])),
                "params_built": count_params(model),
            }
        samples, loads = _time_interleaved(timed, models, config.cost.repeats)
        rows += cost_rows(length, batch, widths, timed, samples, config.cost.decode_tokens)
        print(f"    cost T={length}: done (load average {np.median(loads):.1f})", flush=True)
    return {
        "task": "cost",
        "rows": rows,
        "params": {k: v[1] for k, v in widths.items()},
        "widths": {k: v[0] for k, v in widths.items()},
        "decode_tokens": config.cost.decode_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {jax.devices()[0].platform}",
        "load_average": os.getloadavg()[0],
    }


COST_PARTS = ("train", "generate", "decode")


def _time_interleaved(
    timed: dict[str, dict], models: list[str], repeats: int
) -> tuple[dict[str, dict[str, list[float]]], list[float]]:
    """Seconds per call of each model's `timed[kind][part]` = (fn, args) for the parts of
    `COST_PARTS`, `repeats` rounds, the models round-robin with a rotating start (A, B, C, then
    B, C, A, ...); -> ({kind: {part: [seconds per round]}}, [1-min load average per round])."""
    samples = {kind: {part: [] for part in COST_PARTS} for kind in models}
    loads = []
    for r in range(repeats):
        order = models[r % len(models) :] + models[: r % len(models)]
        for kind in order:
            for part in COST_PARTS:
                samples[kind][part].append(_time(*timed[kind][part]))
        loads.append(os.getloadavg()[0])
    return samples, loads


def cost_rows(
    length: int,
    batch: int,
    widths: dict[str, tuple[int, int]],
    measured: dict[str, dict],
    samples: dict[str, dict[str, list[float]]],
    decode_tokens: int,
) -> list[dict]:
    """The cost table's rows at one length T, one per model of `samples`, from the seconds per
    call of `_time_interleaved` (a training step on `batch` sequences of T tokens, one
    generation step, a scan decode of `decode_tokens` tokens) and `measured[kind]`'s
    `temp_bytes` (None: unmeasured), `state_bytes` and `params_built`."""
    rows = []
    for kind in samples:
        train_s = np.asarray(samples[kind]["train"], np.float64)
        temp = measured[kind]["temp_bytes"]
        rows.append(
            {
                "length": length,
                "batch": batch,
                "model": kind,
                "width": widths[kind][0],
                "params": widths[kind][1],
                "params_built": measured[kind]["params_built"],
                "train_tokens_per_s": (batch * length / train_s).tolist(),
                "generate_ms_per_token": (
                    1e3 * np.asarray(samples[kind]["generate"], np.float64)
                ).tolist(),
                "decode_ms_per_token": (
                    1e3 * np.asarray(samples[kind]["decode"], np.float64) / decode_tokens
                ).tolist(),
                "state_bytes": int(measured[kind]["state_bytes"]),
                "temp_memory_mib": None if temp is None else temp / 2**20,
            }
        )
    return rows


def _train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    state: nnx.State,
    opt_state: optax.OptState,
    tokens: jax.Array,
) -> tuple:
    def loss(s: nnx.State) -> jax.Array:
        logits = logits_of(nnx.merge(graphdef, s), tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    grads = jax.grad(loss)(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state


def _generation_step(model: nnx.Module, length: int) -> tuple:
    """A jitted one-token step for batch 1 and its arguments: the RNN's state, or the
    transformer's KV cache filled to position `length` − 1 (attention over `length` slots)."""
    graphdef, state = nnx.split(model)
    token = jnp.zeros((1,), jnp.int32)
    if isinstance(model, TransformerLM):
        cache = model.init_cache(1, length)
        cache = {**cache, "position": jnp.full((1,), length - 1, jnp.int32)}
    else:
        cache = model.zero_carry(1)

    def step(s: nnx.State, c: object, t: jax.Array) -> tuple:
        return nnx.merge(graphdef, s).step(c, t)

    return jax.jit(step), (state, cache, token)


def _decode_scan(model: nnx.Module, length: int, num_tokens: int) -> tuple:
    """A jitted greedy decode of `num_tokens` tokens for batch 1 inside one `lax.scan` (as
    `rnn_jax.decoding` runs a step function) and its arguments: the RNN's zero state, or the
    transformer's KV cache of `length` slots starting at position `length - num_tokens`, so
    the decode fills its last `num_tokens` slots."""
    graphdef, state = nnx.split(model)
    if isinstance(model, TransformerLM):
        cache = model.init_cache(1, length)
        cache = {**cache, "position": jnp.full((1,), length - num_tokens, jnp.int32)}
    else:
        cache = model.zero_carry(1)

    def decode(s: nnx.State, c: object) -> jax.Array:
        step = nnx.merge(graphdef, s).step
        # eos_id 0 only decides which tokens become padding: all num_tokens steps always run
        return greedy_decode(step, c, bos_id=0, eos_id=0, max_length=num_tokens)[0]

    return jax.jit(decode), (state, cache)


def _time(fn: callable, args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


# ---- the grid and the report --------------------------------------------------------------------
def check_grid(config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
    """(tasks, models) of the grid, after every check that needs the config alone (no data
    read, nothing trained): `run` calls it first, and `launch.sweep` for each of its runs
    before any starts.

    Raises:
      ConfigError: naming the grid or cost key.
    """
    tasks = grid.split_axis(config, "tasks", TASKS)
    models = grid.split_axis(config, "models", MODELS)
    if "cost" in tasks:
        lengths = grid.split_ints(config, "lengths", section="cost")
        if config.cost.decode_tokens > min(lengths):
            raise ConfigError(
                f"cost.decode_tokens={config.cost.decode_tokens}: must be at most the shortest "
                f"of cost.lengths={config.cost.lengths!r} (the decode fills the last "
                "decode_tokens slots of a cache of T)"
            )
        uneven = [t for t in lengths if config.cost.tokens_per_batch % t]
        if uneven:
            # batch = tokens_per_batch // T (at least 1) trained another number of tokens per
            # batch at these T, while the report and the Q15 answer compare throughput and
            # memory "at the same tokens per batch"
            raise ConfigError(
                f"cost.lengths={config.cost.lengths!r}: {uneven} do not divide "
                f"cost.tokens_per_batch={config.cost.tokens_per_batch} (the cost task trains "
                "every T at the same number of tokens per batch, tokens_per_batch / T "
                "sequences)"
            )
        cost_widths(config, COST_VOCAB, models)  # a ConfigError now, not after the other points
    if "copy" in tasks:
        grid.split_ints(config, "copy_lengths")
    return tasks, models


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    tasks, models = check_grid(config)
    start = time.perf_counter()
    points = []
    if "shakespeare" in tasks:
        points += shakespeare_points(config, models)
    if "copy" in tasks:
        points += copy_points(config, models)
    if "cost" in tasks:
        # the point measures every model of grid.models, so its name carries them: named
        # "cost", a rerun with another grid.models reused the summary of the first
        points.append((f"cost-{'-'.join(models)}", functools.partial(measure_cost, config, models)))
    print(f"rnn_vs_attention: {len(points)} grid points, {config.num_seeds} seeds each", flush=True)
    summaries = grid.run_points(workdir, points, config)
    final = {}
    for name, s in summaries.items():
        if s["task"] == "cost":
            for row in s["rows"]:
                final[f"cost-T{row['length']}-{row['model']}"] = {
                    "temp_memory_mib": row["temp_memory_mib"],  # None (unmeasured) is not 0
                    "state_bytes": float(row["state_bytes"]),
                }
        else:
            final[name] = {
                k: s["metrics"][k]
                for k in ("loss", "bits_per_token", "copy_accuracy")
                if k in s["metrics"]
            }
            final[name]["params"] = float(s["params"])
    extra = {"points": summaries, "timing": {"wall_s": time.perf_counter() - start}}
    lm = [s for s in summaries.values() if s["task"] == "shakespeare"]
    if lm:
        extra["equal_time_bits"] = {
            k: grid.finite_or_none(v) for k, v in equal_time_bits(lm).items()
        }
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    write_text_atomic(workdir / "rnn_vs_attention.md", report_markdown(summaries))
    plot_all(summaries, workdir)
    grid.write_results(workdir, final, extra)
    return final


def equal_time_bits(rows: list[dict]) -> dict[str, float]:
    """Each model's validation bits/char at the training time the quickest model needed for
    all its steps: steps reached = that time × the model's own steps/s, curve interpolated.

    NaN for a model that reaches fewer steps than its first evaluation (the runtime does not
    evaluate at step 0): it has no measured loss at that time, and clamping to the first
    evaluation would credit it with steps it did not train. NaN too for a model without a
    measured rate: the runtime's steps/s is None when the invocation that trained the steps
    ran fewer than 2 (`train.num_steps=1`, or a resume at the last checkpoint that trained
    one; a rerun that only finished the run reads the rate of the invocation that trained it,
    `rnn_jax.train.metrics.training_rates`). NaN too when a
    seed's validation loss is not finite at an evaluation the reading interpolates from: a
    mean over the finite seeds would drop a diverged seed that the equal-steps column beside
    it counts ("1/2 seeds").
    """

    def total(s: dict) -> float:
        return s["curve_steps"][-1] / s["steps_per_s"] if s["steps_per_s"] else math.inf

    budget = min(total(s) for s in rows)
    out = {}
    for s in rows:
        steps = np.asarray(s["curve_steps"], np.float64)
        loss = np.mean(np.asarray(s["curve_valid_loss"], np.float64), axis=1)
        reached = budget * (s["steps_per_s"] or math.nan)
        if steps.size == 0 or not reached >= steps[0]:
            out[s["model"]] = math.nan
        else:
            out[s["model"]] = float(np.interp(reached, steps, loss) / math.log(2))
    return out


def _number_or_dash(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _shared_note(load_average: float) -> str:
    """Says so when the load shows other jobs competing for the cores during the timings."""
    cores = os.cpu_count() or 1
    return (
        f" (more than its {cores} cores: other jobs shared the machine)"
        if load_average > cores
        else ""
    )


def report_markdown(summaries: dict[str, dict]) -> str:
    lines = ["# RNN vs attention (seed questions 9, 10, 15)", ""]
    if any(s["task"] != "cost" for s in summaries.values()):
        # the config's docstring says the report states this limitation; it did not
        lines += [
            "Every model trains with the same optimizer settings (`optimizer.*`, e.g. Adam at "
            "one learning rate): no per-model tuning, a limitation of this comparison.",
            "",
        ]
    lm = [s for s in summaries.values() if s["task"] == "shakespeare"]
    if lm:
        at_time = equal_time_bits(lm)
        lines += [
            "## Character LM, Tiny Shakespeare (validation bits per character)",
            "",
            "Equal wall-clock: each model's curve read at the training time of the quickest "
            "model (time per step from each run's own steps/s, evaluation included; "
            "indicative only when other jobs shared the machine); – for a model without a "
            "measured loss by then: not at its first evaluation yet, no measured steps/s, or "
            "a seed whose validation loss was not finite (not averaged away).",
            "",
        ]
        table = [
            [
                s["model"],
                s["width"],
                f"{s['params']:,}",
                grid.mean_std(s["metrics"]["bits_per_token"]),
                _number_or_dash(at_time[s["model"]]),
                _number_or_dash(s["steps_per_s"] or math.nan, 1)
                + ("†" if s.get("steps_per_s_earlier_invocation") else ""),
            ]
            for s in lm
        ]
        lines.append(
            grid.markdown_table(
                [
                    "model",
                    "width",
                    "params",
                    "bpc at equal steps",
                    "bpc at equal time",
                    "steps/s (this run)",
                ],
                table,
            )
        )
        if any(s.get("steps_per_s_earlier_invocation") for s in lm):
            lines += [
                "† measured by the invocation that trained the model's steps: a later one only "
                "finished its run (`timing.earlier_invocation` in its results.json), possibly "
                "on another machine or under another load.",
                "",
            ]
    copy = [s for s in summaries.values() if s["task"] == "copy"]
    if copy:
        chance = ", ".join(f"1/{k}" for k in dict.fromkeys(s["num_categories"] for s in copy))
        lines += [
            "## Copy task: growing dependency distance",
            "",
            "Loss in nats per position (memoryless baseline beside it); accuracy on the "
            f"copied symbols (chance {chance}).",
            "",
        ]
        table = [
            [
                s["length"],
                s["model"],
                f"{s['params']:,}",
                grid.mean_std(s["metrics"]["loss"]),
                grid.fmt(s["baseline"]),
                grid.mean_std(s["metrics"]["copy_accuracy"]),
            ]
            for s in copy
        ]
        lines.append(
            grid.markdown_table(
                ["T", "model", "params", "valid loss", "baseline", "copy accuracy"], table
            )
        )
    cost = [s for s in summaries.values() if s["task"] == "cost"]
    for s in cost:
        lines += [
            "## Cost against sequence length",
            "",
            f"{s['machine']}; load average {s['load_average']:.1f} at the end"
            f"{_shared_note(s['load_average'])}. The models of the Shakespeare comparison "
            "(same widths; params as matched there, and as built here with a position table "
            "of the longest T). Median (min–max) over interleaved repeats; training at a fixed "
            "number of tokens per batch; generation, batch 1, with T tokens of context (RNN: "
            "its state; transformer: a KV cache of T slots): one jitted step called from "
            f"Python (dispatch included), and {s['decode_tokens']} steps inside one jitted "
            "`lax.scan` (`greedy_decode`, filling the cache's last slots), per token; state "
            "KiB: the generation state's arrays (RNN carries; KV cache).",
            "",
        ]
        table = [
            [
                r["length"],
                r["batch"],
                r["model"],
                r["width"],
                f"{r['params']:,} / {r['params_built']:,}",
                _median_range(r["train_tokens_per_s"], 0),
                grid.fmt(r["temp_memory_mib"]) if r["temp_memory_mib"] is not None else "–",
                _median_range(r["generate_ms_per_token"], 3),
                _median_range(r["decode_ms_per_token"], 3),
                grid.fmt(r["state_bytes"] / 2**10),
            ]
            for r in s["rows"]
        ]
        lines.append(
            grid.markdown_table(
                [
                    "T",
                    "batch",
                    "model",
                    "width",
                    "params (matched / built)",
                    "train tokens/s",
                    "XLA temp MiB",
                    "step call ms/token",
                    "scan decode ms/token",
                    "state KiB",
                ],
                table,
            )
        )
    return "\n".join(lines)


def _median_range(values: list[float], digits: int) -> str:
    v = np.asarray(values)
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}–{v.max():.{digits}f})"


def plot_all(summaries: dict[str, dict], workdir: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lm = [s for s in summaries.values() if s["task"] == "shakespeare"]
    if lm:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for s in lm:
            loss = np.nanmean(np.asarray(s["curve_valid_loss"], np.float64), axis=1) / math.log(2)
            steps = np.asarray(s["curve_steps"], np.float64)
            axes[0].plot(steps, loss, marker="o", label=f"{s['model']} ({s['params']:,})")
            if s["steps_per_s"]:  # None: fewer than 2 steps run, no rate measured
                axes[1].plot(steps / s["steps_per_s"], loss, marker="o", label=s["model"])
        axes[0].set_xlabel("step")
        axes[1].set_xlabel("training seconds (this run)")
        axes[0].set_ylabel("validation bits per character")
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(workdir / "shakespeare_curves.png", dpi=90)
        plt.close(fig)
    copy = [s for s in summaries.values() if s["task"] == "copy"]
    if copy:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind in dict.fromkeys(s["model"] for s in copy):
            rows = sorted((s for s in copy if s["model"] == kind), key=lambda s: s["length"])
            ax.plot(
                [s["length"] for s in rows],
                [np.nanmean(s["metrics"]["copy_accuracy"]) for s in rows],
                marker="o",
                label=kind,
            )
        for k in dict.fromkeys(s["num_categories"] for s in copy):
            ax.axhline(1 / k, color="gray", linestyle=":", label=f"chance 1/{k}")
        ax.set_xlabel("blank length T")
        ax.set_ylabel("copy accuracy")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(workdir / "copy_vs_length.png", dpi=90)
        plt.close(fig)
    for s in (s for s in summaries.values() if s["task"] == "cost"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
        for kind in dict.fromkeys(r["model"] for r in s["rows"]):
            rows = sorted((r for r in s["rows"] if r["model"] == kind), key=lambda r: r["length"])
            x = [r["length"] for r in rows]
            line = axes[0].plot(
                x, [np.median(r["train_tokens_per_s"]) for r in rows], marker="o", label=kind
            )[0]
            color = line.get_color()
            axes[1].plot(
                x,
                [np.median(r["generate_ms_per_token"]) for r in rows],
                marker="o",
                color=color,
                label=f"{kind}, step call",
            )
            axes[1].plot(
                x,
                [np.median(r["decode_ms_per_token"]) for r in rows],
                marker="s",
                linestyle="--",
                color=color,
                label=f"{kind}, in lax.scan",
            )
            axes[2].plot(x, [r["state_bytes"] / 2**10 for r in rows], marker="o", color=color)
        labels = ("training tokens/s", "generation ms/token", "generation state KiB")
        for ax, label in zip(axes, labels, strict=True):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel(label)
        axes[0].legend(fontsize="small")
        axes[1].legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(workdir / "cost_vs_length.png", dpi=90)
        plt.close(fig)


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 9, 10 and 15 from a finished run."""
    points = json.loads((workdir / "results.json").read_text())["points"]
    out, q9, q15 = {}, [], []
    lm = [s for s in points.values() if s["task"] == "shakespeare"]
    if lm:
        at_time = equal_time_bits(lm)
        q9.append(
            "Tiny Shakespeare, matched parameters, validation bits/char at equal steps (mean ± "
            "std over seeds; a diverged seed is counted, not dropped): "
            + ", ".join(f"{s['model']} {grid.mean_std(s['metrics']['bits_per_token'])}" for s in lm)
            + "; at equal wall-clock: "
            + ", ".join(f"{k} {_number_or_dash(v)}" for k, v in at_time.items())
            + "."
        )
        if not all(math.isfinite(v) for v in at_time.values()):
            first = min((s["curve_steps"][0] for s in lm if s["curve_steps"]), default=None)
            q9.append(
                "– marks a model without a measured loss in the quickest model's training "
                "time: it had not reached its first evaluation"
                + ("" if first is None else f" (step {first})")
                + ", had no measured steps/s, or had a seed whose validation loss was not "
                "finite there."
            )
    copy = [s for s in points.values() if s["task"] == "copy"]
    if copy:
        q15.append(
            "Copy accuracy against distance T (mean ± std over seeds): "
            + "; ".join(
                f"T={s['length']} {s['model']} {grid.mean_std(s['metrics']['copy_accuracy'])}"
                for s in copy
            )
            + "."
        )
    cost = [s for s in points.values() if s["task"] == "cost"]
    if cost:
        rows = cost[0]["rows"]
        longest = max(r["length"] for r in rows)
        shortest = min(r["length"] for r in rows)

        def stat(model: str, length: int, key: str, reduce: callable = np.median) -> float:
            r = next(r for r in rows if r["model"] == model and r["length"] == length)
            return float(reduce(r[key]))

        def memory(model: str, length: int) -> str:
            r = next(r for r in rows if r["model"] == model and r["length"] == length)
            return "–" if r["temp_memory_mib"] is None else f"{grid.fmt(r['temp_memory_mib'])} MiB"

        kinds = list(dict.fromkeys(r["model"] for r in rows))
        q15.append(
            f"Training tokens/s (median) at T={shortest} → T={longest} ({cost[0]['machine']}, "
            f"load {cost[0]['load_average']:.1f}{_shared_note(cost[0]['load_average'])}; "
            "the widths of the Shakespeare comparison): "
            + ", ".join(
                f"{k} (width {cost[0]['widths'][k]}) "
                f"{stat(k, shortest, 'train_tokens_per_s'):.0f} → "
                f"{stat(k, longest, 'train_tokens_per_s'):.0f}"
                for k in kinds
            )
            + "; XLA temporary memory at the same tokens per batch: "
            + ", ".join(f"{k} {memory(k, shortest)} → {memory(k, longest)}" for k in kinds)
            + "."
        )

        out[10] = generation_answer(rows)
    if q9:
        out[9] = " ".join(q9)
    if q15:
        out[15] = " ".join(q15)
    return out


def generation_answer(rows: list[dict]) -> str:
    """The Q10 answer from the cost rows: per-token generation latency (step call and
    in-scan decode, best of the repeats) and the generation state's bytes, shortest to
    longest T, and whether they support "a recurrent state's cost and memory do not grow
    with the context; a KV cache's do" (worded from the measured ratios, not assumed)."""
    longest = max(r["length"] for r in rows)
    shortest = min(r["length"] for r in rows)
    kinds = list(dict.fromkeys(r["model"] for r in rows))

    def value(kind: str, length: int, key: str) -> float:
        r = next(r for r in rows if r["model"] == kind and r["length"] == length)
        return float(np.min(r[key])) if isinstance(r[key], list) else float(r[key])

    def growth(kind: str, key: str) -> float:
        return value(kind, longest, key) / value(kind, shortest, key)

    def listing(key: str, unit: str, fmt: str) -> str:
        return ", ".join(
            f"{k} {value(k, shortest, key) / unit:{fmt}} → {value(k, longest, key) / unit:{fmt}}"
            f" (×{growth(k, key):.1f})"
            for k in kinds
        )

    repeats = len(rows[0]["generate_ms_per_token"])
    text = (
        f"Per-token generation, batch 1, with {shortest} → {longest} tokens of context, best of "
        f"{repeats} (the least load-disturbed sample): one jitted step called from Python "
        f"(dispatch included) {listing('generate_ms_per_token', 1, '.3f')} ms; inside one "
        f"jitted lax.scan decode {listing('decode_ms_per_token', 1, '.3f')} ms. Generation "
        f"state (its arrays' bytes): {listing('state_bytes', 2**10, '.1f')} KiB."
    )
    recurrent = [k for k in kinds if k != "transformer"]
    if "transformer" not in kinds or not recurrent:
        return text + " Needs both an RNN and the transformer to compare."
    if longest == shortest:
        return text + " One length only: no growth measured."
    verdicts = []
    for key, what in (
        ("state_bytes", "state size"),
        ("generate_ms_per_token", "step-call latency"),
        ("decode_ms_per_token", "in-scan latency"),
    ):
        attention = growth("transformer", key)
        rnn = max(growth(k, key) for k in recurrent)
        measured = f"KV cache ×{attention:.1f}, RNNs up to ×{rnn:.1f}"
        # timings vary by ~10% between repeats on a shared CPU: smaller differences are noise.
        # Both halves of the claim are checked: a KV cache whose cost fell (×0.6) beside RNNs
        # at ×0.5, or RNNs at ×3.0 beside a KV cache at ×3.5, do not support it.
        if attention <= 1.1 * max(rnn, 1.0):
            verdicts.append(f"{what}: not supported here ({measured})")
        elif rnn > 1.1:
            verdicts.append(f"{what}: not supported here, the RNNs' grew too ({measured})")
        else:
            verdicts.append(f"{what}: supported (KV cache ×{attention:.1f}, RNNs ≤ ×{rnn:.1f})")
    return (
        text + ' "A recurrent state keeps the same cost and memory at any context length; a KV '
        'cache grows with it": ' + "; ".join(verdicts) + "."
    )


if __name__ == "__main__":
    grid.main(run, RULES)
