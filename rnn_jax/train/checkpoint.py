"""Checkpoints with orbax: periodic (`W/checkpoints`) and best-on-validation (`W/best`).

A checkpoint holds two items:
  - `state`: the device pytree (params, other model variables, optimiser state, the carried
    hidden state of truncated BPTT, the per-replica base RNG keys), saved with
    `StandardSave` so that every process writes its shards and orbax coordinates the hosts;
  - `loop`: a small JSON object with what the host loop needs to continue bit-identically
    (the data-iterator position, the partial logging window, early-stopping counters).
Per-step randomness is `fold_in(base_key, step)`, so the base key and the step are the whole
RNG state. Orbax writes to a temporary directory and renames it when complete, so a run
killed mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Periodic and best checkpoints of one run directory.

    Args:
      workdir: the run directory; checkpoints go to `workdir/checkpoints` and `workdir/best`.
      max_to_keep: how many periodic checkpoints to keep (the newest).
    """

    def __init__(self, workdir: str | pathlib.Path, max_to_keep: int) -> None:
        workdir = pathlib.Path(workdir).resolve()
        # Multi-process runs save synchronously: a background save thread that runs its own
        # cross-process synchronisation beside the training step's collectives is one more
        # way for CPU (gloo) runs to deadlock, and saving a checkpoint is rare.
        asynchronous = jax.process_count() == 1
        self.latest = ocp.CheckpointManager(
            workdir / "checkpoints",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=asynchronous
            ),
        )
        # The loop decides what "better" is (it tracks the best value for early stopping), so
        # this manager only ever receives improvements and keeps the newest one.
        self.best = ocp.CheckpointManager(
            workdir / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=asynchronous
            ),
        )
        # Steps saved by this process, per manager: every process must take the same
        # save/skip decision, so it must not depend on what one of them sees on disk.
        self._saved = {"latest": self.latest.latest_step(), "best": self.best.latest_step()}

    def save(self, step: int, state: Any, loop: dict, *, best: bool = False) -> None:
        """Save asynchronously (orbax); `best=True` writes to the best-on-validation manager."""
        name = "best" if best else "latest"
        if self._saved[name] == step:
            return
        self._saved[name] = step
        manager = self.best if best else self.latest
        # The save is asynchronous: orbax serialises `loop` after this call returns, while the
        # host loop keeps accumulating into its nested logging window. A deep copy freezes the
        # JSON at this step (without it a resumed run counted a window twice).
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(copy.deepcopy(loop))
            ),
            force=True,
        )

    def latest_step(self, *, best: bool = False) -> int | None:
        return (self.best if best else self.latest).latest_step()

    def restore(self, abstract_state: Any, *, best: bool = False) -> tuple[Any, dict] | None:
        """The newest checkpoint as `(state, loop)`, or None when there is none.

        Args:
          abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings, e.g.
            `jax.tree.map(ocp.utils.to_shape_dtype_struct, state)`: arrays come back with
            exactly these shardings, whatever the device count of the run that saved them.
        """
        manager = self.best if best else self.latest
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.loop

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract_like(state: Any) -> Any:
    """Shapes, dtypes and shardings of a state pytree, as orbax restore targets."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
