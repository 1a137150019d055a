"""Multi-layer perceptron with a configurable stack of widths and activation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_lab.models import parametrization
from jaxopt_lab.models.core import compute_dtype, param_dtype
from jaxopt_lab.optim import multipliers

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
  ``{'layers': {'0': {'kernel', 'bias'}, '1': ...}}``. Under ``parametrization='mup'`` the width
  multiplier of a layer is its fan-in over ``base_width`` (the hidden widths are the ones that
  grow): the readout's initialisation std times ``sqrt(m)`` and its outputs times ``1 / m``
  (``parametrization.py``); hidden kernels keep Flax's ``1 / fan_in`` variance, which is μP's.
  """

  def __init__(
      self,
      widths: Sequence[int] = (64, 256, 256, 10),
      activation: str = 'relu',
      *,
      dtype: str = 'float32',
      parametrization: str = 'sp',
      base_width: int = 256,
      rngs: nnx.Rngs,
  ):
    """Args: widths: input, hidden and output sizes (at least two); activation: 'relu', 'gelu'
    or 'tanh'; dtype: compute dtype (parameters stay float32); parametrization: 'sp' or 'mup';
    base_width: the hidden width at which 'mup' is 'sp'; rngs: init."""
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
      raise ValueError(f'model.widths: need at least two positive sizes; got {widths}')
    self.activation = activation_fn(activation)
    dt = compute_dtype(dtype)
    readout = mlp_multipliers(widths, parametrization, base_width)
    self.output_scale = readout.output
    init = nnx.initializers.variance_scaling(readout.output_init**2, 'fan_in', 'truncated_normal')
    self.layers = nnx.List([
        nnx.Linear(a, b, dtype=dt, param_dtype=param_dtype(dtype), rngs=rngs,
                   **({'kernel_init': init} if i == len(widths) - 2 and readout.width != 1 else {}))
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      if i:
        x = self.activation(x)
      x = layer(x)
    return parametrization.scaled(x, self.output_scale)


def mlp_multipliers(widths: Sequence[int], kind: str, base_width: int
                    ) -> parametrization.Multipliers:
  """The readout's multipliers: of its fan-in ``widths[-2]`` against ``base_width`` (SP's all 1,
  and so a one-layer model's: its readout reads the input, which does not grow)."""
  if len(widths) < 3:
    parametrization.check(kind, base_width)
    return parametrization.multipliers('sp', 1, 1)
  return parametrization.multipliers(kind, widths[-2], base_width)


def mlp_lr_multipliers(widths: Sequence[int], kind: str, base_width: int, params: Any,
                       rule: str = 'adam') -> Any:
  """Per-parameter learning-rate multipliers of the MLP of ``widths`` under μP's ``rule``
  (``optim.multipliers``): the first kernel and the biases input-like (m of their fan-out; the
  readout's bias, of the classes, does not grow), the hidden kernels hidden (m of their
  fan-in, the hidden widths growing together), the last kernel output (m of its fan-in). A
  one-layer model has no growing dimension: all 1."""
  last = len(widths) - 2

  def m(n: int) -> float:
    return parametrization.multipliers(kind, n, base_width).width

  def of(path, _):
    names = [str(getattr(k, 'key', k)) for k in path]
    i = int(names[-2])
    if last == 0:
      return 1.0
    if names[-1] != 'kernel':
      return multipliers.mup_lr(rule, 'input', m(widths[i + 1]) if i != last else 1.0)
    if i == 0:
      return multipliers.mup_lr(rule, 'input', m(widths[1]))
    return multipliers.mup_lr(rule, 'output' if i == last else 'hidden', m(widths[i]))

  return jax.tree_util.tree_map_with_path(of, params)
