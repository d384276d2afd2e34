"""Review 23 of rnn_vs_attention, bidirectional and state_probe: a diverged seed is not
averaged away from the equal-wall-clock bits/char, the cost task refuses lengths that would
train another number of tokens per batch, bidirectional's unreachable-size error states the
counts it compared (by a closed form), and state_probe refuses distances without k = 0 before
training (its report needs word t). None of them trains or loads data."""

import json
import math

import numpy as np
import pytest

from experiments import bidirectional as bd
from experiments import rnn_vs_attention as rva
from experiments import state_probe as sp
from experiments import state_probe_report as sp_report
from rnn_jax.train import cli
from rnn_jax.train import config as cfg

RVA_SMOKE = "experiments/configs/rnn_vs_attention.py:smoke"


def _lm_point(model, steps_per_s, per_seed_losses):
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
    fast = _lm_point("lstm", 20.0, [[2.0, 2.2], [1.8, 2.0], [1.6, 1.8]])  # 300 steps in 15 s
    # 15 s x 10 steps/s = 150 steps: halfway between the evaluations at 100 and 200.
    late = _lm_point("gru", 10.0, [[2.0, 2.4], [1.6, 2.0], [1.4, math.nan]])  # NaN at 300
    early = _lm_point("transformer", 10.0, [[2.0, 2.4], [1.6, math.nan], [1.4, math.nan]])
    bits = rva.equal_time_bits([fast, late, early])
    assert bits["lstm"] == pytest.approx((1.6 + 1.8) / 2 / math.log(2))
    assert bits["gru"] == pytest.approx((2.2 + 1.8) / 2 / math.log(2))  # means 2.2, 1.8 at 150
    assert math.isnan(bits["transformer"])  # was (2.2 + 1.6) / 2: seed 1 alone at step 200
    rows = {s["model"]: s for s in (fast, late, early)}
    table = rva.report_markdown(rows)
    row = next(line for line in table.splitlines() if line.startswith("| transformer"))
    assert row.split(" | ")[3:5] == ["2.02 ± 0 (1/2 seeds)", "–"]
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


def test_probe_distances_start_at_word_t():
    """probe.distances without 0 passed the rule, trained the LM and fitted every probe, then
    the report failed (KeyError 'word_k0': Q12 compares UPOS with word t's identity)."""
    smoke = "experiments/configs/state_probe.py:smoke"
    for value in ("1,2,4", "2"):
        with pytest.raises(ValueError, match=rf"probe\.distances='{value}': .*starting at 0"):
            cli.load_config(smoke, {"probe.distances": value}, rules=sp.RULES)
    config = cli.load_config(smoke, {"probe.distances": "0,3"}, rules=sp.RULES)
    assert sp.distances(config) == [0, 3]
    assert sp.target_names([0, 3])[:2] == ["word_k0", "word_k3"]
    assert np.array_equal(sp.num_classes(config)[:2], [config.probe.num_words + 1] * 2)


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
