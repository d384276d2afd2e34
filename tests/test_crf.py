"""CRF against brute-force enumeration of every tag path (numpy, written from the definition):
scores, `log_partition` and its gradients (the enumerated marginals); float lengths and tags
are refused."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnn_jax import crf

NUM_TAGS = 3
TIME = 4
LENGTHS = np.array([4, 1, 3, 2])


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    batch = len(LENGTHS)
    emissions = rng.normal(size=(batch, TIME, NUM_TAGS))
    transitions = rng.normal(size=(NUM_TAGS, NUM_TAGS))
    start = rng.normal(size=NUM_TAGS)
    end = rng.normal(size=NUM_TAGS)
    return emissions, transitions, start, end


def _path_score(emission, path, transitions, start, end):
    score = start[path[0]] + end[path[-1]]
    score += sum(emission[t, y] for t, y in enumerate(path))
    score += sum(transitions[a, b] for a, b in zip(path[:-1], path[1:], strict=True))
    return score


def _brute_force(emissions, transitions, start, end):
    """Per sequence: (log Z, best path, best score) by enumerating all num_tags**L paths."""
    results = []
    for emission, length in zip(emissions, LENGTHS, strict=True):
        paths = list(itertools.product(range(NUM_TAGS), repeat=int(length)))
        scores = np.array([_path_score(emission, p, transitions, start, end) for p in paths])
        best = int(np.argmax(scores))
        log_z = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
        results.append((log_z, paths[best], scores[best]))
    return results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_partition_and_viterbi_match_enumeration(seed):
    emissions, transitions, start, end = _random_case(seed)
    args = (jnp.asarray(LENGTHS), transitions, start, end)
    log_z = crf.log_partition(jnp.asarray(emissions), *args)
    tags, scores = crf.viterbi_decode(jnp.asarray(emissions), *args)
    for b, (ref_log_z, ref_path, ref_score) in enumerate(
        _brute_force(emissions, transitions, start, end)
    ):
        np.testing.assert_allclose(log_z[b], ref_log_z, rtol=1e-5)
        np.testing.assert_allclose(scores[b], ref_score, rtol=1e-5)
        length = LENGTHS[b]
        assert tuple(np.asarray(tags[b, :length])) == ref_path
        assert np.all(np.asarray(tags[b, length:]) == 0)


def _check_sequence_scores(emissions, tags, transitions, start, end):
    """`sequence_score` of `tags` (padded with -100 past LENGTHS) against `_path_score`."""
    padded = np.where(np.arange(TIME)[None, :] < LENGTHS[:, None], tags, -100)
    got = crf.sequence_score(
        jnp.asarray(emissions), jnp.asarray(padded), jnp.asarray(LENGTHS), transitions, start, end
    )
    for b, length in enumerate(LENGTHS):
        ref = _path_score(emissions[b], tuple(tags[b, :length]), transitions, start, end)
        np.testing.assert_allclose(got[b], ref, rtol=1e-5)


def test_sequence_score_matches_definition_and_ignores_padding():
    emissions, transitions, start, end = _random_case(3)
    tags = np.random.default_rng(4).integers(0, NUM_TAGS, size=(len(LENGTHS), TIME))
    _check_sequence_scores(emissions, tags, transitions, start, end)


def test_sequence_score_with_forbidden_transitions_into_padding():
    """A -inf transition from the last real tag into the (clipped) padding tag must not touch
    the score: masking by a 0/1 product would give -inf * 0 = NaN."""
    emissions, transitions, start, end = _random_case(11)
    transitions[1:, 0] = -np.inf  # every tag but 0 is forbidden to precede tag 0
    tags = np.array([[0, 1, 2, 1], [2, 0, 0, 0], [1, 2, 1, 0], [0, 2, 0, 0]])
    _check_sequence_scores(emissions, tags, transitions, start, end)


def test_unreachable_tag_gives_the_smaller_crfs_values_and_finite_gradients():
    """Tag 2 made unreachable by -inf scores (no start, no transition into it but from itself):
    log Z, the NLL and their gradients equal those of the 2-tag CRF without it, and tag 2's
    gradients are zero. `jax.nn.logsumexp` over its all--inf column gives NaN gradients."""
    emissions, transitions, start, end = _random_case(12)
    start[2] = -np.inf
    transitions[:2, 2] = -np.inf
    tags = jnp.asarray(np.random.default_rng(13).integers(0, 2, size=(len(LENGTHS), TIME)))
    lengths = jnp.asarray(LENGTHS)

    def loss(emissions, transitions, start, end):
        return jnp.sum(crf.crf_nll(emissions, tags, lengths, transitions, start, end))

    full = (jnp.asarray(emissions), jnp.asarray(transitions), jnp.asarray(start), end)
    small = (full[0][..., :2], full[1][:2, :2], full[2][:2], end[:2])
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*full)
    ref_value, ref_grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*small)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(grads[0][..., :2], ref_grads[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1][:2, :2], ref_grads[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[2][:2], ref_grads[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[3][:2], ref_grads[3], rtol=1e-5, atol=1e-6)
    for g in (grads[0][..., 2], grads[1][:, 2], grads[2][2], grads[3][2]):
        np.testing.assert_array_equal(np.asarray(g), 0.0)
    brute = _brute_force(emissions, transitions, start, end)
    log_z = crf.log_partition(full[0], lengths, *full[1:])
    np.testing.assert_allclose(log_z, [r[0] for r in brute], rtol=1e-5)


def test_probabilities_of_all_paths_sum_to_one():
    emissions, transitions, start, end = _random_case(5)
    lengths = jnp.full((len(LENGTHS),), TIME)
    log_z = crf.log_partition(jnp.asarray(emissions), lengths, transitions, start, end)
    paths = np.array(list(itertools.product(range(NUM_TAGS), repeat=TIME)))
    total = 0.0
    for path in paths:
        tags = jnp.broadcast_to(jnp.asarray(path), (len(LENGTHS), TIME))
        score = crf.sequence_score(jnp.asarray(emissions), tags, lengths, transitions, start, end)
        total = total + jnp.exp(score - log_z)
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_nll_nonnegative_and_gradient_matches_finite_differences():
    emissions, transitions, start, end = _random_case(6)
    rng = np.random.default_rng(7)
    tags = jnp.asarray(rng.integers(0, NUM_TAGS, size=(len(LENGTHS), TIME)))
    lengths = jnp.asarray(LENGTHS)
    nll = crf.crf_nll(jnp.asarray(emissions), tags, lengths, transitions, start, end)
    assert np.all(np.asarray(nll) >= 0)

    def loss(emissions, transitions, start, end):
        return jnp.sum(crf.crf_nll(emissions, tags, lengths, transitions, start, end))

    with jax.enable_x64(True):
        args = tuple(
            jnp.asarray(a, dtype=jnp.float64) for a in (emissions, transitions, start, end)
        )
        # jit: finite differences evaluate the loss many times; compile it once.
        check_grads(jax.jit(loss), args, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_jit_compiles_with_traced_tags_and_lengths():
    emissions, transitions, start, end = _random_case(8)
    tags = jnp.zeros((len(LENGTHS), TIME), jnp.int32)
    eager = crf.crf_nll(jnp.asarray(emissions), tags, jnp.asarray(LENGTHS), transitions, start, end)
    jitted = jax.jit(crf.crf_nll)(
        jnp.asarray(emissions), tags, jnp.asarray(LENGTHS), transitions, start, end
    )
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)


@pytest.mark.parametrize(
    "tags_value, match",
    [(NUM_TAGS, "tags must lie in"), (-1, "tags must lie in")],
)
def test_out_of_range_tags_raise(tags_value, match):
    emissions, transitions, start, end = _random_case(9)
    tags = jnp.full((len(LENGTHS), TIME), tags_value)
    with pytest.raises(ValueError, match=match):
        crf.sequence_score(
            jnp.asarray(emissions), tags, jnp.asarray(LENGTHS), transitions, start, end
        )


def test_bad_shapes_and_lengths_raise():
    emissions, transitions, start, end = _random_case(10)
    e = jnp.asarray(emissions)
    with pytest.raises(ValueError, match="transitions must have shape"):
        crf.log_partition(e, jnp.asarray(LENGTHS), transitions[:2], start, end)
    with pytest.raises(ValueError, match="lengths must lie in"):
        crf.log_partition(e, jnp.asarray([5, 1, 1, 1]), transitions, start, end)
    with pytest.raises(ValueError, match="start_transitions"):
        crf.viterbi_decode(e, jnp.asarray(LENGTHS), transitions, start[:2], end)
    with pytest.raises(
        ValueError, match=r"emissions must be \[batch, time, num_tags\], got shape \(4, 3\)"
    ):
        crf.log_partition(e[0], jnp.asarray(LENGTHS), transitions, start, end)
    with pytest.raises(ValueError, match=r"emissions must have time >= 1, got shape \(4, 0, 3\)"):
        crf.log_partition(e[:, :0], jnp.asarray(LENGTHS), transitions, start, end)
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\), got \(3,\)"):
        crf.log_partition(e, jnp.asarray(LENGTHS[:3]), transitions, start, end)
    tags = jnp.zeros(e.shape[:2], jnp.int32)
    with pytest.raises(ValueError, match=r"tags must have shape \(4, 4\), got \(4, 3\)"):
        crf.sequence_score(e, tags[:, 1:], jnp.asarray(LENGTHS), transitions, start, end)


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
