"""Regularisers: masks have the structure the papers define; AR/TAR match their formulas (TAR
over one time step is 0); bfloat16 embedding dropout rounds the scaled rows once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.train import regularizers


def test_locked_dropout_mask_is_constant_over_time_and_differs_across_sequences():
    rate = 0.5
    x = jnp.ones((16, 7, 12))
    y = np.asarray(regularizers.locked_dropout(jax.random.key(0), rate, x))
    assert set(np.unique(y)) == {0.0, 1.0 / (1.0 - rate)}
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))  # same at every t
    assert len({row.tobytes() for row in y[:, 0]}) > 1  # sequences get their own masks
    assert any(len(np.unique(row)) == 2 for row in y[:, 0])  # features too: not whole rows
    assert regularizers.locked_dropout(None, rate, x) is x


def test_embedding_dropout_drops_whole_word_types():
    rate = 0.4
    embedding = jax.random.normal(jax.random.key(1), (50, 6))
    dropped = np.asarray(regularizers.embedding_dropout(jax.random.key(2), rate, embedding))
    kept = np.any(dropped != 0, axis=1)
    assert 0 < kept.sum() < 50
    np.testing.assert_array_equal(dropped[~kept], 0.0)
    np.testing.assert_allclose(dropped[kept], np.asarray(embedding)[kept] / (1 - rate), rtol=1e-6)
    # A [vocab] vector broadcast against the [vocab, 1] mask to [vocab, vocab], silently; a bad
    # rate passed at evaluation (rng=None) as the identity, where dropout/locked_dropout refuse.
    with pytest.raises(ValueError, match=r"embedding \[vocab, features\]; got shape \(50,\)"):
        regularizers.embedding_dropout(jax.random.key(2), rate, embedding[:, 0])
    with pytest.raises(ValueError, match="rate=1.5"):
        regularizers.embedding_dropout(None, 1.5, embedding)


def test_weight_drop_masks_only_the_recurrent_matrices():
    rate = 0.5
    key = jax.random.key(3)
    layer = {
        "W_ih": jnp.ones((4, 8)),
        "W_hh": jnp.ones((2, 8)),
        "b_ih": jnp.ones(8),
        "b_hh": jnp.ones(8),
    }
    stack = [layer, {"fw": layer, "bw": layer}]
    dropped = regularizers.weight_drop(key, rate, stack)
    matrices = [dropped[0]["W_hh"], dropped[1]["fw"]["W_hh"], dropped[1]["bw"]["W_hh"]]
    for w in matrices:
        assert set(np.unique(np.asarray(w))) == {0.0, 2.0}
    assert len({np.asarray(w).tobytes() for w in matrices}) == 3  # independent masks
    for name in ("W_ih", "b_ih", "b_hh"):
        assert dropped[0][name] is layer[name]
    assert regularizers.weight_drop(None, rate, stack) is stack
    # One cell's params dict (not a stack's list) failed with "'str' object is not a mapping";
    # a bad rate at evaluation (rng=None) passed silently.
    with pytest.raises(ValueError, match=r"weight_drop: params is one cell's params dict"):
        regularizers.weight_drop(key, rate, layer)
    with pytest.raises(ValueError, match="rate=-0.1"):
        regularizers.weight_drop(None, -0.1, stack)


def test_activation_and_temporal_activation_regularization_match_their_formulas():
    h = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    alpha, beta = 2.0, 1.5
    ar = alpha * np.mean(h**2)
    tar = beta * np.mean(sum((h[:, t] - h[:, t - 1]) ** 2 for t in range(1, 5)) / 4)
    assert float(regularizers.activation_regularization(jnp.asarray(h), alpha)) == pytest.approx(
        ar, rel=1e-6
    )
    assert float(
        regularizers.temporal_activation_regularization(jnp.asarray(h), beta)
    ) == pytest.approx(tar, rel=1e-6)


def test_tar_over_a_single_time_step_is_zero_not_nan():
    # data.bptt_length=1 with objective.tar_beta > 0: no consecutive pair, penalty 0 (the mean
    # over an empty axis was NaN, and the run stopped on a "non-finite loss").
    h = jnp.ones((2, 1, 3))
    assert float(regularizers.temporal_activation_regularization(h, 2.0)) == 0.0
    h2 = np.array([[[1.0, 2.0], [3.0, 0.0]]], np.float32)  # one pair: diffs (2, -2)
    assert float(regularizers.temporal_activation_regularization(jnp.asarray(h2), 0.5)) == (
        pytest.approx(0.5 * (4 + 4) / 2)
    )


def test_bfloat16_embedding_dropout_rounds_the_scaled_rows_once():
    """Kept rows are bf16(x / 0.7) computed in float32, dropped rows 0 (the mask was built in
    bfloat16: x * 1.4296875)."""
    import jax
    import ml_dtypes
    import numpy as np

    from rnn_jax.train.regularizers import embedding_dropout

    table = jax.random.normal(jax.random.key(0), (64, 8), jnp.bfloat16)
    dropped = embedding_dropout(jax.random.key(1), 0.3, table)
    assert dropped.dtype == jnp.bfloat16
    out = np.asarray(dropped.astype(jnp.float32))
    kept = out.any(axis=1)
    assert 0 < kept.sum() < 64 and not out[~kept].any()
    x = np.asarray(table.astype(jnp.float32))
    expected = (x[kept] / np.float32(0.7)).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(out[kept], expected)
