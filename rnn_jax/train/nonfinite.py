"""The non-finite guard (`train.nonfinite`): a run never goes on from, or saves, inf/NaN.

The train step (`rnn_jax.train.steps`) reports per replica whether its loss, gradient norm
and updated parameters are finite (`finite`, `update_finite`), and under 'skip' keeps the
last good parameters and optimiser state. On the host, `check_finite` counts each replica's
non-finite steps in a row and stops the run where a single-seed run of that replica's seed
would: at once under 'stop', after more than `train.max_consecutive_nonfinite` in a row
under 'skip'. `check_saveable` checks the whole state (an optimiser state can overflow
alone) once per save. Both raise `NonFiniteError` naming the step and the last good
checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from rnn_jax.train import optim
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.windows import per_replica


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient norm, or updated parameters / optimiser state; the message
    names the step and the last good checkpoint."""


def check_finite(
    step: int, m: dict, config: ml_collections.ConfigDict, loop: dict, checkpointer: Checkpointer
) -> None:
    """Count each replica's non-finite steps in a row and raise where a single-seed run of
    that replica's seed would: at any non-finite step under 'stop', after more than
    `train.max_consecutive_nonfinite` in a row under 'skip' (replicas failing on alternate
    steps go on, as each would alone)."""
    finite = np.asarray(m["finite"], bool)
    counts = per_replica(loop["consecutive_nonfinite"], finite.shape[0])
    loop["consecutive_nonfinite"] = [
        0 if ok else c + 1 for c, ok in zip(counts, finite, strict=True)
    ]
    if finite.all():
        return
    bad = [int(i) for i in np.flatnonzero(~finite)]
    overflow = [i for i in bad if not m["update_finite"][i]]
    cause = (
        f"; the updated parameters of replicas {overflow} overflowed: is "
        "the learning rate too large?"
        if overflow
        else ""
    )
    latest = checkpointer.latest_step()
    # Under 'skip' the step kept the last good params; under 'stop' it applied the update
    # (no per-step copy, `steps._train_step_fn`) and the run ends unsaved from here on.
    outcome = (
        "the update was not applied"
        if config.train.nonfinite == "skip"
        else f"the run stops and saves nothing from step {step} on"
    )
    message = (
        f"non-finite loss, gradient or update at step {step} (replicas {bad}: loss="
        f"{m['loss'][bad].tolist()}, grad_norm={m['grad_norm'][bad].tolist()}{cause}); "
        f"{outcome}. Last good checkpoint: "
        + ("none yet" if latest is None else f"step {latest}")
        + f" in {checkpointer.latest.directory}"
    )
    limit = config.train.max_consecutive_nonfinite
    too_many = [i for i, c in enumerate(loop["consecutive_nonfinite"]) if c > limit]
    if config.train.nonfinite == "stop":
        raise NonFiniteError(message)
    if too_many:
        raise NonFiniteError(
            f"{message}; replicas {too_many} had more than "
            f"train.max_consecutive_nonfinite={limit} non-finite steps in a row"
        )
    logging.warning("%s; skipping it (train.nonfinite='skip')", message)


def check_saveable(step: int, state: dict, checkpointer: Checkpointer) -> None:
    """Never write a checkpoint whose params or optimiser state hold inf/NaN: the per-step
    check covers loss, gradient norm and params; an optimiser state that overflowed alone
    (e.g. Adam's second moment from a finite but huge gradient) is found here, once per save.

    Raises:
      NonFiniteError: naming the step and the last good checkpoint.
    """
    if bool(_state_finite(state["params"], state["opt_state"])):
        return
    latest = checkpointer.latest_step()
    raise NonFiniteError(
        f"the parameters or optimiser state are not finite at step {step}; not saved. Last "
        "good checkpoint: "
        + ("none yet" if latest is None else f"step {latest}")
        + f" in {checkpointer.latest.directory}"
    )


@jax.jit
def _state_finite(params: Any, opt_state: Any) -> jax.Array:
    return optim.all_finite((params, opt_state))
