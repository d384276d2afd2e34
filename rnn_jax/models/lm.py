"""The RNN language model: embedding -> stacked RNN -> softmax over the vocabulary.

Zaremba, Sutskever & Vinyals (2014) with the regularisers of Gal & Ghahramani (2016) and
AWD-LSTM (Merity et al. 2017), all off by default:

    E' = embedding_dropout(E)                          whole word types
    x_t = dropout_input(E'[w_t])                       (locked over time if locked_dropout)
    h^l_t = cell(h^l_{t-1} * m^l, dropout_between(h^{l-1}_t))   m^l: variational mask,
                                                       W_hh DropConnect'ed by weight_drop,
                                                       dropout_between locked likewise
    logits_t = dropout_output(h^L_t) @ W_out + b       W_out = E^T with tie_embeddings

Carries go in and out (truncated BPTT over consecutive batches), and `step` runs one token at
a time in constant memory for generation. Randomness is explicit: `rng=None` is evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import initializers, layers
from rnn_jax.cells import get_cell
from rnn_jax.models.checks import (
    check_ids,
    check_positive,
    check_rates,
    check_sequences,
    check_step_tokens,
)
from rnn_jax.modules import RNN
from rnn_jax.train import regularizers

# The random streams one forward pass draws from (one fold_in each).
_EMBEDDING, _INPUT, _WEIGHT, _RNN, _OUTPUT = range(5)


class RNNLanguageModel(nnx.Module):
    """Args:
    vocab_size, hidden_size: sizes; embed_size=None means embed_size = hidden_size.
    num_layers, cell: the recurrent stack (`rnn_jax.cells.CELL_NAMES`).
    tie_embeddings: output weights = embedding^T (Press & Wolf 2017; Inan et al. 2017);
      needs embed_size == hidden_size.
    dropout_input / dropout_between / dropout_output: rates on the embedded input, between
      layers and on the last layer's output (Zaremba et al. use one rate for all three).
    locked_dropout: the input, between-layer and output dropouts draw one mask per sequence,
      shared over time (Gal & Ghahramani 2016; AWD-LSTM's `dropouti`, `dropouth`, `dropout`).
    recurrent_dropout: variational dropout of h before W_hh (one mask per sequence).
    embedding_dropout: drop word types; weight_drop: DropConnect on W_hh (AWD-LSTM; cells
      without W_hh, min_gru, refuse it).
    init_scale: if set, every weight ~ U(-init_scale, init_scale) (Zaremba: 0.05 medium,
      0.04 large); else embedding N(0, 1), RNN glorot/orthogonal, output lecun normal.
    forget_bias: LSTM forget-gate bias (Zaremba: 0).
    compute_dtype: "bfloat16" rounds the weight matrices (embedding, W_ih, W_hh, output
      kernel) to bfloat16 for the pass, so every matmul runs in bfloat16 (the cells multiply
      in the weight's dtype, `rnn_jax.cells._matmul`; the output projection casts h).
      Everything else is float32: params, gradients, optimiser state, biases and other
      vector params, the carried state and the cell's elementwise update, the logits.
    rngs: nnx.Rngs for initialisation.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        *,
        embed_size: int | None = None,
        num_layers: int = 1,
        cell: str = "lstm",
        tie_embeddings: bool = False,
        dropout_input: float = 0.0,
        dropout_between: float = 0.0,
        dropout_output: float = 0.0,
        locked_dropout: bool = False,
        recurrent_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_scale: float | None = None,
        forget_bias: float | None = None,
        compute_dtype: str = "float32",
        rngs: nnx.Rngs,
    ) -> None:
        embed_size = hidden_size if embed_size is None else embed_size
        rates = {
            "dropout_input": dropout_input,
            "dropout_between": dropout_between,
            "dropout_output": dropout_output,
            "recurrent_dropout": recurrent_dropout,
            "embedding_dropout": embedding_dropout,
            "weight_drop": weight_drop,
        }
        check_rates(**rates)
        # NumPy integers too (`is_int`): isinstance(size, int) refused np.int64 and took True
        check_positive(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            embed_size=embed_size,
            num_layers=num_layers,
        )
        if tie_embeddings and embed_size != hidden_size:
            raise ValueError(
                f"tie_embeddings needs embed_size == hidden_size; got embed_size={embed_size}, "
                f"hidden_size={hidden_size}"
            )
        if weight_drop > 0.0 and not get_cell(cell).has_recurrent_weights:
            # It would fail in the first training pass with KeyError: 'W_hh'.
            raise ValueError(
                f"weight_drop={weight_drop!r} needs a cell with a recurrent matrix W_hh, but "
                f"cell={cell!r} has none; use weight_drop=0"
            )
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype={compute_dtype!r}; allowed: float32, bfloat16")
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.rates = rates
        self.locked_dropout = locked_dropout
        self.tie_embeddings = tie_embeddings
        if init_scale is None:
            embed_init = nnx.initializers.normal(1.0)
            out_init = nnx.initializers.lecun_normal()
            rnn_init = {}
        else:
            embed_init = out_init = initializers.uniform(init_scale)
            rnn_init = {
                "input_init": "uniform",
                "recurrent_init": "uniform",
                "input_scale": init_scale,
                "recurrent_scale": init_scale,
            }
        self.embedding = nnx.Param(embed_init(rngs.params(), (vocab_size, embed_size)))
        self.rnn = RNN(
            cell,
            embed_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout_between,
            recurrent_dropout=recurrent_dropout,
            locked_dropout=locked_dropout,
            forget_bias=forget_bias,
            rngs=rngs,
            **rnn_init,
        )
        if not tie_embeddings:
            self.output_kernel = nnx.Param(out_init(rngs.params(), (hidden_size, vocab_size)))
        self.output_bias = nnx.Param(jnp.zeros((vocab_size,)))

    def zero_carry(self, batch_size: int) -> list:
        """Initial carries, one per layer (`(h, c)` for LSTMs), each `[batch, hidden]`."""
        return self.rnn.zero_carry(batch_size)

    def __call__(
        self, tokens: jax.Array, carry: list | None = None, *, rng: jax.Array | None = None
    ) -> tuple[jax.Array, list, dict[str, jax.Array]]:
        """`tokens int [batch, time]` -> `(logits [batch, time, vocab], carry, hidden)`.

        `hidden` holds the last layer's output before (`"outputs"`) and after
        (`"dropped_outputs"`) output dropout, `[batch, time, hidden]`, for AR/TAR.
        """
        # Static shape checks (fine under jit): the RNN's own would name the embedded `xs`.
        check_sequences("tokens", tokens)
        # The gather below clamps an id >= vocab_size to the last row: wrong logits, no error.
        check_ids("tokens", tokens, self.vocab_size, "vocab_size")
        key = (lambda stream: None) if rng is None else (lambda s: jax.random.fold_in(rng, s))
        embedding = regularizers.embedding_dropout(
            key(_EMBEDDING), self.rates["embedding_dropout"], self.embedding[...]
        )
        x = embedding[tokens].astype(self.compute_dtype)
        x = self._dropout(key(_INPUT), self.rates["dropout_input"], x)
        rnn = self._compute_rnn(key(_WEIGHT))
        if carry is None:
            carry = self.zero_carry(tokens.shape[0])
        # The carry stays float32 (the RNN's biases do: rnn_jax.cells.carry_dtype).
        outputs, new_carry = rnn(x, None, carry, rng=key(_RNN))
        dropped = self._dropout(key(_OUTPUT), self.rates["dropout_output"], outputs)
        logits = self._logits(dropped)
        return (
            logits,
            new_carry,
            {
                "outputs": outputs,
                "dropped_outputs": dropped,
            },
        )

    def step(self, carry: list, token: jax.Array) -> tuple[list, jax.Array]:
        """One token `int [batch]` -> `(carry, logits [batch, vocab])` (evaluation mode).

        Stepping through a sequence gives the logits of `__call__` on it with `rng=None`.
        """
        check_ids("token", token, self.vocab_size, "vocab_size")  # the gather clamps
        check_step_tokens(token, carry, name="token")  # a [batch, 1] token was broadcast
        x = self.embedding[...][token].astype(self.compute_dtype)
        new_carry, h = self._compute_rnn(None).step(carry, x)
        return new_carry, self._logits(h)

    def _logits(self, h: jax.Array) -> jax.Array:
        """float32 logits (the softmax and the loss stay in float32 under bfloat16 compute)."""
        kernel = self.embedding[...].T if self.tie_embeddings else self.output_kernel[...]
        dtype = self.compute_dtype
        logits = h.astype(dtype) @ kernel.astype(dtype) + self.output_bias[...]
        return logits.astype(jnp.float32)

    def _dropout(self, rng: jax.Array | None, rate: float, x: jax.Array) -> jax.Array:
        if self.locked_dropout:
            return regularizers.locked_dropout(rng, rate, x)
        return layers.dropout(rng, rate, x)

    def _compute_rnn(self, rng: jax.Array | None) -> RNN:
        """The RNN as this pass uses it: DropConnect'ed W_hh (weight drop, when `rng` is
        given) and the weight matrices cast to the compute dtype (biases and other vector
        params stay float32, so the carry and the cell's elementwise update do too), as a
        new module over the same graph (gradients flow back to the float32 params); the RNN
        itself when neither applies."""
        drop = rng is not None and self.rates["weight_drop"] > 0.0
        if not drop and self.compute_dtype == jnp.float32:
            return self.rnn
        graphdef, state = nnx.split(self.rnn)
        if drop:
            dropped = regularizers.weight_drop(rng, self.rates["weight_drop"], self.rnn.params)
            nnx.replace_by_pure_dict(state, {"layers": dict(enumerate(dropped))})
        state = jax.tree.map(lambda p: p.astype(self.compute_dtype) if p.ndim == 2 else p, state)
        return nnx.merge(graphdef, state)
