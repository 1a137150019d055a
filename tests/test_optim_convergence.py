"""Each optimizer reaches the minimum of a badly conditioned quadratic and of Rosenbrock.

Budgets and tolerances (with the settings in the tables below):
- quadratic f(x) = 1/2 sum_i h_i x_i^2, h log-spaced from 1 to 100 (condition number 100),
  x_0 = 1 (f(x_0) = 151): within 400 steps, f(x) <= 1e-12 and max |x_i| <= 1e-5;
- Rosenbrock f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 from (-1.2, 1): within 3000 steps,
  max(|x - 1|, |y - 1|) <= 1e-2.
The adaptive methods use a cosine decay of the learning rate to 0 over the budget (a constant
rate leaves them oscillating at a distance set by the rate). AdamW is run without weight decay:
decoupled decay moves the fixed point away from the minimum (its decay is tested elsewhere).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import optim

CURVATURES = jnp.logspace(0, 2, 10)
QUADRATIC_STEPS, ROSENBROCK_STEPS = 400, 3000


def quadratic(x):
  return 0.5 * jnp.sum(CURVATURES * x**2)


def rosenbrock(x):
  return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _cosine(peak, steps):
  return optim.warmup_cosine_decay_schedule(peak, 0, steps)


QUADRATIC_OPTIMIZERS = {
    'sgd': optim.sgd(0.03, momentum=0.7),
    'sgd_nesterov': optim.sgd(0.01, momentum=0.8, nesterov=True),
    'adam': optim.adam(_cosine(0.1, QUADRATIC_STEPS)),
    'adamw': optim.adamw(_cosine(0.1, QUADRATIC_STEPS), weight_decay=0.0),
    'rmsprop': optim.rmsprop(_cosine(0.03, QUADRATIC_STEPS), momentum=0.5),
    'rmsprop_centered': optim.rmsprop(_cosine(0.03, QUADRATIC_STEPS), centered=True,
                                      momentum=0.5),
}
ROSENBROCK_OPTIMIZERS = {
    'sgd': optim.sgd(1e-3, momentum=0.9),
    'sgd_nesterov': optim.sgd(1e-3, momentum=0.9, nesterov=True),
    'adam': optim.adam(_cosine(0.05, ROSENBROCK_STEPS)),
    'adamw': optim.adamw(_cosine(0.05, ROSENBROCK_STEPS), weight_decay=0.0),
    'rmsprop': optim.rmsprop(_cosine(0.01, ROSENBROCK_STEPS), momentum=0.9),
    'rmsprop_centered': optim.rmsprop(_cosine(0.01, ROSENBROCK_STEPS), centered=True,
                                      momentum=0.9),
}


def _minimize(opt, f, x0, steps):
  def step(carry, _):
    x, state = carry
    updates, state = opt.update(jax.grad(f)(x), state, x)
    return (optax.apply_updates(x, updates), state), None

  return jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)[0][0]


@functools.cache
def _final_points(problem):
  """Final iterates of every optimizer on `problem`, from one compiled program."""
  if problem == 'quadratic':
    table, f, x0, steps = QUADRATIC_OPTIMIZERS, quadratic, jnp.ones(10), QUADRATIC_STEPS
  else:
    table, f, x0, steps = ROSENBROCK_OPTIMIZERS, rosenbrock, jnp.asarray([-1.2, 1.0]), (
        ROSENBROCK_STEPS)
  return jax.jit(lambda: {name: _minimize(opt, f, x0, steps) for name, opt in table.items()})()


@pytest.mark.parametrize('name', list(QUADRATIC_OPTIMIZERS))
def test_reaches_minimum_of_ill_conditioned_quadratic(name):
  x = _final_points('quadratic')[name]
  assert float(quadratic(x)) <= 1e-12, float(quadratic(x))
  assert float(jnp.max(jnp.abs(x))) <= 1e-5


@pytest.mark.parametrize('name', list(ROSENBROCK_OPTIMIZERS))
def test_reaches_minimum_of_rosenbrock(name):
  x = np.asarray(_final_points('rosenbrock')[name])
  np.testing.assert_allclose(x, [1.0, 1.0], rtol=0, atol=1e-2)
