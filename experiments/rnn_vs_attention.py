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
from experiments import rnn_vs_attention_report as report
from rnn_jax.data.lm_corpus import lm_corpus
from rnn_jax.data.synthetic import CopyTask
from rnn_jax.decoding import greedy_decode
from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.params import count_params, match_size
from rnn_jax.models.transformer import TransformerLM
from rnn_jax.train.config import ConfigError
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import training_rates, write_text_atomic
from rnn_jax.train.rules import in_range, int_at_least, positive
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


# ---- the grid -----------------------------------------------------------------------------------
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
            k: grid.finite_or_none(v) for k, v in report.equal_time_bits(lm).items()
        }
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    write_text_atomic(workdir / "rnn_vs_attention.md", report.report_markdown(summaries))
    report.plot_all(summaries, workdir)
    grid.write_results(workdir, final, extra)
    return final


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 9, 10 and 15 from a finished run's results.json."""
    return grid.grid_answers(workdir, report)


if __name__ == "__main__":
    grid.main(run, RULES)
