"""Multi-layer perceptron with a configurable stack of widths and activation."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_lab.models.core import compute_dtype, param_dtype

ACTIVATIONS = {'relu': jax.nn.relu, 'gelu': jax.nn.gelu, 'tanh': jnp.tanh}


def activation_fn(name: str):
  """The activation called ``name``; an unknown name is a ValueError listing the choices."""
  if name not in ACTIVATIONS:
    raise ValueError(
        f"model.activation: unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}"
    )
  return ACTIVATIONS[name]


class MLP(nnx.Module):
  """Dense layers ``widths[0] -> widths[1] -> ... -> widths[-1]``, activation between them.

  The last layer has no activation: for a classifier its outputs are the logits. Parameters are
  ``{'layers': {'0': {'kernel', 'bias'}, '1': ...}}``.
  """

  def __init__(
      self,
      widths: Sequence[int] = (64, 256, 256, 10),
      activation: str = 'relu',
      *,
      dtype: str = 'float32',
      rngs: nnx.Rngs,
  ):
    """Args: widths: input, hidden and output sizes (at least two); activation: 'relu', 'gelu'
    or 'tanh'; dtype: compute dtype (parameters stay float32); rngs: init."""
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
      raise ValueError(f'model.widths: need at least two positive sizes; got {widths}')
    self.activation = activation_fn(activation)
    dt = compute_dtype(dtype)
    self.layers = nnx.List([
        nnx.Linear(a, b, dtype=dt, param_dtype=param_dtype(dtype), rngs=rngs)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      if i:
        x = self.activation(x)
      x = layer(x)
    return x
