"""Many-to-one classifier: pooling ignores padding (and equals numpy over the real states),
padding ids outside the vocabulary change nothing, streaming == full pass, learns SST-2."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_training import fixed_batches, take, train, vocab

from rnn_jax.data import readers
from rnn_jax.data.batching import pad_batch
from rnn_jax.models.classifier import Classifier

TOKENS = jnp.array([[1, 2, 3, 4], [4, 5, 0, 0]])
NOISY = jnp.array([[1, 2, 3, 4], [4, 5, 7, 8]])
LENGTHS = jnp.array([4, 2])


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_streaming_step_reproduces_the_full_pass(pooling):
    model = Classifier(
        9, 3, pooling=pooling, embed_size=4, hidden_size=5, bidirectional=False, rngs=nnx.Rngs(0)
    )
    full, _ = model(TOKENS, LENGTHS)
    state, prefixes = model.zero_state(2), []
    for t in range(4):
        state, logits = model.step(state, TOKENS[:, t])
        prefixes.append(logits)
    np.testing.assert_allclose(prefixes[3][0], full[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prefixes[1][1], full[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "pooling, kind",
    [
        ("last", "rnn"),
        ("mean", "rnn"),
        ("max", "rnn"),
        ("attention", "rnn"),
        ("mean", "transformer"),
    ],
)
def test_padding_is_ignored_and_attention_weights_are_a_distribution(pooling, kind):
    model = Classifier(
        9,
        3,
        pooling=pooling,
        kind=kind,
        embed_size=8,
        hidden_size=8,
        num_heads=2,
        max_length=8,
        rngs=nnx.Rngs(1),
    )
    logits, weights = model(TOKENS, LENGTHS)
    noisy_logits, _ = model(NOISY, LENGTHS)
    np.testing.assert_allclose(logits, noisy_logits, rtol=1e-5, atol=1e-6)
    if pooling == "attention":
        np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, rtol=1e-6)
        assert np.all(np.asarray(weights)[1, 2:] == 0.0)
    # The encoder zeroes padded ids, so NOISY alone cannot tell a pooling that reads padded
    # states (an RNN's are 0, a transformer's are not) from one that masks them: numpy over
    # the real states only (bidirectional 'last': forward at length - 1 ++ backward at 0).
    states, _ = model.encoder(TOKENS, LENGTHS)
    pooled, _ = model.pool(states, LENGTHS)
    states, half = np.asarray(states), states.shape[-1] // 2
    for row, length in enumerate(np.asarray(LENGTHS)):
        real = states[row, :length]
        if pooling == "last":
            want = np.concatenate([real[-1, :half], real[0, half:]])
        elif pooling == "attention":
            want = np.asarray(weights)[row, :length] @ real
        else:
            want = getattr(real, pooling)(axis=0)  # mean, max
        np.testing.assert_allclose(pooled[row], want, rtol=1e-5, atol=1e-6)


def test_bidirectional_last_pooling_uses_both_directions():
    """Forward state at the last real token ++ backward state at the first token."""
    model = Classifier(9, 3, pooling="last", embed_size=4, hidden_size=5, rngs=nnx.Rngs(2))
    states, _ = model.encoder(TOKENS, LENGTHS)
    pooled, _ = model.pool(states, LENGTHS)
    np.testing.assert_array_equal(pooled[1, :5], states[1, 1, :5])
    np.testing.assert_array_equal(pooled[1, 5:], states[1, 0, 5:])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="pooling='sum'"):
        Classifier(9, 3, pooling="sum", embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_classes=0"):
        Classifier(9, 0, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    model = Classifier(9, 3, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="tokens holds ids .* vocab_size=9"):
        model(jnp.array([[1, 9]]), jnp.array([2]))


MODELS = {
    "birnn_attention": dict(pooling="attention", embed_size=32, hidden_size=32),
    "transformer_mean": dict(
        pooling="mean",
        kind="transformer",
        embed_size=32,
        hidden_size=32,
        num_heads=2,
        num_layers=1,
        max_length=40,
    ),
}


@pytest.mark.data
@pytest.mark.parametrize("name", list(MODELS))
def test_classifier_learns_sst2(data_root, name):
    # train.txt is roughly sorted by sentiment, so the slice is a seeded shuffle of the file.
    trees = take(readers.read_sst(data_root / "sst" / "train.txt"), 10_000, 40)
    order = np.random.default_rng(0).permutation(len(trees))
    binary = [
        {"tokens": trees[i]["tokens"], "label": int(trees[i]["label"] > 2)}
        for i in order
        if trees[i]["label"] != 2
    ][:2100]
    train_set, held = binary[:-300], binary[-300:]
    words = vocab([t["tokens"] for t in train_set], min_freq=2, bos=None, eos=None)

    def encode(examples):
        return [
            {"inputs": words.encode(e["tokens"]), "targets": np.int32(e["label"])} for e in examples
        ]

    batches = fixed_batches(encode(train_set), 32, 40)
    model = Classifier(len(words), 2, dropout_rate=0.3, rngs=nnx.Rngs(0), **MODELS[name])

    def loss_fn(model, batch, key):
        logits, _ = model(batch["inputs"], batch["lengths"], rng=key)
        return jnp.mean(
            jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, batch["targets"][:, None], -1)[:, 0]
        )

    losses = train(model, loss_fn, batches, steps=150, learning_rate=3e-3)
    held_batch = pad_batch(encode(held), 0, ("inputs",), 40)
    logits, _ = jax.jit(lambda b: model(b["inputs"], b["lengths"]))(held_batch)
    accuracy = float(np.mean(np.argmax(logits, -1) == held_batch["targets"]))
    majority = collections.Counter(e["label"] for e in train_set).most_common(1)[0][0]
    majority_accuracy = float(np.mean(held_batch["targets"] == majority))
    print(
        f"SST-2 held-out accuracy ({name}): model {accuracy:.3f}, majority class "
        f"{majority_accuracy:.3f}; loss {losses[:5].mean():.3f} -> {losses[-10:].mean():.3f}"
    )
    assert losses[-10:].mean() < 0.7 * losses[:5].mean()
    assert accuracy > majority_accuracy + 0.08, (accuracy, majority_accuracy)


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_padding_ids_outside_the_vocabulary_change_nothing(kind):
    """The id check skips padding, so a pad id of vocab_size (or any) is accepted; it used to
    be embedded anyway, as NaN (nnx.Embed fills out-of-range rows): the transformer's
    attention gives the padded keys weight 0, but 0 * NaN = NaN poisoned every output, and the
    RNN's forward pass stayed finite while its gradients were NaN."""
    model = Classifier(
        9,
        3,
        pooling="mean",
        kind=kind,
        embed_size=4,
        hidden_size=4,
        num_heads=1,
        max_length=8,
        rngs=nnx.Rngs(0),
    )
    lengths = jnp.array([3, 2])

    def logits_and_grads(pad):
        tokens = jnp.array([[1, 2, 3, pad], [4, 5, pad, pad]])
        loss = lambda m: jnp.sum(m(tokens, lengths)[0] ** 2)
        return model(tokens, lengths)[0], nnx.state(nnx.grad(loss)(model), nnx.Param)

    reference = logits_and_grads(0)
    for pad in (9, 100):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            logits_and_grads(pad),
            reference,
        )
