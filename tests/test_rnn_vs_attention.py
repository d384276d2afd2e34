"""experiments.rnn_vs_attention: the cost task times the models of the quality comparison,
equal-time bits never credit unmeasured steps, the generation state's size is measured and
the Q10 answer follows the measured ratios, and the copy task's chance level follows
`data.num_categories`."""

import json
import math

import pytest
from flax import nnx

from experiments import rnn_vs_attention as rva
from rnn_jax.models.params import count_params
from rnn_jax.train import cli

SMOKE = "experiments/configs/rnn_vs_attention.py:smoke"
MODELS = ["lstm", "transformer"]


def _config(**overrides):
    return cli.load_config(SMOKE, {"data.window": 16, **overrides}, rules=rva.RULES)


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory):
    """measure_cost at cost.lengths "16,64" (tiny smoke models, one repeat)."""
    config = _config(**{"cost.lengths": "16,64", "cost.repeats": 1})
    return config, rva.measure_cost(config, MODELS, tmp_path_factory.mktemp("cost"))


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
    config, result = cost_run
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
    config, result = cost_run
    rows = {(r["model"], r["length"]): r for r in result["rows"]}
    hidden = config.model.hidden_size
    for length in (16, 64):
        # LSTM: (h, c), each float32 [1, hidden]; independent of T
        assert rows["lstm", length]["state_bytes"] == 2 * hidden * 4
        # KV cache: layers x (key, value) x T x d_model float32, plus the int32 position
        d_model = result["widths"]["transformer"]
        layers = config.model.transformer_layers
        assert rows["transformer", length]["state_bytes"] == layers * 2 * length * d_model * 4 + 4
    for row in result["rows"]:
        for key in ("generate_ms_per_token", "decode_ms_per_token"):
            assert len(row[key]) == 1 and math.isfinite(row[key][0]) and row[key][0] > 0


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
    bits = rva.equal_time_bits(rows)
    assert bits["lstm"] == pytest.approx(1.4 / math.log(2))
    assert bits["gru"] == pytest.approx((1.8 + 1.6) / 2 / math.log(2))
    assert math.isnan(bits["transformer"])
    table = rva.report_markdown({r["model"]: r for r in rows})
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


def _cost_rows(transformer_ms):
    """Cost rows at T = 64 and 1024: flat RNN latency, the given transformer latencies."""
    rows = []
    for length, ms in zip((64, 1024), transformer_ms, strict=True):
        for model, latency, state in (
            ("lstm", 0.4, 1024),
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
    text = rva.report_markdown({"copy-T10-lstm": point})
    assert "chance 1/4" in text and "1/8" not in text
    rva.plot_all({"copy-T10-lstm": point}, tmp_path)
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
