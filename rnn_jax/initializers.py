"""Weight and bias initialisers for recurrent cells, chosen by name.

A weight initialiser is `init(key, shape, dtype) -> array` with `shape = (..., fan_in, fan_out)`:
the last two axes are one gate block (`[input_size, hidden_size]` or `[hidden_size,
hidden_size]`), leading axes index independent blocks. Cells draw `[num_gates, fan_in, H]` and
lay the blocks side by side (`gate_blocks`), so that, e.g., an orthogonal recurrent init is
orthogonal per gate (Saxe et al. 2013 analyse one square linear map, not four stacked ones).
One call for all gates, not one per gate: each random draw costs ~0.5 s of XLA compile on CPU.
A callable from elsewhere (`jax.nn.initializers`, ...) reads leading axes as a receptive
field, so `gate_blocks` calls it once per `[fan_in, H]` block instead.

Names (`get_initializer(name, **options)`):

- `orthogonal(scale=1.0)`: a (semi-)orthogonal matrix times `scale` (Saxe et al. 2013).
- `normal(scale=0.01)`: N(0, scale^2).
- `uniform(scale=None)`: U(-scale, scale); `None` gives 1/sqrt(fan_out) = 1/sqrt(hidden_size),
  PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU` default.
- `glorot_uniform(scale=1.0)`, `glorot_normal(scale=1.0)`: variance 2/(fan_in+fan_out)
  (Glorot & Bengio 2010).
- `lecun_normal(scale=1.0)`: N(0, scale^2/fan_in), a plain normal (Flax's default kernel init
  has the same variance but draws from a truncated normal).
- `identity(scale=1.0)`: scale * I, for ReLU RNNs (IRNN, Le et al. 2015); square blocks only.
- `zeros()`.

Every `scale` must be a finite number > 0 (`uniform` also takes None); anything else raises
ValueError (U(-s, s) with s < 0 used to give a constant matrix, and NaN a NaN one).

Bias helpers: `chrono_bias` (Tallec & Ollivier 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnn_jax import linalg
from rnn_jax.predicates import is_finite_number

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def _flat(
    sample: Callable, key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype, *args: float
) -> jax.Array:
    """`sample(key, shape)` drawn flat and reshaped: XLA:CPU compiles a 1-D threefry draw ~5x
    faster than a 3-D one (0.3 s against 1.4 s measured), and init compiles once per shape.

    Drawn in float32, or in `dtype` where that is wider (float64 under `jax_enable_x64`: a
    float64 orthogonal matrix built from float32 draws was orthogonal only to ~4e-7); bfloat16
    and float16 weights are drawn in float32 and rounded once by the caller."""
    draw_dtype = jnp.promote_types(jnp.float32, dtype)
    return sample(key, (math.prod(shape),), draw_dtype, *args).reshape(shape)


def _check_scale(initializer: str, scale: float) -> None:
    """Raises ValueError unless `scale` is a finite number > 0."""
    if not (is_finite_number(scale) and scale > 0):
        raise ValueError(
            f"initialiser {initializer!r}: scale={scale!r} must be a finite number > 0"
        )


def orthogonal(scale: float = 1.0) -> Initializer:
    """(Semi-)orthogonal matrix from the QR decomposition of a Gaussian (Saxe et al. 2013)."""
    _check_scale("orthogonal", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        *batch, rows, cols = shape
        big, small = max(rows, cols), min(rows, cols)
        a = _flat(jax.random.normal, key, (*batch, big, small), dtype)
        q, r = linalg.qr(a)  # one matrix per LAPACK call on CPU: rnn_jax/linalg.py
        # Sign fix so that q is Haar-distributed rather than biased by QR's sign convention.
        q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
        q = q if rows >= cols else jnp.swapaxes(q, -1, -2)
        return (scale * q).astype(dtype)

    return init


def normal(scale: float = 0.01) -> Initializer:
    """N(0, scale^2) entries."""
    _check_scale("normal", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return (scale * _flat(jax.random.normal, key, shape, dtype)).astype(dtype)

    return init


def uniform(scale: float | None = None) -> Initializer:
    """U(-scale, scale) entries; `scale=None` -> 1/sqrt(fan_out) (PyTorch's RNN default)."""
    if scale is not None:
        _check_scale("uniform", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        bound = 1.0 / math.sqrt(shape[-1]) if scale is None else scale
        return _flat(jax.random.uniform, key, shape, dtype, -bound, bound).astype(dtype)

    return init


def glorot_uniform(scale: float = 1.0) -> Initializer:
    """U(-a, a) with a = scale * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    _check_scale("glorot_uniform", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        bound = scale * math.sqrt(6.0 / (shape[-2] + shape[-1]))
        return _flat(jax.random.uniform, key, shape, dtype, -bound, bound).astype(dtype)

    return init


def glorot_normal(scale: float = 1.0) -> Initializer:
    """N(0, scale^2 * 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    _check_scale("glorot_normal", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        std = scale * math.sqrt(2.0 / (shape[-2] + shape[-1]))
        return (std * _flat(jax.random.normal, key, shape, dtype)).astype(dtype)

    return init


def lecun_normal(scale: float = 1.0) -> Initializer:
    """N(0, scale^2 / fan_in) (LeCun et al. 1998): a plain normal, where Flax's default
    kernel init (`lecun_normal`) draws the same variance from a truncated normal."""
    _check_scale("lecun_normal", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        std = scale / math.sqrt(shape[-2])
        return (std * _flat(jax.random.normal, key, shape, dtype)).astype(dtype)

    return init


def identity(scale: float = 1.0) -> Initializer:
    """scale * I for square blocks: the IRNN recurrent init (Le et al. 2015)."""
    _check_scale("identity", scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        del key
        if len(shape) < 2 or shape[-2] != shape[-1]:
            raise ValueError(
                f"identity initialiser needs a square block, got shape={shape}; use it for "
                "recurrent weights (recurrent_init='identity'), not input weights"
            )
        # Scaled in float32 or wider `dtype` (as `_flat` draws): a float32 eye made a float64
        # identity(0.9) hold 0.8999999761581421.
        eye = jnp.eye(shape[-1], dtype=jnp.promote_types(jnp.float32, dtype))
        return (scale * jnp.broadcast_to(eye, shape)).astype(dtype)

    return init


def zeros() -> Initializer:
    """All zeros."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        del key
        return jnp.zeros(shape, dtype)

    return init


INITIALIZERS: dict[str, Callable[..., Initializer]] = {
    "orthogonal": orthogonal,
    "normal": normal,
    "uniform": uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "lecun_normal": lecun_normal,
    "identity": identity,
    "zeros": zeros,
}
INITIALIZER_NAMES = tuple(INITIALIZERS)


def get_initializer(name: str | Initializer, **options: float) -> Initializer:
    """The initialiser called `name` (see the module docstring), built with `options`.

    A callable is returned unchanged (options must then be empty), so configs may pass either.
    """
    if callable(name):
        if options:
            raise ValueError(f"options {options} given with a callable initialiser {name!r}")
        return name
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initialiser name={name!r}; allowed: {', '.join(INITIALIZERS)}")
    try:
        return INITIALIZERS[name](**options)
    except TypeError as err:
        raise ValueError(f"bad options {options} for initialiser {name!r}: {err}") from None


def chrono_bias(
    key: jax.Array, hidden_size: int, max_length: float, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """Chrono initialisation (Tallec & Ollivier 2018): b ~ log(U[1, max_length - 1]), `[hidden]`,
    drawn in `dtype` (a float type; float32 draws differ from float64 ones under one key).

    Used for the bias of the gate that *keeps* the old state (LSTM forget gate, GRU update
    gate z in h' = (1-z) n + z h); the LSTM input gate gets -b. The characteristic forgetting
    times of the units are then spread over [1, max_length - 1] steps.
    """
    # NaN and inf pass a plain `<= 2` test and give NaN / ±inf biases.
    if not (is_finite_number(max_length) and max_length > 2):
        raise ValueError(
            f"chrono_max_length={max_length} must be > 2 and finite (the longest dependency)"
        )
    return jnp.log(jax.random.uniform(key, (hidden_size,), dtype, 1.0, max_length - 1.0))


def gate_blocks(
    init: Initializer,
    key: jax.Array,
    fan_in: int,
    hidden_size: int,
    num_gates: int,
    dtype: jnp.dtype,
) -> jax.Array:
    """`[fan_in, num_gates * hidden_size]`: `init` applied per `[fan_in, hidden_size]` block.

    This module's initialisers take the `[num_gates, fan_in, hidden_size]` shape in one call.
    A callable from elsewhere (`jax.nn.initializers`, `flax.nnx.initializers`) is called once
    per block with the 2-D shape, in a sequential `lax.map` (one QR per call, as
    rnn_jax.linalg needs on CPU): given the 3-D shape, those fold the leading axis into their
    fans (`glorot_uniform` drew a G times smaller variance) or orthogonalise the stacked
    `[G * fan_in, hidden_size]` matrix (each block's columns then had norm ~1/sqrt(G))."""
    shape = (num_gates, fan_in, hidden_size)
    if getattr(init, "__module__", None) == __name__:
        blocks = init(key, shape, dtype)
    else:
        keys = jax.random.split(key, num_gates)
        blocks = jax.lax.map(lambda k: init(k, shape[1:], dtype), keys)
    return jnp.transpose(blocks, (1, 0, 2)).reshape(fan_in, num_gates * hidden_size)
