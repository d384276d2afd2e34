"""Models built from the core: the RNN language model (`lm.RNNLanguageModel`)."""

from rnn_jax.models.lm import RNNLanguageModel

__all__ = ["RNNLanguageModel"]
