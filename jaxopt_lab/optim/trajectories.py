"""The problem the math test kit runs an optimizer on, and how two runs are compared.

`default_params` is a fixed pytree (a matrix, a vector, a scalar), `default_grads` a gradient
field that changes with the step, `trajectory` the parameters after each update and `compare`
the first step and leaf where two trajectories differ by more than a tolerance. The kit
(`testing`, `properties`) and the rounding bound (`rounding`) run the same problem, in float32
and float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any
GradFn = Callable[[Params, jax.Array], Params]


def default_params(dtype: Any = jnp.float32) -> Params:
  """A small pytree with a matrix, a vector and a scalar leaf (fixed random values)."""
  k = jax.random.split(jax.random.key(0), 3)
  return {
      'w': jax.random.normal(k[0], (3, 4), jnp.float32).astype(dtype),
      'b': (jax.random.normal(k[1], (4,), jnp.float32).astype(dtype),
            jax.random.normal(k[2], (), jnp.float32).astype(dtype)),
  }


def default_grads(params: Params, step: jax.Array) -> Params:
  """A gradient field that changes with the step: 1.5 (x - 0.3) + 0.1 sin(t x)."""
  def grad(x):
    t = jnp.asarray(step, x.dtype)  # the parameters' precision (float64 in a float64 run)
    return (1.5 * (x - 0.3) + 0.1 * jnp.sin(t * x)).astype(x.dtype)

  return jax.tree.map(grad, params)


def trajectory(opt: optax.GradientTransformation, steps: int, params: Params | None = None,
               grad_fn: GradFn = default_grads) -> Params:
  """The parameters after each of `steps` updates, each leaf with a leading axis [steps].

  Uses `lax.scan` (the state is its carry, so its types may not change); not jitted here.
  """
  params = default_params() if params is None else params

  def step(carry, t):
    p, s = carry
    u, s = opt.update(grad_fn(p, t), s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p

  return jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))[1]


class OptimizerCheckError(AssertionError):
  """A check of the kit failed; the message names the check, the step, the leaf and the error."""


def _leaves(tree: Params) -> list[tuple[str, np.ndarray]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(path) or '<root>',
           np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)) for path, x in flat]


def compare(check: str, ours: Params, reference: Params, rtol: float = 0.0, atol: float = 0.0,
            bound: Params | None = None, *, first_step: int = 1, stepped: bool = True) -> None:
  """Raises at the first step (then leaf) where max|ours - ref| > tolerance: `atol + rtol *
  max|ref|`, plus that step's entry of the leaf's `bound` ([steps] array) when given."""
  a_leaves, b_leaves = _leaves(ours), _leaves(reference)
  extra = None if bound is None else [b for _, b in _leaves(bound)]
  if [n for n, _ in a_leaves] != [n for n, _ in b_leaves]:
    raise OptimizerCheckError(
        f'{check}: tree structures differ: {[n for n, _ in a_leaves]} vs '
        f'{[n for n, _ in b_leaves]}')
  worst = None  # (step, leaf, error, tolerance)
  for k, ((name, a), (_, b)) in enumerate(zip(a_leaves, b_leaves, strict=True)):
    if a.shape != b.shape:
      raise OptimizerCheckError(f'{check}: leaf {name}: shape {a.shape} vs {b.shape}')
    if not stepped:
      a, b = a[None], b[None]
    axes = tuple(range(1, a.ndim))
    err = np.max(np.abs(a - b), axis=axes) if axes else np.abs(a - b)
    tol = atol + rtol * (np.max(np.abs(b), axis=axes) if axes else np.abs(b))
    if extra is not None:
      tol = tol + np.reshape(extra[k], tol.shape)
    bad = np.flatnonzero(~(err <= tol))  # NaN counts as a failure
    if bad.size and (worst is None or bad[0] < worst[0]):
      worst = (int(bad[0]), name, float(err[bad[0]]), float(tol[bad[0]]))
  if worst is not None:
    step, name, err, tol = worst
    where = f'step {step + first_step}, ' if stepped else ''
    raise OptimizerCheckError(
        f'{check}: {where}leaf {name}: max abs error {err:.3g} > tolerance {tol:.3g}')
