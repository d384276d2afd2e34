"""encoder_options: an experiment's `config.model` -> the SequenceEncoder it describes."""

import ml_collections
from flax import nnx

from rnn_jax.models.classifier import Classifier
from rnn_jax.models.encoder import encoder_options
from rnn_jax.models.tagger import Tagger


def test_encoder_options_take_only_the_encoder_keys_the_config_sets():
    model = ml_collections.ConfigDict(
        {"kind": "rnn", "cell": "gru", "embed_size": 6, "hidden_size": 5, "pooling": "max"}
    )
    model.bidirectional = False
    model.head = "crf"
    options = encoder_options(model)
    assert options == {
        "kind": "rnn",
        "cell": "gru",
        "embed_size": 6,
        "hidden_size": 5,
        "bidirectional": False,
    }
    classifier = Classifier(9, 2, pooling=model.pooling, rngs=nnx.Rngs(0), **options)
    assert classifier.encoder.output_size == 5  # unidirectional, as configured
    assert type(classifier.encoder.rnn.cell).__name__ == "GRU"


def test_encoder_options_build_the_transformer_baseline():
    model = ml_collections.ConfigDict(
        {
            "kind": "transformer",
            "embed_size": 8,
            "hidden_size": 8,
            "num_heads": 2,
            "num_layers": 3,
            "max_length": 12,
            "positions": "sinusoidal",
            "head": "softmax",
        }
    )
    tagger = Tagger(9, 4, head=model.head, rngs=nnx.Rngs(0), **encoder_options(model))
    transformer = tagger.encoder.transformer
    assert len(transformer.stack.blocks) == 3
    assert transformer.embed.max_length == 12
    assert transformer.stack.blocks[0].self_attention.num_heads == 2
    assert not isinstance(transformer.embed.position, nnx.Param)  # a fixed sinusoid table
