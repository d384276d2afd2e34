"""The training runtime every experiment uses: an experiment is its config, model and measure.

Contract (tests, sweeps and users rely on it)
---------------------------------------------
An experiment is two files::

    experiments/configs/<name>.py   get_config(variant) -> ConfigDict  (smoke / quick / full)
                                    get_sweep(variant) -> list[dict]    (override dicts)
    experiments/<name>.py           class <Name>Task(Task); RULES; cli.main(<Name>Task, RULES)

and runs as::

    python -m experiments.<name> --workdir=W --config=experiments/configs/<name>.py:<variant> \\
        [--config.train.num_steps=200 ...]

- The config file starts from `config.base_config()` (keys `seed`, `num_seeds`, `train.*`,
  `optimizer.*`, `schedule.*`) and adds `model.*` (with `model.hidden_size`) and `data.*`;
  `config.select_variant(name, variant, {...})` gives the clear error for an unknown variant.
  An experiment that trains nothing (smt_baseline, the throughput benchmark) starts from
  `config.process_config()` instead, sets `TRAINS = False` in its module and passes it on
  (`cli.main(..., trains=False)`), so no training key is required of it.
- Before anything is compiled, `config_checks.validate(config, RULES)` checks the runtime's
  rules and the experiment's (`{"model.dropout": rules.probability, ...}`); a bad value stops
  the run with a message naming key, value and what is allowed (exit status 2). Configs are
  locked, so an unknown key or a wrong type fails while flags are parsed.
- `W/config.json` is written at start; `W/metrics.jsonl` gets one JSON object per line, each
  line appended by one `write` (a crash can tear only the last line: a resumed run truncates
  it and `metrics.read_metrics` skips it), per logged step (`{"step": s, "train_loss": ...,
  "grad_norm": ..., "learning_rate": ...}` and
  `{"step": s, "valid_loss": ...}` after each evaluation); `W/tensorboard/` the same scalars;
  `W/results.json` is written once, atomically, at the end: `{"final": {"step", "best_step",
  "train_loss", "<split>_<metric>", ...}, "timing": {...}, "provenance": {...}}`. With
  `num_seeds > 1`, `final` holds means over replicas, `<name>_std` and `per_seed` lists.
- Periodic checkpoints in `W/checkpoints` (`train.checkpoint_every`, `train.max_to_keep`),
  the best-on-validation one in `W/best`; rerunning the same command resumes from the newest,
  bit-identically (RNG and data position are in the checkpoint). SIGTERM/SIGINT save one and
  exit. The `final_splits` are evaluated with the best-validation checkpoint.

The task (`rnn_jax.train.Task`) — the whole interface between experiment and runtime::

    init_model(rng) -> nnx.Module                # one replica; params are its nnx.Param
    init_carry(batch_size) -> pytree             # state carried across batches; () if none
    train_data() -> DataSource                   # e.g. rnn_jax.data.LMStream (state_dict())
    loss_fn(model, batch, carry, rng) -> (loss, (carry, {name: scalar}))
    eval_data(split) -> iterable of batches; eval_batch_size(split) -> int
    eval_step(model, batch, carry) -> (carry, {name: sum over batch})
    eval_metrics(sums) -> {name: float}          # e.g. loss = nll / tokens, perplexity
    eval_splits = ("valid",); final_splits = ("valid", "test"); tokens_in(batch) -> int
    artifacts() -> {filename: JSON}              # written to W at start (e.g. vocab.json)

The runtime does the rest: `jax.jit` of the steps, `jax.vmap` over `num_seeds` replicas
(seeds `seed..seed+n-1`), data parallelism over every device of every process (batch sharded,
params replicated; `rnn_jax.train.distributed`), optax optimiser/schedule/clipping/weight
decay (`rnn_jax.train.optim`), the pre-clip gradient norm, logging, evaluation, early
stopping (`train.patience`), the non-finite guard (`train.nonfinite`), checkpoints.

After (or during) a run, `restore.restore_model(config, W, task)` gives back the NNX model of
the best-validation checkpoint (one seed replica), for evaluation or generation.

Programmatic use: `cli.load_config("experiments/configs/x.py:smoke", {"train.num_steps": 5})`
then `train_and_evaluate(config, workdir, task)`. A benchmark passes its own `run` to
`cli.main(make_task, rules, run=...)` to reuse flags, config loading and validation.
"""

import importlib
from typing import Any

# Lazy exports (PEP 562): a config file imports `rnn_jax.train.config` only, and loading a
# config (a sweep's parent process, `launch.report`, flag parsing) must not pay for orbax,
# tensorboardX and the jitted loop; the heavy modules load on first use of their names.
_EXPORTS = {
    "DataSource": "rnn_jax.train.task",
    "NonFiniteError": "rnn_jax.train.nonfinite",
    "Task": "rnn_jax.train.task",
    "base_config": "rnn_jax.train.config",
    "select_variant": "rnn_jax.train.config",
    "train_and_evaluate": "rnn_jax.train.loop",
    "validate": "rnn_jax.train.config_checks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rnn_jax.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
