"""experiments.rnn_vs_attention: the cost task times the models of the quality comparison,
equal-time bits never credit unmeasured steps nor drop a diverged seed, the generation state's
size is measured and the Q10 answer follows the measured ratios, the copy task's chance level
follows `data.num_categories`, config values are refused with errors that name the key, and
the curves and tables say what was not measured."""

import json
import math
import types

import jax.numpy as jnp
import matplotlib.axes
import numpy as np
import pytest
from flax import nnx

from experiments import rnn_vs_attention as rva
from experiments import rnn_vs_attention_report as rva_report
from rnn_jax.models.params import count_params
from rnn_jax.train import cli
from rnn_jax.train import config as cfg
from rnn_jax.train.config import ConfigError

SMOKE = "experiments/configs/rnn_vs_attention.py:smoke"
MODELS = ["lstm", "transformer"]


def _config(**overrides):
    return cli.load_config(SMOKE, {"data.window": 16, **overrides}, rules=rva.RULES)


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory):
    """measure_cost at cost.lengths "16,64" (tiny smoke models, one repeat), and the seconds
    of its timed calls in call order."""
    config = _config(**{"cost.lengths": "16,64", "cost.repeats": 1})
    seconds, time_call = [], rva._time

    def recorded(fn, args):
        seconds.append(time_call(fn, args))
        return seconds[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rva, "_time", recorded)
        result = rva.measure_cost(config, MODELS, tmp_path_factory.mktemp("cost"))
    return config, result, seconds


def test_cost_widths_do_not_depend_on_cost_lengths():
    quick = "experiments/configs/rnn_vs_attention.py:quick"
    widths = [
        rva.cost_widths(cli.load_config(quick, {"cost.lengths": lengths}), 65, rva.MODELS)
        for lengths in ("64", "64,1024", "64,8192")  # 8192 found no width before
    ]
    assert widths[0] == widths[1] == widths[2]
    assert widths[0]["transformer"][0] == 76  # the Shakespeare table's d_model


@pytest.mark.slow
def test_cost_models_are_the_quality_comparisons(cost_run):
    config, result, _ = cost_run
    # the Shakespeare points' widths: matched at data.window positions (vocab 65 there too)
    quality = rva.matched_widths(config, 65, config.data.window, MODELS)
    assert result["widths"] == {k: w for k, (w, _) in quality.items()}
    assert result["params"] == {k: n for k, (_, n) in quality.items()}
    for row in result["rows"]:
        width, matched = quality[row["model"]]
        assert (row["width"], row["params"]) == (width, matched)
        # as built: the transformer's position table has max(cost.lengths) = 64 rows
        model = rva.build_model(row["model"], 65, width, config, 64, nnx.Rngs(0))
        assert row["params_built"] == count_params(model)
        if row["model"] == "transformer":
            assert row["params_built"] == matched + (64 - config.data.window) * width


@pytest.mark.slow
def test_generation_state_bytes_measured(cost_run):
    config, result, seconds = cost_run
    rows = {(r["model"], r["length"]): r for r in result["rows"]}
    hidden = config.model.hidden_size
    for length in (16, 64):
        # LSTM: (h, c), each float32 [1, hidden]; independent of T
        assert rows["lstm", length]["state_bytes"] == 2 * hidden * 4
        # KV cache: layers x (key, value) x T x d_model float32, plus the int32 position
        d_model = result["widths"]["transformer"]
        layers = config.model.transformer_layers
        assert rows["transformer", length]["state_bytes"] == layers * 2 * length * d_model * 4 + 4
    assert result["decode_tokens"] == config.cost.decode_tokens
    assert len(seconds) == 2 * 2 * 3 and all(math.isfinite(t) and t > 0 for t in seconds)
    calls = iter(seconds)  # one repeat: T=16 then 64, lstm then transformer, 3 parts each
    for row in result["rows"]:
        # the same tokens per batch at every T (64 in smoke): batch 4 at T=16, 1 at T=64
        assert row["batch"] * row["length"] == config.cost.tokens_per_batch
        train, step, scan = next(calls), next(calls), next(calls)
        assert row["train_tokens_per_s"] == [pytest.approx(config.cost.tokens_per_batch / train)]
        assert row["generate_ms_per_token"] == [pytest.approx(1e3 * step)]
        assert row["decode_ms_per_token"] == [pytest.approx(1e3 * scan / config.cost.decode_tokens)]


def _lm_point(model, steps_per_s, losses, eval_every=100):
    steps = [eval_every * (i + 1) for i in range(len(losses))]
    return {
        "task": "shakespeare",
        "model": model,
        "width": 8,
        "params": 100,
        "metrics": {"bits_per_token": [losses[-1] / math.log(2)]},
        "steps_per_s": steps_per_s,
        "curve_steps": steps,
        "curve_valid_loss": [[v] for v in losses],
    }


LOSSES = [2.0, 1.8, 1.6, 1.5, 1.4]  # evaluations at steps 100..500


def test_equal_time_bits_is_nan_before_the_first_evaluation():
    # the fast model takes 500 / 20 = 25 s; in 25 s the slow one makes 50 steps (< 100) and
    # the medium one 250 (between its evaluations at 200 and 300)
    rows = [
        _lm_point("lstm", 20.0, LOSSES),
        _lm_point("gru", 10.0, LOSSES),
        _lm_point("transformer", 2.0, LOSSES),
    ]
    bits = rva_report.equal_time_bits(rows)
    assert bits["lstm"] == pytest.approx(1.4 / math.log(2))
    assert bits["gru"] == pytest.approx((1.8 + 1.6) / 2 / math.log(2))
    assert math.isnan(bits["transformer"])
    table = rva_report.report_markdown({r["model"]: r for r in rows})
    assert [line for line in table.splitlines() if line.startswith("| transformer")][0].split(
        " | "
    )[4] == "–"


def test_equal_time_bits_null_in_results_and_dash_in_answer(tmp_path, monkeypatch):
    rows = [_lm_point("lstm", 20.0, LOSSES), _lm_point("transformer", 2.0, LOSSES)]
    monkeypatch.setattr(rva, "shakespeare_points", lambda config, models: [])
    monkeypatch.setattr(rva.grid, "run_points", lambda w, p, c: {r["model"]: r for r in rows})
    rva.run(_config(**{"grid.tasks": "shakespeare"}), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["equal_time_bits"]["transformer"] is None
    assert results["equal_time_bits"]["lstm"] == pytest.approx(1.4 / math.log(2))
    answer = rva.answers(tmp_path)[9]
    assert "at equal wall-clock: lstm 2.020, transformer –." in answer
    assert "first evaluation (step 100)" in answer


def _cost_rows(transformer_ms, lstm_ms=(0.4, 0.4)):
    """Cost rows at T = 64 and 1024: the given latencies (flat for the RNN by default)."""
    rows = []
    for length, ms, rnn_ms in zip((64, 1024), transformer_ms, lstm_ms, strict=True):
        for model, latency, state in (
            ("lstm", rnn_ms, 1024),
            ("transformer", ms, 2 * 2 * length * 76 * 4 + 4),
        ):
            rows.append(
                {
                    "length": length,
                    "batch": 8192 // length,
                    "model": model,
                    "width": 128 if model == "lstm" else 76,
                    "params": 1000,
                    "params_built": 1000,
                    "train_tokens_per_s": [1000.0],
                    "generate_ms_per_token": [latency],
                    "decode_ms_per_token": [latency / 10],
                    "state_bytes": state,
                    "temp_memory_mib": 1.0,
                }
            )
    return rows


def _write_cost_results(workdir, rows):
    point = {
        "task": "cost",
        "rows": rows,
        "params": {"lstm": 1000, "transformer": 1000},
        "widths": {"lstm": 128, "transformer": 76},
        "decode_tokens": 32,
        "machine": "test",
        "load_average": 0.0,
    }
    (workdir / "results.json").write_text(json.dumps({"points": {"cost": point}}))


def test_q10_answer_follows_measured_ratios(tmp_path):
    _write_cost_results(tmp_path, _cost_rows([0.5, 0.5]))  # no latency growth at all
    flat = rva.answers(tmp_path)[10]
    assert "step-call latency: not supported here (KV cache ×1.0, RNNs up to ×1.0)" in flat
    assert "in-scan latency: not supported here" in flat
    assert "state size: supported (KV cache ×16.0, RNNs ≤ ×1.0)" in flat  # measured bytes
    _write_cost_results(tmp_path, _cost_rows([0.5, 2.0]))
    grows = rva.answers(tmp_path)[10]
    assert "step-call latency: supported (KV cache ×4.0, RNNs ≤ ×1.0)" in grows
    assert "lstm 1.0 → 1.0 (×1.0)" in grows  # KiB, from state_bytes
    # Both halves of the claim: a KV cache whose latency fell (×0.6) beside an RNN at ×0.5,
    # and an RNN at ×3.0 beside a KV cache at ×3.5, were "supported" (attention > 1.1 x RNN).
    _write_cost_results(tmp_path, _cost_rows([0.5, 0.3], lstm_ms=[0.4, 0.2]))
    fell = rva.answers(tmp_path)[10]
    assert "step-call latency: not supported here (KV cache ×0.6, RNNs up to ×0.5)" in fell
    _write_cost_results(tmp_path, _cost_rows([0.5, 1.75], lstm_ms=[0.4, 1.2]))
    both = rva.answers(tmp_path)[10]
    assert "in-scan latency: not supported here, the RNNs' grew too (KV cache ×3.5" in both


def test_copy_chance_level_follows_num_categories(tmp_path):
    point = {
        "task": "copy",
        "length": 10,
        "model": "lstm",
        "width": 8,
        "params": 100,
        "baseline": 0.5,
        "num_categories": 4,
        "metrics": {"loss": [0.3], "copy_accuracy": [0.5]},
    }
    text = rva_report.report_markdown({"copy-T10-lstm": point})
    assert "chance 1/4" in text and "1/8" not in text
    assert "no per-model tuning" in text  # the config's docstring says the report states it
    rva_report.plot_all({"copy-T10-lstm": point}, tmp_path)
    assert (tmp_path / "copy_vs_length.png").stat().st_size > 1000


def test_decode_tokens_longer_than_the_shortest_length_is_refused(tmp_path):
    config = _config(**{"cost.lengths": "16,64", "cost.decode_tokens": 17})
    with pytest.raises(ValueError, match=r"cost.decode_tokens=17: must be at most"):
        rva.run(config, tmp_path)
    assert not list(tmp_path.iterdir())


def test_copy_points_record_num_categories():
    config = _config(**{"data.num_categories": 4})
    points = rva.copy_points(config, ["lstm"])
    assert points and all(fn.keywords["extra"]["num_categories"] == 4 for _, fn in points)


RVA_SMOKE = "experiments/configs/rnn_vs_attention.py:smoke"


def _lm_point_per_seed(model, steps_per_s, per_seed_losses):
    """A Shakespeare summary with evaluations at steps 100, 200, ... and their per-seed losses
    `[evaluations][seeds]`."""
    return {
        "task": "shakespeare",
        "model": model,
        "width": 8,
        "params": 100,
        "metrics": {"bits_per_token": [v / math.log(2) for v in per_seed_losses[-1]]},
        "steps_per_s": steps_per_s,
        "curve_steps": [100 * (i + 1) for i in range(len(per_seed_losses))],
        "curve_valid_loss": per_seed_losses,
    }


def test_equal_time_bits_do_not_drop_a_diverged_seed(tmp_path, monkeypatch):
    """np.nanmean over seeds: a seed whose validation loss was NaN vanished from the equal-time
    value (the equal-steps column beside it said "1/2 seeds"); the seeds' values at an
    evaluation after the reading do not matter."""
    fast = _lm_point_per_seed(
        "lstm", 20.0, [[2.0, 2.2], [1.8, 2.0], [1.6, 1.8]]
    )  # 300 steps in 15 s
    # 15 s x 10 steps/s = 150 steps: halfway between the evaluations at 100 and 200.
    late = _lm_point_per_seed("gru", 10.0, [[2.0, 2.4], [1.6, 2.0], [1.4, math.nan]])  # NaN at 300
    early = _lm_point_per_seed("transformer", 10.0, [[2.0, 2.4], [1.6, math.nan], [1.4, math.nan]])
    bits = rva_report.equal_time_bits([fast, late, early])
    assert bits["lstm"] == pytest.approx((1.6 + 1.8) / 2 / math.log(2))
    assert bits["gru"] == pytest.approx((2.2 + 1.8) / 2 / math.log(2))  # means 2.2, 1.8 at 150
    assert math.isnan(bits["transformer"])  # was (2.2 + 1.6) / 2: seed 1 alone at step 200
    rows = {s["model"]: s for s in (fast, late, early)}
    table = rva_report.report_markdown(rows)
    row = next(line for line in table.splitlines() if line.startswith("| transformer"))
    assert row.split(" | ")[3:5] == ["2.02 (1/2 seeds)", "–"]
    assert "a seed whose validation loss was not finite" in table
    monkeypatch.setattr(rva, "shakespeare_points", lambda config, models: [])
    monkeypatch.setattr(rva.grid, "run_points", lambda w, p, c: rows)
    rva.run(cli.load_config(RVA_SMOKE, {"grid.tasks": "shakespeare"}, rules=rva.RULES), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["equal_time_bits"] == {
        "lstm": pytest.approx(bits["lstm"]),
        "gru": pytest.approx(bits["gru"]),
        "transformer": None,
    }
    answer = rva.answers(tmp_path)[9]
    assert "transformer –." in answer
    assert "had a seed whose validation loss was not finite there" in answer


def test_cost_lengths_must_divide_tokens_per_batch(tmp_path, monkeypatch):
    """cost.lengths "16,48" at 64 tokens per batch trained batch 64 // 48 = 1 (48 tokens) at
    T = 48 against 64 at T = 16, while the report compares them "at the same tokens per
    batch"; refused before anything runs, naming the key."""
    monkeypatch.setattr(rva.grid, "run_points", lambda *args: pytest.fail("points ran"))
    for lengths, uneven in (("16,48", "[48]"), ("16,128", "[128]")):  # 128: batch 1, 128 tokens
        config = cli.load_config(RVA_SMOKE, {"cost.lengths": lengths}, rules=rva.RULES)
        with pytest.raises(cfg.ConfigError, match=rf"cost\.lengths='{lengths}': \{uneven}"):
            rva.run(config, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "key", ["data.num_symbols", "data.num_categories"], ids=["symbols", "categories"]
)
def test_copy_task_sizes_are_config_rules(key):
    """0 reached CopyTask's own ValueError inside the run: a traceback, exit status 1."""
    with pytest.raises(ValueError, match=f"{key}=0: must be"):
        cli.load_config(SMOKE, {key: 0}, rules=rva.RULES)


def test_unmatchable_size_is_a_config_error_before_any_point(tmp_path, monkeypatch):
    """A tolerance no width meets was match_size's bare ValueError (exit 1, no key named),
    and for the cost task only after the other points had trained."""
    config = cli.load_config(
        SMOKE, {"model.size_tolerance": 0.01, "grid.tasks": "cost"}, rules=rva.RULES
    )
    monkeypatch.setattr(rva.grid, "run_points", lambda *args: pytest.fail("points ran"))
    with pytest.raises(ConfigError, match="model.size_tolerance=0.01"):
        rva.run(config, tmp_path)
    assert not list(tmp_path.iterdir())


def _lm_point_one_eval(model, steps_per_s):
    return {
        "task": "shakespeare",
        "model": model,
        "width": 8,
        "params": 100,
        "metrics": {"bits_per_token": [2.0]},
        "steps_per_s": steps_per_s,
        "curve_steps": [1],
        "curve_valid_loss": [[1.5]],
    }


def test_run_without_measured_steps_per_s_reports_no_equal_time_value(tmp_path):
    """The runtime's steps/s is None for a run of one step (train.num_steps=1) or one resumed
    at its last checkpoint; equal_time_bits multiplied by it (TypeError) and the table
    formatted it."""
    rows = [_lm_point_one_eval("lstm", 20.0), _lm_point_one_eval("transformer", None)]
    bits = rva_report.equal_time_bits(rows)
    assert bits["lstm"] == pytest.approx(1.5 / math.log(2))
    assert math.isnan(bits["transformer"])
    table = rva_report.report_markdown({r["model"]: r for r in rows})
    row = [line for line in table.splitlines() if line.startswith("| transformer")][0]
    assert row.split(" | ")[4:] == ["–", "– |"]
    rva_report.plot_all({r["model"]: r for r in rows}, tmp_path)
    assert math.isnan(rva_report.equal_time_bits([_lm_point_one_eval("gru", None)])["gru"])


def test_a_point_finished_by_a_rerun_reports_the_rate_of_the_invocation_that_trained_it(
    tmp_path, monkeypatch
):
    """A rerun that only finished a point's run (its report had failed) trained no step and
    measured no rate (steps_per_s None); the point reported "–" and no equal-time value
    although the invocation that trained it measured one (`timing.earlier_invocation`)."""
    timing = {"steps_run": 0, "steps_per_s": None, "tokens_per_s": None}
    timing["earlier_invocation"] = {"steps_run": 5, "steps_per_s": 20.0, "tokens_per_s": 9.0}
    results = {"final": {"valid_bits_per_token": 2.0}, "timing": timing}
    monkeypatch.setattr(rva, "train_and_evaluate", lambda config, workdir, task: results)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "valid_loss": 1.5}\n')
    task = types.SimpleNamespace(kind="lstm", width=8)
    point = rva.train_point(None, task, 100, tmp_path, {"task": "shakespeare"})
    assert point["steps_per_s"] == 20.0 and point["steps_per_s_earlier_invocation"]
    rows = {"lstm": point, "transformer": _lm_point_one_eval("transformer", 20.0)}
    assert rva_report.equal_time_bits(list(rows.values()))["lstm"] == pytest.approx(
        1.5 / math.log(2)
    )
    table = rva_report.report_markdown(rows).splitlines()
    assert [line.split(" | ")[-1] for line in table if line.startswith("| ")][1:] == [
        "20.0† |",
        "20.0 |",
    ]
    assert any(line.startswith("† measured by the invocation that trained") for line in table)


def test_a_rate_no_invocation_measured_gets_no_mark_of_an_earlier_invocation(tmp_path, monkeypatch):
    """A point finished by a rerun whose training invocation ran one step measured no rate:
    its cell read "–†" and the note said the rate was measured by that invocation."""
    timing = {"steps_run": 0, "steps_per_s": None, "tokens_per_s": None}
    timing["earlier_invocation"] = {"steps_run": 1, "steps_per_s": None, "tokens_per_s": None}
    results = {"final": {"valid_bits_per_token": 2.0}, "timing": timing}
    monkeypatch.setattr(rva, "train_and_evaluate", lambda config, workdir, task: results)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "valid_loss": 1.5}\n')
    task = types.SimpleNamespace(kind="lstm", width=8)
    point = rva.train_point(None, task, 100, tmp_path, {"task": "shakespeare"})
    assert point["steps_per_s"] is None and point["steps_per_s_earlier_invocation"] is False
    rows = {"lstm": point, "transformer": _lm_point_one_eval("transformer", 20.0)}
    table = rva_report.report_markdown(rows).splitlines()
    assert [line.split(" | ")[-1] for line in table if line.startswith("| ")][1:] == [
        "– |",
        "20.0 |",
    ]
    assert not any(line.startswith("†") for line in table)


def test_cost_curves_are_drawn_in_length_order(tmp_path, monkeypatch):
    """cost.lengths "256,64,1024" drew each line 256 -> 64 -> 1024 (a zigzag on a log axis)."""
    rows = [
        {
            "length": length,
            "model": "lstm",
            "train_tokens_per_s": [1.0],
            "generate_ms_per_token": [1.0],
            "decode_ms_per_token": [1.0],
            "state_bytes": 1024,
        }
        for length in (256, 64, 1024)
    ]
    drawn = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes, "plot", lambda ax, x, *a, **k: drawn.append(x) or plot(ax, x, *a, **k)
    )
    rva_report.plot_all({"cost": {"task": "cost", "rows": rows}}, tmp_path)
    assert drawn and all(list(x) == [64, 256, 1024] for x in drawn)


def test_temp_memory_unmeasured_is_null_and_small_values_keep_their_digits(tmp_path, monkeypatch):
    """An unmeasured XLA temp size (memory_analysis without it) went into `final` as 0.0, and
    the Q15 answer printed 0.048 MiB as "0 MiB" (the table beside it said 0.04776)."""
    rows = [
        {
            "length": length,
            "batch": 64 // length,
            "model": model,
            "width": 16,
            "params": 100,
            "params_built": 100,
            "train_tokens_per_s": [1.0],
            "generate_ms_per_token": [1.0],
            "decode_ms_per_token": [1.0],
            "state_bytes": 1024,
            "temp_memory_mib": temp,
        }
        for length in (16, 32)
        for model, temp in (("lstm", 0.04776), ("transformer", None))
    ]
    summary = {
        "task": "cost",
        "rows": rows,
        "params": {"lstm": 100, "transformer": 100},
        "widths": {"lstm": 16, "transformer": 16},
        "decode_tokens": 8,
        "machine": "test",
        "load_average": 0.0,
    }
    config = cli.load_config(SMOKE, {"grid.tasks": "cost", "cost.lengths": "16,32"}, rva.RULES)
    monkeypatch.setattr(rva, "cost_widths", lambda *args: {})
    monkeypatch.setattr(rva.grid, "run_points", lambda *args: {"cost": summary})
    final = rva.run(config, tmp_path)
    assert final["cost-T16-transformer"]["temp_memory_mib"] is None
    assert final["cost-T16-lstm"]["temp_memory_mib"] == 0.04776
    answer = rva.answers(tmp_path)[15]
    assert "lstm 0.04776 MiB → 0.04776 MiB, transformer – → –." in answer


def test_the_cost_point_is_named_by_the_models_it_measures(tmp_path, monkeypatch):
    """One point measures every model of grid.models; named "cost" alone, a rerun with
    another grid.models found it finished and reused its rows (the transformer's row missing
    from the cost table and results.json)."""
    names = []

    def run_points(workdir, points, config):
        names.extend(point[0] for point in points)
        raise StopIteration  # the plan is all this test needs

    monkeypatch.setattr(rva, "cost_widths", lambda *args: {})
    monkeypatch.setattr(rva.grid, "run_points", run_points)
    for models in ("lstm", "lstm,transformer"):
        config = cli.load_config(SMOKE, {"grid.tasks": "cost", "grid.models": models}, rva.RULES)
        with pytest.raises(StopIteration):
            rva.run(config, tmp_path)
    assert names == ["cost-lstm", "cost-lstm-transformer"]


def test_answers_count_a_diverged_seed(tmp_path):
    """Q9 and Q15 printed np.nanmean over seeds: a seed whose loss was NaN vanished from the
    answer (the tables beside it said "1/2 seeds")."""
    lm = {**_lm_point_one_eval("transformer", 2.0), "metrics": {"bits_per_token": [2.0, math.nan]}}
    copy = {
        "task": "copy",
        "length": 10,
        "model": "lstm",
        "metrics": {"copy_accuracy": [0.5, math.nan]},
    }
    points = {"shakespeare-transformer": lm, "copy-T10-lstm": copy}
    (tmp_path / "results.json").write_text(json.dumps({"points": points}))
    answers = rva.answers(tmp_path)
    assert "transformer 2 (1/2 seeds)" in answers[9]
    assert "T=10 lstm 0.5 (1/2 seeds)" in answers[15]


def test_sequence_task_scores_the_copied_tail_in_bits_on_held_out_draws(monkeypatch):
    """Hand-made logits: copy accuracy counts the last `copy_positions` positions only (the
    copied symbols; the first positions are blanks to output), bits are nats / ln 2, the
    evaluation draws are not the training draws, and a Shakespeare point's validation windows
    come from the valid split."""
    calls = []

    def draw(seed, index, split):
        calls.append((seed, index, split))
        return {"inputs": np.zeros((1, 4), np.int32), "targets": np.array([[0, 0, 2, 1]])}

    task = rva.SequenceTask(_config(), "lstm", 8, 3, 4, draw, copy_positions=2)
    # argmax 1, 1, 2, 1: wrong at the two blanks, right at the two copied symbols
    logits = jnp.asarray(np.eye(3)[[1, 1, 2, 1]][None] * 5.0, jnp.float32)
    monkeypatch.setattr(rva, "logits_of", lambda m, inputs: logits)
    _, sums = task.eval_step(None, draw(0, 0, "valid"), ())
    got = task.eval_metrics({k: float(v) for k, v in sums.items()})
    assert got["copy_accuracy"] == 1.0
    assert got["bits_per_token"] == pytest.approx(got["loss"] / math.log(2), rel=1e-6)
    calls.clear()
    task.eval_data("valid")
    next(iter(task.train_data()))
    (train,) = [c for c in calls if c[2] == "train"]
    assert all(c[:2] != train[:2] for c in calls if c[2] == "valid")
    # Shakespeare windows: from the split the draw is asked for (train: 0s, valid: 1s).
    splits = {"train": np.zeros(64, np.int32), "valid": np.ones(64, np.int32)}
    monkeypatch.setattr(
        rva,
        "lm_corpus",
        lambda *a: types.SimpleNamespace(
            splits=splits, vocab=types.SimpleNamespace(tokens=["a", "b"])
        ),
    )
    monkeypatch.setattr(rva, "matched_widths", lambda c, v, w, models: {"lstm": (8, 100)})
    ((_, point),) = rva.shakespeare_points(_config(), ["lstm"])
    shakespeare = point.args[1]
    assert np.all(shakespeare.eval_data("valid")[0]["inputs"] == 1)


def test_cost_arithmetic_and_wording_from_faked_timings(tmp_path, monkeypatch):
    """measure_cost's timing loop and row arithmetic with a faked clock (each call advances it
    by a chosen duration; the repeats take 1, 2 and 0.5 x a base) and hand-made measurements,
    distinct per model and per length, through the table and the Q10 and Q15 answers: train
    tokens/s = batch x T / s (median), ms per token = 1e3 x s (÷ decode_tokens in the scan;
    best of the repeats in Q10), growth from the shortest to the longest T (the lengths come
    unsorted), each model's own state bytes and temp memory (None: unmeasured)."""
    models, decode_tokens, scale = ["lstm", "gru", "transformer"], 8, (1.0, 2.0, 0.5)
    tokens_per_s = {"lstm": (4000, 3000, 2000), "gru": (5000, 3500, 2500)}
    tokens_per_s["transformer"] = (8000, 4000, 1000)  # medians at T = 16, 32, 64
    step_ms = {"lstm": (0.2, 0.21, 0.22), "gru": (0.25, 0.3, 0.35), "transformer": (0.3, 0.6, 1.2)}
    scan_ms = {"lstm": (0.05,) * 3, "gru": (0.06, 0.061, 0.0636), "transformer": (0.1, 0.2, 0.5)}
    widths = {"lstm": (128, 1001), "gru": (112, 1002), "transformer": (76, 1003)}
    clock, calls = [0.0], []

    def call(kind, length, part):
        calls.append((length, kind, part))
        clock[0] += durations[kind, length, part].pop(0)

    monkeypatch.setattr(rva, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    rows = []
    for length in (32, 64, 16):
        i = (16, 32, 64).index(length)
        durations = {}
        for k in models:  # best (the 0.5 x repeat) of the latencies: step_ms, scan_ms
            durations[k, length, "train"] = [1024 / tokens_per_s[k][i] * f for f in scale]
            durations[k, length, "generate"] = [2e-3 * step_ms[k][i] * f for f in scale]
            durations[k, length, "decode"] = [
                2e-3 * scan_ms[k][i] * decode_tokens * f for f in scale
            ]
        measured = {k: {part: (call, (k, length, part)) for part in rva.COST_PARTS} for k in models}
        for k, temp, state in (
            ("lstm", 2**19 * length // 16, 512),
            ("gru", None, 1024),
            ("transformer", 3 * 2**20 * (length // 16) ** 2, 256 * length + 4),
        ):
            measured[k].update(temp_bytes=temp, state_bytes=state, params_built=widths[k][1] + 7)
        samples, loads = rva._time_interleaved(measured, models, repeats=3)
        assert len(loads) == 3 and not any(durations.values())
        rows += rva.cost_rows(length, 1024 // length, widths, measured, samples, decode_tokens)
    rotation = [k for start in range(3) for k in models[start:] + models[:start]]
    assert calls[:27] == [(32, k, part) for k in rotation for part in rva.COST_PARTS]
    point = {
        "task": "cost",
        "rows": rows,
        "params": {k: n for k, (_, n) in widths.items()},
        "widths": {k: w for k, (w, _) in widths.items()},
        "decode_tokens": decode_tokens,
        "machine": "test",
        "load_average": 0.0,
    }
    table = rva_report.report_markdown({"cost": point}).splitlines()
    row = next(line for line in table if line.startswith("| 64 | 16 | transformer"))
    assert row.split(" | ")[3:] == [
        "76",
        "1,003 / 1,010",
        "1000 (500–2000)",
        "48",
        "2.400 (1.200–4.800)",
        "1.000 (0.500–2.000)",
        "16 |",
    ]
    row = next(line for line in table if line.startswith("| 16 | 64 | gru"))
    assert row.split(" | ")[5:8] == ["5000 (2500–10000)", "–", "0.500 (0.250–1.000)"]
    (tmp_path / "results.json").write_text(json.dumps({"points": {"cost": point}}))
    answers = rva.answers(tmp_path)
    assert answers[15] == (
        "Training tokens/s (median) at T=16 → T=64 (test, load 0.0; the widths of the "
        "Shakespeare comparison): lstm (width 128) 4000 → 2000, gru (width 112) 5000 → 2500, "
        "transformer (width 76) 8000 → 1000; XLA temporary memory at the same tokens per "
        "batch: lstm 0.5 MiB → 2 MiB, gru – → –, transformer 3 MiB → 48 MiB."
    )
    assert answers[10] == (
        "Per-token generation, batch 1, with 16 → 64 tokens of context, best of 3 (the least "
        "load-disturbed sample): one jitted step called from Python (dispatch included) "
        "lstm 0.200 → 0.220 (×1.1), gru 0.250 → 0.350 (×1.4), transformer 0.300 → 1.200 (×4.0)"
        " ms; inside one jitted lax.scan decode lstm 0.050 → 0.050 (×1.0), gru 0.060 → 0.064 "
        "(×1.1), transformer 0.100 → 0.500 (×5.0) ms. Generation state (its arrays' bytes): "
        "lstm 0.5 → 0.5 (×1.0), gru 1.0 → 1.0 (×1.0), transformer 4.0 → 16.0 (×4.0) KiB. "
        '"A recurrent state keeps the same cost and memory at any context length; a KV cache '
        'grows with it": state size: supported (KV cache ×4.0, RNNs ≤ ×1.0); step-call '
        "latency: not supported here, the RNNs' grew too (KV cache ×4.0, RNNs up to ×1.4); "
        "in-scan latency: supported (KV cache ×5.0, RNNs ≤ ×1.1)."
    )
    rnns_only = rva_report.generation_answer([r for r in rows if r["model"] != "transformer"])
    assert rnns_only.startswith("Per-token generation, batch 1, with 16 → 64 tokens")
    assert "transformer 0." not in rnns_only and "gru 0.250 → 0.350 (×1.4)" in rnns_only
    assert rnns_only.endswith("KiB. Needs both an RNN and the transformer to compare.")
