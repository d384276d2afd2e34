"""Truncated BPTT and gradient clipping on a delayed-recall task (seed questions 13 and 11).

Task: the echo stream (rnn_jax.data.EchoTask): i.i.d. symbols from an alphabet of K = 8;
the target at step t is the input at step t − d (delay d), scored only on t ≥ d. Chance is
accuracy 1/K, cross-entropy log K.

Q13: each sequence of T = `data.length` steps is cut into windows of k = `bptt_length`
steps, one optimiser update per window, with the state carried from window to window as a
constant (no gradient crosses a window boundary: truncated BPTT as a language model trains,
Williams & Peng 1990); k = full is one update per sequence (full BPTT). Every k sees the same
tokens (`train.num_steps` counts sequences), so small k gets T/k times more updates. Measured
per (cell, k): held-out echo accuracy, the XLA temp memory of one compiled training step and
its time per token. Prediction: for k ≤ d no (t − d, t) pair lies inside one window, so
accuracy stays at chance; for k > d a fraction (T/k)(k − d)/(T − d) of the scored pairs does
(the report's 'pairs in a window'; 4/7 at k = 2d, T = 8d).

Q11: an Elman-tanh RNN with orthogonal W_hh scaled by `clipping.recurrent_scale` (> 1: an
expanding recurrence, prone to exploding gradients), plain SGD at a high learning rate, full
BPTT over T, with and without clipping the global gradient norm at 1; measured per seed: the
largest pre-clip gradient norm, the final loss, whether it diverged (non-finite or not below
the chance cross-entropy log K at the end).

Command:
    python -m experiments.truncated_bptt --workdir=runs/truncated_bptt \
        --config=experiments/configs/truncated_bptt.py:quick

Variants:
- smoke: one Q13 point (LSTM, d = 2, T = 8, k = 4) and one Q11 point (no clipping), hidden 8,
  a few steps; seconds, for tests.
- quick: d = 10, T = 80; LSTM and GRU at k in {5, 10, 20, 40, full}; Q11 without and with
  clipping; hidden 64, batch 32, 400 sequence batches, 3 seeds (Q11: 8), vmapped: 12
  points, 3.0 minutes measured on 2 idle CPU cores (4.1 beside another job at load average
  2.4–4.0). Expected: accuracy far below the k > d runs for k ≤ d, the task learnt for
  k > d; XLA temp memory per step linear in k, time per token flat.
- full: d = 50, T = 400, k in {25, 50, 100, 200, full}; hidden 128; 5 seeds (Q11: 16); longer;
  for accelerators (runtime not measured).

`train.num_steps`, `train.log_every`, `train.eval_every` and `train.checkpoint_every` count
sequences of T steps; a point with T/k windows per sequence multiplies them by T/k.

Sources: truncated BPTT, Williams & Peng 1990 ("An efficient gradient-based algorithm for
on-line training of recurrent network trajectories"); exploding gradients and clipping by the
global norm, Pascanu, Mikolov & Bengio 2013 ("On the difficulty of training recurrent neural
networks"); Adam (Kingma & Ba 2015); orthogonal init (Saxe et al. 2013).
"""

import ml_collections

from rnn_jax.train.config import base_config, select_variant

CELLS = ("lstm", "gru")


def _base() -> ml_collections.ConfigDict:
    config = base_config()
    config.seed = 0
    config.num_seeds = 3
    config.grid = ml_collections.ConfigDict()
    config.grid.cells = ",".join(CELLS)
    # Window lengths k; "full" is the whole sequence (data.length). Each must divide it.
    config.grid.bptt_lengths = "5,10,20,40,full"
    # Q11 points: the global-norm clip threshold of each ("none": no clipping).
    config.grid.clip_global_norms = "none,1.0"

    config.data.delay = 10
    config.data.num_symbols = 8
    config.data.length = 80  # T: 8 d, so k = 4 d still leaves two windows per sequence
    config.data.eval_batches = 4  # held-out sequences (x batch), from a stream training never reads

    config.model.hidden_size = 64
    config.model.input_init = "glorot_uniform"

    # Q11: the exploding-gradient configuration (Pascanu et al. 2013, section 3: a recurrent
    # matrix with spectral radius > 1 and tanh; SGD, where the step is the gradient itself).
    config.clipping = ml_collections.ConfigDict()
    config.clipping.cell = "elman_tanh"
    config.clipping.recurrent_scale = 1.5
    config.clipping.optimizer = "sgd"
    config.clipping.learning_rate = 0.5
    # Divergence is a per-seed event: more replicas than Q13 (vmapped, so cheap for this model).
    config.clipping.num_seeds = 8

    config.measure = ml_collections.ConfigDict()
    config.measure.timing_repeats = 20  # compiled training steps timed per point

    config.train.num_steps = 400  # sequences of T steps (see the module docstring)
    config.train.batch_size = 32
    config.train.log_every = 20
    config.train.eval_every = 100
    config.train.checkpoint_every = 400
    config.train.keep_best = False
    config.train.nonfinite = "skip"  # an exploding run is a result, not a crash
    config.train.max_consecutive_nonfinite = 1_000_000
    config.train.best_metric = "valid_loss"
    config.optimizer.name = "adam"  # Q13 (Q11 uses `clipping.*`)
    config.optimizer.learning_rate = 1e-2
    config.optimizer.clip_global_norm = 1.0
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.num_seeds = 2
    config.grid.cells = "lstm"
    config.grid.bptt_lengths = "4"
    config.grid.clip_global_norms = "none"
    config.clipping.num_seeds = 2
    config.data.delay = 2
    config.data.length = 8
    config.data.eval_batches = 1
    config.model.hidden_size = 8
    config.measure.timing_repeats = 2
    config.train.num_steps = 5
    config.train.batch_size = 8
    config.train.log_every = 1
    config.train.eval_every = 5
    config.train.checkpoint_every = 5
    return config


def _quick() -> ml_collections.ConfigDict:
    return _base()


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.num_seeds = 5
    config.clipping.num_seeds = 16
    config.grid.bptt_lengths = "25,50,100,200,full"
    config.data.delay = 50
    config.data.length = 400
    config.data.eval_batches = 8
    config.model.hidden_size = 128
    config.train.num_steps = 4000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 1000
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("truncated_bptt", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per (cell, k) for Q13, and one per clip threshold for Q11 (an empty grid axis
    runs none of that question's points)."""
    config = get_config(variant)  # unknown variant -> the same clear error
    cells = config.grid.cells.split(",")
    lengths = config.grid.bptt_lengths.split(",")
    norms = config.grid.clip_global_norms.split(",")
    q13 = [
        {"grid.cells": c, "grid.bptt_lengths": k, "grid.clip_global_norms": ""}
        for c in cells
        for k in lengths
    ]
    return q13 + [{"grid.bptt_lengths": "", "grid.clip_global_norms": n} for n in norms]
