"""experiments.word_order's report: answers and plots with a diverged seed, and the bag called
smaller only when its count is."""

import json

from experiments import word_order as wo
from experiments import word_order_report as wo_report
from tests.report_check import plotted_axes
from tests.test_word_order import _summary as word_order_summary


def test_word_order_answer_with_a_diverged_seed(tmp_path):
    accuracy = {
        "sst-bag": [0.70, 0.71, 0.72],
        "sst-shuffled": [0.73, 0.74, 0.75],
        "sst-ordered": [0.80, None, 0.82],  # above every shuffled seed, one diverged
    }
    points = {n: word_order_summary(*n.split("-"), v) for n, v in accuracy.items()}
    (tmp_path / "results.json").write_text(json.dumps({"final": {}, "points": points}))
    answer = wo.answers(tmp_path)[2]
    assert "order (ordered − shuffled): +7.00 points (a seed diverged" in answer
    assert "the ordered mean is higher but a seed diverged: that word order matters is not" in (
        answer
    )
    assert "word order matters is supported" not in answer
    # Every seed of one point diverged (its mean is NaN): neither "did not help" nor helped.
    for name in ("sst-shuffled", "sst-ordered"):
        dead = {**points, name: word_order_summary(*name.split("-"), [None, None, None])}
        answer = wo_report.answers(dead)[2]
        assert "order did not help" not in answer
        assert "ordered or the shuffled point diverged: that word order matters is not" in answer
    # One seed a side has no spread to be beyond: it was "every seed apart", "supported".
    for name, value in (("sst-shuffled", [0.73]), ("sst-ordered", [0.80])):
        points[name] = {**word_order_summary(*name.split("-"), value), "num_seeds": 1}
    answer = wo_report.answers({n: points[n] for n in ("sst-shuffled", "sst-ordered")})[2]
    assert "shuffled): +7.00 points (one seed: no seed spread to compare)" in answer
    assert "higher but one seed per point has no spread to be beyond: that word order" in answer
    # The ordered mean 0.33 points below the bag's, seeds overlapping: no loss to the bag.
    accuracy = {"bag": [0.74, 0.75, 0.80], "shuffled": [0.73, 0.74, 0.75]}
    accuracy["ordered"] = [0.73, 0.76, 0.79]
    points = {f"sst-{o}": word_order_summary("sst", o, v) for o, v in accuracy.items()}
    answer = wo_report.answers(points)[2]
    assert "does not make it beat" not in answer
    assert "BiLSTM is -0.33 points (within the seed spread) against the context-free bag" in answer


def test_word_order_plot_shows_every_seed(tmp_path, monkeypatch):
    from experiments import word_order_report as wo_report

    points = {
        name: {
            "task": "sst",
            "order": name.split("-")[1],
            "test_accuracy": accuracy,
            "majority_baseline": {"test_accuracy": 0.5},
        }
        for name, accuracy in (("sst-bag", [0.80, 0.81, 0.99]), ("sst-ordered", [0.8, 0.8, None]))
    }
    (axis,) = plotted_axes(monkeypatch, lambda: wo_report.plot(points, tmp_path))
    low, high = axis.get_ylim()
    assert low < 0.5 and high > 0.99


def test_the_bag_is_called_smaller_only_when_its_count_is():
    accuracy = [0.8, 0.81, 0.82]
    points = {o: word_order_summary("sst", o, accuracy) for o in ("bag", "ordered")}
    points["ordered"]["params_outside_embeddings"] = 5000
    points["bag"]["params_outside_embeddings"] = 9000  # a wide bag
    text = wo_report.markdown({f"sst-{o}": s for o, s in points.items()})
    assert "the bag is not the smaller model here" in text
    assert "it is the smaller model" not in text  # the fixed sentence it replaced
    assert "has 9,000 parameters outside the embeddings, the BiLSTM 5,000" in text
    assert "over 225 vocabulary entries (training words, `<pad>` and `<unk>`)" in text
    points["bag"]["params_outside_embeddings"] = 1000
    text = wo_report.markdown({f"sst-{o}": s for o, s in points.items()})
    assert "BiLSTM 5,000: the bag is the smaller model." in text


def test_order_is_not_called_useless_against_a_diverged_shuffled_seed():
    """The shuffled BiLSTM's second seed diverged and its finite seeds are above every
    ordered seed: "order did not help" was said on the survivors alone."""
    accuracy = {"shuffled": [0.85, None, 0.86], "ordered": [0.80, 0.81, 0.82]}
    points = {f"sst-{o}": word_order_summary("sst", o, v) for o, v in accuracy.items()}
    answer = wo_report.answers(points)[2]
    assert "order did not help" not in answer
    assert "the ordered mean is not higher but a seed diverged: that word order matters is " in (
        answer
    )
