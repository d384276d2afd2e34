"""Teacher forcing vs scheduled sampling vs free running, and exposure bias (seed Q8; 7, 16).

Each grid point (corpus, regime) trains an RNN language model on fixed-length windows whose
inputs are mixed gold/sampled tokens (rnn_jax.scheduled_sampling), then measures on held-out
windows how its loss changes once it feeds on its own samples (see the config's docstring).
The corpus `multi30k` is translation instead (experiments.exposure_bias_translation): one
point per `grid.translation_regimes`, scored by greedy and beam BLEU.
Writes W/results.json (`true_process`: the Markov process's own FR − TF gap, the reference for
the models'), W/exposure_bias.md, W/free_running_gap.png, W/true_process_nll.png,
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
from rnn_jax.train.config import (
    ConfigError,
    checkpointed_config,
    in_range,
    int_at_least,
    one_of,
    positive,
)
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import write_text_atomic
from rnn_jax.train.task import Task

REGIMES = ("teacher_forcing", "linear", "exponential", "inverse_sigmoid", "free_running")
CORPORA = ("markov", "tiny_shakespeare", "ptb", translation.CORPUS)
EVAL_SEED_OFFSET = 1_000_003
# inverse sigmoid's largest k: ε_N = 1 − ~1e-15 there, so targets up to 1 are met to 1e-6
INVERSE_SIGMOID_MAX_K = 1e15
RULES = {
    "model.cell": one_of("elman", "lstm", "gru"),
    "model.real_hidden_size": positive,
    "data.window": positive,
    "data.real_window": positive,
    "data.prefix": positive,
    "data.eval_batches": positive,
    # MarkovLanguage's own limits, checked here so that the key is named (and a sweep point
    # is refused before any run) instead of a traceback from the library
    "data.markov_vocab_size": int_at_least(2),
    "data.markov_order": int_at_least(1),
    "data.markov_concentration": positive,
    "data.markov_seed": int_at_least(0),
    "schedule_sampling.final_teacher_forcing": in_range(0.0, 1.0),
    **translation.RULES,
}


def schedule_options(regime: str, num_steps: int, final: float) -> tuple[str, dict]:
    """(schedule name, its k/c/minimum) for a regime; teacher forcing and free running are the
    constants 1 and 0.

    A decaying schedule is fitted so that ε_i = `final` at i = `num_steps`. Training batches
    are numbered i = 0 .. num_steps − 1 (the step rides with the batch), so the last batch
    trained sees ε_{num_steps−1}, one step's decay above `final` (linear over 600 steps to
    0.25: 0.25125). Inverse sigmoid reaches `final` only approximately: its k is searched in
    [1, 1e15] (ε_N = k / (k + exp(N / k)) rises with k from 1 / (1 + e^N) towards 1).

    Raises:
      ValueError: when the inverse-sigmoid ε_N cannot come within 1e-6 of `final` (a
        `final` below 1 / (1 + e^N), possible only for short runs).
    """
    if regime == "teacher_forcing":
        return "constant", {"k": 1.0}
    if regime == "free_running":
        return "constant", {"k": 0.0}
    if regime == "linear":
        return "linear", {"k": 1.0, "c": (1.0 - final) / num_steps, "minimum": final}
    if regime == "exponential":
        return "exponential", {"k": final ** (1.0 / num_steps)}

    def end_value(k: float) -> float:
        return k / (k + math.exp(min(num_steps / k, 700.0)))

    # Bisection on log k; a bound of num_steps (as before) capped ε_N at N / (N + e), which
    # silently missed targets such as 0.999 over 600 steps.
    low, high = 0.0, math.log(INVERSE_SIGMOID_MAX_K)
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if end_value(math.exp(middle)) < final else (low, middle)
    k = math.exp(0.5 * (low + high))
    if abs(end_value(k) - final) > 1e-6:
        raise ValueError(
            f"an inverse-sigmoid schedule over {num_steps} steps cannot end at {final!r}: its "
            f"end value k / (k + exp({num_steps} / k)) with k >= 1 lies in "
            f"[{end_value(1.0):.3g}, 1)"
        )
    return "inverse_sigmoid", {"k": k}


def regime_schedule(regime: str, num_steps: int, final: float) -> tuple[str, dict]:
    """`schedule_options`, with the schedule built once to check it.

    Raises:
      ConfigError: naming `schedule_sampling.final_teacher_forcing`, the regime and the step
        count, when no schedule of that regime can end at `final` (exponential with 0 or 1,
        inverse sigmoid out of reach).
    """
    try:
        name, options = schedule_options(regime, num_steps, final)
        teacher_forcing_schedule(name, **options)
    except ValueError as error:
        raise ConfigError(
            f"schedule_sampling.final_teacher_forcing={final!r} does not work with the "
            f"{regime!r} regime over {num_steps} training steps: {error}"
        ) from None
    return name, options


def check_schedule_resume(point_dir: pathlib.Path, regime: str, num_steps: int) -> None:
    """Refuse to resume a decaying regime's checkpoints under another `train.num_steps`.

    The runtime lets `train.num_steps` change on resume (to train longer), but a decaying
    schedule's ε_i is fitted to it (`schedule_options`): resuming a linear run of 20 steps
    with 40 put ε back from 0.29 to 0.625 at step 20 without a word, and the summary showed
    the 40-step schedule. Teacher forcing and free running (constants) may resume. Read as
    the runtime's `check_resumable` reads it (`checkpointed_config`): only a `point_dir` with
    checkpoints and its config.json.

    Raises:
      ConfigError: naming `train.num_steps`, both values and the point's directory, or a
        config.json that cannot be read.
    """
    if regime in ("teacher_forcing", "free_running"):
        return
    saved = (checkpointed_config(point_dir) or {}).get("train.num_steps", num_steps)
    if saved != num_steps:
        raise ConfigError(
            f"train.num_steps={num_steps}: {point_dir} holds checkpoints of the {regime!r} "
            f"regime trained with train.num_steps={saved}, and its teacher-forcing schedule "
            "is fitted to train.num_steps, so resuming would make ε jump at the resumed step; "
            f"use a new --workdir, or restore train.num_steps={saved}"
        )


def check_prefix(config: ml_collections.ConfigDict, corpus: str) -> None:
    """Refuse a `data.prefix` that leaves `corpus`'s windows no generated position, or (the
    Markov language) gives its first generated token less than `data.markov_order` of gold
    context. Reads the config only (no corpus), so `run` checks every corpus before any
    point trains: a prefix too long for `data.real_window` alone failed only when the first
    real-corpus point started, after every Markov point had trained.

    Raises:
      ConfigError: naming `data.prefix` and the window key of `corpus` (`data.window` for
        the Markov language, `data.real_window` otherwise) or `data.markov_order`.
    """
    data = config.data
    key = "data.window" if corpus == "markov" else "data.real_window"
    window = data.window if corpus == "markov" else data.real_window
    if not 0 < data.prefix < window:
        raise ConfigError(
            f"data.prefix={data.prefix}: must be in 1..{window - 1} (below {key}={window}, "
            f"the length of the {corpus} windows)"
        )
    if corpus == "markov" and data.prefix < data.markov_order:
        # the true process scores a generated token from the `order` tokens before it;
        # with a shorter prefix the first generated positions would have no context
        raise ConfigError(
            f"data.prefix={data.prefix}: must be >= data.markov_order="
            f"{data.markov_order} on the Markov language (the true process needs a "
            "gold context of that many tokens before the first generated one)"
        )


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
        check_prefix(config, corpus)
        name, options = regime_schedule(
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


def true_process_gaps(
    language: MarkovLanguage,
    windows: list[np.ndarray],
    prefix: int,
    seed: int | np.random.SeedSequence,
) -> dict[str, float]:
    """The evaluation's FR and TF NLL for the true process itself, as a reference gap.

    The true process has no exposure bias (its free-running samples have the data's
    distribution), yet the metric gives it a positive FR − TF gap: after its own samples it
    predicts its own continuation, which the gold one does not follow. Each gold window
    `tokens [batch, window + 1]` (the evaluation windows) keeps its first `prefix` tokens
    (`prefix >= language.order`); from there the process samples its own continuation
    (`np.random.default_rng(seed)`), and at generated position k

        tf_nll_k = −log P(gold_{P+k} | gold context)
        fr_nll_k = −log P(gold_{P+k} | own context)

    contexts being the `order` tokens before P + k (at k = 0 both are gold: gap 0).

    Returns:
      Means over the windows: `tf_nll`, `fr_nll`, `own_nll` (its samples' NLL under itself,
      ≈ the entropy rate) over positions P..window, and `tf_nll_k{k}`, `fr_nll_k{k}`,
      `gap_k{k}` for k in `positions`.
    """
    n, v = language.order, language.vocab_size
    if prefix < n:
        raise ValueError(f"prefix={prefix}: must be >= the Markov order {n}")
    probabilities = language.transitions.reshape(v**n, v)
    log_p, cumulative = np.log(probabilities), np.cumsum(probabilities, axis=-1)
    strides = v ** np.arange(n - 1, -1, -1)
    rng = np.random.default_rng(seed)

    def contexts(tokens: np.ndarray) -> np.ndarray:
        """`[batch, generated]` context index of positions prefix..window."""
        stacked = np.lib.stride_tricks.sliding_window_view(tokens, n, axis=1)
        return stacked[:, prefix - n : tokens.shape[1] - n] @ strides

    tf, fr, own_nll = [], [], []
    for gold in windows:
        own = np.array(gold)
        for t in range(prefix, own.shape[1]):
            u = rng.random(len(own))[:, None]
            context = own[:, t - n : t] @ strides
            own[:, t] = np.minimum((cumulative[context] < u).sum(-1), v - 1)
        targets = gold[:, prefix:]
        tf.append(-np.take_along_axis(log_p[contexts(gold)], targets[..., None], -1)[..., 0])
        fr.append(-np.take_along_axis(log_p[contexts(own)], targets[..., None], -1)[..., 0])
        own_targets = own[:, prefix:, None]
        own_nll.append(-np.take_along_axis(log_p[contexts(own)], own_targets, -1)[..., 0])
    tf, fr, own_nll = (np.concatenate(x) for x in (tf, fr, own_nll))  # [windows, generated]
    out = {"tf_nll": tf.mean(), "fr_nll": fr.mean(), "own_nll": own_nll.mean()}
    for k in positions(tf.shape[1]):
        out |= {f"tf_nll_k{k}": tf[:, k].mean(), f"fr_nll_k{k}": fr[:, k].mean()}
        out[f"gap_k{k}"] = out[f"fr_nll_k{k}"] - out[f"tf_nll_k{k}"]
    return {name: float(value) for name, value in out.items()}


def markov_reference(config: ml_collections.ConfigDict) -> dict[str, float]:
    """`true_process_gaps` on the Markov corpus's evaluation windows (those every regime is
    scored on), the process's own continuations drawn from `true_process_seed(config)`."""
    task = ExposureBiasTask(config, "markov", "teacher_forcing")
    windows = [batch["tokens"] for batch in task.eval_data("valid")]
    return true_process_gaps(task.language, windows, config.data.prefix, true_process_seed(config))


def true_process_seed(config: ml_collections.ConfigDict) -> np.random.SeedSequence:
    """The true process's sampler, a stream no evaluation window is drawn from.

    The windows are `MarkovLanguage.batch(e, i)` with e = seed + EVAL_SEED_OFFSET, drawn
    since session 26 by `synthetic.sample_rng([e, i])` (spawn key 0: entropy
    `[e, i, 0, 0, 0]`); until then by `default_rng([e, i])`, and `default_rng(e)` (the
    sampler's seed until session 24) is NumPy's `default_rng([e, 0])`, window batch 0's own
    stream, so the process's continuation reused the uniforms of that batch's gold tokens (56%
    of its tokens equalled the gold token 15 positions earlier at quick's settings, against 6%
    by chance). Spawn key 1 pads the entropy to `[e, 0, 0, 0, 1]`, which no window's stream
    and no plain seed equals.
    """
    return np.random.SeedSequence(config.seed + EVAL_SEED_OFFSET, spawn_key=(1,))


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
        "cell": config.model.cell,
        "schedule": {"name": task.schedule_name, **task.schedule_options},
        "vocab_size": task.vocab_size,
        "entropy_rate": task.language.entropy_rate() if task.language else None,
        "metrics": metrics,
        "timing": results["timing"],
    }


def check_grid(
    config: ml_collections.ConfigDict,
) -> tuple[list[str], list[str], list[tuple[str, tuple[str, dict]]]]:
    """(corpora, language-model regimes, translation points' (regime, schedule) from
    `translation.check_points`, empty without multi30k) of the grid, after every check that
    needs the config alone (no corpus read, nothing trained): `run` calls it first, and
    `launch.sweep` for each of its runs before any starts.

    Raises:
      ConfigError: naming the key.
    """
    corpora = grid.split_axis(config, "corpora", CORPORA)
    lm_corpora = [c for c in corpora if c != translation.CORPUS]
    regimes = grid.split_axis(config, "regimes", REGIMES) if lm_corpora else []
    for corpus in lm_corpora:  # every corpus's windows, before any point trains
        check_prefix(config, corpus)
    for regime in regimes:  # a schedule that cannot be built fails here, before any training
        regime_schedule(
            regime, config.train.num_steps, config.schedule_sampling.final_teacher_forcing
        )
    mt_schedules = []
    if translation.CORPUS in corpora:
        mt_schedules = translation.check_points(config, REGIMES, regime_schedule)
    return corpora, regimes, mt_schedules


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    corpora, regimes, mt_schedules = check_grid(config)
    lm_corpora = [c for c in corpora if c != translation.CORPUS]
    for regime in regimes:
        for corpus in lm_corpora:  # a resume that would change the schedule fails here
            check_schedule_resume(
                workdir / "points" / f"{corpus}-{regime}", regime, config.train.num_steps
            )
    mt_points = translation.points(config, mt_schedules)
    # the true process's own FR − TF gap, the reference for the models' gaps (no training;
    # built first, so a bad data.prefix fails before any point trains)
    reference = {"markov": markov_reference(config)} if "markov" in lm_corpora else {}
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
    extra = {"points": summaries, "true_process": reference}
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    if lm:
        write_text_atomic(workdir / "exposure_bias.md", report_markdown(lm, reference))
        plot_gaps(lm, workdir / "free_running_gap.png")
    if any(s["entropy_rate"] for s in lm.values()):
        plot_true_nll(lm, workdir / "true_process_nll.png")
    if mt:
        translation_report.write_report(config, mt, workdir)
    grid.write_results(workdir, final, {**extra, "timing": {"wall_s": time.perf_counter() - start}})
    return final


def _split(summaries: dict[str, dict]) -> tuple[dict, dict]:
    """(language-model points, translation points)."""
    mt = {n: s for n, s in summaries.items() if s["corpus"] == translation.CORPUS}
    return {n: s for n, s in summaries.items() if n not in mt}, mt


def _ks(summary: dict) -> list[int]:
    return sorted(int(k.removeprefix("fr_nll_k")) for k in summary["metrics"] if "fr_nll_k" in k)


def _gap(summary: dict, k: int) -> list[float]:
    """Per-seed FR − TF NLL at step k; NaN for a seed whose NLL was not finite (stored as
    null by `grid.finite_or_none`)."""
    m = summary["metrics"]
    return [f - t for f, t in zip(_nan(m[f"fr_nll_k{k}"]), _nan(m[f"tf_nll_k{k}"]), strict=True)]


def report_markdown(summaries: dict[str, dict], reference: dict[str, dict] | None = None) -> str:
    """W/exposure_bias.md: one table per corpus; `reference` maps a corpus to its
    `true_process_gaps` (a line under that corpus's table)."""
    reference = reference or {}
    lines = [
        "# Teacher forcing, scheduled sampling and exposure bias (seed question 8)",
        "",
        "NLL in nats per token on held-out windows, mean ± std over seeds, at the positions "
        "after the gold prefix (prefix .. window). TF = teacher-forced (gold inputs); FR = the "
        "model's NLL of the gold token after it has fed on its own samples for k steps "
        "(k = 0: none yet); gap = FR − TF at the same position. For a language model the gold "
        "continuation does not depend on the model's samples, so the gap measures how firmly "
        "the model follows its own history, not damage; where a true process is known, the "
        "true-process NLL of the samples is what scores them.",
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
        if corpus in reference:
            lines += [_reference_sentence(reference[corpus], shown), ""]
    return "\n".join(lines)


def _reference_sentence(reference: dict[str, float], ks: list[int]) -> str:
    gaps = ", ".join(
        f"{reference[f'gap_k{k}']:+.3f} at k={k}" for k in ks if f"gap_k{k}" in reference
    )
    return (
        f"The true process itself (no exposure bias: its samples have the data's distribution), "
        f"scored the same way on the same windows: TF NLL {reference['tf_nll']:.3f}, FR NLL "
        f"{reference['fr_nll']:.3f}, gap {gaps}; its samples' NLL under itself "
        f"{reference['own_nll']:.3f}."
    )


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
    """Markdown answers to seed questions 7, 8 and (translation) 16 from a finished run.

    Sample quality is judged only where a true process can score the samples (the Markov
    language): the regime whose free-running samples' true-process NLL is closest to the
    entropy rate (what the true process's own samples score) is named best. The FR − TF gap
    is reported as what it is, how firmly a model follows its own history, beside the true
    process's own gap when W/results.json has it (`true_process`).

    A regime is called better than another (lowest teacher-forced NLL, samples closer to the
    entropy rate) only beyond the seed spread: every seed of one better than every seed of
    the other (`grid.finite_seeds_below`); a lower mean with overlapping seeds is reported as
    within the seed spread. Short of that, a pair with a seed that is not finite is "not
    compared seed by seed" and a pair with one seed has "no seed spread to compare" (both
    read "within the seed spread"); a regime with no finite value reads "n/a" (was "nan").
    """
    results = json.loads((workdir / "results.json").read_text())
    points, mt = _split(results["points"])
    references = results.get("true_process", {})
    out = {}
    q8, q7 = [], []
    for corpus in dict.fromkeys(s["corpus"] for s in points.values()):
        rows = {s["regime"]: s for s in points.values() if s["corpus"] == corpus}
        ks = _ks(next(iter(rows.values())))
        far = ks[-1]

        def mean(s: dict, key: str) -> float:
            return grid.nan_mean(s["metrics"][key])

        tf_seeds = {r: s["metrics"]["tf_nll"] for r, s in rows.items()}
        best_tf, tied_tf = grid.best_within_spread(tf_seeds)
        text = (
            f"{corpus}: teacher-forced NLL after the gold prefix "
            + ", ".join(
                f"{r} {grid.number_text(mean(s, 'tf_nll'), '.3f')}" for r, s in rows.items()
            )
            + (
                " (no regime has a finite value)"
                if best_tf is None
                else f" ({translation_report.ONLY_REGIME})"
                if len(rows) == 1
                else f" (best: {best_tf})"
                if not tied_tf
                else f" (lowest mean: {best_tf}, "
                f"{grid.spread_phrase(tf_seeds[best_tf], {r: tf_seeds[r] for r in tied_tf})})"
            )
            + f"; FR − TF gap at k={far} "
            + ", ".join(
                f"{r} {grid.number_text(grid.nan_mean(_gap(s, far)), '+.3f')}"
                for r, s in rows.items()
            )
            + " (how firmly the model follows its own history, not damage: the gold "
            "continuation does not depend on the model's samples)."
        )
        entropy = next(iter(rows.values()))["entropy_rate"]
        reference = references.get(corpus, {})
        if f"gap_k{far}" in reference:
            text += (
                f" The true process itself, which has no exposure bias, has a gap of "
                f"{reference[f'gap_k{far}']:+.3f} at k={far} "
                f"({reference['fr_nll'] - reference['tf_nll']:+.3f} averaged over the generated "
                "positions) on the same windows."
            )
        if entropy:
            true = {r: mean(s, "true_nll") for r, s in rows.items()}
            # per seed: how far its samples' true-process NLL is from the entropy rate
            distance = {
                r: [None if v is None else abs(v - entropy) for v in s["metrics"]["true_nll"]]
                for r, s in rows.items()
            }
            best, tied = grid.best_within_spread(distance)
            text += (
                " True-process NLL of the free-running samples "
                + ", ".join(f"{r} {grid.number_text(v, '.3f')}" for r, v in true.items())
                + f" against an entropy rate of {entropy:.3f} (what the true process's own "
                + (
                    "samples score); no regime's samples have a finite value."
                    if best is None
                    else f"samples score); {translation_report.ONLY_REGIME}."
                    if len(rows) == 1
                    else f"samples score); best samples by this measure: {best}."
                    if not tied
                    else f"samples score); closest on average: {best}, but "
                    f"{grid.spread_phrase(distance[best], {r: distance[r] for r in tied})}, so no "
                    "regime's samples are named best."
                )
            )
            scheduled = [r for r in ("linear", "exponential", "inverse_sigmoid") if r in true]
            if scheduled and "teacher_forcing" in true:
                text += _scheduled_vs_teacher_forcing(distance, scheduled)
            if "teacher_forcing" in rows:
                tf_nll = mean(rows["teacher_forcing"], "tf_nll")
                finite, total = grid.finite_seeds(rows["teacher_forcing"]["metrics"]["tf_nll"])
                # `model.cell`; a summary stored before the cell was recorded names none
                cell = rows["teacher_forcing"].get("cell", "").upper()
                own = (
                    f", {tf_nll - reference['tf_nll']:+.3f} against the true process's own NLL "
                    f"of the same held-out windows ({reference['tf_nll']:.3f})"
                    if "tf_nll" in reference
                    else ""
                )
                lm = f"the teacher-forced {cell + ' ' if cell else ''}LM"
                seeds = (
                    f" ({finite.size} of {total} seeds; the others' NLL was not finite)"
                    if finite.size < total
                    else ""
                )
                q7.append(
                    f"On the Markov language (entropy rate {entropy:.3f} nats), {lm} reaches "
                    f"{tf_nll:.3f} nats/token on held-out windows{seeds} "
                    f"({tf_nll - entropy:+.3f} against the entropy rate{own})."
                    if finite.size
                    else f"On the Markov language (entropy rate {entropy:.3f} nats), {lm} has "
                    "no finite held-out NLL: every seed diverged."
                )
        else:
            text += (
                f" {corpus} has no known true process to score samples with, so these numbers "
                "do not say which regime generates better text."
            )
        q8.append(text)
    if q8:
        out[8] = " ".join(q8)
    if mt:
        out[8] = (out[8] + " " if q8 else "") + translation_report.answer_text(mt)
        out[16] = translation_report.answer_text(mt)
    if q7:
        out[7] = " ".join(q7)
    return out


def _scheduled_vs_teacher_forcing(distance: dict[str, list], scheduled: list[str]) -> str:
    """The sentence comparing the scheduled-sampling regimes' samples with teacher forcing's
    by their per-seed distance from the entropy rate, claiming only beyond the seed spread."""
    teacher = distance["teacher_forcing"]
    if not grid.finite_seeds(teacher)[0].size:
        # every regime with a finite mean was "closer on average", "within the seed spread"
        return " Teacher forcing's samples have no finite value to compare with (it diverged)."
    closer = [r for r in scheduled if grid.ranking_mean(distance[r]) < grid.ranking_mean(teacher)]
    clear = [r for r in closer if grid.finite_seeds_below(distance[r], teacher)]
    reasons = {r: grid.unranked_reason(distance[r], teacher) for r in scheduled}
    within = [r for r in closer if r not in clear and reasons[r] == grid.WITHIN_SPREAD]
    unranked = [
        f"{r} ({reasons[r]})" for r in closer if r not in clear and reasons[r] != grid.WITHIN_SPREAD
    ]
    text = ""
    if clear:
        text += (
            f" Scheduled sampling comes closer to it than teacher forcing with {', '.join(clear)}."
        )
    if within:
        text += (
            f" {', '.join(within)} closer on average than teacher forcing, but within the "
            "seed spread."
        )
    if unranked:
        text += f" Closer on average than teacher forcing, but not ranked: {', '.join(unranked)}."
    if not closer:
        overlapping = [r for r in scheduled if not grid.finite_seeds_below(teacher, distance[r])]
        labels = [
            f"{r} within the seed spread"
            if reasons[r] == grid.WITHIN_SPREAD
            else f"{r} not ranked ({reasons[r]})"
            for r in overlapping
        ]
        text += " No scheduled-sampling regime comes closer to it than teacher forcing" + (
            f" (on average; {', '.join(labels)})." if labels else "."
        )
    return text


if __name__ == "__main__":
    grid.main(run, RULES)
