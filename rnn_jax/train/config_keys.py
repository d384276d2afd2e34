"""Configs as dotted keys: look one up (`"train.num_steps"`), flatten a config to
`{dotted key: value}` (the form a run's `config.json` reads as), and compare two flat configs
key by key (`ADDED_KEYS` lets a config from before a key existed compare as having it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ml_collections


def lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
    """The value (or section) at the dotted key `dotted` of `config` (`"train.num_steps"`).

    Raises:
      KeyError: `dotted`, when `config` has no such field.
    """
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train.num_steps": 100, ...}` from nested mappings (a config's JSON form)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`config` as the flat `{"train.num_steps": 100, ...}` that a run's `config.json` reads as
    (`flatten` of its JSON form): what stored and planned configs are compared by."""
    return flatten(json.loads(config.to_json_best_effort()))


# Keys added to the base config after runs may have been written with it, each with the
# value under which the code behaves as it did before the key existed: a stored config that
# lacks the key was written by that behaviour, so it compares as having this value (a run
# directory or a grid point from before the key neither refuses to resume nor reruns). A new
# key goes here only with the value that reproduces the older code exactly.
ADDED_KEYS: dict[str, Any] = {
    "optimizer.decay_params": "all",  # session 22; before it every parameter decayed
}


def changed_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The sorted keys whose values differ between two flattened configs: `saved` (read back
    from a run) and `new`. Absent counts as a difference, except that a key of `ADDED_KEYS`
    absent from `saved` reads as its value there when `new` has it."""
    saved = {**{k: v for k, v in ADDED_KEYS.items() if k in new}, **saved}
    return sorted(key for key in set(saved) | set(new) if saved.get(key) != new.get(key))


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`'key: <saved> then, <new> now'` for every key of `changed_keys(saved, new)`: a finished
    run's recorded config against the one planned for it now (`launch.sweep`,
    `experiments.reproduce`)."""
    return [
        f"{key}: {saved.get(key, '<absent>')!r} then, {new.get(key, '<absent>')!r} now"
        for key in changed_keys(saved, new)
    ]
