"""The RNN language model against a per-step numpy reference, its carries, streaming step,
tied embeddings, dropout masks and bfloat16 compute; the experiment's task and rules on the
smoke config; its unit, prompt parsing, generation (the per-step argmax of full passes at a
tiny temperature) and the checkpoint its evaluation and samples name."""

import json
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import (
    language_model,
    language_model_report,
    language_model_sampling,
    language_model_task,
)
from rnn_jax import layers
from rnn_jax.models import RNNLanguageModel
from rnn_jax.train.config import ConfigError
from tests.layer_spy import layer_one_input_mask
from tests.module_cli import StartedModule, check_refused
from tests.reference_numpy import elman_step, lstm_step

VOCAB, HIDDEN, BATCH, TIME = 11, 6, 3, 5


def _tokens(seed=0, time=TIME):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (BATCH, time)), jnp.int32)


def _reference_logits(model, tokens, step, h_masks=None):
    """Embedding lookup, per-step numpy cells layer by layer (float64), output projection."""
    x = np.asarray(model.embedding[...], np.float64)[np.asarray(tokens)]
    for layer, params in enumerate(model.rnn.params):
        mask = np.ones((BATCH, HIDDEN)) if h_masks is None else np.asarray(h_masks[layer])
        outputs = []
        for b in range(BATCH):
            state = (
                (np.zeros(HIDDEN), np.zeros(HIDDEN)) if step is lstm_step else (np.zeros(HIDDEN),)
            )
            row = []
            for t in range(x.shape[1]):
                state, h = step(params, state, x[b, t], mask[b])
                row.append(h)
            outputs.append(row)
        x = np.asarray(outputs)
    kernel = (
        np.asarray(model.embedding[...]).T
        if model.tie_embeddings
        else np.asarray(model.output_kernel[...])
    )
    return x @ kernel + np.asarray(model.output_bias[...]), x


@pytest.mark.parametrize("tie", [False, True])
def test_forward_matches_a_numpy_per_step_lstm(tie):
    model = RNNLanguageModel(
        VOCAB, HIDDEN, num_layers=2, tie_embeddings=tie, init_scale=0.3, rngs=nnx.Rngs(0)
    )
    tokens = _tokens()
    logits, _, hidden = model(tokens)
    want, outputs = _reference_logits(model, tokens, lstm_step)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hidden["outputs"], outputs, rtol=1e-5, atol=1e-5)
    assert hasattr(model, "output_kernel") != tie


def test_carry_passes_across_batches_like_one_long_sequence():
    model = RNNLanguageModel(VOCAB, HIDDEN, num_layers=2, rngs=nnx.Rngs(1))
    tokens = _tokens(1, time=2 * TIME)
    whole, _, _ = model(tokens)
    first, carry, _ = model(tokens[:, :TIME])
    second, _, _ = model(tokens[:, TIME:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)


def test_streaming_step_equals_the_full_forward():
    model = RNNLanguageModel(VOCAB, HIDDEN, num_layers=2, rngs=nnx.Rngs(2))
    tokens = _tokens(2)
    logits, _, _ = model(tokens)
    carry = model.zero_carry(BATCH)
    step = nnx.jit(lambda m, c, tok: m.step(c, tok))
    for t in range(TIME):
        carry, step_logits = step(model, carry, tokens[:, t])
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)


def test_recurrent_dropout_mask_is_constant_over_time_and_differs_across_sequences():
    rate = 0.5
    model = RNNLanguageModel(VOCAB, HIDDEN, cell="elman", recurrent_dropout=rate, rngs=nnx.Rngs(3))
    tokens = _tokens(3, time=8)
    rng = jax.random.key(7)
    _, _, hidden = model(tokens, rng=rng)
    # The masks the model draws: stream 3 of the LM's key, split once by rnn_jax.modules.RNN.
    _, mask_rng = jax.random.split(jax.random.fold_in(rng, 3))
    masks = layers.recurrent_dropout_masks(mask_rng, rate, BATCH, HIDDEN, 1)
    mask = np.asarray(masks[0])
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert len({row.tobytes() for row in mask}) == BATCH  # one mask per sequence
    # A reference that applies this one mask at every step reproduces the model exactly.
    step = lambda p, s, x, m: elman_step(p, s, x, m, "tanh")
    _, outputs = _reference_logits(model, tokens, step, h_masks=[mask])
    np.testing.assert_allclose(hidden["outputs"], outputs, rtol=1e-5, atol=1e-5)
    # ... and the no-mask reference does not (the mask matters).
    _, unmasked = _reference_logits(model, tokens, step)
    assert not np.allclose(hidden["outputs"], unmasked, atol=1e-3)


def test_dropouts_are_random_in_training_and_off_in_evaluation():
    model = RNNLanguageModel(
        VOCAB,
        HIDDEN,
        num_layers=2,
        dropout_input=0.3,
        dropout_between=0.3,
        dropout_output=0.3,
        embedding_dropout=0.2,
        weight_drop=0.3,
        locked_dropout=True,
        rngs=nnx.Rngs(4),
    )
    tokens = _tokens(4)
    a, _, _ = model(tokens, rng=jax.random.key(0))
    b, _, _ = model(tokens, rng=jax.random.key(0))
    c, _, _ = model(tokens, rng=jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    clean = RNNLanguageModel(VOCAB, HIDDEN, num_layers=2, rngs=nnx.Rngs(4))
    np.testing.assert_allclose(model(tokens)[0], clean(tokens)[0], rtol=1e-6)


def test_gradients_reach_every_parameter_with_weight_drop():
    model = RNNLanguageModel(VOCAB, HIDDEN, weight_drop=0.5, rngs=nnx.Rngs(5))
    tokens = _tokens(5)

    def loss(m):
        logits, _, _ = m(tokens, rng=jax.random.key(0))
        return jnp.mean(logits**2)

    grads = nnx.state(nnx.grad(loss)(model), nnx.Param)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.any(np.asarray(g) != 0), path


@pytest.mark.parametrize(
    "option, value",
    [("dropout_input", 1.0), ("weight_drop", -0.1), ("hidden_size", 0), ("embed_size", 0)],
)
def test_bad_arguments_name_themselves(option, value):
    kwargs = {"dropout_input": 0.0, "weight_drop": 0.0, "hidden_size": HIDDEN, option: value}
    hidden = kwargs.pop("hidden_size")
    with pytest.raises(ValueError, match=option):
        RNNLanguageModel(VOCAB, hidden, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match="tie_embeddings"):
        RNNLanguageModel(VOCAB, HIDDEN, embed_size=4, tie_embeddings=True, rngs=nnx.Rngs(0))


def test_task_loss_and_eval_agree_with_the_model(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli

    # Batch 4 x bptt 16 (smoke's batch is 16 too): 'sum' scaling by the batch size instead of
    # the window length would pass with a square batch.
    overrides = {"objective.time_reduction": "sum", "train.batch_size": 4}
    config = cli.load_config("experiments/configs/language_model.py:smoke", overrides, RULES)
    task = LanguageModelTask(config)
    model = task.init_model(jax.random.key(0))
    batch = next(iter(task.train_data()))
    assert batch["targets"].shape[0] != batch["targets"].shape[1]
    carry = task.init_carry(config.train.batch_size)
    loss, (new_carry, aux) = task.loss_fn(model, batch, carry, None)
    logits, _, _ = model(batch["inputs"])
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    b, t = np.indices(batch["targets"].shape)
    nll = -log_probs[b, t, batch["targets"]]
    assert float(aux["train_nll"]) == pytest.approx(nll.mean(), rel=1e-5)
    assert float(loss) == pytest.approx(nll.sum(1).mean(), rel=1e-5)  # Zaremba: sum over time
    weights = np.ones(batch["targets"].shape, np.float32)
    _, sums = task.eval_step(model, {**batch, "weights": weights}, carry)
    metrics = task.eval_metrics({k: float(v) for k, v in sums.items()})
    assert metrics["loss"] == pytest.approx(nll.mean(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
    # AR (alpha, on the dropped-out output) and TAR (beta, on the output before dropout), as
    # AWD-LSTM adds them to the per-token mean; 'sum' scales the whole objective by the window.
    # Output dropout under a key tells the two tensors apart (AR on the raw output, TAR on the
    # dropped one, swapped alpha/beta or a missing term each miss `want`).
    config.objective.ar_alpha, config.objective.tar_beta = 2.0, 3.0
    config.model.dropout_output = 0.5
    model, rng = task.init_model(jax.random.key(0)), jax.random.key(3)
    logits, _, hidden = model(batch["inputs"], carry, rng=rng)
    log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
    dropped, raw = (np.asarray(hidden[k], np.float64) for k in ("dropped_outputs", "outputs"))
    assert not np.allclose(dropped, raw)
    want = -log_probs[b, t, batch["targets"]].mean()
    want += 2.0 * np.mean(dropped**2) + 3.0 * np.mean(np.diff(raw, axis=1) ** 2)
    summed = float(task.loss_fn(model, batch, carry, rng)[0])
    config.objective.time_reduction = "mean"
    mean = float(task.loss_fn(model, batch, carry, rng)[0])
    assert mean == pytest.approx(want, rel=1e-5)
    assert summed == pytest.approx(mean * nll.shape[1], rel=1e-5)


def test_epoch_starts_flag_each_epochs_first_batch_and_reset_the_carry(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES, EpochStarts, LanguageModelTask
    from rnn_jax.data import LMStream
    from rnn_jax.data.batching import repeat_epochs
    from rnn_jax.train import cli

    stream = EpochStarts(LMStream(np.arange(8 * 13), batch_size=8, num_steps=4))  # 3 per epoch
    batches = repeat_epochs(stream)
    flags = [bool(next(batches)["epoch_start"][0]) for _ in range(4)]
    assert flags == [True, False, False, True]
    resumed = EpochStarts(LMStream(np.arange(8 * 13), batch_size=8, num_steps=4))
    resumed.load_state_dict(stream.state_dict())
    rest = repeat_epochs(resumed)
    assert [bool(next(rest)["epoch_start"][0]) for _ in range(3)] == [False, False, True]

    config = cli.load_config("experiments/configs/language_model.py:smoke", {}, RULES)
    task = LanguageModelTask(config)
    model = task.init_model(jax.random.key(0))
    batch = next(iter(task.train_data()))
    zeros = task.init_carry(config.train.batch_size)
    noise = jax.tree.map(lambda z: z + 1.0, zeros)
    at_start, _ = task.loss_fn(model, batch, noise, None)
    from_zero, _ = task.loss_fn(model, {**batch, "epoch_start": ~batch["epoch_start"]}, zeros, None)
    assert float(at_start) == float(from_zero)
    carried, _ = task.loss_fn(model, {**batch, "epoch_start": ~batch["epoch_start"]}, noise, None)
    assert float(carried) != float(at_start)


def test_bfloat16_compute_keeps_float32_params_carry_and_logits():
    kwargs = dict(num_layers=2, init_scale=0.3, rngs=nnx.Rngs(6))
    full = RNNLanguageModel(VOCAB, HIDDEN, **kwargs)
    half = RNNLanguageModel(VOCAB, HIDDEN, compute_dtype="bfloat16", **kwargs)
    tokens = _tokens(6)
    want, _, _ = full(tokens)
    got, carry, _ = half(tokens)
    assert got.dtype == jnp.float32
    assert all(c.dtype == jnp.float32 for c in jax.tree.leaves(carry))
    np.testing.assert_allclose(got, want, atol=3e-2)  # bf16 has 8 mantissa bits

    def loss(m):
        return jnp.mean(m(tokens)[0] ** 2)

    grads = nnx.state(nnx.grad(loss)(half), nnx.Param)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("locked", [False, True])
def test_locked_dropout_also_locks_the_mask_between_layers(monkeypatch, locked):
    """AWD-LSTM's `dropouti` / `dropouth` / `dropout` (Gal & Ghahramani): with locked_dropout
    the input mask (layer 0's input over the embedding), the between-layer mask (layer 1's
    input over layer 0's output) and the output mask are each one `[batch, 1, features]` mask
    per sequence."""
    model = RNNLanguageModel(
        VOCAB,
        HIDDEN,
        num_layers=2,
        dropout_input=0.5,
        dropout_between=0.5,
        dropout_output=0.5,
        locked_dropout=locked,
        rngs=nnx.Rngs(8),
    )
    tokens, inputs, out = _tokens(8, time=12), [], {}
    real = layers.unroll

    def record_inputs(cell, params, xs, *args, **kwargs):
        inputs.append(np.asarray(xs))
        return real(cell, params, xs, *args, **kwargs)

    monkeypatch.setattr(layers, "unroll", record_inputs)  # the spy below wraps this one
    mask = layer_one_input_mask(
        monkeypatch, lambda: out.update(hidden=model(tokens, rng=jax.random.key(2))[2])
    )
    # The embedded input's and the last layer output's masks follow the same switch (both
    # were unlocked whatever locked_dropout said, and only the between-layer mask was tested).
    embedded = np.asarray(model.embedding[...])[np.asarray(tokens)]
    raw = np.asarray(out["hidden"]["outputs"])
    assert np.all(embedded != 0) and np.all(raw != 0)
    masks = [inputs[0] / embedded, mask, np.asarray(out["hidden"]["dropped_outputs"]) / raw]
    for mask in masks:
        assert set(np.unique(mask).tolist()) == {0.0, 2.0}
        assert np.all(mask == mask[:, :1]) == locked
        assert len({row.tobytes() for row in mask[:, 0]}) > 1  # one mask per sequence


def test_bfloat16_compute_keeps_the_carried_state_in_float32():
    """Under bfloat16 compute the carry crossing batches and the cell's update stay float32:
    a carry off the bfloat16 grid is not rounded onto it, and a 1e-4 change of it (below
    bfloat16's resolution at 0.12, 2^-10) reaches the outputs and the logits."""
    model = RNNLanguageModel(VOCAB, 16, num_layers=2, compute_dtype="bfloat16", rngs=nnx.Rngs(9))
    tokens = _tokens(9, time=4)
    carry = jax.tree.map(lambda z: z + 0.123456789, model.zero_carry(BATCH))
    logits, new_carry, hidden = model(tokens, carry)
    for c in jax.tree.leaves(new_carry):
        assert c.dtype == jnp.float32
        assert np.any(np.asarray(c.astype(jnp.bfloat16).astype(jnp.float32)) != np.asarray(c))
    nudged = jax.tree.map(lambda c: c + 1e-4, carry)
    nudged_logits, _, nudged_hidden = model(tokens, nudged)
    assert np.any(np.asarray(nudged_hidden["outputs"]) != np.asarray(hidden["outputs"]))
    assert np.any(np.asarray(nudged_logits) != np.asarray(logits))
    # The streaming step keeps it float32 too.
    step_carry, step_logits = model.step(carry, tokens[:, 0])
    nudged_step_carry, _ = model.step(nudged, tokens[:, 0])
    assert all(c.dtype == jnp.float32 for c in jax.tree.leaves(step_carry))
    for a, b in zip(jax.tree.leaves(step_carry), jax.tree.leaves(nudged_step_carry), strict=True):
        assert np.any(np.asarray(a) != np.asarray(b))
    np.testing.assert_allclose(step_logits, logits[:, 0], atol=1e-2)  # bf16 output matmul


def test_perplexity_of_a_diverged_model_is_inf_not_an_error(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.metrics import perplexity
    from rnn_jax.train import cli

    assert perplexity(1.5) == math.exp(1.5) == perplexity(3.0, 2)
    assert perplexity(800.0) == math.inf  # math.exp(800.0) raises OverflowError
    assert perplexity(1600.0, 2) == math.inf
    task = LanguageModelTask(
        cli.load_config("experiments/configs/language_model.py:smoke", {}, RULES)
    )
    assert task.eval_metrics({"nll": 800.0, "tokens": 1.0}) == {
        "loss": 800.0,
        "perplexity": math.inf,
    }


@pytest.mark.parametrize("key", ["model.embed_size", "model.hidden_size"])
def test_rules_refuse_a_zero_size(repo_root, monkeypatch, key):
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES
    from rnn_jax.train import cli

    with pytest.raises(ValueError, match=f"{key}=0"):
        cli.load_config("experiments/configs/language_model.py:smoke", {key: 0}, RULES)
    cli.load_config("experiments/configs/language_model.py:smoke", {"model.embed_size": 8}, RULES)


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_rules_refuse_a_bad_eval_context(repo_root, monkeypatch, bad):
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES
    from rnn_jax.train import cli

    with pytest.raises(ValueError, match="data.eval_context"):
        cli.load_config(
            "experiments/configs/language_model.py:smoke", {"data.eval_context": bad}, RULES
        )
    cli.load_config("experiments/configs/language_model.py:smoke", {"data.eval_context": 0}, RULES)


def _dot_operand_dtypes(jaxpr) -> list:
    """The operand dtypes of every dot_general in `jaxpr` and the jaxprs inside it (scan
    bodies, custom-VJP forwards)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _dot_operand_dtypes(inner)
    return found


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bfloat16_compute_runs_every_matmul_in_bfloat16(cell):
    """The input, recurrent (every layer) and output projections multiply bfloat16 operands,
    in `__call__` and in `step`, while the carry and the biases stay float32: the cells
    multiply in the weight's dtype."""
    model = RNNLanguageModel(
        VOCAB, 16, num_layers=2, cell=cell, compute_dtype="bfloat16", rngs=nnx.Rngs(9)
    )
    graphdef, state = nnx.split(model)
    tokens = _tokens(9, time=3)

    def forward(s):
        return nnx.merge(graphdef, s)(tokens)[0]

    dots = _dot_operand_dtypes(jax.make_jaxpr(forward)(state).jaxpr)
    assert len(dots) >= 5  # 2 layers x (input, recurrent) + output
    assert all(d == ("bfloat16", "bfloat16") for d in dots), dots
    # The streaming step too (it ran float32 matmuls with the RNN's own weights unnoticed:
    # its logits are compared with __call__'s only to bfloat16's tolerance).
    carry = model.zero_carry(BATCH)
    dots = _dot_operand_dtypes(jax.make_jaxpr(lambda c, t: model.step(c, t))(carry, tokens[:, 0]))
    assert len(dots) >= 5 and all(d == ("bfloat16", "bfloat16") for d in dots), dots
    # Only the matrices are rounded: biases and other vector params stay float32.
    for path, p in jax.tree_util.tree_leaves_with_path(model._compute_rnn(None).params):
        assert p.dtype == (jnp.bfloat16 if p.ndim == 2 else jnp.float32), path


def test_evaluation_scores_every_target_of_the_split_once(repo_root, monkeypatch):
    """The evaluation stream (`LMEvalStream`, batches of 4 rows x bptt, state carried across
    batches, each row first reading `data.eval_context` = 20 unscored tokens) against each
    row run through the model in one call from a zero state, scoring only its own targets.
    Before, evaluation used `LMStream`, which drops the stream's tail (up to rows x bptt +
    rows - 2 targets), and rows after the first read no history."""
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli

    context = 20
    overrides = {
        "data.eval_batch_size": 4,
        "data.markov_eval_tokens": 203,
        "data.eval_context": context,
    }
    config = cli.load_config("experiments/configs/language_model.py:smoke", overrides, RULES)
    task = LanguageModelTask(config)
    model = task.init_model(jax.random.key(1))
    ids = task.corpus.splits["valid"]
    assert (len(ids) - 1) % (4 * config.data.bptt_length) != 0  # a padded tail to get right
    step = nnx.jit(task.eval_step)
    carry, totals = task.init_carry(4), {"nll": 0.0, "tokens": 0.0}
    for batch in task.eval_data("valid"):
        carry, sums = step(model, jax.tree.map(jnp.asarray, batch), carry)
        totals = {k: totals[k] + float(sums[k]) for k in totals}
    assert totals["tokens"] == len(ids) - 1
    row_length = -(-(len(ids) - 1) // 4)
    nll = no_history = 0.0
    for b in range(4):
        start = max(0, b * row_length - context)
        row = ids[start : min((b + 1) * row_length + 1, len(ids))]
        logits, _, _ = model(jnp.asarray(row[None, :-1]))
        log_probs = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32)))
        scored = np.arange(b * row_length - start, len(row) - 1)
        nll -= log_probs[scored, row[scored + 1]].sum()
        row = ids[b * row_length : min((b + 1) * row_length + 1, len(ids))]
        logits, _, _ = model(jnp.asarray(row[None, :-1]))
        log_probs = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32)))
        no_history -= log_probs[np.arange(len(row) - 1), row[1:]].sum()
    assert totals["nll"] == pytest.approx(nll, rel=1e-5)
    assert abs(nll - no_history) > 1e-3 * abs(nll)  # the history changes what is scored
    got = task.eval_metrics(totals)["loss"]
    assert got == pytest.approx(nll / (len(ids) - 1), rel=1e-5)


def test_context_study_with_the_whole_history_equals_one_row(repo_root, monkeypatch, tmp_path):
    """`context_study`, run by `--eval_contexts=0,203` (the restore faked): one row (the whole
    split as history) against the model run over the split in one call; 4 rows that each read
    back to the split's start (context >= n) score every target with exactly that history, so
    they agree with one row; context 0 does not. A bad --eval_contexts is named first."""
    monkeypatch.chdir(repo_root)
    from absl import flags

    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli

    overrides = {"data.eval_batch_size": 4, "data.markov_eval_tokens": 203}
    config = cli.load_config("experiments/configs/language_model.py:smoke", overrides, RULES)
    task = LanguageModelTask(config)
    model = task.init_model(jax.random.key(2))
    monkeypatch.setattr(language_model, "_restore", lambda *args: (model, 7))
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "vocab.json").write_text(json.dumps(list(task.corpus.vocab.tokens)))
    mode = dict(sample=0, temperature=1.0, prompt="0")
    for bad in ("0,x", "64,-1", "0,,64", "٣,1_6", "+2"):  # ASCII digits only
        monkeypatch.setattr(flags, "FLAGS", types.SimpleNamespace(eval_contexts=bad, **mode))
        with pytest.raises(ConfigError) as error:
            language_model._train_or_sample(config, str(workdir), task)
        assert str(error.value) == f"--eval_contexts={bad!r}: comma-separated integers >= 0"

    class Given(types.SimpleNamespace):  # absl's FlagValues: flags[name].present
        def __getitem__(self, name):
            return types.SimpleNamespace(present=name in ("temperature", "prompt"))

    # ignored (and unchecked) without --sample: --temperature=-3 ran the context study
    ignored = Given(eval_contexts="0,203", sample=0, temperature=-3.0, prompt="x")
    monkeypatch.setattr(flags, "FLAGS", ignored)
    with pytest.raises(ConfigError, match=r"^--temperature and --prompt: only used with --samp"):
        language_model._train_or_sample(config, str(workdir), task)
    monkeypatch.setattr(flags, "FLAGS", types.SimpleNamespace(eval_contexts="0,203", **mode))
    language_model._train_or_sample(config, str(workdir), task)
    saved = json.loads((workdir / "eval_context.json").read_text())
    assert saved["step"] == 7 and "(step 7)" in (workdir / "eval_context.md").read_text()
    table = saved["nll"]
    assert set(table) == {"valid", "test"}
    ids = task.corpus.splits["valid"]
    logits, _, _ = model(jnp.asarray(ids[None, :-1]))
    log_probs = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32)))
    direct = -log_probs[np.arange(len(ids) - 1), ids[1:]].mean()
    row = table["valid"]
    assert row["1 row"] == pytest.approx(direct, rel=1e-5)
    assert row["4 rows, context 203"] == pytest.approx(row["1 row"], rel=1e-5)
    assert abs(row["4 rows, context 0"] - row["1 row"]) > 1e-4


MODES = ["--eval_contexts=0,64", "--sample=5"]
BAD_MODE_FLAGS = [
    (["--sample=5", "--eval_contexts=0,64"], "--sample=5 and --eval_contexts='0,64': give one"),
    (["--sample=-3"], "--sample=-3: must be >= 0"),
    (["--sample=5", "--temperature=0"], "--temperature=0.0: must be a number > 0"),
]


@pytest.fixture(scope="module")
def refused_smoke_runs(tmp_path_factory):
    """language_model's smoke CLI with each flag set of the two tests below, all started at
    once (each run is mostly imports, on one core): flags -> (its workdir, the run)."""
    runs = {}
    try:
        for flags in [[mode] for mode in MODES] + [flags for flags, _ in BAD_MODE_FLAGS]:
            workdir = tmp_path_factory.mktemp("lm_refused") / "never_trained"
            runs[tuple(flags)] = (
                workdir,
                StartedModule(
                    "experiments.language_model",
                    f"--workdir={workdir}",
                    "--config=experiments/configs/language_model.py:smoke",
                    *flags,
                    timeout=300,
                ),
            )
        yield runs
    finally:
        for _, run in runs.values():
            run.close()


def _refused_smoke_cli(runs, *flags):
    """The run of language_model's smoke CLI with `flags`, refused with exit 2
    (`check_refused`): its workdir and stderr."""
    workdir, run = runs[flags]
    return workdir, check_refused(run.result(), workdir)


@pytest.mark.parametrize("mode", MODES)
def test_modes_after_training_name_a_run_without_checkpoint(refused_smoke_runs, mode):
    """`--eval_contexts` / `--sample` read W/best: on a directory without it, one line naming
    it and exit status 2 (was restore_model's ValueError as a traceback), nothing written."""
    workdir, stderr = _refused_smoke_cli(refused_smoke_runs, mode)
    assert f"no checkpoint in {workdir / 'best'}" in stderr


@pytest.mark.parametrize("flags, message", BAD_MODE_FLAGS)
def test_contradictory_or_invalid_mode_flags_are_named(refused_smoke_runs, flags, message):
    """`--eval_contexts` silently won over `--sample`; a negative --sample or a temperature
    <= 0 reached the restore (or the sampler) instead of being named."""
    assert message in _refused_smoke_cli(refused_smoke_runs, *flags)[1]


def test_unigram_baseline_scores_the_targets_the_model_scores(repo_root, monkeypatch):
    """W/baselines.json's unigram NLL per split is a mean over the same n - 1 targets as the
    model's evaluation (`LMEvalStream`'s weights), brute-forced here from the add-one counts
    (float64); it averaged over all n tokens, the first one included, which no model scores."""
    monkeypatch.chdir(repo_root)
    from experiments.language_model_task import RULES, LanguageModelTask
    from rnn_jax.train import cli

    overrides = {"data.eval_batch_size": 4, "data.markov_eval_tokens": 203}
    config = cli.load_config("experiments/configs/language_model.py:smoke", overrides, RULES)
    task = LanguageModelTask(config)
    train = task.corpus.splits["train"]
    counts = {v: 1.0 + float(np.sum(train == v)) for v in range(task.vocab_size)}
    total = sum(counts.values())
    baselines = task.baselines()
    for split in ("valid", "test"):
        ids = task.corpus.splits[split]
        nll = weight = 0.0
        for batch in task.eval_data(split):
            weights = batch["weights"].ravel().astype(np.float64)
            for target, w in zip(batch["targets"].ravel(), weights, strict=True):
                if w:
                    nll -= w * math.log(counts[int(target)] / total)
                    weight += w
        assert weight == len(ids) - 1
        assert baselines["unigram"][f"{split}_loss"] == pytest.approx(nll / weight, rel=1e-12)
        assert baselines["unigram"][f"{split}_perplexity"] == pytest.approx(
            math.exp(nll / weight), rel=1e-12
        )


def test_a_markov_language_of_few_symbols_is_reported_per_token_not_per_char(tmp_path):
    """Its token names "0".."7" are one character long: the unit was read off the vocabulary,
    so the report and answer said nats/char and bits/char for a synthetic symbol language."""
    (tmp_path / "vocab.json").write_text(json.dumps([str(i) for i in range(8)]))
    corpus, unit = language_model_report._corpus_and_unit(
        tmp_path, {"corpus": "markov", "markov_order": 1}
    )
    assert (corpus, unit) == ("a synthetic order-1 Markov language (vocabulary 8)", "token")
    data = {"corpus": "tiny_shakespeare", "markov_order": 1}
    _, unit = language_model_report._corpus_and_unit(tmp_path, data)
    assert unit == "char"


def test_sample_prompt_splits_by_unit_and_names_unknown_tokens():
    """`--sample` with a prompt outside W/vocab.json (the default "The" on PTB, whose words
    are lower case, or on a Markov language) was generate's ValueError as a traceback (exit
    1); now a ConfigError naming the flag and the tokens (exit 2). Word prompts split on
    whitespace, character prompts into characters."""
    vocab = [str(i) for i in range(8)]
    assert language_model_sampling.sample_prompt("3 4", vocab, char_level=False) == ["3", "4"]
    assert language_model_sampling.sample_prompt("ab a", ["a", "b", " "], char_level=True) == list(
        "ab a"
    )
    with pytest.raises(ConfigError, match=r"--prompt='The'.*unknown: \['The'\]"):
        language_model_sampling.sample_prompt("The", vocab, char_level=False)
    with pytest.raises(ConfigError, match=r"--prompt=''.*non-empty"):
        language_model_sampling.sample_prompt("", vocab, char_level=False)


@pytest.mark.parametrize(
    "corpus, prompt, printed", [("ptb", "3 4", "3 4 5 6"), ("tiny_shakespeare", "34", "3456")]
)
def test_sample_hands_the_flags_to_generate_and_prints_prompt_and_text(
    tmp_path, monkeypatch, capsys, corpus, prompt, printed
):
    """`--sample=2 --temperature=0.5` (the restore and the sampler faked): W/vocab.json, the
    prompt split by the corpus's unit, the count, key(seed) and the temperature reach
    `generate`; the checkpoint and step, then prompt + continuation are printed."""
    from absl import flags

    vocab = [str(i) for i in range(8)]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    config = ml_collections.ConfigDict(
        {"seed": 5, "data": {"corpus": corpus}, "train": {"keep_best": True}}
    )
    calls = []

    def generate(*args):
        calls.append(args)
        return ["5", "6"]

    monkeypatch.setattr(language_model, "_restore", lambda *args: ("model", 9))
    monkeypatch.setattr(language_model, "generate", generate)
    monkeypatch.setattr(
        flags,
        "FLAGS",
        types.SimpleNamespace(sample=2, temperature=0.5, eval_contexts="", prompt=prompt),
    )
    language_model._train_or_sample(config, str(tmp_path), "task")
    [(model, got_vocab, tokens, count, key, temperature)] = calls
    assert (model, got_vocab, tokens, count, temperature) == ("model", vocab, ["3", "4"], 2, 0.5)
    assert (jax.random.key_data(key) == jax.random.key_data(jax.random.key(5))).all()
    assert capsys.readouterr().out == f"[best checkpoint, step 9]\n{printed}\n"


def test_generate_at_a_tiny_temperature_is_the_per_step_argmax_of_full_passes():
    """Reference: the whole prefix (prompt + tokens so far) through `__call__` each step and
    the argmax of its last logits (one jitted pass over a fixed width: the model is causal, so
    the zeros after the prefix do not change them). Checks the prompt's carry, that the
    continuation starts after the prompt's last token, and that `temperature` reaches the
    sampler (at T = 1 the untrained model would not follow the argmax for 5 tokens)."""
    vocab = [f"w{i}" for i in range(11)]
    model = RNNLanguageModel(len(vocab), 6, init_scale=1.0, rngs=nnx.Rngs(3))
    prompt, count = ["w3", "w7", "w1"], 5
    sampled = language_model_sampling.generate(model, vocab, prompt, count, jax.random.key(0), 1e-5)
    full = nnx.jit(lambda m, x: m(x)[0])
    ids = [vocab.index(t) for t in prompt]
    for _ in range(count):
        width = np.zeros((1, len(prompt) + count), np.int32)
        width[0, : len(ids)] = ids
        last = np.sort(np.asarray(full(model, jnp.asarray(width))[0, len(ids) - 1], np.float64))
        assert last[-1] - last[-2] > 1e-3  # no near-tie at this temperature
        ids.append(int(np.argmax(np.asarray(full(model, jnp.asarray(width))[0, len(ids) - 1]))))
    assert sampled == [vocab[i] for i in ids[len(prompt) :]]


def test_tied_embeddings_of_another_width_are_a_config_error(repo_root, monkeypatch):
    """`model.tie_embeddings=True` with `model.embed_size` != `model.hidden_size` passed the
    rules and failed in `init_model` with the model's ValueError: a traceback, exit status 1
    (the CLI turns only ConfigError into one line and exit 2). Equal or None sizes pass."""
    monkeypatch.chdir(repo_root)
    from rnn_jax.train import cli

    config_file = "experiments/configs/language_model.py:smoke"
    small = {"data.markov_train_tokens": 300, "data.markov_eval_tokens": 200}
    tied = {**small, "model.tie_embeddings": True, "model.embed_size": 8}
    config = cli.load_config(config_file, tied, language_model_task.RULES)
    with pytest.raises(ConfigError, match=r"model.tie_embeddings=True .* model.embed_size=8"):
        language_model_task.LanguageModelTask(config)
    for embed_size in (None, 32):
        ok = cli.load_config(
            config_file, {**tied, "model.embed_size": embed_size}, language_model_task.RULES
        )
        assert language_model_task.LanguageModelTask(ok).vocab_size == 16
    # A forget-gate bias on a gateless cell: cells.init's ValueError at init_model, likewise.
    gateless = {**small, "model.cell": "elman", "model.forget_bias": 1.0}
    config = cli.load_config(config_file, gateless, language_model_task.RULES)
    with pytest.raises(ConfigError, match=r"model.forget_bias=1.0 .* model.cell='elman'"):
        language_model_task.LanguageModelTask(config)
    ok = cli.load_config(
        config_file, {**gateless, "model.forget_bias": 0.0}, language_model_task.RULES
    )
    assert language_model_task.LanguageModelTask(ok).vocab_size == 16


def test_zaremba_init_and_split_sizes_reach_the_model_and_the_checks(repo_root, monkeypatch):
    """`model.init_scale` / `model.forget_bias` (the full config's Zaremba init: U(-0.05,
    0.05), forget-gate bias 0) reach every weight of `init_model`'s model: a forget bias
    dropped on its way kept the cell's default 1.0, untested. And each split must hold one
    `[batch, bptt_length + 1]` window, no more (`LMStream`'s bound), the short one named."""
    monkeypatch.chdir(repo_root)
    from rnn_jax.train import cli

    config_file = "experiments/configs/language_model.py:smoke"
    small = {"data.markov_train_tokens": 300, "data.markov_eval_tokens": 200}
    zaremba = {**small, "model.init_scale": 0.05, "model.forget_bias": 0.0}
    task = language_model_task.LanguageModelTask(
        cli.load_config(config_file, zaremba, language_model_task.RULES)
    )
    params = jax.tree.leaves(nnx.state(task.init_model(jax.random.key(0)), nnx.Param))
    assert max(float(jnp.max(jnp.abs(p))) for p in params) <= 0.05
    assert min(float(jnp.max(jnp.abs(p))) for p in params if p.ndim == 2) > 0.04
    # smoke: train batch 16, eval batch 8, bptt 16: 272 and 136 tokens are just enough.
    for tokens, error in (
        ({"data.markov_train_tokens": 272, "data.markov_eval_tokens": 136}, None),
        ({"data.markov_train_tokens": 271}, "train.batch_size=16 .* 'train' split .* 271 tokens"),
        ({"data.markov_eval_tokens": 135}, "data.eval_batch_size=8 .* 'valid' split .* 135 "),
    ):
        config = cli.load_config(config_file, {**small, **tokens}, language_model_task.RULES)
        if error is None:
            language_model_task.LanguageModelTask(config)
        else:
            with pytest.raises(ConfigError, match=error):
                language_model_task.LanguageModelTask(config)


def test_report_table_and_answer_convert_nats_to_bits_and_perplexity(tmp_path):
    """W/language_model.md's columns and the Q7 answer from a faked finished run: bits =
    nats / ln 2 and perplexity = e^nats for the model and the unigram baseline, the uniform
    model at log2 V bits (the reference run's test checks only the model's columns)."""
    from experiments.configs import language_model as configs
    from tests.report_check import cell_numbers, table_rows

    config = json.loads(configs.get_config("smoke").to_json_best_effort())
    final = {"train_nll": 1.1, "valid_loss": 1.2, "test_loss": 1.3, "step": 20, "best_step": 10}
    unigram = {f"{s}_loss": v for s, v in (("train", 2.1), ("valid", 2.2), ("test", 2.3))}
    unigram.update({f"{s}_perplexity": math.exp(unigram[f"{s}_loss"]) for s in ("valid",)})
    files = {
        "config.json": config,
        "results.json": {"final": final},
        "baselines.json": {"unigram": unigram, "uniform": {"loss": 3.0, "perplexity": 20.0}},
        "vocab.json": [str(i) for i in range(20)],
    }
    for name, value in files.items():
        (tmp_path / name).write_text(json.dumps(value))
    rows = table_rows(language_model_report.report_markdown(tmp_path))
    for split, nll, base in (("train", 1.1, 2.1), ("valid", 1.2, 2.2), ("test", 1.3, 2.3)):
        row = {k: cell_numbers(v)[0] for k, v in rows[split].items() if k != "split"}
        assert row == pytest.approx(
            {
                "NLL (nats/token)": nll,
                "bits/token": nll / math.log(2),
                "perplexity": math.exp(nll),
                "unigram bits/token": base / math.log(2),
                "unigram perplexity": math.exp(base),
            },
            rel=1e-3,
        )
    answer = language_model_report.answers(tmp_path)[7]
    for text in (
        "test NLL of 1.300 nats/token (1 seed)",
        f"{1.3 / math.log(2):.3f} bits/token, perplexity {math.exp(1.3):.2f};",
        f"gets {2.3 / math.log(2):.3f} bits/token (perplexity {math.exp(2.3):.2f})",
        f"uniform guessing {math.log2(20):.3f} (perplexity 20)",
    ):
        assert text in answer, (text, answer)


def test_rules_refuse_markov_settings_the_language_refuses(repo_root, monkeypatch):
    """A Markov language of one symbol, a concentration <= 0 or a negative seed passed the
    rules and failed in the task's constructor with a traceback (exit status 1); too many
    transition probabilities, a pair of keys, is the constructor's ConfigError."""
    monkeypatch.chdir(repo_root)
    from rnn_jax.train import cli

    config_file = "experiments/configs/language_model.py:smoke"
    for key, bad in (
        ("data.markov_vocab_size", 1),
        ("data.markov_concentration", 0.0),
        ("data.markov_concentration", -1.0),
        ("data.markov_seed", -1),
    ):
        with pytest.raises(ValueError, match=f"{key}={bad}"):
            cli.load_config(config_file, {key: bad}, language_model_task.RULES)
    good = {"data.markov_vocab_size": 2, "data.markov_concentration": 0.01, "data.markov_seed": 3}
    cli.load_config(config_file, good, language_model_task.RULES)
    # Each key passes its rule, the pair does not (64**6 transition probabilities): that was
    # MarkovLanguage's ValueError in the constructor, a traceback; now a ConfigError (exit 2).
    big = {"data.markov_vocab_size": 64, "data.markov_order": 5}
    config = cli.load_config(config_file, big, language_model_task.RULES)
    with pytest.raises(ConfigError, match=r"data.markov_vocab_size=64 with data.markov_order=5"):
        language_model_task.LanguageModelTask(config)


def test_eval_context_and_sample_name_the_newest_checkpoint_without_keep_best():
    """With `train.keep_best=False`, `_restore` reads the newest periodic checkpoint, but
    W/eval_context.md and `--sample`'s first line still said 'Best checkpoint'."""
    config = ml_collections.ConfigDict({"train": {"keep_best": False}})
    label = language_model.checkpoint_label(config)
    assert "newest" in label and "best" not in label.replace("keep_best", "")
    table = {"valid": {"1 row": 1.0, "8 rows, context 0": 1.25}}
    text = language_model_report.context_markdown(table, 40, "token", label)
    assert "Newest checkpoint (keep_best=False) (step 40)" in text and "Best" not in text
    assert "| 1.00000 | 1.25000 (+0.25000) |" in text  # the difference from one row, signed
    config.train.keep_best = True
    label = language_model.checkpoint_label(config)
    assert "Best checkpoint (step 40)" in language_model_report.context_markdown(
        table, 40, "x", label
    )


def test_sweep_sets_between_layer_dropout_only_on_stacked_variants():
    """Quick's one-layer model has no layer boundary: its sweep set an inert
    `model.dropout_between`."""
    from experiments.configs import language_model as configs

    for variant in configs.VARIANTS:
        layered = configs.get_config(variant).model.num_layers > 1
        for arm in configs.get_sweep(variant):
            assert ("model.dropout_between" in arm) == layered, (variant, arm)
            assert {arm["model.dropout_input"], arm["model.dropout_output"]} <= {0.0, 0.2, 0.5}
