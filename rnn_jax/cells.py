"""Recurrent cells as pure functions over plain dict params: the only place the equations live.

A cell is a frozen, hashable dataclass holding static options only. Every cell is written as

    z_x = input_projection(params, x)          = x @ W_ih + b_ih     (time-parallel)
    z_h = recurrent_projection(params, carry)  = h @ W_hh + b_hh
    carry', y = pointwise(params, z_x, z_h, carry)

and `step(params, carry, x)` composes the three. Scans may compute `z_x` for all steps at once
(one 2-D matmul); faster backward passes differentiate `pointwise` with `jax.vjp`.

Shapes: `x [..., input_size]`, `h [..., hidden_size]`, weights `[in, out]` with gates fused in
PyTorch's order (`W_ih [input_size, G]`, `W_hh [hidden_size, G]`, `b_ih [G]`, `b_hh [G]`,
`G = num_gates * hidden_size`); σ is the logistic sigmoid, ⊙ the elementwise product.
The carry is `h` for Elman/GRU/minGRU cells and the tuple `(h, c)` for LSTM cells.

Initialisation (`init`): weights are drawn per `[fan_in, hidden_size]` gate block by the
initialisers named in `input_init` / `recurrent_init` (rnn_jax.initializers); biases are zero
except the gate that keeps the old state (LSTM forget gate, GRU update gate), whose `b_ih`
slice is `forget_bias` or, with `chrono_max_length=T`, chrono-initialised
(Tallec & Ollivier 2018).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from rnn_jax import initializers
from rnn_jax.predicates import check_positive, is_finite_number, is_int

Params = dict[str, jax.Array]
Carry = Any  # jax.Array `h` or tuple `(h, c)`


def _split(z: jax.Array, num: int) -> list[jax.Array]:
    return jnp.split(z, num, axis=-1)


def _layer_norm(v: jax.Array, scale: jax.Array, bias: jax.Array | None, eps: float) -> jax.Array:
    mean = jnp.mean(v, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(v - mean), axis=-1, keepdims=True)
    out = (v - mean) * jax.lax.rsqrt(var + eps) * scale
    return out if bias is None else out + bias


def _scalar_item(value: Any) -> Any:
    """A 0-d NumPy/JAX array as its Python scalar (hashable); anything else unchanged."""
    return value.item() if hasattr(value, "item") and jnp.ndim(value) == 0 else value


def _build_initializer(
    name: str | initializers.Initializer, scale: float | None
) -> initializers.Initializer:
    return initializers.get_initializer(name, **({} if scale is None else {"scale": scale}))


# One compiled program per (cell, sizes, init options): run eagerly, the dozens of small ops
# of an init (a QR per gate block, ...) each compile separately for every new shape.
_init_params = jax.jit(
    lambda cell, key, *static: cell._init_params(key, *static), static_argnums=(0, *range(2, 11))
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Shared machinery: parameter init, projections, `step`. Subclasses give the equations.

    Class attributes: `num_gates` (G = num_gates * hidden_size), `keep_gate` (index of the gate
    whose bias `forget_bias`/chrono set, or None), `default_forget_bias`, `is_lstm` (carry is
    `(h, c)`), `has_recurrent_weights`.
    """

    num_gates: ClassVar[int] = 1
    keep_gate: ClassVar[int | None] = None
    default_forget_bias: ClassVar[float] = 0.0
    is_lstm: ClassVar[bool] = False
    has_recurrent_weights: ClassVar[bool] = True
    # The keep gate's bias is +b when the gate multiplies the old state, -b when 1 - gate does.
    keep_sign: ClassVar[float] = 1.0
    # Chrono also sets the LSTM input gate's bias to -b_f (Tallec & Ollivier 2018, eq. 16).
    chrono_input_gate: ClassVar[int | None] = None

    # ---- parameters -------------------------------------------------------------------------
    def init(
        self,
        key: jax.Array,
        input_size: int,
        hidden_size: int,
        *,
        input_init: str | initializers.Initializer = "glorot_uniform",
        recurrent_init: str | initializers.Initializer = "orthogonal",
        input_scale: float | None = None,
        recurrent_scale: float | None = None,
        forget_bias: float | None = None,
        chrono_max_length: float | None = None,
        dtype: jnp.dtype = jnp.float32,
    ) -> Params:
        """Params dict: `W_ih [I, G]`, `W_hh [H, G]`, `b_ih [G]`, `b_hh [G]` (+ cell extras).

        `input_init`/`recurrent_init`: initialiser names (or callables), applied per gate block;
        `input_scale`/`recurrent_scale`: their `scale` option. `forget_bias`: bias of the keep
        gate (default: the cell's `default_forget_bias`); `chrono_max_length`: chrono init of
        the keep gate instead (Tallec & Ollivier 2018). `dtype`: of every param, floating.
        """
        check_positive(input_size=input_size, hidden_size=hidden_size)
        input_size, hidden_size = int(input_size), int(hidden_size)  # static jit arguments
        # Static jit arguments must hash: a 0-d array (np.array(1.0), a jax scalar), which
        # is_finite_number accepts, failed there with "Non-hashable static arguments".
        forget_bias, chrono_max_length, input_scale, recurrent_scale = (
            _scalar_item(v) for v in (forget_bias, chrono_max_length, input_scale, recurrent_scale)
        )
        if not jnp.issubdtype(dtype, jnp.floating):
            # Integer dtypes cast the draws silently (an orthogonal W_hh became all zeros).
            raise ValueError(f"dtype={dtype!r} must be a floating dtype")
        if forget_bias is not None and not is_finite_number(forget_bias):
            raise ValueError(f"forget_bias={forget_bias!r} must be a finite number")
        if self.keep_gate is None and (forget_bias or chrono_max_length is not None):
            raise ValueError(
                f"{type(self).__name__} has no gates: forget_bias={forget_bias!r} and "
                f"chrono_max_length={chrono_max_length!r} must be left unset"
            )
        if forget_bias is not None and chrono_max_length is not None:
            raise ValueError(
                f"give forget_bias={forget_bias!r} or chrono_max_length={chrono_max_length!r}, "
                "not both"
            )

        for which, init, scale in (
            ("input", input_init, input_scale),
            ("recurrent", recurrent_init, recurrent_scale),
        ):
            try:  # unknown names and bad scales raise here, before tracing
                _build_initializer(init, scale)
            except ValueError as error:
                raise ValueError(
                    f"{which}_init={init!r}, {which}_scale={scale!r}: {error}"
                ) from None
        return _init_params(
            self,
            key,
            input_size,
            hidden_size,
            input_init,
            recurrent_init,
            input_scale,
            recurrent_scale,
            forget_bias,
            chrono_max_length,
            jnp.dtype(dtype),
        )

    def _init_params(
        self,
        key: jax.Array,
        input_size: int,
        hidden_size: int,
        input_init: str | initializers.Initializer,
        recurrent_init: str | initializers.Initializer,
        input_scale: float | None,
        recurrent_scale: float | None,
        forget_bias: float | None,
        chrono_max_length: float | None,
        dtype: jnp.dtype,
    ) -> Params:
        k_ih, k_hh, k_bias, k_extra = jax.random.split(key, 4)
        params = {
            "W_ih": initializers.gate_blocks(
                _build_initializer(input_init, input_scale),
                k_ih,
                input_size,
                hidden_size,
                self.num_gates,
                dtype,
            ),
            "b_ih": self._keep_gate_bias(
                k_bias, hidden_size, forget_bias, chrono_max_length, dtype
            ).astype(dtype),
        }
        if self.has_recurrent_weights:
            params["W_hh"] = initializers.gate_blocks(
                _build_initializer(recurrent_init, recurrent_scale),
                k_hh,
                hidden_size,
                hidden_size,
                self.num_gates,
                dtype,
            )
            params["b_hh"] = jnp.zeros((self.num_gates * hidden_size,), dtype)
        params.update(self.extra_params(k_extra, hidden_size, dtype))
        return params

    def _keep_gate_bias(
        self,
        key: jax.Array,
        hidden_size: int,
        forget_bias: float | None,
        chrono_max_length: float | None,
        dtype: jnp.dtype = jnp.float32,
    ) -> jax.Array:
        """`b_ih [G]`: zeros, with the keep gate's slice set to the forget bias or chrono.

        Computed in float32, or in `dtype` where wider (as the initialisers are): built in
        float32 alone, a float64 `forget_bias=0.9` held 0.8999999762."""
        compute = jnp.promote_types(jnp.float32, dtype)
        blocks = [jnp.zeros((hidden_size,), compute) for _ in range(self.num_gates)]
        if self.keep_gate is None:
            return jnp.concatenate(blocks)
        if chrono_max_length is not None:
            keep = initializers.chrono_bias(key, hidden_size, chrono_max_length, compute)
        else:
            value = self.default_forget_bias if forget_bias is None else forget_bias
            keep = jnp.full((hidden_size,), value, compute)
        blocks[self.keep_gate] = self.keep_sign * keep
        if chrono_max_length is not None and self.chrono_input_gate is not None:
            blocks[self.chrono_input_gate] = -keep
        return jnp.concatenate(blocks)

    def extra_params(self, key: jax.Array, hidden_size: int, dtype: jnp.dtype) -> Params:
        """Cell-specific params beyond the four fused matrices/biases (none by default)."""
        del key, hidden_size, dtype
        return {}

    def sizes(self, params: Params) -> tuple[int, int]:
        """`(input_size, hidden_size)` of `params`."""
        input_size, gates = params["W_ih"].shape
        return input_size, gates // self.num_gates

    # ---- carry --------------------------------------------------------------------------------
    def zero_carry(
        self, batch_shape: int | tuple[int, ...], hidden_size: int, dtype: jnp.dtype = jnp.float32
    ) -> Carry:
        """All-zero carry: `h [*batch_shape, hidden_size]` (LSTM cells: `(h, c)`)."""
        shape = (int(batch_shape),) if is_int(batch_shape) else tuple(batch_shape)
        h = jnp.zeros((*shape, hidden_size), dtype)
        return (h, h) if self.is_lstm else h

    def output(self, carry: Carry) -> jax.Array:
        """The hidden state `h` of a carry."""
        return carry[0] if self.is_lstm else carry

    def mask_hidden(self, carry: Carry, h_mask: jax.Array) -> Carry:
        """The carry with `h` multiplied by `h_mask` (the cell state `c` is left alone).

        Used for variational recurrent dropout (Gal & Ghahramani 2016): the mask acts only on
        the `h` that feeds the recurrent matmul. The product is taken in the wider of the two
        dtypes and rounded once to `h`'s, so the recurrent matmul reads `h`'s dtype as without
        a mask, and a float32 mask (`rnn_jax.layers.recurrent_dropout_masks`) scales a
        bfloat16 `h` by 1/(1 - rate) to float32 precision (a bfloat16 mask holds
        bf16(1/0.9) = 1.109375, 0.16% low on every kept unit).
        """
        h = self.output(carry)
        masked = (h * h_mask).astype(h.dtype)
        return (masked, carry[1]) if self.is_lstm else masked

    # ---- the three parts of a step --------------------------------------------------------------
    def input_projection(self, params: Params, x: jax.Array) -> jax.Array:
        """`z_x = x @ W_ih + b_ih`, `[..., G]` for `x [..., input_size]`."""
        return _matmul(x, params["W_ih"]) + params["b_ih"]

    def recurrent_projection(self, params: Params, carry: Carry) -> Any:
        """`z_h = h @ W_hh + b_hh`, `[..., G]`."""
        return _matmul(self.output(carry), params["W_hh"]) + params["b_hh"]

    def pointwise(self, params: Params, z_x: jax.Array, z_h: Any, carry: Carry) -> tuple:
        """`(carry', y)` from the two projections and the old carry (the cell's equations)."""
        raise NotImplementedError

    def step(self, params: Params, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
        """One time step: `(carry', y)` for `x [..., input_size]`; `y = h'`."""
        z_x = self.input_projection(params, x)
        z_h = self.recurrent_projection(params, carry)
        return self.pointwise(params, z_x, z_h, carry)


@dataclasses.dataclass(frozen=True)
class Elman(Cell):
    """Elman RNN (Elman 1990), PyTorch's `nn.RNN`.

        h' = act(x W_ih + b_ih + h W_hh + b_hh),   act = tanh or relu.

    `nonlinearity="relu"` with `recurrent_init="identity"` is the IRNN (Le et al. 2015).
    """

    nonlinearity: str = "tanh"

    def __post_init__(self):
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity={self.nonlinearity!r}; allowed: 'tanh', 'relu'")

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        act = jnp.tanh if self.nonlinearity == "tanh" else jax.nn.relu
        h = act(z_x + z_h)
        return h, h


@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    """LSTM (Hochreiter & Schmidhuber 1997, with forget gate: Gers et al. 2000), `nn.LSTM`.

        i, f, g, o = split(x W_ih + b_ih + h W_hh + b_hh)      (PyTorch order)
        c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
        h' = σ(o) ⊙ tanh(c')

    Default forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015).
    """

    num_gates: ClassVar[int] = 4
    keep_gate: ClassVar[int | None] = 1
    chrono_input_gate: ClassVar[int | None] = 0
    default_forget_bias: ClassVar[float] = 1.0
    is_lstm: ClassVar[bool] = True

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        i, f, g, o = _split(z_x + z_h, 4)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h


@dataclasses.dataclass(frozen=True)
class PeepholeLSTM(LSTM):
    """LSTM with peephole connections (Gers & Schmidhuber 2000; Graves 2013, eqs. 7-11).

        i, f, g, o = split(x W_ih + b_ih + h W_hh + b_hh)
        i_t = σ(i + w_ci ⊙ c),   f_t = σ(f + w_cf ⊙ c),
        c'  = f_t ⊙ c + i_t ⊙ tanh(g),
        o_t = σ(o + w_co ⊙ c'),  h' = o_t ⊙ tanh(c').

    Extra params: diagonal peephole weights `w_ci, w_cf, w_co [H]`, initialised to zero so the
    cell starts as a plain LSTM.
    """

    def extra_params(self, key: jax.Array, hidden_size: int, dtype: jnp.dtype) -> Params:
        return {name: jnp.zeros((hidden_size,), dtype) for name in ("w_ci", "w_cf", "w_co")}

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        i, f, g, o = _split(z_x + z_h, 4)
        c_prev = carry[1]
        input_gate = jax.nn.sigmoid(i + params["w_ci"] * c_prev)
        forget_gate = jax.nn.sigmoid(f + params["w_cf"] * c_prev)
        c = forget_gate * c_prev + input_gate * jnp.tanh(g)
        h = jax.nn.sigmoid(o + params["w_co"] * c) * jnp.tanh(c)
        return (h, c), h


@dataclasses.dataclass(frozen=True)
class LayerNormLSTM(LSTM):
    """Layer-normalised LSTM (Ba et al. 2016, section 3.1 / eq. 20-22).

        i, f, g, o = split(LN(x W_ih; γ_ih) + b_ih + LN(h W_hh; γ_hh) + b_hh)
        c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
        h' = σ(o) ⊙ tanh(LN(c'; γ_c, β_c))

    LN(v; γ, β) = (v - mean(v)) / sqrt(var(v) + eps) ⊙ γ + β over the last axis; the two gate
    LNs normalise the whole fused `[4H]` pre-activation, as in the paper. Their shifts β are the
    biases `b_ih`, `b_hh` (a separate β would be redundant). Both projections stay
    per-time-step, so `input_projection` (which includes its LN) is still time-parallel.
    Extra params: `ln_ih_scale [4H]`, `ln_hh_scale [4H]`, `ln_c_scale [H]`, `ln_c_bias [H]`.
    """

    eps: float = 1e-5

    def __post_init__(self) -> None:
        # A 0-d array eps (is_finite_number accepts one) left the cell unhashable, so every jit
        # taking it as a static argument (init, the scans) failed; keep its Python scalar.
        object.__setattr__(self, "eps", _scalar_item(self.eps))
        # eps <= 0 or NaN made every LN of a constant vector 0 * inf = NaN: the recurrent LN of
        # the zero initial state at step 1, and the input LN of zero-padded steps.
        if not (is_finite_number(self.eps) and self.eps > 0):
            raise ValueError(f"eps={self.eps!r} must be a finite number > 0")

    def extra_params(self, key: jax.Array, hidden_size: int, dtype: jnp.dtype) -> Params:
        G = 4 * hidden_size
        return {
            "ln_ih_scale": jnp.ones((G,), dtype),
            "ln_hh_scale": jnp.ones((G,), dtype),
            "ln_c_scale": jnp.ones((hidden_size,), dtype),
            "ln_c_bias": jnp.zeros((hidden_size,), dtype),
        }

    def input_projection(self, params: Params, x: jax.Array) -> jax.Array:
        return _layer_norm(
            _matmul(x, params["W_ih"]), params["ln_ih_scale"], params["b_ih"], self.eps
        )

    def recurrent_projection(self, params: Params, carry: Carry) -> jax.Array:
        z = _matmul(self.output(carry), params["W_hh"])
        return _layer_norm(z, params["ln_hh_scale"], params["b_hh"], self.eps)

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        i, f, g, o = _split(z_x + z_h, 4)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        c_norm = _layer_norm(c, params["ln_c_scale"], params["ln_c_bias"], self.eps)
        h = jax.nn.sigmoid(o) * jnp.tanh(c_norm)
        return (h, c), h


@dataclasses.dataclass(frozen=True)
class CIFGLSTM(LSTM):
    """LSTM with coupled input and forget gates (CIFG; Greff et al. 2017, "LSTM: A Search
    Space Odyssey"): the input gate is 1 - forget gate, so there are three gates.

        f, g, o = split(x W_ih + b_ih + h W_hh + b_hh)          (G = 3H)
        c' = σ(f) ⊙ c + (1 - σ(f)) ⊙ tanh(g)
        h' = σ(o) ⊙ tanh(c')
    """

    num_gates: ClassVar[int] = 3
    keep_gate: ClassVar[int | None] = 0
    chrono_input_gate: ClassVar[int | None] = None

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        f, g, o = _split(z_x + z_h, 3)
        forget_gate = jax.nn.sigmoid(f)
        c = forget_gate * carry[1] + (1.0 - forget_gate) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h


@dataclasses.dataclass(frozen=True)
class GRU(Cell):
    """GRU in the PyTorch/cuDNN form (reset gate applied after the recurrent matmul), `nn.GRU`.

    r, z, n_x = split(x W_ih + b_ih),  r_h, z_h, n_h = split(h W_hh + b_hh)  (order r, z, n)
    r = σ(r_x + r_h),  z = σ(z_x + z_h)
    n = tanh(n_x + r ⊙ n_h)            (b_hn sits inside r ⊙ (...))
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    num_gates: ClassVar[int] = 3
    keep_gate: ClassVar[int | None] = 1

    def pointwise(self, params: Params, z_x: jax.Array, z_h: jax.Array, carry: Carry) -> tuple:
        r_x, u_x, n_x = _split(z_x, 3)
        r_h, u_h, n_h = _split(z_h, 3)
        reset = jax.nn.sigmoid(r_x + r_h)
        update = jax.nn.sigmoid(u_x + u_h)
        candidate = jnp.tanh(n_x + reset * n_h)
        h = (1.0 - update) * candidate + update * carry
        return h, h


@dataclasses.dataclass(frozen=True)
class ChoGRU(GRU):
    """GRU as in Cho et al. 2014 (eqs. 5-8): the reset gate acts *before* the recurrent matmul.

        r = σ(x W_ir + b_ir + h W_hr + b_hr),  z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + (r ⊙ h) W_hn + b_hn)
        h' = (1 - z) ⊙ n + z ⊙ h

    Same params and layout as `GRU` (`W_hh = [W_hr | W_hz | W_hn]`). How it fits the projection
    split: the candidate's matmul needs r, which needs this step's input, so it cannot be part
    of `recurrent_projection`. `recurrent_projection` therefore returns
    `(h W_hh[:, :2H] + b_hh[:2H], h)` (the r, z pre-activations plus the state the candidate
    matmul will read) and `pointwise` computes `(r ⊙ h) W_hn + b_hn`. Since `h` comes from
    `recurrent_projection`, a variational dropout mask on h reaches both recurrent matmuls.
    """

    def recurrent_projection(self, params: Params, carry: Carry) -> tuple[jax.Array, jax.Array]:
        H = carry.shape[-1]
        return _matmul(carry, params["W_hh"][:, : 2 * H]) + params["b_hh"][: 2 * H], carry

    def pointwise(self, params: Params, z_x: jax.Array, z_h: tuple, carry: Carry) -> tuple:
        rz_h, h_rec = z_h
        H = carry.shape[-1]
        r_x, u_x, n_x = _split(z_x, 3)
        r_h, u_h = _split(rz_h, 2)
        reset = jax.nn.sigmoid(r_x + r_h)
        update = jax.nn.sigmoid(u_x + u_h)
        n_h = _matmul(reset * h_rec, params["W_hh"][:, 2 * H :]) + params["b_hh"][2 * H :]
        candidate = jnp.tanh(n_x + n_h)
        h = (1.0 - update) * candidate + update * carry
        return h, h


@dataclasses.dataclass(frozen=True)
class MinGRU(Cell):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?", section 3.1, non-log form).

        z, h~ = split(x W_ih + b_ih)            (G = 2H, order z, h~)
        h' = (1 - σ(z)) ⊙ h + σ(z) ⊙ h~

    The gates depend only on the input, so the recurrence is linear in h: h' = a ⊙ h + b with
    a = 1 - σ(z), b = σ(z) ⊙ h~ (`linear_coefficients`). Scans run it with
    rnn_jax.linear_scan: `method="sequential"` (lax.scan), `"associative"`
    (lax.associative_scan, O(log T) depth) or `"auto"` (sequential on CPU, associative on
    GPU/TPU). There is no `W_hh`/`b_hh`; params are `W_ih [I, 2H]`, `b_ih [2H]`.
    `forget_bias` b sets the bias of z to -b (so 1 - σ(z), the keep factor, starts at σ(b)).
    """

    method: str = "auto"
    num_gates: ClassVar[int] = 2
    keep_gate: ClassVar[int | None] = 0
    keep_sign: ClassVar[float] = -1.0
    has_recurrent_weights: ClassVar[bool] = False

    def __post_init__(self):
        from rnn_jax.linear_scan import METHODS

        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; allowed: {', '.join(METHODS)}")

    def recurrent_projection(self, params: Params, carry: Carry) -> None:
        """minGRU has no recurrent matmul."""
        return None

    def linear_coefficients(self, params: Params, z_x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(a, b)`, each `[..., H]`, such that h' = a ⊙ h + b."""
        z, candidate = _split(z_x, 2)
        update = jax.nn.sigmoid(z)
        return 1.0 - update, update * candidate

    def pointwise(self, params: Params, z_x: jax.Array, z_h: None, carry: Carry) -> tuple:
        a, b = self.linear_coefficients(params, z_x)
        h = a * carry + b
        return h, h


CELLS: dict[str, type[Cell]] = {
    "elman": Elman,
    "lstm": LSTM,
    "gru": GRU,
    "gru_cho": ChoGRU,
    "peephole_lstm": PeepholeLSTM,
    "layer_norm_lstm": LayerNormLSTM,
    "cifg_lstm": CIFGLSTM,
    "min_gru": MinGRU,
}
CELL_NAMES = tuple(CELLS)


def _matmul(x: jax.Array, W: jax.Array) -> jax.Array:
    """`x @ W` in the weight's dtype: bfloat16 weights under float32 activations (a float32
    carry, mixed precision) run a bfloat16 matmul instead of being promoted to float32; a
    float32 weight under bfloat16 inputs promotes the inputs, as `@` would."""
    return x.astype(W.dtype) @ W


def carry_dtype(cell: Cell, params: Params, xs: jax.Array) -> jnp.dtype:
    """The dtype of a zero carry for `xs [..., input_size]`: the one `step` keeps, so the
    carry has the step's own dtype (float32 params over bfloat16 inputs give a float32 carry,
    as the step computes; a carry in `xs.dtype` would not match the step's output inside
    `lax.scan`). It starts from `input_projection(params, xs)`'s dtype and widens it to what
    one step returns from a carry of it: params the step reads after that projection
    (bfloat16 input weights under a float32 `W_hh`, float32 peepholes beside bfloat16
    biases) promote the step's output, and a zero carry of the projection's dtype then
    failed inside `lax.scan`. One step settles it: the step's output dtype is the promotion
    of its carry's and its params', so a second step from the widened carry gives it back."""
    row = jax.ShapeDtypeStruct((1, xs.shape[-1]), xs.dtype)
    dtype = jax.eval_shape(cell.input_projection, params, row).dtype
    carry = jax.eval_shape(lambda: cell.zero_carry((1,), cell.sizes(params)[1], dtype))
    out = jax.eval_shape(lambda p, c, x: cell.step(p, c, x)[0], params, carry, row)
    return jnp.dtype(jnp.result_type(dtype, *jax.tree.leaves(out)))


def get_cell(name: str | Cell, **options: Any) -> Cell:
    """The cell called `name` (one of `CELL_NAMES`) with static `options`, e.g.
    `get_cell("elman", nonlinearity="relu")`, `get_cell("min_gru", method="associative")`.
    A `Cell` instance is returned unchanged (options must then be empty)."""
    if isinstance(name, Cell):
        if options:
            raise ValueError(f"options {options} given with a cell instance {name!r}")
        return name
    if name not in CELLS:
        raise ValueError(f"unknown cell name={name!r}; allowed: {', '.join(CELL_NAMES)}")
    cls = CELLS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for cell {name!r}; allowed: {allowed or 'none'}"
        )
    return cls(**options)
