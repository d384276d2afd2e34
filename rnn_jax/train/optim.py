"""Optimisers, learning-rate schedules and gradient clipping, assembled from optax.

`build_optimizer(config)` returns one `optax.GradientTransformationExtraArgs`:

    clip (by value, then by global norm)   # on the gradient (k micro-batches' mean if k > 1)
    -> coupled L2 (g += weight_decay * w)   # "L2 regularisation" as in Zaremba et al.
    -> the optimiser, with its schedule     # sgd / adam / adamw / rmsprop / adagrad
    -> reduce-on-plateau (optional)          # scales the update; driven by `value=loss`
    -> optax.apply_if_finite                  # a non-finite gradient never reaches the params
    -> optax.MultiSteps (optional)            # gradient accumulation over micro-batches

Under accumulation a non-finite micro-batch gradient is dropped before MultiSteps adds it to
its running mean (`should_skip_update_fn`): the window waits for one more micro-batch. Left to
the inner `apply_if_finite`, the NaN would stay in the accumulator (MultiSteps resets it by
multiplying with 0, and 0 * NaN = NaN), so every later update would be skipped.

Reduce-on-plateau under accumulation is driven by the window's mean loss, the mean over the
micro-batches whose gradients the update averages (a dropped micro-batch's loss left out).
MultiSteps hands the inner chain only the `value` of the micro-batch that ends the window,
so it compared one micro-batch in k (a noisier signal from 1/k of the data, blind to the
other micro-batches' losses); `_WindowLossState` keeps the running sum beside MultiSteps'
state. Without accumulation, or with another schedule, the state is MultiSteps' or the
chain's alone.

Decoupled weight decay (Loshchilov & Hutter 2019) is `optimizer.decoupled_weight_decay`, the
`weight_decay` of optax.adamw (only `adamw` takes it: for plain SGD decoupled and coupled decay
coincide up to the learning rate, so use `optimizer.weight_decay` there).

Both decays reach every parameter by default (`optimizer.decay_params='all'`, what Zaremba et
al.'s L2 and optax do). `'matrices'` decays only parameters with two or more axes (weight
matrices, embedding tables, a CRF's transition matrix) and leaves biases, layer-norm scales
and other vectors alone, the common practice for transformers (BERT, nanoGPT). The rule reads
one replica's shapes: the runtime vmaps the update over the seed axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def build_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning rate as a function of the optimiser step.

    Args:
      config: the full config; reads `optimizer.learning_rate` and `schedule.*`.

    Returns:
      `step -> learning rate`. `step_decay` is
      `lr * decay_rate ** floor((step - decay_begin_step) / decay_every_steps)` from
      `decay_begin_step` on (lr before it): the first decayed step is
      `decay_begin_step + decay_every_steps`. Zaremba et al.'s "multiply by decay_rate every
      epoch after epoch k" (the TF tutorial's `max_epoch` = k) is `decay_every_steps` =
      steps per epoch and `decay_begin_step` = (k - 1) * steps per epoch, converted in the
      config file. Steps count from the first update also under a warm-up (which replaces
      the schedule's first `warmup_steps` values with a linear ramp), so a warm-up does not
      move the decays. `config_checks.validate` refuses a warm-up of at least the run's updates
      (the rate would never reach `learning_rate`) and a step decay whose first decayed step
      is past the run's last update (it would never decay), a warm-up that ends at or after
      the first decayed step (the ramp reaches `learning_rate` at step `warmup_steps`; the
      rate would drop at once to the decays already due) and a cosine `end_value` above
      `learning_rate`.
    """
    lr = config.optimizer.learning_rate
    sched = config.schedule
    if sched.name in ("constant", "plateau"):
        main = optax.constant_schedule(lr)
    elif sched.name == "step_decay":
        main = optax.exponential_decay(
            lr,
            transition_steps=sched.decay_every_steps,
            decay_rate=sched.decay_rate,
            transition_begin=sched.decay_begin_step,
            staircase=True,
        )
    elif sched.name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=sched.warmup_steps,
            decay_steps=max(config.train.num_steps // config.train.grad_accum_steps, 1),
            end_value=sched.end_value,
        )
    else:
        raise ValueError(f"schedule.name={sched.name!r}: must be one of the known schedules")
    if sched.warmup_steps:
        warmup = optax.linear_schedule(0.0, lr, sched.warmup_steps)
        # join_schedules hands `step - warmup_steps` to `main`; undo that shift so that a
        # step decay's `decay_begin_step`/`decay_every_steps` count from the first step, as
        # the config states them, whatever the warm-up.
        return optax.join_schedules(
            [warmup, lambda step: main(step + sched.warmup_steps)], [sched.warmup_steps]
        )
    return main


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """The whole update rule of a config (see the module docstring for the order)."""
    opt = config.optimizer
    schedule = build_schedule(config)
    parts = []
    if opt.clip_value is not None:
        parts.append(optax.clip(opt.clip_value))
    if opt.clip_global_norm is not None:
        parts.append(optax.clip_by_global_norm(opt.clip_global_norm))
    if opt.weight_decay:
        parts.append(optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask(opt)))
    parts.append(_base_optimizer(opt, schedule))
    if config.schedule.name == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=config.schedule.plateau_factor,
                patience=config.schedule.plateau_patience,
                rtol=config.schedule.plateau_rtol,
                accumulation_size=config.schedule.plateau_accumulation_steps,
            )
        )
    # The non-finite guard skips the update inside the step; the runtime decides on the host
    # whether to stop (train.nonfinite='stop') or go on. The large limit keeps optax from ever
    # applying a non-finite update by itself.
    tx = optax.apply_if_finite(optax.chain(*parts), max_consecutive_errors=2**30)
    if config.train.grad_accum_steps > 1:
        multi = optax.MultiSteps(
            tx,
            every_k_schedule=config.train.grad_accum_steps,
            should_skip_update_fn=_skip_nonfinite,
        )
        if config.schedule.name == "plateau":
            return _window_mean_loss(multi)
        # MultiSteps passes extra args (reduce-on-plateau's `value`) to the inner chain, but
        # it is not a GradientTransformationExtraArgs: `with_extra_args_support` would wrap
        # it in an update that drops them.
        return optax.GradientTransformationExtraArgs(multi.init, multi.update)
    return optax.with_extra_args_support(tx)


class _WindowLossState(NamedTuple):
    loss_sum: jax.Array  # float32: the losses of the window's accepted micro-batches so far
    multi_steps: optax.MultiStepsState


def _window_mean_loss(multi: optax.MultiSteps) -> optax.GradientTransformationExtraArgs:
    """`multi` with its `value` (the micro-batch loss) replaced by the mean loss of the
    accumulation window so far: at the micro-batch that ends the window, the mean over the
    window's k accepted micro-batches, the loss of the averaged gradient it applies. A
    micro-batch whose gradient MultiSteps drops (`_skip_nonfinite`) adds nothing."""

    def init(params: Any) -> _WindowLossState:
        return _WindowLossState(jnp.zeros((), jnp.float32), multi.init(params))

    def update(
        updates: Any, state: _WindowLossState, params: Any = None, *, value: Any, **extra: Any
    ) -> tuple[Any, _WindowLossState]:
        skipped = _skip_nonfinite(updates, None, None)[0]
        loss_sum = state.loss_sum + jnp.where(skipped, 0.0, jnp.asarray(value, jnp.float32))
        mean = loss_sum / (state.multi_steps.mini_step + 1).astype(jnp.float32)
        updates, inner = multi.update(updates, state.multi_steps, params, value=mean, **extra)
        # mini_step is 0 again after the window's last micro-batch (and stays 0 at a skipped
        # first one, whose sum is still 0).
        return updates, _WindowLossState(jnp.where(inner.mini_step == 0, 0.0, loss_sum), inner)

    return optax.GradientTransformationExtraArgs(init, update)


def _skip_nonfinite(updates: Any, gradient_step: Any, params: Any) -> tuple[jax.Array, tuple]:
    """MultiSteps' `should_skip_update_fn`: skip a micro-batch whose gradient holds inf/NaN.

    optax.skip_not_finite does the same but keeps a dict of counts in the optimiser state;
    the empty skip state here keeps the state's structure (and older checkpoints) unchanged.
    """
    del gradient_step, params
    return jnp.logical_not(all_finite(updates)), ()


def all_finite(tree: Any) -> jax.Array:
    """One bool scalar: every element of every inexact leaf of `tree` is finite (integer
    leaves, such as optimiser step counts, cannot overflow to inf). Also the training loop's
    check of updated params and of a state before it is saved."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.asarray(checks)) if checks else jnp.asarray(True)


def _decay_mask(opt: ml_collections.ConfigDict) -> Any:
    """optax's `mask` for the decays: None (every parameter) or params -> bools per leaf."""
    if opt.decay_params == "all":
        return None
    if opt.decay_params == "matrices":
        return lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    raise ValueError(f"optimizer.decay_params={opt.decay_params!r}: must be 'all' or 'matrices'")


def _base_optimizer(
    opt: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    momentum = opt.momentum or None
    if opt.name == "sgd":
        return optax.sgd(schedule, momentum=momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adamw":
        return optax.adamw(
            schedule,
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.decoupled_weight_decay,
            mask=_decay_mask(opt),
        )
    if opt.name == "rmsprop":
        return optax.rmsprop(schedule, eps=opt.eps, momentum=momentum, nesterov=opt.nesterov)
    if opt.name == "adagrad":
        return optax.adagrad(schedule, eps=opt.eps)
    raise ValueError(
        f"optimizer.name={opt.name!r}: must be one of sgd, adam, adamw, rmsprop, adagrad"
    )


def applied_learning_rates(
    opt_state: Any, schedule: optax.Schedule, fetch: Any = jax.device_get
) -> list[float]:
    """The rate of each replica's most recent update, read from its optimiser state: the
    schedule at the update's count (`ScaleByScheduleState.count` is the number of updates
    applied, so the last one used `schedule(count - 1)`) times reduce-on-plateau's scale
    (`ReduceLROnPlateauState.scale` after that update, the factor it applied). A step whose
    update was skipped (non-finite) or that ended no accumulation window moves neither, so
    the rate stays the last applied one; before the first update it is the first update's.

    Args:
      opt_state: a state of `build_optimizer`'s optimiser; under the training loop's vmap
        its leaves have a leading replica axis `[n]` (a single state: `[]`).
      schedule: `build_schedule(config)`.
      fetch: brings the two small leaves to the host (`distributed.to_host` across
        processes).

    Returns:
      `n` floats (one for an unbatched state).
    """
    nodes = jax.tree.leaves(
        opt_state,
        is_leaf=lambda x: isinstance(
            x, optax.ScaleByScheduleState | optax.contrib.ReduceLROnPlateauState
        ),
    )
    counts = [x.count for x in nodes if isinstance(x, optax.ScaleByScheduleState)]
    scales = [x.scale for x in nodes if isinstance(x, optax.contrib.ReduceLROnPlateauState)]
    if len(counts) != 1 or len(scales) > 1:
        raise ValueError(
            f"expected one scheduled learning rate and at most one plateau scale in the "
            f"optimiser state, found {len(counts)} and {len(scales)}"
        )
    count, scale = fetch((counts[0], scales[0] if scales else 1.0))  # one transfer
    count = np.atleast_1d(np.asarray(count))
    # One schedule call for every replica (optax schedules take arrays of counts).
    rate = np.asarray(schedule(np.maximum(count - 1, 0)), np.float64)
    return np.broadcast_to(rate * np.asarray(scale, np.float64), count.shape).tolist()
