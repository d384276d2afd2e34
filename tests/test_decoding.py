"""Decoding: beam 1 == greedy; a full beam == exhaustive search; beams in between against a
plain-Python beam search with the same rules; sampling follows its law and keeps the greedy
and top-k limits at extreme temperatures; NumPy-integer sizes are accepted and fractional ids,
NaN alpha, fractional top_k and a state leaf without the batch axis refused."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import decoding

VOCAB, EOS, BOS, MAX_LEN, BATCH = 4, 1, 0, 3, 3


@pytest.fixture(scope="module")
def table():
    """Logits depend on (example, position, previous token): a small non-Markov-free toy model."""
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(scale=1.5, size=(BATCH, MAX_LEN, VOCAB, VOCAB)), jnp.float32)


@pytest.fixture(scope="module")
def early_eos_table(table):
    """`table` with EOS made likely at step 0 for example 1 and at step 1 for example 2, so the
    greedy lengths are 3, 1, 2: on `table` every greedy sequence ran to MAX_LEN, and the checks
    of the padding and of the score after EOS were over empty slices."""
    return table.at[1, 0, BOS, EOS].add(8.0).at[2, 1, :, EOS].add(8.0)


def _make_step(table):
    def step(state, tokens):
        example, position = state
        logits = table[example, jnp.minimum(position, MAX_LEN - 1), tokens]
        return (example, position + 1), logits

    return step


def _initial_state():
    return (jnp.arange(BATCH), jnp.zeros(BATCH, jnp.int32))


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def _exhaustive(table, example, alpha):
    """Best normalised score over all sequences ending in EOS (or truncated at MAX_LEN)."""
    best = (-np.inf, None)
    for length in range(1, MAX_LEN + 1):
        for seq in itertools.product(range(VOCAB), repeat=length):
            if EOS in seq[:-1] or (length < MAX_LEN and seq[-1] != EOS):
                continue
            previous, log_prob = BOS, 0.0
            for t, token in enumerate(seq):
                log_prob += _log_softmax(table[example, t, previous])[token]
                previous = token
            score = log_prob / ((5.0 + length) / 6.0) ** alpha
            if score > best[0]:
                best = (score, seq)
    return best


def test_greedy_matches_a_python_argmax_loop(early_eos_table):
    table, pad = early_eos_table, 3  # a pad id that is neither BOS nor EOS
    tokens, lengths, scores = decoding.greedy_decode(
        _make_step(table), _initial_state(), bos_id=BOS, eos_id=EOS, max_length=MAX_LEN, pad_id=pad
    )
    np.testing.assert_array_equal(lengths, [3, 1, 2])  # the checks after EOS are not vacuous
    for b in range(BATCH):
        previous, ref, log_prob = BOS, [], 0.0
        for t in range(MAX_LEN):
            log_probs = _log_softmax(table[b, t, previous])
            previous = int(np.argmax(log_probs))
            ref.append(previous)
            log_prob += log_probs[previous]
            if previous == EOS:
                break
        assert list(np.asarray(tokens[b, : len(ref)])) == ref
        assert np.all(np.asarray(tokens[b, len(ref) :]) == pad)
        assert int(lengths[b]) == len(ref)
        np.testing.assert_allclose(scores[b], log_prob, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_beam_size_one_equals_greedy(early_eos_table, alpha):
    step = _make_step(early_eos_table)
    greedy = decoding.greedy_decode(step, _initial_state(), bos_id=BOS, eos_id=EOS, max_length=3)
    tokens, lengths, scores = decoding.beam_search(
        step, _initial_state(), beam_size=1, bos_id=BOS, eos_id=EOS, max_length=3, alpha=alpha
    )
    np.testing.assert_array_equal(tokens[:, 0], greedy[0])
    np.testing.assert_array_equal(lengths[:, 0], greedy[1])
    penalty = ((5.0 + np.asarray(greedy[1])) / 6.0) ** alpha
    np.testing.assert_allclose(scores[:, 0], np.asarray(greedy[2]) / penalty, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_full_beam_finds_the_exhaustive_optimum(table, alpha):
    tokens, lengths, scores = decoding.beam_search(
        _make_step(table),
        _initial_state(),
        beam_size=VOCAB**MAX_LEN,
        bos_id=BOS,
        eos_id=EOS,
        max_length=MAX_LEN,
        alpha=alpha,
    )
    scores_np = np.asarray(scores)
    assert np.all(scores_np[:, :-1] >= scores_np[:, 1:]), "hypotheses are sorted best first"
    for b in range(BATCH):
        ref_score, ref_seq = _exhaustive(np.asarray(table), b, alpha)
        np.testing.assert_allclose(scores[b, 0], ref_score, rtol=1e-5)
        assert tuple(np.asarray(tokens[b, 0, : lengths[b, 0]])) == ref_seq


def test_beam_search_works_under_jit(table):
    step = _make_step(table)
    run = jax.jit(
        lambda state: decoding.beam_search(
            step, state, beam_size=2, bos_id=BOS, eos_id=EOS, max_length=MAX_LEN
        )
    )
    eager = decoding.beam_search(
        step, _initial_state(), beam_size=2, bos_id=BOS, eos_id=EOS, max_length=MAX_LEN
    )
    jax.tree.map(np.testing.assert_array_equal, run(_initial_state()), eager)


def test_every_decoder_returns_int32_tokens_and_lengths_and_float32_scores_under_x64(table):
    """Under jax_enable_x64 greedy and sampling returned int64 lengths (argmax's index type)
    while beam search returned int32: one decoder's output could not replace another's."""
    step, ids = _make_step(table), dict(bos_id=BOS, eos_id=EOS, max_length=MAX_LEN)
    with jax.enable_x64(True):
        outputs = {
            "greedy": decoding.greedy_decode(step, _initial_state(), **ids),
            "sample": decoding.sample_decode(step, _initial_state(), jax.random.key(0), **ids),
            "beam": decoding.beam_search(step, _initial_state(), beam_size=2, **ids),
        }
    for name, (tokens, lengths, scores) in outputs.items():
        assert (tokens.dtype, lengths.dtype, scores.dtype) == (
            jnp.int32,
            jnp.int32,
            jnp.float32,
        ), name


def test_sampling_follows_tempered_top_k_distribution():
    logits = jnp.array([2.0, 1.0, 0.5, -1.0, 0.0])
    num = 4000

    def step(state, tokens):
        return state, jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[0]))

    state = jnp.zeros((num,))
    for temperature, top_k in [(0.5, None), (2.0, 3)]:
        tokens, _, scores = decoding.sample_decode(
            step,
            state,
            jax.random.key(1),
            bos_id=0,
            eos_id=4,
            max_length=1,
            temperature=temperature,
            top_k=top_k,
        )
        counts = np.bincount(np.asarray(tokens[:, 0]), minlength=5) / num
        scaled = np.asarray(logits) / temperature
        if top_k is not None:
            scaled[np.argsort(scaled)[:-top_k]] = -np.inf
        expected = np.exp(scaled - scaled.max())
        expected /= expected.sum()
        np.testing.assert_allclose(counts, expected, atol=0.03)
        if top_k is not None:
            assert np.all(counts[expected == 0] == 0)
        # The scores are log-probabilities under the model, not the tempered distribution.
        model_log_probs = _log_softmax(logits)[np.asarray(tokens[:, 0])]
        np.testing.assert_allclose(scores, model_log_probs, rtol=1e-5, atol=1e-6)


def test_top_k_one_equals_greedy(early_eos_table):
    step = _make_step(early_eos_table)
    greedy = decoding.greedy_decode(step, _initial_state(), bos_id=BOS, eos_id=EOS, max_length=3)
    sampled = decoding.sample_decode(
        step, _initial_state(), jax.random.key(3), bos_id=BOS, eos_id=EOS, max_length=3, top_k=1
    )
    jax.tree.map(np.testing.assert_array_equal, sampled, greedy)  # tokens, lengths, log-probs


def test_top_k_keeps_exactly_k_tokens_on_ties():
    """Tied logits at the k-th value: exactly k tokens stay in (the lower ids, as lax.top_k
    orders them); a `>= k-th largest` filter would sample all three tied tokens."""
    logits = jnp.array([1.0, 1.0, 1.0, 0.0, -1.0])

    def step(state, tokens):
        return state, jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[0]))

    for top_k, allowed in [(1, {0}), (2, {0, 1})]:
        tokens, _, _ = decoding.sample_decode(
            step,
            jnp.zeros((500,)),
            jax.random.key(2),
            bos_id=0,
            eos_id=4,
            max_length=1,
            top_k=top_k,
        )
        assert set(np.unique(np.asarray(tokens[:, 0])).tolist()) == allowed


def test_bad_arguments_raise(table):
    step = _make_step(table)
    kwargs = dict(bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(step, _initial_state(), beam_size=0, max_length=3, **kwargs)
    with pytest.raises(ValueError, match="max_length"):
        decoding.greedy_decode(step, _initial_state(), max_length=0, **kwargs)
    with pytest.raises(ValueError, match="state must contain at least one array"):
        decoding.greedy_decode(step, {}, max_length=2, **kwargs)
    with pytest.raises(ValueError, match="max_length"):
        decoding.beam_search(step, _initial_state(), beam_size=2, max_length=-1, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        decoding.sample_decode(
            step, _initial_state(), jax.random.key(0), max_length=2, temperature=0.0, **kwargs
        )
    with pytest.raises(ValueError, match="eos_id=7 is outside"):
        decoding.greedy_decode(step, _initial_state(), bos_id=BOS, eos_id=7, max_length=2)
    with pytest.raises(ValueError, match="bos_id=9 is outside"):
        decoding.beam_search(
            step, _initial_state(), beam_size=2, bos_id=9, eos_id=EOS, max_length=2
        )
    # A table the batch shares, kept in the state: its first axis (VOCAB rows) was read as the
    # batch, and greedy decoding returned VOCAB rows for a batch of BATCH without a word.
    shared = {"a_table": table[0, 0], "position": jnp.zeros(BATCH, jnp.int32)}
    shared_step = lambda state, tokens: (state, state["a_table"][tokens])
    match = r"batch as axis 0 .* state\['a_table'\] \[4, 4\], state\['position'\] \[3\]"
    for decode in (decoding.greedy_decode, functools.partial(decoding.beam_search, beam_size=2)):
        with pytest.raises(ValueError, match=match):
            decode(shared_step, shared, max_length=2, **kwargs)


def _table_step(table):
    """Logits depend on (example, position, previous token)."""
    max_length = table.shape[1]

    def step(state, tokens):
        example, position = state
        return (example, position + 1), table[
            example, jnp.minimum(position, max_length - 1), tokens
        ]

    return step


def _state(batch):
    return (jnp.arange(batch), jnp.zeros(batch, jnp.int32))


def test_numpy_integer_sizes_are_accepted():
    """`max_length=lengths.max() + 5` is a NumPy integer; it used to be rejected as 'not a
    positive int'."""
    table = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4, 4)), jnp.float32)
    step, ids = _table_step(table), dict(bos_id=0, eos_id=1)
    greedy = decoding.greedy_decode(step, _state(2), max_length=np.int64(3), **ids)
    jax.tree.map(
        np.testing.assert_array_equal,
        greedy,
        decoding.greedy_decode(step, _state(2), max_length=3, **ids),
    )
    beam = decoding.beam_search(
        step, _state(2), beam_size=np.int32(2), max_length=np.int64(3), **ids
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        beam,
        decoding.beam_search(step, _state(2), beam_size=2, max_length=3, **ids),
    )
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(step, _state(2), beam_size=2.0, max_length=3, **ids)


def _reference_beam(table, example, k, bos, eos, alpha, context=None):
    """The documented rules in plain Python: keep the k best extensions of the live
    hypotheses by log-probability; one ending in EOS leaves the beam; rank finished ones (and
    those alive at max_length) by log p / ((5 + length) / 6)^alpha. The logits at step t are
    table[example, t, context(prefix)], by default the previous token's row."""
    max_length, vocab = table.shape[1], table.shape[2]
    context = context or (lambda seq: seq[-1] if seq else bos)
    alive, finished = [((), 0.0)], []
    for t in range(max_length):
        candidates = []
        for seq, log_prob in alive:
            log_probs = _log_softmax(table[example, t, context(seq)])
            candidates += [(seq + (v,), log_prob + log_probs[v]) for v in range(vocab)]
        candidates = sorted(candidates, key=lambda c: -c[1])[:k]
        finished += [c for c in candidates if c[0][-1] == eos]
        alive = [c for c in candidates if c[0][-1] != eos]
    ranked = [(seq, lp / ((5.0 + len(seq)) / 6.0) ** alpha) for seq, lp in finished + alive]
    return sorted(ranked, key=lambda c: -c[1])[:k]


@pytest.mark.parametrize(
    "vocab, max_length, k, bos, eos, pad, alpha",
    [(5, 4, 3, 2, 0, 4, 0.6), (3, 4, 2, 0, 2, 1, 0.0), (2, 3, 5, 1, 1, 0, 2.0)],
)
def test_beam_search_matches_a_python_beam_search(vocab, max_length, k, bos, eos, pad, alpha):
    """Between beam 1 (== greedy) and a full beam (== exhaustive), which the existing tests
    cover: batch > 1 with different lengths, EOS/BOS/pad at other ids, pad after the end."""
    rng = np.random.default_rng(vocab * 10 + k)
    table = rng.normal(scale=2.0, size=(3, max_length, vocab, vocab)).astype(np.float32)
    tokens, lengths, scores = decoding.beam_search(
        _table_step(jnp.asarray(table)),
        _state(3),
        beam_size=k,
        bos_id=bos,
        eos_id=eos,
        max_length=max_length,
        alpha=alpha,
        pad_id=pad,
    )
    for b in range(3):
        reference = _reference_beam(table, b, k, bos, eos, alpha)
        for i, (seq, score) in enumerate(reference):
            assert tuple(np.asarray(tokens[b, i, : lengths[b, i]])) == seq
            assert np.all(np.asarray(tokens[b, i, lengths[b, i] :]) == pad)
            np.testing.assert_allclose(scores[b, i], score, rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(np.asarray(scores[b, len(reference) :])))


def test_beam_search_moves_the_step_state_with_its_hypotheses():
    """The logits depend on the sum of every token fed so far, which only the step state
    holds: a state left in its old beam slot when the beams are reordered scores the wrong
    prefix. The table models above keep the same state in every beam, so they cannot see it."""
    vocab, max_length, k, bos, eos = 3, 4, 2, 0, 1
    table = np.random.default_rng(5).normal(scale=2.0, size=(3, max_length, vocab, vocab))

    def step(state, tokens):
        example, position, total = state
        total = total + tokens
        logits = jnp.asarray(table, jnp.float32)[example, position, total % vocab]
        return (example, position + 1, total), logits

    state = (jnp.arange(3), jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32))
    tokens, lengths, scores = decoding.beam_search(
        step, state, beam_size=k, bos_id=bos, eos_id=eos, max_length=max_length
    )
    for b in range(3):
        reference = _reference_beam(
            table, b, k, bos, eos, 0.0, context=lambda seq: (bos + sum(seq)) % vocab
        )
        for i, (seq, score) in enumerate(reference):
            assert tuple(np.asarray(tokens[b, i, : lengths[b, i]])) == seq
            np.testing.assert_allclose(scores[b, i], score, rtol=1e-5, atol=1e-5)


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
