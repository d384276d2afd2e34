"""Data benchmark: batches/s of every data path beside the LM's train steps/s, same process.

    python -m experiments.data_throughput --workdir=W \
        --config=experiments/configs/data_throughput.py:<smoke|quick|full>

Data paths timed (numpy batches, made as the training loop asks for them):
  lm_stream           the LM task's train_data(): LMStream over the corpus's train split with
                      its epoch_start flags (what the LM's train step consumes)
  sentences_bucketed  BatchIterator over a sentence dataset: shuffle, length buckets, padding
  copy_task           CopyTask(T).batch(seed, step, B)
  markov_sample       MarkovLanguage.sample(rng, B, bptt_length)
The LM train step is the runtime's own (rnn_jax.train.steps' jitted, vmapped step, with the
batch put on the devices as the loop does) on experiments.language_model's task, timed
without its data (each round's batches are drawn before the clock starts, so the LM stream is
timed only as a data path). Its first step (compilation) is not timed; then rounds of
`bench.train_steps` train steps alternate with rounds of every data path, in one process.
Timings on a shared machine are noisy, so medians over rounds are reported, with
`os.getloadavg()` at each round. Writes
`W/results.json` (`final`: the medians; `rounds`: every round; `timing`), the table
`W/data_throughput.md` and the plot `W/data_over_train.png` (batches/s of each path over the
LM's train steps/s, log scale: above 1 the data never waits the model).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.language_model_task import RULES as LM_RULES
from experiments.language_model_task import LanguageModelTask
from rnn_jax.data import BatchIterator, CopyTask, MarkovLanguage, repeat_epochs
from rnn_jax.data.pipeline import build_vocabs, collate_for, encode_split, length_key
from rnn_jax.data.registry import load_dataset
from rnn_jax.files import RESULTS_FILE, write_text_atomic
from rnn_jax.train import config as cfg
from rnn_jax.train import distributed
from rnn_jax.train.metrics import remove_done_marker
from rnn_jax.train.rules import Rules, positive
from rnn_jax.train.steps import build_steps

RULES: Rules = {
    **LM_RULES,
    "bench.rounds": positive,
    "bench.data_batches": positive,
    "bench.train_steps": positive,
    "bench.sentence_batch_size": positive,
    "bench.bucket_pool": positive,
    "bench.copy_blank_length": positive,
    "bench.synthetic_batch_size": positive,
}


def data_paths(
    config: ml_collections.ConfigDict, task: LanguageModelTask
) -> dict[str, Callable[[], Iterator[dict]]]:
    """Name -> a function returning an endless batch iterator for that data path."""
    bench, data = config.bench, config.data
    paths: dict[str, Callable[[], Iterator[dict]]] = {
        # The task's own stream (LMStream plus the `epoch_start` flags), not a bare LMStream:
        # the batches the timed train step consumes.
        "lm_stream": lambda: repeat_epochs(task.train_data()),
    }
    if bench.sentence_dataset:
        try:
            dataset = load_dataset(bench.sentence_dataset, data.root)
            # A character corpus (tiny_shakespeare) has no sentences to encode: its ValueError
            # was a traceback naming neither the key nor the value.
            examples = encode_split(dataset, "train", build_vocabs(dataset))
        except ValueError as error:  # an unknown or unusable name: a config error (exit 2)
            name = bench.sentence_dataset
            raise cfg.ConfigError(f"bench.sentence_dataset={name!r}: {error}") from None
        paths["sentences_bucketed"] = lambda: repeat_epochs(
            BatchIterator(
                examples,
                bench.sentence_batch_size,
                seed=config.seed,
                bucket_pool=bench.bucket_pool,
                length_key=length_key(dataset),
                collate=collate_for(dataset),
            )
        )
    copy = CopyTask(blank_length=bench.copy_blank_length)
    paths["copy_task"] = lambda: (
        copy.batch(config.seed, step, bench.synthetic_batch_size) for step in itertools.count()
    )
    language = MarkovLanguage(vocab_size=16, order=2)
    rng = np.random.default_rng(config.seed)
    paths["markov_sample"] = lambda: (
        language.sample(rng, bench.synthetic_batch_size, data.bptt_length)
        for _ in itertools.count()
    )
    return paths


def batches_per_second(make: Callable[[], Iterator[dict]], num_batches: int) -> float:
    """Batches/s of a fresh iterator over `num_batches` batches (arrays made contiguous)."""
    batches = make()
    start = time.perf_counter()
    for batch in itertools.islice(batches, num_batches):
        for value in batch.values():
            np.ascontiguousarray(value)
    return num_batches / (time.perf_counter() - start)


def time_train_steps(
    state: Any, train_step: Callable, batches: Iterator[dict], mesh: Any, num_steps: int
) -> tuple[Any, float]:
    """(the state after `num_steps` train steps, steps per second of the model alone).

    The round's batches are drawn before the clock starts: drawn inside it, the LM stream's
    own time counted as the model's, so `lm_stream`'s ratio to the train steps came out as
    (step + data) / data, never below 1, in exactly the data-bound case the benchmark exists
    to show. What is timed is what the data does not do: the host-to-device put and the step.
    """
    drawn = [next(batches) for _ in range(num_steps)]
    begin = time.perf_counter()
    for batch in drawn:
        state, step_metrics = train_step(state, distributed.put_global_batch(batch, mesh))
    jax.block_until_ready((state, step_metrics))
    return state, num_steps / (time.perf_counter() - begin)


def run(config: ml_collections.ConfigDict, workdir: str, task: LanguageModelTask) -> dict:
    """Alternates rounds of LM train steps and of every data path; writes the report."""
    bench = config.bench
    workdir = pathlib.Path(workdir)
    start = time.perf_counter()
    paths = data_paths(config, task)
    remove_done_marker(workdir)  # before anything is redone
    prepare_s = time.perf_counter() - start
    # Exactly the jitted train step `train_and_evaluate` runs.
    mesh, state, train_step, _ = build_steps(config, task)
    lm_batches = repeat_epochs(task.train_data())

    def train(num_steps: int) -> float:
        nonlocal state
        state, rate = time_train_steps(state, train_step, lm_batches, mesh, num_steps)
        return rate

    begin = time.perf_counter()
    train(1)
    compile_s = time.perf_counter() - begin
    train_rates: list[float] = []
    data_rates: dict[str, list[float]] = {name: [] for name in paths}
    loadavg = []
    for round_index in range(bench.rounds):
        loadavg.append(os.getloadavg())
        train_rates.append(train(bench.train_steps))
        for name, make in paths.items():
            data_rates[name].append(batches_per_second(make, bench.data_batches))
        print(f"round {round_index + 1}/{bench.rounds}: {train_rates[-1]:.2f} train steps/s")
    train_steps_per_s = statistics.median(train_rates)
    data = {name: statistics.median(values) for name, values in data_rates.items()}
    report = {
        "train_steps_per_s": train_steps_per_s,
        "data_batches_per_s": data,
        "data_over_train": {name: rate / train_steps_per_s for name, rate in data.items()},
        "rounds": {"train_steps_per_s": train_rates, "data_batches_per_s": data_rates},
        "loadavg": loadavg,
        "prepare_s": prepare_s,
        "compile_s": compile_s,
        "batch": {
            "lm": [config.train.batch_size, config.data.bptt_length],
            "sentences": bench.sentence_batch_size,
            "synthetic": bench.synthetic_batch_size,
        },
        "devices": [str(d) for d in jax.devices()],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    write_outputs(report, workdir, time.perf_counter() - start)
    print(f"LM train steps/s: {train_steps_per_s:.2f} (loadavg {loadavg[0][0]:.1f})")
    for name, rate in data.items():
        ratio = rate_text(rate / train_steps_per_s)
        print(f"{name:>20}: {rate_text(rate):>10} batches/s = {ratio:>8} x train")
    return report


def rate_text(value: float) -> str:
    """A rate or ratio for the table: whole numbers from 100 up (`12,345`), 3 significant
    digits below (`0.42`): rounded to whole numbers, a data path slower than the train step
    (a ratio below 1, the case the benchmark is for) read `0×`."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def write_outputs(report: dict, workdir: pathlib.Path, wall_s: float) -> None:
    """W/results.json (atomically, last), W/data_throughput.md and W/data_over_train.png."""
    names = list(report["data_batches_per_s"])
    final = {"train_steps_per_s": report["train_steps_per_s"]}
    for name in names:
        final[f"{name}_batches_per_s"] = report["data_batches_per_s"][name]
        final[f"{name}_over_train"] = report["data_over_train"][name]
    load = report["loadavg"][0]
    rows = [
        f"| {name} | {rate_text(report['data_batches_per_s'][name])} | "
        f"{rate_text(report['data_over_train'][name])}× |"
        for name in names
    ]
    write_text_atomic(
        workdir / "data_throughput.md",
        "\n".join(
            [
                "# Data paths against the LM's train step (batches/s, median over rounds)",
                "",
                f"LM train steps/s: {report['train_steps_per_s']:.2f} (batch "
                f"{report['batch']['lm'][0]} x {report['batch']['lm'][1]}); load average at "
                f"the first round {load[0]:.1f}; devices {len(report['devices'])}.",
                "",
                "| data path | batches/s | over train steps/s |",
                "|---|---|---|",
                *rows,
                "",
            ]
        ),
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.barh(names, [report["data_over_train"][n] for n in names])
    ax.set_xscale("log")
    ax.axvline(1.0, color="gray", linestyle="--")
    ax.set_xlabel("data batches/s ÷ LM train steps/s")
    fig.tight_layout()
    plot = workdir / "data_over_train.png"
    tmp = plot.with_name(f".{plot.name}.tmp-{os.getpid()}{plot.suffix}")  # atomic, as the table
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, plot)
    results = {
        "final": final,
        "rounds": report["rounds"],
        "loadavg": report["loadavg"],
        "batch": report["batch"],
        "devices": report["devices"],
        "timing": {
            "wall_s": wall_s,
            "prepare_s": report["prepare_s"],
            "compile_s": report["compile_s"],
        },
    }
    write_text_atomic(workdir / RESULTS_FILE, json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    from rnn_jax.train import cli

    cli.main(LanguageModelTask, RULES, run=run)
