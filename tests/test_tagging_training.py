"""The tagger's training objective: `objective.time_reduction` ('mean' per token, 'sum' per
sentence and mean over the batch, Lample et al.'s) and Lample et al.'s training-time
singleton -> `<unk>` replacement (`data.singleton_unk_prob`), against references computed
sentence by sentence and with numpy."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import sequence_labelling
from experiments.configs import sequence_labelling as configs
from rnn_jax.data.pipeline import singleton_ids
from rnn_jax.train import config as cfg
from rnn_jax.train import seeds, windows
from tests.test_eval_padding import make_task


def test_singleton_ids_are_the_ids_seen_once():
    rng = np.random.default_rng(0)
    examples = [{"inputs": rng.integers(0, 30, size=rng.integers(1, 9))} for _ in range(12)]
    counts = collections.Counter(int(i) for e in examples for i in e["inputs"])
    expected = [counts[i] == 1 for i in range(40)]
    np.testing.assert_array_equal(singleton_ids(examples, 40), expected)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 20\)"):
        singleton_ids(examples, 20)
    top = max(counts)  # the largest id is one past a vocabulary of `top` ids: the boundary
    with pytest.raises(ValueError, match=rf"\[0, {top}\], outside the vocabulary \[0, {top}\)"):
        singleton_ids(examples, top)
    with pytest.raises(ValueError, match=r"ids in \[-1, 2\], outside the vocabulary"):
        singleton_ids([{"inputs": np.array([2, -1])}], 40)
    with pytest.raises(ValueError, match="no examples"):
        singleton_ids([], 40)


def test_replace_singletons_only_touches_singletons_at_the_rate():
    singletons = np.zeros(10, bool)
    singletons[[3, 7]] = True
    tokens = np.random.default_rng(1).integers(0, 10, size=(200, 100)).astype(np.int32)
    key = jax.random.key(5)
    out = np.asarray(sequence_labelling.replace_singletons(tokens, singletons, 1, 0.5, key))
    changed = out != tokens
    assert np.all(out[changed] == 1)  # to <unk> (id 1 here) and nothing else
    assert not np.any(changed & ~singletons[tokens])  # other words and padding untouched
    rate = changed[singletons[tokens]].mean()
    n = singletons[tokens].sum()
    assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / n), (rate, n)  # ~4 sigma
    again = sequence_labelling.replace_singletons(tokens, singletons, 1, 0.5, key)
    np.testing.assert_array_equal(again, out)  # a function of the key: resumable
    for prob, expected in ((0.0, tokens), (1.0, np.where(singletons[tokens], 1, tokens))):
        got = sequence_labelling.replace_singletons(tokens, singletons, 1, prob, key)
        np.testing.assert_array_equal(got, expected)


# Jitted, not eager: eager execution compiles each of the model's ops apart (~5 s per new
# batch shape here, against ~1.4 s for the whole program); every batch below is padded to the
# config's time multiple, so one shape per batch size.
@nnx.jit
def _sentence_nll(model, b):
    chars = {"chars": b["chars"], "char_lengths": b["char_lengths"]}
    return model.loss(b["inputs"], b["targets"], b["lengths"], **chars)[0]


def _loss_fn(task):
    """`task.loss_fn` jitted under the task's config as it is now (read when traced)."""
    return nnx.jit(lambda model, batch, key: task.loss_fn(model, batch, (), key))


def _batch(task, count=4):
    return jax.tree.map(jnp.asarray, task._collate(task.splits["train"][:count]))


def _nll_alone(model, task, examples, replace=None):
    """Each sentence's summed NLL, the sentence run alone (the reference)."""
    out = []
    for e in examples:
        b = task._collate([e])
        if replace is not None:
            b["inputs"] = replace(b["inputs"])
        out.append(float(_sentence_nll(model, b)))
    return np.array(out)


def test_time_reduction_mean_per_token_and_sum_per_sentence(monkeypatch):
    config, task = make_task("sequence_labelling", monkeypatch)
    assert config.objective.time_reduction == "mean" and config.data.singleton_unk_prob == 0
    model = task.init_model(jax.random.key(0))
    examples = task.splits["train"][:4]
    nll = _nll_alone(model, task, examples)
    tokens = sum(len(e["inputs"]) for e in examples)
    key = jax.random.key(2)
    logged = [pytest.approx(nll.sum(), rel=1e-5), tokens]  # summed NLL, real tokens
    loss, (_, aux) = _loss_fn(task)(model, _batch(task), key)
    assert float(loss) == pytest.approx(nll.sum() / tokens, rel=1e-5)
    assert [float(v) for v in aux["train_nll_per_token"]] == logged
    task.config.objective.time_reduction = "sum"
    loss, (_, aux) = _loss_fn(task)(model, _batch(task), key)
    assert float(loss) == pytest.approx(nll.mean(), rel=1e-5)  # per sentence, batch mean
    assert [float(v) for v in aux["train_nll_per_token"]] == logged


def test_reported_train_loss_is_per_token_over_the_logging_window(monkeypatch):
    """The report's train loss is the window's summed NLL over its tokens, as valid's is per
    token. Logging each batch's per-token NLL made it the mean of per-batch ratios, which
    weighs a batch of short sentences like one of long ones (on the CoNLL smoke run's
    length-bucketed batches: 0.604 where the NLL per token was 0.477)."""
    _, task = make_task("sequence_labelling", monkeypatch)
    model = task.init_model(jax.random.key(0))
    # Sharper emissions than at init, where every token's NLL is close to log(num_tags) and
    # any average of them agrees.
    model.output.kernel[...] = 30 * model.output.kernel[...]
    examples = sorted(task.splits["train"], key=lambda e: len(e["inputs"]))
    short, long = examples[:2], examples[-2:]  # 2 batches of 2: a window of two steps
    assert sum(len(e["inputs"]) for e in long) > 3 * sum(len(e["inputs"]) for e in short)
    reference = _nll_alone(model, task, short + long)
    tokens = sum(len(e["inputs"]) for e in short + long)
    loop = {"window": {}, "window_steps": 0}
    loss_fn = _loss_fn(task)
    for examples in (short, long):
        batch = jax.tree.map(jnp.asarray, task._collate(examples))
        loss, (_, aux) = loss_fn(model, batch, jax.random.key(1))
        step = {"finite": [True], "loss": [float(loss)], **jax.tree.map(lambda v: [v], aux)}
        windows.accumulate(loop, step)
    final = windows.close_window(loop)  # as the runtime logs it
    assert final["train_nll_per_token"] == pytest.approx(reference.sum() / tokens, rel=1e-5)
    report = sequence_labelling._train_loss_per_token(final)
    # Over seeds (`seeds.summarize`), the std goes with the mean: it was the optimised loss's.
    two = {"train_loss": [9.0, 5.0], "train_nll_per_token": [1.0, 3.0]}
    summary = sequence_labelling._train_loss_per_token(seeds.summarize(two, 2))
    assert (summary["train_loss"], summary["train_loss_std"]) == (2.0, 1.0)
    assert summary["per_seed"]["train_loss"] == [1.0, 3.0]
    assert report["train_loss"] == pytest.approx(reference.sum() / tokens, rel=1e-5)
    assert final["train_loss"] != pytest.approx(report["train_loss"], rel=1e-2)  # not vacuous


def test_singleton_unk_prob_feeds_unk_for_training_singletons(monkeypatch):
    _, task = make_task("sequence_labelling", monkeypatch)
    words = task.vocabs["tokens"]
    counts = collections.Counter(w for s in task.dataset.splits["train"] for w in s["tokens"])
    once = {w for w, c in counts.items() if c == 1}
    assert once and "lamb" not in once  # the tiny data has both kinds
    np.testing.assert_array_equal(
        np.flatnonzero(task.singletons), sorted(words.encode(sorted(once)))
    )
    model = task.init_model(jax.random.key(0))
    examples = task.splits["train"][:4]
    tokens = sum(len(e["inputs"]) for e in examples)
    table = np.asarray(task.singletons)
    replaced = _nll_alone(
        model, task, examples, lambda ids: np.where(table[ids], words.unk_id, ids)
    )
    key = jax.random.key(2)
    plain = _nll_alone(model, task, examples).sum() / tokens  # the loss at prob 0
    task.config.data.singleton_unk_prob = 1.0  # every singleton (the rule allows < 1)
    loss, _ = _loss_fn(task)(model, _batch(task), key)
    assert float(loss) == pytest.approx(replaced.sum() / tokens, rel=1e-5)
    assert float(loss) != pytest.approx(plain, rel=1e-3)
    task.config.data.singleton_unk_prob = 0.5
    loss_fn = _loss_fn(task)
    first, _ = loss_fn(model, _batch(task), key)
    second, _ = loss_fn(model, _batch(task), key)
    assert float(first) == float(second)  # drawn from the step's key: a resume redraws it
    # ... and from that key, not a fixed one (which the equality above also allows): another
    # step's key replaces other singletons (no dropout here, so only the draws differ).
    other, _ = loss_fn(model, _batch(task), jax.random.key(3))
    assert float(other) != float(first)


def test_singleton_unk_prob_with_min_freq_above_one_is_a_config_error(monkeypatch):
    """With data.min_freq=2 every training word seen once is already <unk>: no singleton has
    an id to replace, and data.singleton_unk_prob=0.5 trained as 0 without a word."""
    config, task = make_task("sequence_labelling", monkeypatch)
    config.data.min_freq = 2
    assert not np.any(type(task)(config).singletons)  # what the replacement would act on
    config.data.singleton_unk_prob = 0.5
    with pytest.raises(cfg.ConfigError) as error:
        type(task)(config)
    assert str(error.value) == (
        "data.singleton_unk_prob=0.5 with data.min_freq=2: no training word seen once has an "
        "id of its own (min_freq > 1 reads them all as <unk>), so none would be replaced; set "
        "data.min_freq=1 (Lample et al.'s replacement) or data.singleton_unk_prob=0"
    )
    config.data.min_freq = 1
    assert np.any(type(task)(config).singletons)


def test_full_config_is_lamples_objective_and_quick_is_unchanged():
    full = configs.get_config("full")
    assert full.objective.time_reduction == "sum" and full.data.singleton_unk_prob == 0.5
    assert full.optimizer.name == "sgd" and full.optimizer.clip_global_norm == 5.0
    # the paper's lr 0.01 per one-sentence step, times the 10 sentences of a step here
    assert full.optimizer.learning_rate == pytest.approx(0.01 * full.train.batch_size)
    for variant in ("smoke", "quick"):  # the published quick numbers were made with these
        config = configs.get_config(variant)
        assert config.objective.time_reduction == "mean"
        assert config.data.singleton_unk_prob == 0.0
