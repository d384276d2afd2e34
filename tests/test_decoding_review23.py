"""Review 23 of decoding, attention and scheduled sampling: sampling at extreme temperatures,
attention masks that are not boolean, and schedules whose epsilon came out NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import attention, decoding, scheduled_sampling

LOGITS = jnp.array([1.0, 3.0, 2.0])  # argmax 1, then 2: neither is the lowest id


def _sampled_tokens(temperature: float, top_k: int | None) -> set[int]:
    def step(state, tokens):
        return state, jnp.broadcast_to(LOGITS, (tokens.shape[0], LOGITS.shape[0]))

    tokens, _, _ = decoding.sample_decode(
        step,
        jnp.zeros((200,)),
        jax.random.key(0),
        bos_id=0,
        eos_id=2,
        max_length=1,
        temperature=temperature,
        top_k=top_k,
    )
    return set(np.unique(np.asarray(tokens[:, 0])).tolist())


def test_sampling_keeps_the_greedy_and_top_k_limits_at_extreme_temperatures():
    """logits / temperature overflowed to +inf for every token at a tiny temperature, so the
    sampler drew token 0 instead of the argmax; at a huge one it underflowed to 0 for every
    token, so `top_k` kept the lowest ids instead of the most likely tokens (top_k=1 was then
    not greedy, against the docstring). An infinite temperature did the same and is refused."""
    assert _sampled_tokens(1e-40, None) == {1}
    assert _sampled_tokens(1e38, 2) == {1, 2}  # was {0, 1}
    with pytest.raises(ValueError, match="temperature"):
        _sampled_tokens(float("inf"), None)


def test_attention_refuses_a_mask_that_is_not_boolean():
    """An additive float mask (0 = attend, -inf = blocked, PyTorch's `attn_mask` convention)
    was read as `where(mask, ...)`: -inf is truthy, so only the blocked position was attended
    ([[0, 0, 1]] here) and rows of zeros got no weight at all, without an error."""
    scores = jnp.array([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="mask must be boolean.*float32"):
        attention.masked_softmax(scores, jnp.array([[0.0, 0.0, -jnp.inf]]))
    q = jnp.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="mask must be boolean"):
        attention.scaled_dot_product_attention(q, q, q, jnp.array([[0.0, -jnp.inf], [0.0, 0.0]]))
    module = attention.make_attention("dot", 2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mask must be boolean.*int32"):
        module(jnp.ones((1, 2)), jnp.ones((1, 3, 2)), jnp.array([[1, 1, 0]]))


@pytest.mark.parametrize(
    "name, options",
    [
        ("linear", dict(k=float("nan"), c=0.1)),
        ("linear", dict(k=1.0, c=float("inf"))),
        ("inverse_sigmoid", dict(k=float("nan"))),
        ("inverse_sigmoid", dict(k=float("inf"))),
    ],
)
def test_schedules_refuse_parameters_that_make_epsilon_nan(name, options):
    """These schedules returned NaN (c=inf: NaN at step 0 only, from inf * 0); under jit a NaN
    probability cannot be checked and `u < NaN` never holds, so training ran free-running."""
    with pytest.raises(ValueError, match=name):
        scheduled_sampling.teacher_forcing_schedule(name, **options)
