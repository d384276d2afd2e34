"""Data for rnn_jax: corpora, vocabularies, batches and synthetic tasks, all numpy.

Batches are dicts of numpy arrays, batch-major (see `rnn_jax.data.batching`):
`{"inputs": int [batch, time], "targets": ..., "lengths": int32 [batch],
"mask": float32 [batch, time]}`; language-model streams give `{"inputs", "targets"}`
`[batch, steps]` with the state carried across batches.

Modules (one idea each):
  root        default_data_root(): config `data.root`, env RNN_JAX_DATA, or ../shared/data
  tokenize    word / character tokenisation
  vocab       Vocabulary: build (min_freq, max_size, specials), encode, save/load, OOV rate
  data_files  strict UTF-8 lines, DataFormatError / DataNotFoundError, FileReader, FileExamples
  readers     strict streaming readers: text, CoNLL-U, CoNLL columns, parallel, TSV, SST trees
  corpora     the real corpora's files, splits and sha256
  lm_corpus   LMCorpus (vocab + int32 token stream per split): ptb, tiny_shakespeare, markov
  batching    pad_batch, epoch_plan (shuffle + length buckets), sorted_eval_batches,
              BatchIterator (resumable), LMStream (Zaremba et al. 2014), LMEvalStream
              (every target once)
  synthetic   CopyTask, AddingProblem, EchoTask, TemporalOrder, MarkovLanguage (exact entropy rate)
"""

from rnn_jax.data.batching import (
    BatchIterator,
    LMEvalStream,
    LMStream,
    epoch_plan,
    pad_batch,
    repeat_epochs,
    sorted_eval_batches,
)
from rnn_jax.data.data_files import DataFormatError, DataNotFoundError
from rnn_jax.data.lm_corpus import LMCorpus, lm_corpus
from rnn_jax.data.root import default_data_root
from rnn_jax.data.synthetic import (
    AddingProblem,
    CopyTask,
    EchoTask,
    MarkovLanguage,
    TemporalOrder,
)
from rnn_jax.data.vocab import Vocabulary

__all__ = [
    "AddingProblem",
    "BatchIterator",
    "CopyTask",
    "DataFormatError",
    "DataNotFoundError",
    "EchoTask",
    "LMCorpus",
    "LMEvalStream",
    "LMStream",
    "MarkovLanguage",
    "TemporalOrder",
    "Vocabulary",
    "default_data_root",
    "epoch_plan",
    "lm_corpus",
    "pad_batch",
    "repeat_epochs",
    "sorted_eval_batches",
]
