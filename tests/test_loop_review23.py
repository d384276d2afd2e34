"""Review 23 of the training loop's seed replicas: the non-finite guard under
`train.nonfinite='skip'` counts non-finite steps in a row per replica, so replica i stops
where a single-seed run with seed + i would."""

import types

import numpy as np

from rnn_jax.train import NonFiniteError
from rnn_jax.train import loop as loop_lib
from tests.test_train_loop import _config

_CHECKPOINTER = types.SimpleNamespace(
    latest_step=lambda: None, latest=types.SimpleNamespace(directory="W/checkpoints")
)


def _first_stop(finite_per_step, max_in_a_row, counted=0):
    """The step (1-based) at which the host check raises for these per-step `finite` flags
    (one list of per-replica flags per step), or None; `counted` is the loop record's count."""
    n = len(finite_per_step[0])
    config = _config(
        num_seeds=n, train__nonfinite="skip", train__max_consecutive_nonfinite=max_in_a_row
    )
    loop = {"consecutive_nonfinite": counted}
    for step, flags in enumerate(finite_per_step, 1):
        finite = np.asarray(flags, bool)
        m = {
            "finite": finite,
            "update_finite": np.ones(n, bool),
            "loss": np.where(finite, 1.0, np.nan),
            "grad_norm": np.where(finite, 1.0, np.nan),
        }
        try:
            loop_lib._check_finite(step, m, config, loop, _CHECKPOINTER)
        except NonFiniteError as error:
            return step, str(error)
    return None, None


def test_skip_counts_non_finite_steps_in_a_row_per_replica():
    # Replica 0 fails at odd steps and replica 1 at even ones up to step 8, then replica 1
    # three times in a row (steps 10-12). With max 2 in a row a single-seed run of seed + 1
    # stops at step 12 and one of seed + 0 never; the run of both used to stop at step 3 (a
    # third step in a row where *any* replica failed), although no replica had two in a row.
    steps = [[s % 2 == 0, s % 2 == 1] for s in range(1, 9)] + [[True, True]]
    steps += [[True, False]] * 3
    alone = [_first_stop([[flags[i]] for flags in steps], 2)[0] for i in range(2)]
    assert alone == [None, 12]
    step, message = _first_stop(steps, 2)
    assert step == 12  # where the first single-seed run stops
    assert "replicas [1] had more than train.max_consecutive_nonfinite=2" in message
    # A count stored by an older checkpoint (an int, any replica) goes on for each replica.
    assert _first_stop([[True, False]], 2, counted=2)[0] == 1
    assert _first_stop([[True, True], [True, False]] * 3, 2, counted=2)[0] is None
