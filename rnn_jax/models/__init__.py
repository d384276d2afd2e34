"""Models built from the core. `RNNLanguageModel` (`lm.py`) is the one RNN language model;
the other models (transformer, encoder, tagger, classifier, seq2seq) are imported from their
own modules, e.g. `from rnn_jax.models.seq2seq import Seq2Seq`."""

from rnn_jax.models.lm import RNNLanguageModel

__all__ = ["RNNLanguageModel"]
