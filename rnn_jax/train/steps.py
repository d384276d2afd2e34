"""The jitted pieces of the training loop: the initial state, the train step, the eval step.

Every function works on one seed replica and is vmapped over the seed axis
(`rnn_jax.train.seeds`). `build_steps(config, task)` gives `(mesh, state, train_step,
eval_step)` exactly as `train_and_evaluate` uses them (benchmarks time the same compiled
step); `build_init` the initial state alone (`restore.restore_model` restores onto it).
Batches and carries are sharded over every device (`rnn_jax.train.distributed`), so
`check_divisible` refuses, before anything is compiled, a batch size the device count does
not divide.

State layout (a dict pytree; every leaf but `step` has a leading `[num_seeds]` replica axis):
  params      nnx.State of the model's nnx.Param variables (optimised)
  others      nnx.State of every other model variable (carried unchanged)
  opt_state   the optax state
  carry       the task's carried state, `[num_seeds, batch, ...]` (sharded on batch)
  rng         `[num_seeds, 2]` uint32 base keys; step s uses `seeds.step_key(rng, s)`
  step        int32 scalar, steps taken (kept on the device: nothing is sent per step)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from rnn_jax.train import config as config_lib
from rnn_jax.train import distributed, optim, seeds
from rnn_jax.train.task import Task


def check_divisible(config: ml_collections.ConfigDict, task: Task) -> None:
    """Batches are split over all devices: their sizes must divide evenly (before compiling).

    Raises:
      ConfigError: naming the batch size and the device count (the command line reports it
        in one line with exit status 2, like any config value that cannot work).
    """
    devices = jax.device_count()
    sizes = {"train.batch_size": config.train.batch_size}
    # in the task's order (a set named a different split from run to run), and with where the
    # size is set: the task reads it from its own key (data.eval_batch_size for most)
    sizes.update(
        {
            f"eval batch size of {s!r} (the experiment's eval batch size, e.g. "
            "data.eval_batch_size)": task.eval_batch_size(s)
            for s in dict.fromkeys((*task.eval_splits, *task.final_splits))
        }
    )
    for name, size in sizes.items():
        if size % devices:
            raise config_lib.ConfigError(
                f"{name}={size}: must be a multiple of the device count ({devices}); batches "
                "are sharded over devices (multiples of 8 run on 1, 2, 4 or 8 devices)"
            )


def build_steps(config: ml_collections.ConfigDict, task: Task) -> tuple[Any, dict, Any, Any]:
    """`(mesh, state, train_step, eval_step)` exactly as `train_and_evaluate` uses them (for
    benchmarks): `train_step(state, batch) -> (state, metrics)` (jitted, donates `state`),
    `eval_step(params, others, batch, carry) -> (carry, sums)`; batches go through
    `distributed.put_global_batch(batch, mesh)`."""
    mesh = distributed.data_mesh()
    tx = optim.build_optimizer(config)
    graphdef, init_state = build_init(
        task, tx, config.seed, config.num_seeds, config.train.batch_size
    )
    shardings = _state_shardings(jax.eval_shape(init_state), mesh, config.train.shard_params)
    state = jax.jit(init_state, out_shardings=shardings)()
    train_step = jax.jit(
        _train_step_fn(task, tx, graphdef, config.train.nonfinite == "skip"),
        out_shardings=(shardings, None),
        donate_argnums=0,
    )
    return mesh, state, train_step, jax.jit(_eval_step_fn(task, graphdef))


def build_init(
    task: Task, tx: optax.GradientTransformation, seed: int, n: int, batch_size: int
) -> tuple[Any, Any]:
    """`(graphdef, init_state)`: the model's graph and a function `() -> state` (the layout in
    the module docstring) for `n` replicas from `seed` and a training batch of `batch_size`."""
    abstract = nnx.eval_shape(lambda: task.init_model(jax.random.key(0)))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)

    def init_one(base_key: jax.Array) -> dict:
        model = task.init_model(seeds.init_key(base_key))
        _, params, others = nnx.split(model, nnx.Param, ...)
        return {"params": params, "others": others, "opt_state": tx.init(params), "rng": base_key}

    def init_state() -> dict:
        state = jax.vmap(init_one)(seeds.base_keys(seed, n))
        one = task.init_carry(batch_size)
        state["carry"] = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), one)
        # The number of steps taken, on the device: the host never sends it per step.
        state["step"] = jnp.zeros((), jnp.int32)
        return state

    return graphdef, init_state


def _state_shardings(
    abstract_state: dict, mesh: jax.sharding.Mesh, shard_params: bool = False
) -> dict:
    """Carry sharded on its batch axis; params, other variables and optimiser state
    replicated, or (`shard_params`) split over the devices along one axis (ZeRO-3/FSDP style:
    XLA gathers them where the step needs them)."""
    shardings = jax.tree.map(lambda _: distributed.replicated(mesh), abstract_state)
    shardings["carry"] = jax.tree.map(
        lambda _: distributed.batch_sharded(mesh, batch_axis=1), abstract_state["carry"]
    )
    if shard_params:
        for name in ("params", "others", "opt_state"):
            shardings[name] = jax.tree.map(
                lambda x: distributed.parameter_sharding(mesh, x.shape), abstract_state[name]
            )
    return shardings


def _train_step_fn(
    task: Task,
    tx: optax.GradientTransformationExtraArgs,
    graphdef: Any,
    skip_nonfinite: bool = False,
) -> Any:
    def one(
        params: Any,
        others: Any,
        opt_state: Any,
        carry: Any,
        base_key: jax.Array,
        batch: Any,
        step: jax.Array,
    ) -> tuple:
        rng = seeds.step_key(base_key, step)

        def loss_of(p: Any) -> tuple:
            return task.loss_fn(nnx.merge(graphdef, p, others), batch, carry, rng)

        (loss, (new_carry, aux)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        # Before clipping. With grad_accum_steps > 1 this is the micro-batch's norm; clipping
        # acts on the mean of the k micro-batch gradients (inside optax.MultiSteps).
        grad_norm = optax.global_norm(grads)
        updates, new_opt_state = tx.update(grads, opt_state, params, value=loss)
        new_params = optax.apply_updates(params, updates)
        # Finite gradients can still overflow the update (a huge learning rate): such a step
        # is as bad as a NaN loss. One reduced bool per replica, over the params only (an
        # optimiser state that overflows alone is caught before every save,
        # `nonfinite.check_saveable`).
        update_finite = optim.all_finite(new_params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & update_finite
        # A non-finite forward pass leaves a non-finite carry: keep the last good one.
        new_carry = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_carry, carry)
        if skip_nonfinite:
            # 'skip' trains on after a bad step: keep the last good params and optimiser state
            # (optax.apply_if_finite only sees the gradient). Under 'stop' the run ends at the
            # next check and nothing after a bad step is saved, so no per-step copy is needed
            # (it cost ~9% of a small model's step on CPU).
            new_params, new_opt_state = jax.tree.map(
                lambda a, b: jnp.where(finite, a, b),
                (new_params, new_opt_state),
                (params, opt_state),
            )
        params, opt_state = new_params, new_opt_state
        step_metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": finite,
            "update_finite": update_finite,
            **aux,
        }
        return params, opt_state, new_carry, step_metrics

    def train_step(state: dict, batch: Any) -> tuple[dict, dict]:
        step = state["step"] + 1
        params, opt_state, carry, step_metrics = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None))(
            state["params"],
            state["others"],
            state["opt_state"],
            state["carry"],
            state["rng"],
            batch,
            step,
        )
        new_state = {
            **state,
            "params": params,
            "opt_state": opt_state,
            "carry": carry,
            "step": step,
        }
        return new_state, step_metrics

    return train_step


def _eval_step_fn(task: Task, graphdef: Any) -> Any:
    def one(params: Any, others: Any, batch: Any, carry: Any) -> tuple:
        return task.eval_step(nnx.merge(graphdef, params, others), batch, carry)

    return jax.vmap(one, in_axes=(0, 0, None, 0))
