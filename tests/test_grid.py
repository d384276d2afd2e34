"""experiments.grid: mean and std say when seeds are left out, stored nulls read back as NaN,
and `best_within_spread` against a seed-by-seed definition."""


def test_grid_mean_std_says_when_seeds_are_left_out():
    """A diverged seed used to vanish: [1, nan, 3] read '2 ± 1' with no count."""
    from experiments import grid

    assert grid.mean_std([1.0, 3.0]) == "2 ± 1"
    assert grid.mean_std([1.0, float("nan"), 3.0]) == "2 ± 1 (2/3 seeds)"
    assert grid.mean_std([1.0, float("inf")], "note") == "1 (1/2 seeds; note)"
    assert grid.mean_std([2.0], "note") == "2 (note)"
    assert grid.mean_std([2.0, 2.0]) == "2 ± 0"
    assert grid.mean_std([float("nan")]) == "–"


def test_stored_nulls_read_back_as_nan():
    """results.json stores a non-finite measurement as null (`finite_or_none`); reading it
    back gives NaN, in lists and in lists of rows, and `mean_std` counts it as left out."""
    import numpy as np

    from experiments import grid

    np.testing.assert_array_equal(grid.none_to_nan([1, None, 2.5]), [1.0, np.nan, 2.5])
    rows = grid.none_to_nan([[1.0, None], [None, 4.0]])
    assert rows.dtype == np.float64 and rows.shape == (2, 2)
    np.testing.assert_array_equal(rows, [[1.0, np.nan], [np.nan, 4.0]])
    assert grid.nan_mean([1.0, None, 3.0]) == 2.0
    assert np.isnan(grid.nan_mean([None, None]))
    assert grid.mean_std([1.0, None, 3.0]) == "2 ± 1 (2/3 seeds)"


def test_best_within_spread_against_a_seed_by_seed_definition():
    """The ranking the answers use (exposure bias's best regime and generator, translation's
    best BLEU): on random per-seed tables, with nulls and fully diverged runs, the best is the
    key with the best mean of its finite seeds, and a key is within its spread unless every
    finite seed of the best is better than every finite seed of that key, each with at least
    two (one seed has no spread to be beyond). A diverged run is
    never best and never within the spread, whichever position it has."""
    import itertools
    import math

    import numpy as np

    from experiments import grid

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 5))
        table = {}
        for key in range(n):
            seeds = [float(v) for v in rng.integers(0, 6, size=3)]
            for _ in range(2):  # one or two seeds lost; one finite seed has no spread
                if rng.random() < 0.3:
                    seeds[int(rng.integers(3))] = None
            if rng.random() < 0.15:
                seeds = [None, None, None]
            table[f"run{key}"] = seeds
        if all(all(v is None for v in seeds) for seeds in table.values()):
            continue
        for higher in (False, True):
            best, tied = grid.best_within_spread(table, higher_is_better=higher)
            finite = {k: [v for v in s if v is not None] for k, s in table.items()}
            means = {k: sum(v) / len(v) for k, v in finite.items() if v}
            target = (max if higher else min)(means.values())
            assert finite[best] and math.isclose(means[best], target), (trial, table)
            expected = []
            for key, values in finite.items():
                if key == best or not values:
                    continue
                pairs = itertools.product(finite[best], values)
                apart = min(len(finite[best]), len(values)) >= 2 and all(
                    (b > v) if higher else (b < v) for b, v in pairs
                )
                if not apart:
                    expected.append(key)
            assert tied == expected, (trial, higher, table)
    diverged_first = {"a": [None, None], "b": [2.0, 3.0], "c": [1.0, 1.5]}
    assert grid.best_within_spread(diverged_first) == ("c", [])
    assert grid.best_within_spread(diverged_first, higher_is_better=True) == ("b", [])
    assert grid.ranking_mean([None, float("nan")]) == math.inf
    # Every key diverged: no best (the first key was named best, and the answers printed it).
    assert grid.best_within_spread({"a": [None], "b": [float("nan")]}) == (None, [])


def test_unranked_reason_and_spread_phrase_name_why_a_pair_is_not_ranked():
    """Short of `finite_seeds_below`, a pair is not ranked because a seed is not finite (on
    either side), because a side has one seed (either side: one seed against three has no
    spread to compare either), or else is within the seed spread; `spread_phrase` sorts the
    keys by that reason. The mean of the finite seeds leaves inf out as it leaves out null."""
    from experiments import grid

    diverged, one = "a seed diverged: not compared seed by seed", "one seed: no seed spread"
    assert grid.unranked_reason([1.0, 2.0], [1.5, None]) == diverged
    assert grid.unranked_reason([1.0, float("inf")], [1.5, 2.5]) == diverged
    assert grid.unranked_reason([1.0], [1.5, 2.5, 3.0]).startswith(one)
    assert grid.unranked_reason([1.0, 2.0, 3.0], [1.5]).startswith(one)
    assert grid.unranked_reason([1.0, 2.0], [1.5, 2.5]) == grid.WITHIN_SPREAD
    level = {"b": [1.5, 2.5], "c": [1.2], "d": [None, 2.0]}
    assert grid.spread_phrase([1.0, 2.0], level) == (
        "within the seed spread of b; not ranked against "
        f"c (one seed: no seed spread to compare), d ({diverged})"
    )
    assert grid.nan_mean([1.0, float("inf"), 3.0]) == 2.0


def test_grid_helpers_edge_inputs(tmp_path):
    """A resumed TaskStream continues at the stored index; an unreadable point record is
    named; `fmt` passes non-finite values through; a stream no longer than the window is
    refused naming both lengths."""
    import numpy as np
    import pytest

    from experiments import grid

    stream = grid.TaskStream(lambda i: {"i": i})
    stream.load_state_dict({"index": np.int64(5)})
    assert next(stream) == {"i": 5} and stream.state_dict() == {"index": 6}
    record = tmp_path / grid.POINT_CONFIG_FILE
    record.write_text("{torn")
    assert grid._changed_keys(record, {}) == f"{record} is not valid JSON"
    fmts = [grid.fmt(v) for v in (None, float("nan"), 0.0, 2e-4)]
    assert fmts == ["None", "nan", "0", "2.00e-04"]
    with pytest.raises(ValueError, match="stream of 4 tokens is too short for windows of 4"):
        grid.random_windows(np.arange(4), 0, 0, 2, 4)
    assert grid.random_windows(np.arange(5), 0, 0, 3, 4).tolist() == [[0, 1, 2, 3]] * 3


def test_points_that_would_share_a_name_are_refused_and_float_values_keep_their_digits(tmp_path):
    """Clip thresholds 1 and 1.0000001 were both named `...-1` (`:g` keeps 6 digits): the
    second loaded the first's summary as its own and was never trained."""
    import pytest

    from experiments import grid
    from experiments import truncated_bptt as tb
    from rnn_jax.train import cli, config

    ran = []
    points = [(name, lambda d, n=name: ran.append(n) or {}) for name in ("a", "b", "a")]
    with pytest.raises(config.ConfigError, match=r"grid points share a name: \['a'\]"):
        grid.run_points(tmp_path, points, config.base_config())
    assert not ran and not list(tmp_path.iterdir())
    assert [grid.value_name(v) for v in (1.0, 1.0000001, 2.5e-05, 0.1)] == [
        "1",
        "1.0000001",
        "2.5e-05",
        "0.1",
    ]
    smoke = "experiments/configs/truncated_bptt.py:smoke"
    overrides = {"grid.bptt_lengths": "", "grid.clip_global_norms": "none,1,1.0000001"}
    names = [name for name, _ in tb.grid_points(cli.load_config(smoke, overrides, rules=tb.RULES))]
    assert len(set(names)) == 3 and names[2].endswith("-1.0000001"), names


def test_all_seeds_below_needs_every_seed_finite():
    """`finite_seeds_below` leaves a diverged seed to the caller; `all_seeds_below` is the
    verdicts' rule, where such a seed makes the pair not compared."""
    from experiments import grid

    assert grid.finite_seeds_below([1.0, 1.1, None], [2.0, 2.1])
    assert not grid.all_seeds_below([1.0, 1.1, None], [2.0, 2.1])
    assert not grid.all_seeds_below([1.0, 1.1], [2.0, float("inf")])
    assert grid.all_seeds_below([1.0, 1.1], [2.0, 2.1])
    assert not grid.all_seeds_below([1.0], [2.0])  # one seed has no spread
