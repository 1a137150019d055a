"""Flax NNX modules used as pure functions, and the compute dtypes they accept.

The training core never sees a module: it sees ``init(key) -> params`` and
``apply(params, inputs)``, where ``params`` is a nested ``dict`` (string keys) of float32 arrays.
``pure`` builds the pair from a module constructor: ``init`` constructs the module and
``nnx.split``s off its parameters; ``apply`` ``nnx.merge``s the parameters with a graph
definition computed once, abstractly, and calls the module. Both are ordinary JAX functions, so
``jax.jit``, ``jax.vmap`` (over keys or over parameters), ``jax.grad`` and ``lax.scan`` apply to
them directly.

Example:
  >>> model = pure(lambda rngs: MLP((4, 8, 2), rngs=rngs))
  >>> params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 3))  # 3 models
  >>> logits = jax.vmap(model.apply, in_axes=(0, None))(params, jnp.ones((5, 4)))  # [3, 5, 2]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Params = dict[str, Any]

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}


def compute_dtype(name: str) -> Any:
  """The JAX dtype called ``name`` ('float32', 'bfloat16' or 'float64'); else a ValueError.

  'float64' (parameters too, see `param_dtype`) is for numerical checks and needs
  ``jax_enable_x64``.
  """
  if name not in DTYPES:
    raise ValueError(
        f"model.dtype: unknown dtype {name!r}; valid choices: {', '.join(DTYPES)}"
    )
  if name == 'float64' and not jax.config.jax_enable_x64:
    raise ValueError("model.dtype: 'float64' needs 64-bit JAX (JAX_ENABLE_X64=1)")
  return DTYPES[name]


def param_dtype(name: str) -> Any:
  """Parameters are float32, except under the float64 compute dtype (then float64)."""
  return jnp.float64 if compute_dtype(name) == jnp.float64 else jnp.float32


@dataclasses.dataclass(frozen=True)
class PureModel:
  """A module as two pure functions.

  Attributes:
    init: PRNG key (typed or raw uint32) -> params, a nested dict of float32 arrays.
    apply: ``(params, *inputs) -> outputs``, the module's ``__call__`` on those parameters.
    param_shapes: the shapes and dtypes of ``init``'s output (``jax.ShapeDtypeStruct`` leaves).
  """

  init: Callable[[jax.Array], Params]
  apply: Callable[..., Any]
  param_shapes: Params

  @property
  def param_count(self) -> int:
    """The number of scalar parameters."""
    return int(sum(x.size for x in jax.tree.leaves(self.param_shapes)))


def _to_pure(state: nnx.State) -> Params:
  out: Params = {}
  for path, var in nnx.to_flat_state(state):
    node = out
    for key in path[:-1]:
      node = node.setdefault(str(key), {})
    node[str(path[-1])] = var.get_value()
  return out


def pure(make: Callable[[nnx.Rngs], nnx.Module]) -> PureModel:
  """Turns a module constructor into a ``PureModel``.

  Args:
    make: builds the module from an ``nnx.Rngs``; it must hold only ``nnx.Param`` state (no
      batch statistics, no stored RNG streams), so that parameters are the whole state.

  Returns:
    The ``PureModel``; its graph definition is computed here once with ``nnx.eval_shape``.
  """
  abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
  graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError(
        'pure: the module holds state other than nnx.Param '
        f'({sorted(str(p) for p, _ in nnx.to_flat_state(rest))}); only parameters are supported'
    )
  flat_abstract = list(nnx.to_flat_state(abstract_params))

  def init(key: jax.Array) -> Params:
    _, params = nnx.split(make(nnx.Rngs(key)), nnx.Param)
    return _to_pure(params)

  def apply(params: Params, *args: Any, **kwargs: Any) -> Any:
    items = []
    for path, var in flat_abstract:
      node = params
      for key in path:
        node = node[str(key)]
      items.append((path, var.replace(node)))
    module = nnx.merge(graphdef, nnx.from_flat_state(items))
    return module(*args, **kwargs)

  return PureModel(init=init, apply=apply, param_shapes=_to_pure(abstract_params))
