"""experiments.bidirectional: the token classes against a hand-worked example, the backward
task reads every sentence reversed, every point's size (counted by a closed form) matches
bi-softmax's, a smoke run's results, tables and answers agree with each other, and bad config
values fail naming the key (exit status 2 on the command line). The report: the "every seed
apart" chance against an enumeration of every ranking, the words where a seed diverged or a
token class has no test tokens, and the plot showing every seed."""

import collections
import itertools
import json
import math

import numpy as np
import pytest

from experiments import bidirectional as bd
from experiments import bidirectional_report as report
from experiments import grid
from experiments.configs import bidirectional as bd_configs
from rnn_jax import exits
from rnn_jax.train import cli
from rnn_jax.train import config as cfg
from tests.module_cli import StartedModule
from tests.report_check import assert_png, cell_numbers, plotted_axes, table_rows

SMOKE = "experiments/configs/bidirectional.py:smoke"  # UD EWT, LSTM 16, 12 steps, 64 sentences
QUICK = "experiments/configs/bidirectional.py:quick"
NUM_TAGS = 18  # UD UPOS: 17 tags + <pad>


@pytest.fixture(scope="module")
def config(data_root):
    return cli.load_config(SMOKE, {"data.root": str(data_root)}, rules=bd.RULES)


@pytest.fixture(scope="module")
def tasks(config):
    """The smoke's forward task (the data, loaded once for the module) and the backward one
    it serves (same width: only the direction differs)."""
    forward = bd.BidirectionalTask(bd.point_config(config, "forward-softmax", 16))
    backward = forward.for_point(bd.point_config(config, "backward-softmax", 16))
    return {"forward-softmax": forward, "backward-softmax": backward}


def test_point_config_sets_direction_head_and_width(config):
    for name in bd.POINTS:
        point = bd.point_config(config, name, 7)
        direction, head = name.split("-")
        assert point.model.bidirectional is (direction == "bi")
        assert point.data.reverse is (direction == "backward")
        assert (point.model.head, point.model.hidden_size) == (head, 7)
    assert set(bd.POINTS) == {"-".join(p) for p in itertools.product(bd.DIRECTIONS, bd.HEADS)}


def test_token_classes_by_hand():
    train = [
        {"tokens": ["run", "the", "run"], "tags": ["VERB", "DET", "NOUN"]},
        {"tokens": ["run", "fast"], "tags": ["VERB", "ADV"]},
    ]
    # run: VERB 2, NOUN 1 -> majority VERB; the: DET; 'dog' is out of the vocabulary.
    sentences = [{"tokens": ["the", "run", "run", "dog"], "tags": ["DET", "NOUN", "VERB", "X"]}]
    known = [np.array([True, True, True, False])]
    (classes,) = bd.token_classes(train, sentences, known)
    assert [bd.TOKEN_CLASSES[c] for c in classes] == ["majority", "minority", "majority", "unk"]
    # A known word whose gold tag never occurred with it is 'minority' too.
    (other,) = bd.token_classes(train, [{"tokens": ["fast"], "tags": ["ADJ"]}], [np.array([True])])
    assert list(other) == [1]


def test_backward_task_reads_every_sentence_reversed(tasks):
    forward, backward = tasks["forward-softmax"], tasks["backward-softmax"]
    for split in ("train", "valid", "test"):
        for f, b in zip(forward.splits[split], backward.splits[split], strict=True):
            for field in f:
                np.testing.assert_array_equal(b[field], f[field][::-1])
    # The batches the model sees: row i of a backward batch is row i of the forward one,
    # reversed within its length, padding still on the right.
    f_batch = forward.eval_data("valid")[0]
    b_batch = backward.eval_data("valid")[0]
    for row, length in enumerate(f_batch["lengths"]):
        for field in ("inputs", "targets", "token_class"):
            np.testing.assert_array_equal(
                b_batch[field][row, :length], f_batch[field][row, :length][::-1]
            )
        assert (b_batch["token_class"][row, length:] == -1).all()


def test_eval_splits_are_cut_and_classes_counted(config, tasks):
    task = tasks["forward-softmax"]
    for split in bd.EVAL_SPLITS:
        examples = task.splits[split]
        assert len(examples) == config.data.eval_sentences
        counts = task.class_tokens[split]
        assert sum(counts.values()) == sum(len(e["inputs"]) for e in examples)
        assert all(counts[c] > 0 for c in bd.TOKEN_CLASSES)
        unk = task.vocabs["tokens"].unk_id
        for e in examples:  # 'unk' is exactly the tokens the model reads as <unk>
            np.testing.assert_array_equal(e["token_class"] == 2, e["inputs"] == unk)
    assert len(task.splits["train"]) == bd_configs.UD_SENTENCES  # training is never cut


def _closed_form(hidden: int, embed: int, bidirectional: bool, head: str) -> int:
    """LSTM (W_ih, W_hh, b_ih, b_hh per direction) + output layer + CRF transitions."""
    directions = 2 if bidirectional else 1
    lstm = directions * (4 * hidden * (embed + hidden) + 8 * hidden)
    output = (directions * hidden + 1) * NUM_TAGS
    crf = NUM_TAGS * NUM_TAGS + 2 * NUM_TAGS if head == "crf" else 0
    return lstm + output + crf


@pytest.mark.parametrize("spec", [SMOKE, QUICK])
def test_every_point_matches_bi_softmax_within_tolerance(data_root, tasks, spec):
    """Each point's parameters outside the embeddings, counted by the closed form, are within
    match.tolerance of bi-softmax's; the embeddings (vocab x embed) are the rest. (quick's
    sizes with smoke's evaluation cut: the loaded smoke task serves it, sizes do not change.)"""
    overrides = {"data.root": str(data_root), "data.eval_sentences": 64}
    config = cli.load_config(spec, overrides, rules=bd.RULES)
    sizes = bd.matched_hidden_sizes(config, tasks["forward-softmax"], list(bd.POINTS))
    embed = config.model.embed_size
    target = _closed_form(config.model.hidden_size, embed, True, "softmax")
    vocab = len(tasks["forward-softmax"].vocabs["tokens"])
    assert sizes["bi-softmax"] == (config.model.hidden_size, target, target + vocab * embed)
    for name, (hidden, varying, total) in sizes.items():
        direction, head = name.split("-")
        assert varying == _closed_form(hidden, embed, direction == "bi", head), name
        assert total == varying + vocab * embed
        assert abs(varying - target) <= config.match.tolerance * target, name
        if direction != "bi":
            assert hidden > config.model.hidden_size  # one LSTM gets the two's parameters
    assert sizes["forward-softmax"] == sizes["backward-softmax"]


def test_a_task_serves_only_configs_with_its_data(config, tasks):
    other = bd.point_config(config, "bi-crf", 9)
    served = tasks["forward-softmax"].for_point(other)
    assert served.config is other and served.splits is tasks["forward-softmax"].splits
    backward = tasks["backward-softmax"].for_point(other)  # reverse=False: forward order
    np.testing.assert_array_equal(
        backward.splits["valid"][0]["inputs"], served.splits["valid"][0]["inputs"]
    )
    other.data.eval_sentences = 65
    with pytest.raises(ValueError, match=r"\['data.eval_sentences'\] differ"):
        tasks["forward-softmax"].for_point(other)


def test_an_unreachable_tolerance_fails_naming_the_key(data_root, tasks):
    config = cli.load_config(
        SMOKE, {"data.root": str(data_root), "match.tolerance": 0.001}, rules=bd.RULES
    )
    with pytest.raises(cfg.ConfigError, match=r"match\.tolerance=0\.001: forward-softmax"):
        bd.matched_hidden_sizes(config, tasks["forward-softmax"], ["forward-softmax"])


def test_sweep_covers_the_grid():
    for variant in ("smoke", "quick", "full"):
        config = cli.load_config(f"experiments/configs/bidirectional.py:{variant}", rules=bd.RULES)
        swept = [o["grid.points"] for o in bd_configs.get_sweep(variant)]
        assert swept == grid.point_names(config)
    assert set(grid.point_names(bd_configs.get_config("full"))) == set(bd.POINTS)


@pytest.fixture(scope="module")
def smoke_run(config, tasks, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bidirectional")
    bd.run(config, workdir, tasks["forward-softmax"])
    return workdir


def test_smoke_results_table_plot_and_answers(config, tasks, smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    points, final = results["points"], results["final"]
    assert list(points) == grid.point_names(config)
    # The embedding rows: the training words seen min_freq+ times and two specials (the text
    # called all rows "training words").
    task = tasks["forward-softmax"]
    seen = collections.Counter(w for s in task.dataset.splits["train"] for w in s["tokens"])
    words = sum(n >= config.data.min_freq for n in seen.values())
    vocab_size = points["bi-softmax"]["vocab_size"]
    assert vocab_size == words + 2 and task.vocabs["tokens"].tokens[:2] == ("<pad>", "<unk>")
    described = f"over {vocab_size:,} vocabulary entries (the training words seen 2+ times, `<pad>`"
    assert described in (smoke_run / "bidirectional.md").read_text()
    for name, s in points.items():
        for split in bd.EVAL_SPLITS:
            accuracy = np.asarray(s[f"{split}_accuracy"])
            assert accuracy.shape == (config.num_seeds,) and ((0 < accuracy) & (accuracy < 1)).all()
            # Overall accuracy = the class accuracies weighted by their token counts, per seed.
            counts = s["class_tokens"][split]
            weighted = sum(
                counts[c] * np.asarray(s[f"{split}_accuracy_{c}"]) for c in bd.TOKEN_CLASSES
            ) / sum(counts.values())
            np.testing.assert_allclose(weighted, accuracy, rtol=1e-9)
        assert final[name]["test_accuracy"] == s["test_accuracy"]
    table = (smoke_run / "bidirectional.md").read_text()
    rows = table_rows(table.split("## By token class")[0])
    labels = {name: report._label(s) for name, s in points.items()}
    assert list(rows) == [  # softmax heads first, then CRFs; forward, backward, bi
        "forward LSTM + softmax",
        "BiLSTM + softmax",
        "forward LSTM + CRF",
        "majority tag per word",
    ]
    for name, s in points.items():
        row = rows[labels[name]]
        mean, _ = cell_numbers(row["test acc"])
        assert mean == pytest.approx(np.mean(s["test_accuracy"]), abs=1e-4)
        assert cell_numbers(row["test per seed"]) == pytest.approx(s["test_accuracy"], abs=1e-4)
        (relative,) = cell_numbers(row["vs bi-softmax"])
        assert abs(relative) <= 100 * config.match.tolerance
        assert int(row["params"].replace(",", "")) == s["params_varying"]
    baseline = cell_numbers(rows["majority tag per word"]["test acc"])[0]
    assert 0.8 < baseline < 0.95  # the most frequent training tag of each word, 64 sentences
    assert sum(line.startswith("|---") for line in table.splitlines()) == 2
    by_class = table_rows(table.split("## By token class")[1])
    for name, s in points.items():
        for c in bd.TOKEN_CLASSES:
            (cell,) = [v for k, v in by_class[labels[name]].items() if k.startswith(f"{c}:")]
            mean = cell_numbers(cell)[0]
            assert mean == pytest.approx(np.mean(s[f"test_accuracy_{c}"]), abs=1e-4)
    assert_png(smoke_run / "bidirectional.png")
    answers = bd.answers(smoke_run)
    assert set(answers) == {6, 14}
    fw, bi = points["forward-softmax"], points["bi-softmax"]
    delta = np.mean(bi["test_accuracy"]) - np.mean(fw["test_accuracy"])
    assert f"{100 * delta:+.2f} points" in answers[6]
    assert f"{np.mean(fw['test_accuracy']):.4f}" in answers[6]
    # The verdict follows the seeds: "Supported" only when every bi seed beats every forward one.
    gain = report.compare(bi, fw)
    supported = gain["clear"] and gain["delta"] > 0
    assert ("Supported:" in answers[6]) is supported
    assert ("Not supported" in answers[6]) is not supported
    crf_gain = np.mean(points["forward-crf"]["test_accuracy"]) - np.mean(fw["test_accuracy"])
    assert f"A CRF on the forward LSTM: {100 * crf_gain:+.2f} points" in answers[14]
    assert "A CRF on the BiLSTM" not in answers[14]  # bi-crf is not a smoke point


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("grid.points", "forward-softmax,forward-lstm", "grid.points='forward-softmax,forward-"),
        ("grid.points", "bi-crf,bi-crf", "grid.points='bi-crf,bi-crf': must be distinct"),
        ("match.tolerance", 0.0, "match.tolerance=0.0: must be a number in [0.001, 0.5]"),
        ("data.eval_sentences", -1, "data.eval_sentences=-1: must be an integer >= 0"),
        ("data.dataset", "conll2003", "data.dataset='conll2003': must be one of 'ud_en_ewt'"),
    ],
)
def test_bad_config_values_are_named(key, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        cli.load_config(SMOKE, {key: value}, rules=bd.RULES)


@pytest.fixture(scope="module", autouse=True)
def bad_value_run(tmp_path_factory):
    """test_a_bad_value_on_the_command_line_exits_2_before_writing's command line, started
    with the module's first test: it runs (mostly imports, on one core) beside the smoke run."""
    workdir = tmp_path_factory.mktemp("bidirectional_bad_value") / "w"
    run = StartedModule(
        "experiments.bidirectional",
        f"--workdir={workdir}",
        f"--config={SMOKE}",
        "--config.grid.points=forward-gru",
    )
    yield workdir, run
    run.close()


def test_a_bad_value_on_the_command_line_exits_2_before_writing(bad_value_run):
    workdir, run = bad_value_run
    proc = run.result()
    assert proc.returncode == exits.REFUSED, proc.stderr[-2000:]
    assert "grid.points='forward-gru': must be distinct names from" in proc.stderr
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_the_main_job_runs_it_and_reports_its_answers(smoke_run, tmp_path):
    from experiments import reproduce, reproduce_report

    assert "bidirectional" in reproduce.experiment_names()
    (tmp_path / "bidirectional").symlink_to(smoke_run, target_is_directory=True)
    text = reproduce_report.write_report(tmp_path, ["bidirectional"], {"bidirectional": 60.0})
    answers = bd.answers(smoke_run)
    assert f"**Q6. {reproduce_report.QUESTIONS[6]}** {answers[6]}" in text  # not the library line
    assert answers[14] in text and "![bidirectional.png](bidirectional/bidirectional.png)" in text


def _lstm_tagger_params(hidden, embed, bidirectional, num_tags):
    """Closed form of a softmax Tagger's parameters outside the word embeddings: the LSTM
    (4 gates x (input + recurrent weights) + 2 biases per gate, per direction) and the output
    layer (weights and bias)."""
    directions = 2 if bidirectional else 1
    lstm = directions * (4 * hidden * (embed + hidden) + 8 * hidden)
    return lstm + (directions * hidden + 1) * num_tags


def test_unreachable_size_error_states_the_counts_it_compared():
    """match_size was handed bi-softmax's whole count and `tolerance * target / total`, so the
    error read 'gives 12946 params within 0%' (the embeddings' 8,000 included, the tolerance
    rounded away) for match.tolerance=0.01."""
    config = cli.load_config(
        "experiments/configs/bidirectional.py:smoke", {"match.tolerance": 0.01}, rules=bd.RULES
    )
    vocab, tags = 500, 18
    task = object.__new__(bd.BidirectionalTask)  # what sizing reads of a task, without data
    task.config = bd.point_config(config, bd.REFERENCE, config.model.hidden_size)
    task.vocabs, task.tags = {"tokens": [None] * vocab}, [None] * tags
    task.splits, task._oriented = {}, {False: {}, True: {}}
    embed, width = config.model.embed_size, config.model.hidden_size
    target = _lstm_tagger_params(width, embed, True, tags)
    # the closest forward width: one LSTM of the BiLSTM's count
    counts = {h: _lstm_tagger_params(h, embed, False, tags) for h in range(1, 4 * width + 1)}
    closest = min(counts, key=lambda h: abs(counts[h] - target))
    assert abs(counts[closest] - target) > 0.01 * target  # unreachable, as the error says
    message = (
        f"match.tolerance=0.01: forward-softmax: no LSTM width in [1, {4 * width}] has "
        f"parameters outside the embeddings within 1.00% of bi-softmax's {target:,}: the "
        f"closest is width {closest} with {counts[closest]:,} "
        f"({counts[closest] / target - 1:+.2%})"
    )
    with pytest.raises(cfg.ConfigError) as error:
        bd.matched_hidden_sizes(config, task, ["forward-softmax"])
    assert str(error.value) == message
    # within the tolerance the sizes are those of the closed form, as before
    loose = config.copy_and_resolve_references()
    loose.match.tolerance = 0.05
    sizes = bd.matched_hidden_sizes(loose, task, ["forward-softmax", "bi-softmax"])
    shared = vocab * embed
    assert sizes["bi-softmax"] == (width, target, target + shared)
    assert sizes["forward-softmax"] == (closest, counts[closest], counts[closest] + shared)
    # A CRF's width-free transitions (18 x 18 + 2 x 18) at model.hidden_size=1 outweigh the
    # whole of bi-softmax's count: even match_size's 99.9% failed, and its message ("gives 88
    # params within 99.9%") named neither match.tolerance's 1% nor the varying parameters.
    tiny = cli.load_config(
        "experiments/configs/bidirectional.py:smoke",
        {"match.tolerance": 0.01, "model.hidden_size": 1, "model.embed_size": 1},
        rules=bd.RULES,
    )
    task.vocabs = {"tokens": [None] * 2}  # embeddings of 2 x 1: the 99.9% reach 88 params
    target = _lstm_tagger_params(1, 1, True, tags)
    crf = _lstm_tagger_params(1, 1, False, tags) + tags * tags + 2 * tags  # width 1: closest
    with pytest.raises(cfg.ConfigError) as error:
        bd.matched_hidden_sizes(tiny, task, ["forward-crf"])
    assert str(error.value) == (
        "match.tolerance=0.01: forward-crf: no LSTM width in [1, 4] has parameters outside "
        f"the embeddings within 1.00% of bi-softmax's {target:,}: the closest is width 1 "
        f"with {crf:,} ({crf / target - 1:+.2%})"
    )


def tagger_summary(name, test, class_tokens=None, by_class=None):
    """A hand-made bidirectional point summary (3 seeds): test accuracy `test` overall and,
    unless `by_class` says otherwise, in every token class; `class_tokens` the test tokens per
    class (default 3 majority, 1 minority, 1 unk)."""
    direction, head = name.split("-")
    by_class = by_class or {}
    return {
        "point": name,
        "direction": direction,
        "head": head,
        "params_varying": 1000,
        "params_reference": 1000,
        "embed_size": 8,
        "char_features": False,
        "vocab_size": 10,
        "min_freq": 2,
        "num_seeds": 3,
        "num_steps": 5,
        "batch_size": 2,
        "epochs": 1.0,
        "train_sentences": 10,
        "eval_sentences": {"valid": 5, "test": 5},
        "class_tokens": {"test": class_tokens or {"majority": 3, "minority": 1, "unk": 1}},
        "majority_baseline": {"valid_accuracy": 0.8, "test_accuracy": 0.8},
        "test_accuracy": test,
        **{f"test_accuracy_{c}": by_class.get(c, test) for c in bd.TOKEN_CLASSES},
    }


def _point(accuracy):
    return {"test_accuracy": accuracy}


def test_a_diverged_seed_is_never_every_seed_apart():
    # Bi's two finite seeds are above every forward seed, but its third seed diverged: the
    # 2 / C(2n, n) event "every seed apart" did not happen.
    bi, fw = _point([0.92, 0.93, None]), _point([0.85, 0.86, 0.87])
    gain = report.compare(bi, fw)
    assert gain["delta"] == pytest.approx(0.925 - 0.86)
    assert not gain["clear"] and gain["diverged"]
    assert report.diff_text(bi, fw) == "+6.50 points (a seed diverged: not compared seed by seed)"
    assert report.compare(_point([0.9, 0.91]), _point([0.8, 0.85]))["clear"]
    assert not report.compare(_point([0.9, 0.91]), _point([0.8, 0.85]))["diverged"]
    # Q6's verdict: not "Supported", and not "seeds overlap" either.
    points = {
        name: tagger_summary(name, accuracy["test_accuracy"])
        for name, accuracy in (("forward-softmax", fw), ("bi-softmax", bi))
    }
    text = report.answers(points)[6]
    assert "Supported:" not in text and "every seed apart)" not in text
    assert "mean is higher but a seed diverged, +6.50 points (a seed diverged" in text
    # Every seed of the forward CRF diverged: Q14 said "the BiLSTM had no gain over the
    # forward LSTM to recover" beside a BiLSTM +6.50 points above it.
    points["forward-crf"] = tagger_summary("forward-crf", [None, None, None])
    q14 = report.answers(points)[14]
    assert "no gain" not in q14 and "a point has no finite accuracy" in q14
    del points["forward-crf"]
    # Every BiLSTM seed diverged: a NaN mean is not "> 0", which read "Not supported: the
    # BiLSTM did not tag better than the forward LSTM, +nan points".
    points["bi-softmax"] = tagger_summary("bi-softmax", [None, None, None])
    text = report.answers(points)[6]
    assert "did not tag better" not in text and "nan points" not in text
    assert "Not measured (inconclusive): every seed of the BiLSTM or" in text


def test_one_seed_a_side_is_never_every_seed_apart():
    # One seed has no spread to be beyond (`grid.finite_seeds_below`): 0.90 against 0.80 was
    # "Supported ... (every seed apart)" beside a chance bound of 1, and "the CRF helps".
    points = {
        name: {**tagger_summary(name, [acc]), "num_seeds": 1}
        for name, acc in (("forward-softmax", 0.8), ("bi-softmax", 0.9), ("bi-crf", 0.95))
    }
    gain = report.compare(points["bi-softmax"], points["forward-softmax"])
    assert not gain["clear"] and not gain["diverged"] and gain["one_seed"]
    answers = report.answers(points)
    assert "Supported:" not in answers[6] and "every seed apart)" not in answers[6]
    assert "mean is higher but one seed per tagger has no spread to be beyond" in answers[6]
    assert "the CRF helps" not in answers[14] and "+5.00 points (one seed: no seed" in answers[14]
    # There is no spread to be within either: that said "+10.00 points (within the seed spread)".
    assert "within the seed spread" not in answers[6] + answers[14]
    assert "+10.00 points (one seed: no seed spread to compare)" in answers[6]


@pytest.mark.parametrize(
    "bi, verdict",
    [
        ([0.92, 0.93, 0.94], "Supported: at equal size the BiLSTM tags better"),
        ([0.86, 0.90, 0.91], "mean is higher but its seeds overlap the forward LSTM's"),
        ([0.84, 0.85, 0.86], "Not supported: the BiLSTM did not tag better"),
    ],
    ids=["apart", "overlap", "lower"],
)
def test_q6_verdict_follows_the_seeds_of_both_taggers(bi, verdict):
    """Q6 on hand-made seeds (forward 0.87-0.89): the smoke run reaches one verdict only, so
    a verdict that said "Supported" of overlapping seeds passed every other test."""
    points = {
        "forward-softmax": tagger_summary("forward-softmax", [0.87, 0.88, 0.89]),
        "bi-softmax": tagger_summary("bi-softmax", bi),
    }
    text = report.answers(points)[6]
    assert verdict in text
    assert ("Supported:" in text) == verdict.startswith("Supported:")


def test_q14_does_not_call_a_diverged_or_single_seed_crf_a_tie():
    """Every seed of the CRF tagger diverged, one seed diverged, or one seed a side: each fell
    to "no measurable difference: ... holds only in that both work"."""
    bi = tagger_summary("bi-softmax", [0.90, 0.91, 0.92])
    cases = [
        ([None, None, None], 3, "not measured (inconclusive): every seed of one of the two"),
        ([0.90, 0.91, None], 3, "not compared seed by seed (inconclusive): a seed diverged"),
        ([0.95], 1, "not ranked (inconclusive): one seed per tagger has no spread"),
    ]
    for crf, seeds, verdict in cases:
        points = {
            "bi-softmax": {**bi, "num_seeds": seeds, "test_accuracy": bi["test_accuracy"][:seeds]},
            "bi-crf": {**tagger_summary("bi-crf", crf), "num_seeds": seeds},
        }
        text = report.answers(points)[14]
        assert verdict in text and "both work" not in text, text
    # Q6's by-class figures of a BiLSTM whose every seed diverged: n/a, not nan
    points = {
        "forward-softmax": tagger_summary("forward-softmax", [0.87, 0.88, 0.89]),
        "bi-softmax": tagger_summary("bi-softmax", [None, None, None]),
    }
    text = report.answers(points)[6]
    assert "→ n/a" in text and "nan" not in text


def _tagger(name, test, unk):
    direction, head = name.split("-")
    return {
        "point": name,
        "direction": direction,
        "head": head,
        "test_accuracy": test,
        "test_accuracy_majority": test,
        "test_accuracy_minority": test,
        "test_accuracy_unk": unk,
    }


def test_bidirectional_plot_shows_every_seed_beside_a_class_without_tokens(tmp_path, monkeypatch):
    # No test token was out of the vocabulary (a short eval cut): 'unk' has no accuracy.
    # forward's third seed is far below the means.
    points = {
        "forward-softmax": _tagger("forward-softmax", [0.88, 0.88, 0.70], [None] * 3),
        "bi-softmax": _tagger("bi-softmax", [0.90, 0.91, 0.90], [None] * 3),
    }
    axes = plotted_axes(monkeypatch, lambda: report.plot(points, tmp_path))
    assert (tmp_path / "bidirectional.png").is_file()
    low, high = axes[0].get_ylim()
    assert low < 0.70 and high > 0.91


def test_every_seed_apart_chance_bounds_paired_seeds_and_is_reached():
    # Seed i of both points shares its key and batches: under no difference only the two runs
    # of a pair are exchangeable. Enumerate the 2^n label swaps of n fixed pairs: "every seed
    # apart" needs every pair's sign the same, so its chance is at most 2^(1-n) for any pair
    # values, and anti-correlated pairs (a_i = -b_i) reach it; 2n exchangeable runs
    # (every split of the 2n ranks) give the smaller 2 / C(2n, n).
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        bound = report.chance_apart(n)
        for pairs in (rng.normal(size=(n, 2)), np.stack([rng.normal(size=n)] * 2, 1) * [1, -1]):
            apart = 0
            for swap in itertools.product((False, True), repeat=n):
                a = np.where(swap, pairs[:, 1], pairs[:, 0])
                b = np.where(swap, pairs[:, 0], pairs[:, 1])
                apart += a.min() > b.max() or a.max() < b.min()
            assert apart / 2**n <= bound + 1e-12
        assert apart / 2**n == pytest.approx(bound)  # the anti-correlated pairs
        exchangeable = sum(
            max(a) < min(set(range(2 * n)) - set(a)) or min(a) > max(set(range(2 * n)) - set(a))
            for a in itertools.combinations(range(2 * n), n)
        ) / math.comb(2 * n, n)
        assert exchangeable <= bound
    assert report.chance_apart(3) == pytest.approx(0.25)
    assert "at most 0.25 at 3 seeds" in report.chance_text(3)


class _FakeTask:
    """What `bidirectional.run_point` reads of a loaded task, without data."""

    splits = {"train": [None] * 10, "valid": [None] * 4, "test": [None] * 5}
    vocabs = {"tokens": [None] * 7}
    class_tokens = {s: {"majority": 3, "minority": 1, "unk": 1} for s in bd.EVAL_SPLITS}

    def for_point(self, point):
        return self

    def baselines(self):
        return {"valid_accuracy": 0.8, "test_accuracy": 0.8}


def test_a_point_run_without_bi_softmax_is_compared_with_bi_softmax(tmp_path, monkeypatch):
    # A sweep runs each point alone: forward-softmax's 1,010 parameters outside the
    # embeddings are +1.0% of bi-softmax's 1,000, not +0.0% of its own.
    asked = []

    def sizes(config, task, names):
        asked.append(list(names))
        table = {"bi-softmax": (16, 1000, 5000), "forward-softmax": (26, 1010, 5010)}
        return {name: table[name] for name in names}

    monkeypatch.setattr(bd, "matched_hidden_sizes", sizes)
    per_seed = collections.defaultdict(lambda: [0.9, 0.91])
    monkeypatch.setattr(bd, "train_and_evaluate", lambda *a: {"final": {"per_seed": per_seed}})
    config = bd_configs.get_config("smoke")
    config.grid.points = "forward-softmax"
    ((name, run_point),) = bd.grid_points(config, _FakeTask())
    assert name == "forward-softmax" and "bi-softmax" in asked[0]
    summary = run_point(tmp_path)
    assert summary["params_reference"] == 1000 and summary["params_varying"] == 1010
    text = report.markdown({name: summary})
    row = table_rows(text.split("## By token class")[0])["forward LSTM + softmax"]
    assert row["vs bi-softmax"] == "+1.0%"
    assert "matched to bi-softmax's (1,000)" in text
    assert "every tagger has ~1,000 parameters" in report.answers({name: summary})[6]
    # Results written before the count was stored, without a bi-softmax row: not known.
    old = {k: v for k, v in summary.items() if k != "params_reference"}
    row = table_rows(report.markdown({name: old}).split("## By token class")[0])
    assert row["forward LSTM + softmax"]["vs bi-softmax"] == "–"


def _tagger_without_unk_tokens(name: str, test: list[float]) -> dict:
    """A hand-made bidirectional summary whose test split has no `unk` tokens."""
    return tagger_summary(
        name,
        test,
        class_tokens={"majority": 4, "minority": 1, "unk": 0},
        by_class={"unk": [None] * 3},  # no tokens: no accuracy at any seed
    )


def test_a_class_without_test_tokens_is_not_called_a_diverged_seed():
    points = {
        "forward-softmax": _tagger_without_unk_tokens("forward-softmax", [0.80, 0.81, 0.82]),
        "bi-softmax": _tagger_without_unk_tokens("bi-softmax", [0.90, 0.91, 0.92]),
        "forward-crf": _tagger_without_unk_tokens("forward-crf", [0.84, 0.85, 0.86]),
    }
    answers = report.answers(points)
    assert "diverged" not in answers[6] + answers[14]
    assert "unk (no test tokens)" in answers[6]
    assert "minority (20.0% of tokens) 0.8100 → 0.9100, +10.00 points (every seed" in answers[6]
    fw, bi = points["forward-softmax"], points["bi-softmax"]
    assert report.diff_text(bi, fw, "unk") == "no test tokens in this class: not compared"


def test_class_accuracies_count_real_tokens_of_real_rows_and_nan_for_an_empty_class():
    """`eval_step` counts each token class on the real tokens of real rows only (the last
    batch's filler row, weight 0, and padding count nowhere), and `eval_metrics` gives a class
    without tokens NaN (no accuracy), not 0. A fake model that predicts its input ids."""
    task = object.__new__(bd.BidirectionalTask)  # what the evaluation reads of a task
    task.config = bd.point_config(bd_configs.get_config("smoke"), "forward-softmax", 4)
    task.config.model.char_features, task.tables = False, None

    class Model:
        def loss(self, inputs, targets, lengths):
            return np.zeros(len(inputs), np.float32)

        def predict(self, inputs, lengths):
            return inputs

    batch = {
        "inputs": np.array([[1, 2, 3], [1, 2, 0]]),
        "targets": np.array([[1, 0, 3], [0, 0, 0]]),  # row 0: hit, miss, hit
        "mask": np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        "lengths": np.array([3, 2]),
        "weight": np.array([1.0, 0.0]),  # row 1 fills the batch
        "token_class": np.array([[0, 1, 2], [0, 1, -1]]),
    }
    _, sums = task.eval_step(Model(), batch, ())
    counts = {
        name: (float(sums[f"tokens_{name}"]), float(sums[f"correct_{name}"]))
        for name in bd.TOKEN_CLASSES
    }
    assert counts == {"majority": (1.0, 1.0), "minority": (1.0, 0.0), "unk": (1.0, 1.0)}
    sums = {**sums, "tokens_unk": 0.0, "correct_unk": 0.0}
    result = task.eval_metrics(sums)
    assert (result["accuracy_majority"], result["accuracy_minority"]) == (1.0, 0.0)
    assert math.isnan(result["accuracy_unk"])


def test_q6_compares_a_backward_lstm_with_both_others_when_it_ran():
    """With the backward point in the grid, Q6 adds a sentence: backward against forward and
    the BiLSTM against backward, each with its seed comparison; without it, no such sentence."""
    accuracies = {
        "forward-softmax": [0.80, 0.81, 0.82],
        "backward-softmax": [0.84, 0.85, 0.86],
        "bi-softmax": [0.85, 0.90, 0.91],
    }
    points = {name: tagger_summary(name, acc) for name, acc in accuracies.items()}
    text = report.answers(points)[6]
    assert (
        "Reading right to left instead (backward LSTM, same size): +4.00 points (every seed "
        "apart) against the forward LSTM; the BiLSTM is +3.67 points (within the seed spread) "
        "against the backward one." in text
    )
    del points["backward-softmax"]
    assert "Reading right to left" not in report.answers(points)[6]


def test_q6_does_not_call_the_bilstm_worse_against_a_diverged_forward_seed():
    """The forward LSTM's third seed diverged and its two finite seeds are above every BiLSTM
    seed: the answer said "Not supported: the BiLSTM did not tag better" on the survivors
    alone (the same seeds the other way round were 'inconclusive: a seed diverged')."""
    points = {
        "forward-softmax": tagger_summary("forward-softmax", [0.95, None, 0.96]),
        "bi-softmax": tagger_summary("bi-softmax", [0.90, 0.91, 0.92]),
    }
    text = report.answers(points)[6]
    assert "did not tag better" not in text
    assert "(inconclusive): the BiLSTM's mean is not higher but a seed diverged, -4.50" in text
    assert report.claim(report.compare(points["bi-softmax"], points["forward-softmax"])) == (
        "diverged"
    )
