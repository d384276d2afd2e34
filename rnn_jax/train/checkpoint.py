"""Checkpoints with orbax: periodic (`W/checkpoints`) and best-on-validation (`W/best`).

A checkpoint holds two items:
  - `state`: the device pytree (params, other model variables, optimiser state, the carried
    hidden state of truncated BPTT, the per-replica base RNG keys), saved with
    `StandardSave` so that every process writes its shards and orbax coordinates the hosts;
  - `loop`: a small JSON object with what the host loop needs to continue bit-identically
    (the data-iterator position, the partial logging window, early-stopping counters).
Per-step randomness is `fold_in(base_key, step)`, so the base key and the step are the whole
RNG state. Orbax writes to a temporary directory and renames it when complete, so a run
killed mid-save resumes from the previous complete checkpoint. `W/best` is kept consistent
with that resume point: a periodic save waits for a pending best save, the best checkpoints
the newest complete periodic one names are kept (not only the newest best: its loop record's
`best_step`, and its `ongoing` record's, which a resume that trains past a run's last step
goes on from), and a resumed run first drops best checkpoints its loop state has not seen.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

# The items of every checkpoint (a folder each in its step folder) and their handlers.
_ITEMS = {"state": ocp.StandardCheckpointHandler, "loop": ocp.JsonCheckpointHandler}


class Checkpointer:
    """Periodic and best checkpoints of one run directory.

    Args:
      workdir: the run directory; checkpoints go to `workdir/checkpoints` and `workdir/best`.
      max_to_keep: how many periodic checkpoints to keep (the newest).
      read_only: for readers (`rnn_jax.train.restore`), possibly beside a live run: create
        and delete nothing (and do not `save`). A training run's Checkpointer (the default)
        first deletes best checkpoints newer than the newest periodic one (`drop_stale_best`).
      drop_stale: False defers that deletion to the caller: the training loop, once its
        resume checks have passed (a run refused with a config error leaves the run
        directory as it was), drops the best checkpoints its loop state has not seen
        (`drop_best_after`).
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        max_to_keep: int,
        *,
        read_only: bool = False,
        drop_stale: bool = True,
    ) -> None:
        workdir = pathlib.Path(workdir).resolve()
        self._read_only = read_only
        # Multi-process runs save synchronously: a background save thread that runs its own
        # cross-process synchronisation beside the training step's collectives is one more
        # way for CPU (gloo) runs to deadlock, and saving a checkpoint is rare.
        asynchronous = jax.process_count() == 1

        def options(keep: int | None) -> ocp.CheckpointManagerOptions:
            if read_only:  # (orbax's read_only=True logs warnings on every construction)
                return ocp.CheckpointManagerOptions(create=False)
            return ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous
            )

        def manager(directory: pathlib.Path, keep: int | None) -> ocp.CheckpointManager:
            # Handlers named up front: a manager that has not saved yet (a resumed run, a
            # reader) otherwise reads no array metadata (`item_metadata` gives None).
            handlers = {item: handler() for item, handler in _ITEMS.items()}
            return ocp.CheckpointManager(directory, options=options(keep), item_handlers=handlers)

        self.latest = manager(workdir / "checkpoints", max_to_keep)
        # The loop decides what "better" is (it tracks the best value for early stopping), so
        # this manager only ever receives improvements. It keeps, not only the newest, every
        # best checkpoint a resume may need (`_prune_best`), so its newest is the best model.
        self.best = manager(workdir / "best", None)
        # Steps saved by this process, per manager: every process must take the same
        # save/skip decision, so it must not depend on what one of them sees on disk.
        self._saved = {"latest": self.latest.latest_step(), "best": self.best.latest_step()}
        # The best checkpoints each periodic checkpoint's loop record names, for those this
        # object saved or restored (`_prune_best` keeps them).
        self._named: dict[int, set[int]] = {}
        if drop_stale:
            self.drop_stale_best()

    def drop_stale_best(self) -> None:
        """Delete best checkpoints newer than the newest periodic one (all of them when there
        is none): a run killed between the two saves left them, and the run resumes from the
        periodic checkpoint, whose loop state has not seen them. Kept, they would be taken
        as the resumed run's best model, e.g. after resuming with a lower `train.num_steps`
        or `eval_every`, or when its replay of them does not improve (another device count)."""
        self.drop_best_after(self.latest.latest_step())

    def drop_best_after(self, step: int | None) -> None:
        """Delete the best checkpoints newer than `step` (all of them for None): a resumed run
        passes its loop state's `best_step`, dropping also the best checkpoints of a finished
        run's last-step evaluation when it trains past that step (`drop_stale_best` keeps
        those: they are not newer than the periodic checkpoint)."""
        if self._read_only:
            return
        for best in self.best.all_steps():
            if step is None or best > step:
                self.best.delete(best)
        self._saved["best"] = self.best.latest_step()

    def _prune_best(self, periodic: int) -> None:
        """Delete the best checkpoints at or before the complete periodic checkpoint of step
        `periodic` but the newest one and those its loop record names: a resume from it (or
        from a newer one) never needs the others. One kept only by step (orbax's
        `max_to_keep=1`) was gone when a run killed after a later improvement resumed from an
        earlier periodic checkpoint; one kept only as the newest, when a finished run whose
        last-step evaluation had improved was extended (`train.num_steps` raised)."""
        older = [step for step in self.best.all_steps() if step <= periodic]
        keep = set(older[-1:]) | self._named.get(periodic, set())
        self._named = {step: names for step, names in self._named.items() if step >= periodic}
        for step in older:
            if step not in keep:
                self.best.delete(step)

    def save(self, step: int, state: Any, loop: dict, *, best: bool = False) -> None:
        """Save (asynchronously in a one-process run); `best=True` writes to the
        best-on-validation manager. A periodic save first waits for a pending best save."""
        name = "best" if best else "latest"
        if self._saved[name] == step:
            return
        if not best:
            self._named[step] = _named_best(loop)
        previous = self._saved["latest"]
        self._saved[name] = step
        manager = self.best if best else self.latest
        if not best:
            # A periodic checkpoint must never be complete on disk while the best one its
            # `loop` names (an improvement at this or an earlier step) is still being
            # written: killed in between, the resumed run would evaluate an older best.
            self.best.wait_until_finished()
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
        if not best and previous is not None:
            # orbax finished the previous periodic save before starting this one.
            self._prune_best(previous)

    def latest_step(self, *, best: bool = False) -> int | None:
        return (self.best if best else self.latest).latest_step()

    def restore(self, abstract_state: Any, *, best: bool = False) -> tuple[Any, dict] | None:
        """The newest checkpoint as `(state, loop)`, or None when there is none.

        Args:
          abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings, e.g.
            `jax.tree.map(ocp.utils.to_shape_dtype_struct, state)`: arrays come back with
            exactly these shardings, whatever the device count of the run that saved them.

        Raises:
          ValueError: when the checkpoint's arrays do not fit `abstract_state`, naming each
            array whose shape or dtype differs or that only one of them has; or when the
            checkpoint is damaged (an item folder missing, a file that cannot be read), naming
            its step folder and the item. A damaged newest checkpoint is refused, not skipped
            for an older one (docs/design.md, "Checkpoints").
        """
        manager = self.best if best else self.latest
        step = manager.latest_step()
        if step is None:
            return None
        # orbax's own errors were a KeyError ('Item "loop" was not found in the checkpoint')
        # naming no folder, or a FileNotFoundError or JSONDecodeError outside the ValueErrors
        # that a refused resume reports.
        missing = [item for item in _ITEMS if not (manager.directory / str(step) / item).is_dir()]
        if missing:
            raise _damaged(manager, step, f"no {' and no '.join(missing)} item folder")
        # Shapes and dtypes compared before reading: orbax's shape error names no array
        # ("Requested shape: (1, 6) is not compatible with the stored shape: (1, 4)"), its
        # failed restore left the reads of the other arrays unfinished (coroutines never
        # awaited), and another dtype it silently casts to (float64 to float32 without x64).
        mismatched, unmatched = _stored_differences(manager, step, abstract_state)
        differences = mismatched + unmatched
        if mismatched:
            raise _does_not_fit(manager, step, differences)
        loop = _read(manager, step, "loop", ocp.args.JsonRestore())
        state = _read(manager, step, "state", ocp.args.StandardRestore(abstract_state), differences)
        found, wanted = len(jax.tree.leaves(state)), len(jax.tree.leaves(abstract_state))
        if found != wanted:
            # orbax filled an array the checkpoint lacks with the stored empty node (a task's
            # carry `()` where the run now has an array) without an error: the resume then
            # failed inside the task's loss. (Containers may come back as other types, lists
            # for tuples: the arrays are what must match.)
            raise _does_not_fit(
                manager, step, differences or [f"{found} arrays in the checkpoint, {wanted} here"]
            )
        if not best:
            self._named[step] = _named_best(loop)
        return state, loop

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self, prune: bool = True) -> None:
        """Finish pending saves; then (with `prune`) keep only the best checkpoint a resume
        from the newest periodic one needs (a finished run keeps one). A run refused before
        it trains closes with `prune=False`: it leaves the run directory as it was (its
        close deleted best checkpoints that a SIGTERM'd run had kept past its last periodic
        one)."""
        self.wait()
        periodic = self.latest.latest_step()
        if prune and not self._read_only and periodic is not None:
            self._prune_best(periodic)
        self.latest.close()
        self.best.close()


def _read(
    manager: ocp.CheckpointManager,
    step: int,
    item: str,
    args: ocp.args.CheckpointArgs,
    differences: list[str] | None = None,
) -> Any:
    """Item `item` of checkpoint `step` of `manager`, restored with `args`.

    Raises:
      ValueError: `_does_not_fit` when orbax refuses a target that `differences` (the arrays
        only one side has) explains; otherwise naming the step folder and the item that
        cannot be read (a file of it missing or corrupt).
    """
    try:
        return manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]
    except (OSError, ValueError) as error:
        if differences and not isinstance(error, OSError):  # a tree that differs: orbax
            raise _does_not_fit(manager, step, differences) from error  # names no array
        # tensorstore appends its whole JSON spec (kilobytes) to a message that names the file.
        message = str(error).split(" [tensorstore_spec", 1)[0]
        raise _damaged(
            manager, step, f"its {item} item cannot be read ({type(error).__name__}: {message})"
        ) from error


def _damaged(manager: ocp.CheckpointManager, step: int, what: str) -> ValueError:
    """The refusal of a damaged checkpoint `step` (`what` says how), naming its folder and the
    step a resume would fall back to once that folder is removed."""
    earlier = [s for s in manager.all_steps() if s < step]
    fallback = (
        f"removing that folder falls back to the checkpoint of step {earlier[-1]}"
        if earlier
        else "it is the only checkpoint there"
    )
    return ValueError(
        f"checkpoint {manager.directory / str(step)} is damaged: {what}. Nothing was "
        f"restored; {fallback}."
    )


def _named_best(loop: Any) -> set[int]:
    """The best checkpoints a periodic checkpoint's loop record names: its `best_step` and,
    at a run's last step, its `ongoing` record's (the loop state of a run that goes on)."""
    records = (loop, loop.get("ongoing")) if isinstance(loop, dict) else ()
    return {
        r["best_step"]
        for r in records
        if isinstance(r, dict) and isinstance(r.get("best_step"), int)
    }


def _stored_differences(
    manager: ocp.CheckpointManager, step: int, abstract_state: Any
) -> tuple[list[str], list[str]]:
    """`_differences` of checkpoint `step` of `manager` and `abstract_state`; none when the
    checkpoint has no array metadata to compare with (orbax's own checks stand alone)."""
    try:
        stored = manager.item_metadata(step)["state"]
    except Exception:  # noqa: BLE001 - unreadable metadata: orbax's error says more
        return [], []
    return ([], []) if stored is None else _differences(stored, abstract_state)


def _does_not_fit(manager: ocp.CheckpointManager, step: int, differences: list[str]) -> ValueError:
    more = f"\n  ... and {len(differences) - 10} more" if len(differences) > 10 else ""
    return ValueError(
        f"{manager.directory / str(step)} does not fit this run's state (a model, vocabulary, "
        "optimiser or dtype other than the checkpoint's):\n  "
        + "\n  ".join(differences[:10])
        + more
    )


def _differences(stored: Any, abstract_state: Any) -> tuple[list[str], list[str]]:
    """`(mismatched, unmatched)`: the arrays whose shapes or dtypes differ between a
    checkpoint's metadata tree and a restore target, and those only one of them has, by
    orbax's dotted names (`params.kernel.value`). No restore in the project changes a dtype on
    purpose (`abstract_like` gives a typed RNG key as its uint32 key data, as stored)."""

    def name(path: tuple) -> str:
        return ".".join(
            str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))) for key in path
        )

    def dtype(leaf: Any) -> np.dtype | None:  # None: metadata without one (nothing to compare)
        return None if getattr(leaf, "dtype", None) is None else np.dtype(leaf.dtype)

    saved = {leaf.name: (tuple(leaf.shape), dtype(leaf)) for leaf in jax.tree.leaves(stored)}
    wanted = {
        name(path): (tuple(leaf.shape), dtype(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    }

    def mismatch(key: str) -> str | None:
        (saved_shape, saved_dtype), (run_shape, run_dtype) = saved[key], wanted[key]
        found = []
        if saved_shape != run_shape:
            found.append(f"shape {saved_shape} in the checkpoint, {run_shape} in this run")
        # `is not None`, not `None in (...)`: numpy finds `dtype("float64") == None` True.
        if saved_dtype is not None and run_dtype is not None and saved_dtype != run_dtype:
            # A float64 run resumed without x64: JAX makes this run's state 32-bit.
            x64_off = saved_dtype.itemsize == 8 and not jax.config.jax_enable_x64
            found.append(
                f"dtype {saved_dtype} in the checkpoint, {run_dtype} in this run"
                + (" (JAX's x64 mode is off here)" if x64_off else "")
            )
        return f"{key}: {'; '.join(found)}" if found else None

    return [line for key in sorted(saved.keys() & wanted.keys()) if (line := mismatch(key))], [
        f"{key}: {'only in the checkpoint' if key in saved else 'not in the checkpoint'}"
        for key in sorted(saved.keys() ^ wanted.keys())
    ]


def abstract_like(state: Any) -> Any:
    """Shapes, dtypes and shardings of a state pytree, as orbax restore targets."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
