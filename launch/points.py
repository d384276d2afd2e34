"""A sweep's points: what a config file's `get_sweep(variant)` returns, as a list of distinct
override dicts `{dotted_key: value}`, and when two points (or two runs' overrides) are the same
setting.

A grid `{key: [values]}` is expanded to its Cartesian product; a list of dicts is taken as it
is. Values become plain Python values (NumPy scalars too), and two points that are one setting
(another key order, 1 vs 1.0) are refused: `launch.report`, which groups runs by `setting_key`,
would pool them as two seeds. Imports nothing of the library, so the report loads none of it
for that key.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def expand_sweep(sweep: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """A grid `{key: [values]}` (Cartesian product, keys in order) or a list of override dicts
    -> a list of override dicts. An empty grid (the product of no axes) is one run with no
    overrides; an empty list (no runs) is refused, as are a point that is not a dict and a key
    that is not a string."""
    if isinstance(sweep, Mapping):
        keys = list(sweep)
        for key in keys:
            values = sweep[key]
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ValueError(
                    f"get_sweep: grid key {key!r} maps to {values!r}; expected a non-empty list"
                )
        points = [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())
        ]
    elif isinstance(sweep, Sequence) and not isinstance(sweep, str | bytes):
        if not sweep:
            # It ran one run of the config as it is, as if the sweep had asked for that.
            raise ValueError(
                "get_sweep returned an empty list: no runs (return [{}] for one run of the "
                "config as it is)"
            )
        for index, point in enumerate(sweep):
            if not isinstance(point, Mapping):
                raise ValueError(
                    f"get_sweep: point {index} is {type(point).__name__} {point!r}, not a dict "
                    "of overrides {dotted_key: value}"
                )
        points = [dict(point) for point in sweep]
    else:
        raise ValueError(
            f"get_sweep returned {type(sweep).__name__}; "
            "expected a dict of lists or a list of dicts"
        )
    for index, point in enumerate(points):
        for key in point:
            if not isinstance(key, str):  # was an AttributeError traceback (`key.split`)
                raise ValueError(
                    f"get_sweep: point {index} has key {key!r} ({type(key).__name__}); "
                    "keys are dotted config field names (str)"
                )
    points = [{key: _plain(value) for key, value in point.items()} for point in points]
    seen: dict[tuple, int] = {}
    for index, point in enumerate(points):
        # The same combination in another key order (or 1 vs 1.0, also as two values of one
        # grid key, which run_name spells differently) is the same run twice, which the report
        # would pool as two seeds or show as two settings.
        key = setting_key(point)
        if key in seen:
            raise ValueError(
                f"get_sweep: points {seen[key]} and {index} are the same overrides {point}"
            )
        seen[key] = index
    return points or [{}]


def _plain(value: Any) -> Any:
    """Numpy scalars (a grid written as `list(np.logspace(...))`) as Python numbers, also
    inside tuples and lists: their repr (`np.float64(0.001)`) was passed as the flag value,
    which every run then failed to parse, and named the run `learning_rate=np.float64_0.001_`;
    an `np.int64` was refused for an int field."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    return value


def setting_key(value: Any) -> Any:
    """A hashable form of an override value (or a dict of them) in which equal numbers are
    equal, also inside lists and dicts (1 == 1.0, [1, 2] == [1.0, 2.0]), but True is not 1:
    how `get_sweep` finds duplicate points and `launch.report` groups runs."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", "nan" if value != value else value)
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), setting_key(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("sequence", tuple(setting_key(v) for v in value))
    return ("text", json.dumps(value, sort_keys=True, default=str))
