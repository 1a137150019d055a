r"""How far a float32 run of an optimizer may lie from its exact trajectory: a derived bound.

Every float operation rounds its result by at most half an ulp. After `t` updates a leaf of a
float32 run lies within

.. math::

  B_t = U \cdot \epsilon \cdot t \cdot A_t \cdot X_t

of the exact trajectory, where :math:`\epsilon = 2^{-23}` (float32's machine epsilon),
:math:`U` = `ULPS_PER_STEP` the rounding one step adds in units of :math:`\epsilon X`,
:math:`X_t` the leaf's largest magnitude up to step `t` and :math:`A_t \ge 1` the trajectory's
conditioning: how much a perturbation of :math:`\epsilon X_0` of the starting point has grown by
step `t`, measured on two float64 runs (float64 rounds 2^29 times finer, so their difference is
the perturbation's, not rounding's). Rounding at step `s` grows like a perturbation there; taking
the worst growth up to `t` for each of the `t` steps bounds the sum.

Two float32 runs of the same math (ours and a reference, vmapped and separate, one CPU's vector
instructions and another's) each lie within :math:`B_t` of the exact trajectory, so within
:math:`2 B_t` of each other: the tolerance the kit uses. It is a bound, not a fit: on the
kit's default problem over 200 steps, float32 runs of Adam, SGD with momentum, Lion and NAdamW
lie 17 to 50 times inside it (max |float32 - float64| / B_t = 0.02 to 0.06).

The same measurement bounds any program of `steps` rounding steps from a start state to its
outputs (`program_bound`: a chunk of training steps, an evaluation after them): with
:math:`X` an output leaf's largest magnitude and :math:`A` how much the nudge of the start moved
it, relative to :math:`\epsilon_{32} X` (its relative condition number), and `U` argued from the
step's operations (`ulps_per_step`: Higham's :math:`\gamma_n \le n u` for a reduction of
length `n`, :math:`u = \epsilon / 2`). With :math:`\epsilon = 2^{-52}` it bounds a float64
run: two float64 runs of the same math in other arrangements (a scan and a loop, a batch and its
microbatches) lie within :math:`2 B` of each other, a bound 2^29 times tighter than float32's.

Where it does not hold: a chaotic trajectory, whose float32 and float64 runs part by more than
rounding (centered RMSprop at eps 1e-8 on the default problem, past step ~150: 6 B_t, the
parameters 0.03 apart). One nudge's growth then understates another's; such a run has no
float32 answer to compare at that horizon, and `check_float32_matches_float64` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from jaxopt_lab.optim.trajectories import GradFn, Params, default_grads, default_params, trajectory

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
# One update rounds about a dozen times per element: the gradient field (4 operations and a
# sine of at most 2 ulps), an Adam-like update (~10 operations) and the parameter's add; each
# by at most half an ulp of a value no larger than the leaf's magnitude times the conditioning
# already counted in A. 16 ulps of the leaf's magnitude a step bounds their sum.
ULPS_PER_STEP = 16


def ulps_per_step(*reductions: int) -> float:
  r"""`U` for a step whose outputs each come through reductions of these lengths and about a
  dozen elementwise operations.

  Higham (2002), Accuracy and Stability of Numerical Algorithms, sec. 3.1: a sum or dot product
  of `n` terms rounds by at most :math:`\gamma_{n-1} \le n u` (:math:`u = \epsilon/2`) of the
  sum of the terms' magnitudes: `n / 2` ulps a reduction, `ULPS_PER_STEP` for the rest.
  """
  return ULPS_PER_STEP + sum(reductions) / 2


def _is_float(x: Any) -> bool:
  return np.issubdtype(np.asarray(x).dtype, np.inexact)


def to_float64(tree: Params) -> Params:
  """`tree`'s float leaves as float64 (complex128 for complex leaves) NumPy arrays: the same
  numbers; integer leaves (step counters, PRNG keys) as they are."""
  return jax.tree.map(
      lambda x: np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)
      if _is_float(x) else x, tree)


def vmapped_runs(run: Callable[[dict[str, Any], Params], Any], grid: Mapping[str, Any],
                 start: Params) -> tuple[Any, Any]:
  """`(exact, moved)`: float64 runs of `run(hparams, start)` over a grid of hyperparameters
  (vmapped: one compilation), from `start` and from `nudged(start)`; leaves [points, steps,
  ...]. `bound_from_runs(start64, exact[i], moved[i])` is then point i's bound."""
  start = to_float64(start)
  with jax.enable_x64(True):
    hp = {k: np.asarray(v, np.float64) for k, v in grid.items()}
    program = jax.jit(jax.vmap(run, in_axes=(0, None)))
    return tuple(jax.tree.map(np.asarray, program(hp, p)) for p in (start, nudged(start)))


def float64_trajectory(opt: optax.GradientTransformation, steps: int,
                       params: Params | None = None,
                       grad_fn: GradFn = default_grads) -> Params:
  """`trajectory` of `opt` from the same starting point in float64 (NumPy arrays)."""
  params = default_params() if params is None else params
  with jax.enable_x64(True):
    out = jax.jit(lambda p: trajectory(opt, steps, p, grad_fn))(to_float64(params))
    return jax.tree.map(np.asarray, out)


def nudged(start: Params) -> Params:
  """`start` (float64) moved by +-EPS32 times each leaf's largest magnitude (fixed signs): the
  perturbation whose growth along a float64 run measures the conditioning `A_t`."""
  signs = np.random.default_rng(0)
  return jax.tree.map(
      lambda x: x + _scale(x) * signs.choice([-1.0, 1.0], np.shape(x)) if _is_float(x) else x,
      start)


def _scale(x: np.ndarray) -> float:
  return EPS32 * max(float(np.max(np.abs(x), initial=0.0)), 1e-30)


def bound_from_runs(start: Params, exact: Params, moved: Params, *,
                    ulps_per_step: float = ULPS_PER_STEP) -> Params:
  """`B_t` per leaf ([steps] arrays) from the float64 runs from `start` and `nudged(start)`
  (leaves [steps, ...]); for callers that run many points in one program (a vmapped grid)."""

  def leaf_bound(x0, x, y):
    axes = tuple(range(1, x.ndim))
    size = np.maximum.accumulate(np.max(np.abs(x), axis=axes) if axes else np.abs(x))
    size = np.maximum(size, np.max(np.abs(x0), initial=0.0))
    grown = np.max(np.abs(y - x), axis=axes) if axes else np.abs(y - x)
    amplification = np.fmax.accumulate(np.maximum(grown / _scale(x0), 1.0))  # NaN: unbounded
    amplification = np.where(np.isnan(amplification), np.inf, amplification)
    t = np.arange(1, x.shape[0] + 1)
    return ulps_per_step * EPS32 * t * amplification * size

  return jax.tree.map(leaf_bound, start, exact, moved)


def error_bound(opt: optax.GradientTransformation, steps: int, params: Params | None = None,
                grad_fn: GradFn = default_grads, *,
                ulps_per_step: float = ULPS_PER_STEP) -> tuple[Params, Params]:
  """The bound :math:`B_t` on a float32 run's distance from the exact trajectory (module doc).

  Args:
    opt: the optimizer; it must run in float64 too (it is built already: Python numbers and
      float32 arrays it closed over are promoted).
    steps: updates.
    params: the starting point (default `default_params()`).
    grad_fn: the gradient field.
    ulps_per_step: `U` of the module doc.

  Returns:
    `(bound, exact)`: per leaf, the bound as a [steps] float64 array (each step's max over the
    leaf's elements) and the float64 trajectory ([steps, ...]).
  """
  start = to_float64(default_params() if params is None else params)
  with jax.enable_x64(True):
    run = jax.jit(lambda p: trajectory(opt, steps, p, grad_fn))
    exact, moved = (jax.tree.map(np.asarray, run(p)) for p in (start, nudged(start)))
  return bound_from_runs(start, exact, moved, ulps_per_step=ulps_per_step), exact


def float32_tolerance(opt: optax.GradientTransformation, steps: int,
                      params: Params | None = None,
                      grad_fn: GradFn = default_grads) -> Params:
  """`2 B_t` per leaf and step: how far two float32 runs of `opt`'s math may lie apart."""
  return jax.tree.map(lambda b: 2.0 * b, error_bound(opt, steps, params, grad_fn)[0])


def program_bound(program: Callable[[Any], Any], start: Any, steps: int, *,
                  ulps_per_step: float = ULPS_PER_STEP, eps: float = EPS32) -> tuple[Any, Any]:
  """The bound `B` (module doc) on each output of any program of `steps` rounding steps.

  `program(start)` is run (jitted) in float64 from `start` and from `nudged(start)`; the caller
  builds it for float64 (under `jax.enable_x64`, a model of dtype float64). An output leaf `x`
  with largest magnitude `X` then lies within
  `ulps_per_step * eps * steps * max(max|x(nudged) - x| / (EPS32 * X), 1) * X`
  of its exact value in a run that rounds to `eps` (float32's by default); an integer output
  (a count) must be exact: its bound is 0.

  Returns:
    `(bound, exact)`: per output leaf a float and the float64 output (NumPy arrays).
  """
  start = to_float64(start)
  with jax.enable_x64(True):
    run = jax.jit(program)
    exact, moved = (jax.tree.map(np.asarray, run(p)) for p in (start, nudged(start)))

  def leaf_bound(x: np.ndarray, y: np.ndarray) -> float:
    if not _is_float(x):
      return 0.0
    both_nan = np.isnan(x) & np.isnan(y)  # a metric a step does not compute: NaN in both
    size = max(float(np.max(np.abs(np.where(both_nan, 0.0, x)), initial=0.0)), 1e-30)
    gap = np.where(both_nan, 0.0, np.abs(y - x))
    grown = float(np.max(gap, initial=0.0)) / (EPS32 * size)
    amplification = np.inf if np.isnan(grown) else max(grown, 1.0)
    return ulps_per_step * eps * steps * amplification * size

  return jax.tree.map(leaf_bound, exact, moved), exact
