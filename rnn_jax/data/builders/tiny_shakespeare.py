"""Tiny Shakespeare (Karpathy's char-rnn `input.txt`), one example per split.

Split (no official one exists): characters `[0, 90%)` train, `[90%, 95%)` valid,
`[95%, 100%)` test, cut at `int(0.9 n)` and `int(0.95 n)` of the n = 1,115,394 characters:
1,003,854 / 55,770 / 55,770. The training part is char-rnn's and nanoGPT's 90%; their 10%
validation is halved to keep an untouched test set. The TFDS catalog's tiny_shakespeare
uses the same cut points. Example: `{"text": the split's characters}`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

from rnn_jax.data.builders.base import CorpusBuilder
from rnn_jax.data.corpora import read_tiny_shakespeare

_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


class TinyShakespeare(CorpusBuilder, skip_registration=True):
    """Tiny Shakespeare, 90/5/5 character split."""

    CORPUS = "tiny_shakespeare"
    URLS = {"input.txt": (_URL, None)}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="https://github.com/karpathy/char-rnn",
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, paths: list[pathlib.Path]) -> Iterator:
        yield 0, {"text": read_tiny_shakespeare(paths[0])[split]}
