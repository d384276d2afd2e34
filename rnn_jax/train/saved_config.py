"""A run directory's saved config: reading it back, and refusing to resume its checkpoints
under another config.

`workdir/config.json` records the config a run's checkpoints were written with. A resumed run
may change only `RESUMABLE_CHANGES` (and the selection keys, `SELECTION_PREFIXES`);
`check_resumable` names every other changed key, and `rnn_jax.train.restore.restore_model`
applies the same comparison (`run_changes`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import ml_collections

from rnn_jax.train.config import ConfigError
from rnn_jax.train.config_keys import changed_keys, flat_config, flatten

# Keys a resumed run may change: how long it runs and how often it logs, evaluates and saves.
# Anything else (model, data, optimiser, seeds, batch size) changes what the checkpoints hold
# or mean, so resuming with it changed is refused (`check_resumable`).
RESUMABLE_CHANGES = (
    "malloc",
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.max_to_keep",
    "train.patience",
    # Only the state's shardings (orbax restores onto the new ones; `restore_model` ignores it).
    "train.shard_params",
)

# Key prefixes that only select what a run does, never what one run computes: a grid
# experiment's `grid.*` axes pick its points (each point's name carries its own values).
# Resuming may change them, and `experiments.grid` leaves them out of a point's record.
SELECTION_PREFIXES = ("grid.",)


def run_changes(saved: dict, new: dict, saved_path: pathlib.Path) -> list[str]:
    """`'key: stored in saved_path, now new'` for every key of two flat configs (`flatten`)
    that differs outside `RESUMABLE_CHANGES` and `SELECTION_PREFIXES`: the changes that make
    a run directory's checkpoints another run's (`check_resumable`, `restore_model`)."""
    return [
        f"{key}: {saved.get(key, '<absent>')!r} in {saved_path}, now {new.get(key, '<absent>')!r}"
        for key in changed_keys(saved, new)
        if key not in RESUMABLE_CHANGES and not key.startswith(SELECTION_PREFIXES)
    ]


def read_json_object(path: str | pathlib.Path) -> dict[str, Any]:
    """The JSON object in the file at `path` (a run's `config.json`).

    Raises:
      OSError: when the file cannot be read.
      ValueError: when it is not JSON, or JSON that is not an object (`null`, a list: it
        failed later as an AttributeError traceback from `.items()`).
    """
    value = json.loads(pathlib.Path(path).read_text())
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    return value


def checkpointed_config(workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """The flat config (`flatten`) that `workdir`'s checkpoints were written with: its
    `config.json`, or None when the directory has no complete checkpoint or no config.json
    (nothing to resume). Orbax writes a checkpoint to `<step>.orbax-checkpoint-tmp-<time>`
    and renames it to `<step>` when complete: a run killed during its first save left only
    the temporary one, which a resumed run ignores (it starts from step 0).

    Raises:
      ConfigError: when that config.json cannot be read.
    """
    workdir = pathlib.Path(workdir)
    saved_path = workdir / "config.json"
    checkpoints = workdir / "checkpoints"
    complete = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    if not (complete and saved_path.is_file()):
        return None
    try:
        return flatten(read_json_object(saved_path))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{saved_path}: cannot read the config this run directory's checkpoints were "
            f"written with ({error}); use a new --workdir"
        ) from None


def check_resumable(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run directory whose checkpoints were written under another config.

    A run resumes from `workdir/checkpoints` when it exists; the config it was written with is
    `workdir/config.json`. Keys outside `RESUMABLE_CHANGES` and `SELECTION_PREFIXES` must be
    unchanged: a different model fails in orbax with a shape error only after `config.json`
    has been overwritten (so the directory no longer says what its checkpoints are), and a
    different optimiser, data or seed would resume silently into a run that is neither.
    Nothing is checked for a directory without a complete checkpoint (`checkpointed_config`).

    Raises:
      ConfigError: naming every changed key with its stored and new value.
    """
    saved = checkpointed_config(workdir)
    if saved is None:
        return
    saved_path = pathlib.Path(workdir) / "config.json"
    new = flat_config(config)
    changed = run_changes(saved, new, saved_path)
    if saved.get("schedule.name") == "cosine" and "train.num_steps" in changed_keys(saved, new):
        # the cosine schedule's length is train.num_steps: the rate would jump at the resume
        changed.append(
            f"train.num_steps: {saved['train.num_steps']!r} in {saved_path}, now "
            f"{new.get('train.num_steps')!r} (schedule.name='cosine' decays over "
            "train.num_steps, so the learning rate would jump at the resumed step)"
        )
    if changed:
        raise ConfigError(
            f"--workdir={workdir} holds checkpoints written with another config; resuming "
            "would mix two runs. Changed keys (only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume):\n  "
            + "\n  ".join(changed)
            + "\nUse a new --workdir, or restore these values to resume."
        )
