"""Experiment configs: the runtime's defaults, variant selection and validation.

A config is an `ml_collections.ConfigDict`. Its runtime part (`seed`, `num_seeds`, `malloc`,
`train`, `optimizer`, `schedule`) comes from `base_config()`; an experiment adds `model` and
`data` and its own `Rules`. An experiment that trains nothing (a count-based baseline) starts
from `process_config()` (`malloc`, `data`) and is validated with `trains=False`, so that its
config carries no training keys it would ignore. Types are enforced by `ConfigDict` itself
(an override of the wrong type fails while flags are parsed); `validate` checks values,
before anything is compiled, and raises `ValueError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from rnn_jax import allocator
from rnn_jax.predicates import is_finite_number, is_int


class ConfigError(ValueError):
    """A config value that cannot work with the data or the run directory it meets (found after
    the per-key rules, e.g. when a task loads its corpus), or a variant the config file does not
    have; the command line reports it in one line with exit status 2, like a rule violation."""


# Keys a resumed run may change: how long it runs and how often it logs, evaluates and saves.
# Anything else (model, data, optimiser, seeds, batch size) changes what the checkpoints hold
# or mean, so resuming with it changed is refused (`check_resumable`).
RESUMABLE_CHANGES = (
    "malloc",
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.max_to_keep",
    "train.patience",
    # Only the state's shardings (orbax restores onto the new ones; `restore_model` ignores it).
    "train.shard_params",
)

# Key prefixes that only select what a run does, never what one run computes: a grid
# experiment's `grid.*` axes pick its points (each point's name carries its own values).
# Resuming may change them, and `experiments.grid` leaves them out of a point's record.
SELECTION_PREFIXES = ("grid.",)

# The largest finite float32 (a learning rate above it is inf in the float32 update), the
# smallest positive one (a subnormal: an eps below it is 0 there) and the largest below 1.
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.401298464324817e-45
_FLOAT32_BELOW_ONE = 1 - 2**-24

# The training loop's step counter is int32 on the device (so are optax's update counts): a
# longer run would wrap it, and a huge value failed only after the run directory was written.
_STEP_MAX = 2**31 - 1

# jax.random.PRNGKey keeps a seed's low 32 bits (without jax_enable_x64): seed 2**32 is seed 0.
_SEED_MAX = 2**32 - 1

# A rule checks one value and returns a description of what is allowed when it is not.
Rule = Callable[[Any], str | None]
Rules = Mapping[str, Rule]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
DECAY_PARAMS = ("all", "matrices")  # optimizer.decay_params: see rnn_jax.train.optim
SCHEDULES = ("constant", "step_decay", "cosine", "plateau")
NONFINITE_POLICIES = ("stop", "skip")


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


# ----------------------------------------------------------------------------------------------
# Rules: each returns None when the value is allowed, else a description of what is.


def positive(value: Any) -> str | None:
    return None if is_finite_number(value) and value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if is_finite_number(value) and value >= 0 else "a number >= 0"


def positive_or_none(value: Any) -> str | None:
    ok = value is None or (is_finite_number(value) and value > 0)
    return None if ok else "None or a number > 0"


def number_or_none(value: Any) -> str | None:
    """None or any finite number (a bias or offset: negative and 0 are allowed, NaN/inf not)."""
    return None if value is None or is_finite_number(value) else "None or a finite number"


def probability(value: Any) -> str | None:
    """A dropout-style rate: in [0, 1)."""
    return None if is_finite_number(value) and 0 <= value < 1 else "a number in [0, 1)"


def open_fraction(value: Any) -> str | None:
    """A factor strictly between 0 and 1 (reduce-on-plateau's `factor`)."""
    return None if is_finite_number(value) and 0 < value < 1 else "a number in (0, 1)"


def positive_fraction(value: Any) -> str | None:
    """In (0, 1] (reduce-on-plateau's relative tolerance, a step decay's rate)."""
    return None if is_finite_number(value) and 0 < value <= 1 else "a number in (0, 1]"


def positive_float32(value: Any) -> str | None:
    """> 0 and finite in float32: 1e300 passes `positive` but is inf on the device, and 1e-46 is
    0 there (a learning rate that trains nothing; an Adam eps giving 0/0 = NaN updates)."""
    ok = is_finite_number(value) and _FLOAT32_TINY <= value <= _FLOAT32_MAX
    allowed = f"[{_FLOAT32_TINY:.4g}, {_FLOAT32_MAX:.4g}]"
    return None if ok else f"a number in {allowed} (> 0 and finite in float32)"


def positive_float32_or_none(value: Any) -> str | None:
    """None, or `positive_float32`: a clipping threshold of 1e-50 is 0 on the device, where
    clipping by it zeroes every update (the run trains nothing, silently)."""
    allowed = None if value is None else positive_float32(value)
    return None if allowed is None else f"None or {allowed}"


def moment_decay(value: Any) -> str | None:
    """An optimiser's moment decay (Adam's b1, b2; momentum): in [0, 1) and below 1 in float32.
    0.99999999 is 1.0 there: Adam's bias correction `1 - b2**t` is 0 and its updates NaN."""
    ok = is_finite_number(value) and 0 <= value <= _FLOAT32_BELOW_ONE
    return None if ok else "a number in [0, 1 - 2**-24] (below 1 in float32)"


def boolean(value: Any) -> str | None:
    """A switch: True or False (a `--config.k=None` on the command line is neither)."""
    return None if isinstance(value, bool) else "True or False"


def metric_name(value: Any) -> str | None:
    """A metric's name; which names a task's evaluation gives is checked before training."""
    ok = isinstance(value, str) and value
    return None if ok else "the name of an evaluation metric, e.g. 'valid_loss'"


def one_of(*allowed: Any) -> Rule:
    return lambda value: None if value in allowed else f"one of {', '.join(map(repr, allowed))}"


def in_range(low: float, high: float) -> Rule:
    return lambda value: (
        None if is_finite_number(value) and low <= value <= high else f"a number in [{low}, {high}]"
    )


def multiple_of(k: int) -> Rule:
    return lambda value: (
        None if is_int(value) and value > 0 and value % k == 0 else f"a multiple of {k}"
    )


def int_at_least(low: int) -> Rule:
    """An int (not a bool) >= `low`: counts and lengths, where 2.5 steps is a typo."""
    return lambda value: None if is_int(value) and value >= low else f"an integer >= {low}"


def step_count(value: Any) -> str | None:
    """`train.num_steps`: an int in [1, 2**31 - 1], what the device's int32 step counter holds."""
    ok = is_int(value) and 1 <= value <= _STEP_MAX
    return None if ok else f"an integer in [1, {_STEP_MAX}] (the step counter is int32)"


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

    Two schedules that would not decay as their keys say: a warm-up ending after a step
    decay's first decayed update (the ramp rises to `learning_rate`, then the rate drops at
    once to the decays already due, e.g. 0.96 -> 0.25 for lr 1, rate 0.5 every 10 from 0
    with a 25-step warm-up), and a cosine `end_value` above `learning_rate` (the "decay"
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
    if sched.name == "step_decay" and sched.warmup_steps > first_decay:
        problems.append(
            f"schedule.warmup_steps={sched.warmup_steps!r} with "
            f"schedule.decay_begin_step={sched.decay_begin_step!r} and "
            f"schedule.decay_every_steps={sched.decay_every_steps!r}: the warm-up must end by "
            f"the first decayed update, {first_decay} (the ramp would reach "
            "optimizer.learning_rate and the rate then drop at once to the decays already due)"
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


def lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
    """The value (or section) at the dotted key `dotted` of `config` (`"train.num_steps"`).

    Raises:
      KeyError: `dotted`, when `config` has no such field.
    """
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train.num_steps": 100, ...}` from nested mappings (a config's JSON form)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`config` as the flat `{"train.num_steps": 100, ...}` that a run's `config.json` reads as
    (`flatten` of its JSON form): what stored and planned configs are compared by."""
    return flatten(json.loads(config.to_json_best_effort()))


# Keys added to the base config after runs may have been written with it, each with the
# value under which the code behaves as it did before the key existed: a stored config that
# lacks the key was written by that behaviour, so it compares as having this value (a run
# directory or a grid point from before the key neither refuses to resume nor reruns). A new
# key goes here only with the value that reproduces the older code exactly.
ADDED_KEYS: dict[str, Any] = {
    "optimizer.decay_params": "all",  # session 22; before it every parameter decayed
}


def changed_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The sorted keys whose values differ between two flattened configs: `saved` (read back
    from a run) and `new`. Absent counts as a difference, except that a key of `ADDED_KEYS`
    absent from `saved` reads as its value there when `new` has it."""
    saved = {**{k: v for k, v in ADDED_KEYS.items() if k in new}, **saved}
    return sorted(key for key in set(saved) | set(new) if saved.get(key) != new.get(key))


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`'key: <saved> then, <new> now'` for every key of `changed_keys(saved, new)`: a finished
    run's recorded config against the one planned for it now (`launch.sweep`,
    `experiments.reproduce`)."""
    return [
        f"{key}: {saved.get(key, '<absent>')!r} then, {new.get(key, '<absent>')!r} now"
        for key in changed_keys(saved, new)
    ]


def run_changes(saved: dict, new: dict, saved_path: pathlib.Path) -> list[str]:
    """`'key: stored in saved_path, now new'` for every key of two flat configs (`flatten`)
    that differs outside `RESUMABLE_CHANGES` and `SELECTION_PREFIXES`: the changes that make
    a run directory's checkpoints another run's (`check_resumable`, `restore_model`)."""
    return [
        f"{key}: {saved.get(key, '<absent>')!r} in {saved_path}, now {new.get(key, '<absent>')!r}"
        for key in changed_keys(saved, new)
        if key not in RESUMABLE_CHANGES and not key.startswith(SELECTION_PREFIXES)
    ]


def read_json_object(path: str | pathlib.Path) -> dict[str, Any]:
    """The JSON object in the file at `path` (a run's `config.json`).

    Raises:
      OSError: when the file cannot be read.
      ValueError: when it is not JSON, or JSON that is not an object (`null`, a list: it
        failed later as an AttributeError traceback from `.items()`).
    """
    value = json.loads(pathlib.Path(path).read_text())
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    return value


def checkpointed_config(workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """The flat config (`flatten`) that `workdir`'s checkpoints were written with: its
    `config.json`, or None when the directory has no complete checkpoint or no config.json
    (nothing to resume). Orbax writes a checkpoint to `<step>.orbax-checkpoint-tmp-<time>`
    and renames it to `<step>` when complete: a run killed during its first save left only
    the temporary one, which a resumed run ignores (it starts from step 0).

    Raises:
      ConfigError: when that config.json cannot be read.
    """
    workdir = pathlib.Path(workdir)
    saved_path = workdir / "config.json"
    checkpoints = workdir / "checkpoints"
    complete = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    if not (complete and saved_path.is_file()):
        return None
    try:
        return flatten(read_json_object(saved_path))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{saved_path}: cannot read the config this run directory's checkpoints were "
            f"written with ({error}); use a new --workdir"
        ) from None


def check_resumable(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run directory whose checkpoints were written under another config.

    A run resumes from `workdir/checkpoints` when it exists; the config it was written with is
    `workdir/config.json`. Keys outside `RESUMABLE_CHANGES` and `SELECTION_PREFIXES` must be
    unchanged: a different model fails in orbax with a shape error only after `config.json`
    has been overwritten (so the directory no longer says what its checkpoints are), and a
    different optimiser, data or seed would resume silently into a run that is neither.
    Nothing is checked for a directory without a complete checkpoint (`checkpointed_config`).

    Raises:
      ConfigError: naming every changed key with its stored and new value.
    """
    saved = checkpointed_config(workdir)
    if saved is None:
        return
    saved_path = pathlib.Path(workdir) / "config.json"
    new = flat_config(config)
    changed = run_changes(saved, new, saved_path)
    if saved.get("schedule.name") == "cosine" and "train.num_steps" in changed_keys(saved, new):
        # the cosine schedule's length is train.num_steps: the rate would jump at the resume
        changed.append(
            f"train.num_steps: {saved['train.num_steps']!r} in {saved_path}, now "
            f"{new.get('train.num_steps')!r} (schedule.name='cosine' decays over "
            "train.num_steps, so the learning rate would jump at the resumed step)"
        )
    if changed:
        raise ConfigError(
            f"--workdir={workdir} holds checkpoints written with another config; resuming "
            "would mix two runs. Changed keys (only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume):\n  "
            + "\n  ".join(changed)
            + "\nUse a new --workdir, or restore these values to resume."
        )
