"""Text from a trained `experiments.language_model` run (`--sample=N --prompt=...`): the
prompt as tokens of the run's vocabulary (`sample_prompt`, `check_prompt`) and its continuation,
sampled token by token with the model's streaming step (`generate`, on
`rnn_jax.decoding.sample_decode`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax import decoding
from rnn_jax.models import RNNLanguageModel
from rnn_jax.train import config as cfg


def check_prompt(prompt: list[str], vocab: list[str]) -> None:
    """Raises ValueError unless `prompt` is non-empty and every token is in `vocab`."""
    known = set(vocab)
    unknown = sorted({token for token in prompt if token not in known})
    if not prompt or unknown:
        raise ValueError(f"prompt must be non-empty and in the vocabulary; unknown: {unknown}")


def generate(
    model: RNNLanguageModel,
    vocab: list[str],
    prompt: list[str],
    num_tokens: int,
    rng: jax.Array,
    temperature: float = 1.0,
) -> list[str]:
    """Continue `prompt` (tokens of `vocab`) with `num_tokens` sampled tokens.

    The prompt runs through the model in one call; sampling then streams with `model.step`
    through `rnn_jax.decoding.sample_decode`, with an extra never-sampled end token so that the
    continuation has exactly `num_tokens` tokens.

    Raises:
      ValueError: an empty prompt or one with tokens outside `vocab` (`check_prompt`).
    """
    check_prompt(prompt, vocab)
    index = {token: i for i, token in enumerate(vocab)}
    ids = jnp.asarray([[index[token] for token in prompt]], jnp.int32)
    carry = model.zero_carry(1)
    if ids.shape[1] > 1:
        _, carry, _ = model(ids[:, :-1], carry)

    def step_fn(carry: list, tokens: jax.Array) -> tuple[list, jax.Array]:
        carry, logits = model.step(carry, tokens)
        never = jnp.full((logits.shape[0], 1), -jnp.inf, logits.dtype)
        return carry, jnp.concatenate([logits, never], axis=-1)

    tokens, _, _ = decoding.sample_decode(
        step_fn,
        carry,
        rng,
        bos_id=int(ids[0, -1]),
        eos_id=len(vocab),
        max_length=num_tokens,
        temperature=temperature,
    )
    return [vocab[i] for i in tokens[0].tolist()]


def sample_prompt(prompt: str, vocab: list[str], char_level: bool) -> list[str]:
    """`--prompt` as tokens of the run's vocabulary: its characters for a character-level run,
    else its whitespace-separated words.

    Raises:
      ConfigError: an empty prompt or one with tokens outside `vocab` (exit status 2, naming
        the flag and those tokens), before sampling starts.
    """
    tokens = list(prompt) if char_level else prompt.split()
    try:
        check_prompt(tokens, vocab)
    except ValueError as error:
        raise cfg.ConfigError(f"--prompt={prompt!r}: {error} (W/vocab.json)") from None
    return tokens
