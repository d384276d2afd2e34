"""What a researcher checks first about a dataset, as JSON.

    python -m rnn_jax.data.stats --dataset=ptb
    python -m rnn_jax.data.stats --dataset=conll:/data/train.txt
    python -m rnn_jax.data.stats --dataset=glue/sst2 --data_dir=~/tensorflow_datasets
    python -m rnn_jax.data.stats --dataset=multi30k --manual_dir=/data/multi30k

prints `{"dataset", "vocab_size", "num_specials", "splits": {split: {"examples", "tokens",
"oov_rate"}}}`. `vocab_size` counts the distinct training tokens (PTB: 10,000 with `<eos>`);
`num_specials` the specials the task's pipeline adds on top (see `registry.TASK_SPECIALS`);
`oov_rate` is the fraction of a split's tokens unseen in training. Translation datasets
report the source side there and add `target_vocab_size`, `target_tokens`, `target_oov_rate`.
A user's file (`kind:path`) is reported as split `train`. Bad input (unknown name, missing
or malformed file, empty split) prints `error: ...` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rnn_jax.data.registry import TextDataset, load_dataset
from rnn_jax.exits import REFUSED


def dataset_stats(dataset: TextDataset) -> dict:
    """The statistics dict `main` prints."""
    vocab = dataset.vocab()
    stats = {
        "dataset": dataset.name,
        "vocab_size": len(vocab) - vocab.num_specials,
        "num_specials": vocab.num_specials,
        "splits": {},
    }
    target_vocab = dataset.vocab("target") if dataset.task == "translation" else None
    if target_vocab is not None:
        stats["target_vocab_size"] = len(target_vocab) - target_vocab.num_specials
    for split in dataset.splits:
        tokens = dataset.token_lists(split)
        entry = {
            "examples": len(tokens),
            "tokens": sum(len(t) for t in tokens),
            "oov_rate": vocab.oov_rate(tokens),
        }
        if target_vocab is not None:
            targets = dataset.token_lists(split, "target")
            entry["target_tokens"] = sum(len(t) for t in targets)
            entry["target_oov_rate"] = target_vocab.oov_rate(targets)
        stats["splits"][split] = entry
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnn_jax.data.stats", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", required=True, help="a dataset name or kind:path")
    parser.add_argument("--data_root", default=None, help="root of the project corpora")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (catalog datasets)")
    parser.add_argument("--manual_dir", default=None, help="folder holding a corpus's files")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.dataset, args.data_root, args.data_dir, args.manual_dir)
        stats = dataset_stats(dataset)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return REFUSED
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
