"""Many-to-one sentiment classification (seed question 18): variants `smoke`, `quick`, `full`.

    python -m experiments.sentiment --workdir=runs/sst_smoke \
        --config=experiments/configs/sentiment.py:smoke

smoke  SST-2 (`data.root`/sst; root labels, neutral dropped: 6,920 / 872 / 1,821 sentences),
       BiLSTM 16 with last-state pooling, Adam 1e-2, 30 steps of batch 16. Under a minute on
       2 CPU cores; checks the pipeline end to end, not accuracy.
quick  One point of the sweep on SST-2: BiLSTM 64 with attention pooling, random 64-d
       embeddings, dropout 0.3, Adam 2e-3, batch 32, 1,000 steps (~4.6 epochs), 3 seeds
       (vmapped), best-dev-accuracy checkpoint. Measured: 156 CPU-seconds, i.e. ~1.5
       minutes wall on 2 idle CPU cores; dev accuracy 0.777 ± 0.011, test 0.784 ± 0.005
       (majority class 0.50; sentence-level labels only, no pretrained embeddings; Tai et
       al. 2015 report 84.9 LSTM / 87.5 BiLSTM with phrase-level labels and GloVe,
       published-results.md §9 [U]).
full   SST-2 BiLSTM in the style of Tai et al. (2015): 300-d embeddings (random init here: no
       GloVe offline), BiLSTM 168 per direction (their 2-layer BiLSTM sizes are [U]), dropout
       0.5, Adam 1e-3 (their AdaGrad 0.05 is [U]), batch 25, 20 epochs of 6,920 sentences
       (276 full batches each, 20 random sentences left out: 5,520 steps), best dev
       accuracy checkpoint. Words seen once in training are <unk> (min_freq 2, as quick),
       so that <unk> is trained: with min_freq 1 it never occurs in training and the 6.7%
       of test tokens unseen there all get its initial random vector. (Tai et al.'s code,
       stanfordnlp/treelstm, has no <unk>: its vocabulary is every train/dev/test word,
       with GloVe vectors, which we do not have.) Tens of minutes on 2 CPU cores.
"""

import ml_collections
from ml_collections import config_dict

from rnn_jax.train.config import base_config, select_variant

SST2_TRAIN = 6_920


def _common() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.kind = "rnn"  # rnn | transformer (baseline)
    config.model.cell = "lstm"
    config.model.pooling = "last"  # last | mean | max | attention
    config.model.embed_size = 16
    config.model.hidden_size = 16
    config.model.num_layers = 1
    config.model.bidirectional = True
    config.model.dropout_rate = 0.0
    config.model.num_heads = 4  # transformer only
    config.model.max_length = 128  # transformer positions (longest SST sentence: 56 tokens)

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "sst2"  # sst2 | sst (5 classes)
    config.data.root = config_dict.placeholder(str)  # None: $RNN_JAX_DATA or ../shared/data
    config.data.min_freq = 1
    config.data.time_multiple = 16
    config.data.eval_batch_size = 256
    config.optimizer.clip_global_norm = 5.0
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _common()
    config.train.num_steps = 30
    config.train.batch_size = 16
    config.train.log_every = 10
    config.train.eval_every = 30
    config.train.checkpoint_every = 30
    config.optimizer.learning_rate = 1e-2
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _common()
    config.data.min_freq = 2
    config.model.pooling = "attention"
    config.model.embed_size = 64
    config.model.hidden_size = 64
    config.model.dropout_rate = 0.3
    config.num_seeds = 3
    config.train.num_steps = 1_000
    config.train.batch_size = 32
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.train.best_metric = "valid_accuracy"
    config.train.best_mode = "max"
    config.optimizer.learning_rate = 2e-3
    return config


def _full() -> ml_collections.ConfigDict:
    config = _common()
    config.data.min_freq = 2  # so that <unk> is trained (docstring)
    config.model.embed_size = 300
    config.model.hidden_size = 168
    config.model.dropout_rate = 0.5
    config.train.batch_size = 25
    steps_per_epoch = SST2_TRAIN // 25
    config.train.num_steps = 20 * steps_per_epoch
    config.train.log_every = 50
    config.train.eval_every = steps_per_epoch
    config.train.checkpoint_every = steps_per_epoch
    config.train.best_metric = "valid_accuracy"
    config.train.best_mode = "max"
    config.optimizer.learning_rate = 1e-3
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return select_variant("sentiment", variant, VARIANTS)


def get_sweep(variant: str | None = None) -> list[dict]:
    """Pooling x direction for the RNN, plus the transformer baseline (mean and attention)."""
    select_variant("sentiment", variant, VARIANTS)
    points = [
        {"model.pooling": pooling, "model.bidirectional": bidirectional}
        for pooling in ("last", "mean", "max", "attention")
        for bidirectional in (False, True)
    ]
    points += [{"model.kind": "transformer", "model.pooling": p} for p in ("mean", "attention")]
    return points
