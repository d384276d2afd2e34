"""Optimisers, schedules, clipping and weight decay against closed-form references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax.train import config as cfg
from rnn_jax.train import config_checks, optim


def _config(**overrides):
    config = cfg.base_config()
    config.model.hidden_size = 1
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    config_checks.validate(config)
    return config


def _one_update(config, grads, params, value=0.0):
    tx = optim.build_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params, value=jnp.asarray(value))
    return updates


def _tree(rng, scale):
    k1, k2 = jax.random.split(rng)
    return {
        "a": scale * jax.random.normal(k1, (3, 4)),
        "b": {"c": scale * jax.random.normal(k2, (5,))},
    }


@pytest.mark.parametrize("scale", [0.01, 10.0, 1e4])
def test_clip_by_global_norm_keeps_the_norm_at_or_below_the_threshold(scale):
    threshold = 5.0
    config = _config(
        optimizer__name="sgd", optimizer__learning_rate=1.0, optimizer__clip_global_norm=threshold
    )
    grads = _tree(jax.random.key(0), scale)
    params = jax.tree.map(jnp.zeros_like, grads)
    updates = _one_update(config, grads, params)
    norm = float(optax.global_norm(grads))
    assert float(optax.global_norm(updates)) <= threshold * (1 + 1e-6)
    # Reference: g * min(1, c / ||g||) (Pascanu et al. 2013), sgd lr 1 -> update = -clipped.
    factor = min(1.0, threshold / norm)
    for got, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, -np.asarray(g) * factor, rtol=1e-5)


def test_clip_by_value():
    config = _config(optimizer__name="sgd", optimizer__learning_rate=1.0, optimizer__clip_value=0.5)
    grads = _tree(jax.random.key(1), 2.0)
    updates = _one_update(config, grads, jax.tree.map(jnp.zeros_like, grads))
    for got, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, -np.clip(np.asarray(g), -0.5, 0.5), rtol=1e-6)
    # Both set: by value, then by global norm (the module docstring's order). g = (3, 0.1):
    # value first gives (0.5, 0.1), norm 0.51 < 1, kept; norm first gave (0.5, 0.033).
    config = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=1.0,
        optimizer__clip_value=0.5,
        optimizer__clip_global_norm=1.0,
    )
    updates = _one_update(config, {"w": jnp.array([3.0, 0.1])}, {"w": jnp.zeros(2)})
    np.testing.assert_allclose(updates["w"], [-0.5, -0.1], rtol=1e-6)


def test_zaremba_step_decay_matches_the_tensorflow_tutorial_formula():
    steps_per_epoch, max_epoch, decay = 7, 6, 0.8
    config = _config(
        optimizer__learning_rate=1.0,
        schedule__name="step_decay",
        schedule__decay_rate=decay,
        schedule__decay_every_steps=steps_per_epoch,
        schedule__decay_begin_step=(max_epoch - 1) * steps_per_epoch,
    )
    schedule = optim.build_schedule(config)
    for count in range(0, 15 * steps_per_epoch):
        epoch = count // steps_per_epoch
        # ptb_word_lm.py: lr_decay = config.lr_decay ** max(i + 1 - config.max_epoch, 0.0)
        want = decay ** max(epoch + 1 - max_epoch, 0.0)
        assert float(schedule(count)) == pytest.approx(want, rel=1e-6), count


@pytest.mark.parametrize("accum", [1, 2])
def test_cosine_with_warmup_matches_its_formula(accum):
    """The schedule counts optimiser updates: under gradient accumulation over `accum`
    micro-batches it reaches `end_value` after num_steps / accum updates (decaying over
    num_steps left the rate half-way down the cosine at the end of the run)."""
    lr, warmup, total, end = 0.1, 10, 100, 0.001
    config = _config(
        optimizer__learning_rate=lr,
        schedule__name="cosine",
        schedule__warmup_steps=warmup,
        schedule__end_value=end,
        train__num_steps=total * accum,
        train__grad_accum_steps=accum,
    )
    schedule = optim.build_schedule(config)
    for k in range(total + 1):
        if k < warmup:
            want = lr * k / warmup
        else:
            want = end + (lr - end) * 0.5 * (
                1 + math.cos(math.pi * (k - warmup) / (total - warmup))
            )
        assert float(schedule(k)) == pytest.approx(want, rel=1e-5, abs=1e-9), k


def test_coupled_l2_and_decoupled_weight_decay_first_adam_step():
    # Adam's first step is lr * sign(direction) (m_hat = g, v_hat = g^2), so the two kinds
    # of decay give different closed forms: coupled decays inside the sign, decoupled outside.
    lr, wd = 0.1, 0.5
    params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    grads = {"w": jnp.array([0.1, 0.3, -2.0, -0.1])}
    coupled = _one_update(
        _config(
            optimizer__name="adam",
            optimizer__learning_rate=lr,
            optimizer__eps=1e-12,
            optimizer__weight_decay=wd,
        ),
        grads,
        params,
    )
    decoupled = _one_update(
        _config(
            optimizer__name="adamw",
            optimizer__learning_rate=lr,
            optimizer__eps=1e-12,
            optimizer__decoupled_weight_decay=wd,
        ),
        grads,
        params,
    )
    g, p = np.asarray(grads["w"]), np.asarray(params["w"])
    np.testing.assert_allclose(coupled["w"], -lr * np.sign(g + wd * p), atol=1e-5)
    np.testing.assert_allclose(decoupled["w"], -lr * (np.sign(g) + wd * p), atol=1e-5)


def test_decay_params_matrices_decays_only_leaves_with_two_axes_per_replica():
    """`optimizer.decay_params='matrices'` decays parameters with two or more axes only, for
    coupled L2 (SGD: u = -lr (g + wd m w)) and AdamW's decoupled decay (zero gradient: Adam's
    step is 0, u = -lr wd m w), m the mask ('all', the default, is the closed forms of the
    test above). Updated as the runtime does, vmapped over a seed axis: a bias stored
    [num_seeds, n] is still a vector."""
    decay_params = "matrices"
    lr, wd, seeds = 0.1, 0.5, 2
    params = {
        "W": jnp.arange(1.0, 1.0 + seeds * 6).reshape(seeds, 2, 3),
        "b": jnp.arange(1.0, 1.0 + seeds * 3).reshape(seeds, 3),
        "scale": jnp.full((seeds,), 2.0),
        "kernel3d": jnp.ones((seeds, 2, 2, 2)),
    }
    decays = {"W": True, "b": False, "scale": False, "kernel3d": True}
    grads = jax.tree.map(lambda p: 0.25 * jnp.ones_like(p), params)

    def update(config, grads):
        tx = optim.build_optimizer(config)
        one = lambda g, p: tx.update(g, tx.init(p), p, value=jnp.asarray(0.0))[0]  # noqa: E731
        return jax.jit(jax.vmap(one))(grads, params)

    coupled = update(
        _config(
            optimizer__name="sgd",
            optimizer__learning_rate=lr,
            optimizer__weight_decay=wd,
            optimizer__decay_params=decay_params,
        ),
        grads,
    )
    decoupled = update(
        _config(
            optimizer__name="adamw",
            optimizer__learning_rate=lr,
            optimizer__decoupled_weight_decay=wd,
            optimizer__decay_params=decay_params,
        ),
        jax.tree.map(jnp.zeros_like, grads),
    )
    for name, p in params.items():
        m = float(decays[name])
        np.testing.assert_allclose(coupled[name], -lr * (0.25 + wd * m * p), rtol=1e-6)
        np.testing.assert_allclose(decoupled[name], -lr * wd * m * p, rtol=1e-6, atol=1e-7)


def test_decay_params_is_a_config_rule():
    config = cfg.base_config()
    config.model.hidden_size = 1
    config.optimizer.decay_params = "biases"
    with pytest.raises(ValueError, match="optimizer.decay_params='biases'"):
        config_checks.validate(config)
    # The builders called on an unvalidated config (a script, a sweep) name the key too.
    config.optimizer.name = "adamw"
    with pytest.raises(ValueError, match="optimizer.decay_params='biases': must be 'all' or"):
        optim.build_optimizer(config)
    config.optimizer.name, config.optimizer.decay_params = "nadam", "all"
    with pytest.raises(ValueError, match="optimizer.name='nadam': must be one of sgd, adam,"):
        optim.build_optimizer(config)
    config.schedule.name = "linear"
    with pytest.raises(ValueError, match="schedule.name='linear': must be one of"):
        optim.build_schedule(config)
    # A state of another optimiser (no scheduled rate in it) is refused, counts named.
    with pytest.raises(ValueError, match="found 0 and 0"):
        optim.applied_learning_rates(optax.sgd(0.1).init({"w": jnp.zeros(2)}), lambda n: 0.1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_the_heavy_ball_recursion(nesterov):
    """Heavy ball: u = -lr v, v = mu v + g; Nesterov (Sutskever et al. 2013, as optax and
    PyTorch write it): u = -lr (g + mu v) with the new v."""
    lr, mu = 0.1, 0.9
    config = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=lr,
        optimizer__momentum=mu,
        optimizer__nesterov=nesterov,
    )
    tx = optim.build_optimizer(config)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    velocity = np.zeros(3)
    for k in range(4):
        g = np.array([1.0, -0.5, 0.25]) * (k + 1)
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params, value=jnp.asarray(0.0))
        velocity = mu * velocity + g
        want = -lr * (g + mu * velocity) if nesterov else -lr * velocity
        np.testing.assert_allclose(updates["w"], want, rtol=1e-6)


@pytest.mark.parametrize("name, momentum", [("rmsprop", 0.0), ("rmsprop", 0.9), ("adagrad", 0.0)])
def test_rmsprop_and_adagrad_match_their_recursions(name, momentum):
    """Tieleman & Hinton's RMSProp (nu = 0.9 nu + 0.1 g^2, optax's eps inside the root, then
    heavy-ball momentum on the scaled step) and Duchi et al.'s AdaGrad (a running sum of g^2
    from optax's 0.1). Only the sign of one step was checked: any descent method passed, SGD
    in their place included."""
    lr = 0.01
    config = _config(
        optimizer__name=name, optimizer__learning_rate=lr, optimizer__momentum=momentum
    )
    eps = config.optimizer.eps
    tx = optim.build_optimizer(config)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    second_moment = np.full(3, 0.1) if name == "adagrad" else np.zeros(3)
    velocity = np.zeros(3)
    for k in range(4):
        g = np.array([1.0, -0.5, 0.25]) * (k + 1)  # sizes that change: no steady state
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params, value=jnp.asarray(0.0))
        if name == "adagrad":
            second_moment = second_moment + g**2
        else:
            second_moment = 0.9 * second_moment + 0.1 * g**2
        step = -lr * g / np.sqrt(second_moment + eps)
        velocity = momentum * velocity + step
        np.testing.assert_allclose(updates["w"], velocity, rtol=1e-5)


def test_reduce_on_plateau_halves_the_step_after_patience_flat_values():
    config = _config(
        optimizer__name="sgd",
        optimizer__learning_rate=1.0,
        schedule__name="plateau",
        schedule__plateau_factor=0.5,
        schedule__plateau_patience=2,
    )
    tx = optim.build_optimizer(config)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    sizes = []
    for _ in range(8):
        updates, state = tx.update({"w": jnp.ones(1)}, state, params, value=jnp.asarray(1.0))
        sizes.append(float(-updates["w"][0]))
    assert sizes[0] == 1.0 and sizes == sorted(sizes, reverse=True)
    assert min(sizes) <= 0.25  # two reductions within 8 flat steps
    # The first window sets the best: the first reduced update is accumulation 1 x (patience
    # 2 + 1) - 1 = 2, the count config_checks._schedule_problems refuses runs too short for.
    assert sizes.index(0.5) == 2


def test_non_finite_gradient_is_not_applied():
    config = _config(optimizer__name="sgd", optimizer__learning_rate=1.0)
    updates = _one_update(config, {"w": jnp.array([1.0, jnp.nan])}, {"w": jnp.zeros(2)})
    np.testing.assert_array_equal(updates["w"], np.zeros(2))


def test_gradient_accumulation_applies_the_mean_of_k_micro_batch_gradients():
    config = _config(optimizer__name="sgd", optimizer__learning_rate=1.0, train__grad_accum_steps=2)
    tx = optim.build_optimizer(config)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    first, state = tx.update({"w": jnp.array([1.0, 2.0])}, state, params, value=jnp.asarray(0.0))
    np.testing.assert_array_equal(first["w"], np.zeros(2))  # nothing applied mid-accumulation
    second, _ = tx.update({"w": jnp.array([3.0, -4.0])}, state, params, value=jnp.asarray(0.0))
    np.testing.assert_allclose(second["w"], -np.array([2.0, -1.0]), rtol=1e-6)


def test_a_non_finite_micro_batch_is_dropped_not_accumulated():
    """With apply_if_finite inside MultiSteps the NaN stayed in the accumulator (reset by
    0 * NaN) and every later update was zero; now the window waits for one more micro-batch."""
    config = _config(optimizer__name="sgd", optimizer__learning_rate=1.0, train__grad_accum_steps=2)
    tx = optim.build_optimizer(config)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    out = []
    for g in ([jnp.nan, 1.0], [1.0, 2.0], [3.0, -4.0], [1.0, 1.0], [3.0, 3.0]):
        updates, state = tx.update({"w": jnp.array(g)}, state, params, value=jnp.asarray(0.0))
        out.append(np.asarray(updates["w"]))
    np.testing.assert_array_equal(np.stack(out[:2]), np.zeros((2, 2)))
    np.testing.assert_allclose(np.stack(out[2:]), [[-2.0, 1.0], [0.0, 0.0], [-2.0, -2.0]])


def test_reduce_on_plateau_with_gradient_accumulation_sees_the_window_mean_loss():
    """MultiSteps hands `value` on to reduce-on-plateau (it was dropped: TypeError, missing
    'value'), and the value is the window's mean loss: micro-batch losses (3, 1), (2, 1), ...
    are windows of mean 2, 1.5, 1.5, 1.5, so every second micro-batch emits the update of a
    k=1 run on those means (patience 1: cuts at the 3rd and 4th). It saw only each window's
    last micro-batch (1 every time: 1, 0.5, 0.25, 0.125). The NaN-gradient micro-batch (loss
    100) is dropped from its window's gradient and mean loss alike."""

    def sizes(k, steps):
        config = _config(
            optimizer__name="sgd",
            optimizer__learning_rate=1.0,
            schedule__name="plateau",
            schedule__plateau_patience=1,
            train__grad_accum_steps=k,
        )
        tx = optim.build_optimizer(config)
        params = {"w": jnp.zeros(1)}
        state = tx.init(params)
        out = []
        for g, loss in steps:
            grads = {"w": jnp.full(1, g, jnp.float32)}
            updates, state = tx.update(grads, state, params, value=jnp.asarray(loss, jnp.float32))
            out.append(float(-updates["w"][0]))
        return out

    micro = [(1, 3), (1, 1), (np.nan, 100), (1, 2), (1, 1), (1, 2), (1, 1), (1, 2), (1, 1)]
    accumulated = sizes(2, micro)
    assert [accumulated[i] for i in (1, 4, 6, 8)] == [1.0, 1.0, 0.5, 0.25]
    assert sizes(1, [(1, 2), (1, 1.5), (1, 1.5), (1, 1.5)]) == [1.0, 1.0, 0.5, 0.25]
    assert [accumulated[i] for i in (0, 2, 3, 5, 7)] == [0.0] * 5


def test_warmup_does_not_move_the_step_decays():
    """decay_begin_step / decay_every_steps count from the first update: with a 5-step
    warm-up, join_schedules used to hand the step decay `step - 5` (first decay at 25, not
    20)."""
    config = _config(
        optimizer__learning_rate=1.0,
        schedule__name="step_decay",
        schedule__decay_rate=0.5,
        schedule__decay_every_steps=10,
        schedule__decay_begin_step=10,
        schedule__warmup_steps=5,
    )
    schedule = optim.build_schedule(config)
    got = [float(schedule(step)) for step in (0, 1, 4, 5, 19, 20, 29, 30)]
    # linear warm-up from 0 over steps 0-4, then Zaremba's staircase: 1 up to step 19
    assert got == pytest.approx([0.0, 0.2, 0.8, 1.0, 1.0, 0.5, 0.5, 0.25])
