"""Review 22 of the language-model area: the unit a run's report names, `--prompt` parsing
and refusal, `generate` against a per-step argmax reference, and an empty corpus for the
Kneser-Ney estimate."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import language_model
from experiments.kneser_ney import KneserNeyLM
from rnn_jax.models import RNNLanguageModel
from rnn_jax.train.config import ConfigError


def test_a_markov_language_of_few_symbols_is_reported_per_token_not_per_char(tmp_path):
    """Its token names "0".."7" are one character long: the unit was read off the vocabulary,
    so the report and answer said nats/char and bits/char for a synthetic symbol language."""
    (tmp_path / "vocab.json").write_text(json.dumps([str(i) for i in range(8)]))
    corpus, unit = language_model._corpus_and_unit(
        tmp_path, {"corpus": "markov", "markov_order": 1}
    )
    assert (corpus, unit) == ("a synthetic order-1 Markov language (vocabulary 8)", "token")
    data = {"corpus": "tiny_shakespeare", "markov_order": 1}
    _, unit = language_model._corpus_and_unit(tmp_path, data)
    assert unit == "char"


def test_sample_prompt_splits_by_unit_and_names_unknown_tokens():
    """`--sample` with a prompt outside W/vocab.json (the default "The" on PTB, whose words
    are lower case, or on a Markov language) was generate's ValueError as a traceback (exit
    1); now a ConfigError naming the flag and the tokens (exit 2). Word prompts split on
    whitespace, character prompts into characters."""
    vocab = [str(i) for i in range(8)]
    assert language_model.sample_prompt("3 4", vocab, char_level=False) == ["3", "4"]
    assert language_model.sample_prompt("ab a", ["a", "b", " "], char_level=True) == list("ab a")
    with pytest.raises(ConfigError, match=r"--prompt='The'.*unknown: \['The'\]"):
        language_model.sample_prompt("The", vocab, char_level=False)
    with pytest.raises(ConfigError, match=r"--prompt=''.*non-empty"):
        language_model.sample_prompt("", vocab, char_level=False)


def test_generate_at_a_tiny_temperature_is_the_per_step_argmax_of_full_passes():
    """Reference: the whole prefix (prompt + tokens so far) through `__call__` each step and
    the argmax of its last logits (one jitted pass over a fixed width: the model is causal, so
    the zeros after the prefix do not change them). Checks the prompt's carry, that the
    continuation starts after the prompt's last token, and that `temperature` reaches the
    sampler (at T = 1 the untrained model would not follow the argmax for 5 tokens)."""
    vocab = [f"w{i}" for i in range(11)]
    model = RNNLanguageModel(len(vocab), 6, init_scale=1.0, rngs=nnx.Rngs(3))
    prompt, count = ["w3", "w7", "w1"], 5
    sampled = language_model.generate(model, vocab, prompt, count, jax.random.key(0), 1e-5)
    full = nnx.jit(lambda m, x: m(x)[0])
    ids = [vocab.index(t) for t in prompt]
    for _ in range(count):
        width = np.zeros((1, len(prompt) + count), np.int32)
        width[0, : len(ids)] = ids
        last = np.sort(np.asarray(full(model, jnp.asarray(width))[0, len(ids) - 1], np.float64))
        assert last[-1] - last[-2] > 1e-3  # no near-tie at this temperature
        ids.append(int(np.argmax(np.asarray(full(model, jnp.asarray(width))[0, len(ids) - 1]))))
    assert sampled == [vocab[i] for i in ids[len(prompt) :]]


def test_kneser_ney_refuses_an_empty_corpus():
    """No sentences gave a model whose every `score` raised KeyError: ()."""
    with pytest.raises(ValueError, match="no sentences"):
        KneserNeyLM.estimate([], 3)
    assert KneserNeyLM.estimate([[]], 2).score("</s>") > 0.0


def test_tied_embeddings_of_another_width_are_a_config_error(repo_root, monkeypatch):
    """`model.tie_embeddings=True` with `model.embed_size` != `model.hidden_size` passed the
    rules and failed in `init_model` with the model's ValueError: a traceback, exit status 1
    (the CLI turns only ConfigError into one line and exit 2). Equal or None sizes pass."""
    monkeypatch.chdir(repo_root)
    from rnn_jax.train import cli

    config_file = "experiments/configs/language_model.py:smoke"
    small = {"data.markov_train_tokens": 300, "data.markov_eval_tokens": 200}
    tied = {**small, "model.tie_embeddings": True, "model.embed_size": 8}
    config = cli.load_config(config_file, tied, language_model.RULES)
    with pytest.raises(ConfigError, match=r"model.tie_embeddings=True .* model.embed_size=8"):
        language_model.LanguageModelTask(config)
    for embed_size in (None, 32):
        ok = cli.load_config(
            config_file, {**tied, "model.embed_size": embed_size}, language_model.RULES
        )
        assert language_model.LanguageModelTask(ok).vocab_size == 16


def test_rules_refuse_markov_settings_the_language_refuses(repo_root, monkeypatch):
    """A Markov language of one symbol, a concentration <= 0 or a negative seed passed the
    rules and failed in the task's constructor with a traceback (exit status 1)."""
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
            cli.load_config(config_file, {key: bad}, language_model.RULES)
    good = {"data.markov_vocab_size": 2, "data.markov_concentration": 0.01, "data.markov_seed": 3}
    cli.load_config(config_file, good, language_model.RULES)
