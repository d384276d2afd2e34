"""LSTM and GRU vs a transformer of matched parameter count (seed questions 9, 10, 15).

(a) Character-level LM on Tiny Shakespeare (../shared/data, 90/5/5 split): validation bits per
    character at equal steps, and at equal wall-clock (each model's validation curve read at
    the training time the fastest-finishing model needed; time per step from its own run).
(b) A long-range task with growing dependency distance: the copy task (Arjovsky et al. 2016)
    with blank length T; cross-entropy against the memoryless baseline and the accuracy on
    the copied symbols.
(c) Cost as the sequence length grows: training tokens/s (forward+backward+update) and XLA
    temporary memory at a fixed number of tokens per batch, and the per-token latency of
    generation with a recurrent state vs a KV cache holding T tokens, timed both as one jitted
    step called from Python and as `cost.decode_tokens` steps inside one jitted lax.scan
    (rnn_jax.decoding.greedy_decode), with the generation state's bytes. Timings are medians
    and min-max over `cost.repeats` interleaved repeats, with the load average recorded. The
    cost models are those of (a): the same widths (matched at `data.window` positions), built
    with position tables of max(cost.lengths) rows.

Models: the RNN LM (embedding -> 1 recurrent layer -> softmax) with `model.hidden_size` for the
LSTM; the GRU's hidden size and the transformer's d_model (pre-LN, learned positions,
`transformer_layers` blocks, `transformer_heads` heads, MLP 4d) are chosen by
rnn_jax.models.params.match_size to within ±5% of the LSTM's parameter count, and both
counts are written to results.json. All models see windows of `data.window` tokens from a zero
state (no state carried across batches), so they have the same context.

Command:
    python -m experiments.rnn_vs_attention --workdir=runs/rnn_vs_attention \
        --config=experiments/configs/rnn_vs_attention.py:quick

Variants:
- smoke: copy task T=5, LSTM vs transformer, 20 steps, one cost length; seconds.
- quick: (a) 3 models x 500 steps on 64-character windows; (b) copy T in {10, 40} x 3
  models x 500 steps; (c) T in {64, 256, 1024} at 8,192 tokens per batch; hidden 128,
  2 seeds: 4.3 minutes on 2 otherwise idle CPU cores in session 21's main job (longer on a
  shared machine).
  Expected (perf-anchors.md measured the blocks alone): on this CPU the
  LSTM trains more tokens/s than the transformer block and the gap grows with T; the
  transformer's per-token generation cost grows with the cache length, the RNN's does not;
  on the copy task attention reaches any distance in one step, the RNNs degrade with T.
- full: hidden 512, 4-layer transformer, 20,000 steps, copy T up to 500,
  lengths up to 8,192 at 8,192 tokens per batch (so that the transformer's T x T attention
  fits one accelerator's memory), 5 seeds (accelerator; compare with the minGRU paper's Shakespeare
  result, test loss 1.548 minGRU vs 1.547 transformer, Feng et al. 2024).

Sources: Vaswani et al. 2017 (transformer), Arjovsky et al. 2016 (copy task), Karpathy's
char-rnn data; Adam lr 3e-3 (1e-3 in full) with clipping at 1 for all models (no per-model
tuning: a limitation the report states).
"""

import ml_collections

from rnn_jax.train.config import base_config, select_variant

MODELS = ("lstm", "gru", "transformer")


def _base() -> ml_collections.ConfigDict:
    config = base_config()
    config.num_seeds = 2
    config.grid = ml_collections.ConfigDict()
    config.grid.tasks = "shakespeare,copy,cost"
    config.grid.models = ",".join(MODELS)
    config.grid.copy_lengths = "10,40"

    config.model.hidden_size = 128  # the LSTM; GRU and transformer are matched to its size
    config.model.transformer_layers = 2
    config.model.transformer_heads = 4
    config.model.size_tolerance = 0.05

    config.data.root = ""  # empty: $RNN_JAX_DATA or ../shared/data
    config.data.window = 64
    config.data.eval_batches = 4
    config.data.num_symbols = 10
    config.data.num_categories = 8

    config.cost = ml_collections.ConfigDict()
    config.cost.lengths = "64,256,1024"
    config.cost.tokens_per_batch = 8192  # each of cost.lengths must divide it
    config.cost.repeats = 5
    config.cost.decode_tokens = 32  # at most min(cost.lengths): fills a cache's last slots

    config.train.num_steps = 500
    config.train.batch_size = 32
    config.train.log_every = 50
    config.train.eval_every = 100
    config.train.checkpoint_every = 400
    config.train.keep_best = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.clip_global_norm = 1.0
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.grid.tasks = "copy,cost"
    config.grid.models = "lstm,transformer"
    config.grid.copy_lengths = "5"
    config.model.hidden_size = 16
    config.model.transformer_heads = 2
    config.model.size_tolerance = 0.3  # tiny models: widths are too coarse for 5%
    config.data.eval_batches = 1
    config.data.num_symbols = 3
    config.cost.lengths = "16"
    config.cost.tokens_per_batch = 64
    config.cost.repeats = 2
    config.cost.decode_tokens = 8
    config.train.num_steps = 20
    config.train.batch_size = 8
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    return config


def _quick() -> ml_collections.ConfigDict:
    return _base()


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.num_seeds = 5
    config.grid.copy_lengths = "10,50,100,200,500"
    config.model.hidden_size = 512
    config.model.transformer_layers = 4
    config.model.transformer_heads = 8
    config.data.window = 256
    config.data.eval_batches = 16
    config.cost.lengths = "64,256,1024,4096,8192"
    # 8,192 tokens: batch 1 at T = 8,192. The transformer's training step keeps [batch, heads,
    # T, T] attention weights per layer; at 65,536 tokens (batch 8) XLA planned 212 GiB of
    # temporaries for it (memory_analysis, CPU), 26.5 GiB at batch 1 (session 28).
    config.cost.tokens_per_batch = 8192
    config.cost.repeats = 11
    config.train.num_steps = 20_000
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.optimizer.learning_rate = 1e-3
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("rnn_vs_attention", variant, VARIANTS)


def get_sweep(variant: str = "quick"):
    """One run per (task, model) of the variant's grid."""
    config = get_config(variant)
    return {
        "grid.tasks": config.grid.tasks.split(","),
        "grid.models": config.grid.models.split(","),
    }
