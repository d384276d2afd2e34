"""experiments.state_probe (and state_probe_data), rnn_jax.probes, logistic_probes and
probe_baselines: the LDA probe against Gaussian log densities written out with scipy, the
shrinkage choice against brute force, the logistic-regression probe against scipy's L-BFGS-B on
the same objective written out in numpy and on classes LDA misreads, the lexical baseline and
the control task by hand, the k-back and UPOS targets by hand, the layer states against a
per-step loop of the model, a smoke run's results, tables and plot agreeing with each other, the
Q1/Q12 answers on hand-made results, the main job's report, and bad config values failing naming
the key."""

import collections
import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from flax import nnx

from experiments import state_probe as sp
from experiments import state_probe_answers as sp_answers
from experiments import state_probe_data as sp_data
from experiments import state_probe_report as report
from rnn_jax import exits, logistic_probes, probe_baselines, probes
from rnn_jax.models import RNNLanguageModel
from rnn_jax.train import cli
from rnn_jax.train import config as cfg
from tests.module_cli import StartedModule
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
        assert fitted[j].regularization == grid[best]
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


def _penalised_softmax_loss(theta, z, labels, classes, l2):
    """numpy reference: mean NLL of softmax(z W + b) plus l2 / 2 ||W||^2, and its gradient."""
    n, d = z.shape
    weights, bias = theta[: d * classes].reshape(d, classes), theta[d * classes :]
    logits = z @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(n), labels]).mean() + 0.5 * l2 * np.sum(weights**2)
    residual = probs - np.eye(classes)[labels]
    grad_w = z.T @ residual / n + l2 * weights
    return loss, np.concatenate([grad_w.ravel(), residual.mean(axis=0)])


def test_logistic_probe_equals_scipy_lbfgs_on_the_same_objective():
    x, labels = _data(n=150, d=4, classes=3, seed=2)
    labels[labels == 1] = 3  # class 1 never seen: bias -inf, never predicted
    l2 = 0.05
    probe = logistic_probes.fit_logistic_probe(x, labels, 4, l2, iterations=300)
    seen = [0, 2, 3]
    z = (x - x.mean(0)) / x.std(0)
    compact = np.searchsorted(seen, labels)
    reference = scipy.optimize.minimize(
        _penalised_softmax_loss,
        np.zeros(4 * 3 + 3),
        args=(z, compact, 3, l2),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 10_000},
    )
    assert reference.success
    ref_weights, ref_bias = reference.x[:12].reshape(4, 3), reference.x[12:]
    assert np.isneginf(probe.bias[1]) and not np.isin(1, probe.predict(x))
    np.testing.assert_allclose(probe.weights[:, seen], ref_weights, atol=2e-3)
    bias = probe.bias[seen]  # defined up to a constant: the softmax ignores a shift
    np.testing.assert_allclose(bias - bias.mean(), ref_bias - ref_bias.mean(), atol=2e-3)
    theta = np.concatenate([probe.weights[:, seen].ravel(), bias])
    loss = _penalised_softmax_loss(theta, z, compact, 3, l2)[0]
    assert loss == pytest.approx(reference.fun, rel=1e-5)


def test_logistic_penalty_choice_and_refit():
    # Two targets fitted in one call (one problem each); a huge penalty flattens the
    # weights, so the small one must win on the held-out rows, and the refit on all rows is
    # the single-target fit at that penalty.
    x, labels = _data(n=160, d=5, classes=3, seed=3)
    labels2 = np.digitize(x[:, 1], np.quantile(x[:, 1], [1 / 3, 2 / 3]))
    holdout = np.arange(160) >= 120
    fitted = logistic_probes.fit_logistic_probes(
        x, np.stack([labels, labels2], 1), [3, 3], [0.01, 100.0], holdout, iterations=200
    )
    for probe, target in zip(fitted, (labels, labels2), strict=True):
        assert probe.regularization == 0.01 and probe.weights.shape == (5, 3)
        alone = logistic_probes.fit_logistic_probe(x, target, 3, 0.01, iterations=200)
        np.testing.assert_allclose(probe.weights, alone.weights, atol=2e-3)
        assert probe.accuracy(x, target) == alone.accuracy(x, target)
    with pytest.raises(ValueError, match="l2_penalties"):
        logistic_probes.fit_logistic_probes(x, labels[:, None], [3], [0.0], holdout, 10)


def test_a_logistic_probe_does_not_depend_on_the_targets_fitted_with_it():
    # After a few L-BFGS steps (far from converged) the first target's probe is the same
    # whichever second target shares the call: each problem has its own line searches.
    x, labels = _data(n=300, d=6, classes=4, seed=5)
    holdout = np.arange(300) >= 220
    rng = np.random.default_rng(0)
    probes_of = [
        logistic_probes.fit_logistic_probes(
            x, np.stack([labels, other], 1), [4, 4], [1e-3, 1e-1], holdout, iterations=4
        )[0]
        for other in (rng.integers(0, 4, 300), np.digitize(x[:, 2], [-0.5, 0.0, 0.5]))
    ]
    assert probes_of[0].regularization == probes_of[1].regularization
    np.testing.assert_allclose(probes_of[0].weights, probes_of[1].weights, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probes_of[0].bias, probes_of[1].bias, rtol=0, atol=1e-6)


def test_logistic_reads_a_multimodal_class_lda_misreads():
    # Class 0 is two clusters (at -20 and 0), class 1 one cluster at 1: a threshold at 0.5
    # separates them, but LDA's class-0 mean (-10) and pooled variance (~100) put its boundary
    # far left of 0, so it calls the cluster at 0 class 1. UPOS classes are like class 0.
    rng = np.random.default_rng(0)
    centres = np.array([-20.0, 0.0, 1.0])
    cluster = rng.integers(0, 3, 600)
    x = (centres[cluster] + rng.normal(size=600) * 0.1)[:, None]
    x = np.hstack([x, rng.normal(size=(600, 1))])  # plus a noise feature
    labels = (cluster == 2).astype(int)
    lda = probes.fit_lda_probe(x, labels, 2, 0.01)
    logistic = logistic_probes.fit_logistic_probe(x, labels, 2, 1e-3, iterations=200)
    assert lda.accuracy(x, labels) < 0.75
    assert logistic.accuracy(x, labels) > 0.99


def test_lexical_baseline_by_hand():
    train_words = ["the", "run", "run", "run", "dog", "the"]
    train_tags = [
        5,
        15,
        7,
        15,
        7,
        5,
    ]  # run: VERB twice, NOUN once; majority overall: 5 (tie 5/7/15 -> 5)
    test_words = ["run", "dog", "cat", "the"]
    np.testing.assert_array_equal(
        probe_baselines.lexical_predictions(train_words, train_tags, test_words), [15, 7, 5, 5]
    )
    assert (
        probe_baselines.lexical_accuracy(train_words, train_tags, test_words, [15, 15, 5, 5])
        == 0.75
    )
    # A tie within a word goes to the smaller id: "a" seen as 3 and as 1.
    assert probe_baselines.lexical_predictions(["a", "a"], [3, 1], ["a"]).tolist() == [1]


def test_control_task_is_a_seeded_map_of_types():
    probs = np.array([0.5, 0.0, 0.3, 0.2])
    words = [f"w{i}" for i in range(4000)]
    labels = probe_baselines.control_task(words, probs, seed=7)
    # Type-level: every occurrence of a type gets the same tag, in any context or call, and an
    # unseen type gets one too.
    again = probe_baselines.control_task(["w3", "new", "w3", "w0"], probs, seed=7)
    assert again[0] == again[2] == labels[3] and again[3] == labels[0]
    assert 0 <= again[1] < 4
    # Drawn from probs: class 1 (probability 0) never, the others near their probability.
    frequencies = np.bincount(labels, minlength=4) / len(words)
    assert frequencies[1] == 0
    np.testing.assert_allclose(frequencies, probs, atol=0.03)
    other_seed = probe_baselines.control_task(words, probs, seed=8)
    assert 0.3 < np.mean(other_seed == labels) < 0.5  # independent maps agree ~sum(p^2) = 0.38


def test_control_labels_of_the_experiment():
    words = np.array(["a", "b", "a", "c"], dtype=object)
    train_tags = np.array([[0, 1], [7, 17], [0, 1], [3, 17]])
    controls = sp_data.control_labels(words, train_tags, seed=0)
    assert controls.shape == (4, 2)
    np.testing.assert_array_equal(controls[0], controls[2])  # one tag per type
    assert set(controls[:, 0]) <= {0, 3, 7} and set(controls[:, 1]) <= {1, 17}
    np.testing.assert_array_equal(
        controls[:, 0],
        probe_baselines.control_task(list(words), np.bincount([0, 7, 0, 3], minlength=17), 0),
    )
    # Column i is seeded seed + i: the two control tasks draw independently (the same seed
    # for both put a type's two tags at one quantile of each distribution).
    many = np.array([f"w{i}" for i in range(40)], dtype=object)
    np.testing.assert_array_equal(
        sp_data.control_labels(many, train_tags, seed=5)[:, 1],
        probe_baselines.control_task(list(many), np.bincount([1, 17, 1, 17], minlength=18), 6),
    )


def test_control_types_are_the_lm_tokens():
    """Forms outside the LM's vocabulary are one type (the LM reads them all as <unk>), so
    they share one control tag; forms in it keep their own."""
    from rnn_jax.data.vocab import Vocabulary

    vocab = Vocabulary.build([["a", "a", "b", "b", "c"]], min_freq=2, pad=None, unk="<unk>")
    forms = np.array(["a", "zz", "b", "c", "yy"], dtype=object)
    types = sp_data.lm_types(vocab, forms)
    assert types.tolist() == ["a", "<unk>", "b", "<unk>", "<unk>"]
    train_tags = np.array([[i % 17, i % 18] for i in range(40)])
    controls = sp_data.control_labels(types, train_tags, seed=3)
    np.testing.assert_array_equal(controls[1], controls[3])
    np.testing.assert_array_equal(controls[1], controls[4])


def test_majority_accuracy_by_hand():
    assert (
        probe_baselines.majority_accuracy(np.array([2, 2, 1, 0]), np.array([2, 1, 1, 2, 0])) == 0.4
    )


def test_targets_by_hand():
    sentences = [
        {"tokens": ["a", "b", "c"], "upos": ["DET", "NOUN", "PUNCT"]},
        {"tokens": ["d", "a"], "upos": ["VERB", "DET"]},
    ]
    forms, tags = sp_data.stream(sentences)
    assert forms == ["a", "b", "c", "<eos>", "d", "a", "<eos>"]
    assert tags == ["DET", "NOUN", "PUNCT", "<eos>", "VERB", "DET", "<eos>"]
    words = sp_data.frequent_words(forms, 2)
    assert words == {"<eos>": 0, "a": 1}  # counts 2 and 2: ties by string
    positions, labels = sp_data.probe_targets(forms, tags, words, [0, 2])
    # t >= max(k) = 2, a word (not <eos> at 3 and 6) with a next token (t < 6): 2, 4, 5.
    np.testing.assert_array_equal(positions, [2, 4, 5])
    other, det, verb, punct = (
        2,
        sp_data.UPOS.index("DET"),
        sp_data.UPOS.index("VERB"),
        sp_data.UPOS.index("PUNCT"),
    )
    eos_tag = len(sp_data.UPOS)
    expected = [
        # word t (c: other), word t-2 (a), UPOS t, UPOS t+1
        [other, 1, punct, eos_tag],
        [other, other, verb, det],  # d; t-2 = c
        [1, 0, det, eos_tag],  # a; t-2 = <eos>
    ]
    np.testing.assert_array_equal(labels, expected)
    # only inconsistent input reaches it (read_conllu pairs each form with its own UPOS)
    forms, tags = sp_data.stream([{"tokens": ["a", "b", "c"], "upos": ["DET", "NOUN", "<eos>"]}])
    with pytest.raises(ValueError, match="a word position carries the <eos> tag"):
        sp_data.probe_targets(forms, tags, words, [0, 2])
    # A sentence with one tag fewer than tokens shifted every later tag onto another word.
    aligned = {"tokens": ["a"], "upos": ["DET"]}
    with pytest.raises(ValueError, match=r"^sentence 1: 3 tokens but 2 UPOS tags$"):
        sp_data.stream([aligned, {"tokens": ["a", "b", "c"], "upos": ["DET", "NOUN"]}, aligned])


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
    names = sp_data.target_names(sp_data.distances(config))
    assert results["setup"]["targets"] == names
    assert results["setup"]["probe_kinds"] == ["lda", "logistic"]
    tags = ["upos", "upos_next", "upos_control", "upos_next_control"]
    assert names[-4:] == tags
    probed = {
        f"{probe}-{m}-L{layer}" for probe in sp.PROBE_KINDS for m in sp.MODELS for layer in range(3)
    }
    assert set(final) == probed | {"majority", "lexical"}
    assert set(final["lda-trained-L1"]) == set(names) and set(final["logistic-trained-L1"]) == set(
        tags
    )
    assert set(final["lexical"]) == set(tags)
    for key, row in final.items():
        values = [v if key in ("majority", "lexical") else v[0] for v in row.values()]
        assert all(0 <= v <= 1 for v in values), (key, row)
    text = (workdir / "state_probe.md").read_text()
    accuracy_section = text.split("## UPOS by probe")[0]
    rows = table_rows(accuracy_section)
    assert rows["trained L2"]["UPOS"] and rows["majority class"]["word t-0"]
    assert "UPOS control" not in accuracy_section
    mean = cell_numbers(rows["untrained L1"]["word t-2"])[0]
    assert mean == pytest.approx(final["lda-untrained-L1"]["word_k2"][0], abs=1e-3)
    assert cell_numbers(rows["majority class"]["next UPOS"])[0] == pytest.approx(
        final["majority"]["upos_next"], abs=1e-3
    )
    # The tag table: every probe kind's rows, control accuracy, selectivity = task - control,
    # the lexical lookup and the majority class.
    tag_rows = table_rows(text.split("## UPOS by probe")[1].split("## Trained minus")[0])
    logistic = final["logistic-trained-L2"]
    row = tag_rows["logistic trained L2"]
    assert cell_numbers(row["UPOS"])[0] == pytest.approx(logistic["upos"][0], abs=1e-3)
    assert cell_numbers(row["UPOS control"])[0] == pytest.approx(
        logistic["upos_control"][0], abs=1e-3
    )
    assert cell_numbers(row["UPOS selectivity"])[0] == pytest.approx(
        logistic["upos"][0] - logistic["upos_control"][0], abs=1e-3
    )
    assert "LDA untrained L0 (embedding)" in tag_rows
    lexical = tag_rows["lexical lookup"]
    assert cell_numbers(lexical["UPOS"])[0] == pytest.approx(final["lexical"]["upos"], abs=1e-3)
    assert cell_numbers(lexical["next UPOS"])[0] == pytest.approx(
        final["lexical"]["upos_next"], abs=1e-3
    )
    assert "majority class" in tag_rows
    assert "logistic trained L1 -> L2" in text.split("## From one layer")[1]
    assert_png(workdir / "state_probe.png")
    assert results["lm"]["valid_perplexity"][0] > 1
    assert set(results["timing"]["probe_fit_s"]) == {"lda", "logistic"}
    answers = sp.answers(workdir)
    assert set(answers) == {1, 12}
    assert "UPOS by the logistic probe, LDA in parentheses" in answers[12]


def test_smoke_lexical_baseline_and_controls_from_the_data(config):
    # The experiment's baselines and control columns, recomputed from the UD sentences by hand.
    sentences = sp_data.load_sentences(config)
    task = sp.UDLanguageModelTask(config, sentences)
    sets, _ = sp_data.probe_sets(config, sentences, task.corpus)
    train, test = sets["train"], sets["test"]
    names = sp_data.target_names(sp_data.distances(config))
    upos, control = names.index("upos"), names.index("upos_control")
    forms, _ = sp_data.stream(sentences["train"][: config.probe.train_sentences])
    np.testing.assert_array_equal(train.words, np.array(forms, dtype=object)[train.positions])
    # One control tag per type the LM reads (out-of-vocabulary forms: the one <unk> type),
    # shared by probe-train and probe-test; forms the LM reads as <unk> occur in both.
    vocab = set(task.corpus.vocab.tokens)
    tag_of = {}
    for split in (train, test):
        for word, tag in zip(split.words, split.labels[:, control], strict=True):
            assert tag_of.setdefault(word if word in vocab else "<unk>", tag) == tag
    assert "<unk>" in tag_of and len({w for w in test.words if w not in vocab}) > 1
    baselines = sp.baselines(sets, names)
    counts: dict = {}
    for word, tag in zip(train.words, train.labels[:, upos], strict=True):
        counts.setdefault(word, collections.Counter())[tag] += 1
    majority = collections.Counter(train.labels[:, upos].tolist()).most_common(1)[0][0]
    guesses = [
        min(counts[w], key=lambda t: (-counts[w][t], t)) if w in counts else majority
        for w in test.words
    ]
    assert baselines["lexical"]["upos"] == pytest.approx(
        np.mean(np.array(guesses) == test.labels[:, upos])
    )
    assert baselines["lexical"]["upos"] > baselines["majority"]["upos"]


def test_the_main_job_runs_it_and_reports_its_answers(smoke_run, tmp_path):
    from experiments import reproduce, reproduce_report

    workdir, _ = smoke_run
    assert "state_probe" in reproduce.experiment_names()
    (tmp_path / "state_probe").symlink_to(workdir, target_is_directory=True)
    text = reproduce_report.write_report(tmp_path, ["state_probe"], {"state_probe": 20.0})
    answers = sp.answers(workdir)
    for q in (1, 12):
        assert f"**Q{q}. {reproduce_report.QUESTIONS[q]}** {answers[q]}" in text


TAGS = ["upos", "upos_next", "upos_control", "upos_next_control"]


def _results(upos_by_layer, word_by_layer, memory, logistic_upos=None):
    """Hand-made results: 2 seeds, 2 layers; `memory[kind][layer]` = accuracy per k (0, 1, 4);
    LDA's UPOS `upos_by_layer[kind][layer]`, logistic's `logistic_upos` (default: the same)."""
    final = {
        "majority": {"word_k0": 0.5, "word_k1": 0.5, "word_k4": 0.5} | dict.fromkeys(TAGS, 0.2),
        "lexical": {"upos": 0.85, "upos_next": 0.4, "upos_control": 0.7, "upos_next_control": 0.7},
    }
    logistic_upos = logistic_upos or upos_by_layer
    for kind in ("trained", "untrained"):
        for layer in range(3):
            row = {f"word_k{k}": [memory[kind][layer][i]] * 2 for i, k in enumerate((0, 1, 4))}
            row["upos"] = list(upos_by_layer[kind][layer])
            row["upos_next"] = [0.3, 0.3]
            row["upos_control"] = [0.25, 0.25]
            row["upos_next_control"] = [0.2, 0.2]
            if kind == "trained":
                row["word_k0"] = list(word_by_layer[layer])
            final[f"lda-{kind}-L{layer}"] = row
            final[f"logistic-{kind}-L{layer}"] = {t: row[t] for t in TAGS} | {
                "upos": list(logistic_upos[kind][layer])
            }
    setup = {
        "targets": ["word_k0", "word_k1", "word_k4", *TAGS],
        "probe_kinds": ["lda", "logistic"],
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
        "l2_penalties": [0.001],
        "logistic_iterations": 10,
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
    assert sp_answers.memory_reach(rising, "trained", 1) == 4
    assert sp_answers.memory_reach(rising, "trained", 2) == 1
    assert sp_answers.memory_reach(rising, "untrained", 2) == 0
    (tmp_path / "results.json").write_text(json.dumps(rising))
    answers = sp.answers(tmp_path)
    assert "Trained layer 1 holds the word up to k=4 back" in answers[1]
    assert "Trained layer 2 holds the word up to k=1 back" in answers[1]
    assert "gains on word identity in every seed, by more than 0.02 on average" in answers[12]
    assert "The LDA probe gives the same verdict" in answers[12]
    # Layer 2's 0.76 is within 0.02 of... nothing: layer 1 is 0.71 -> no tie.
    assert "UPOS is best decoded from layer 2," in answers[12]
    # Selectivity (UPOS - control 0.25) and the lexical lookup (0.85 - best 0.76 = 0.09).
    assert "selectivity 0.510" in answers[12] and "0.090 below it" in answers[12]
    assert "Logistic UPOS selectivity changes by 0.05 ± 0 over the same step" in answers[12]
    markdown = report.markdown(rising)
    tag_rows = table_rows(markdown.split("## UPOS by probe")[1].split("## Trained minus")[0])
    assert cell_numbers(tag_rows["logistic trained L2"]["UPOS selectivity"])[0] == pytest.approx(
        0.51
    )
    assert tag_rows["lexical lookup"]["UPOS selectivity"] == "+0.1500"
    # Trained minus untrained: L1 UPOS 0.71 - 0.5, word t 0.95 - 0.90, word t-1 0.80 - 0.6.
    gain_rows = table_rows(markdown.split("## Trained minus")[1].split("## From one layer")[0])
    assert [gain_rows["L1"][c] for c in ("UPOS", "word t-0", "word t-1")] == [
        "+0.210",
        "+0.050",
        "+0.200",
    ]
    # UPOS falls from layer 1 to 2 by more than word identity: the claim is not supported.
    falling = {"trained": [[0.6, 0.6], [0.8, 0.82], [0.7, 0.71]], "untrained": upos["untrained"]}
    text = sp_answers.answers(_results(falling, [[0.99, 0.99], [0.95, 0.95], [0.94, 0.94]], MEMORY))
    assert "does not support 'more abstract representations at higher layers'" in text[12]
    assert "UPOS is best decoded from layer 1," in text[12]
    # Logistic regression tells another story than LDA: UPOS up by 0.1 from layer 1 to 2.
    logistic = {"trained": [[0.6, 0.6], [0.7, 0.7], [0.8, 0.8]], "untrained": upos["untrained"]}
    text = sp_answers.answers(
        _results(falling, [[0.99, 0.99], [0.95, 0.95], [0.94, 0.94]], MEMORY, logistic)
    )
    assert "logistic UPOS accuracy rises by 0.100" in text[12]
    assert "gains on word identity in every seed, by more than 0.02 on average" in text[12]
    assert "The LDA probe disagrees (UPOS loses against word identity" in text[12]
    assert "the verdict depends on the probe" in text[12]
    # Layers within the margin of the best are named as a tie.
    tied = {"trained": [[0.6, 0.6], [0.7, 0.7], [0.71, 0.71]], "untrained": upos["untrained"]}
    text = sp_answers.answers(_results(tied, [[0.99, 0.99], [0.95, 0.95], [0.94, 0.94]], MEMORY))
    assert "UPOS is best decoded from layer 2 (layer 1 within 0.02: a tie" in text[12]
    mixed = {"trained": [[0.6, 0.6], [0.8, 0.8], [0.85, 0.75]], "untrained": upos["untrained"]}
    text = sp_answers.answers(_results(mixed, [[0.99, 0.99], [0.95, 0.95], [0.95, 0.95]], MEMORY))
    assert "mixed sign over seeds" in text[12]
    # Every trained layer holds the current word (k=0) and nothing further back.
    current = {**MEMORY, "trained": [[0.99, 0.5, 0.5], [0.95, 0.6, 0.5], [0.9, 0.5, 0.5]]}
    text = sp_answers.answers(_results(mixed, [[0.99, 0.99], [0.95, 0.95], [0.9, 0.9]], current))
    assert "No layer holds a past word beyond the margin" in text[1]
    assert "memory of the recent past" not in text[1]
    # UPOS -0.016 and word -0.025 (the quick run's): +0.009 in both seeds, within the margin.
    small = {
        "trained": [[0.6, 0.6], [0.575, 0.575], [0.559, 0.559]],
        "untrained": upos["untrained"],
    }
    text = sp_answers.answers(_results(small, [[1.0, 1.0], [0.996, 0.996], [0.971, 0.971]], MEMORY))
    assert "logistic UPOS accuracy falls by 0.016" in text[12]
    assert "does not show the upper layer to be more abstract" in text[12]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("probe.distances", "2,1", "probe.distances='2,1': must be increasing distinct integers"),
        ("probe.distances", "0,-1", "probe.distances='0,-1': must be increasing"),
        ("probe.distances", "0,a", "probe.distances='0,a': must be increasing distinct integers"),
        # ASCII digits only: int() read '١' as 1, '1_0' as 10 and '+2' as 2
        ("probe.distances", "0,١", "probe.distances='0,١': must be increasing distinct"),
        ("probe.distances", "0,1_0", "probe.distances='0,1_0': must be increasing distinct"),
        ("probe.distances", "0,+2", r"probe.distances='0,\+2': must be increasing distinct"),
        ("probe.shrinkages", "0,1", "probe.shrinkages='0,1': must be positive numbers"),
        ("probe.shrinkages", "0.1,x", "probe.shrinkages='0.1,x': must be positive numbers"),
        ("probe.test_split", "train", "probe.test_split='train': must be one of"),
        ("probe.num_words", 0, "probe.num_words=0: must be an integer >= 1"),
        ("probe.holdout_fraction", 0.9, "probe.holdout_fraction=0.9"),
        ("probe.kinds", "lda,mlp", "probe.kinds='lda,mlp': must be distinct names from lda"),
        (
            "probe.kinds",
            "logistic",
            "probe.kinds='logistic': must be distinct names from lda, logistic, "
            "comma-separated, lda among them",
        ),
        ("probe.kinds", "lda,lda", "probe.kinds='lda,lda'"),
        ("probe.l2_penalties", "0.1,-1", "probe.l2_penalties='0.1,-1': must be positive"),
        ("probe.logistic_iterations", 0, "probe.logistic_iterations=0: must be an integer >= 1"),
        ("data.corpus", "ptb", "data.corpus='ptb': must be one of 'ud_en_ewt'"),
        ("model.compute_dtype", "bfloat16", "model.compute_dtype='bfloat16'"),
    ],
)
def test_bad_config_values_are_named(key, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        cli.load_config(SMOKE, {key: value}, rules=sp.RULES)


@pytest.fixture(scope="module", autouse=True)
def bad_probe_kind_run(tmp_path_factory):
    """test_a_bad_probe_kind_on_the_command_line_is_one_line_and_exit_status_2's command line,
    started with the module's first test: it runs (mostly imports, on one core) beside the
    others."""
    workdir = tmp_path_factory.mktemp("state_probe_bad_kind") / "w"
    run = StartedModule(
        "experiments.state_probe",
        f"--workdir={workdir}",
        f"--config={SMOKE}",
        "--config.probe.kinds=lda,mlp",
        timeout=300,
    )
    yield workdir, run
    run.close()


def test_a_bad_probe_kind_on_the_command_line_is_one_line_and_exit_status_2(bad_probe_kind_run):
    workdir, run = bad_probe_kind_run
    proc = run.result()
    assert proc.returncode == exits.REFUSED == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "probe.kinds" in line]
    assert len(lines) == 1 and "probe.kinds='lda,mlp': must be distinct names" in lines[0]
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_too_many_sentences_is_named(config):
    big = config.copy_and_resolve_references()
    big.probe.test_sentences = 999_999
    with pytest.raises(
        cfg.ConfigError, match="probe.test_sentences=999999: UD English-EWT 'valid'"
    ):
        sp_data.load_sentences(big)
    # No position to probe, named before the LM trains: the first valid sentence has 7 words,
    # fewer than the smoke config's largest distance (it wrote NaN accuracies with verdicts),
    # and distance 5000 leaves probe-train empty (it failed in the control task, unnamed).
    short = config.copy_and_resolve_references()
    short.probe.test_sentences = 1
    with pytest.raises(cfg.ConfigError, match=r"^probe.test_sentences=1 with probe.distances="):
        sp_data.load_sentences(short)
    far = config.copy_and_resolve_references()
    far.probe.distances = "0,5000"
    with pytest.raises(cfg.ConfigError, match=r"^probe.train_sentences=\d+ .*'0,5000': 0 word"):
        sp_data.load_sentences(far)


def test_untrained_model_is_the_initialisation_of_its_seed(config):
    # The runtime's own initial state (rnn_jax.train.steps.build_init) is the reference.
    from rnn_jax.train import optim
    from rnn_jax.train.steps import build_init

    sentences = {s: [{"tokens": ["a", "b"], "upos": ["DET", "NOUN"]}] * 400 for s in sp_data.SPLITS}
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


def test_non_finite_features_are_named():
    # A diverged model's NaN states failed deep in np.linalg.eigh ("Eigenvalues did not
    # converge", naming nothing) when fitting, and a NaN row was silently predicted as class 0
    # (argmax of NaN scores) when scoring.
    x, labels = _data()
    bad = x.copy()
    bad[7, 2] = np.nan
    message = r"non-finite values in 1 of 80 rows \(first: row 7\)"
    with pytest.raises(ValueError, match=message):
        probes.fit_lda_probes(bad, labels[:, None], [3], [1.0], np.arange(80) >= 60)
    with pytest.raises(ValueError, match=message):
        logistic_probes.fit_logistic_probe(bad, labels, 3, 0.1, iterations=2)
    probe = probes.fit_lda_probe(x, labels, 3, 1.0)
    bad[7, 2] = np.inf
    with pytest.raises(ValueError, match=message):
        probe.accuracy(bad, labels)


def test_the_setup_text_names_the_scored_split_as_the_answers_do():
    # It said "positions of UD valid" where the answers say "UD dev".
    upos = {"trained": [[0.6, 0.6], [0.7, 0.72], [0.75, 0.77]], "untrained": [[0.5, 0.5]] * 3}
    results = _results(upos, [[0.99, 0.99], [0.95, 0.95], [0.9, 0.9]], MEMORY)
    assert "30 positions of UD dev." in report.setup_text(results)
    assert "UD valid" not in report.markdown(results)
    results["setup"]["probe_test_split"] = "test"
    assert "30 positions of UD test." in report.setup_text(results)


def test_lda_weights_equal_a_closed_form_solve():
    # Independent of the eigendecomposition path: W = (S_within + shrinkage I)^-1 mu_c by
    # np.linalg.solve on the fitting set's standardised features, b_c = -mu_c.W_c / 2 + log pi_c.
    x, labels = _data(n=200, d=6, classes=4, seed=4)
    shrinkage = 0.05
    probe = probes.fit_lda_probe(x, labels, 4, shrinkage)
    z = (x - x.mean(0)) / x.std(0)
    means = np.stack([z[labels == c].mean(0) for c in range(4)])
    residual = z - means[labels]
    within = residual.T @ residual / len(z) + shrinkage * np.eye(6)
    weights = np.linalg.solve(within, means.T)
    bias = -0.5 * np.sum(means.T * weights, axis=0) + np.log(np.bincount(labels) / len(z))
    np.testing.assert_allclose(probe.weights, weights, rtol=0, atol=1e-10)
    np.testing.assert_allclose(probe.bias, bias, rtol=0, atol=1e-10)
