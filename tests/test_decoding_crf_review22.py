"""Review 22 of decoding, CRF, attention, linear recurrences and cells: illegal inputs that
were accepted silently or crashed obscurely, and CRF marginals against enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import cells, crf, decoding, linear_scan
from rnn_jax.models.classifier import Classifier
from rnn_jax.models.seq2seq import Seq2Seq


def test_linear_recurrence_methods_agree_on_dtypes_and_refuse_mismatched_shapes():
    """A float32 h0 under float64 a, b failed inside lax.scan for "sequential" and ran for
    "associative"; a [1, features] h0 was broadcast over the batch by "associative" only."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.2, 1.0, (2, 5, 3)), rng.standard_normal((2, 5, 3))
    h0 = rng.standard_normal((2, 3)).astype(np.float32)
    h, reference = h0.astype(np.float64), []
    for t in range(5):
        h = a[:, t] * h + b[:, t]
        reference.append(h)
    with jax.enable_x64(True):
        for method in ("sequential", "associative"):
            hs = linear_scan.linear_recurrence(a, b, h0, method=method)
            assert hs.dtype == jnp.float64
            np.testing.assert_allclose(hs, np.stack(reference, axis=1), rtol=1e-12)
            with pytest.raises(ValueError, match=r"h0 \(1, 3\)"):
                linear_scan.linear_recurrence(a, b, h0[:1], method=method)
            empty = linear_scan.linear_recurrence(a[:, :0], b[:, :0], h0, method=method)
            assert empty.shape == (2, 0, 3)


def test_cell_options_may_be_zero_dimensional_arrays():
    """is_finite_number accepts a 0-d array, which then failed as an unhashable jit static
    argument; a NumPy integer batch size failed in `zero_carry` ('not iterable')."""
    cell = cells.get_cell("min_gru", method="sequential")
    key = jax.random.key(0)
    plain = cell.init(key, 3, 2, forget_bias=0.5, input_scale=2.0)
    arrays = cell.init(key, 3, 2, forget_bias=np.array(0.5), input_scale=jnp.array(2.0))
    jax.tree.map(np.testing.assert_array_equal, arrays, plain)
    chrono = cell.init(key, 3, 2, chrono_max_length=np.array(10.0))
    assert np.all(np.asarray(chrono["b_ih"][:2]) < 0)  # keep factor 1 - σ(z) = σ(-b_z) > 1/2
    assert cell.zero_carry(np.int64(4), 2).shape == (4, 2)


def _step(state, tokens):
    logits = jnp.stack([jnp.zeros_like(tokens, jnp.float32), jnp.ones_like(tokens, jnp.float32)])
    return state, jnp.concatenate([logits.T, jnp.zeros((tokens.shape[0], 2))], axis=-1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eos_id=1.5), "eos_id must be a non-negative int"),
        (dict(pad_id=0.5), "pad_id must be an int"),
        (dict(alpha=float("nan")), "alpha must be a finite number"),
        (dict(top_k=2.5), "top_k must be an int"),
    ],
)
def test_decoders_refuse_fractional_ids_nan_alpha_and_fractional_top_k(kwargs, match):
    """eos_id=1.5 never matched a token (no sequence ended, without a word), alpha=nan made
    every beam score NaN; pad_id=0.5 and top_k=2.5 failed inside lax.scan / lax.top_k."""
    state = jnp.zeros((2, 1))
    common = dict(bos_id=0, eos_id=1, max_length=3)
    top_k = kwargs.pop("top_k", None)
    with pytest.raises(ValueError, match=match):
        if top_k is not None:
            decoding.sample_decode(_step, state, jax.random.key(0), top_k=top_k, **common)
        elif "alpha" in kwargs:
            decoding.beam_search(_step, state, beam_size=2, **common, **kwargs)
        else:
            decoding.greedy_decode(_step, state, **{**common, **kwargs})


def test_attention_size_zero_is_refused_not_read_as_the_default():
    """`attention_size or size` turned an illegal 0 into the default size without a word."""
    options = dict(embed_size=3, hidden_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention_size=0 must be a positive int"):
        Classifier(5, 2, pooling="attention", attention_size=0, **options)
    with pytest.raises(ValueError, match="attention_size=0 must be a positive int"):
        Seq2Seq(5, 5, attention_size=0, **options)


def test_crf_refuses_float_lengths_and_tags():
    """A float length 2.5 passed the range check and log Z ran over 3 steps."""
    emissions = jnp.zeros((2, 3, 2))
    params = (jnp.zeros((2, 2)), jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="lengths must be integers"):
        crf.log_partition(emissions, jnp.array([2.5, 3.0]), *params)
    with pytest.raises(ValueError, match="tags must be integer"):
        crf.sequence_score(emissions, jnp.zeros((2, 3)), jnp.array([2, 3]), *params)


def test_log_partition_gradients_are_the_enumerated_marginals():
    """d log Z / d(emissions, transitions, start, end) are the posterior marginals of tags,
    tag pairs, first and last tags, brute-forced; padded positions get exactly zero."""
    rng = np.random.default_rng(1)
    tags, time, lengths = 3, 3, np.array([1, 3, 2])
    emissions = rng.normal(size=(3, time, tags))
    transitions, start, end = (
        rng.normal(size=(tags, tags)),
        rng.normal(size=tags),
        rng.normal(size=tags),
    )
    want = [np.zeros((3, time, tags)), np.zeros((tags, tags)), np.zeros(tags), np.zeros(tags)]
    for b, length in enumerate(lengths):
        paths = list(itertools.product(range(tags), repeat=int(length)))
        scores = np.array(
            [
                start[p[0]]
                + end[p[-1]]
                + sum(emissions[b, t, y] for t, y in enumerate(p))
                + sum(transitions[i, j] for i, j in itertools.pairwise(p))
                for p in paths
            ]
        )
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        for path, prob in zip(paths, probs, strict=True):
            want[0][b, np.arange(length), path] += prob
            for i, j in itertools.pairwise(path):
                want[1][i, j] += prob
            want[2][path[0]] += prob
            want[3][path[-1]] += prob
    total = lambda *args: jnp.sum(crf.log_partition(args[0], jnp.asarray(lengths), *args[1:]))
    got = jax.grad(total, argnums=(0, 1, 2, 3))(
        *(jnp.asarray(v, jnp.float32) for v in (emissions, transitions, start, end))
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got[0])[np.arange(time)[None, :] >= lengths[:, None]] == 0.0)
