"""Regularisation (seed question 17) and stacked RNNs at equal size (Q12) in a language model.

Task and model: `experiments.language_model` (`RNNLanguageModel`, truncated BPTT with the
state carried across batches) on a deliberately small slice of the training stream
(`data.train_tokens`), so that the unregularised model overfits within the budget; the
validation stream is cut to `data.valid_tokens` to keep the frequent evaluations cheap. Every
`train.eval_every` steps both the validation stream and the training slice are evaluated in
evaluation mode (no dropout), in bits per token: the train-valid gap on the same weights.

Q17: at `model.num_layers` x `model.hidden_size`, one run per `grid.regularizers` entry:
none; `dropout` (input, between layers, output; a fresh mask per step: Zaremba et al.);
`variational` (the same three locked over time plus recurrent dropout on h, Gal & Ghahramani);
`weight_drop` (DropConnect on W_hh, AWD-LSTM); `weight_decay` (AdamW's decoupled decay);
`l2` (coupled L2, the gradient of wd/2 ‖w‖² added before Adam). Early stopping is read from
the unregularised run: its best validation evaluation (the runtime's `best_step`) against its
last. Q12: `grid.depths` layers at the Q17 model's parameter count (hidden size matched
within `depth.tolerance`; embedding size fixed), without and with `grid.depth_regularizers`.

Command:
    python -m experiments.regularization --workdir=runs/regularization \
        --config=experiments/configs/regularization.py:quick

Variants:
- smoke: the synthetic Markov language of language_model's smoke (no files), 2 points
  (none and dropout, 2 layers x 16, 2 seeds; the first is also the depth grid's only point),
  10 steps; seconds, for tests.
- quick: Tiny Shakespeare characters, the first 20,000 training characters (2.0% of the
  90% split) and 16,384 validation characters; 2-layer LSTM, hidden 128, embedding 64 (243,969
  parameters, ~12 per training character); Adam 3e-3, clipped at 1; batch 16 x 64, 500
  steps (~26 epochs of the slice), evaluation every 50 steps; 6 Q17 points, depths 1 and 2
  without and with variational dropout: 8 points, 2 seeds (vmapped). 4.5 minutes measured
  on 2 idle CPU cores (commit b7ec7c8; 5.3 with evaluations every 25 steps). Measured: none
  best valid 3.27 bits/char at step 200, 3.73 at step 500; dropout, variational and weight
  drop 3.22 at best and at most 0.06 above it at the end; AdamW decay and L2 still overfit;
  1 x 207 vs 2 x 128 within seed noise (experiments/README.md).
- full: PTB words (Zaremba et al. 2014 medium settings from language_model's full: 2 x 650,
  SGD lr 1 with its decay, clip 5, batch 20 x 35, 39 epochs), the whole training stream,
  rates 0.5 (Zaremba) / 0.2 recurrent / 0.5 weight drop, L2 1e-5 (no AdamW point: under
  SGD decoupled decay is L2 scaled by the rate), depths 1-3, 3 seeds; for accelerators
  (runtime not measured).

Sources: dropout, Srivastava et al. 2014 ("Dropout: a simple way to prevent neural networks
from overfitting"); dropout on non-recurrent connections of stacked LSTMs, Zaremba, Sutskever &
Vinyals 2014; variational/recurrent dropout, Gal & Ghahramani 2016; weight drop, Merity,
Keskar & Socher 2018 (AWD-LSTM); L2 weight decay, Krogh & Hertz 1992; decoupled weight decay,
Loshchilov & Hutter 2019; early stopping, Prechelt 1998 ("Early stopping - but when?"); deep
(stacked) RNNs, Graves 2013, Pascanu et al. 2014 ("How to construct deep recurrent neural
networks").
"""

import ml_collections

from experiments.configs import language_model as lm_configs
from rnn_jax.train.config import select_variant

REGULARIZERS = "none,dropout,variational,weight_drop,weight_decay,l2"


def _with_grid(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the grid, the regulariser strengths and the data slice to an LM config."""
    config.grid = ml_collections.ConfigDict()
    config.grid.regularizers = REGULARIZERS
    config.grid.depths = "1,2,3"
    # The best regulariser of the calibration runs (variational), and none.
    config.grid.depth_regularizers = "none,variational"

    config.reg = ml_collections.ConfigDict()
    config.reg.dropout = 0.3  # input / between / output (both dropout forms)
    config.reg.recurrent_dropout = 0.2  # on h before W_hh (variational only)
    config.reg.weight_drop = 0.3
    config.reg.decoupled_weight_decay = 0.1  # AdamW: w -= lr * 0.1 * w per step
    config.reg.l2 = 1e-4  # coupled: g += 1e-4 * w before Adam

    config.depth = ml_collections.ConfigDict()
    config.depth.tolerance = 0.03  # relative parameter-count difference allowed across depths

    config.data.train_tokens = 20_000  # 0: the whole training split
    config.data.valid_tokens = 16_384
    config.train.keep_best = False  # the best evaluation is read from the curve
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _with_grid(lm_configs.get_config("smoke"))
    config.num_seeds = 2
    config.grid.regularizers = "none,dropout"
    config.grid.depths = "2"  # the depth grid's matching is tested without training
    config.grid.depth_regularizers = "none"
    config.model.num_layers = 2
    config.model.hidden_size = 16
    config.model.embed_size = 8
    config.depth.tolerance = 0.1  # tiny models: widths are coarse steps in parameter count
    config.data.train_tokens = 2_000
    config.data.valid_tokens = 1_024
    config.train.num_steps = 10
    config.train.batch_size = 8
    config.train.log_every = 5
    config.train.eval_every = 5
    config.train.checkpoint_every = 10
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _with_grid(lm_configs.get_config("quick"))
    config.num_seeds = 2
    config.model.num_layers = 2
    config.model.hidden_size = 128
    config.model.embed_size = 64
    config.model.dropout_output = 0.0  # language_model's quick uses 0.1: here "none" is none
    config.data.bptt_length = 64
    config.data.eval_batch_size = 16
    config.train.batch_size = 16
    config.grid.depths = "1,2"  # 3 layers (full) would take the run past its 5 minutes
    # Calibrated (20,000 characters, 2 x 128): unregularised, validation is lowest near step
    # 200-250 and rises by ~0.5 bits by step 500; variational dropout is still flat there.
    config.train.num_steps = 500
    config.train.log_every = 50
    # Each evaluation (valid + the slice, 35 batches) costs ~12 training steps: every 50 keeps
    # the run under 5 minutes and early stopping's resolution at 50 steps.
    config.train.eval_every = 50
    config.train.checkpoint_every = 500
    config.optimizer.learning_rate = 3e-3
    config.schedule.name = "constant"  # a decaying rate would itself damp the overfitting
    config.schedule.warmup_steps = 0
    return config


def _full() -> ml_collections.ConfigDict:
    config = _with_grid(lm_configs.get_config("full"))
    config.num_seeds = 3
    for where in ("input", "between", "output"):  # "none" must be none
        config.model[f"dropout_{where}"] = 0.0
    config.model.embed_size = 650
    config.reg.dropout = 0.5  # Zaremba et al. medium
    config.reg.weight_drop = 0.5  # AWD-LSTM's rate on W_hh
    # Under plain SGD decoupled decay is coupled L2 scaled by the rate, and AdamW at
    # Zaremba's lr 1 would diverge: only `l2`.
    config.grid.regularizers = "none,dropout,variational,weight_drop,l2"
    config.reg.l2 = 1e-5
    config.data.train_tokens = 0
    config.data.valid_tokens = 0
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("regularization", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per Q17 regulariser, and one per (depth, regulariser) of Q12 at the depths
    other than `model.num_layers` (those points are Q17's)."""
    config = get_config(variant)  # unknown variant -> the same clear error
    q17 = [{"grid.regularizers": r, "grid.depths": ""} for r in config.grid.regularizers.split(",")]
    return q17 + [
        {"grid.regularizers": "", "grid.depths": d, "grid.depth_regularizers": r}
        for d in config.grid.depths.split(",")
        if int(d) != config.model.num_layers
        for r in config.grid.depth_regularizers.split(",")
    ]
