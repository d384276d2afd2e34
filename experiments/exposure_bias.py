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
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import exposure_bias_report as report
from experiments import exposure_bias_translation as translation
from experiments import exposure_bias_translation_report as translation_report
from experiments import grid
from rnn_jax.data.lm_corpus import lm_corpus
from rnn_jax.data.synthetic import MarkovLanguage
from rnn_jax.models import RNNLanguageModel
from rnn_jax.scheduled_sampling import choose_decoder_inputs, teacher_forcing_schedule
from rnn_jax.train.config import ConfigError
from rnn_jax.train.loop import train_and_evaluate
from rnn_jax.train.metrics import write_text_atomic
from rnn_jax.train.rules import in_range, int_at_least, one_of, positive
from rnn_jax.train.saved_config import checkpointed_config
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
    lm, mt = report.split(summaries)
    final = {
        name: {k: s["metrics"][k] for k in ("tf_nll", "fr_nll", "true_nll") if k in s["metrics"]}
        for name, s in lm.items()
    }
    final.update({name: translation_report.final_metrics(s) for name, s in mt.items()})
    extra = {"points": summaries, "true_process": reference}
    # the tables and plots before results.json, the "done" marker (grid.write_grid_outputs)
    if lm:
        write_text_atomic(workdir / "exposure_bias.md", report.report_markdown(lm, reference))
        report.plot_gaps(lm, workdir / "free_running_gap.png")
    if any(s["entropy_rate"] for s in lm.values()):
        report.plot_true_nll(lm, workdir / "true_process_nll.png")
    if mt:
        translation_report.write_report(config, mt, workdir)
    grid.write_results(workdir, final, {**extra, "timing": {"wall_s": time.perf_counter() - start}})
    return final


def answers(workdir: pathlib.Path) -> dict[int, str]:
    """Markdown answers to seed questions 7, 8 and (translation) 16 from a finished run's
    results.json (`exposure_bias_report.answers`)."""
    return report.answers(grid.read_results(workdir))


if __name__ == "__main__":
    grid.main(run, RULES)
