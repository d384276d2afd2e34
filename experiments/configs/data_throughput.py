"""Data throughput beside LM training speed (issue 4: batches are made faster than consumed).

    python -m experiments.data_throughput --workdir=runs/data_throughput \
        --config=experiments/configs/data_throughput.py:<smoke|quick|full>

The LM part is experiments/configs/language_model.py's setup (quick: its `full` PTB setup
with the small model); rounds of `bench.train_steps` runtime train steps alternate with
rounds of `bench.data_batches` batches of every data path.

smoke  Markov language, 2x32 LSTM, batch 16 x 16 (no files needed); 3 rounds of 10 steps.
       ~15 s on 2 CPU cores, mostly compilation. Used by the tests.
quick  PTB words with Zaremba et al.'s "small" model (2x200 LSTM, no dropout, init 0.1, SGD
       lr 1, clip 5; TensorFlow PTB tutorial SmallConfig) but the medium's batch 20 x 35
       (SmallConfig unrolls 20 steps), 3 rounds of 10 steps, plus CoNLL-2003 sentence batches
       (bucketed, padded). ~1 min on 2 CPU cores. Expected: every data path
       makes batches >= 100x faster than the train step consumes them.
full   PTB "medium" (2x650, dropout 0.5, language_model.py:full), 3 rounds of 100 steps,
       for a GPU, where the train step is fastest and the margin smallest.

Sweep (`get_sweep`, for launch.sweep): the LM's batch size x hidden size, which set how fast
the train step consumes batches (smoke: 2x2 tiny points).
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import language_model
from rnn_jax.train.config import select_variant


def _bench(variant: str) -> ml_collections.ConfigDict:
    config = language_model.get_config(variant)
    config.bench = ml_collections.ConfigDict()
    config.bench.rounds = 3  # train and data rounds, alternating
    config.bench.data_batches = 200  # batches per data path per round
    config.bench.train_steps = 10  # train steps per round
    # Sentence-level batching (registry name), e.g. conll2003; None skips that path.
    config.bench.sentence_dataset = config_dict.placeholder(str)
    config.bench.sentence_batch_size = 32
    config.bench.bucket_pool = 50  # BatchIterator length buckets (batches per sorted pool)
    config.bench.copy_blank_length = 100  # Arjovsky et al. copy task, T = 100
    config.bench.synthetic_batch_size = 128
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _bench("smoke")
    config.bench.data_batches = 50
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _bench("full")
    # Zaremba et al. (2014) small / TF PTB tutorial SmallConfig: 2x200, no dropout, init 0.1.
    config.model.hidden_size = 200
    config.model.dropout_input = 0.0
    config.model.dropout_between = 0.0
    config.model.dropout_output = 0.0
    config.model.init_scale = 0.1
    config.bench.train_steps = 10
    config.bench.sentence_dataset = "conll2003"
    return config


def _full() -> ml_collections.ConfigDict:
    config = _bench("full")
    config.bench.train_steps = 100
    config.bench.data_batches = 1000
    config.bench.sentence_dataset = "conll2003"
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return select_variant("data_throughput", variant, VARIANTS)


def get_sweep(variant: str | None = None) -> dict[str, list]:
    """Grid for `launch.sweep`: LM batch size x hidden size (how fast batches are consumed)."""
    select_variant("data_throughput", variant, VARIANTS)  # the same error for a bad variant
    if variant == "smoke":
        return {"train.batch_size": [8, 16], "model.hidden_size": [16, 32]}
    return {"train.batch_size": [20, 64], "model.hidden_size": [200, 650]}
