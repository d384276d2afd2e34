"""experiments.state_probe's config checks, answers and plots: the split the probes were scored
on, the Q1 summary and Q12 verdict against the memory curves, distances from word t, plots
of ten or more layers, and settings the experiment cannot honour refused."""

import numpy as np
import pytest

from experiments import state_probe as sp
from experiments import state_probe_answers as sp_answers
from experiments import state_probe_data as sp_data
from experiments import state_probe_report as sp_report
from experiments.configs import state_probe as sp_configs
from rnn_jax.train import cli
from rnn_jax.train import config as cfg
from tests.test_state_probe import MEMORY
from tests.test_state_probe import _results as probe_results


def test_probe_distances_start_at_word_t():
    """probe.distances without 0 passed the rule, trained the LM and fitted every probe, then
    the report failed (KeyError 'word_k0': Q12 compares UPOS with word t's identity)."""
    smoke = "experiments/configs/state_probe.py:smoke"
    for value in ("1,2,4", "2"):
        with pytest.raises(ValueError, match=rf"probe\.distances='{value}': .*starting at 0"):
            cli.load_config(smoke, {"probe.distances": value}, rules=sp.RULES)
    config = cli.load_config(smoke, {"probe.distances": "0,3"}, rules=sp.RULES)
    assert sp_data.distances(config) == [0, 3]
    assert sp_data.target_names([0, 3])[:2] == ["word_k0", "word_k3"]
    assert np.array_equal(sp_data.num_classes(config)[:2], [config.probe.num_words + 1] * 2)


def test_probe_plot_draws_ten_or_more_layers(tmp_path):
    """model.num_layers is any integer >= 1, but the memory plot coloured layer l with the
    l-th colour of a 10-colour cycle: at 10 layers (11 with the embedding) it raised
    IndexError after the LM had trained and every probe was fitted, before results.json."""
    layers, ks = 10, [0, 1]
    targets = ["word_k0", "word_k1", "upos", "upos_next", "upos_control", "upos_next_control"]
    final = {
        f"lda-{kind}-L{layer}": {t: [0.5 + 0.01 * layer, 0.5] for t in targets}
        for kind in ("trained", "untrained")
        for layer in range(layers + 1)
    }
    final["majority"] = dict.fromkeys(targets, 0.4)
    final["lexical"] = dict.fromkeys(targets[2:], 0.8)
    setup = {"distances": ks, "num_layers": layers, "probe_kinds": ["lda"], "targets": targets}
    sp_report.plot({"final": final, "setup": setup}, tmp_path)
    assert (tmp_path / "state_probe.png").stat().st_size > 1000


UPOS = {"trained": [[0.6, 0.6], [0.7, 0.72], [0.75, 0.77]], "untrained": [[0.5, 0.5]] * 3}


WORD = [[0.99, 0.99], [0.95, 0.95], [0.9, 0.9]]


def test_probe_answers_name_the_split_they_were_scored_on():
    results = probe_results(UPOS, WORD, MEMORY)
    answers = sp_answers.answers(results)
    assert "accuracy on UD dev" in answers[1] and "accuracy on UD dev" in answers[12]
    results["setup"]["probe_test_split"] = "test"  # the full variant's
    answers = sp_answers.answers(results)
    for question in (1, 12):
        assert "UD dev" not in answers[question]
        assert "accuracy on UD test" in answers[question]


def test_probe_above_the_lexical_lookup_is_not_called_below_it():
    results = probe_results(UPOS, WORD, MEMORY)
    results["final"]["lexical"]["upos"] = 0.7  # the best layer's logistic UPOS is 0.76
    text = sp_answers.answers(results)[12]
    assert "linear probe is 0.060 above it" in text and "below it" not in text


def test_q1_summary_states_only_what_the_memory_curves_show():
    results = probe_results(UPOS, WORD, MEMORY)
    text = sp_answers.answers(results)[1]
    # MEMORY: accuracy falls with k at both layers; the untrained layer 1 reads k=1.
    assert "So the state is a memory of the recent past whose decodability falls with k." in text
    assert "An untrained LSTM of the same shape also keeps some of the past" in text
    # Layer 2 reads the word 4 back better than the word 1 back (0.75 vs 0.6).
    memory = {**MEMORY, "trained": [[0.99, 0.5, 0.5], [0.95, 0.80, 0.6], [0.9, 0.6, 0.75]]}
    text = sp_answers.answers(probe_results(UPOS, WORD, memory))[1]
    assert "falls with k" not in text
    assert (
        "does not fall steadily with k (a farther word is read better than a nearer one by "
        "more than 0.02 at layer 2)"
    ) in text
    # A farther word read better by 0.01 (within the margin: noise) is not a rise.
    memory = {**MEMORY, "trained": [[0.99, 0.5, 0.5], [0.95, 0.80, 0.6], [0.9, 0.7, 0.71]]}
    text = sp_answers.answers(probe_results(UPOS, WORD, memory))[1]
    assert "So the state is a memory of the recent past whose decodability falls with k." in text
    # An untrained LSTM at the majority level everywhere keeps nothing beyond the margin.
    memory = {**MEMORY, "untrained": [[0.99, 0.5, 0.5], [0.9, 0.5, 0.5], [0.85, 0.5, 0.5]]}
    text = sp_answers.answers(probe_results(UPOS, WORD, memory))[1]
    assert "also keeps some of the past" not in text
    assert "The untrained LSTM of the same shape holds no past word beyond the margin" in text


def test_state_probe_refuses_keep_best():
    """The probes read each seed's last checkpoint; with keep_best the LM's perplexities in
    the same results would be the best-validation checkpoint's, another model's."""
    from experiments import state_probe as sp

    with pytest.raises(ValueError, match=r"train\.keep_best=True: must be one of False"):
        cli.load_config(
            "experiments/configs/state_probe.py:smoke", {"train.keep_best": True}, rules=sp.RULES
        )
    for variant in ("smoke", "quick", "full"):
        cli.load_config(f"experiments/configs/state_probe.py:{variant}", rules=sp.RULES)


def test_probe_train_larger_than_the_lm_training_text_is_named():
    # probe-train is cut from the LM's training sentences: 301 of 300 were silently 300.
    config = sp_configs.get_config("smoke")
    config.data.train_sentences = 300
    config.probe.train_sentences = 301
    message = r"probe\.train_sentences=301: more than the LM's data\.train_sentences=300"
    with pytest.raises(cfg.ConfigError, match=message):
        sp_data.load_sentences(config)


def test_q12_verdict_words_match_its_condition():
    # The margin holds for the mean (0.0255 > 0.02), not for the second seed (0.001).
    verdict = sp_answers.q12_verdict(np.array([0.05, 0.001]))
    assert verdict == "rises"
    text = sp_answers.VERDICTS[verdict]
    assert "by more than the margin in every seed" not in text
    assert text.startswith("UPOS gains on word identity in every seed, by more than 0.02 on av")
    assert sp_answers.q12_verdict(np.array([-0.05, -0.001])) == "falls"
    # A mean beyond the margin with one seed of the other sign is no verdict either way.
    assert sp_answers.q12_verdict(np.array([0.06, -0.001])) == "flat"
    assert sp_answers.q12_verdict(np.array([-0.06, 0.001])) == "flat"
    # A diverged seed (NaN) is left out, not read as a seed of no verdict.
    assert sp_answers.q12_verdict(np.array([0.05, np.nan, 0.03])) == "rises"
    assert "in every seed, by more than 0.02 on average" in sp_answers.VERDICTS["falls"]
    # One seed checks no sign across seeds: a 1-seed run's +0.05 read "UPOS gains on word
    # identity in every seed ...: the upper layer is more abstract".
    for one in ([0.05], [-0.05], [0.05, np.nan]):
        assert sp_answers.q12_verdict(np.array(one)) == "one seed"
    assert "does not show the upper layer to be more abstract" in sp_answers.VERDICTS["one seed"]


def test_q1_names_a_nearer_word_the_layer_does_not_hold():
    from tests.test_state_probe import MEMORY
    from tests.test_state_probe import _results as probe_results

    upos = {"trained": [[0.6, 0.6], [0.7, 0.72], [0.75, 0.77]], "untrained": [[0.5, 0.5]] * 3}
    # Trained layer 1 reads the current word at 0.91, within the margin of the untrained
    # layer's 0.90, but the words 1 and 4 back above every floor: not "up to k=4".
    results = probe_results(upos, [[0.99, 0.99], [0.91, 0.91], [0.9, 0.9]], MEMORY)
    assert sp_answers.held_distances(results, "trained", 1) == [1, 4]
    assert sp_answers.memory_reach(results, "trained", 1) == 4
    text = sp_answers.answers(results)[1]
    assert "Trained layer 1 holds the word at k=1, 4 back (not at k=0) (accuracy above" in text
    assert "Trained layer 2 holds the word up to k=1 back (accuracy above" in text


def test_baselines_and_controls_are_drawn_from_probe_train():
    """The majority class is probe-train's, scored on probe-test, and the control tasks draw
    their tags from probe-train's tag distribution: here every probe-train word is a NOUN
    and every probe-test word a VERB."""
    config = sp_configs.get_config("smoke")
    config.probe.train_sentences, config.probe.test_sentences = 3, 0
    config.probe.test_split, config.probe.num_words, config.probe.distances = "valid", 2, "0"
    sentences = {
        "train": [{"tokens": ["a", "b"], "upos": ["NOUN", "NOUN"]}] * 3,
        "valid": [{"tokens": ["a", "c"], "upos": ["VERB", "VERB"]}] * 3,
    }
    sets, _ = sp_data.probe_sets(config, sentences, sp.ud_lm_corpus(sentences, 1))
    names = sp_data.target_names([0])
    noun, eos = sp_data.UPOS.index("NOUN"), len(sp_data.UPOS)
    for split in sets.values():
        assert set(split.labels[:, names.index("upos_control")]) == {noun}
        assert set(split.labels[:, names.index("upos_next_control")]) <= {noun, eos}
    baselines = sp.baselines(sets, names)
    assert baselines["majority"]["upos"] == baselines["lexical"]["upos"] == 0.0  # NOUN guessed


def test_probe_model_fits_each_layer_on_probe_train_and_scores_it_on_probe_test(monkeypatch):
    """Layer l's probe is fitted on layer l's probe-train states at the probed positions, its
    strength chosen on the last `probe.holdout_fraction` of them (a contiguous block), and
    scored on layer l's probe-test states. Fake states (100 l + t, + 1000 in probe-test) and a
    fit that records what it was given: no model, no fitting."""
    config = sp_configs.get_config("smoke")
    config.probe.distances, config.probe.kinds, config.probe.holdout_fraction = "0", "lda", 0.25
    sets = {
        "train": sp_data.ProbeSet(np.arange(10), np.arange(1, 9), None, np.zeros((8, 5), int)),
        "test": sp_data.ProbeSet(np.arange(6), np.array([2, 3]), None, np.zeros((2, 5), int)),
    }

    def states(model, tokens):
        offset = 1000.0 if tokens.shape[1] == 6 else 0.0
        return [
            offset + 100 * layer + np.arange(tokens.shape[1])[None, :, None] for layer in range(3)
        ]

    fits = []

    class Probe:
        regularization = 0.0

        def accuracy(self, features, labels):
            return float(features.mean())

    def fit(kind, features, labels, classes, holdout, config):
        fits.append((features[:, 0], holdout))
        return [Probe() for _ in classes]

    monkeypatch.setattr(sp.probes, "layer_states", states)
    monkeypatch.setattr(sp, "_fit", fit)
    accuracy, _, _ = sp.probe_model(None, sets, config)["lda"]
    for layer, (features, holdout) in enumerate(fits):
        np.testing.assert_array_equal(features, 100 * layer + np.arange(1, 9))
        assert holdout.tolist() == [False] * 6 + [True] * 2
    np.testing.assert_array_equal(accuracy, [[1002.5 + 100 * layer] * 5 for layer in range(3)])
