"""Stanford Sentiment Treebank (Socher et al. 2013), from the PTB-tree files.

Configs: `sst5` (root label 0-4; 8,544 / 1,101 / 2,210 sentences) and `sst2` (neutral roots
dropped, 0-1 -> 0 negative, 3-4 -> 1 positive; 6,920 / 872 / 1,821). Example:
`{"sentence": leaves joined by " ", "label": int, "tree": the PTB-tree line}`.
Splits train / valid / test = `{train,dev,test}.txt` of trainDevTestTrees_PTB.zip.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

from rnn_jax.data.builders.base import CorpusBuilder
from rnn_jax.data.data_files import DataFormatError, read_lines
from rnn_jax.data.readers import parse_sst_tree

_URL = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"


class Sst(CorpusBuilder, skip_registration=True):
    """SST-5 and SST-2 (sentence level, root labels)."""

    CORPUS = "sst"
    URLS = {f"{s}.txt": (_URL, f"trees/{s}.txt") for s in ("train", "dev", "test")}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="sst5", description="Root labels 0-4."),
        tfds.core.BuilderConfig(name="sst2", description="Neutral dropped; 0-1 -> 0, 3-4 -> 1."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(
                        num_classes=5 if self.builder_config.name == "sst5" else 2
                    ),
                    "tree": tfds.features.Text(),
                }
            ),
            supervised_keys=("sentence", "label"),
            homepage="https://nlp.stanford.edu/sentiment/",
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, paths: list[pathlib.Path]) -> Iterator:
        binary = self.builder_config.name == "sst2"
        for number, line in read_lines(paths[0]):
            try:
                label, leaves = parse_sst_tree(line)
            except ValueError as e:
                raise DataFormatError(f"{paths[0]}:{number}: {e}") from None
            if binary and label == 2:
                continue
            yield (
                number,
                {
                    "sentence": " ".join(leaves),
                    "label": int(label > 2) if binary else label,
                    "tree": line,
                },
            )
