"""encoder_options: an experiment's `config.model` -> the SequenceEncoder it describes; the
context-free `kind='bag'` encoder against a numpy reference, its independence from the other
tokens, and the Tagger and Classifier that train with it. The checks every encoder kind and
the models on it share: poolings, lengths, character features, ids of the one-token steps."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import reference_numpy as ref
from flax import nnx

from rnn_jax.models import RNNLanguageModel
from rnn_jax.models import encoder as encoder_module
from rnn_jax.models.classifier import POOLINGS, Classifier
from rnn_jax.models.encoder import ENCODER_KINDS, SequenceEncoder, config_problems, encoder_options
from rnn_jax.models.seq2seq import Seq2Seq
from rnn_jax.models.tagger import Tagger
from rnn_jax.models.transformer import TransformerEncoder, TransformerLM, TransformerSeq2Seq


def test_encoder_options_take_only_the_encoder_keys_the_config_sets():
    model = ml_collections.ConfigDict(
        {"kind": "rnn", "cell": "gru", "embed_size": 6, "hidden_size": 5, "pooling": "max"}
    )
    model.bidirectional = False
    model.head = "crf"
    options = encoder_options(model)
    assert options == {
        "kind": "rnn",
        "cell": "gru",
        "embed_size": 6,
        "hidden_size": 5,
        "bidirectional": False,
    }
    classifier = Classifier(9, 2, pooling=model.pooling, rngs=nnx.Rngs(0), **options)
    assert classifier.encoder.output_size == 5  # unidirectional, as configured
    assert type(classifier.encoder.rnn.cell).__name__ == "GRU"


def test_encoder_options_build_the_transformer_baseline():
    model = ml_collections.ConfigDict(
        {
            "kind": "transformer",
            "embed_size": 8,
            "hidden_size": 8,
            "num_heads": 2,
            "num_layers": 3,
            "max_length": 12,
            "positions": "sinusoidal",
            "head": "softmax",
        }
    )
    tagger = Tagger(9, 4, head=model.head, rngs=nnx.Rngs(0), **encoder_options(model))
    transformer = tagger.encoder.transformer
    assert len(transformer.stack.blocks) == 3
    assert transformer.embed.max_length == 12
    assert transformer.stack.blocks[0].self_attention.num_heads == 2
    assert not isinstance(transformer.embed.position, nnx.Param)  # a fixed sinusoid table


BAG_TOKENS = np.array([[3, 1, 4, 1, 5], [2, 6, 5, 0, 0]], np.int32)
BAG_LENGTHS = np.array([5, 3], np.int32)


def _bag(**options):
    return SequenceEncoder(10, embed_size=4, hidden_size=6, kind="bag", rngs=nnx.Rngs(3), **options)


def test_bag_states_are_tanh_of_a_dense_layer_per_token(monkeypatch):
    """The reference: numpy tanh(E[token] W + b), token by token; padding is 0. Dropout
    falls on the embeddings and on the states (a stand-in that halves what it is given
    shows where): 0.5 tanh(0.5 E[token] W + b)."""
    encoder = _bag()
    states, carries = encoder(BAG_TOKENS, BAG_LENGTHS)
    monkeypatch.setattr(encoder_module, "dropout", lambda rng, rate, x: x if rng is None else x / 2)
    dropped, _ = encoder(BAG_TOKENS, BAG_LENGTHS, rng=jax.random.key(0))
    assert carries is None and encoder.output_size == 6
    table = np.asarray(encoder.embed.embedding[...])
    kernel = np.asarray(encoder.position_wise.kernel[...])
    bias = np.asarray(encoder.position_wise.bias[...])
    for row, length in enumerate(BAG_LENGTHS):
        for t in range(BAG_TOKENS.shape[1]):
            x = table[BAG_TOKENS[row, t]]
            expected = np.tanh(x @ kernel + bias) if t < length else 0.0
            np.testing.assert_allclose(states[row, t], expected, rtol=1e-5, atol=1e-6)
            expected = np.tanh(x / 2 @ kernel + bias) / 2 if t < length else 0.0
            np.testing.assert_allclose(dropped[row, t], expected, rtol=1e-5, atol=1e-6)


def _char_features(encoder: SequenceEncoder, chars: np.ndarray, length: int) -> np.ndarray:
    """numpy Lample et al. (2016) word features: the forward state after the last real
    character ++ the backward state after the first (the char BiLSTM read up to `length`)."""
    layer = encoder.chars.rnn.params[0]
    x = np.asarray(encoder.chars.embed.embedding[...], np.float64)[chars[:length]]
    forward, _ = ref.run_sequence("lstm", layer["fw"], x)
    backward, _ = ref.run_sequence("lstm", layer["bw"], x[::-1])
    return np.concatenate([forward[-1], backward[-1]])


def test_a_bag_state_does_not_see_the_other_tokens():
    chars = np.arange(2 * 5 * 3, dtype=np.int32).reshape(2, 5, 3) % 7 + 1
    # Words shorter than the width: the character features must be read at each word's own
    # last character, not at the padded end (the RNN's zeros there passed every other test).
    char_lengths = np.array([[3, 1, 2, 3, 2], [2, 3, 1, 0, 0]], np.int32)
    encoder = _bag(num_chars=8, char_embed_size=3, char_hidden_size=2)
    states, _ = encoder(BAG_TOKENS, BAG_LENGTHS, chars=chars, char_lengths=char_lengths)
    with pytest.raises(ValueError, match="has character features: pass chars and char_lengths"):
        encoder(BAG_TOKENS, BAG_LENGTHS, chars=chars)
    table = np.asarray(encoder.embed.embedding[...], np.float64)
    kernel = np.asarray(encoder.position_wise.kernel[...], np.float64)
    bias = np.asarray(encoder.position_wise.bias[...], np.float64)
    for row, length in enumerate(BAG_LENGTHS):
        for t in range(length):
            features = _char_features(encoder, chars[row, t], char_lengths[row, t])
            x = np.concatenate([table[BAG_TOKENS[row, t]], features])
            np.testing.assert_allclose(states[row, t], np.tanh(x @ kernel + bias), atol=1e-6)
    for position in range(5):
        tokens, other_chars = BAG_TOKENS.copy(), chars.copy()
        tokens[0, position] = (tokens[0, position] + 3) % 10
        other_chars[0, position] = other_chars[0, position][::-1]
        changed, _ = encoder(tokens, BAG_LENGTHS, chars=other_chars, char_lengths=char_lengths)
        others = [t for t in range(5) if t != position]
        np.testing.assert_array_equal(changed[0, others], states[0, others])
        np.testing.assert_array_equal(changed[1], states[1])
        assert not np.allclose(changed[0, position], states[0, position])


def test_padding_ids_and_characters_change_neither_states_nor_gradients():
    """Padding may hold any id, and a padded word any characters and char_length: an
    out-of-range id embeds as NaN (nnx.Embed), which the masked forward pass hid while
    0 * NaN made every gradient NaN; a padded word's char_length made its characters be
    checked (and refused) as real ones."""
    encoder = _bag(num_chars=8, char_embed_size=3, char_hidden_size=2, cell="elman")
    char_lengths = np.array([[3, 1, 2, 3, 2], [2, 3, 1, 0, 0]], np.int32)
    real_chars = np.arange(3) < char_lengths[..., None]
    chars = np.where(real_chars, np.arange(2 * 5 * 3).reshape(2, 5, 3) % 7 + 1, 0)
    tokens, noisy_chars = BAG_TOKENS.copy(), np.where(real_chars, chars, 8)
    tokens[1, 3:] = [10, 99]
    noisy_lengths = char_lengths.copy()
    noisy_lengths[1, 3:] = 3  # padded words

    @nnx.jit  # one compile for both calls; eager, the char RNN's gradient took seconds
    def states_and_grads(model, tokens, chars, char_lengths):
        def loss(model):
            states, _ = model(tokens, BAG_LENGTHS, chars=chars, char_lengths=char_lengths)
            return jnp.sum(states**2), states

        grads, states = nnx.grad(loss, has_aux=True)(model)
        return states, nnx.state(grads, nnx.Param)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        states_and_grads(encoder, tokens, noisy_chars, noisy_lengths),
        states_and_grads(encoder, BAG_TOKENS, chars, char_lengths),
    )


def test_bag_states_permute_with_the_tokens():
    encoder = _bag()
    permutation = np.array([4, 2, 0, 3, 1])
    states, _ = encoder(BAG_TOKENS[:1], BAG_LENGTHS[:1])
    permuted, _ = encoder(BAG_TOKENS[:1, permutation], BAG_LENGTHS[:1])
    np.testing.assert_allclose(permuted[0], states[0, permutation], rtol=1e-6)
    # The BiLSTM is the contrast: its states do depend on the order.
    lstm = SequenceEncoder(10, embed_size=4, hidden_size=6, rngs=nnx.Rngs(3))
    states, _ = lstm(BAG_TOKENS[:1], BAG_LENGTHS[:1])
    permuted, _ = lstm(BAG_TOKENS[:1, permutation], BAG_LENGTHS[:1])
    assert not np.allclose(permuted[0], states[0, permutation], atol=1e-4)


def _one_sgd_step(model, loss_fn):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    assert np.abs(np.asarray(grads.encoder.position_wise.kernel[...])).sum() > 0
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, params, nnx.state(grads, nnx.Param)))
    return float(loss), float(loss_fn(model))


def test_a_bag_tagger_and_classifier_train():
    tags = np.array([[1, 2, 1, 2, 3], [3, 1, 3, 0, 0]], np.int32)
    tagger = Tagger(10, 4, kind="bag", embed_size=4, hidden_size=6, rngs=nnx.Rngs(0))
    before, after = _one_sgd_step(tagger, lambda m: jnp.mean(m.loss(BAG_TOKENS, tags, BAG_LENGTHS)))
    assert after < before
    classifier = Classifier(
        10, 2, pooling="mean", kind="bag", embed_size=4, hidden_size=6, rngs=nnx.Rngs(0)
    )
    labels = np.array([0, 1])

    def classifier_loss(model):
        logits, _ = model(BAG_TOKENS, BAG_LENGTHS)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    before, after = _one_sgd_step(classifier, classifier_loss)
    assert after < before


def test_a_bag_refuses_last_pooling_and_streaming_and_a_bad_kind_is_named():
    with pytest.raises(ValueError, match=r"pooling='last' needs an RNN encoder, got kind='bag'"):
        Classifier(10, 2, pooling="last", kind="bag", embed_size=4, hidden_size=6, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"step needs a unidirectional RNN encoder, got kind='bag'"
    ):
        _bag().zero_carry(2)
    with pytest.raises(ValueError, match=r"kind='bow'; allowed: 'rnn', 'transformer', 'bag'"):
        SequenceEncoder(10, embed_size=4, hidden_size=6, kind="bow", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"dropout_rate=1.0; allowed: 0 <= rate < 1"):
        SequenceEncoder(10, embed_size=4, hidden_size=6, dropout_rate=1.0, rngs=nnx.Rngs(0))
    # The transformer's refusal of characters named 'rnn' alone, as if a bag could not take them.
    with pytest.raises(ValueError, match=r"num_chars=5: .* need kind='rnn' or 'bag', got kind='t"):
        _abstract(
            lambda: SequenceEncoder(5, kind="transformer", num_chars=5, rngs=nnx.Rngs(0), **SMALL)
        )
    # config_problems names the same refusal before the data is read, for the transformer only.
    refusal = (
        "model.char_features=True: character features need model.kind='rnn' or 'bag' "
        "(set --config.model.char_features=false for the transformer)"
    )
    for kind in ENCODER_KINDS:
        expected = [refusal] if kind == "transformer" else []
        assert config_problems({"kind": kind, "char_features": True, **SMALL}) == expected


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


def test_a_transformer_encoder_refuses_to_be_unidirectional():
    """`kind='transformer', bidirectional=False` built the same non-causal transformer, a
    "unidirectional" baseline that read every later token, and `config_problems` passed it.
    `cell` stays accepted: it is inert there, and a sweep's `--set model.cell=gru` reaches
    its transformer points."""

    def build(**options):
        return _abstract(
            lambda: SequenceEncoder(9, kind="transformer", rngs=nnx.Rngs(0), **SMALL, **options)
        )

    with pytest.raises(ValueError, match=r"bidirectional=False has no effect on a transformer"):
        build(bidirectional=False)
    assert build(bidirectional=True, cell="gru").output_size == 4
    model = {"kind": "transformer", "cell": "gru", **SMALL}
    assert config_problems(model) == config_problems({**model, "bidirectional": True}) == []
    assert config_problems({**model, "bidirectional": False}) == [
        "model.bidirectional=False: has no effect on a transformer encoder, which attends in "
        "both directions (set --config.model.bidirectional=true for model.kind='transformer')"
    ]
    assert config_problems({"kind": "rnn", "bidirectional": False, **SMALL}) == []


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


def test_character_lengths_outside_the_word_width_are_named():
    """A char_length past chars.shape[2] reached the char RNN's check, which named the
    flattened `lengths` and `time=3`, the word width, as if the sentence were wrong."""
    encoder = SequenceEncoder(
        9, num_chars=5, char_embed_size=2, char_hidden_size=2, **SMALL, rngs=nnx.Rngs(0)
    )
    tokens, chars = jnp.array([[1, 2]]), jnp.ones((1, 2, 3), jnp.int32)
    for bad in (4, -1):
        want = rf"char_lengths contains \[{bad}\]; allowed: 0 <= length <= chars\.shape\[2\]=3"
        with pytest.raises(ValueError, match=want):
            encoder(tokens, jnp.array([2]), chars=chars, char_lengths=jnp.array([[2, bad]]))


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
