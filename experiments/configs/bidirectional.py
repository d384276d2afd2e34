"""Bidirectional vs unidirectional taggers at equal size (seed Q6; softmax vs CRF, Q14).

Task and model: `experiments.sequence_labelling` (`Tagger`: word embeddings -> LSTM ->
softmax or CRF head) on UD English-EWT UPOS. One point per `grid.points` entry,
`<direction>-<head>`: direction `forward` (left to right), `backward` (the same LSTM fed
every sentence reversed: right to left) or `bi` (BiLSTM, concatenated states); head
`softmax` or `crf`. `model.hidden_size` is the BiLSTM's width per direction; every other
point gets the width whose parameter count outside the embeddings (LSTM, output layer, CRF)
is closest to bi-softmax's, within `match.tolerance` (relative). `model.bidirectional` and
`model.head` are set by each point; the values below are bi-softmax's.

Command:
    python -m experiments.bidirectional --workdir=runs/bidirectional \
        --config=experiments/configs/bidirectional.py:quick

Variants:
- smoke: UD EWT (real data: `data.root`), embeddings 16, BiLSTM 16 (unidirectional 26 or,
  with a CRF, 24), 3 points (forward-softmax, forward-crf, bi-softmax), 2 seeds, 12 steps of
  batch 16, the first 64 valid and test sentences, one padded width; seconds per point
  (mostly compiling), for tests: checks the pipeline, not accuracy.
- quick: sequence_labelling's quick model (embeddings 64, random init, vocabulary: the 9,873
  training words seen twice or more, <pad> and <unk>: 9,875 entries, dropout 0.3, Adam 3e-3,
  batch 32) with BiLSTM 64 per direction (68,882 parameters outside the 632,000-parameter
  word embedding; forward/backward LSTM 101: 69,304 (+0.6%); forward LSTM-CRF 100: 68,578
  (−0.4%); BiLSTM-CRF 64: 69,242 (+0.5%)); 5 points: forward-softmax, backward-softmax,
  forward-crf, bi-softmax, bi-crf (backward-crf, the mirror of forward-crf, is `full`'s);
  450 steps (~1.1 epochs of 12,544 sentences), one evaluation at the end, 3 seeds (vmapped);
  the whole valid and test splits. Measured on the project's 2-vCPU machine with another
  job's tests using part of it: 3.2 minutes wall (306 CPU-seconds), points of 29-45 s. Test
  accuracy: forward 0.878, backward 0.888, forward-CRF 0.891, BiLSTM 0.901, BiLSTM-CRF 0.902
  (experiments/README.md).
- full: Lample et al. (2016)'s LSTM-CRF settings as sequence_labelling's `full` uses them
  (word embeddings 100, char embeddings 25 + char BiLSTM 25, BiLSTM 100 per direction,
  dropout 0.5, training singletons -> <unk> with p 0.5, SGD 0.1 on each sentence's summed
  NLL, batch 10, clip 5) on UD EWT instead of CoNLL NER: 50 epochs (62,700 steps), the best
  valid accuracy of one evaluation per epoch, all 6 points, 5 seeds. For accelerators; not
  run (runtime not measured).

Sources: bidirectional RNNs, Schuster & Paliwal 1997; BiLSTM taggers, Graves & Schmidhuber
2005, Huang, Xu & Yu 2015 ("Bidirectional LSTM-CRF models for sequence tagging": LSTM,
BiLSTM, CRF, LSTM-CRF and BiLSTM-CRF on POS, chunking and NER); Plank, Søgaard & Goldberg
2016 (BiLSTM POS tagging on UD); Lample et al. 2016 (LSTM-CRF).
"""

import ml_collections

from experiments.configs import sequence_labelling as sl_configs
from rnn_jax.train.config import select_variant

POINTS = "forward-softmax,backward-softmax,forward-crf,bi-softmax,bi-crf"
UD_SENTENCES = 12_544  # UD English-EWT training sentences


def _with_grid(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the grid, the matching tolerance and the direction switch to a tagging config."""
    config.grid = ml_collections.ConfigDict()
    config.grid.points = POINTS

    config.match = ml_collections.ConfigDict()
    # Relative difference allowed between a point's parameters outside the embeddings and
    # bi-softmax's; a width step of a 100-unit LSTM is ~1.5% of that count.
    config.match.tolerance = 0.03

    config.data.dataset = "ud_en_ewt"
    config.data.reverse = False  # set per point: True feeds each sentence right to left
    config.data.eval_sentences = 0  # the first N valid and test sentences; 0: all
    config.model.kind = "rnn"
    config.model.cell = "lstm"
    config.model.bidirectional = True  # set per point
    config.model.head = "softmax"  # set per point
    config.train.best_metric = "valid_accuracy"
    config.train.best_mode = "max"
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _with_grid(sl_configs.get_config("quick"))
    config.grid.points = "forward-softmax,forward-crf,bi-softmax"  # both heads, both kinds
    config.num_seeds = 2
    config.model.embed_size = 16
    config.model.hidden_size = 16
    config.match.tolerance = 0.05  # tiny models: one unit is ~3% of the count
    config.data.eval_sentences = 64
    config.data.eval_batch_size = 32
    # One padded width (the longest training sentence has 159 tokens): one training and one
    # evaluation program to compile per point, which is most of a point's time here.
    config.data.time_multiple = 160
    config.train.num_steps = 12
    config.train.batch_size = 16
    config.train.log_every = 6
    config.train.eval_every = 12
    config.train.checkpoint_every = 12
    config.train.keep_best = False
    return config


def _quick() -> ml_collections.ConfigDict:
    # sequence_labelling's quick model (BiLSTM 64, embeddings 64, dropout 0.3, Adam 3e-3,
    # batch 32, 3 seeds) at 450 steps instead of 1,000, so that 5 points fit into ~3 minutes
    # of the main job (600 steps took 3.7 minutes with another process on the machine).
    # Time is padded to multiples of 32 instead of 16: 5 training shapes to compile instead
    # of 10 (under load, a 600-step point took 80 s instead of 98 s; multiples of 64 or 160
    # were slower: padding cost more than compiling saved). Batch 64 for half the steps was
    # no faster: a step at 64 x 3 seeds cost 2.3-3x one at 32 (measured at 32 time steps).
    config = _with_grid(sl_configs.get_config("quick"))
    config.train.num_steps = 450
    config.data.time_multiple = 32
    config.train.log_every = 50
    config.train.eval_every = 450  # one evaluation: the final one
    config.train.checkpoint_every = 450
    config.train.keep_best = False  # with one evaluation the best is the last
    return config


def _full() -> ml_collections.ConfigDict:
    config = _with_grid(sl_configs.get_config("full"))
    config.grid.points = ",".join(
        f"{d}-{h}" for d in ("forward", "backward", "bi") for h in ("softmax", "crf")
    )
    config.num_seeds = 5
    steps_per_epoch = UD_SENTENCES // config.train.batch_size
    config.train.num_steps = 50 * steps_per_epoch
    config.train.eval_every = steps_per_epoch
    config.train.checkpoint_every = steps_per_epoch
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("bidirectional", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per point (each sizes itself against bi-softmax, so any subset works)."""
    config = get_config(variant)  # unknown variant -> the same clear error
    return [{"grid.points": point} for point in config.grid.points.split(",")]
