"""Experiment configs: the runtime's defaults and variant selection.

A config is an `ml_collections.ConfigDict`. Its runtime part (`seed`, `num_seeds`, `malloc`,
`train`, `optimizer`, `schedule`) comes from `base_config()`; an experiment adds `model` and
`data` and its own `Rules` (rnn_jax.train.rules). An experiment that trains nothing (a
count-based baseline) starts from `process_config()` (`malloc`, `data`) and is validated with
`trains=False`, so that its config carries no training keys it would ignore. Types are enforced
by `ConfigDict` itself (an override of the wrong type fails while flags are parsed);
`rnn_jax.train.config_checks.validate` checks values, before anything is compiled, and raises
`ValueError` naming the key, the value and what is allowed.

Beside this module: the rules (`rules`), `validate` (`config_checks`), dotted keys, flat
configs and their differences (`config_keys`), and a run directory's saved config and the
resume check (`saved_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections
from ml_collections import config_dict


class ConfigError(ValueError):
    """A config value that cannot work with the data or the run directory it meets (found after
    the per-key rules, e.g. when a task loads its corpus), or a variant the config file does not
    have; the command line reports it in one line with exit status 2, like a rule violation."""


def process_config() -> ml_collections.ConfigDict:
    """The keys every experiment's process reads, whether or not it trains.

    Returns:
      A ConfigDict with `malloc` and an empty `data` section.
    """
    config = ml_collections.ConfigDict()
    # "retain": freed large buffers stay in the process heap (rnn_jax.allocator; glibc), so
    # XLA:CPU's per-call temp buffers are not page-faulted in again; "default": as libc does.
    config.malloc = "default"
    config.data = ml_collections.ConfigDict()
    return config


def base_config() -> ml_collections.ConfigDict:
    """The training runtime's keys with their defaults; experiments fill in `model` and `data`.

    Returns:
      `process_config()` plus `seed`, `num_seeds`, `train`, `optimizer`, `schedule` and an
      empty `model` section (`model.hidden_size` is required of every experiment that trains).
    """
    config = process_config()
    config.seed = 0
    # Replicas with seeds seed..seed+num_seeds-1, trained together under jax.vmap.
    config.num_seeds = 1

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 100
    config.train.batch_size = 32  # global batch: independent of the device count
    config.train.log_every = 10
    config.train.eval_every = 50
    config.train.checkpoint_every = 50
    config.train.max_to_keep = 2
    config.train.keep_best = True  # also keep the best-on-validation checkpoint
    config.train.best_metric = "valid_loss"
    config.train.best_mode = "min"
    config.train.patience = 0  # evaluations without improvement before stopping; 0 = off
    config.train.nonfinite = "stop"  # 'stop' raises; 'skip' drops that update and goes on
    config.train.max_consecutive_nonfinite = 10  # with 'skip': give up after this many
    config.train.grad_accum_steps = 1  # optimiser update every k micro-batches (optax.MultiSteps)
    # Split params and optimiser state over the devices (for models too big to replicate).
    config.train.shard_params = False

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.momentum = 0.0  # sgd / rmsprop
    config.optimizer.nesterov = False
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8  # adam/adamw: outside the sqrt; rmsprop: inside (optax's default)
    config.optimizer.weight_decay = 0.0  # coupled L2: g += wd * w before the optimiser
    config.optimizer.decoupled_weight_decay = 0.0  # Loshchilov & Hutter: w -= lr * wd * w
    # Which parameters either decay reaches: 'all', or 'matrices' (ndim >= 2: weight matrices
    # and embedding tables; biases, norm scales and other vectors are left alone).
    config.optimizer.decay_params = "all"
    config.optimizer.clip_global_norm = config_dict.placeholder(float)  # None = no clipping
    config.optimizer.clip_value = config_dict.placeholder(float)

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "constant"
    config.schedule.warmup_steps = 0
    # step_decay: decays count from here; the first decayed step is begin + every
    config.schedule.decay_begin_step = 0
    config.schedule.decay_every_steps = 1  # step_decay: steps per decay (= steps per epoch)
    config.schedule.decay_rate = 1.0
    config.schedule.end_value = 0.0  # cosine: final learning rate
    config.schedule.plateau_factor = 0.5
    config.schedule.plateau_patience = 10  # in accumulation windows
    config.schedule.plateau_accumulation_steps = 1
    config.schedule.plateau_rtol = 1e-4

    config.model = ml_collections.ConfigDict()
    return config


def select_variant(
    name: str, variant: str | None, variants: Mapping[str, Callable[[], ml_collections.ConfigDict]]
) -> ml_collections.ConfigDict:
    """Build the named variant of a config file (the part after ':' in `--config=f.py:v`).

    Raises:
      ConfigError: naming the config, the variant asked for and the variants it has.
    """
    if variant not in variants:
        raise ConfigError(
            f"config {name!r}: unknown variant {variant!r}; allowed: {', '.join(variants)} "
            f"(select one as --config=experiments/configs/{name}.py:<variant>)"
        )
    return variants[variant]()
