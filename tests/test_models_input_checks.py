"""The models refuse misshaped or mistyped inputs by name, under `jit` too (shapes and dtypes
are static), as the RNN scan and the CRF already did: float lengths, `lengths`/`tags`/
`target_lengths` of another shape, a streaming step's `[batch, 1]` tokens or a state of
another batch, a source and target of different batches. Each was accepted silently (a float
length 2.5 kept 3 states and divided by 2.5; a `[1]` lengths was broadcast under jit) or failed
with an error naming nothing. Also: Seq2Seq under `jax_enable_x64`, NumPy integer sizes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import decoding
from rnn_jax.models.checks import check_ids
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.lm import RNNLanguageModel
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.models.tagger import Tagger
from rnn_jax.models.transformer import TransformerLM, TransformerSeq2Seq
from rnn_jax.modules import RNN

TOKENS = jnp.asarray([[3, 4, 5, 6], [2, 7, 1, 8]])
KEY = jax.random.key(0)


def _classifier(kind):
    options = {"num_heads": 2, "max_length": 8} if kind == "transformer" else {}
    if kind == "rnn":
        options["bidirectional"] = False  # streamable
    return Classifier(
        9, 3, pooling="mean", embed_size=4, hidden_size=4, kind=kind, rngs=nnx.Rngs(0), **options
    )


def _transformer_seq2seq():
    return TransformerSeq2Seq(
        9,
        6,
        d_model=4,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        max_length=8,
        rngs=nnx.Rngs(0),
    )


@pytest.fixture(scope="module")
def seq2seq():
    """One RNN Seq2Seq for the tests here (building a model compiles its initialisers)."""
    return Seq2Seq(9, 6, embed_size=4, hidden_size=4, attention="additive", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["bag", "transformer"])
def test_encoders_refuse_float_or_misshaped_lengths_eagerly_and_under_jit(kind):
    model = _classifier(kind)
    with pytest.raises(ValueError, match=r"^lengths has dtype float32; expected integers"):
        model(TOKENS, jnp.asarray([2.5, 3.0]))
    jitted = nnx.jit(lambda m, tokens, lengths: m(tokens, lengths)[0])
    for lengths in (jnp.asarray([2]), jnp.asarray(2)):
        with pytest.raises(ValueError, match=r"^lengths has shape .*; expected \[batch\]=\(2,\)"):
            jitted(model, TOKENS, lengths)


def test_tags_target_lengths_and_source_lengths_are_checked_by_shape_and_dtype(seq2seq):
    tagger = Tagger(9, 3, embed_size=4, hidden_size=4, kind="bag", rngs=nnx.Rngs(0))
    loss = nnx.jit(lambda m, tags, lengths: m.loss(TOKENS, tags, lengths))
    with pytest.raises(
        ValueError, match=r"^tags must have shape \(2, 4\) \(tokens'\), got \(2, 1\)"
    ):
        loss(tagger, jnp.ones((2, 1), jnp.int32), jnp.asarray([2, 4]))
    with pytest.raises(ValueError, match=r"^lengths has shape \(1,\); expected \[batch\]=\(2,\)"):
        loss(tagger, jnp.ones_like(TOKENS), jnp.asarray([2]))
    target = jnp.asarray([[1, 2], [1, 3]])
    with pytest.raises(ValueError, match=r"^target_lengths has shape \(1,\); expected \[batch\]"):
        seq2seq.loss(TOKENS, jnp.asarray([4, 2]), target, target, jnp.asarray([2]))
    with pytest.raises(ValueError, match=r"^source_lengths has dtype float32; expected integers"):
        _transformer_seq2seq()(TOKENS, jnp.asarray([2.5, 4.0]), target)
    with pytest.raises(ValueError, match=r"tokens has shape \(2, 4\) but its mask \(1, 4\)"):
        check_ids("tokens", TOKENS, 9, "vocab_size", jnp.ones((1, 4), bool))


def test_a_source_and_target_of_different_batches_are_refused(seq2seq):
    source, lengths, target = TOKENS[:1], jnp.asarray([4]), jnp.asarray([[1, 2], [1, 3], [1, 4]])
    message = r"^source \[1, 4\] and target_inputs \[3, 2\] must have the same batch size"
    with pytest.raises(ValueError, match=message):  # it was broadcast to a batch of 3
        _transformer_seq2seq()(source, lengths, target)
    with pytest.raises(ValueError, match=message):  # a TypeError from concatenate
        seq2seq(source, lengths, target)


def test_streaming_steps_take_one_token_per_sequence_of_the_state(seq2seq):
    """A `[batch, 1]` token gave `[batch, batch, vocab]` logits, and a state of batch 1 with
    tokens of batch 3 ran (a transformer cache whose position and layers disagreed)."""
    tokens, column = TOKENS[:, 0], TOKENS[:, :1]
    tagger = Tagger(9, 3, embed_size=4, hidden_size=4, bidirectional=False, rngs=nnx.Rngs(0))
    classifier = _classifier("rnn")
    lm = TransformerLM(9, d_model=4, num_heads=2, num_layers=1, max_length=8, rngs=nnx.Rngs(0))
    ts2s = _transformer_seq2seq()
    steps = {
        "tagger": (tagger.step, tagger.zero_carry),
        "classifier": (classifier.step, classifier.zero_state),
        "seq2seq": (seq2seq.step, lambda b: seq2seq.init_decode_state(TOKENS[:b], jnp.full(b, 4))),
        "transformer_lm": (lm.step, lambda b: lm.init_cache(b, 4)),
        "transformer_seq2seq": (
            ts2s.step,
            lambda b: ts2s.init_decode_state(TOKENS[:b], jnp.full(b, 4), 4),
        ),
    }
    for step, state in steps.values():
        # abstract states: the checks read shapes only, and nothing runs before them
        with pytest.raises(ValueError, match=r"^tokens has shape \(2, 1\); expected int \[batch\]"):
            step(jax.eval_shape(functools.partial(state, 2)), column)
        with pytest.raises(
            ValueError, match=r"^tokens has shape \(2,\); expected int \[batch\]=\(1,"
        ):
            step(jax.eval_shape(functools.partial(state, 1)), tokens)
    rnn_lm = RNNLanguageModel(9, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^token has shape \(2,\); expected int \[batch\]=\(1,"):
        rnn_lm.step(rnn_lm.zero_carry(1), tokens)
    rnn = RNN("lstm", 3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\) and the carries' leaves batch"):
        rnn.step(rnn.zero_carry(1), jnp.ones((2, 3)))


def test_seq2seq_trains_and_decodes_under_jax_enable_x64(seq2seq):
    """Its zero attention weights, input feed and first logits were float64 under x64 beside
    the step's float32, and lax.scan refused the carry (training and decoding alike)."""
    with jax.enable_x64(True):
        source, lengths, target = TOKENS, jnp.asarray([4, 2]), jnp.asarray([[1, 3, 4], [1, 5, 2]])
        assert nnx.jit(lambda m: m(source, lengths, target)[0])(seq2seq).dtype == jnp.float32
        state = seq2seq.init_decode_state(source, lengths)
        tokens = decoding.greedy_decode(seq2seq.step, state, bos_id=1, eos_id=2, max_length=3)[0]
        assert tokens.shape == (2, 3)


def test_sizes_take_numpy_integers_and_refuse_bools():
    lm = RNNLanguageModel(np.int64(5), np.int64(4), num_layers=np.int64(2), rngs=nnx.Rngs(0))
    assert lm.vocab_size == 5
    with pytest.raises(ValueError, match=r"^num_layers=True must be a positive int"):
        RNNLanguageModel(5, 4, num_layers=True, rngs=nnx.Rngs(0))
    for heads in (True, 2.0):  # True ran with one head; 2.0 failed later naming nothing
        with pytest.raises(ValueError, match=rf"^num_heads={heads!r} must be a positive int"):
            TransformerLM(
                9, d_model=4, num_heads=heads, num_layers=1, max_length=8, rngs=nnx.Rngs(0)
            )


def test_token_arrays_of_another_rank_or_dtype_are_named(seq2seq):
    """A 1-D token array failed unpacking `batch, time = tokens.shape` (or an IndexError), float
    ids reached nnx.Embed ("Input type must be an integer") or optax unnamed, a transformer LM
    returned `[batch, 0, vocab]` logits for time 0, and Seq2Seq indexed target_inputs[:, 0]."""
    lm = TransformerLM(9, d_model=4, num_heads=2, num_layers=1, max_length=8, rngs=nnx.Rngs(0))
    tagger = Tagger(9, 3, embed_size=4, hidden_size=4, kind="bag", rngs=nnx.Rngs(0))
    lengths, target = jnp.asarray([4, 2]), jnp.asarray([[1, 2], [1, 3]])
    rank = r"has shape \(4,\); expected int \[batch, time\] with time >= 1"
    for call in (
        lambda: lm(TOKENS[0]),
        lambda: _classifier("bag")(TOKENS[0], lengths[:1]),
        lambda: tagger(TOKENS[0], lengths[:1]),
    ):
        with pytest.raises(ValueError, match="^tokens " + rank):
            call()
    with pytest.raises(ValueError, match=r"^tokens has shape \(2, 0\); expected int"):
        lm(TOKENS[:, :0])
    for model in (seq2seq, _transformer_seq2seq()):
        with pytest.raises(ValueError, match=r"^target_inputs has shape \(2, 0\)"):
            model(TOKENS, lengths, target[:, :0])
        with pytest.raises(ValueError, match="^target_inputs has dtype float32; expected integer"):
            model(TOKENS, lengths, target.astype(jnp.float32))
    with pytest.raises(ValueError, match="^tags has dtype float32; expected integer ids"):
        tagger.loss(TOKENS, jnp.ones(TOKENS.shape), lengths)
    with pytest.raises(ValueError, match=r"^teacher_forcing_prob has shape \(2,\); expected one"):
        seq2seq(TOKENS, lengths, target, teacher_forcing_prob=jnp.full(2, 0.5), rng=KEY)


def test_transformer_rates_and_layer_counts_and_attention_queries_are_named():
    """A transformer's dropout rate outside [0, 1) failed only at its first call (the RNN models
    refuse it when built), `num_decoder_layers=0` was named "num_layers" and True built one
    layer; an attention query of another batch than its keys was broadcast."""
    from rnn_jax.attention import make_attention

    sizes = dict(d_model=4, num_heads=2, max_length=8, rngs=nnx.Rngs(0))
    for rate in (1.5, -0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"^dropout_rate={rate!r}; allowed: 0 <= rate < 1"):
            TransformerLM(9, num_layers=1, dropout_rate=rate, **sizes)
    with pytest.raises(ValueError, match="^num_decoder_layers=0 must be a positive int"):
        TransformerSeq2Seq(9, 6, num_encoder_layers=1, num_decoder_layers=0, **sizes)
    with pytest.raises(ValueError, match="^num_layers=True must be a positive int"):
        TransformerLM(9, num_layers=True, **sizes)
    keys = jnp.ones((3, 4, 6))
    for kind in ("additive", "dot", "general"):
        attention = make_attention(kind, 6, 6, rngs=nnx.Rngs(0))
        for query, keys_ in ((jnp.ones((1, 6)), keys), (jnp.ones((3, 6)), keys[:1])):
            with pytest.raises(ValueError, match=r"^query has shape .*; expected \[batch, query"):
                attention(query, keys_)
