"""A phrase-based SMT baseline on the NMT's Multi30k en->de data (seed Q16).

Command:
    python -m experiments.smt_baseline --workdir=runs/smt_baseline \
        --config=experiments/configs/smt_baseline.py:quick

A small Moses-like system (Koehn, Och & Marcu 2003) from NLTK's pieces; see
experiments/smt_baseline.py for what each stage is.

Variants:
- smoke: the first 300 training pairs and 20 test2016 pairs (both sides <= 15 tokens), one
  IBM 2 iteration, stack 5; a few seconds, for tests: the pipeline, not BLEU.
- quick: exactly the NMT quick's data (experiments/configs/exposure_bias.py:quick,
  `translation.*`): the first 10,000 training pairs with both sides <= 15 tokens, scored on
  the 749 test2016 pairs with both sides <= 15 tokens. Measured on the project's 2-vCPU
  machine (shared with another job): 3.1 minutes wall (alignment 25 s, decoding 155 s),
  29.08 BLEU (copy the source 0.53); nltk's own search at stack 10 had given 24.81 in 94 s.
- full: all 29,000 training pairs and all 1,000 test2016 pairs (max_length 50 drops none,
  as the NMT full). Measured (machine shared): 9.6 minutes wall (alignment 229 s, decoding
  334 s), 31.13 BLEU; nltk's search at stack 10: 5.6 minutes (alignment 152 s, decoding
  172 s), 25.18 BLEU.

Stack 100: where the decoder (recombination, Moses's reordering constraint) stops being
search-limited. On the first 200 val pairs (quick's system) stacks 10/30/50/100/200 gave
28.94/30.47/31.03/31.79/31.83 BLEU in 6/13/25/39/65 s of decoding, against 26.72/26.98 for
nltk's search at 10/30 (9/35 s); on the first 100, the best model score at stack 100 was
below stack 400's on 14 sentences (0.6 nats on average), at stack 30 on 38. Stack 30 would
keep quick near its old ~1.5 minutes (85 s, 28.19 BLEU); 100 costs about 1.5 minutes more
for 0.9 BLEU, taken because the NMT-vs-SMT comparison (Q16) should not rest on a
search-limited baseline.

Weights are fixed, not tuned (no MERT): φ(e|f), φ(f|e) and the LM at weight 1 (a plain
product of the three models), no word penalty (nltk's default), distortion log(0.5) per
word jumped (nltk's default factor) with Moses's default distortion limit of 6. On the first
200 val pairs, LM weight 0.5 or 1 x word penalty -1, -0.5 or 0 gave 29.5-31.8 BLEU at stack
100, the untuned product (31.79) the best of the six (26.2-27.6 with nltk's search at stack
10, docs/design.md), so it was kept.
"""

import ml_collections

from rnn_jax.train.config import process_config, select_variant


def _base() -> ml_collections.ConfigDict:
    config = process_config()  # no training keys: nothing here is trained by gradient
    config.data.root = ""  # empty: $RNN_JAX_DATA or ../shared/data

    config.smt = s = ml_collections.ConfigDict()
    s.max_length = 15  # tokens per side, training and scored pairs (exposure_bias quick's)
    s.max_train_pairs = 10_000  # the first training pairs that fit; 0 = all
    s.max_eval_pairs = 0  # the first scored pairs that fit; 0 = all
    s.eval_split = "test"  # test = test2016; valid = val (for choosing weights)
    s.ibm2_iterations = 3  # EM iterations of IBM Model 2; nltk runs Model 1 2x this first
    s.max_phrase_length = 4  # words per side (Moses's default is 7; 4 suffices at <= 15)
    s.max_translations = 10  # per source phrase (Moses's ttable-limit is 20)
    s.lm_order = 3  # trigram
    s.lm_unk_cutoff = 2  # training words seen once are the LM's <UNK> (so it has mass)
    s.weight_forward = 1.0  # log φ(e|f)
    s.weight_backward = 1.0  # log φ(f|e)
    s.weight_lm = 1.0
    s.word_penalty = 0.0  # nltk: score -= word_penalty per output word (< 0: longer output)
    s.distortion_factor = 0.5  # log(factor) per source word jumped (nltk's default)
    s.distortion_limit = 6  # Moses's default
    s.stack_size = 100  # hypotheses per stack after recombination (histogram pruning)
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    s = config.smt
    s.max_train_pairs, s.max_eval_pairs = 300, 20
    s.ibm2_iterations, s.stack_size = 1, 5
    return config


def _quick() -> ml_collections.ConfigDict:
    return _base()


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.smt.max_length, config.smt.max_train_pairs = 50, 0  # exposure_bias full's data
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return select_variant("smt_baseline", variant, VARIANTS)


def get_sweep(variant: str | None = None) -> dict[str, list]:
    """Grid for `launch.sweep`: the word penalty x the LM weight (the two weights that set
    output length and fluency); score on `smt.eval_split=valid` when choosing from it."""
    select_variant("smt_baseline", variant, VARIANTS)  # the same error for a bad variant
    return {"smt.word_penalty": [-1.0, -0.5, 0.0], "smt.weight_lm": [0.5, 1.0]}
