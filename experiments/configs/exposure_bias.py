"""Teacher forcing, scheduled sampling and exposure bias (seed question 8; also 7, 16).

An LSTM language model is trained on fixed-length windows under five regimes: teacher
forcing (the gold previous token is always the input), scheduled sampling with linear,
exponential and inverse-sigmoid decay of the teacher-forcing probability ε_i (Bengio et al.
2015; each schedule is fitted to reach ε = `final_teacher_forcing` at step i = num_steps;
the last training batch is i = num_steps − 1), and free running (always the model's own
sampled token). Evaluation on held-out windows, from a gold prefix of `prefix` tokens:
- teacher-forced NLL at the positions after the prefix (prefix .. window, the positions the
  free-running NLL is measured at; not the whole-window validation loss);
- free-running NLL: the model's NLL of the gold token k steps after it started feeding on its
  own samples, and the gap to the teacher-forced NLL at the same position, as k grows. For a
  language model the gold continuation does not depend on the model's samples, so the gap
  measures how firmly the model follows its own history, not damage: the true Markov process,
  which has no exposure bias, has a large gap too (results.json `true_process`);
- on the Markov language (known entropy rate, rnn_jax.data.MarkovLanguage; `data.prefix` >=
  `data.markov_order`): the true process's NLL of the model's free-running samples at each
  generated position, beside the entropy rate (what the true process's own samples score on
  average). This, not the gap, says which regime generates better samples.

Command:
    python -m experiments.exposure_bias --workdir=runs/exposure_bias \
        --config=experiments/configs/exposure_bias.py:quick

Variants:
- smoke: Markov language, inverse-sigmoid scheduled sampling, 20 steps; seconds.
- quick: Markov language (V=16, order 2) and Tiny Shakespeare (characters, ../shared/data),
  5 regimes each; LSTM hidden 64 (Markov) / 128 (Shakespeare), windows of 48 tokens, 600 Adam
  steps, batch 32; plus Multi30k translation under 3 regimes (below); 2 seeds: 13 points,
  6.3 minutes on 2 idle CPU cores in session 21's main job (the translation part ~2 of them).
  Measured (experiments/README.md): teacher forcing gives the lowest teacher-forced NLL on
  both corpora and, on the Markov language, the free-running samples closest to the entropy
  rate (true-process NLL 2.447 against 3.72-3.82 for scheduled sampling and 3.98 for free
  running; entropy rate 2.109). The FR − TF gap at k = 1-16 is largest for teacher forcing
  (Markov 0.93-1.19, Tiny Shakespeare 1.9-4.4 nats), smaller for scheduled sampling (0.13-0.24,
  0.44-0.96) and about 0 for free running; on Tiny Shakespeare it grows over the first 16
  steps, on the Markov language it is about flat after the first steps, and the true process's
  own gap there is +1.78 nats averaged over the generated positions. Free running alone trains
  worst (teacher-forced NLL 2.769 Markov, 3.356 Tiny Shakespeare; "always sampling" was much
  worse in Bengio et al. 2015 too).
- full: the same on PTB words too, hidden 650, windows of 128, 20,000 steps, 5 seeds; and
  translation under all 5 regimes on the whole Multi30k training set (accelerator).

Translation (corpus 'multi30k', experiments/exposure_bias_translation.py; `translation.*`
keys): the attention encoder-decoder (rnn_jax.models.seq2seq.Seq2Seq: bidirectional LSTM encoder,
LSTM decoder with additive attention, Bahdanau et al. 2014, and input feeding, Luong et al.
2015) trained on Multi30k en->de (tokenised lower-cased tok/*.lc.norm.tok files) with teacher
forcing, scheduled sampling (the schedules above, decaying to `final_teacher_forcing` over
`translation.num_steps`; the fed-back token is the model's argmax, as in Bengio et al. 2015)
or free running. BLEU: sacrebleu's corpus BLEU with tokenize='none' on the tokenised text
(what multi-bleu.perl on these files gives), computed per seed inside the vmapped evaluation
from summed n-gram statistics (rnn_jax.bleu.bleu_statistics); greedy decoding and beam
search (beam 5, GNMT length penalty alpha 0.6, Wu et al. 2016), at most `max_decode_length`
tokens; baseline: the English source copied as the German output. The test numbers are the
last checkpoint's (`translation.select_by="last"`), or the best evaluation's by val TF NLL
or, with `translation.valid_bleu=True` (val decoded at every evaluation, its BLEU logged and
tabulated per evaluation), by val greedy or beam BLEU.
- quick: the first 10,000 training pairs with both sides <= 15 tokens, test2016 pairs <= 15
  tokens (749 of 1,000), vocabularies of tokens seen >= 3 times (2,195 en / 2,259 de),
  embeddings and hidden 64, no dropout, 500 Adam steps of 32 pairs (1.6 epochs), lr 3e-3;
  teacher forcing, inverse-sigmoid scheduled sampling, free running: about 5 CPU-minutes.
  Measured (experiments/README.md, 2 seeds): beam BLEU 5.96 ± 0.16 teacher forcing,
  4.87 ± 0.85 inverse-sigmoid scheduled sampling, 2.97 ± 0.19 free running (greedy 5.41 /
  4.47 / 3.01), copying the source 0.53 (mean ± population std over the 2 seeds). Both
  scheduled-sampling seeds' beam BLEU are below both teacher-forcing seeds' (by 0.08 at the
  closest); by greedy BLEU the seeds overlap. 29-31 BLEU below published (Multi30k en-de
  RNN+attention ~35-37 [U]), with 10,000 of the 29,000 training pairs, 749 of the 1,000
  test sentences, 64 units and 1.6 epochs; which difference costs how much is not measured
  (nmt_cpu below: 256 units and 19.2 epochs on the same pairs reach 31.58 / 31.19).
- full: all 29,000 pairs and all of test2016 (max_length 50 drops nothing), embeddings 256,
  hidden 512 (a bidirectional encoder of 2 x 512, as in common Multi30k baselines), dropout
  0.3, 20,000 steps of 128 pairs, lr 1e-3, beam 5, all 5 regimes.
- nmt_cpu: quick's data and teacher-forced translation model only, at 256 units, dropout 0.3
  and 6,000 steps (19.2 epochs), one seed: what a 2-core CPU trains in ~13.5 minutes, for
  Q16's comparison with experiments/smt_baseline.py (31.58 / 31.19 beam BLEU, seeds 0 / 1;
  the SMT 31.66 (session 22): level, p = 0.92 / 0.54).

Sources: Bengio, Vinyals, Jaitly & Shazeer 2015 (schedules: linear ε = max(ε_min, k − c·i),
exponential ε = k^i, inverse sigmoid ε = k/(k + exp(i/k))); Adam lr 3e-3, clip 1.
"""

import ml_collections

from rnn_jax.train.config import base_config, select_variant

REGIMES = ("teacher_forcing", "linear", "exponential", "inverse_sigmoid", "free_running")
CORPORA = ("markov", "tiny_shakespeare", "ptb", "multi30k")


def _base() -> ml_collections.ConfigDict:
    config = base_config()
    config.num_seeds = 2
    config.grid = ml_collections.ConfigDict()
    config.grid.corpora = "markov,tiny_shakespeare,multi30k"
    config.grid.regimes = ",".join(REGIMES)  # language-model corpora
    config.grid.translation_regimes = "teacher_forcing,inverse_sigmoid,free_running"

    config.model.cell = "lstm"
    config.model.hidden_size = 64  # Markov; model.real_hidden_size for a real corpus
    config.model.real_hidden_size = 128

    config.data.root = ""  # empty: $RNN_JAX_DATA or ../shared/data
    config.data.window = 48  # tokens per training window (markov)
    config.data.real_window = 48  # tokens per training window (real corpus; 96 before the
    # translation part joined quick, which then ran ~10 min on its own)
    config.data.prefix = 16  # gold tokens before free-running generation starts
    config.data.eval_batches = 4
    config.data.markov_vocab_size = 16
    config.data.markov_order = 2
    config.data.markov_concentration = 0.5
    config.data.markov_seed = 0

    config.schedule_sampling = ml_collections.ConfigDict()
    # ε_i at i = train.num_steps (decaying regimes; the last batch, i = num_steps − 1, sees
    # one step's decay more); 0 and 1 do not fit the exponential schedule k^i
    config.schedule_sampling.final_teacher_forcing = 0.25

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

    # Multi30k en->de (corpus 'multi30k'); these replace train.*/optimizer.learning_rate there.
    config.translation = t = ml_collections.ConfigDict()
    t.max_length = 15  # tokens per side, train and evaluation sentences (others dropped)
    t.max_train_pairs = 10_000  # the first pairs of train that fit; 0 = all
    t.max_eval_pairs = 0  # 0 = every val/test2016 pair that fits
    t.min_freq = 3  # vocabulary: training tokens seen at least 3 times, the rest <unk>
    t.cell = "lstm"
    t.attention = "additive"  # Bahdanau et al. 2014
    t.embed_size = 64
    t.hidden_size = 64  # bidirectional encoder: memory 2 x 64
    t.num_layers = 1
    t.dropout = 0.0  # 1.6 epochs: underfitting, not overfitting, limits quick
    t.num_steps = 500
    t.batch_size = 32
    t.learning_rate = 3e-3
    t.log_every = 50
    t.eval_every = 250
    t.checkpoint_every = 250
    t.time_multiple = 16  # sentences padded to a multiple of this: max_length + 1 = one shape
    t.eval_batch_size = 256  # evaluation batches are filled up to this (one compile)
    t.beam_size = 5
    t.length_penalty_alpha = 0.6  # GNMT ((5 + n) / 6)^alpha, Wu et al. 2016
    t.max_decode_length = 20  # max_length + 5: room for a longer translation
    # Also decode val at every evaluation (greedy and beam BLEU in metrics.jsonl and in the
    # report's per-evaluation table): one more decode of val per evaluation.
    t.valid_bleu = False
    # The checkpoint scored on test: "last", or the best evaluation by valid_tf_nll,
    # valid_greedy_bleu or valid_beam_bleu (the BLEU ones need valid_bleu).
    t.select_by = "last"
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
    t = config.translation  # only with --config.grid.corpora=multi30k (needs the real data)
    t.max_length, t.max_train_pairs, t.max_eval_pairs, t.min_freq = 8, 256, 32, 1
    t.embed_size, t.hidden_size, t.dropout = 8, 8, 0.0
    t.num_steps, t.batch_size, t.log_every, t.eval_every, t.checkpoint_every = 10, 8, 5, 10, 10
    t.time_multiple, t.eval_batch_size, t.beam_size, t.max_decode_length = 9, 16, 2, 8
    config.grid.translation_regimes = "inverse_sigmoid"
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
    config.grid.translation_regimes = ",".join(REGIMES)
    t = config.translation
    t.max_length, t.max_train_pairs, t.min_freq = 50, 0, 2  # all 29,000 pairs, all of test2016
    t.learning_rate = 1e-3
    t.embed_size, t.hidden_size, t.dropout = 256, 512, 0.3
    t.num_steps, t.batch_size = 20_000, 128
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1000, 1000
    t.time_multiple, t.eval_batch_size, t.max_decode_length = 8, 256, 80
    return config


def _nmt_cpu() -> ml_collections.ConfigDict:
    """Q16's CPU-budget NMT: quick's Multi30k data and teacher-forced model, 256 units,
    dropout 0.3, 6,000 steps (19.2 epochs), one seed; ~13.5 minutes on 2 idle CPU cores.
    Measured (experiments/README.md, Q16): 31.58 / 31.19 beam BLEU for seeds 0 / 1
    (`--config.seed=1`), 0.08 / 0.47 below the phrase-based SMT on the same pairs (31.66,
    session 22: MERT, lexical weights, lexicalised reordering, Kneser-Ney 5-gram LM; p = 0.92
    / 0.54: level); 2.1-2.5 above it (p < 0.01) before the SMT had MERT and those models."""
    config = _base()
    config.num_seeds = 1
    config.grid.corpora = "multi30k"
    config.grid.translation_regimes = "teacher_forcing"
    t = config.translation
    t.embed_size, t.hidden_size, t.dropout = 256, 256, 0.3
    t.num_steps, t.eval_every, t.checkpoint_every = 6000, 2000, 2000
    return config


VARIANTS = {"smoke": _smoke, "quick": _quick, "full": _full, "nmt_cpu": _nmt_cpu}


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    return select_variant("exposure_bias", variant, VARIANTS)


def get_sweep(variant: str = "quick") -> list[dict]:
    """One run per (corpus, regime) of the variant's grid; Multi30k's regimes are
    grid.translation_regimes."""
    config = get_config(variant)
    corpora = config.grid.corpora.split(",")
    runs = [
        {"grid.corpora": corpus, "grid.regimes": regime}
        for corpus in corpora
        if corpus != "multi30k"
        for regime in config.grid.regimes.split(",")
    ]
    if "multi30k" in corpora:
        runs += [
            {"grid.corpora": "multi30k", "grid.translation_regimes": regime}
            for regime in config.grid.translation_regimes.split(",")
        ]
    return runs
