"""Checks of an optimizer's math that need no reference implementation (part of the test kit).

`testing` re-exports them; a user calls them from pytest like the rest of the kit:

  testing.check_float32_matches_float64(my_nadamw(1e-2))
  testing.check_scale_invariance(my_nadamw(1e-2, eps=1e-12))           # Adam-like methods
  testing.check_constant_gradient_updates(my_nadamw(1e-2), expected)   # a closed form

Their tolerances are derived (`rounding`): a correct optimizer passes in float32 on any CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab.optim import rounding
from jaxopt_lab.optim.trajectories import (
    GradFn,
    OptimizerCheckError,
    Params,
    compare,
    default_grads,
    default_params,
    trajectory,
)


def check_float32_matches_float64(opt: optax.GradientTransformation, steps: int = 200, *,
                                  params: Params | None = None,
                                  grad_fn: GradFn = default_grads) -> None:
  """The float32 run of `opt` stays within the rounding bound of its float64 run.

  The bound (`rounding.error_bound`: ulps x steps x the trajectory's conditioning, measured in
  float64) is what a numerically sound implementation keeps to; an update that loses precision
  in float32 (a catastrophic cancellation, `1 - b**t` from a float32 power that underflows, a
  moment stored in a narrower dtype) leaves it.

  Raises:
    OptimizerCheckError: at the first step and leaf outside the bound.
  """
  params = default_params() if params is None else params
  ours = jax.jit(lambda: trajectory(opt, steps, params, grad_fn))()
  bound, exact = rounding.error_bound(opt, steps, params, grad_fn)
  compare('check_float32_matches_float64', ours, exact, bound=bound)


def check_scale_invariance(opt: optax.GradientTransformation, steps: int = 50, *,
                           scale: float = 2.0**10, params: Params | None = None,
                           grad_fn: GradFn = default_grads) -> None:
  """Multiplying every gradient by `scale` leaves the trajectory unchanged (Adam, RMSprop-with-
  normalisation, sign methods: update = f(g / |g|)).

  A power of two scales float32 numbers exactly, so the two runs differ only by `eps` (build `opt`
  with a tiny one, e.g. 1e-12) and rounding: compared within twice the derived bound.

  Raises:
    OptimizerCheckError: at the first step and leaf where the scaled run differs.
  """
  params = default_params() if params is None else params

  def scaled(p, t):
    return jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grad_fn(p, t))

  plain, big = jax.jit(lambda: (trajectory(opt, steps, params, grad_fn),
                                trajectory(opt, steps, params, scaled)))()
  bound = rounding.float32_tolerance(opt, steps, params, grad_fn)
  compare(f'check_scale_invariance (gradients x {scale:g})', big, plain, bound=bound)


def check_constant_gradient_updates(
    opt: optax.GradientTransformation, expected: Callable[[int, np.ndarray], np.ndarray],
    steps: int = 20, *, params: Params | None = None) -> None:
  """Under a constant gradient `g`, update `t` (t = 1 .. steps) is the closed form you declare.

  A constant gradient makes most methods' moments geometric sums: Adam's bias-corrected moments
  are exactly `g` and `g**2` at every step, so its update is `-lr g / (|g| + eps)` at each `t`;
  a missing bias correction, a correction with the wrong beta or a missing Nesterov term shows
  at step 1. The updates are computed in float64 (float32's `1 - b2**t` alone loses up to
  `eps32 / (1 - b2)`, 1e-4 of the update at b2 = 0.999: that is `check_float32_matches_float64`'s
  business), so a difference beyond float32's rounding bound, `ULPS_PER_STEP * eps32 * t` of the
  update, is a difference in the math, on any CPU.

  Args:
    opt: the optimizer (it must run in float64: its Python numbers are promoted).
    expected: `(t, g) -> update` for one leaf's gradient `g` (float64 NumPy; elementwise).
    steps: updates to check.
    params: the parameters (default `default_params()`); `g = default_grads(params, 0)`.

  Raises:
    OptimizerCheckError: at the first step and leaf where the update differs from `expected`.
  """
  params = rounding.to_float64(default_params() if params is None else params)
  with jax.enable_x64(True):
    grads = default_grads(params, jnp.asarray(0))

    def step(state, _):
      updates, state = opt.update(grads, state, params)
      return state, updates

    got = jax.jit(lambda: jax.lax.scan(step, opt.init(params), None, length=steps)[1])()
    got = jax.tree.map(np.asarray, got)
    g64 = jax.tree.map(np.asarray, grads)
  want = jax.tree.map(lambda g: np.stack([np.asarray(expected(t, g), np.float64) * np.ones_like(g)
                                          for t in range(1, steps + 1)]), g64)
  if jax.tree.structure(got) != jax.tree.structure(want):
    raise OptimizerCheckError('check_constant_gradient_updates: the updates have another tree '
                              'structure than the parameters')
  t = np.arange(1, steps + 1)
  bound = jax.tree.map(lambda w: rounding.ULPS_PER_STEP * rounding.EPS32 * t * np.max(
      np.abs(w).reshape(steps, -1), axis=1, initial=0.0), want)
  compare('check_constant_gradient_updates', got, want, bound=bound)
