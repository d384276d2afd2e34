"""Review 22 of experiments.rnn_vs_attention and rnn_jax.models.transformer: the encoder's
padding against a per-sequence float64 reference, a KV cache of no slots refused, config values
refused with exit-2 errors that name the key, a run without a measured steps/s, per-length
curves drawn in length order, unmeasured memory kept null, and diverged seeds counted in the
answers."""

import json
import math

import jax
import jax.numpy as jnp
import matplotlib.axes
import numpy as np
import pytest
from flax import nnx

from experiments import rnn_vs_attention as rva
from rnn_jax.models import transformer
from rnn_jax.train import cli
from rnn_jax.train.config import ConfigError
from tests.test_models_transformer import _embed, _stack

SMOKE = "experiments/configs/rnn_vs_attention.py:smoke"


def test_encoder_padding_matches_each_sequence_alone():
    """Each sequence encoded alone (no padding, no mask) by the float64 numpy transcription
    equals its real positions in a padded batch whose padding holds arbitrary ids, out of
    range included (they embedded as NaN, and 0 attention weight x NaN is NaN)."""
    vocab = 11
    abstract = nnx.eval_shape(  # weights drawn below: initialising on the device takes seconds
        lambda: transformer.TransformerEncoder(
            vocab, d_model=8, num_heads=2, num_layers=2, max_length=6, rngs=nnx.Rngs(1)
        )
    )
    graphdef, shapes = nnx.split(abstract)
    rng = np.random.default_rng(0)
    weights = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)
    encoder = nnx.merge(graphdef, weights)
    lengths = np.array([6, 4, 1])
    tokens = rng.integers(0, vocab, (3, 6))
    padded = tokens.copy()
    padded[1, 4:] = [vocab + 7, -3]
    padded[2, 1:] = rng.integers(0, vocab, 5)
    states = np.asarray(nnx.jit(lambda m, x, n: m(x, n))(encoder, padded, lengths))
    for b, length in enumerate(lengths):
        alone = tokens[b : b + 1, :length]
        everywhere = np.ones((1, length, length), bool)
        expected = _stack(encoder.stack, _embed(encoder.embed, alone), everywhere)[0]
        np.testing.assert_allclose(states[b, :length], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"tokens holds ids in \[\d+, 18\] but vocab_size=11"):
        encoder(jnp.asarray(padded), jnp.asarray([6, 5, 1]))  # id 18 inside a sequence


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


def _lm_point(model, steps_per_s):
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
    rows = [_lm_point("lstm", 20.0), _lm_point("transformer", None)]
    bits = rva.equal_time_bits(rows)
    assert bits["lstm"] == pytest.approx(1.5 / math.log(2))
    assert math.isnan(bits["transformer"])
    table = rva.report_markdown({r["model"]: r for r in rows})
    row = [line for line in table.splitlines() if line.startswith("| transformer")][0]
    assert row.split(" | ")[4:] == ["–", "– |"]
    rva.plot_all({r["model"]: r for r in rows}, tmp_path)
    assert math.isnan(rva.equal_time_bits([_lm_point("gru", None)])["gru"])


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
    rva.plot_all({"cost": {"task": "cost", "rows": rows}}, tmp_path)
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


def test_answers_count_a_diverged_seed(tmp_path):
    """Q9 and Q15 printed np.nanmean over seeds: a seed whose loss was NaN vanished from the
    answer (the tables beside it said "1/2 seeds")."""
    lm = {**_lm_point("transformer", 2.0), "metrics": {"bits_per_token": [2.0, math.nan]}}
    copy = {
        "task": "copy",
        "length": 10,
        "model": "lstm",
        "metrics": {"copy_accuracy": [0.5, math.nan]},
    }
    points = {"shakespeare-transformer": lm, "copy-T10-lstm": copy}
    (tmp_path / "results.json").write_text(json.dumps({"points": points}))
    answers = rva.answers(tmp_path)
    assert "transformer 2 ± 0 (1/2 seeds)" in answers[9]
    assert "T=10 lstm 0.5 ± 0 (1/2 seeds)" in answers[15]


def test_a_cache_of_no_slots_is_refused():
    """init_cache(batch, 0) silently gave a cache of the model's max_length (`0 or default`);
    a negative length failed inside jnp.zeros."""
    lm = nnx.eval_shape(
        lambda: transformer.TransformerLM(
            11, d_model=8, num_heads=2, num_layers=1, max_length=6, rngs=nnx.Rngs(0)
        )
    )
    assert lm.init_cache(2)["layers"][0]["key"].shape == (2, 2, 6, 4)
    for length in (0, -1):
        with pytest.raises(ValueError, match=f"max_length >= 1, got {length}"):
            lm.init_cache(2, length)
