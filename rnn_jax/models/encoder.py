"""The token encoder taggers, classifiers and seq2seq share: embeddings -> (Bi)RNN, transformer
or a context-free bag.

  word embedding [+ character-level BiRNN word features (Lample et al. 2016)]
    -> dropout -> rnn_jax.modules.RNN (stacked, optionally bidirectional)
                  or rnn_jax.models.transformer.TransformerEncoder (the baseline)
                  or, kind='bag', tanh(W x_t + b) at each position alone
    -> dropout -> states [batch, time, output_size]

kind='bag' mixes nothing across positions: a token's state depends on that token (and its
characters) only, so states permute with the tokens. Under a tagger it is a per-word
classifier; under a classifier with mean pooling it is a neural bag of words, the deep
averaging network of Iyyer et al. (2015) with one hidden layer before the average. It is the
no-context, no-order reference of `experiments.word_order`.

A unidirectional RNN encoder also runs one token at a time (`zero_carry`, `step`), in
constant memory, with the same numbers as the full pass.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax.layers import dropout
from rnn_jax.models.checks import (
    check_choice,
    check_ids,
    check_positive,
    check_rates,
    check_sequences,
    check_step_tokens,
    length_mask,
)
from rnn_jax.models.transformer import TransformerEncoder
from rnn_jax.modules import RNN
from rnn_jax.scan_checks import check_length_range

ENCODER_KINDS = ("rnn", "transformer", "bag")

# SequenceEncoder's architecture arguments, as an experiment's `config.model` names them.
ENCODER_OPTIONS = (
    "kind",
    "embed_size",
    "hidden_size",
    "cell",
    "num_layers",
    "bidirectional",
    "dropout_rate",
    "num_heads",
    "max_length",
    "positions",
)


def _split(rng: jax.Array | None, num: int) -> list:
    return [None] * num if rng is None else list(jax.random.split(rng, num))


def encoder_options(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The SequenceEncoder keyword arguments (ENCODER_OPTIONS) that `model_config` (e.g. an
    experiment's `config.model` ConfigDict) sets; the others keep SequenceEncoder's defaults,
    and keys that are not encoder options (pooling, head, ...) are left to the caller."""
    return {name: model_config[name] for name in ENCODER_OPTIONS if name in model_config}


def config_problems(model_config: Mapping[str, Any]) -> list[str]:
    """What SequenceEncoder would refuse in an experiment's `config.model` only once it is
    built (after the data is read), across keys no single-key rule sees, each naming the
    keys: a transformer's `num_heads` must divide `hidden_size`, a transformer reads both
    directions (`bidirectional=False` is refused), a classifier's `pooling='last'` (where the
    experiment has `pooling`) needs an RNN encoder, and character features (`char_features`,
    where the experiment has them) need an RNN or bag encoder."""
    problems = []
    kind, heads, width = (model_config.get(k) for k in ("kind", "num_heads", "hidden_size"))
    if kind == "transformer" and isinstance(heads, int) and heads > 0 and width % heads:
        problems.append(
            f"model.num_heads={heads}: must divide model.hidden_size={width} (the "
            "transformer's width)"
        )
    if kind == "transformer" and not model_config.get("bidirectional", True):
        problems.append(
            f"model.bidirectional={model_config['bidirectional']!r}: has no effect on a "
            "transformer encoder, which attends in both directions (set "
            "--config.model.bidirectional=true for model.kind='transformer')"
        )
    if kind in ("transformer", "bag") and model_config.get("pooling") == "last":
        problems.append(
            f"model.pooling='last': needs model.kind='rnn', got model.kind={kind!r} (use "
            "mean, max or attention pooling)"
        )
    if kind == "transformer" and model_config.get("char_features"):
        problems.append(
            "model.char_features=True: character features need model.kind='rnn' or 'bag' "
            "(set --config.model.char_features=false for the transformer)"
        )
    return problems


def position_problems(
    model_config: Mapping[str, Any], splits: dict[str, list[dict]], time_multiple: int
) -> list[str]:
    """What a transformer encoder would refuse only when a batch of long sentences reaches it
    (mid-training, or at the first evaluation), for an experiment's `config.model` once its
    data is read: `model.max_length` positions must cover the longest sentence of every split
    padded to a multiple of `time_multiple` (the widest batch `pad_batch` builds).
    `splits`: `{split: [{"inputs": int [time], ...}]}`."""
    if model_config.get("kind") != "transformer":
        return []
    longest = max(len(e["inputs"]) for examples in splits.values() for e in examples)
    padded = -(-longest // time_multiple) * time_multiple
    if padded <= model_config["max_length"]:
        return []
    return [
        f"model.max_length={model_config['max_length']}: the transformer's positions must "
        f"cover the longest sentence, {longest} tokens, padded to {padded} (a multiple of "
        f"data.time_multiple={time_multiple})"
    ]


def first_and_last(states: jax.Array, lengths: jax.Array, hidden_size: int) -> jax.Array:
    """Sentence vector of a concatenating BiRNN: forward state at `length - 1` ++ backward
    state at 0. states [batch, time, 2 * hidden] -> [batch, 2 * hidden]."""
    last = jnp.take_along_axis(states, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return jnp.concatenate([last[:, :hidden_size], states[:, 0, hidden_size:]], axis=-1)


class CharEncoder(nnx.Module):
    """Character BiRNN word features (Lample et al. 2016): chars [batch, time, chars] -> the
    final forward and backward states of each word, [batch, time, 2 * char_hidden_size]."""

    def __init__(
        self, num_chars: int, embed_size: int, hidden_size: int, cell: str, *, rngs: nnx.Rngs
    ):
        check_positive(
            num_chars=num_chars, char_embed_size=embed_size, char_hidden_size=hidden_size
        )
        self.num_chars = num_chars
        self.hidden_size = hidden_size
        self.embed = nnx.Embed(num_chars, embed_size, rngs=rngs)
        self.rnn = RNN(cell, embed_size, hidden_size, bidirectional=True, rngs=rngs)

    def __call__(self, chars: jax.Array, char_lengths: jax.Array) -> jax.Array:
        """chars [batch, time, width], char_lengths [batch, time] -> [batch, time, 2 * hidden].
        Characters past a word's char_length are padding and may hold any id."""
        batch, time, width = chars.shape
        # Else the char RNN's own check names the flattened `lengths` and `time=width`. 0 is a
        # padded word's (it runs as one padding character, zeroed by SequenceEncoder).
        check_length_range(
            char_lengths, width, name="char_lengths", low=0, time_name="chars.shape[2]"
        )
        real = jnp.arange(width) < jnp.asarray(char_lengths)[..., None]
        check_ids("chars", chars, self.num_chars, "num_chars", real)
        # As for tokens: an out-of-range padding id embeds as NaN, and the RNN's masking
        # keeps the forward pass finite but not the gradients (0 * NaN).
        chars = jnp.where(real, chars, 0)
        flat_lengths = jnp.maximum(char_lengths.reshape(-1), 1)  # padded words: 1 pad char
        states, _ = self.rnn(self.embed(chars.reshape(batch * time, width)), flat_lengths)
        return first_and_last(states, flat_lengths, self.hidden_size).reshape(batch, time, -1)


class SequenceEncoder(nnx.Module):
    """tokens [batch, time] (+ chars) -> contextual states [batch, time, output_size].

    Args:
      vocab_size, embed_size, hidden_size: sizes (transformer: d_model = hidden_size).
      kind: 'rnn', 'transformer' or 'bag' (position-wise Dense(hidden_size) + tanh, no context;
        output_size = hidden_size).
      cell, num_layers, bidirectional: the RNN stack (rnn_jax.modules.RNN); a transformer
        uses num_layers, ignores cell and refuses bidirectional=False (it reads both ways).
      dropout_rate: on embeddings, between RNN layers and on the output states.
      num_chars, char_embed_size, char_hidden_size: character features if num_chars is set.
      num_heads, max_length, positions: transformer options ('learned' or 'sinusoidal').
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        embed_size: int,
        hidden_size: int,
        kind: str = "rnn",
        cell: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout_rate: float = 0.0,
        num_chars: int | None = None,
        char_embed_size: int = 25,
        char_hidden_size: int = 25,
        num_heads: int = 4,
        max_length: int = 512,
        positions: str = "learned",
        rngs: nnx.Rngs,
    ):
        check_choice("kind", kind, ENCODER_KINDS)
        if kind == "transformer" and not bidirectional:
            # It built the same (non-causal) transformer: a "unidirectional" baseline that
            # saw every later token. `cell` is not refused: it is inert here, and a sweep's
            # `--set model.cell=gru` reaches its transformer points too.
            raise ValueError(
                f"bidirectional={bidirectional!r} has no effect on a transformer encoder "
                "(kind='transformer'), which attends in both directions; leave it True"
            )
        check_positive(vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size)
        check_rates(dropout_rate=dropout_rate)
        self.kind = kind
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.dropout_rate = dropout_rate
        self.bidirectional = bidirectional and kind == "rnn"
        self.chars = (
            None
            if num_chars is None
            else CharEncoder(num_chars, char_embed_size, char_hidden_size, cell, rngs=rngs)
        )
        input_size = embed_size + (0 if num_chars is None else 2 * char_hidden_size)
        if kind == "bag":
            self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
            self.position_wise = nnx.Linear(input_size, hidden_size, rngs=rngs)
            self.output_size = hidden_size
        elif kind == "rnn":
            self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
            self.rnn = RNN(
                cell,
                input_size,
                hidden_size,
                num_layers=num_layers,
                bidirectional=bidirectional,
                dropout=dropout_rate,
                rngs=rngs,
            )
            self.output_size = hidden_size * (2 if bidirectional else 1)
        else:
            if num_chars is not None:
                # The bag takes them too (config_problems says so); 'rnn' alone misled.
                raise ValueError(
                    f"num_chars={num_chars}: character features need kind='rnn' or 'bag', got "
                    f"kind={kind!r}"
                )
            self.transformer = TransformerEncoder(
                vocab_size,
                d_model=hidden_size,
                num_heads=num_heads,
                num_layers=num_layers,
                max_length=max_length,
                positions=positions,
                dropout_rate=dropout_rate,
                rngs=rngs,
            )
            self.output_size = hidden_size

    def _inputs(
        self, tokens: jax.Array, chars: jax.Array | None, char_lengths: jax.Array | None
    ) -> jax.Array:
        x = self.embed(tokens)
        if self.chars is not None:
            if chars is None or char_lengths is None:
                raise ValueError("this encoder has character features: pass chars and char_lengths")
            x = jnp.concatenate([x, self.chars(chars, char_lengths)], axis=-1)
        return x

    def __call__(
        self,
        tokens: jax.Array,
        lengths: jax.Array,
        *,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, list | None]:
        """tokens [batch, time], lengths [batch], chars [batch, time, max_chars] ->
        (states [batch, time, output_size], final RNN carries per layer (None: transformer,
        bag)). A bag's states are 0 past each length."""
        check_sequences("tokens", tokens)
        # the RNN checks too; a bag or transformer not (a [1] lengths was broadcast under jit)
        check_length_range(lengths, tokens.shape[1], batch=tokens.shape[0])
        mask = length_mask(lengths, tokens.shape[1])
        check_ids("tokens", tokens, self.vocab_size, "vocab_size", mask)
        # Padding may hold any id, but an out-of-range one embeds as NaN (nnx.Embed), and
        # masking later is too late: 0 * NaN is NaN in attention and in the RNN's gradients.
        tokens = jnp.where(mask, tokens, 0)
        if char_lengths is not None:
            # A padded word's characters are padding too: as empty words they are not checked
            # and their ids are zeroed (CharEncoder), whatever the batch holds there.
            char_lengths = jnp.where(mask, char_lengths, 0)
        input_rng, rnn_rng, output_rng = _split(rng, 3)
        if self.kind == "transformer":
            states, carries = self.transformer(tokens, lengths, rng=rnn_rng), None
        elif self.kind == "bag":
            x = dropout(input_rng, self.dropout_rate, self._inputs(tokens, chars, char_lengths))
            states = jnp.where(mask[:, :, None], jnp.tanh(self.position_wise(x)), 0.0)
            carries = None
        else:
            x = dropout(input_rng, self.dropout_rate, self._inputs(tokens, chars, char_lengths))
            states, carries = self.rnn(x, lengths, rng=rnn_rng)
        return dropout(output_rng, self.dropout_rate, states), carries

    def zero_carry(self, batch_size: int) -> list:
        self._check_streaming()
        return self.rnn.zero_carry(batch_size)

    def step(
        self,
        carries: list,
        tokens: jax.Array,
        chars: jax.Array | None = None,
        char_lengths: jax.Array | None = None,
    ) -> tuple[list, jax.Array]:
        """One token per sequence: tokens [batch] (chars [batch, max_chars]) ->
        (carries, state [batch, output_size]); evaluation mode."""
        self._check_streaming()
        check_ids("tokens", tokens, self.vocab_size, "vocab_size")
        check_step_tokens(tokens, carries)
        x = self._inputs(
            tokens[:, None],
            None if chars is None else chars[:, None],
            None if char_lengths is None else char_lengths[:, None],
        )
        return self.rnn.step(carries, x[:, 0])

    def _check_streaming(self) -> None:
        # A bag could stream (each state is its token's alone) but nothing needs it: refused
        # rather than kept untested.
        if self.kind != "rnn" or self.bidirectional:
            raise ValueError(
                f"step needs a unidirectional RNN encoder, got kind={self.kind!r}, "
                f"bidirectional={self.bidirectional}"
            )
