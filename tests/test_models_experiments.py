"""The sequence-labelling and sentiment experiments' configs: every variant and every sweep
point passes the runtime's and the experiment's validation; bad values are named."""

import importlib

import pytest

from rnn_jax.train import config as cfg

EXPERIMENTS = ["sequence_labelling", "sentiment"]


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("variant", ["smoke", "quick", "full"])
def test_variants_and_sweep_points_validate(name, variant):
    experiment = importlib.import_module(f"experiments.{name}")
    configs = importlib.import_module(f"experiments.configs.{name}")
    config = configs.get_config(variant)
    cfg.validate(config, experiment.RULES)
    for point in configs.get_sweep(variant):
        swept = configs.get_config(variant)
        for key, value in point.items():
            section, field = key.split(".")
            assert field in swept[section], f"sweep key {key} is not a config key"
            swept[section][field] = value
        cfg.validate(swept, experiment.RULES)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_unknown_variant_and_bad_values_are_named(name):
    experiment = importlib.import_module(f"experiments.{name}")
    configs = importlib.import_module(f"experiments.configs.{name}")
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        configs.get_config("huge")
    config = configs.get_config("smoke")
    config.model.cell = "transformer-xl"
    with pytest.raises(ValueError, match="model.cell"):
        cfg.validate(config, experiment.RULES)


def test_majority_tag_per_word_baseline():
    from experiments.sequence_labelling import majority_tag_per_word

    train = [
        {"tokens": ["the", "run", "run"], "tags": ["DET", "VERB", "NOUN"]},
        {"tokens": ["a", "run"], "tags": ["DET", "NOUN"]},
        {"tokens": ["dogs"], "tags": ["NOUN"]},
    ]
    held = [{"tokens": ["run", "the", "cats"]}]
    # run: NOUN 2 > VERB 1; the: DET; unseen "cats": the most frequent tag overall (NOUN 3)
    assert majority_tag_per_word(train, held) == [["NOUN", "DET", "NOUN"]]
