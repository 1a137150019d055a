"""What breaks silently: vmap = separate runs, jit = eager, no recompilation, dtypes, structure,
degenerate and extreme inputs, and errors that name the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lab import optim
from jaxopt_lab.optim import testing

# The optimizers under test, each built from a dict of hyperparameters (numbers or arrays).
BUILDERS = {
    'sgd': lambda hp: optim.sgd(hp['learning_rate'], momentum=hp['momentum'], nesterov=True),
    'adam': lambda hp: optim.adam(hp['learning_rate'], b1=hp['b1'], b2=hp['b2']),
    'adamw': lambda hp: optim.adamw(hp['learning_rate'], b1=hp['b1'], b2=hp['b2'],
                                    weight_decay=hp['weight_decay']),
    'rmsprop': lambda hp: optim.rmsprop(hp['learning_rate'], decay=hp['decay'],
                                        momentum=hp['momentum']),
}
HP = dict(learning_rate=0.01, b1=0.9, b2=0.99, momentum=0.9, decay=0.95, weight_decay=0.01)


def _params(dtype=jnp.float32):
  k = jax.random.split(jax.random.key(0), 3)
  return {
      'w': jax.random.normal(k[0], (3, 4), dtype),
      'b': (jax.random.normal(k[1], (4,), dtype), jax.random.normal(k[2], (), dtype)),
  }


def _grads(params, t):
  """A deterministic gradient field that changes with the step: 1.5 (x - 0.3) + 0.1 sin(t x)."""
  return jax.tree.map(lambda x: (1.5 * (x - 0.3) + 0.1 * jnp.sin(t * x)).astype(x.dtype), params)


# --------------------------------------------------------------------------------------------
# With the test kit: vmap = separate runs, one compilation for all values, jit = eager, a zero
# learning rate, dtypes and structure.

GRID = {  # 4 points: each value factor takes two values across them.
    'learning_rate': [1e-3, 3e-2, 1e-2, 1e-1],
    'b1': [0.9, 0.5, 0.0, 0.95],
    'b2': [0.999, 0.9, 0.99, 0.5],
    'momentum': [0.0, 0.9, 0.5, 0.99],
    'decay': [0.9, 0.99, 0.5, 0.95],
    'weight_decay': [0.0, 1e-2, 0.1, 0.5],
}


def _make(name):
  return lambda **hp: BUILDERS[name](hp)


@pytest.mark.parametrize('name', list(BUILDERS))
def test_vmap_over_hyperparameters_equals_separate_runs(name):
  # XLA may fuse a multiply-add into an FMA in one program and not in the other (differently on
  # each CPU): within the kit's derived rounding bound. (Centered RMSprop is checked with
  # complex parameters in test_optim_complex.py.)
  testing.check_vmap_equals_separate_runs(_make(name), GRID, steps=50)


@pytest.mark.parametrize('name', list(BUILDERS))
def test_new_hyperparameter_values_do_not_recompile(name):
  testing.check_no_recompile(_make(name), {k: v[0] for k, v in GRID.items()},
                             {k: v[1] for k, v in GRID.items()})


@pytest.mark.parametrize('name', list(BUILDERS))
def test_jit_equals_eager(name):
  testing.check_jit_equals_eager(BUILDERS[name](HP), steps=2)


@pytest.mark.parametrize('lr', [0.0, np.float32(0.0)], ids=['python', 'float32'])
@pytest.mark.parametrize('name', list(BUILDERS))
def test_zero_learning_rate_leaves_parameters_unchanged(name, lr):
  testing.check_zero_learning_rate_is_identity(BUILDERS[name](dict(HP, learning_rate=lr)))


@pytest.mark.parametrize('name', list(BUILDERS))
def test_zero_gradients(name):
  opt = BUILDERS[name](HP)
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = opt.init(params)
  for _ in range(3):
    updates, state = opt.update(zeros, state, params)
  expected = (jax.tree.map(lambda p: -HP['learning_rate'] * HP['weight_decay'] * p, params)
              if name == 'adamw' else zeros)
  for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(u, e, rtol=1e-6, atol=0)


@pytest.mark.parametrize('scale', [1e30, 1e-30])
@pytest.mark.parametrize('name', list(BUILDERS))
def test_extreme_gradients_give_finite_updates(name, scale):
  """Squares of 1e30 overflow float32 and of 1e-30 underflow: updates must stay finite."""
  opt = BUILDERS[name](dict(HP, weight_decay=0.0))
  params = jax.tree.map(jnp.zeros_like, _params())
  grads = jax.tree.map(lambda x: scale * jnp.sign(x + 0.5), _params())
  state = opt.init(params)
  first, state = opt.update(grads, state, params)
  for _ in range(3):
    updates, state = opt.update(grads, state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates)), name
  assert all(np.all(np.isfinite(s)) for s in jax.tree.leaves(state) if s.dtype != jnp.int32
             ) or scale > 1  # Second moments may be inf (not NaN) after an overflow.
  lr = HP['learning_rate']
  g = np.asarray(jax.tree.leaves(grads)[0], np.float64)
  u = np.asarray(jax.tree.leaves(first)[0], np.float64)
  # Where the float32 math is exact, the first step has its closed form.
  if name == 'sgd':
    np.testing.assert_allclose(u, -lr * (1 + HP['momentum']) * g, rtol=1e-6)
  elif name in ('adam', 'adamw') and scale < 1:
    np.testing.assert_allclose(u, -lr * g / (np.abs(g) + 1e-8), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Dtypes and tree structure.


@pytest.mark.parametrize('hp_kind', ['python', 'float32_array'])
@pytest.mark.parametrize('name', list(BUILDERS))
def test_dtypes_and_structure_are_preserved(name, hp_kind):
  """Abstract evaluation (no compilation): dtypes, shapes and tree structure of every output."""
  hp = HP if hp_kind == 'python' else {k: jnp.float32(v) for k, v in HP.items()}
  opt = BUILDERS[name](hp)
  testing.check_state_dtypes_stable(opt)
  for dtype in (jnp.float32, jnp.bfloat16):  # beyond the kit: the state is in the params' dtype
    state0 = jax.eval_shape(opt.init, _params(dtype))
    float_state = [s for s in jax.tree.leaves(state0) if jnp.issubdtype(s.dtype, jnp.floating)]
    assert all(s.dtype == dtype for s in float_state), name
    counts = [s for s in jax.tree.leaves(state0) if jnp.issubdtype(s.dtype, jnp.integer)]
    assert all(c.dtype == jnp.int32 and c.shape == () for c in counts), name


def test_accumulator_dtypes():
  params = _params()
  adam = optim.adam(1e-3, mu_dtype=jnp.bfloat16)
  state = adam.init(params)
  _, state = adam.update(_grads(params, 1.0), state, params)
  assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state[0].mu))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state[0].nu))
  sgd = optim.sgd(1e-3, momentum=0.9, accumulator_dtype=jnp.bfloat16)
  updates, state = sgd.update(_grads(params, 1.0), sgd.init(params), params)
  assert all(t.dtype == jnp.bfloat16 for t in jax.tree.leaves(state[0].trace))
  assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


# --------------------------------------------------------------------------------------------
# Errors name the argument; traced values are not checked.

BAD = [
    (lambda: optim.sgd(-0.1), 'learning_rate'),
    (lambda: optim.sgd(float('nan')), 'learning_rate'),
    (lambda: optim.sgd(np.asarray([0.1, -0.1])), 'learning_rate'),
    (lambda: optim.sgd(0.1, momentum=1.0), 'momentum'),
    (lambda: optim.sgd(0.1, momentum=-0.5), 'momentum'),
    (lambda: optim.adam(-1e-3), 'learning_rate'),
    (lambda: optim.adam(1e-3, b1=1.0), 'b1'),
    (lambda: optim.adam(1e-3, b1=-0.1), 'b1'),
    (lambda: optim.adam(1e-3, b2=1.5), 'b2'),
    (lambda: optim.adam(1e-3, eps=-1e-8), 'eps'),
    (lambda: optim.adam(1e-3, eps_root=-1.0), 'eps_root'),
    (lambda: optim.adamw(1e-3, weight_decay=-1e-4), 'weight_decay'),
    (lambda: optim.adamw(1e-3, b2=jnp.float32(1.0)), 'b2'),
    (lambda: optim.rmsprop(1e-3, decay=1.01), 'decay'),
    (lambda: optim.rmsprop(1e-3, decay=-0.1), 'decay'),
    (lambda: optim.rmsprop(1e-3, eps=-1.0), 'eps'),
    (lambda: optim.rmsprop(1e-3, momentum=1.0), 'momentum'),
    (lambda: optim.rmsprop(1e-3, initial_scale=-1.0), 'initial_scale'),
    (lambda: optim.rmsprop('0.1'), 'learning_rate'),
    (lambda: optim.scale_by_adam(b1=2.0), 'b1'),
    (lambda: optim.trace(decay=1.0), 'decay'),
    (lambda: optim.add_decayed_weights(-1.0), 'weight_decay'),
]


@pytest.mark.parametrize('call,name', BAD, ids=[f'{i}-{n}' for i, (_, n) in enumerate(BAD)])
def test_bad_values_raise_value_error_naming_the_argument(call, name):
  with pytest.raises(ValueError, match=rf'\b{name}\b'):
    call()


def test_boundary_values_are_accepted():
  optim.sgd(0.0, momentum=0.0)
  optim.adam(0.0, b1=0.0, b2=0.0, eps=0.0)
  optim.rmsprop(1e-3, decay=1.0, momentum=0.0)
  optim.adamw(1e-3, weight_decay=0.0)
  optim.sgd(lambda count: -1.0)  # A schedule is not evaluated to be checked.


def test_traced_values_are_not_checked():
  params = _params()

  @jax.jit
  def update(lr, b1):
    opt = optim.adam(lr, b1=b1)  # Out of range, but traced: no check, no concretization error.
    return opt.update(_grads(params, 0.0), opt.init(params))[0]

  jax.block_until_ready(update(-1.0, 2.0))
