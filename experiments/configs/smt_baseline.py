"""A phrase-based SMT baseline on the NMT's Multi30k en->de data (seed Q16).

Command:
    python -m experiments.smt_baseline --workdir=runs/smt_baseline \
        --config=experiments/configs/smt_baseline.py:quick

A small Moses-like system (Koehn, Och & Marcu 2003) from NLTK's pieces; see
experiments/smt_baseline.py for what each stage is.

Variants:
- smoke: the first 300 training pairs and 20 test2016 pairs (both sides <= 15 tokens), one
  IBM 2 iteration, stack 5, one MERT iteration on 10 val pairs; a few seconds, for tests:
  the pipeline, not BLEU.
- quick: exactly the NMT quick's data (experiments/configs/exposure_bias.py:quick,
  `translation.*`): the first 10,000 training pairs with both sides <= 15 tokens, scored on
  the 749 test2016 pairs with both sides <= 15 tokens; MERT on the 720 val pairs with both
  sides <= 15 tokens (tuning decodes at stack 30). Measured on the project's 2-vCPU machine
  (session 22, after Moses's orientation rule and MERT's merge of new derivations; shared
  with six review helpers): 24.0 minutes wall (alignment 23 s, MERT 1119 s for 6 decodes,
  decoding 293 s), 31.66 BLEU (copy the source 0.53). Session 20's code (with the decoder's
  own future-cost table): 31.76 in 20.5 minutes; restarts seeded 1: 32.17. Session 19's
  decoder (nltk's future costs): 31.89 and 31.46 in 12-14 minutes. With fixed weights
  (`--config.smt.mert_iterations=0`): 31.75 BLEU in ~4 minutes (the same translations
  with either table). Session 18's LM (nltk's
  Witten-Bell trigram, training singletons as <UNK>): 30.71 with MERT, 30.41 fixed. Before
  session 18 (no lexical weights, no lexicalised reordering, nltk's phrase extraction):
  30.14 with MERT, 29.08 with fixed weights; nltk's own search at stack 10 had given 24.81.
- full: all 29,000 training pairs and all 1,000 test2016 pairs (max_length 50 drops none,
  as the NMT full), MERT on all 1,014 val pairs at stack 100. Measured in session 20 (the
  machine shared with the quick SMT runs and the test suite): 34.97 BLEU, len/ref 1.033,
  90 minutes wall (alignment 244 s, tuning 4532 s for 6 decodes, decoding 605 s); val
  33.56 -> 36.42 in-sample. With fixed weights: 34.76 BLEU, len/ref 0.981, 12 minutes.
  With session 19's decoder (nltk's future costs) MERT had scored 33.96 (val 35.67), 0.77
  below the fixed weights' 34.74 (experiments/README.md). Session 18's LM (Witten-Bell
  trigram): 33.70 with fixed weights; before session 18's features 31.13; nltk's search at
  stack 10: 25.18.

Stack 100: where the decoder (recombination, Moses's reordering constraint) stops being
search-limited. On the first 200 val pairs (quick's system) stacks 10/30/50/100/200 gave
28.94/30.47/31.03/31.79/31.83 BLEU in 6/13/25/39/65 s of decoding, against 26.72/26.98 for
nltk's search at 10/30 (9/35 s); on the first 100, the best model score at stack 100 was
below stack 400's on 14 sentences (0.6 nats on average), at stack 30 on 38. Stack 30 would
keep quick near its old ~1.5 minutes (85 s, 28.19 BLEU); 100 costs about 1.5 minutes more
for 0.9 BLEU, taken because the NMT-vs-SMT comparison (Q16) should not rest on a
search-limited baseline.

MERT's starting weights (and the weights with `mert_iterations=0`): φ and lex both ways,
the LM and both lexicalised reordering scores at weight 1 (a plain product of the seven
models), no word or phrase penalty (nltk's default), distortion log(0.5) per word jumped
(nltk's default factor) with Moses's default distortion limit of 6. Session 16, before the
lexical and reordering features: on the first 200 val pairs, LM weight 0.5 or 1 x word
penalty -1, -0.5 or 0 gave 29.5-31.8 BLEU at stack 100, the untuned product (31.79) the best
of the six. MERT over session 17's six weights (quick's system then, test2016 BLEU): tuned on
the first 200 val pairs at stack 100, 29.22; on all 720 at stack 100, 30.22 (16 minutes of
tuning, machine shared); on all 720 at stack 30, 30.14 in a third of the time, hence quick's
settings: 200 sentences are too few to tune on (docs/design.md).
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
    # A 5-gram with the smoothing Moses recommends, interpolated modified Kneser-Ney as KenLM
    # estimates it (experiments/kneser_ney.py); "witten-bell" is nltk.lm's interpolated
    # Witten-Bell (the LM before session 19, a trigram). Chosen by val perplexity and val
    # BLEU (session 19, docs/design.md).
    s.lm_order = 5
    s.lm_smoothing = "modified-kneser-ney"
    # 1: every training word is in the LM (KenLM's default; <UNK> has the uniform's mass).
    # 2 (the Witten-Bell LM's, whose <UNK> otherwise has none): training singletons become
    # one <UNK>, so the LM rates them as a class; 0.56 BLEU lower on val (session 19).
    s.lm_unk_cutoff = 1
    s.weight_forward = 1.0  # log φ(e|f)
    s.weight_backward = 1.0  # log φ(f|e)
    s.weight_lexical_forward = 1.0  # log lex(e|f)
    s.weight_lexical_backward = 1.0  # log lex(f|e)
    s.weight_lm = 1.0
    s.word_penalty = 0.0  # nltk: score -= word_penalty per output word (< 0: longer output)
    s.distortion_factor = 0.5  # log(factor) per source word jumped (nltk's default)
    s.distortion_limit = 6  # Moses's default
    # Lexicalised reordering (Koehn et al. 2005): Moses's msd-bidirectional-fe, or "distance"
    # (the distortion penalty alone; the two reordering features stay 0).
    s.reordering = "msd-bidirectional-fe"
    s.weight_reordering_backward = 1.0  # log p(orientation | this pair), after the previous
    s.weight_reordering_forward = 1.0  # log p(orientation of the next phrase | this pair)
    s.stack_size = 100  # hypotheses per stack after recombination (histogram pruning)
    s.phrase_penalty = 0.0  # score -= phrase_penalty per phrase used (Moses's phrase penalty)
    # MERT (experiments/mert.py): Och's outer loop, at most this many re-decodes of the first
    # `tune_pairs` val pairs (0 = all; max_length applies) after the first; 0 = fixed weights
    # (the weights above).
    s.mert_iterations = 5
    s.tune_pairs = 0  # all 720 val pairs with both sides <= 15 tokens
    s.nbest = 100  # different translations per tuning sentence and decode
    s.mert_restarts = 5  # random starting points per optimisation, beside the current weights
    s.mert_seed = 0
    s.tune_stack_size = 30  # the tuning decodes' stack (0 = stack_size): ~3x faster than 100
    return config


def _smoke() -> ml_collections.ConfigDict:
    config = _base()
    s = config.smt
    s.max_train_pairs, s.max_eval_pairs = 300, 20
    s.ibm2_iterations, s.stack_size = 1, 5
    # One MERT iteration on 10 val pairs: the tuning path end to end, not its result.
    s.mert_iterations, s.tune_pairs, s.nbest, s.mert_restarts = 1, 10, 10, 1
    s.tune_stack_size = 0
    return config


def _quick() -> ml_collections.ConfigDict:
    return _base()


def _full() -> ml_collections.ConfigDict:
    config = _base()
    config.smt.max_length, config.smt.max_train_pairs = 50, 0  # exposure_bias full's data
    config.smt.tune_stack_size = 0  # tune at the scoring stack, 100, on all 1,014 val pairs
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    return select_variant("smt_baseline", variant, VARIANTS)


def get_sweep(variant: str | None = None) -> dict[str, list]:
    """Grid for `launch.sweep`: the word penalty x the LM weight (the two weights that set
    output length and fluency) with fixed weights (no MERT, which would move them), scored on
    val: a grid to choose weights from must not be scored on test2016, the config's split."""
    select_variant("smt_baseline", variant, VARIANTS)  # the same error for a bad variant
    return {
        "smt.word_penalty": [-1.0, -0.5, 0.0],
        "smt.weight_lm": [0.5, 1.0],
        "smt.mert_iterations": [0],
        "smt.eval_split": ["valid"],
    }
