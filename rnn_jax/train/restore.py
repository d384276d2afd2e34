"""Models back from a run directory: evaluation and generation after (or during) training."""

from __future__ import annotations

import pathlib

import jax
import ml_collections
from flax import nnx

from rnn_jax.predicates import is_int
from rnn_jax.train import config_keys, optim, saved_config, seeds
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.steps import build_init
from rnn_jax.train.task import Task


def restore_model(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    *,
    best: bool = True,
    replica: int = 0,
) -> tuple[nnx.Module, int]:
    """`(model, step)` of seed replica `replica` from the best-validation checkpoint (or the
    newest periodic one with `best=False`), on the first local device.

    Args:
      config: the run's config (its `config.json`, or the same config file and overrides).
      workdir: the run directory.
      task: the experiment's task (it builds the model's structure).

    Raises:
      ValueError: when the run directory holds no such checkpoint or replica, or `config`
        differs from the run's `config.json` in a key that a resume may not change
        (`rnn_jax.train.saved_config.RESUMABLE_CHANGES`), naming each such key; or when the
        checkpoint does not fit the model or is damaged (`Checkpointer.restore`).
    """
    directory = pathlib.Path(workdir) / ("best" if best else "checkpoints")
    if not directory.is_dir():
        # Checked first: orbax would report a missing directory less clearly.
        raise ValueError(f"no checkpoint in {directory}")
    _check_same_run(config, pathlib.Path(workdir))
    # After the config check: `config.num_seeds` is the run's only once it has passed (a
    # config without the run's num_seeds=2 override reported "the run has num_seeds=1").
    if not is_int(replica):  # True passed the range check and indexed as 1
        raise ValueError(f"replica={replica!r}: must be an int seed index")
    if not 0 <= replica < config.num_seeds:
        raise ValueError(f"replica={replica}: the run has num_seeds={config.num_seeds}")
    graphdef, init_state = build_init(
        task,
        optim.build_optimizer(config),
        config.seed,
        config.num_seeds,
        config.train.batch_size,
    )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(init_state),
    )
    # Read-only: the run may still be training (its newest best checkpoint can be ahead of
    # its newest periodic one), and a reader must not create, save or delete anything.
    checkpointer = Checkpointer(workdir, config.train.max_to_keep, read_only=True)
    try:
        restored = checkpointer.restore(abstract, best=best)
        step = checkpointer.latest_step(best=best)
    finally:
        checkpointer.close()
    if restored is None:
        raise ValueError(f"no checkpoint in {directory}")
    params, others = (seeds.replica(restored[0][name], replica) for name in ("params", "others"))
    return nnx.merge(graphdef, params, others), step


def _check_same_run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Refuse a config that differs from the run's `config.json` beyond what a resume may
    change: a changed model either failed inside orbax with a shape or tree error naming no
    key, or, with equal shapes (`model.cell='gru'` for a `'gru_cho'` run), silently gave a
    model that computes something else with the run's weights."""
    saved_path = workdir / "config.json"
    if not saved_path.is_file():
        return
    try:
        saved = config_keys.flatten(saved_config.read_json_object(saved_path))
    except (OSError, ValueError) as error:  # a bare JSONDecodeError named no file
        raise ValueError(
            f"restore_model: cannot read {saved_path}, the config {workdir} was trained with "
            f"({error})"
        ) from None
    new = config_keys.flat_config(config)
    changed = saved_config.run_changes(saved, new, saved_path)
    if changed:
        raise ValueError(
            f"restore_model: the config differs from the one {workdir} was trained with:\n  "
            + "\n  ".join(changed)
            + "\nPass the run's config (its config.json, or the same config file and overrides)."
        )
