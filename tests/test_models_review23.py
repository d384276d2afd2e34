"""Review 23 of the models: cross-key config checks, lengths through every encoder kind, id
checks of the one-token `step`s, and a hand count of the seq2seq model's parameters. (The
characters of padded words: test_models_review21.test_character_padding_may_hold_any_id,
which has the compiled function that case needs.)"""

from collections.abc import Callable

import jax.numpy as jnp
import pytest
from flax import nnx

from rnn_jax.models import RNNLanguageModel
from rnn_jax.models.classifier import POOLINGS, Classifier
from rnn_jax.models.encoder import ENCODER_KINDS, SequenceEncoder, config_problems
from rnn_jax.models.params import count_params
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.models.tagger import Tagger
from rnn_jax.models.transformer import TransformerEncoder, TransformerLM, TransformerSeq2Seq

SMALL = dict(embed_size=4, hidden_size=4, num_heads=2, max_length=8)


def test_config_problems_name_every_pooling_the_classifier_refuses():
    """`pooling='last'` with a transformer (or bag) encoder passed `config_problems`, so
    `--config.model.kind=transformer` with sentiment's default pooling read the whole corpus
    and then died in `Classifier.__init__` (a traceback, exit 1, not a config error naming
    the key). Now the check and the constructor agree on every kind and pooling."""
    for kind in ENCODER_KINDS:
        for pooling in POOLINGS:
            problems = config_problems({"kind": kind, "pooling": pooling, **SMALL})
            try:
                _abstract(
                    lambda p=pooling, k=kind: Classifier(
                        9, 3, pooling=p, kind=k, rngs=nnx.Rngs(0), **SMALL
                    )
                )
                refused = False
            except ValueError:
                refused = True
            assert bool(problems) == refused, (kind, pooling, problems)
            if refused:
                assert problems == [
                    f"model.pooling='last': needs model.kind='rnn', got model.kind={kind!r} "
                    "(use mean, max or attention pooling)"
                ]


def test_the_sentiment_experiment_refuses_last_pooling_of_a_transformer_before_reading_data():
    from experiments import sentiment
    from experiments.configs import sentiment as configs
    from rnn_jax.train import config as cfg

    config = configs.get_config("smoke")
    config.model.kind = "transformer"
    assert config.model.pooling == "last"  # the default a user meets
    cfg.validate(config, sentiment.RULES)
    config.data.root = "/nonexistent"  # it used to fail here, in the reader, or after it
    with pytest.raises(cfg.ConfigError, match=r"model.pooling='last': needs model.kind='rnn'"):
        sentiment.SentimentTask(config)


def _abstract(build: Callable[[], nnx.Module]) -> nnx.Module:
    """The model with shape-only params (nnx.eval_shape: nothing allocated or run), for
    checks that refuse an argument before any param is read."""
    return nnx.eval_shape(build)


def test_every_encoder_kind_refuses_the_lengths_the_rnn_refuses():
    """The RNN's scan refused a length outside [1, time]; the bag and transformer encoders
    used it: under a mean-pooling classifier a length of 5 over 3 tokens divided the sum by
    5, a length of 0 gave NaN logits and -1 a zero sentence vector, all without a word."""
    tokens = jnp.array([[1, 2, 3], [4, 5, 6]])
    encoders = [
        _abstract(lambda kind=kind: SequenceEncoder(9, kind=kind, rngs=nnx.Rngs(0), **SMALL))
        for kind in ENCODER_KINDS
    ]
    encoders.append(
        _abstract(
            lambda: TransformerEncoder(
                9, d_model=4, num_heads=2, num_layers=1, max_length=8, rngs=nnx.Rngs(0)
            )
        )
    )
    for bad in (5, 0, -1):
        message = rf"lengths contains \[{bad}\]; allowed: 1 <= length <= time=3"
        for encoder in encoders:
            with pytest.raises(ValueError, match=message):
                encoder(tokens, jnp.array([bad, 2]))


def test_one_token_steps_refuse_ids_outside_the_vocabulary():
    """`__call__` checks ids; `step` did not: the RNN LM's gather clamped id 7 to row 4 (the
    logits of another token, silently) and the other models embedded it as NaN. The check
    comes before the state is read, so shape-only models and no state show it."""
    lm = _abstract(lambda: RNNLanguageModel(5, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"token holds ids in \[7, 7\] but vocab_size=5"):
        lm.step(None, jnp.array([7]))
    tagger = _abstract(lambda: Tagger(5, 3, bidirectional=False, rngs=nnx.Rngs(0), **SMALL))
    with pytest.raises(ValueError, match=r"tokens holds ids in \[-1, -1\] but vocab_size=5"):
        tagger.step(None, jnp.array([-1]))
    classifier = _abstract(
        lambda: Classifier(5, 3, pooling="mean", bidirectional=False, rngs=nnx.Rngs(0), **SMALL)
    )
    with pytest.raises(ValueError, match=r"tokens holds ids in \[5, 5\] but vocab_size=5"):
        classifier.step({"carries": None}, jnp.array([5]))
    seq2seq = _abstract(lambda: Seq2Seq(5, 6, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"tokens holds ids in \[6, 6\] but target_vocab_size=6"):
        seq2seq.step(None, jnp.array([6]))
    transformer_lm = _abstract(
        lambda: TransformerLM(
            5, d_model=4, num_heads=2, num_layers=1, max_length=4, rngs=nnx.Rngs(0)
        )
    )
    with pytest.raises(ValueError, match=r"tokens holds ids in \[5, 5\] but vocab_size=5"):
        transformer_lm.step(None, jnp.array([5]))
    transformer_s2s = _abstract(
        lambda: TransformerSeq2Seq(
            5,
            6,
            d_model=4,
            num_heads=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            max_length=4,
            rngs=nnx.Rngs(0),
        )
    )
    with pytest.raises(ValueError, match=r"tokens holds ids in \[6, 6\] but target_vocab_size=6"):
        transformer_s2s.step(None, jnp.array([6]))


def test_a_classifier_refuses_character_features_it_cannot_be_given():
    """Classifier passed num_chars to its encoder, which built a char BiRNN and then refused
    every call ('pass chars and char_lengths'), arguments the classifier does not take."""
    with pytest.raises(ValueError, match=r"num_chars=5: the classifier has no character"):
        _abstract(lambda: Classifier(9, 3, num_chars=5, rngs=nnx.Rngs(0), **SMALL))


def test_seq2seq_parameter_count_by_hand():
    """Two-layer bidirectional LSTM encoder, two-layer LSTM decoder with input feeding,
    additive attention, a bridge per layer and carry part (LSTM weights: W_ih, W_hh, b_ih,
    b_hh; E = 4, H = 6, source/target vocabularies 9/11)."""
    e, h, g = 4, 6, 24  # g = 4 gates * H

    def lstm(inputs: int) -> int:
        return inputs * g + h * g + 2 * g

    want = (
        9 * e  # source embedding
        + 2 * lstm(e)
        + 2 * lstm(2 * h)  # bidirectional encoder layers
        + 11 * e  # target embedding
        + lstm(e + h)  # decoder layer 1: embedding ++ fed h~
        + lstm(h)
        + (2 * h * h + h)
        + h * h
        + h  # attention: W_k and b, W_q, v
        + 3 * h * h  # combine W_c [c; s] (no bias)
        + 4 * (2 * h * h + h)  # bridge: 2 layers x (h, c)
        + h * 11
        + 11  # output
    )
    model = nnx.eval_shape(
        lambda: Seq2Seq(9, 11, embed_size=e, hidden_size=h, num_layers=2, rngs=nnx.Rngs(0))
    )
    assert count_params(model) == want == 3001
