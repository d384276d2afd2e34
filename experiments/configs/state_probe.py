"""What does an RNN's hidden state hold, per layer? (seed Q1 and Q12): `smoke`, `quick`, `full`.

A 2-layer LSTM language model on UD English-EWT's training words (sentences joined with
`<eos>`; vocabulary: words seen twice or more), frozen; linear probes (LDA with a shrunk
covariance for every target, multinomial logistic regression for the UPOS ones) on each
layer's state (0 = embedding, 1, 2) at every word of a probe-train slice of UD train, tested
on UD dev: the word k = 0, 1, 2, 4, 8 tokens back (the `probe.num_words` most frequent tokens
+ other), the current word's UPOS tag and the next token's; controls: the same probes on each
seed's untrained LM (its initial weights), Hewitt & Liang's control tasks (a random tag per
word type; selectivity), the majority class and a per-word lookup of the tags.
experiments/state_probe.py has the details.

Command:
    python -m experiments.state_probe --workdir=runs/state_probe \
        --config=experiments/configs/state_probe.py:quick

Variants:
- smoke: 2 x 16 LSTM, embeddings 16, 1 seed, 20 steps of 8 x 16 on the first 300 UD training
  sentences, probes on 200 of them and 100 dev sentences; seconds, for tests: the pipeline,
  not accuracy.
- quick: 2 x 128 LSTM, embeddings 64, no dropout, Adam 3e-3 (cosine to 1e-4, clip 1), batch 16 x
  35, 2 seeds (vmapped); probes: 2,000 UD training sentences (39,794 word positions) and the whole
  dev split (2,001 sentences, ~25k tokens), 100 word classes + other, shrinkage 1e-3..1, logistic
  L2 1e-5..1e-3. Measured on 2 shared CPU cores (load ~2.5): 3.3 minutes wall (LM 2.1, probes 1.1:
  LDA 0.25, logistic regression 0.75); validation perplexity 265; the words 1-2 back are read from
  layers 1 and 2 (k=1: 0.82, 0.81; majority 0.49), 4+ back are not; UPOS (logistic) 0.563, 0.627,
  0.611 from layers 0, 1, 2 (LDA 0.506, 0.575, 0.559; a per-word lookup 0.806), selectivity
  −0.062, −0.006, +0.015 (session 21's main job; the control task keyed on the LM's tokens since
  session 16): layer 2 is not shown more abstract (experiments/README.md, `state_probe`).
- full: 2 x 650 (Zaremba medium's size), dropout 0.5 between layers, 5 seeds, 10 epochs;
  probes on 6,000 training sentences and the test split. For accelerators; not run.

Sources: probing classifiers, Adi et al. 2017, Belinkov et al. 2017 (NMT layers: POS best
in lower layers), Conneau et al. 2018; LM layers, Peters et al. 2018 (ELMo: syntax lower,
semantics higher), Blevins, Levy & Zettlemoyer 2018 (deep RNNs encode hierarchical syntax);
control tasks and untrained baselines, Hewitt & Liang 2019; LM training, Zaremba et al. 2014.
"""

import ml_collections

from experiments.configs import language_model as lm_configs
from rnn_jax.train.config import select_variant

UD_TRAIN_TOKENS = 217_121  # 204,577 words + 12,544 <eos> of UD English-EWT train


def _common() -> ml_collections.ConfigDict:
    config = lm_configs.get_config("smoke")  # the LM keys; every value set below
    for key in [k for k in config.data if k.startswith("markov_")]:
        del config.data[key]
    config.data.corpus = "ud_en_ewt"
    config.data.min_freq = 2  # words seen once -> <unk>, so that <unk> is trained
    config.data.train_sentences = 0  # 0: all of UD train
    config.data.bptt_length = 35  # Zaremba et al.
    config.data.eval_batch_size = 16
    config.model.cell = "lstm"
    config.model.num_layers = 2
    config.model.hidden_size = 128
    config.model.embed_size = 64

    config.probe = ml_collections.ConfigDict()
    config.probe.train_sentences = 2_000  # the first N of UD train (39,794 word positions)
    config.probe.test_split = "valid"  # UD dev
    config.probe.test_sentences = 0  # 0: the whole split
    config.probe.num_words = 100  # word classes (the most frequent tokens) + "other"
    config.probe.distances = "0,1,2,4,8"
    # Added to the within-class covariance of standardised features (each of variance 1).
    config.probe.shrinkages = "0.001,0.01,0.1,1"
    config.probe.holdout_fraction = 0.2  # the last 20% of probe-train choose each shrinkage
    # lda reads every target; logistic (multinomial logistic regression, the usual probe:
    # Belinkov et al. 2017, Hewitt & Liang 2019) the UPOS targets and their control tasks.
    config.probe.kinds = "lda,logistic"
    # logistic: the L2 penalty on the weights of standardised features, the loss a mean over
    # examples (sklearn's C = 1 / (l2 * n)); L-BFGS steps (preconditioned) of the fit and
    # again of the refit, which starts from the fit. On the quick run's layer 2, 25 steps reach
    # the objective within 0.004 of 400 steps' and the same dev accuracy (0.607).
    config.probe.l2_penalties = "0.00001,0.0001,0.001"
    config.probe.logistic_iterations = 30

    config.train.keep_best = False  # probes read the last checkpoint
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.clip_global_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50
    config.schedule.end_value = 1e-4
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _common()
    config.num_seeds = 1
    config.model.hidden_size = 16
    config.model.embed_size = 16  # = hidden: one feature width, so logistic compiles 2x, not 4x
    config.data.train_sentences = 300
    config.data.bptt_length = 16
    config.data.eval_batch_size = 8
    config.probe.train_sentences = 200
    config.probe.test_sentences = 100
    config.probe.num_words = 10
    config.probe.shrinkages = "0.01,1"
    config.probe.l2_penalties = "0.001,0.1"
    config.probe.logistic_iterations = 20
    config.schedule.warmup_steps = 5
    config.train.num_steps = 20
    config.train.batch_size = 8
    config.train.log_every = 10
    config.train.eval_every = 20
    config.train.checkpoint_every = 20
    return config


def _quick() -> ml_collections.ConfigDict:
    config = _common()
    config.num_seeds = 2
    # 2 seeds at ~2.6 steps/s on 2 cores (the 10k-word softmax dominates): ~2.5 minutes,
    # ~1 epoch (400 x 16 x 35 = 224k tokens of 217k).
    config.train.num_steps = 400
    config.train.batch_size = 16
    config.train.log_every = 100
    config.train.eval_every = 400  # one evaluation: the final one
    config.train.checkpoint_every = 400
    return config


def _full() -> ml_collections.ConfigDict:
    config = _common()
    config.num_seeds = 5
    config.model.hidden_size = 650
    config.model.embed_size = 650
    config.model.dropout_between = 0.5
    config.model.dropout_output = 0.5
    config.probe.train_sentences = 6_000
    config.probe.test_split = "test"
    config.train.batch_size = 20
    steps_per_epoch = UD_TRAIN_TOKENS // (20 * 35)
    config.train.num_steps = 10 * steps_per_epoch
    config.train.log_every = 100
    config.train.eval_every = steps_per_epoch
    config.train.checkpoint_every = steps_per_epoch
    config.optimizer.learning_rate = 1e-3
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("state_probe", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per stack depth (2 and 3 layers): does the layer-to-layer trend continue?"""
    get_config(variant)  # unknown variant -> the same clear error
    return [{"model.num_layers": layers} for layers in (2, 3)]
