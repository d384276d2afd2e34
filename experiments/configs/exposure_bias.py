"""Teacher forcing, scheduled sampling and exposure bias (seed question 8; also 7, 16).

An LSTM language model is trained on fixed-length windows under five regimes: teacher
forcing (the gold previous token is always the input), scheduled sampling with linear,
exponential and inverse-sigmoid decay of the teacher-forcing probability ε_i (Bengio et al.
2015; each schedule ends at ε = `final_teacher_forcing`), and free running (always the
model's own sampled token). Evaluation on held-out windows, from a gold prefix of `prefix`
tokens:
- teacher-forced NLL per position (the usual validation loss);
- free-running NLL: the model's NLL of the gold token k steps after it started feeding on its
  own samples, and the gap to the teacher-forced NLL at the same position, as k grows;
- on the Markov language (known entropy rate, rnn_jax.data.MarkovLanguage): the true
  process's NLL of the model's free-running samples at each generated position, beside the
  entropy rate (what the true process's own samples score on average).

Command:
    python -m experiments.exposure_bias --workdir=runs/exposure_bias \
        --config=experiments/configs/exposure_bias.py:quick

Variants:
- smoke: Markov language, inverse-sigmoid scheduled sampling, 20 steps; seconds.
- quick: Markov language (V=16, order 2) and Tiny Shakespeare (characters, ../shared/data),
  5 regimes each; LSTM hidden 64 (Markov) / 128 (Shakespeare), 600 Adam steps, batch 32,
  2 seeds: 10 points, about 7 minutes on 2 CPU cores.
  Expected: teacher forcing gives the lowest teacher-forced NLL; the free-running gap grows
  with k for every regime (for a real LM the gold continuation is not a function of the
  model's own samples, so part of the gap is irreducible); free running alone trains badly
  ("always sampling" was much worse in Bengio et al. 2015).
- full: the same on PTB words too, hidden 650, 20,000 steps, 5 seeds (accelerator).

Translation (Multi30k en-de, greedy/beam BLEU per regime) needs the models issue's seq2seq
model with scheduled sampling; it is not part of this experiment yet.

Sources: Bengio, Vinyals, Jaitly & Shazeer 2015 (schedules: linear ε = max(ε_min, k − c·i),
exponential ε = k^i, inverse sigmoid ε = k/(k + exp(i/k))); Adam lr 3e-3, clip 1.
"""

import ml_collections

from rnn_jax.train.config import base_config, select_variant

REGIMES = ("teacher_forcing", "linear", "exponential", "inverse_sigmoid", "free_running")
CORPORA = ("markov", "tiny_shakespeare", "ptb")


def _base() -> ml_collections.ConfigDict:
    config = base_config()
    config.num_seeds = 2
    config.grid = ml_collections.ConfigDict()
    config.grid.corpora = "markov,tiny_shakespeare"
    config.grid.regimes = ",".join(REGIMES)

    config.model.cell = "lstm"
    config.model.hidden_size = 64  # Markov; data.real_hidden_size for a real corpus
    config.model.real_hidden_size = 128

    config.data.root = ""  # empty: $RNN_JAX_DATA or ../shared/data
    config.data.window = 48  # tokens per training window (markov)
    config.data.real_window = 96  # tokens per training window (real corpus)
    config.data.prefix = 16  # gold tokens before free-running generation starts
    config.data.eval_batches = 4
    config.data.markov_vocab_size = 16
    config.data.markov_order = 2
    config.data.markov_concentration = 0.5
    config.data.markov_seed = 0

    config.schedule_sampling = ml_collections.ConfigDict()
    config.schedule_sampling.final_teacher_forcing = 0.25  # ε at the last step (decays)

    config.train.num_steps = 600
    config.train.batch_size = 32
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 300
    config.train.keep_best = False
    config.train.best_metric = "valid_tf_nll"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.clip_global_norm = 1.0
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.grid.corpora = "markov"
    config.grid.regimes = "inverse_sigmoid"
    config.model.hidden_size = 8
    config.data.window = 12
    config.data.prefix = 4
    config.data.eval_batches = 1
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
    config.grid.corpora = ",".join(CORPORA)
    config.model.real_hidden_size = 650
    config.data.real_window = 128
    config.data.eval_batches = 16
    config.train.num_steps = 20_000
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.optimizer.learning_rate = 1e-3
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("exposure_bias", variant, VARIANTS)


def get_sweep(variant: str = "quick"):
    """One run per (corpus, regime) of the variant's grid."""
    config = get_config(variant)
    return {
        "grid.corpora": config.grid.corpora.split(","),
        "grid.regimes": config.grid.regimes.split(","),
    }
