"""Review 23 of the training state and its persistence: reading a model back names the config
keys that differ from the run's, a checkpoint that does not fit names its arrays, and
provenance does not claim a clean tree that git was not asked about."""

import jax.numpy as jnp
import pytest

from rnn_jax.train import metrics
from rnn_jax.train.checkpoint import Checkpointer, abstract_like
from rnn_jax.train.restore import restore_model
from tests.test_train_loop import Regression, _config


def test_restore_model_names_the_keys_that_differ_from_the_runs_config(tmp_path):
    """A config other than the run's failed inside orbax with a tree or shape error that
    named no key, or (equal shapes: `model.cell='gru'` read into a `'gru_cho'` run) gave a
    model that silently computed something else with the run's weights."""
    (tmp_path / "best").mkdir()
    (tmp_path / "config.json").write_text(_config().to_json_best_effort(indent=2))
    changed = _config(optimizer__name="sgd", model__hidden_size=2, train__num_steps=7)
    with pytest.raises(ValueError, match="model.hidden_size: 1 in .*config.json, now 2") as error:
        restore_model(changed, tmp_path, Regression())
    assert "optimizer.name: 'adam'" in str(error.value)
    assert "train.num_steps" not in str(error.value)  # a resume may change it: so may a reader
    with pytest.raises(ValueError, match="no checkpoint in"):
        restore_model(_config(train__num_steps=7), tmp_path, Regression())


def test_provenance_does_not_claim_a_clean_tree_when_git_cannot_tell(monkeypatch):
    """Without git (or outside a repository) `git_dirty` was False, a clean tree that nobody
    checked, beside `git_sha: None`."""

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(metrics.subprocess, "run", no_git)
    record = metrics.provenance()
    assert record["git_sha"] is None and record["git_dirty"] is None


def test_a_checkpoint_that_does_not_fit_names_the_arrays_that_differ(tmp_path):
    """orbax's shape error ("Requested shape: (2, 4) is not compatible with the stored shape:
    (2, 3)") named no array, e.g. after a corpus change resized a vocabulary."""
    checkpointer = Checkpointer(tmp_path, 1)
    checkpointer.save(3, {"params": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}}, {"data": {}})
    checkpointer.wait()
    wanted = {"params": {"w": jnp.ones((2, 4)), "b": jnp.ones(3)}}
    with pytest.raises(ValueError, match=r"params\.w: shape \(2, 3\) in the checkpoint, \(2, 4\)"):
        checkpointer.restore(abstract_like(wanted))
    checkpointer.close()


def test_nesterov_without_momentum_or_with_another_optimiser_is_a_config_error():
    """optax.sgd and optax.rmsprop ignore nesterov=True without momentum (and adam has none):
    the flag did nothing, silently."""
    from rnn_jax.train import config as cfg

    for name, momentum in (("sgd", 0.0), ("rmsprop", 0.0), ("adam", 0.9)):
        config = _config()
        config.optimizer.update(name=name, momentum=momentum, nesterov=True)
        with pytest.raises(ValueError, match=r"optimizer.nesterov=True with optimizer.name="):
            cfg.validate(config)
    config.optimizer.update(name="sgd", momentum=0.9)
    cfg.validate(config)


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
