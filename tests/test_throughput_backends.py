"""The throughput benchmark compares like with like.

Every backend of a group must compute the same function: one layer (or stack, or
bidirectional layer) over the same batch-first inputs, forward or the gradients of
sum(outputs) w.r.t. parameters and inputs. Each workload's own weights are copied into a
float64 PyTorch module, the independent reference. The FLOPs behind GF/s and "% of peak"
are checked against the dot products the computation actually runs (counted in its jaxpr)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from experiments import throughput_peers
from rnn_jax import cells, layers, scan

SHAPE = (3, 5, 4, 6)  # batch, time, input, hidden


FLAX_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}  # torch's gate order


def _rnn_jax_layer(params: dict, suffix: str) -> dict[str, np.ndarray]:
    """rnn_jax `W [in, G]` -> torch `weight [G, in]` (gate orders are the same)."""
    return {
        f"weight_ih_{suffix}": np.asarray(params["W_ih"]).T,
        f"weight_hh_{suffix}": np.asarray(params["W_hh"]).T,
        f"bias_ih_{suffix}": np.asarray(params["b_ih"]),
        f"bias_hh_{suffix}": np.asarray(params["b_hh"]),
    }


def _flax_layer(cell: str, params: dict, suffix: str) -> dict[str, np.ndarray]:
    """A Flax cell's params in torch's layout; a bias Flax does not have is NaN (for grads:
    not compared; for weights: replaced by 0 before loading)."""
    c = params["cell"]
    hidden = SHAPE[3]

    def bias(name: str) -> np.ndarray:
        return np.asarray(c[name]["bias"]) if "bias" in c[name] else np.full(hidden, np.nan)

    if cell == "elman":  # SimpleCell: i (kernel, bias), h (kernel)
        names = {"ih": ["i"], "hh": ["h"]}
    else:
        names = {k: [k[0] + g for g in FLAX_GATES[cell]] for k in ("ih", "hh")}
    out = {}
    for k, parts in names.items():
        out[f"weight_{k}_{suffix}"] = np.concatenate([c[n]["kernel"] for n in parts], 1).T
        out[f"bias_{k}_{suffix}"] = np.concatenate([bias(n) for n in parts])
    return out


def _torch_layout(backend: str, cell: str, params) -> dict[str, np.ndarray]:
    """A JAX workload's params (or their gradients) as a torch state dict."""
    if backend == "flax":
        p = params["params"]
        if "forward_rnn" in p:
            return _flax_layer(cell, p["forward_rnn"], "l0") | _flax_layer(
                cell, p["backward_rnn"], "l0_reverse"
            )
        if "layers_0" in p:
            return {
                k: v
                for i in range(len(p))
                for k, v in _flax_layer(cell, p[f"layers_{i}"], f"l{i}").items()
            }
        return _flax_layer(cell, p, "l0")
    if isinstance(params, tuple):  # bidirectional: (forward, backward)
        return _rnn_jax_layer(params[0], "l0") | _rnn_jax_layer(params[1], "l0_reverse")
    if isinstance(params, list):  # a stack
        return {k: v for i, q in enumerate(params) for k, v in _rnn_jax_layer(q, f"l{i}").items()}
    return _rnn_jax_layer(params, "l0")


def _torch_reference(cell, state, xs, mode, num_layers=1, bidirectional=False):
    """(outputs, param grads, input grads) of a float64 torch module with `state`."""
    import torch

    batch, time_, input_size, hidden = SHAPE
    module = getattr(torch.nn, throughput_peers.TORCH_MODULES[cell])(
        input_size, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    ).double()
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            tensor.copy_(torch.tensor(np.nan_to_num(state[name].astype(np.float64))))
    x = torch.tensor(np.asarray(xs, np.float64), requires_grad=True)
    out = module(x)[0]
    out.sum().backward()
    grads = {name: t.grad.numpy() for name, t in module.named_parameters()}
    return out.detach().numpy(), grads, x.grad.numpy()


def _torch_peer_state(cell, num_layers=1):
    """The weights `throughput_peers._torch_workload` draws (torch.manual_seed(0))."""
    import torch

    torch.manual_seed(0)
    module = getattr(torch.nn, throughput_peers.TORCH_MODULES[cell])(
        SHAPE[2], SHAPE[3], num_layers=num_layers, batch_first=True
    )
    return {k: v.detach().numpy() for k, v in module.named_parameters()}


def _check(workload, backend, cell, mode, forward_flops, **module):
    """`workload` against the float64 torch reference; its FLOPs are `forward_flops` (3x
    forward+backward) and its tokens batch x time."""
    factor = 3 if mode == "fwd_bwd" else 1
    assert (workload.flops, workload.tokens) == (factor * forward_flops, SHAPE[0] * SHAPE[1])
    if backend == "torch":
        state = _torch_peer_state(cell, module.get("num_layers", 1))
        xs = jax.random.normal(jax.random.key(1), SHAPE[:3], jnp.float32)
    else:
        params, xs = workload.inputs
        state = _torch_layout(backend, cell, params)
    assert np.shape(xs) == SHAPE[:3]  # batch-first, the same inputs for every member
    ys, d_params, d_xs = _torch_reference(cell, state, xs, mode, **module)
    got = workload.run()
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if mode == "fwd":
        got = got.detach().numpy() if backend == "torch" else np.asarray(got)
        np.testing.assert_allclose(got, ys, **tol)
        return
    if backend == "torch":  # torch's run returns the input gradient and fills `.grad`
        np.testing.assert_allclose(got.numpy(), d_xs, **tol)
        named = workload.inputs[0]
        assert all(v.grad is not None for v in named.values()), "no parameter gradients"
        got_state = {k: v.grad.numpy() for k, v in named.items()}
    else:
        got_params, got_xs = got
        np.testing.assert_allclose(np.asarray(got_xs), d_xs, **tol)
        got_state = _torch_layout(backend, cell, got_params)
    assert set(got_state) == set(d_params)
    for name, value in got_state.items():
        # A bias torch has and the Flax cell does not: NaN in the weights' layout (the
        # gradients' own NaNs, e.g. of a broken backward pass, are compared).
        known = ~np.isnan(state[name])
        np.testing.assert_allclose(value[known], d_params[name][known], **tol, err_msg=name)
        assert known.all() or name.startswith("bias")  # every weight is compared


@pytest.mark.parametrize("mode", throughput_peers.MODES)
@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_every_backend_computes_the_same_layer(cell, mode):
    """rnn_jax (default, reference, remat), Flax nn.RNN and torch, each with its own weights,
    against a float64 torch module loaded with those weights: same outputs forward, same
    gradients of sum(outputs) w.r.t. params and inputs forward+backward."""
    pytest.importorskip("torch")
    backends = ["rnn_jax", "rnn_jax_reference", "rnn_jax_remat", "flax", "torch"]
    built = 0
    for backend in backends:
        workload = throughput_peers.build(backend, cell, SHAPE, mode)
        if workload is None:
            assert backend == "rnn_jax_remat" and mode == "fwd"
            continue
        _check(workload, backend, cell, mode, throughput_peers.rnn_flops(cell, *SHAPE))
        built += 1
    assert built == len(backends) - (mode == "fwd")


@pytest.mark.parametrize("mode", throughput_peers.MODES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stacked_and_bidirectional_backends_compute_the_same_layers(cell, mode):
    pytest.importorskip("torch")
    stack = throughput_peers.stacked_flops(cell, SHAPE, 2)
    for backend in throughput_peers.STACKED_BACKENDS:
        workload = throughput_peers.build_stacked(backend, cell, SHAPE, 2, mode)
        _check(workload, backend, cell, mode, stack, num_layers=2)
    two_ways = 2 * throughput_peers.rnn_flops(cell, *SHAPE)
    for backend in throughput_peers.BIDIRECTIONAL_BACKENDS:
        workload = throughput_peers.build_bidirectional(backend, cell, SHAPE, mode)
        _check(workload, backend, cell, mode, two_ways, bidirectional=True)


def test_rnn_jax_backends_call_their_own_implementation(monkeypatch):
    """The reference and remat members compute the default's numbers, so only the call
    tells them apart: `rnn_jax_reference` is `implementation="reference"`, `rnn_jax_remat`
    `remat=True` (traced, not compiled: a stand-in `unroll` records its options)."""
    calls = []

    def unroll(cell, params, xs, **options):
        calls.append(options)
        return (xs,)

    monkeypatch.setattr(throughput_peers, "scan", type("Scan", (), {"unroll": unroll}))
    monkeypatch.setattr(throughput_peers, "_compiled_workload", lambda fn, p, xs, *_: fn(p, xs))
    for backend in ("rnn_jax", "rnn_jax_reference", "rnn_jax_remat"):
        throughput_peers.build(backend, "gru", SHAPE, "fwd_bwd")
    assert calls == [
        {"implementation": "auto", "remat": False},
        {"implementation": "reference", "remat": False},
        {"implementation": "auto", "remat": True},
    ]


def _dot_flops(jaxpr, times: int = 1) -> int:
    """2 x M x N x K of every dot_general, looking into sub-jaxprs (a scan's body counts
    `length` times)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = math.prod(lhs[d] for d in contracting)
            total += times * 2 * math.prod(eqn.outvars[0].aval.shape) * k
        inner = times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else [value]:
                if isinstance(sub, jax_core.ClosedJaxpr):
                    total += _dot_flops(sub.jaxpr, inner)
                elif isinstance(sub, jax_core.Jaxpr):
                    total += _dot_flops(sub, inner)
    return total


def _counted(forward, *args) -> tuple[int, int]:
    """Dot FLOPs of `forward` and of the gradients of sum(outputs) w.r.t. all its args."""
    grad = jax.grad(lambda *a: jnp.sum(forward(*a)), argnums=tuple(range(len(args))))
    return (
        _dot_flops(jax.make_jaxpr(forward)(*args).jaxpr),
        _dot_flops(jax.make_jaxpr(grad)(*args).jaxpr),
    )


@pytest.mark.parametrize("spec", ["lstm", "gru", "elman", "min_gru:sequential"])
def test_flops_are_the_matmuls_the_layers_run(spec):
    """rnn_flops (2BTG(I+H); minGRU 2BTGI), forward+backward 3x, stacked and bidirectional
    FLOPs against the dot products of the reference scan's jaxpr and its autodiff."""
    name, _, method = spec.partition(":")
    cell = cells.get_cell(name, **({"method": method} if method else {}))
    batch, time_, input_size, hidden = SHAPE
    xs = jnp.ones(SHAPE[:3])
    params = cell.init(jax.random.key(0), input_size, hidden)

    def layer(p, x):
        return scan.unroll(cell, p, x, implementation="reference")[0]

    forward, both = _counted(layer, params, xs)
    assert throughput_peers.rnn_flops(spec, *SHAPE) == forward
    assert throughput_peers.build("rnn_jax", spec, SHAPE, "fwd_bwd").flops == both == 3 * forward
    stack = layers.init_stack(jax.random.key(0), cell, input_size, hidden, 3)
    forward, _ = _counted(lambda p, x: layers.apply_stack(cell, p, x)[0], stack, xs)
    assert throughput_peers.stacked_flops(spec, SHAPE, 3) == forward
    if name != "min_gru":
        pair = (params, params)

        def two_way(p, x):
            ys_fw = scan.unroll(cell, p[0], x, implementation="reference")[0]
            return ys_fw + scan.unroll(cell, p[1], x, reverse=True, implementation="reference")[0]

        forward, _ = _counted(two_way, pair, xs)
        assert throughput_peers.build_bidirectional("rnn_jax", spec, SHAPE, "fwd").flops == forward


def test_transformer_flops_are_the_matmuls_the_block_runs():
    from flax import nnx

    from rnn_jax.models.transformer_blocks import Block

    shape = batch, time_, input_size, hidden = (2, 8, 64, 32)
    workload = throughput_peers.transformer_block(shape, "fwd")
    d = throughput_peers.transformer_width(input_size, hidden)
    graphdef, state = nnx.split(Block(d, d // 32, 4 * d, 0.0, False, rngs=nnx.Rngs(0)))
    mask = jnp.tril(jnp.ones((time_, time_), bool))[None, None]
    forward, both = _counted(
        lambda s, x: nnx.merge(graphdef, s)(x, mask), state, jnp.ones((batch, time_, d))
    )
    assert workload.flops == forward
    assert throughput_peers.transformer_block(shape, "fwd_bwd").flops == both == 3 * forward
    # d_model: 12 d^2 ~ the LSTM's 4H(I+H) weights (sqrt(4*512*1024/12) = 418), a multiple
    # of the head size, at least one head.
    assert (d, throughput_peers.transformer_width(512, 512)) == (32, 416)
    assert throughput_peers.transformer_width(1, 1) == 32
    assert throughput_peers.matmul_peak(8).flops == 2 * 8**3
