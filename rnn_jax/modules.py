"""Flax NNX front end: `RNN` holds a stack's params as `nnx.Param`s and calls the pure core
(rnn_jax.layers.apply_stack / stack_step). There is no second copy of the maths here; the pure
core stays usable without Flax.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import layers
from rnn_jax.cells import Cell, carry_dtype, get_cell


def _to_nnx(tree: Any) -> Any:
    """Plain params (dicts of arrays) -> nnx.Dict of nnx.Param, so they show up in nnx.state."""
    if isinstance(tree, dict):
        return nnx.Dict({name: _to_nnx(value) for name, value in tree.items()})
    return nnx.Param(tree)


def _from_nnx(tree: Any) -> Any:
    """Inverse of `_to_nnx`: the current values as plain dicts of arrays."""
    if isinstance(tree, nnx.Dict):
        return {name: _from_nnx(value) for name, value in tree.items()}
    return tree[...]


class RNN(nnx.Module):
    """A (stacked, optionally bidirectional) recurrent layer over `[batch, time, features]`.

    Args:
      cell: a name from rnn_jax.cells.CELL_NAMES or a Cell instance.
      input_size, hidden_size: feature sizes.
      num_layers, bidirectional, merge, residual: stack shape (rnn_jax.layers.apply_stack).
      dropout: inter-layer dropout rate; recurrent_dropout: variational dropout rate on h
        (Gal & Ghahramani 2016). Both act only when `__call__` gets an `rng`.
      locked_dropout: the inter-layer dropout draws one mask per sequence, shared over time
        (rnn_jax.layers.apply_stack), instead of one per element and step.
      input_init, recurrent_init, forget_bias, chrono_max_length, **init_options: passed to
        `cell.init` (rnn_jax.cells.Cell.init).
      learned_initial_carry: learn the initial carry (one `[hidden]` vector per layer,
        direction and carry part, broadcast over the batch; starts at zero).
      unroll, remat, implementation: passed to rnn_jax.scan.unroll.
      rngs: nnx.Rngs; its `params` stream initialises the weights.
    """

    def __init__(
        self,
        cell: str | Cell,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        locked_dropout: bool = False,
        residual: bool = False,
        input_init: str = "glorot_uniform",
        recurrent_init: str = "orthogonal",
        forget_bias: float | None = None,
        chrono_max_length: float | None = None,
        learned_initial_carry: bool = False,
        unroll: int = 1,
        remat: bool = False,
        implementation: str = "auto",
        rngs: nnx.Rngs,
        **init_options: Any,
    ):
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}={rate!r}; allowed: 0 <= rate < 1")
        self.cell = get_cell(cell)
        if recurrent_dropout > 0.0 and not self.cell.has_recurrent_weights:
            raise ValueError(
                f"recurrent_dropout={recurrent_dropout!r} needs a cell with recurrent weights; "
                f"{type(self.cell).__name__} has no recurrent matmul whose input h to mask"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.merge = merge
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.locked_dropout = locked_dropout
        self.residual = residual
        self.unroll_options = {"unroll": unroll, "remat": remat, "implementation": implementation}
        params = layers.init_stack(
            rngs.params(),
            self.cell,
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            merge=merge,
            input_init=input_init,
            recurrent_init=recurrent_init,
            forget_bias=forget_bias,
            chrono_max_length=chrono_max_length,
            **init_options,
        )
        self.num_layers = len(params)  # an int, whatever integer type `num_layers` was
        self.layers = nnx.List([_to_nnx(p) for p in params])
        self.learned_initial_carry = learned_initial_carry
        if learned_initial_carry:
            leaves = jax.tree.leaves(self._zero_carries(1))
            self.initial_carry = nnx.List([nnx.Param(leaf[0]) for leaf in leaves])

    @property
    def params(self) -> list:
        """The stack's params as the plain pytree rnn_jax.layers expects."""
        return [_from_nnx(layer) for layer in self.layers]

    def _zero_carries(self, batch_size: int) -> list:
        carries = []
        for layer in self.params:
            first = layer["fw"] if self.bidirectional else layer
            # The dtype a step's carry has (rnn_jax.cells.carry_dtype; the matmuls cast their
            # input to the weights' dtype, so the input's own dtype does not matter): float32
            # zeros into bfloat16-only or float64 params would make `step` run in another
            # precision than `__call__`, and a learned initial carry fail inside the scan.
            row = jax.ShapeDtypeStruct((1, first["W_ih"].shape[0]), first["W_ih"].dtype)
            zero = self.cell.zero_carry(
                (batch_size,), self.hidden_size, carry_dtype(self.cell, first, row)
            )
            carries.append((zero, zero) if self.bidirectional else zero)
        return carries

    def zero_carry(self, batch_size: int) -> list:
        """Initial carries for `batch_size` sequences, one per layer (pairs if bidirectional):
        zeros, or the learned initial carry broadcast over the batch."""
        zeros = self._zero_carries(batch_size)
        if not self.learned_initial_carry:
            return zeros
        learned = [p[...] for p in self.initial_carry]
        return jax.tree.unflatten(
            jax.tree.structure(zeros),
            [jnp.broadcast_to(v, (batch_size, v.shape[-1])) for v in learned],
        )

    def __call__(
        self,
        xs: jax.Array,
        lengths: jax.Array | None = None,
        initial_carry: list | None = None,
        *,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, list]:
        """`xs [batch, time, input]`, `lengths [batch]` -> `(ys [batch, time, out], carries)`.

        `rng=None`: deterministic (no dropout). `initial_carry`: per-layer list as returned
        by `zero_carry` (None: `zero_carry(batch)`). `ys` and the carries take the params'
        step dtype whatever `xs`'s (`rnn_jax.scan.unroll`): `dtype=jnp.bfloat16` params give
        bfloat16 outputs from float32 inputs.
        """
        if initial_carry is None and self.learned_initial_carry:
            initial_carry = self.zero_carry(xs.shape[0])
        h_masks, dropout_rng = None, rng
        if rng is not None and self.recurrent_dropout > 0.0:
            dropout_rng, mask_rng = jax.random.split(rng)
            h_masks = layers.recurrent_dropout_masks(
                mask_rng,
                self.recurrent_dropout,
                xs.shape[0],
                self.hidden_size,
                self.num_layers,
                bidirectional=self.bidirectional,
                # the carry's dtype, which the mask multiplies (float32 or wider: float32
                # params over bfloat16 inputs keep a float32 carry, float64 ones a float64)
                dtype=jax.tree.leaves(self._zero_carries(1))[0].dtype,
            )
        return layers.apply_stack(
            self.cell,
            self.params,
            xs,
            lengths,
            initial_carry,
            bidirectional=self.bidirectional,
            merge=self.merge,
            dropout_rate=self.dropout,
            locked=self.locked_dropout,
            residual=self.residual,
            rng=dropout_rng,
            h_masks=h_masks,
            **self.unroll_options,
        )

    def step(
        self,
        carries: list,
        x: jax.Array,
        *,
        rng: jax.Array | None = None,
        active: jax.Array | None = None,
    ) -> tuple[list, jax.Array]:
        """One streaming step `x [batch, input]` -> `(carries', y [batch, hidden])` in constant
        memory; stepping through a sequence equals `__call__` on it (evaluation mode). With
        `rng` (training step by step, e.g. a decoder), the inter-layer dropout of `__call__`.
        `active [batch]` bool (None: all rows): rows where it is False keep their carries and
        give zeros, so stepping a padded batch with `active = t < lengths` equals
        `__call__(xs, lengths)` (outputs and final carries)."""
        if self.bidirectional:
            raise ValueError("step needs bidirectional=False: a backward pass cannot stream")
        if self.recurrent_dropout > 0.0 and rng is not None:
            raise ValueError(
                f"step with an rng needs recurrent_dropout=0 (got {self.recurrent_dropout}): its "
                "mask on h is drawn once per sequence (Gal & Ghahramani), which a single step "
                "does not see; step without an rng (evaluation), or train with __call__"
            )
        if self.locked_dropout and self.dropout > 0.0 and rng is not None:
            raise ValueError(
                "step with an rng needs locked_dropout=False: a mask shared over time belongs "
                "to the whole sequence, which a single step does not see"
            )
        return layers.stack_step(
            self.cell,
            self.params,
            carries,
            x,
            residual=self.residual,
            dropout_rate=self.dropout,
            rng=rng,
            active=active,
        )
