"""How much of an RNN's accuracy is context, and how much word order? (seed Q2)

Two real tasks, three points each, `<task>-<order>`:
  tag-*  UD English-EWT UPOS tagging (`experiments.sequence_labelling`'s task and `Tagger`,
         with `experiments.bidirectional`'s token classes); the top-level `data` section.
  sst-*  SST-2 sentence sentiment (`experiments.sentiment`'s task and `Classifier`, mean
         pooling); the `sst` section holds what differs from the tagging points.
and order
  bag       `SequenceEncoder(kind="bag")`: embedding -> Dense(model.bag_hidden_size) -> tanh
            per token, no context and no order (tagging: a per-word classifier; SST: a deep
            averaging network, Iyyer et al. 2015)
  shuffled  the BiLSTM below, trained and evaluated on sentences whose words are permuted
            (one fixed permutation per sentence; tags move with their words)
  ordered   the BiLSTM (`model.hidden_size` per direction) on the real order

Command:
    python -m experiments.word_order --workdir=runs/word_order \
        --config=experiments/configs/word_order.py:quick

Variants:
- smoke: embeddings 16, BiLSTM 16, bag 32; 3 points (tag-bag, tag-shuffled, sst-bag: both
  encoders, the shuffle and both tasks), 2 seeds, 12 steps of batch 16, the first 64
  valid and test UD sentences; seconds per point, for tests: the pipeline, not accuracy.
- quick: sequence_labelling's quick model (random 64-d embeddings over the training words
  seen twice or more, dropout 0.3, Adam 3e-3, batch 32) with a BiLSTM 64 per direction and a
  bag of width 128 (= the BiLSTM's output width, so the output layers are the same size);
  all 6 points, 3 seeds (vmapped), one evaluation at the end on the whole valid and test
  splits. Tagging: 450 steps (~1.1 epochs; `bidirectional`'s budget). SST-2: 400 steps
  (~1.85 epochs of 6,920 sentences), Adam 2e-3 (sentiment quick's), mean pooling.
  Measured on the project's 2-vCPU machine: 2.5 minutes wall (236 CPU-seconds), points of
  11-34 s. Test accuracy, tagging: bag 0.847, shuffled 0.850, ordered 0.901 (majority tag per
  word 0.862); SST-2: bag 0.810, shuffled 0.793, ordered 0.798 (experiments/README.md).
- full: embeddings 100, BiLSTM 100, bag 200, dropout 0.5, 5 seeds; tagging 20 epochs and SST
  20 epochs, one evaluation per epoch, the best valid accuracy's checkpoint. For
  accelerators; not run (runtime not measured).

Sources: bag of words vs order on sentence classification, Iyyer et al. 2015 (deep averaging
networks), Pham et al. 2021 and Sinha et al. 2021 (shuffled word order in NLU); BiLSTM
taggers, Plank, Søgaard & Goldberg 2016.
"""

import ml_collections

from experiments.configs import sequence_labelling as sl_configs
from rnn_jax.train.config import select_variant

POINTS = "tag-bag,tag-shuffled,tag-ordered,sst-bag,sst-shuffled,sst-ordered"
UD_SENTENCES = 12_544  # UD English-EWT training sentences
SST2_TRAIN = 6_920


def _with_grid(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tagging config (sequence_labelling's) plus the grid, the bag and the SST section."""
    config.grid = ml_collections.ConfigDict()
    config.grid.points = POINTS

    config.data.dataset = "ud_en_ewt"
    config.data.reverse = False  # bidirectional's task option; always the real direction here
    config.data.shuffle = False  # set per point: permute every sentence's words
    config.data.eval_sentences = 0  # the first N valid and test UD sentences; 0: all
    config.data.time_multiple = 32  # bidirectional's measured best for this model
    config.model.kind = "rnn"  # set per point: rnn | bag
    config.model.cell = "lstm"
    config.model.bidirectional = True
    config.model.head = "softmax"
    config.model.pooling = "mean"  # SST only: the bag's mean is a deep averaging network
    config.model.bag_hidden_size = 128  # = 2 x hidden_size: the BiLSTM's output width

    config.sst = ml_collections.ConfigDict()
    config.sst.dataset = "sst2"  # sst2 | sst (5 classes)
    config.sst.min_freq = 2  # so that <unk> is trained (sentiment quick's)
    config.sst.time_multiple = 16
    config.sst.eval_batch_size = 256
    config.sst.learning_rate = 2e-3  # sentiment quick's
    config.sst.num_steps = 400
    config.sst.eval_every = 400

    config.train.num_steps = 450
    config.train.log_every = 50
    config.train.eval_every = 450  # one evaluation: the final one
    config.train.checkpoint_every = 450
    config.train.keep_best = False  # with one evaluation the best is the last
    config.train.best_metric = "valid_accuracy"
    config.train.best_mode = "max"
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _with_grid(sl_configs.get_config("quick"))
    # Both encoders and the shuffle; the SST BiLSTM is sentiment's smoke's.
    config.grid.points = "tag-bag,tag-shuffled,sst-bag"
    config.num_seeds = 2
    config.model.embed_size = 16
    config.model.hidden_size = 16
    config.model.bag_hidden_size = 32
    config.data.eval_sentences = 64
    config.data.eval_batch_size = 32
    # One padded width each (longest sentence: UD 159 tokens, in train; SST-2 56, in test, 52
    # in train): one training and one evaluation program to compile per point.
    config.data.time_multiple = 160
    config.sst.time_multiple = 64
    config.sst.num_steps = 12
    config.sst.eval_every = 12
    config.train.num_steps = 12
    config.train.batch_size = 16
    config.train.log_every = 6
    config.train.eval_every = 12
    config.train.checkpoint_every = 12
    return config


def _quick() -> ml_collections.ConfigDict:
    return _with_grid(sl_configs.get_config("quick"))


def _full() -> ml_collections.ConfigDict:
    config = _with_grid(sl_configs.get_config("quick"))
    config.num_seeds = 5
    config.model.embed_size = 100
    config.model.hidden_size = 100
    config.model.bag_hidden_size = 200
    config.model.dropout_rate = 0.5
    config.data.time_multiple = 16
    config.optimizer.learning_rate = 1e-3
    steps_per_epoch = UD_SENTENCES // config.train.batch_size
    config.train.num_steps = 20 * steps_per_epoch
    config.train.eval_every = steps_per_epoch
    config.train.checkpoint_every = steps_per_epoch
    config.train.keep_best = True
    sst_epoch = SST2_TRAIN // config.train.batch_size
    config.sst.num_steps = 20 * sst_epoch
    config.sst.eval_every = sst_epoch
    config.sst.learning_rate = 1e-3
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("word_order", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per point (points are independent)."""
    config = get_config(variant)  # unknown variant -> the same clear error
    return [{"grid.points": point} for point in config.grid.points.split(",")]
