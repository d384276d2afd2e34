"""Which config variant, and which flat config, an experiment of the main job ran with.

The main job records both in W/<name>/reproduce_variant.json before an experiment starts
(`reproduce_run.run_experiment` calls `record_variant`), and `experiments.reproduce` and the
report read them back, so that a finished run of another variant, or of a config whose values
have changed since, is never reported as this run's.
"""

from __future__ import annotations

import importlib
import json
import pathlib
from typing import Any

from rnn_jax.files import write_text_atomic
from rnn_jax.train import config_keys

VARIANT_FILE = "reproduce_variant.json"  # W/<name>/: the variant and config the run started with


def variant_config(name: str, variant: str) -> dict[str, Any]:
    """The flat config (`config_keys.flat_config`) experiment `name` runs with under `variant`."""
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
    return config_keys.flat_config(config)


def record_variant(
    workdir: pathlib.Path, variant: str, config: dict[str, Any] | None = None
) -> None:
    """Notes which config variant (and, given, which flat config) runs in `workdir`, before
    it starts."""
    record = {"variant": variant, **({} if config is None else {"config": config})}
    write_text_atomic(workdir / VARIANT_FILE, json.dumps(record) + "\n")


def _record(workdir: pathlib.Path) -> dict[str, Any]:
    try:
        record = json.loads((workdir / VARIANT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def finished_variant(workdir: pathlib.Path) -> str | None:
    """The variant recorded in `workdir`; None for a run from before the record existed."""
    return _record(workdir).get("variant")


def config_changes(name: str, workdir: pathlib.Path, variant: str) -> list[str]:
    """`'key: <then> then, <now> now'` for each key whose value in the config recorded in
    `workdir` differs from `variant`'s config of experiment `name` now (`config_lib.
    config_changes`); [] when none does or no config was recorded (a run from before configs
    were). A finished run is skipped by its results.json: one whose config file, or the
    defaults it builds on, changed since (a pull that changed a `quick` variant) was reported
    as the current config's."""
    saved = _record(workdir).get("config")
    if not isinstance(saved, dict):
        return []
    return config_keys.config_changes(saved, variant_config(name, variant))
