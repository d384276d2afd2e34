"""Throughput benchmark: rnn_jax vs Flax `nn.RNN` vs PyTorch, one RNN layer, float32.

Command:
    python -m experiments.throughput --workdir=runs/throughput \
        --config=experiments/configs/throughput.py:quick

Variants:
- smoke: LSTM at a tiny shape, every backend, 2 rounds; one bidirectional and one stacked
  group; a one-length sweep; no subprocess memory runs. Under a minute, for tests (numbers
  meaningless).
- quick: the sub-grid the main job (experiments/reproduce.py) runs, at most ~6 minutes on 2
  idle CPU cores: LSTM and GRU at small and long (no medium), forward and forward+backward,
  rnn_jax vs Flax vs torch plus rnn_jax with remat (forward+backward), 3 interleaved rounds
  after 1 warm-up; one bidirectional and one 2-layer stacked group (LSTM small); the sweep
  at T = 64 and 1024 for LSTM, GRU, sequential minGRU and the transformer block, 1 round;
  no reference-scan column, no minGRU group, no per-process peak RSS. Measured 1.2 minutes
  wall on 2 quiet cores in the main job (no torch there) before the stacked group, 4.4
  minutes (177 CPU-seconds) at load 6-10; the previous quick (medium config, reference
  scan, 5 rounds, peak-RSS subprocesses, associative-scan sweep) took ~15 minutes.
- cpu: the README's Performance tables (a quiet machine; measured 4.5 minutes): LSTM and GRU
  at small / medium / long, forward and forward+backward, rnn_jax vs Flax vs torch plus remat
  and the XLA GEMM floor (the layer's matmuls alone: throughput_peers.gemm_floor), 5 rounds;
  bidirectional and 2-layer stacked LSTM and GRU at small and long; minGRU at small; the full
  sweep.
- full: cpu plus Elman and minGRU everywhere, the reference scan, 11 rounds, a longer sweep,
  peak RSS per implementation in fresh processes at every config.
- gpu: for a machine where JAX runs on an NVIDIA GPU (install the CUDA jaxlib first, README):
  LSTM and GRU at small / medium / long against Flax, torch on CUDA (cuDNN, where that torch
  build sees the GPU) and the LSTM on cuDNN through jax.experimental.rnn
  (`rnn_jax_cudnn`) and the Pallas forward kernel (`rnn_jax_pallas`), plus a `narrow`
  config (256, 256, 64, 64) with the small hidden size that kernel is for; bidirectional
  groups; the sweep to T = 4096 with both minGRU scans.
  The report judges issue 7's GPU goals (>= 0.9x cuDNN fwd+bwd at medium; associative minGRU
  >= 10x sequential at T = 4096) in place of its CPU speed goals against torch and Flax
  (memory and per-layer goals as on CPU). Not run yet: no GPU has been lent to this project.

Shapes (batch, time, input, hidden) are those of perf-anchors.md and issue 7: small
(32, 64, 128, 256), medium (64, 128, 256, 512), long (16, 1024, 64, 128). The sweep holds
batch x time = `sweep.tokens` fixed (16,384, as in perf-anchors.md) with input
`sweep.input_size` and hidden `model.hidden_size`.

Besides wall-clock time, every call's process CPU time is recorded: on a shared machine the
CPU-time ratios measure the work each implementation does, the wall-clock ones what a user
waits (and which other processes disturb).

Method (perf-anchors.md): every implementation of one (cell, shape, mode) group is compiled
first, warmed up, then timed round-robin A, B, C, ... with the start rotated each round and a
short gap between calls; medians with min-max, ratios taken per round. The n^3 matmul that
gives "% of peak" is a member of every group. Load (`os.getloadavg`) is recorded per round.
Measured outside the timing, from each JAX member's compiled program: its compile time, XLA's
temp memory (`memory_analysis`) and the instructions each of its loops runs per step
(rnn_jax.loop_ops).
"""

import ml_collections

from experiments.throughput_goals import GOAL_SHAPES
from rnn_jax.train.config import process_config, select_variant


def _base() -> ml_collections.ConfigDict:
    config = process_config()  # a benchmark: no training keys
    # Named shapes (batch, time, input, hidden); `configs` picks among them.
    config.shapes = ml_collections.ConfigDict()
    config.shapes.tiny = (4, 8, 8, 16)
    # small (32, 64, 128, 256), medium (64, 128, 256, 512), long (16, 1024, 64, 128): issue
    # 7's, which its goals are judged at. A run that changes one (`--config.shapes.small=`)
    # is reported under the name with its values and gets no speed-goal verdict.
    for name, shape in GOAL_SHAPES.items():
        config.shapes[name] = shape
    config.shapes.narrow = (256, 256, 64, 64)  # gpu only: the Pallas kernel's kind of size
    config.cells = "lstm,gru"
    config.configs = "small,medium,long"
    config.backends = "rnn_jax,rnn_jax_remat,flax,torch"
    config.modes = "fwd,fwd_bwd"
    config.repetitions = 5  # timed rounds per group (perf-anchors.md: 7-11; 5 fits 2 shared cores)
    config.warmup = 2  # untimed calls of each member before the rounds
    config.gap_s = 0.02  # pause before each timed call, so spinning worker threads park
    config.matmul_size = 2048  # n of the n^3 peak-matmul reference
    # 0: torch's default threads (issue 7's setting). On a loaded machine use 1, together with
    # XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", and
    # compare the CPU-time columns: work per token, undisturbed by other processes.
    config.torch_threads = 0
    # Extra groups: (cell spec, shape) pairs beyond cells x configs, e.g. minGRU at small.
    config.extra = "min_gru:small"
    # Peak RSS per implementation, each in a fresh process (fwd_bwd): these configs.
    config.rss_configs = ""
    # Bidirectional groups (forward+backward): <cell>:<shape> pairs; one scan vs two scans vs
    # Flax nn.Bidirectional vs one unidirectional layer.
    config.bidirectional = "lstm:small,lstm:long,gru:small,gru:long"
    # Stacked groups (forward+backward): <cell>:<shape> pairs; a stack_layers-layer stack
    # (rnn_jax, Flax, torch) against rnn_jax's single layers of the same sizes run alone.
    config.stacked = "lstm:small,lstm:long,gru:small,gru:long"
    config.stack_layers = 2
    # config.malloc (process_config): "default" for the README's goal runs (glibc as users get
    # it); "retain" keeps freed buffers in the heap for every member alike (process-wide).
    config.sweep = ml_collections.ConfigDict()
    config.sweep.lengths = "64,256,1024"
    config.sweep.tokens = 16384
    config.sweep.input_size = 128
    config.sweep.cells = "lstm,gru,min_gru:sequential,min_gru:associative,transformer"
    config.sweep.repetitions = 3
    config.model = ml_collections.ConfigDict()
    config.model.hidden_size = 256  # the sweep's hidden size (named shapes carry their own)
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.backends = "rnn_jax,rnn_jax_reference,rnn_jax_remat,flax,torch,xla_gemm_floor"
    config.bidirectional = "lstm:tiny"
    config.stacked = "lstm:tiny"
    config.cells = "lstm"
    config.configs = "tiny"
    config.repetitions = 2
    config.warmup = 1
    config.gap_s = 0.0
    config.matmul_size = 128
    config.extra = ""
    config.rss_configs = ""
    config.sweep.lengths = "8"
    config.sweep.cells = "gru,min_gru:sequential,transformer"
    config.sweep.tokens = 64
    config.sweep.input_size = 8
    config.sweep.repetitions = 1
    config.model.hidden_size = 16
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _base()
    config.configs = "small,long"
    config.repetitions = 3
    config.warmup = 1
    config.extra = ""
    config.bidirectional = "lstm:small"
    config.stacked = "lstm:small"
    config.sweep.lengths = "64,1024"
    config.sweep.cells = "lstm,gru,min_gru:sequential,transformer"
    config.sweep.repetitions = 1
    return config


def _cpu() -> ml_collections.ConfigDict:
    config = _base()
    config.backends += ",xla_gemm_floor"
    return config


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.cells = "lstm,gru,elman,min_gru"
    config.backends = "rnn_jax,rnn_jax_reference,rnn_jax_remat,flax,torch,xla_gemm_floor"
    config.repetitions = 11
    config.extra = ""
    config.rss_configs = "small,medium,long"
    config.sweep.lengths = "64,256,1024,4096"
    config.sweep.repetitions = 5
    return config


def _gpu() -> ml_collections.ConfigDict:
    config = _base()
    config.backends = "rnn_jax,rnn_jax_remat,rnn_jax_cudnn,rnn_jax_pallas,flax,torch,xla_gemm_floor"
    config.configs = "small,medium,long,narrow"
    config.repetitions = 7
    config.extra = "min_gru:medium"
    config.sweep.lengths = "256,1024,4096"
    config.sweep.cells = "lstm,gru,min_gru:sequential,min_gru:associative,transformer"
    config.sweep.repetitions = 5
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "cpu": _cpu, "full": _full, "gpu": _gpu}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("throughput", variant, VARIANTS)


def get_sweep(variant: str = "quick"):
    """One run per cell (each run then covers every config, mode and backend)."""
    config = get_config(variant)
    return {"cells": config.cells.split(",")}
