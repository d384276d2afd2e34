"""Review 23 of the SMT baseline (experiments/smt_baseline.py, experiments/mert.py): the
cases the earlier tests left open."""

import pytest

from experiments import smt_baseline
from rnn_jax.train import cli

SMOKE = "experiments/configs/smt_baseline.py:smoke"


@pytest.mark.data
@pytest.mark.parametrize("max_length", [3, 4])
def test_a_split_left_empty_by_max_length_is_a_config_error(tmp_path, data_root, max_length):
    """Multi30k has no pair with both sides <= 3 tokens, and none in test2016 with <= 4 (3
    training pairs, 1 val pair): the run stops before training with a message naming the key,
    not a ZeroDivisionError from nltk's aligner or an IndexError from sacrebleu after MERT."""
    config = cli.load_config(
        SMOKE,
        {"data.root": str(data_root), "smt.max_length": max_length},
        smt_baseline.RULES,
        trains=smt_baseline.TRAINS,
    )
    with pytest.raises(smt_baseline.cfg.ConfigError, match=r"smt\.max_length=.*no (train|test)"):
        smt_baseline.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_phrase_table_keeps_the_best_translations_by_weighted_score():
    """`phrase_table` against a hand computation: each option scores weights · (log φ(e|f),
    log φ(f|e), log lex(e|f), log lex(f|e)) + the phrase weight, and of each source phrase
    the best `max_translations` by that score are kept (here the weights, a negative one
    included, reverse the order that log φ(e|f) alone would give)."""
    features = {
        (("a",), ("x",)): (-0.1, -2.0, -0.5, -1.0),
        (("a",), ("y",)): (-1.0, -0.2, -0.5, -1.0),
        (("a",), ("z", "z")): (-2.0, -0.1, -0.4, -3.0),
        (("b", "c"), ("w",)): (-0.7, -0.3, -0.2, -0.1),
    }
    weights, phrase_weight = (0.5, 2.0, 1.0, -0.5), -0.3
    table = smt_baseline.phrase_table(features, 2, weights, phrase_weight)

    def score(f1, f2, f3, f4):
        return 0.5 * f1 + 2.0 * f2 + 1.0 * f3 - 0.5 * f4 - 0.3

    # a -> z z: -1 - 0.2 - 0.4 + 1.5 - 0.3 = -0.4; y: -0.5 - 0.4 - 0.5 + 0.5 - 0.3 = -1.2;
    # x: -0.05 - 4 - 0.5 + 0.5 - 0.3 = -4.35, dropped.
    kept = [(e.trg_phrase, e.log_prob) for e in table.translations_for(("a",))]
    assert [phrase for phrase, _ in kept] == [("z", "z"), ("y",)]
    assert [s for _, s in kept] == pytest.approx([-0.4, -1.2])
    assert kept[0][1] == pytest.approx(score(*features[("a",), ("z", "z")]))
    (only,) = table.translations_for(("b", "c"))
    assert only.trg_phrase == ("w",)
    assert only.log_prob == pytest.approx(score(*features[("b", "c"), ("w",)]))
