"""Our optimizers against Optax's aliases, step by step, over a grid of hyperparameters.

Each case runs 200 steps on a noisy separable quadratic over a pytree of mixed shapes (a scalar,
a vector, a 3-D tensor, nested), float32: g_t = h * (x_t - c) + noise_t, the noise standard
normal and drawn once in advance. (Noise as large as the signal keeps centered RMSprop's
variance estimate v - m^2 well conditioned; with little noise v and m^2 nearly cancel and any
ulp of difference is amplified a hundredfold.) The whole trajectory is one `lax.scan` under one
`jit`, and the numeric hyperparameters are a vmapped axis of arrays, so every structure (flags,
momentum or not, mask) compiles once for its whole value grid; a few cases also pass Python
floats, as a user of Optax would. The
parameters at every step must agree with Optax's within twice the derived float32 rounding bound
of Optax's run (`optim.rounding`: ulps x steps x the trajectory's conditioning, measured on
float64 runs of Optax's optimizer over the same grid, vmapped the same way), on any CPU.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import optim
from jaxopt_lab.optim import rounding, testing

STEPS = 200


def _tree(key):
  k = jax.random.split(key, 3)
  return {
      'scalar': jax.random.normal(k[0], ()),
      'layer': {
          'vec': jax.random.normal(k[1], (7,)),
          'tensor': jax.random.normal(k[2], (2, 3, 4)),
      },
  }


PARAMS0 = _tree(jax.random.key(0))
TARGET = _tree(jax.random.key(1))
CURVATURE = jax.tree.map(lambda x: 0.5 + 1.5 * jax.nn.sigmoid(x), _tree(jax.random.key(2)))
NOISE = jax.vmap(_tree)(
    jax.random.split(jax.random.key(3), STEPS))


def _grads(params, t):
  return jax.tree.map(lambda p, h, c, n: h * (p - c) + n[t], params, CURVATURE, TARGET, NOISE)


def _trajectory(opt, start=PARAMS0):
  """Parameters after each of STEPS updates of `opt` on the noisy quadratic: [STEPS, ...]."""
  return testing.trajectory(opt, STEPS, start, _grads)


def _bounds(run_refs, grid):
  """{case: [B_t per leaf, one per point]}: the rounding bound of each reference run, from
  float64 runs of `run_refs(hp, start) -> {case: trajectory}` over the grid (vmapped)."""
  exact, moved = rounding.vmapped_runs(run_refs, grid, PARAMS0)
  start, n = rounding.to_float64(PARAMS0), len(next(iter(grid.values())))
  pick = lambda tree, case, i: jax.tree.map(lambda x: x[i], tree[case])  # noqa: E731
  return {case: [rounding.bound_from_runs(start, pick(exact, case, i), pick(moved, case, i))
                 for i in range(n)] for case in exact}


def _grid(**values):
  """The Cartesian product of `values` as float32 arrays with a leading point axis."""
  names = list(values)
  rows = list(itertools.product(*values.values()))
  return {n: jnp.asarray([r[i] for r in rows], jnp.float32) for i, n in enumerate(names)}


def _assert_same(ours, ref, bound, case):
  """Agreement at every step within twice `bound`, the reference run's rounding bound.

  Not bit for bit where a bias correction is involved: we debias by multiplying with the
  reciprocal and Optax by dividing (XLA rewrites one into the other in some programs and not in
  others, and differently for each CPU's vector instructions).
  """
  assert all(np.all(np.isfinite(b)) for b in jax.tree.leaves(ref)), (
      f'{case}: the reference diverged; pick a tamer grid')
  testing.compare_trajectories(ours, ref, bound=jax.tree.map(lambda b: 2 * b, bound), check=case)


@functools.cache
def _family_results(family):
  """{case: (ours, optax)} trajectories of every case of `family`, from ONE compiled program.

  Each case builds both optimizers from a dict of float32 arrays `hp` (vmapped over the family's
  grid), so a structure compiles once for all its values, and all structures of a family share
  one compilation (far cheaper than one each).
  """
  cases, grid = FAMILIES[family]

  def run_all(hp):
    return {name: (_trajectory(ours(hp)), _trajectory(ref(hp)))
            for name, (ours, ref) in cases.items()}

  return jax.jit(jax.vmap(run_all))(grid)


@functools.cache
def _family_bounds(family):
  cases, grid = FAMILIES[family]
  return _bounds(lambda hp, start: {name: _trajectory(ref(hp), start)
                                    for name, (_, ref) in cases.items()}, grid)


def _pair(build, **structure):
  """(ours, optax) builders from `build(module, hp, **structure)`."""
  return (functools.partial(build, optim, **structure),
          functools.partial(build, optax, **structure))


# --------------------------------------------------------------------------------------------
# SGD.


def _sgd(m, hp, momentum, nesterov):
  return m.sgd(hp['learning_rate'], momentum=hp['momentum'] if momentum else None,
               nesterov=nesterov)


SGD_CASES = {
    f'momentum={int(mo)}-nesterov={int(ne)}': _pair(_sgd, momentum=mo, nesterov=ne)
    for mo, ne in [(False, False), (True, False), (True, True)]
}
SGD_GRID = _grid(learning_rate=[0.01, 0.1], momentum=[0.0, 0.5, 0.9])


# --------------------------------------------------------------------------------------------
# Adam and AdamW.


def _adam(m, hp, nesterov):
  return m.adam(hp['learning_rate'], b1=hp['b1'], b2=hp['b2'], eps=hp['eps'],
                eps_root=hp['eps_root'], nesterov=nesterov)


ADAM_CASES = {f'nesterov={int(ne)}': _pair(_adam, nesterov=ne) for ne in (False, True)}
ADAM_GRID = _grid(
    learning_rate=[1e-3, 3e-2], b1=[0.0, 0.9], b2=[0.99, 0.999], eps=[1e-8, 1e-3],
    eps_root=[0.0, 1e-8])

MASKS = {
    'none': None,
    'prefix_tree': {'scalar': False, 'layer': True},
    'full_tree': {'scalar': True, 'layer': {'vec': False, 'tensor': True}},
    'callable': lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
}


def _adamw(m, hp, mask, nesterov):
  return m.adamw(hp['learning_rate'], b1=hp['b1'], b2=hp['b2'], eps=hp['eps'],
                 weight_decay=hp['weight_decay'], mask=MASKS[mask], nesterov=nesterov)


ADAMW_CASES = {
    f'mask={mask}-nesterov={int(ne)}': _pair(_adamw, mask=mask, nesterov=ne)
    for mask, ne in [('none', False), ('prefix_tree', False), ('full_tree', False),
                     ('callable', False), ('none', True)]
}
ADAMW_GRID = _grid(
    learning_rate=[1e-3, 3e-2], b1=[0.0, 0.9], b2=[0.99, 0.999], eps=[1e-8, 1e-3],
    weight_decay=[0.0, 1e-2, 0.5])


# --------------------------------------------------------------------------------------------
# RMSprop: every combination of the structural switches.


def _rmsprop(m, hp, centered, eps_in_sqrt, bias_correction, momentum, nesterov):
  # Centered with bias correction estimates a variance of exactly 0 at the first step (one
  # sample); Optax then takes the root of a rounding error (NaN when it is negative) and we
  # clip it at 0. A positive initial scale keeps that estimate positive, so the two agree.
  initial_scale = 1.0 + hp['initial_scale'] if (centered and bias_correction) else (
      hp['initial_scale'])
  return m.rmsprop(
      hp['learning_rate'], decay=hp['decay'], eps=hp['eps'], initial_scale=initial_scale,
      eps_in_sqrt=eps_in_sqrt, centered=centered,
      momentum=hp['momentum'] if momentum else None, nesterov=nesterov,
      bias_correction=bias_correction)


RMS_CASES = {
    f'centered={int(c)}-eps_in_sqrt={int(e)}-bias={int(b)}-momentum={int(mo)}-nesterov={int(ne)}':
        _pair(_rmsprop, centered=c, eps_in_sqrt=e, bias_correction=b, momentum=mo, nesterov=ne)
    # Every combination of the three switches without momentum, and heavy-ball and Nesterov
    # momentum each on two of them.
    for c, e, b, mo, ne in [
        *[(c, e, b, False, False) for c, e, b in itertools.product([False, True], repeat=3)],
        (False, True, False, True, False), (True, False, True, True, False),
        (False, False, True, True, True), (True, True, False, True, True)]
}
RMS_GRID = _grid(
    learning_rate=[1e-3, 1e-2], decay=[0.9, 0.99], eps=[1e-8, 1e-4], initial_scale=[0.0, 1.0],
    momentum=[0.0, 0.9])

FAMILIES = {
    'sgd': (SGD_CASES, SGD_GRID),
    'adam': (ADAM_CASES, ADAM_GRID),
    'adamw': (ADAMW_CASES, ADAMW_GRID),
    'rmsprop': (RMS_CASES, RMS_GRID),
}


@pytest.mark.parametrize('family,case', [(f, c) for f, (cases, _) in FAMILIES.items()
                                         for c in cases])
def test_matches_optax_over_value_grid(family, case):
  ours, ref = _family_results(family)[case]
  bounds = _family_bounds(family)[case]
  for i in range(len(jax.tree.leaves(ref)[0])):  # one trajectory per point of the grid
    pick = functools.partial(jax.tree.map, lambda x, i=i: x[i])
    _assert_same(pick(ours), pick(ref), bounds[i], f'{family} {case} point {i}')


# --------------------------------------------------------------------------------------------
# Python floats (compile-time constants), schedules and clipping, as an Optax user writes them.

FLOAT_CASES = {
    'sgd': lambda m: m.sgd(0.05, momentum=0.9, nesterov=True),
    'adam': lambda m: m.adam(3e-2, b1=0.8, b2=0.99, eps=1e-7),
    'adamw_masked': lambda m: m.adamw(3e-2, weight_decay=0.05,
                                      mask=lambda p: jax.tree.map(lambda x: x.ndim > 0, p)),
    'rmsprop_centered': lambda m: m.rmsprop(1e-2, decay=0.95, centered=True, momentum=0.5),
    'rmsprop_torch': lambda m: m.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
    'adamw_schedules': lambda m: m.adamw(
        optax.warmup_cosine_decay_schedule(0.0, 3e-2, warmup_steps=20, decay_steps=STEPS),
        weight_decay=optax.linear_schedule(0.1, 0.0, transition_steps=STEPS)),
    'clip_sgd': lambda m: optax.chain(
        (optim if m is optim else optax).clip_by_global_norm(0.5), m.sgd(0.1, momentum=0.9)),
}


@functools.cache
def _float_results():
  return jax.jit(lambda: {name: (_trajectory(make(optim)), _trajectory(make(optax)))
                          for name, make in FLOAT_CASES.items()})()


@pytest.mark.parametrize('case', list(FLOAT_CASES))
def test_matches_optax_with_python_floats(case):
  ours, ref = _float_results()[case]
  bound, _ = rounding.error_bound(FLOAT_CASES[case](optax), STEPS, PARAMS0, _grads)
  _assert_same(ours, ref, bound, case)
