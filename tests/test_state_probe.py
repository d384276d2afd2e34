"""experiments.state_probe and rnn_jax.probes: the LDA probe against Gaussian log densities
written out with scipy, the shrinkage choice against brute force, the k-back
and UPOS targets by hand, the layer states against a per-step loop of the model, a smoke run's
results, tables and plot agreeing with each other, the Q1/Q12 answers on hand-made results,
the main job's report, and bad config values failing naming the key."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from experiments import state_probe as sp
from experiments import state_probe_report as report
from rnn_jax import probes
from rnn_jax.models import RNNLanguageModel
from rnn_jax.train import cli
from rnn_jax.train import config as cfg
from tests.report_check import assert_png, cell_numbers, table_rows

SMOKE = "experiments/configs/state_probe.py:smoke"  # UD EWT, 2 x 16 LSTM, 20 steps


def _data(n=80, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 1.5
    spread = np.linspace(0.5, 3, d)  # features of different scales and offsets
    x = centres[labels] + rng.normal(size=(n, d)) * spread
    return x + np.arange(d) * 3 - 5, labels


def test_lda_probe_is_the_gaussian_posterior_argmax():
    x, labels = _data()
    labels[labels == 1] = 3  # class 1 never seen: it must never be predicted
    n, shrinkage = len(x), 0.3
    probe = probes.fit_lda_probe(x, labels, 4, shrinkage)
    # Reference, written out directly: standardise, class means and priors, the pooled
    # within-class covariance plus shrinkage * I, then the Gaussian log density + log prior
    # of each seen class (scipy), which differs from the probe's score by a per-row constant.
    z = (x - x.mean(0)) / x.std(0)
    seen = [0, 2, 3]
    means = {c: z[labels == c].mean(0) for c in seen}
    residual = z - np.stack([means[c] for c in labels])
    cov = residual.T @ residual / n + shrinkage * np.eye(5)
    log_post = np.stack(
        [
            scipy.stats.multivariate_normal(means[c], cov).logpdf(z) + np.log(np.mean(labels == c))
            for c in seen
        ],
        axis=1,
    )
    scores = probe.scores(x)
    assert np.isneginf(scores[:, 1]).all()
    difference = scores[:, seen] - log_post
    np.testing.assert_allclose(difference - difference[:, :1], 0, atol=1e-9)
    np.testing.assert_array_equal(probe.predict(x), np.array(seen)[np.argmax(log_post, 1)])
    assert probe.accuracy(x, labels) > 0.6


def test_shrinkage_choice_equals_brute_force():
    x, labels = _data(n=120, d=6, classes=4, seed=1)
    labels2 = (labels + (x[:, 0] > 10)) % 4  # a second target on the same features
    grid = [1e-3, 0.1, 1.0, 30.0]
    holdout = np.arange(120) >= 90
    fitted = probes.fit_lda_probes(x, np.stack([labels, labels2], 1), [4, 4], grid, holdout)
    for j, target in enumerate((labels, labels2)):
        accuracies = [
            probes.fit_lda_probe(x[~holdout], target[~holdout], 4, s).accuracy(
                x[holdout], target[holdout]
            )
            for s in grid
        ]
        best = max(range(len(grid)), key=lambda i: (accuracies[i], grid[i]))
        assert fitted[j].shrinkage == grid[best]
        refit = probes.fit_lda_probe(x, target, 4, grid[best])
        np.testing.assert_allclose(fitted[j].weights, refit.weights, atol=1e-10)
        np.testing.assert_allclose(fitted[j].bias, refit.bias, atol=1e-10)


def test_lda_reads_a_word_from_its_embedding():
    # Why LDA and not a ridge classifier: 100 frequent words (each one fixed point) among a
    # broad "other" class, in 32 dimensions. LDA's priors and class means identify every
    # frequent word; a least-squares fit to one-hot targets cannot (its outputs are linear
    # estimates of rare class probabilities, below "other"'s everywhere).
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3000, 32))
    words = rng.zipf(1.3, 20000) % 3000
    labels = np.where(words < 100, words, 100)
    probe = probes.fit_lda_probe(table[words], labels, 101, 0.01)
    frequent = labels < 100
    assert probe.accuracy(table[words][frequent], labels[frequent]) > 0.99


def test_probe_inputs_are_checked():
    x, labels = _data()
    with pytest.raises(ValueError, match="shrinkage=0"):
        probes.fit_lda_probe(x, labels, 3, 0.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        probes.fit_lda_probe(x, labels, 2, 1.0)
    with pytest.raises(ValueError, match="holdout"):
        probes.fit_lda_probes(x, labels[:, None], [3], [1.0], np.zeros(80, bool))


def test_majority_accuracy_by_hand():
    assert probes.majority_accuracy(np.array([2, 2, 1, 0]), np.array([2, 1, 1, 2, 0])) == 0.4


def test_targets_by_hand():
    sentences = [
        {"tokens": ["a", "b", "c"], "upos": ["DET", "NOUN", "PUNCT"]},
        {"tokens": ["d", "a"], "upos": ["VERB", "DET"]},
    ]
    forms, tags = sp.stream(sentences)
    assert forms == ["a", "b", "c", "<eos>", "d", "a", "<eos>"]
    assert tags == ["DET", "NOUN", "PUNCT", "<eos>", "VERB", "DET", "<eos>"]
    words = sp.frequent_words(forms, 2)
    assert words == {"<eos>": 0, "a": 1}  # counts 2 and 2: ties by string
    positions, labels = sp.probe_targets(forms, tags, words, [0, 2])
    # t >= max(k) = 2, a word (not <eos> at 3 and 6) with a next token (t < 6): 2, 4, 5.
    np.testing.assert_array_equal(positions, [2, 4, 5])
    other, det, verb, punct = 2, sp.UPOS.index("DET"), sp.UPOS.index("VERB"), sp.UPOS.index("PUNCT")
    eos_tag = len(sp.UPOS)
    expected = [
        # word t (c: other), word t-2 (a), UPOS t, UPOS t+1
        [other, 1, punct, eos_tag],
        [other, other, verb, det],  # d; t-2 = c
        [1, 0, det, eos_tag],  # a; t-2 = <eos>
    ]
    np.testing.assert_array_equal(labels, expected)


@pytest.fixture(scope="module")
def small_lm():
    return RNNLanguageModel(11, 6, embed_size=4, num_layers=2, rngs=nnx.Rngs(params=3))


def test_layer_states_equal_a_per_step_loop(small_lm):
    tokens = jnp.array([[1, 5, 10, 0, 3, 3, 7], [2, 2, 9, 4, 0, 6, 1]])
    states = probes.layer_states(small_lm, tokens)
    assert [s.shape for s in states] == [(2, 7, 4), (2, 7, 6), (2, 7, 6)]
    cell = small_lm.rnn.cell
    carry = small_lm.zero_carry(2)
    for t in range(tokens.shape[1]):
        x = small_lm.embedding[...][tokens[:, t]]
        np.testing.assert_allclose(states[0][:, t], x, atol=1e-6)
        carry, y = small_lm.rnn.step(carry, x)
        for layer in range(2):
            np.testing.assert_allclose(
                states[layer + 1][:, t], cell.output(carry[layer]), atol=1e-5
            )
        np.testing.assert_allclose(states[2][:, t], y, atol=1e-5)
    # The top layer is what the model's own forward pass returns.
    np.testing.assert_allclose(states[2], small_lm(tokens)[2]["outputs"], atol=1e-5)


def test_layer_states_refuse_a_residual_stack():
    model = RNNLanguageModel(11, 6, num_layers=2, rngs=nnx.Rngs(params=0))
    model.rnn.residual = True
    with pytest.raises(ValueError, match="without residuals"):
        probes.layer_states(model, jnp.zeros((1, 3), jnp.int32))


@pytest.fixture(scope="module")
def config(data_root):
    return cli.load_config(SMOKE, {"data.root": str(data_root)}, rules=sp.RULES)


@pytest.fixture(scope="module")
def smoke_run(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("state_probe")
    final = sp.run(config, workdir)
    return workdir, final


def test_smoke_writes_results_tables_and_plot(smoke_run, config):
    workdir, final = smoke_run
    results = json.loads((workdir / "results.json").read_text())
    assert results["final"] == final
    names = sp.target_names(sp.distances(config))
    assert results["setup"]["targets"] == names
    assert set(final) == {f"{m}-L{layer}" for m in sp.MODELS for layer in range(3)} | {"majority"}
    for key, row in final.items():
        values = [row[t] if key == "majority" else row[t][0] for t in names]
        assert all(0 <= v <= 1 for v in values), (key, row)
    accuracy_section = (workdir / "state_probe.md").read_text().split("## Trained minus")[0]
    rows = table_rows(accuracy_section)
    assert rows["trained L2"]["UPOS"] and rows["majority class"]["word t-0"]
    mean = cell_numbers(rows["untrained L1"]["word t-2"])[0]
    assert mean == pytest.approx(final["untrained-L1"]["word_k2"][0], abs=1e-3)
    assert cell_numbers(rows["majority class"]["next UPOS"])[0] == pytest.approx(
        final["majority"]["upos_next"], abs=1e-3
    )
    assert_png(workdir / "state_probe.png")
    # The embedding layer of the untrained model is its initial table: the trained run's
    # seed 0 started from it, so the untrained probes do not depend on training.
    assert results["lm"]["valid_perplexity"][0] > 1
    answers = sp.answers(workdir)
    assert set(answers) == {1, 12}


def test_the_main_job_runs_it_and_reports_its_answers(smoke_run, tmp_path):
    from experiments import reproduce

    workdir, _ = smoke_run
    assert "state_probe" in reproduce.experiment_names()
    (tmp_path / "state_probe").symlink_to(workdir, target_is_directory=True)
    text = reproduce.write_report(tmp_path, ["state_probe"], {"state_probe": 20.0})
    answers = sp.answers(workdir)
    for q in (1, 12):
        assert f"**Q{q}. {reproduce.QUESTIONS[q]}** {answers[q]}" in text


def _results(upos_by_layer, word_by_layer, memory):
    """Hand-made results: 2 seeds, 2 layers; `memory[kind][layer]` = accuracy per k (0, 1, 4)."""
    final = {
        "majority": {"word_k0": 0.5, "word_k1": 0.5, "word_k4": 0.5, "upos": 0.2, "upos_next": 0.2}
    }
    for kind in ("trained", "untrained"):
        for layer in range(3):
            row = {f"word_k{k}": [memory[kind][layer][i]] * 2 for i, k in enumerate((0, 1, 4))}
            row["upos"] = list(upos_by_layer[kind][layer])
            row["upos_next"] = [0.3, 0.3]
            if kind == "trained":
                row["word_k0"] = list(word_by_layer[layer])
            final[f"{kind}-L{layer}"] = row
    setup = {
        "targets": ["word_k0", "word_k1", "word_k4", "upos", "upos_next"],
        "distances": [0, 1, 4],
        "num_layers": 2,
        "hidden_size": 8,
        "embed_size": 4,
        "cell": "lstm",
        "num_seeds": 2,
        "vocab_size": 50,
        "lm_train_tokens": 1000,
        "num_steps": 10,
        "epochs": 1.0,
        "num_words": 10,
        "probe_train_sentences": 5,
        "probe_train_positions": 40,
        "probe_test_split": "valid",
        "probe_test_positions": 30,
        "shrinkages": [1.0],
        "holdout_fraction": 0.2,
    }
    return {"final": final, "setup": setup, "lm": {"valid_perplexity": [100.0, 110.0]}}


MEMORY = {
    "trained": [[0.99, 0.5, 0.5], [0.95, 0.80, 0.6], [0.9, 0.7, 0.51]],
    "untrained": [[0.99, 0.5, 0.5], [0.90, 0.6, 0.5], [0.85, 0.5, 0.5]],
}


def test_answers_on_hand_made_results(tmp_path):
    # Layer 1 -> 2: UPOS +0.05 while word identity -0.05 in both seeds -> "more abstract".
    upos = {"trained": [[0.6, 0.6], [0.7, 0.72], [0.75, 0.77]], "untrained": [[0.5, 0.5]] * 3}
    rising = _results(upos, [[0.99, 0.99], [0.95, 0.95], [0.9, 0.9]], MEMORY)
    # Reach: layer 1 beats majority 0.5 and untrained (0.6 at k=1, 0.5 at k=4) by > 0.02 up
    # to k=4 (0.6 > 0.52); layer 2 only to k=1 (0.51 at k=4 is within the margin).
    assert report.memory_reach(rising, "trained", 1) == 4
    assert report.memory_reach(rising, "trained", 2) == 1
    assert report.memory_reach(rising, "untrained", 2) == 0
    (tmp_path / "results.json").write_text(json.dumps(rising))
    answers = sp.answers(tmp_path)
    assert "Trained layer 1 holds the word up to k=4 back" in answers[1]
    assert "Trained layer 2 holds the word up to k=1 back" in answers[1]
    assert "gains on word identity by more than the margin in every seed" in answers[12]
    assert "UPOS is best decoded from layer 2" in answers[12]
    # UPOS falls from layer 1 to 2 by more than word identity: the claim is not supported.
    falling = {"trained": [[0.6, 0.6], [0.8, 0.82], [0.7, 0.71]], "untrained": upos["untrained"]}
    text = report.answers(_results(falling, [[0.99, 0.99], [0.95, 0.95], [0.94, 0.94]], MEMORY))
    assert "does not support 'more abstract representations at higher layers'" in text[12]
    assert "UPOS is best decoded from layer 1" in text[12]
    mixed = {"trained": [[0.6, 0.6], [0.8, 0.8], [0.85, 0.75]], "untrained": upos["untrained"]}
    text = report.answers(_results(mixed, [[0.99, 0.99], [0.95, 0.95], [0.95, 0.95]], MEMORY))
    assert "mixed sign over seeds" in text[12]
    # UPOS -0.016 and word -0.025 (the quick run's): +0.009 in both seeds, within the margin.
    small = {
        "trained": [[0.6, 0.6], [0.575, 0.575], [0.559, 0.559]],
        "untrained": upos["untrained"],
    }
    text = report.answers(_results(small, [[1.0, 1.0], [0.996, 0.996], [0.971, 0.971]], MEMORY))
    assert "UPOS accuracy falls by 0.016" in text[12]
    assert "does not show the upper layer to be more abstract" in text[12]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("probe.distances", "2,1", "probe.distances='2,1': must be increasing distinct integers"),
        ("probe.distances", "0,-1", "probe.distances='0,-1': must be increasing"),
        ("probe.shrinkages", "0,1", "probe.shrinkages='0,1': must be positive numbers"),
        ("probe.test_split", "train", "probe.test_split='train': must be one of"),
        ("probe.num_words", 0, "probe.num_words=0: must be an integer >= 1"),
        ("probe.holdout_fraction", 0.9, "probe.holdout_fraction=0.9"),
        ("data.corpus", "ptb", "data.corpus='ptb': must be one of 'ud_en_ewt'"),
        ("model.compute_dtype", "bfloat16", "model.compute_dtype='bfloat16'"),
    ],
)
def test_bad_config_values_are_named(key, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        cli.load_config(SMOKE, {key: value}, rules=sp.RULES)


def test_too_many_sentences_is_named(config):
    big = config.copy_and_resolve_references()
    big.probe.test_sentences = 999_999
    with pytest.raises(
        cfg.ConfigError, match="probe.test_sentences=999999: UD English-EWT 'valid'"
    ):
        sp.load_sentences(big)


def test_untrained_model_is_the_initialisation_of_its_seed(config):
    # The runtime's own initial state (rnn_jax.train.loop.build_init) is the reference.
    from rnn_jax.train import optim
    from rnn_jax.train.loop import build_init

    sentences = {s: [{"tokens": ["a", "b"], "upos": ["DET", "NOUN"]}] * 400 for s in sp.SPLITS}
    two = config.copy_and_resolve_references()
    two.num_seeds = 2
    task = sp.UDLanguageModelTask(two, sentences)
    _, init_state = build_init(task, optim.build_optimizer(two), two.seed, 2, 8)
    state = init_state()
    for replica in range(2):
        model = sp.untrained_model(task, two, replica)
        np.testing.assert_array_equal(
            model.embedding[...], state["params"]["embedding"].value[replica]
        )
