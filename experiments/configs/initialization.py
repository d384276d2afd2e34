"""Initialisation of the recurrent weights (seed question 19; also 3, 4, 5).

Orthogonal vs random normal (scales 0.01, 1/sqrt(H), 1.0) vs identity (IRNN) vs Glorot for
W_hh; Elman (tanh, relu), LSTM, GRU; the adding problem and the copy task at several lengths T.
Everything else (input weights Glorot-uniform, the cells' default biases: LSTM forget bias
+1, others 0) is held fixed, so a difference between rows is the recurrent initialisation alone.

Command:
    python -m experiments.initialization --workdir=runs/initialization \
        --config=experiments/configs/initialization.py:quick

Variants:
- smoke: 1 point (adding, T=10, Elman-tanh, orthogonal), 20 steps; seconds, for tests.
- quick: adding problem, T = 50; cells Elman-tanh, IRNN (Elman-relu), LSTM, GRU; inits
  orthogonal, normal(0.01), normal(1.0), identity, glorot (normal(1/sqrt(H)) has Glorot's
  variance for a square W_hh, so it is left to full); hidden 64, batch 32, 800 Adam steps,
  2 seeds (vmapped): 20 points, about 4.5 minutes on 2 idle CPU cores (4.4 measured inside
  the main job, experiments/README.md; more on a loaded machine).
  Expected: the gated cells solve it with sane inits within ~500 steps; Elman-tanh mostly
  does not in 800 steps; normal(1.0) explodes (σ_max of the Jacobian product >> 1) and
  normal(0.01) vanishes (σ_max << 1) at initialisation.
- full: adding T in {50, 100, 200, 400} and copy T in {50, 100, 200}; hidden 128; 20,000
  steps; 5 seeds; 168 points, for accelerators (runtime not measured yet; split it over
  machines with `python -m launch.sweep --config=experiments/configs/initialization.py:full`).

Success (reported per seed, as a rate): final validation loss below `success_fraction` (10%)
of the task's trivial baseline: adding MSE 0.167 (always predict 1; Le et al. 2015), copy the
memoryless cross-entropy 10·log(8)/(T+20) (Arjovsky et al. 2016). Steps to success: the first
evaluation (every `train.eval_every` steps) at which that held.

Sources: tasks and baselines, Le, Jaitly & Hinton 2015 (IRNN: identity W_hh, ReLU) and
Arjovsky, Shah & Bengio 2016; orthogonal init, Saxe, McClelland & Ganguli 2013; Glorot &
Bengio 2010; gradient clipping at norm 1 as in the IRNN Keras reproduction
(keras-team/keras examples/mnist_irnn.py); Adam (Kingma & Ba 2015).
"""

import ml_collections

from rnn_jax.train.config import base_config, select_variant

CELLS = ("elman_tanh", "elman_relu", "lstm", "gru")
INITS = ("orthogonal", "normal_0.01", "normal_inv_sqrt_h", "normal_1.0", "identity", "glorot")
TASKS = ("adding", "copy")


def _base() -> ml_collections.ConfigDict:
    config = base_config()
    config.seed = 0
    config.num_seeds = 2
    config.grid = ml_collections.ConfigDict()
    config.grid.tasks = "adding"
    config.grid.lengths = "50,100"
    config.grid.cells = ",".join(CELLS)
    config.grid.inits = ",".join(INITS)
    config.grid.copy_lengths = ""  # copy-task lengths; empty: use grid.lengths

    config.model.hidden_size = 64
    config.model.input_init = "glorot_uniform"

    config.data.eval_batches = 4  # held-out batches, seed offset so they never overlap training
    config.data.num_symbols = 10  # copy task (Arjovsky et al. 2016)
    config.data.num_categories = 8

    config.diagnostics = ml_collections.ConfigDict()
    config.diagnostics.num_sequences = 4  # sequences per eval batch for the Jacobians
    config.diagnostics.success_fraction = 0.1

    config.train.num_steps = 1000
    config.train.batch_size = 32
    config.train.log_every = 50
    config.train.eval_every = 100
    config.train.checkpoint_every = 500
    config.train.keep_best = False
    config.train.nonfinite = "skip"  # an exploding init is a result, not a crash
    config.train.max_consecutive_nonfinite = 1_000_000
    config.train.best_metric = "valid_loss"
    config.optimizer.name = "adam"
    # Measured on the quick grid: Adam 1e-2 (clipped at 1) solves LSTM T=50 in ~500 steps;
    # 1e-3 had not left the baseline after 800 steps.
    config.optimizer.learning_rate = 1e-2
    config.optimizer.clip_global_norm = 1.0
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.num_seeds = 2
    config.grid.lengths = "10"
    config.grid.cells = "elman_tanh"
    config.grid.inits = "orthogonal"
    config.model.hidden_size = 8
    config.data.eval_batches = 1
    config.diagnostics.num_sequences = 2
    config.train.num_steps = 20
    config.train.batch_size = 8
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _base()
    # normal(1/sqrt(H)) has Glorot's variance for a square W_hh (2 / (H + H)): full only.
    config.grid.inits = "orthogonal,normal_0.01,normal_1.0,identity,glorot"
    config.grid.lengths = "50"
    config.train.num_steps = 800
    return config


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.num_seeds = 5
    config.grid.tasks = "adding,copy"
    config.grid.lengths = "50,100,200,400"
    config.grid.copy_lengths = "50,100,200"
    config.model.hidden_size = 128
    config.data.eval_batches = 8
    config.train.num_steps = 20_000
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.checkpoint_every = 1000
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("initialization", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> dict[str, list]:
    """One run per (cell, init) of the variant's own grid (smoke: a 2x2 grid over seed x
    hidden size, for tests). Not every name of CELLS x INITS: quick leaves normal(1/sqrt(H))
    to full, and its sweep ran those 4 points anyway (24 runs for its 20 points)."""
    config = get_config(variant)  # unknown variant -> the same clear error
    if variant == "smoke":
        return {"seed": [0, 2], "model.hidden_size": [4, 8]}
    return {"grid.cells": config.grid.cells.split(","), "grid.inits": config.grid.inits.split(",")}
