"""Teacher forcing vs scheduled sampling vs free running, and exposure bias (seed Q8; 7, 16).

Each grid point (corpus, regime) trains an RNN language model on fixed-length windows whose
inputs are mixed gold/sampled tokens (rnn_jax.scheduled_sampling), then measures on held-out
windows how its loss changes once it feeds on its own samples (see the config's docstring).
The corpus `multi30k` is translation instead (experiments.exposure_bias_translation): one
point per `grid.translation_regimes`, scored by greedy and beam BLEU.
Writes W/results.json, W/exposure_bias.md, W/free_running_gap.png, W/true_process_nll.png,
and for translation W/translation_bleu.md and W/translation_bleu.png.

    python -m experiments.exposure_bias --workdir=W \
        --config=experiments/configs/exposure_bias.py:quick
"""

from __future__ import annotations

import functools
import itertools
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

from experiments import exposure_bias_translation as translation
from experiments import exposure_bias_translation_report as translation_report
from experiments import grid
from rnn_jax.data.lm_corpus import lm_corpus
from rnn_jax.data.synthetic import MarkovLanguage
from rnn_jax.models import RNNLanguageModel
from rnn_jax.scheduled_sampling import choose_decoder_inputs, teacher_forcing_schedule
from rnn_jax.train import cli
from rnn_jax.train.config import in_range, one_of, positive
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.task import Task

REGIMES = ("teacher_forcing", "linear", "exponential", "inverse_sigmoid", "free_running")
CORPORA = ("markov", "tiny_shakespeare", "ptb", translation.CORPUS)
EVAL_SEED_OFFSET = 1_000_003
RULES = {
    "model.cell": one_of("elman", "lstm", "gru"),
    "model.real_hidden_size": positive,
    "data.window": positive,
    "data.real_window": positive,
    "data.prefix": positive,
    "data.eval_batches": positive,
    "schedule_sampling.final_teacher_forcing": in_range(0.0, 1.0),
    **translation.RULES,
}


def schedule_options(regime: str, num_steps: int, final: float) -> tuple[str, dict]:
    """(schedule name, its k/c/minimum) so that a decaying schedule reaches `final` at the
    last step; teacher forcing and free running are the constants 1 and 0."""
    if regime == "teacher_forcing":
        return "constant", {"k": 1.0}
    if regime == "free_running":
        return "constant", {"k": 0.0}
    if regime == "linear":
        return "linear", {"k": 1.0, "c": (1.0 - final) / num_steps, "minimum": final}
    if regime == "exponential":
        return "exponential", {"k": final ** (1.0 / num_steps)}
    # inverse sigmoid: k / (k + exp(N / k)) grows with k; bisect for the k that gives `final`
    low, high = 1.0, float(num_steps)
    for _ in range(100):
        k = 0.5 * (low + high)
        low, high = (k, high) if k / (k + math.exp(min(num_steps / k, 700))) < final else (low, k)
    return "inverse_sigmoid", {"k": 0.5 * (low + high)}


def positions(generated: int) -> list[int]:
    """Free-running steps k (0 = the first generated position) reported per position."""
    return [k for k in (0, 1, 2, 4, 8, 16, 32, 64, 128) if k < generated]


class ExposureBiasTask(Task):
    """LM windows `tokens [batch, window + 1]`; training mixes gold and sampled inputs."""

    eval_splits = ("valid",)
    final_splits = ("valid",)

    def __init__(self, config: ml_collections.ConfigDict, corpus: str, regime: str) -> None:
        self.config, self.corpus_name, self.regime = config, corpus, regime
        data = config.data
        if corpus == "markov":
            self.language = MarkovLanguage(
                vocab_size=data.markov_vocab_size,
                order=data.markov_order,
                concentration=data.markov_concentration,
                seed=data.markov_seed,
            )
            self.vocab_size = self.language.vocab_size
            self.window, self.hidden = data.window, config.model.hidden_size
            # log P(next | context) of the true process, [V**order, V], for scoring samples
            self.log_transitions = jnp.asarray(
                np.log(self.language.transitions.reshape(-1, self.vocab_size)), jnp.float32
            )
        else:
            self.language = None
            self.corpus = lm_corpus(corpus, data.root or None)
            self.vocab_size = len(self.corpus.vocab.tokens)
            self.window, self.hidden = data.real_window, config.model.real_hidden_size
        if not 0 < data.prefix < self.window:
            raise ValueError(f"data.prefix={data.prefix}: must be in 1..{self.window - 1}")
        name, options = schedule_options(
            regime, config.train.num_steps, config.schedule_sampling.final_teacher_forcing
        )
        self.schedule_name, self.schedule_options = name, options
        self.teacher_forcing = teacher_forcing_schedule(name, **options)

    # ---- data -----------------------------------------------------------------------------------
    def windows(self, seed: int, index: int, split: str) -> np.ndarray:
        """int32 `[batch, window + 1]` token windows, a pure function of (seed, index)."""
        batch = self.config.train.batch_size
        if self.language is not None:
            b = self.language.batch(seed, index, batch, self.window)
            return np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)
        return grid.random_windows(self.corpus.splits[split], seed, index, batch, self.window + 1)

    def train_data(self) -> grid.TaskStream:
        def draw(i: int) -> dict:
            tokens = self.windows(self.config.seed, i, "train")
            # the step rides with the batch: the schedule ε_i needs it inside the train step
            return {"tokens": tokens, "step": np.full(len(tokens), i, np.int32)}

        return grid.TaskStream(draw)

    def eval_data(self, split: str) -> list[dict]:
        seed = self.config.seed + EVAL_SEED_OFFSET
        out = []
        for i in range(self.config.data.eval_batches):
            tokens = self.windows(seed, i, split)
            out.append({"tokens": tokens, "index": np.full(len(tokens), i, np.int32)})
        return out

    def eval_batch_size(self, split: str) -> int:
        return self.config.train.batch_size

    def tokens_in(self, batch: dict) -> int:
        return int(batch["tokens"][:, 1:].size)

    # ---- model and training ---------------------------------------------------------------------
    def init_model(self, rng: jax.Array) -> RNNLanguageModel:
        return RNNLanguageModel(
            self.vocab_size, self.hidden, cell=self.config.model.cell, rngs=nnx.Rngs(params=rng)
        )

    def loss_fn(self, model: RNNLanguageModel, batch: dict, carry: tuple, rng: jax.Array) -> tuple:
        tokens = batch["tokens"]
        epsilon = self.teacher_forcing(batch["step"][0])
        logits = mixed_input_logits(model, tokens[:, :-1], epsilon, rng)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return jnp.mean(nll), ((), {"teacher_forcing_prob": epsilon})

    # ---- evaluation -----------------------------------------------------------------------------
    def eval_step(self, model: RNNLanguageModel, batch: dict, carry: tuple) -> tuple:
        tokens, prefix = batch["tokens"], self.config.data.prefix
        generated = self.window - prefix + 1  # positions prefix .. window
        logits, _, _ = model(tokens[:, :-1])
        tf_nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        tf_nll = tf_nll[:, prefix - 1 :]  # [batch, generated]: position prefix + k
        key = jax.random.fold_in(jax.random.key(self.config.seed), batch["index"][0])
        samples, fr_logits = free_run(model, tokens[:, :prefix], generated, key)
        fr_nll = optax.softmax_cross_entropy_with_integer_labels(fr_logits, tokens[:, prefix:])
        batch_size = jnp.asarray(tokens.shape[0], jnp.float32)
        sums = {
            "examples": batch_size,
            "tf_nll": tf_nll.mean(axis=1).sum(),
            "fr_nll": fr_nll.mean(axis=1).sum(),
        }
        true_nll = None
        if self.language is not None:
            true_nll = self.true_process_nll(jnp.concatenate([tokens[:, :prefix], samples], 1))
            true_nll = true_nll[:, prefix:]
            sums["true_nll"] = true_nll.mean(axis=1).sum()
        for k in positions(generated):
            sums[f"tf_nll_k{k}"] = tf_nll[:, k].sum()
            sums[f"fr_nll_k{k}"] = fr_nll[:, k].sum()
            if true_nll is not None:
                sums[f"true_nll_k{k}"] = true_nll[:, k].sum()
        return (), sums

    def true_process_nll(self, sequences: jax.Array) -> jax.Array:
        """−log p(x_t | previous `order` tokens) under the true chain, `[batch, time]`
        (positions before `order` are 0: never used, the prefix is gold)."""
        order, v = self.language.order, self.vocab_size
        time = sequences.shape[1]
        context = jnp.zeros((sequences.shape[0], time - order), jnp.int32)
        for i in range(order):
            context = context * v + sequences[:, i : time - order + i]
        logp = self.log_transitions[context, sequences[:, order:]]
        return jnp.pad(-logp, ((0, 0), (order, 0)))

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {k: v / sums["examples"] for k, v in sums.items() if k != "examples"}


def mixed_input_logits(
    model: RNNLanguageModel, inputs: jax.Array, epsilon: jax.Array, rng: jax.Array
) -> jax.Array:
    """Logits `[batch, time, vocab]` when the input at step t > 0 is the gold `inputs[:, t]`
    with probability ε and otherwise a token sampled from the model's prediction at t − 1
    (Bengio et al. 2015); step 0 always reads the gold token."""
    batch, time = inputs.shape
    keys = jax.random.split(rng, time)

    def body(state: tuple, t: jax.Array) -> tuple:
        carry, previous = state
        sample_key, choice_key = jax.random.split(keys[t])
        sampled = jax.random.categorical(sample_key, previous).astype(inputs.dtype)
        chosen = choose_decoder_inputs(inputs[:, t], sampled, epsilon, choice_key)
        chosen = jnp.where(t == 0, inputs[:, t], chosen)
        carry, logits = model.step(carry, chosen)
        return (carry, logits), logits

    zeros = jnp.zeros((batch, model.vocab_size), jnp.float32)
    _, logits = jax.lax.scan(body, (model.zero_carry(batch), zeros), jnp.arange(time))
    return jnp.swapaxes(logits, 0, 1)


def free_run(
    model: RNNLanguageModel, prefix: jax.Array, length: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Read a gold `prefix [batch, P]`, then sample `length` tokens, each fed back.

    Returns `(samples [batch, length], logits [batch, length, vocab])` where `logits[:, k]`
    is the prediction for position P + k (made after k of the model's own samples).
    """
    logits, carry, _ = model(prefix)

    def body(state: tuple, step_key: jax.Array) -> tuple:
        carry, current = state
        sample = jax.random.categorical(step_key, current).astype(prefix.dtype)
        carry, following = model.step(carry, sample)
        return (carry, following), (sample, current)

    _, (samples, all_logits) = jax.lax.scan(
        body, (carry, logits[:, -1]), jax.random.split(key, length)
    )
    return jnp.swapaxes(samples, 0, 1), jnp.swapaxes(all_logits, 0, 1)


# ---- the grid -----------------------------------------------------------------------------------
def run_point(
    config: ml_collections.ConfigDict, corpus: str, regime: str, point_dir: pathlib.Path
) -> dict:
    task = ExposureBiasTask(config, corpus, regime)
    results = train_and_evaluate(config, point_dir, task)
    final = results["final"]
    per_seed = final.get("per_seed", {})
    metrics = {
        name.removeprefix("valid_"): [grid.finite_or_none(v) for v in per_seed.get(name, [value])]
        for name, value in final.items()
        if name.startswith("valid_") and not name.endswith("_std")
    }
    return {
        "corpus": corpus,
        "regime": regime,
        "schedule": {"name": task.schedule_name, **task.schedule_options},
        "vocab_size": task.vocab_size,
        "entropy_rate": task.language.entropy_rate() if task.language else None,
        "metrics": metrics,
        "timing": results["timing"],
    }


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    corpora = grid.split_axis(config, "corpora", CORPORA)
    lm_corpora = [c for c in corpora if c != translation.CORPUS]
    regimes = grid.split_axis(config, "regimes", REGIMES) if lm_corpora else []
    mt_points = translation.points(config, corpora, REGIMES, schedule_options)
    start = time.perf_counter()
    lm_points = itertools.product(lm_corpora, regimes)
    points = [(f"{c}-{r}", functools.partial(run_point, config, c, r)) for c, r in lm_points]
    points += mt_points
    print(f"exposure_bias: {len(points)} grid points, {config.num_seeds} seeds each", flush=True)
    summaries = grid.run_points(workdir, points, config)
    lm, mt = _split(summaries)
    final = {
        name: {k: s["metrics"][k] for k in ("tf_nll", "fr_nll", "true_nll") if k in s["metrics"]}
        for name, s in lm.items()
    }
    final.update({name: translation_report.final_metrics(s) for name, s in mt.items()})
    grid.write_results(
        workdir, final, {"points": summaries, "timing": {"wall_s": time.perf_counter() - start}}
    )
    if lm:
        (workdir / "exposure_bias.md").write_text(report_markdown(lm))
        plot_gaps(lm, workdir / "free_running_gap.png")
    if any(s["entropy_rate"] for s in lm.values()):
        plot_true_nll(lm, workdir / "true_process_nll.png")
    if mt:
        translation_report.write_report(config, mt, workdir)
    return final


def _split(summaries: dict[str, dict]) -> tuple[dict, dict]:
    """(language-model points, translation points)."""
    mt = {n: s for n, s in summaries.items() if s["corpus"] == translation.CORPUS}
    return {n: s for n, s in summaries.items() if n not in mt}, mt


def _ks(summary: dict) -> list[int]:
    return sorted(int(k.removeprefix("fr_nll_k")) for k in summary["metrics"] if "fr_nll_k" in k)


def _gap(summary: dict, k: int) -> list[float]:
    m = summary["metrics"]
    return [f - t for f, t in zip(m[f"fr_nll_k{k}"], m[f"tf_nll_k{k}"], strict=True)]


def report_markdown(summaries: dict[str, dict]) -> str:
    lines = [
        "# Teacher forcing, scheduled sampling and exposure bias (seed question 8)",
        "",
        "NLL in nats per token on held-out windows, mean ± std over seeds. TF = teacher-forced "
        "(gold inputs); FR = the model's NLL of the gold token after it has fed on its own "
        "samples for k steps (k = 0: none yet); gap = FR − TF at the same position.",
        "",
    ]
    for corpus in dict.fromkeys(s["corpus"] for s in summaries.values()):
        rows = [s for s in summaries.values() if s["corpus"] == corpus]
        ks = _ks(rows[0])
        shown = [k for k in ks if k in (1, 4, 16, 64)] or ks[-1:]
        entropy = rows[0]["entropy_rate"]
        header = ["regime", "schedule", "TF NLL", "FR NLL"] + [f"gap k={k}" for k in shown]
        if entropy:
            header.append(f"true-process NLL of samples (entropy rate {entropy:.3f})")
        table = []
        for s in rows:
            sched = s["schedule"]
            params = ", ".join(f"{k}={v:.4g}" for k, v in sched.items() if k != "name")
            row = [
                s["regime"],
                f"{sched['name']} ({params})",
                grid.mean_std(_nan(s["metrics"]["tf_nll"])),
                grid.mean_std(_nan(s["metrics"]["fr_nll"])),
                *(grid.mean_std(_nan(_gap(s, k))) for k in shown),
            ]
            if entropy:
                row.append(grid.mean_std(_nan(s["metrics"]["true_nll"])))
            table.append(row)
        lines += [f"## {corpus} (vocabulary {rows[0]['vocab_size']})", ""]
        lines.append(grid.markdown_table(header, table))
    return "\n".join(lines)


def _nan(values: list) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _corpus_axes(summaries: dict[str, dict], corpora: list[str]) -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(corpora), figsize=(4.5 * len(corpora), 3.5), squeeze=False)
    return plt, fig, axes[0]


def plot_gaps(summaries: dict[str, dict], path: pathlib.Path) -> None:
    corpora = list(dict.fromkeys(s["corpus"] for s in summaries.values()))
    plt, fig, axes = _corpus_axes(summaries, corpora)
    for ax, corpus in zip(axes, corpora, strict=True):
        for s in (s for s in summaries.values() if s["corpus"] == corpus):
            ks = _ks(s)
            ax.plot(ks, [np.nanmean(_nan(_gap(s, k))) for k in ks], marker="o", label=s["regime"])
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("steps fed on its own samples (k)")
        ax.set_title(corpus)
    axes[0].set_ylabel("FR − TF NLL (nats)")
    axes[-1].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_true_nll(summaries: dict[str, dict], path: pathlib.Path) -> None:
    rows = [s for s in summaries.values() if s["entropy_rate"]]
    plt, fig, axes = _corpus_axes(summaries, ["markov"])
    ax = axes[0]
    for s in rows:
        ks = _ks(s)
        ax.plot(
            ks,
            [np.nanmean(_nan(s["metrics"][f"true_nll_k{k}"])) for k in ks],
            marker="o",
            label=s["regime"],
        )
    ax.axhline(rows[0]["entropy_rate"], color="gray", linestyle="--", label="entropy rate")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("generated position k")
    ax.set_ylabel("true-process NLL of the sample (nats)")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 7, 8 and (translation) 16 from a finished run."""
    points, mt = _split(json.loads((workdir / "results.json").read_text())["points"])
    out = {}
    q8, q7 = [], []
    for corpus in dict.fromkeys(s["corpus"] for s in points.values()):
        rows = {s["regime"]: s for s in points.values() if s["corpus"] == corpus}
        ks = _ks(next(iter(rows.values())))
        far = ks[-1]

        def mean(s: dict, key: str) -> float:
            return float(np.nanmean(_nan(s["metrics"][key])))

        best_tf = min(rows, key=lambda r: mean(rows[r], "tf_nll"))
        best_fr = min(rows, key=lambda r: mean(rows[r], "fr_nll"))
        text = (
            f"{corpus}: teacher-forced NLL "
            + ", ".join(f"{r} {mean(s, 'tf_nll'):.3f}" for r, s in rows.items())
            + f" (best: {best_tf}); free-running NLL best with {best_fr}; gap FR−TF at k={far}: "
            + ", ".join(f"{r} {np.nanmean(_nan(_gap(s, far))):+.3f}" for r, s in rows.items())
            + "."
        )
        if rows.get("teacher_forcing") and rows["teacher_forcing"]["entropy_rate"]:
            s = rows["teacher_forcing"]
            text += (
                f" True-process NLL of free-running samples (teacher-forced model) "
                f"{mean(s, 'true_nll'):.3f} vs entropy rate {s['entropy_rate']:.3f}."
            )
            q7.append(
                f"On the Markov language (entropy rate {s['entropy_rate']:.3f} nats), the "
                f"teacher-forced LSTM LM reaches {mean(s, 'tf_nll'):.3f} nats/token."
            )
        q8.append(text)
    if q8:
        out[8] = " ".join(q8) + (
            " Exposure bias shows as a positive gap that grows with k; scheduled sampling is "
            "supported by these numbers only where its FR NLL beats teacher forcing's."
        )
    if mt:
        out[8] = (out[8] + " " if q8 else "") + translation_report.answer_text(mt)
        out[16] = translation_report.answer_text(mt)
    if q7:
        out[7] = " ".join(q7)
    return out


def _cli_run(config: ml_collections.ConfigDict, workdir: str, task: None) -> dict:
    return run(config, pathlib.Path(workdir))


if __name__ == "__main__":
    cli.main(lambda config: None, RULES, run=_cli_run)
