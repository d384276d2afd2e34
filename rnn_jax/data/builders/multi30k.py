"""Multi30k task 1, English-German (Elliott et al. 2016): 29,000 / 1,014 / 1,000 pairs.

One example per line pair, in file order: `{"en": ..., "de": ...}` (raw, untokenised text).
Splits train / valid / test = `{train, val, test}.{en,de}`, where test is test_2016_flickr.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

from rnn_jax.data.builders.base import CorpusBuilder
from rnn_jax.data.readers import read_parallel

_BASE = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
_SOURCE_NAMES = {"train": "train", "val": "val", "test": "test_2016_flickr"}


class Multi30k(CorpusBuilder, skip_registration=True):
    """Multi30k task 1 (en-de), raw text."""

    CORPUS = "multi30k"
    URLS = {
        f"{ours}.{lang}": (f"{_BASE}{theirs}.{lang}.gz", None)
        for ours, theirs in _SOURCE_NAMES.items()
        for lang in ("en", "de")
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.Translation(languages=["en", "de"]),
            supervised_keys=("en", "de"),
            homepage="https://github.com/multi30k/dataset",
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, paths: list[pathlib.Path]) -> Iterator:
        # Character level: joining the characters gives back each line exactly.
        for index, pair in enumerate(read_parallel(paths[0], paths[1], level="char")):
            yield index, {"en": "".join(pair["source"]), "de": "".join(pair["target"])}
