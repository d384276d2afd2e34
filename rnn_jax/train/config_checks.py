"""`validate`: a config checked against the runtime's rules and an experiment's, before
anything is compiled.

`PROCESS_RULES` (what `rnn_jax.train.cli.main` itself reads) apply to every experiment,
`TRAINING_RULES` (the keys of `base_config`) to those that train; then the checks that
involve several keys (seed range over the replicas, optimiser options, gradient accumulation,
schedules that must act within the run). Every problem is listed in one `ValueError`, naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import ml_collections

from rnn_jax import allocator
from rnn_jax.train.config_keys import lookup
from rnn_jax.train.rules import (
    Rules,
    boolean,
    in_range,
    int_at_least,
    metric_name,
    moment_decay,
    non_negative,
    one_of,
    open_fraction,
    positive,
    positive_float32,
    positive_float32_or_none,
    positive_fraction,
    step_count,
)

# jax.random.PRNGKey keeps a seed's low 32 bits (without jax_enable_x64): seed 2**32 is seed 0.
_SEED_MAX = 2**32 - 1

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
DECAY_PARAMS = ("all", "matrices")  # optimizer.decay_params: see rnn_jax.train.optim
SCHEDULES = ("constant", "step_decay", "cosine", "plateau")
NONFINITE_POLICIES = ("stop", "skip")


# Checked for every experiment: what `rnn_jax.train.cli.main` itself reads.
PROCESS_RULES: Rules = {"malloc": one_of(*allocator.MODES)}

# Checked for experiments that train (`validate(..., trains=True)`, the default).
TRAINING_RULES: Rules = {
    "seed": in_range(0, _SEED_MAX),
    "num_seeds": positive,
    "model.hidden_size": positive,
    "train.num_steps": step_count,
    # Divisibility by the device count is checked when the devices are known (loop.py);
    # smoke variants use multiples of 8 so that they run on 1, 2, 4 or 8 devices.
    "train.batch_size": positive,
    "train.log_every": positive,
    "train.eval_every": positive,
    "train.checkpoint_every": positive,
    "train.max_to_keep": positive,
    "train.keep_best": boolean,
    "train.best_metric": metric_name,
    "train.best_mode": one_of("min", "max"),
    "train.patience": non_negative,
    "train.nonfinite": one_of(*NONFINITE_POLICIES),
    "train.max_consecutive_nonfinite": positive,
    "train.grad_accum_steps": positive,
    "train.shard_params": boolean,
    "optimizer.name": one_of(*OPTIMIZERS),
    "optimizer.learning_rate": positive_float32,
    "optimizer.momentum": moment_decay,
    "optimizer.nesterov": boolean,
    "optimizer.b1": moment_decay,
    "optimizer.b2": moment_decay,
    "optimizer.eps": positive_float32,
    "optimizer.weight_decay": non_negative,
    "optimizer.decoupled_weight_decay": non_negative,
    "optimizer.decay_params": one_of(*DECAY_PARAMS),
    "optimizer.clip_global_norm": positive_float32_or_none,
    "optimizer.clip_value": positive_float32_or_none,
    "schedule.name": one_of(*SCHEDULES),
    "schedule.warmup_steps": non_negative,
    "schedule.decay_begin_step": non_negative,
    "schedule.decay_every_steps": positive,
    # Only step_decay reads it: a rate above 1 would grow the rate every decay (inf in float32
    # within a few hundred decays); 1 (the default) keeps it constant.
    "schedule.decay_rate": positive_fraction,
    "schedule.end_value": non_negative,
    # optax.contrib.reduce_on_plateau refuses a factor outside (0, 1) and an rtol outside
    # (0, 1] (its atol is 0); it cuts the rate when the windows without improvement, counted
    # from 1, equal `patience`: with 0 it would cut at every improvement instead.
    "schedule.plateau_factor": open_fraction,
    "schedule.plateau_patience": int_at_least(1),
    "schedule.plateau_accumulation_steps": positive,
    "schedule.plateau_rtol": positive_fraction,
}


def validate(
    config: ml_collections.ConfigDict, rules: Rules | None = None, *, trains: bool = True
) -> None:
    """Check every rule (the runtime's plus the experiment's) against the config.

    Args:
      config: the resolved config (after command-line overrides).
      rules: the experiment's rules, `{"model.dropout": probability, ...}`; a key listed here
        but missing from the config is an error too.
      trains: whether the experiment trains with the runtime (`TRAINING_RULES` and the
        optimiser/schedule consistency checks apply) or only runs in its process
        (`PROCESS_RULES` only; an experiment module says so with `TRAINS = False`).

    Raises:
      ValueError: listing every offending key with its value and what is allowed.
    """
    problems = []
    runtime = {**PROCESS_RULES, **(TRAINING_RULES if trains else {})}
    for key, rule in {**runtime, **(rules or {})}.items():
        try:
            value = lookup(config, key)
        except KeyError:
            problems.append(f"{key}: missing (every config of this experiment needs it)")
            continue
        allowed = rule(value)
        if allowed is not None:
            problems.append(f"{key}={value!r}: must be {allowed}")
    if trains and not problems and config.seed + config.num_seeds - 1 > _SEED_MAX:
        problems.append(
            f"seed={config.seed!r} with num_seeds={config.num_seeds!r}: the replicas' seeds "
            f"seed..seed+num_seeds-1 must be <= {_SEED_MAX} (a PRNG key keeps 32 bits: larger "
            "seeds repeat smaller ones)"
        )
    if (
        trains
        and not problems
        and config.optimizer.decoupled_weight_decay
        and config.optimizer.name != "adamw"
    ):
        problems.append(
            f"optimizer.decoupled_weight_decay={config.optimizer.decoupled_weight_decay!r} with "
            f"optimizer.name={config.optimizer.name!r}: decoupled decay needs 'adamw' "
            "(use optimizer.weight_decay for coupled L2)"
        )
    opt = config.optimizer if trains and not problems else None
    if opt is not None and opt.momentum and opt.name not in ("sgd", "rmsprop"):
        problems.append(
            f"optimizer.momentum={opt.momentum!r} with optimizer.name={opt.name!r}: momentum "
            "needs 'sgd' or 'rmsprop' (optax's other optimisers take none: it would be ignored)"
        )
    if (
        opt is not None
        and opt.nesterov
        and (opt.name not in ("sgd", "rmsprop") or not opt.momentum)
    ):
        problems.append(
            f"optimizer.nesterov={opt.nesterov!r} with optimizer.name={opt.name!r} and "
            f"optimizer.momentum={opt.momentum!r}: Nesterov momentum needs 'sgd' or 'rmsprop' "
            "with optimizer.momentum > 0 (optax ignores it otherwise)"
        )
    if trains and not problems and config.train.num_steps % config.train.grad_accum_steps:
        problems.append(
            f"train.grad_accum_steps={config.train.grad_accum_steps!r}: must divide "
            f"train.num_steps={config.train.num_steps!r} (the optimiser updates once every "
            "train.grad_accum_steps steps, so the steps after the last whole group would be "
            "computed and never applied; with more accumulation steps than steps, no update at "
            "all)"
        )
    if trains and not problems:
        problems += _schedule_problems(config)
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))


def _schedule_problems(config: ml_collections.ConfigDict) -> list[str]:
    """A warm-up, first step decay or plateau reduction the run never reaches (schedules count
    optimiser updates, `train.num_steps // train.grad_accum_steps`, from 0 as optax does).

    A warm-up of at least the run's updates never reaches `optimizer.learning_rate` under any
    schedule (a linear ramp over `warmup_steps` updates; cosine's decay would not begin
    either). A step decay's first decayed update is `decay_begin_step + decay_every_steps`
    (`optim.build_schedule`); at or past the run's last update (`updates - 1`) the schedule
    is constant and the decay keys say something the run never does. Likewise a plateau
    schedule whose patience cannot run out within the run.

    Two schedules that would not decay as their keys say: a warm-up ending at or after a step
    decay's first decayed update (the ramp reaches `learning_rate` at update `warmup_steps`;
    ending after the first decay it rises to the rate, then drops at once to the decays
    already due, e.g. 0.96 -> 0.25 for lr 1, rate 0.5 every 10 from 0 with a 25-step warm-up;
    ending at it, the rate never reaches `learning_rate`: 0.93 -> 0.5 for a 15-step warm-up
    and rate 0.5 from update 15), and a cosine `end_value` above `learning_rate` (the "decay"
    would raise the rate).
    """
    sched = config.schedule
    updates = config.train.num_steps // config.train.grad_accum_steps
    counted = f"the {updates} optimiser updates (train.num_steps // train.grad_accum_steps)"
    problems = []
    if sched.warmup_steps >= updates:
        problems.append(
            f"schedule.warmup_steps={sched.warmup_steps!r}: must be fewer than {counted}; "
            f"the rate would never reach optimizer.learning_rate="
            f"{config.optimizer.learning_rate!r}"
        )
    first_decay = sched.decay_begin_step + sched.decay_every_steps
    if sched.name == "step_decay" and first_decay >= updates:
        problems.append(
            f"schedule.decay_begin_step={sched.decay_begin_step!r} with "
            f"schedule.decay_every_steps={sched.decay_every_steps!r}: the first decayed "
            f"update, {first_decay} (counting from 0), must come before the end of {counted}; "
            "the rate would never decay"
        )
    if sched.name == "step_decay" and sched.warmup_steps >= first_decay:
        problems.append(
            f"schedule.warmup_steps={sched.warmup_steps!r} with "
            f"schedule.decay_begin_step={sched.decay_begin_step!r} and "
            f"schedule.decay_every_steps={sched.decay_every_steps!r}: the warm-up must end "
            f"before the first decayed update, {first_decay} (the ramp reaches "
            "optimizer.learning_rate at update schedule.warmup_steps; the rate would instead "
            "drop at once to the decays already due)"
        )
    lr = config.optimizer.learning_rate
    if sched.name == "cosine" and sched.end_value > lr:
        problems.append(
            f"schedule.end_value={sched.end_value!r} with optimizer.learning_rate={lr!r}: "
            "the cosine schedule's end value must be at most its peak (it would raise the rate)"
        )
    # optax's reduce_on_plateau compares window means of `accumulation_steps` updates; the
    # first window sets the best value, so the earliest reduced update is number
    # accumulation_steps * (patience + 1) - 1 (counting from 0), even on a flat loss.
    first_reduction = sched.plateau_accumulation_steps * (sched.plateau_patience + 1) - 1
    if sched.name == "plateau" and first_reduction >= updates:
        problems.append(
            f"schedule.plateau_accumulation_steps={sched.plateau_accumulation_steps!r} with "
            f"schedule.plateau_patience={sched.plateau_patience!r}: the earliest reduced "
            f"update, {first_reduction} (counting from 0), must come before the end of "
            f"{counted}; the rate could never be reduced"
        )
    return problems
