"""RNN language model (seed question 7): variants `smoke`, `quick`, `full`.

    python -m experiments.language_model --workdir=runs/lm_smoke \
        --config=experiments/configs/language_model.py:smoke

smoke  Synthetic order-1 Markov language (16 symbols, Dirichlet(0.2) transitions, data seed 0;
       no files needed), 2x32 LSTM, Adam 3e-2, 40 steps of batch 16 x 16 tokens. ~15 s on 2
       CPU cores (mostly compilation). Used by the tests; runs unchanged on 1, 2, 4 or 8
       devices. Expected: valid loss falls from ln 16 = 2.77 to ~1.93 nats/token (the
       language's entropy rate, the best possible, is 1.77).
quick  Tiny Shakespeare characters (`data.root`/tiny_shakespeare; 90/5/5 split), 1x256 LSTM,
       Adam 2e-3 with cosine decay, batch 32 x 64 characters, 1,500 steps: 1,003,854 train
       characters -> 32 rows of 31,370 -> (31,370 - 1) // 64 = 490 steps per epoch, so ~3 epochs.
       3.3 minutes on 2 quiet CPU cores (the main job, 2026-11-25, commit 296151b, seed 0;
       1.7 in session 21's main job, commit 423c4c3).
       Session 14 (evaluation over every character, each of the 32 rows reading 256
       characters of history first): valid 1.563 nats/char (perplexity 4.77), test 1.648
       (5.20, 2.38 bits/char), train 1.488; with one evaluation row (every character seeing
       the whole split before it) the same to 5 decimals (docs/design.md, LM evaluation).
       Defaults: Karpathy's char-rnn small settings scaled to a CPU.
full   Zaremba, Sutskever & Vinyals (2014) "medium": PTB words, 2x650 LSTM, dropout 0.5 on
       inputs, between layers and on outputs (non-recurrent connections only), weights
       U(-0.05, 0.05), forget bias 0, SGD lr 1, clip global norm 5, batch 20 x 35 (truncated
       BPTT, hidden state carried across batches), 39 epochs, lr x0.8 per epoch from the 7th
       (TensorFlow PTB tutorial `MediumConfig`: max_epoch 6, lr_decay 0.8; the paper says
       "decrease it by a factor of 1.2"). Loss summed over the 35 steps and averaged over the
       batch, as in both reference implementations (this scales the gradient that lr 1 and
       clip 5 act on). Steps per epoch: 929,589 train tokens -> 20 rows of 46,479 ->
       (46,479 - 1) // 35 = 1,327; 39 epochs = 51,753 steps; decay from step 5 x 1,327 = 6,635
       (optax counts the 7th epoch's first update as step 7,962 -> one decay).
       Published: valid 86.2 / test 82.7 perplexity (Table 1). Evaluation here uses 8 rows
       x 35 (every token scored once; each row reads 256 words of history first) instead of
       the tutorial's 1 x 1. Roughly
       1-2 h on one GPU; not runnable on 2 CPU cores (~100x slower).
"""

import ml_collections
from ml_collections import config_dict

from rnn_jax.train.config import base_config, select_variant

PTB_STEPS_PER_EPOCH = 1327  # (929,589 // 20 - 1) // 35, see the docstring


def _common() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.cell = "lstm"
    config.model.hidden_size = 32
    config.model.embed_size = config_dict.placeholder(int)  # None: = hidden_size
    config.model.num_layers = 2
    config.model.tie_embeddings = False
    config.model.dropout_input = 0.0
    config.model.dropout_between = 0.0
    config.model.dropout_output = 0.0
    # True: the input, between-layer and output dropouts use one mask per sequence, shared
    # over time (Gal & Ghahramani 2016; AWD-LSTM's LockedDropout).
    config.model.locked_dropout = False
    config.model.recurrent_dropout = 0.0
    config.model.embedding_dropout = 0.0
    config.model.weight_drop = 0.0
    config.model.init_scale = config_dict.placeholder(float)  # None: the RNN's defaults
    config.model.forget_bias = config_dict.placeholder(float)
    # 'bfloat16' (for accelerators): every matmul in bf16 (weight matrices rounded to bf16);
    # params, optimiser, biases, carry and the cell update in float32 (rnn_jax/models/lm.py).
    config.model.compute_dtype = "float32"

    config.objective = ml_collections.ConfigDict()
    # 'mean': per-token mean NLL; 'sum': summed over time, mean over batch (Zaremba's code).
    config.objective.time_reduction = "mean"
    config.objective.ar_alpha = 0.0  # AWD-LSTM activation regularisation
    config.objective.tar_beta = 0.0  # AWD-LSTM temporal activation regularisation

    config.data = ml_collections.ConfigDict()
    config.data.corpus = "markov"  # markov | ptb | tiny_shakespeare
    config.data.root = config_dict.placeholder(str)  # None: $RNN_JAX_DATA or ../shared/data
    config.data.bptt_length = 16
    config.data.eval_batch_size = 8
    # Evaluation rows start from a zero state; each first reads up to this many tokens before
    # its first scored target (weight 0), so that every target sees >= 256 tokens of history
    # or the whole split before it (rnn_jax.data.LMEvalStream; 1 x 1 evaluation sees it all).
    config.data.eval_context = 256
    config.data.markov_vocab_size = 16
    config.data.markov_order = 1
    config.data.markov_concentration = 0.2  # peaked transitions: entropy rate 1.77 nats
    config.data.markov_seed = 0
    config.data.markov_train_tokens = 20_000
    config.data.markov_eval_tokens = 2_048
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _common()
    config.train.num_steps = 40
    config.train.batch_size = 16
    config.train.log_every = 5
    config.train.eval_every = 20
    config.train.checkpoint_every = 10
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-2
    config.optimizer.clip_global_norm = 5.0
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _common()
    config.data.corpus = "tiny_shakespeare"
    config.data.bptt_length = 64
    config.data.eval_batch_size = 32
    config.model.hidden_size = 256
    config.model.num_layers = 1
    config.model.dropout_output = 0.1
    config.train.num_steps = 1_500
    config.train.batch_size = 32
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.clip_global_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50
    config.schedule.end_value = 1e-4
    return config


def _full() -> ml_collections.ConfigDict:
    config = _common()
    config.data.corpus = "ptb"
    config.data.bptt_length = 35
    config.data.eval_batch_size = 8
    config.model.hidden_size = 650
    config.model.num_layers = 2
    config.model.dropout_input = 0.5
    config.model.dropout_between = 0.5
    config.model.dropout_output = 0.5
    config.model.init_scale = 0.05
    config.model.forget_bias = 0.0
    config.objective.time_reduction = "sum"
    config.train.batch_size = 20
    config.train.num_steps = 39 * PTB_STEPS_PER_EPOCH
    config.train.log_every = 100
    config.train.eval_every = PTB_STEPS_PER_EPOCH
    config.train.checkpoint_every = PTB_STEPS_PER_EPOCH
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1.0
    config.optimizer.clip_global_norm = 5.0
    config.schedule.name = "step_decay"
    config.schedule.decay_rate = 0.8
    config.schedule.decay_every_steps = PTB_STEPS_PER_EPOCH
    config.schedule.decay_begin_step = 5 * PTB_STEPS_PER_EPOCH
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return select_variant("language_model", variant, VARIANTS)


def get_sweep(variant: str | None = None) -> list[dict]:
    """Override dicts for `launch.sweep`: the cell type, without and with dropout (input,
    output, and between layers where the variant stacks more than one)."""
    select_variant("language_model", variant, VARIANTS)  # the same error for a bad variant
    rate = {"smoke": 0.2, "quick": 0.2, "full": 0.5}[variant]
    # dropout_between acts between stacked layers: on quick's one layer it set an inert key
    layered = get_config(variant).model.num_layers > 1
    wheres = ("input", "between", "output") if layered else ("input", "output")
    return [
        {"model.cell": cell, **{f"model.dropout_{where}": r for where in wheres}}
        for cell in ("lstm", "gru")
        for r in (0.0, rate)
    ]
