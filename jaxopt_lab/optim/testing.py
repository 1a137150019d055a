"""A test kit for optimizer math: the checks our optimizers pass, for yours, from pytest.

Each `check_*` returns None or raises `OptimizerCheckError` (an `AssertionError`) naming the check,
the step and the leaf that failed and the size of the error:

  from jaxopt_lab.optim import testing

  def test_my_lion():
    testing.check_against_reference(my_lion(1e-3), optax.lion(1e-3), steps=200)
    testing.check_vmap_equals_separate_runs(
        my_lion, {'learning_rate': [1e-3, 3e-3], 'b1': [0.9, 0.5]})
    testing.check_descends_on_quadratic(my_lion(1e-2))

The problem they run is a fixed pytree of parameters (`default_params`) and a gradient field that
changes with the step (`default_grads`), unless you pass your own. Checks that take `make_opt`
call it with keyword hyperparameters (`make_opt(learning_rate=..., b1=...)`), as numbers or as
traced float32 arrays.

Tolerances are derived, not fitted: two float32 runs of the same math lie within twice the
rounding bound of `rounding.error_bound` (ulps x steps x the trajectory's conditioning, measured
on float64 runs), so a correct optimizer passes on any CPU. Without a reference implementation,
`check_float32_matches_float64`, `check_scale_invariance` and `check_constant_gradient_updates`
(from `properties`) check the math itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab.optim import rounding
from jaxopt_lab.optim.properties import (
    check_constant_gradient_updates,
    check_float32_matches_float64,
    check_scale_invariance,
)
from jaxopt_lab.optim.trajectories import (
    GradFn,
    OptimizerCheckError,
    Params,
    compare,
    default_grads,
    default_params,
    trajectory,
)

MakeOpt = Callable[..., optax.GradientTransformation]


def compare_trajectories(ours: Params, reference: Params, *, rtol: float = 0.0, atol: float = 0.0,
                         bound: Params | None = None,
                         check: str = 'compare_trajectories') -> None:
  """Raises at the first step (then leaf) where max|ours - ref| > atol + rtol * max|ref| (+ that
  step's `bound`, e.g. `rounding.float32_tolerance(...)`, when given).

  For trajectories computed your own way (e.g. many cases vmapped in one program): each leaf
  has a leading axis [steps]; step numbers in the message start at 1.
  """
  compare(check, ours, reference, rtol, atol, bound)


def _tolerance(rtol: float | None, opt: optax.GradientTransformation, steps: int,
               params: Params | None, grad_fn: GradFn) -> tuple[float, Params | None]:
  """(rtol, bound): a number given by the user, or (None) the derived float32 bound of `opt`."""
  if rtol is not None:
    return rtol, None
  return 0.0, rounding.float32_tolerance(opt, steps, params, grad_fn)


def check_against_reference(opt: optax.GradientTransformation,
                            reference: optax.GradientTransformation, steps: int = 200, *,
                            params: Params | None = None, grad_fn: GradFn = default_grads,
                            rtol: float | None = None, atol: float = 0.0) -> None:
  """`opt` follows the same parameter trajectory as `reference` (e.g. Optax's alias) for `steps`.

  The tolerance is derived, not fitted: both float32 runs lie within the rounding bound of the
  reference's exact trajectory (`rounding.error_bound`, from two float64 runs of `reference`),
  so within twice it of each other, on any CPU. A number `rtol` replaces the bound by `atol +
  rtol * max|reference leaf|`.

  Raises:
    OptimizerCheckError: at the first step and leaf where they differ by more than that.
  """
  run = jax.jit(lambda: (trajectory(opt, steps, params, grad_fn),
                         trajectory(reference, steps, params, grad_fn)))
  ours, ref = run()
  rtol, bound = _tolerance(rtol, reference, steps, params, grad_fn)
  compare('check_against_reference', ours, ref, rtol, atol, bound)


def _stack(hparams_grid: Mapping[str, Sequence[float]]) -> tuple[dict[str, jax.Array], int]:
  sizes = {len(v) for v in hparams_grid.values()}
  if len(sizes) != 1:
    raise ValueError(f'hparams_grid: every hyperparameter needs the same number of points, got '
                     f'{ {k: len(v) for k, v in hparams_grid.items()} }')
  return {k: jnp.asarray(v, jnp.float32) for k, v in hparams_grid.items()}, sizes.pop()


def check_vmap_equals_separate_runs(make_opt: MakeOpt,
                                    hparams_grid: Mapping[str, Sequence[float]],
                                    steps: int = 50, *, params: Params | None = None,
                                    grad_fn: GradFn = default_grads,
                                    rtol: float | None = None) -> None:
  """One `jax.vmap` over a grid of hyperparameter values = a separate run per point.

  Args:
    make_opt: builds the optimizer from keyword hyperparameters (traced float32 arrays here).
    hparams_grid: name -> values, one value per point (all of the same length, >= 2).
    steps: updates per run.
    rtol: None (default): each point's derived rounding bound (`rounding.float32_tolerance` of
      `make_opt` at its values; XLA fuses multiply-adds in one program and not in the other);
      a number: that tolerance relative to each leaf's largest magnitude.

  Raises:
    OptimizerCheckError: naming the point, the step and the leaf that differ, or when every
      point ends in the same place (the grid would not test anything).
  """
  grid, n = _stack(hparams_grid)

  def run(hp):
    return trajectory(make_opt(**hp), steps, params, grad_fn)

  batched = jax.jit(jax.vmap(run))(grid)
  single = jax.jit(run)
  for i in range(n):
    separate = single({k: v[i] for k, v in grid.items()})
    point = jax.tree.map(lambda x, i=i: x[i], batched)
    values = {k: float(v[i]) for k, v in grid.items()}
    point_rtol, bound = _tolerance(rtol, make_opt(**values), steps, params, grad_fn)
    try:
      compare('check_vmap_equals_separate_runs', point, separate, point_rtol, 0.0, bound)
    except OptimizerCheckError as e:
      raise OptimizerCheckError(f'{e} (point {i})') from None
  finals = [np.concatenate([np.ravel(x[i, -1]) for x in jax.tree.leaves(batched)])
            for i in range(n)]
  if all(np.array_equal(finals[0], f) for f in finals[1:]):
    raise OptimizerCheckError('check_vmap_equals_separate_runs: every point of the grid ends in '
                              'the same place; the hyperparameters have no effect')


def check_jit_equals_eager(opt: optax.GradientTransformation, steps: int = 3, *,
                           params: Params | None = None, grad_fn: GradFn = default_grads,
                           rtol: float | None = None) -> None:
  """`jax.jit(opt.update)` gives the parameters that op-by-op execution gives, within the
  derived rounding bound of `opt` (or `rtol` of each leaf's largest magnitude, if a number).

  Raises:
    OptimizerCheckError: naming the step and the leaf that differ.
  """
  p_e = p_j = default_params() if params is None else params
  s_e = s_j = opt.init(p_e)
  update = jax.jit(opt.update)
  rtol, bound = _tolerance(rtol, opt, steps, p_e, grad_fn)
  for t in range(steps):
    u_e, s_e = opt.update(grad_fn(p_e, jnp.asarray(t)), s_e, p_e)
    u_j, s_j = update(grad_fn(p_j, jnp.asarray(t)), s_j, p_j)
    p_e, p_j = optax.apply_updates(p_e, u_e), optax.apply_updates(p_j, u_j)
    try:
      at_t = None if bound is None else jax.tree.map(lambda b, t=t: b[t], bound)
      compare('check_jit_equals_eager', p_j, p_e, rtol, 0.0, at_t, stepped=False)
    except OptimizerCheckError as e:
      raise OptimizerCheckError(str(e).replace(': leaf', f': step {t + 1}, leaf')) from None


def check_no_recompile(make_opt: MakeOpt, hparams_a: Mapping[str, float],
                       hparams_b: Mapping[str, float], *, params: Params | None = None,
                       grad_fn: GradFn = default_grads) -> None:
  """New hyperparameter values (as float32 arrays) reuse the compiled update: one trace.

  Also checks that the two sets of values give different updates (else nothing was tested).

  Raises:
    OptimizerCheckError: if a value cannot be traced (a Python `float(...)` or `if` on it would
      make it a compile-time constant), the second call traced again, or the updates are equal.
  """
  traces = []
  p = default_params() if params is None else params

  @jax.jit
  def two_steps(hp):
    traces.append(1)  # runs only while tracing
    opt = make_opt(**hp)
    state = opt.init(p)
    updates = None
    for t in range(2):
      updates, state = opt.update(grad_fn(p, jnp.asarray(t)), state, p)
    return updates

  try:
    first = two_steps({k: jnp.float32(v) for k, v in hparams_a.items()})
    second = two_steps({k: jnp.float32(v) for k, v in hparams_b.items()})
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerIntegerConversionError) as e:
    raise OptimizerCheckError(
        f'check_no_recompile: a hyperparameter of {sorted(hparams_a)} cannot be traced (it is '
        f'used as a Python number or in Python control flow): {type(e).__name__}') from None
  if len(traces) != 1:
    raise OptimizerCheckError(f'check_no_recompile: traced {len(traces)} times for two sets of '
                              'values; a value is a compile-time constant (a Python float or '
                              'an `if` on it)')
  if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second),
                                                strict=True)):
    raise OptimizerCheckError('check_no_recompile: the two sets of values give the same updates')


def check_zero_learning_rate_is_identity(opt: optax.GradientTransformation, steps: int = 10, *,
                                         params: Params | None = None,
                                         grad_fn: GradFn = default_grads,
                                         rtol: float | None = 0.0) -> None:
  """`opt`, built with learning rate 0, leaves the parameters where they started: exactly, or,
  with `rtol=None`, within its derived rounding bound (for an optimizer that recomputes the
  parameters from its state: schedule-free methods round there), or within a number `rtol` of
  each leaf's largest magnitude.

  Raises:
    OptimizerCheckError: naming the first step and leaf that moved.
  """
  start = default_params() if params is None else params
  path = jax.jit(lambda: trajectory(opt, steps, start, grad_fn))()
  still = jax.tree.map(lambda x: jnp.broadcast_to(x, (steps, *x.shape)), start)
  rtol, bound = _tolerance(rtol, opt, steps, start, grad_fn)
  compare('check_zero_learning_rate_is_identity', path, still, rtol, 0.0, bound)


def check_state_dtypes_stable(opt: optax.GradientTransformation,
                              dtypes: Sequence[Any] = (jnp.float32, jnp.bfloat16), *,
                              grad_fn: GradFn = default_grads) -> None:
  """For parameters of each dtype: updates have the parameters' dtypes, shapes and structure, and
  the state keeps the structure, dtypes and shapes of `opt.init` across updates (so it can be
  the carry of a `lax.scan`). Abstract evaluation only: nothing is compiled.

  Raises:
    OptimizerCheckError: naming the dtype, the leaf and what changed.
  """
  for dtype in dtypes:
    params = default_params(dtype)
    state0 = jax.eval_shape(opt.init, params)
    updates, state = jax.eval_shape(opt.update, grad_fn(params, jnp.asarray(1)), state0, params)
    name = jnp.dtype(dtype).name
    if jax.tree.structure(updates) != jax.tree.structure(params):
      raise OptimizerCheckError(f'check_state_dtypes_stable ({name}): the updates have another '
                                'tree structure than the parameters')
    if jax.tree.structure(state) != jax.tree.structure(state0):
      raise OptimizerCheckError(f'check_state_dtypes_stable ({name}): update changed the '
                                'structure of the state')
    pairs = [('update', _abstract(updates), _abstract(params)),
             ('state', _abstract(state), _abstract(state0))]
    for what, new, old in pairs:
      for (leaf, a), (_, b) in zip(new, old, strict=True):
        if (a.dtype, a.shape) != (b.dtype, b.shape):
          raise OptimizerCheckError(
              f'check_state_dtypes_stable ({name}): step 1, {what} leaf {leaf}: '
              f'{a.dtype}{list(a.shape)}, expected {b.dtype}{list(b.shape)}')


def _abstract(tree: Any) -> list[tuple[str, Any]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(path) or '<root>', x) for path, x in flat]


def check_descends_on_quadratic(opt: optax.GradientTransformation, steps: int = 200, *,
                                factor: float = 0.1) -> None:
  """On f(x) = 0.5 sum(a_i x_i^2) (curvatures a in [0.5, 2], x0 = 1), `steps` updates bring f
  below `factor` times f(x0).

  Raises:
    OptimizerCheckError: with the loss at the start, the best step and the end.
  """
  curvature = jnp.linspace(0.5, 2.0, 8)

  def loss(x):
    return 0.5 * jnp.sum(curvature * x**2)

  def step(carry, _):
    x, s = carry
    u, s = opt.update(jax.grad(loss)(x), s, x)
    x = optax.apply_updates(x, u)
    return (x, s), loss(x)

  x0 = jnp.ones(8)
  losses = np.asarray(jax.jit(lambda: jax.lax.scan(step, (x0, opt.init(x0)), None,
                                                   length=steps)[1])())
  start = float(loss(x0))
  if not np.isfinite(losses[-1]) or losses[-1] > factor * start:
    best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else 0
    raise OptimizerCheckError(
        f'check_descends_on_quadratic: loss {start:.4g} at step 0, {losses[best]:.4g} at step '
        f'{best + 1} (best), {losses[-1]:.4g} at step {steps}; expected < {factor * start:.4g}')




__all__ = [
    'OptimizerCheckError', 'check_against_reference', 'check_constant_gradient_updates',
    'check_descends_on_quadratic', 'check_float32_matches_float64', 'check_jit_equals_eager',
    'check_no_recompile', 'check_scale_invariance', 'check_state_dtypes_stable',
    'check_vmap_equals_separate_runs', 'check_zero_learning_rate_is_identity',
    'compare_trajectories', 'default_grads', 'default_params', 'trajectory',
]
