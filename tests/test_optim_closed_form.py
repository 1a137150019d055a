"""Our optimizers against updates worked out by hand.

- Adam's first step is -lr * g / (|g| + eps) whatever b1, b2 (bias correction undoes both
  averages); AdamW's adds -lr * wd * x.
- RMSprop's first step from initial_scale=0: -lr g / sqrt((1-d) g^2 + eps) (eps in the root),
  -lr g / (sqrt((1-d) g^2) + eps) (outside), -lr g / sqrt(d (1-d) g^2 + eps) (centered: the
  variance of the one-sample averages), and -lr g / sqrt(g^2 + eps) with bias correction.
- SGD with momentum on f(x) = a x^2 / 2 is a linear recurrence (below); its closed form through
  the roots of the characteristic polynomial is compared with 300 steps.
- AdamW with zero gradient: x_t = x_0 (1 - lr wd)^t, and masked leaves do not move.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lab import optim
from jaxopt_lab.optim import rounding, trajectories

# One first step is a dozen elementwise roundings per element (1 - b, the products by it, the
# square, the bias corrections, the root, + eps, the quotient, the product by lr, float32's lr
# and eps themselves), each relative <= u = eps/2, and no sum of opposite signs (the centered
# variance's nu - mu^2 = d (1 - d) g^2 loses at most 1 / d = 1.12 of relative precision): the
# relative error is below rounding.ULPS_PER_STEP = 16 eps = 32 u.
ONE_STEP = rounding.ULPS_PER_STEP * rounding.EPS32

G = jnp.asarray([3.0, -0.5, 1e-3, -2e-6, 40.0], jnp.float32)


def _first_update(opt, grads=G, params=None):
  params = jnp.ones_like(grads) if params is None else params
  updates, _ = opt.update(grads, opt.init(params), params)
  return np.asarray(updates, np.float64)


# Betas exact in float32 (1 - 2**-10, not 0.999): with a Python 0.999, `1 - b2` is rounded from
# float64 while `b2**t` is computed from float32(0.999), and the two differ by 1.3e-5 relative
# (in Optax too), which would hide a real error of that size.
B2 = 1 - 2**-10


@pytest.mark.parametrize('b1,b2', [(0.875, B2), (0.0, 0.5), (0.5, 0.0)])
@pytest.mark.parametrize('eps', [1e-8, 1e-3])
def test_adam_first_step(b1, b2, eps):
  lr = 0.01
  g = np.asarray(G, np.float64)
  expected = -lr * g / (np.abs(g) + eps)
  np.testing.assert_allclose(_first_update(optim.adam(lr, b1, b2, eps)), expected, rtol=ONE_STEP)


def test_adamw_first_step_adds_decay_times_learning_rate():
  lr, wd, eps = 0.01, 0.3, 1e-8
  x = jnp.asarray([2.0, -1.0, 0.5, -4.0, 3.0], jnp.float32)  # Signs of G: no cancellation.
  g, xd = np.asarray(G, np.float64), np.asarray(x, np.float64)
  expected = -lr * (g / (np.abs(g) + eps) + wd * xd)
  got = _first_update(optim.adamw(lr, b2=B2, eps=eps, weight_decay=wd), params=x)
  np.testing.assert_allclose(got, expected, rtol=ONE_STEP)


@pytest.mark.parametrize('decay', [0.9, 0.99])
def test_rmsprop_first_step(decay):
  lr, eps = 0.1, 1e-4
  g = np.asarray(G, np.float64)
  cases = {
      'eps_in_sqrt': (dict(), -lr * g / np.sqrt((1 - decay) * g**2 + eps)),
      'eps_outside': (dict(eps_in_sqrt=False), -lr * g / (np.sqrt((1 - decay) * g**2) + eps)),
      'centered': (dict(centered=True), -lr * g / np.sqrt(decay * (1 - decay) * g**2 + eps)),
      'bias_correction': (dict(bias_correction=True), -lr * g / np.sqrt(g**2 + eps)),
      'momentum': (dict(momentum=0.9), -lr * g / np.sqrt((1 - decay) * g**2 + eps)),
  }
  for name, (kwargs, expected) in cases.items():
    got = _first_update(optim.rmsprop(lr, decay=decay, eps=eps, **kwargs))
    np.testing.assert_allclose(got, expected, rtol=ONE_STEP, err_msg=name)


def _heavy_ball_closed_form(a, lr, mu, nesterov, steps):
  """x_t for SGD with momentum on f(x) = a x^2 / 2 from x_0 = 1, in float64.

  With g_t = a x_t and m_t = g_t + mu m_{t-1} (m_0 = 0):
    heavy ball: x_{t+1} = x_t - lr m_t, so x_{t+1} = (1 + mu - lr a) x_t - mu x_{t-1};
    Nesterov:   x_{t+1} = x_t - lr (g_t + mu m_t),
                so x_{t+1} = (1 + mu)(1 - lr a) x_t - mu (1 - lr a) x_{t-1};
  and x_1 = (1 - lr a) x_0, resp. (1 - lr a (1 + mu)) x_0. Then x_t = A r1^t + B r2^t with
  r1, r2 the roots of r^2 - p r + q (p, q the coefficients above) and A + B = x_0,
  A r1 + B r2 = x_1 (complex roots when the iteration oscillates).
  """
  if nesterov:
    p, q, x1 = (1 + mu) * (1 - lr * a), mu * (1 - lr * a), 1 - lr * a * (1 + mu)
  else:
    p, q, x1 = 1 + mu - lr * a, mu + 0 * a, 1 - lr * a
  disc = np.sqrt((p**2 - 4 * q).astype(np.complex128))
  r1, r2 = (p + disc) / 2, (p - disc) / 2
  b = (x1 - r1) / (r2 - r1)  # From A + B = 1 and A r1 + B r2 = x1.
  t = np.arange(1, steps + 1)[:, None]
  return np.real((1 - b) * r1**t + b * r2**t)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_on_parabola_follows_linear_recurrence(nesterov):
  # Curvatures giving over-damped, under-damped (complex roots) and fast-decaying cases.
  # float32's numbers for a, lr and mu (the run's), so the closed form is of the same iteration.
  a = np.asarray(np.float32([0.3, 1.0, 2.5, 7.0]), np.float64)
  lr, mu, steps = float(np.float32(0.1)), float(np.float32(0.8)), 300
  opt = optim.sgd(lr, momentum=mu, nesterov=nesterov)
  x0 = jnp.ones(a.shape, jnp.float32)
  xs = trajectories.trajectory(opt, steps, x0, lambda x, t: jnp.asarray(a, x.dtype) * x)
  expected = _heavy_ball_closed_form(a, lr, mu, nesterov, steps)
  # The float32 run lies within B_t of the exact iterates (rounding.error_bound: ulps x steps x
  # the measured conditioning); the closed form, in float64, within 2^-29 of that: 2 B_t holds.
  bound, _ = rounding.error_bound(opt, steps, x0, lambda x, t: jnp.asarray(a, x.dtype) * x)
  gap = np.abs(np.asarray(xs, np.float64) - expected)
  assert np.all(gap <= 2 * bound[:, None]), (gap.max(), np.max(gap / bound[:, None]))
  assert np.max(np.abs(expected[:20])) > 0.5  # The comparison covers non-trivial values.


def test_sgd_without_momentum_is_gradient_descent_and_momentum_zero_is_identical():
  lr = 0.25
  expected = -lr * np.asarray(G, np.float64)
  # -lr * g rounds once (exactly here: lr = 1/4 is a power of 2).
  np.testing.assert_allclose(_first_update(optim.sgd(lr)), expected, rtol=rounding.EPS32 / 2)
  plain, zero = optim.sgd(lr), optim.sgd(lr, momentum=0.0)
  x = jnp.asarray([1.0, -2.0, 0.5, 3.0, 0.1])
  s_plain, s_zero = plain.init(x), zero.init(x)
  for k in range(4):
    g = x * (k + 1.5)
    u_plain, s_plain = plain.update(g, s_plain, x)
    u_zero, s_zero = zero.update(g, s_zero, x)
    np.testing.assert_array_equal(u_plain, u_zero)
    x = x + u_plain


def test_adamw_decays_a_parameter_with_zero_gradient_geometrically():
  lr, wd, steps = 2**-4, 0.25, 100  # lr * wd = 2^-6 and 1 - 2^-6 exact: the closed form's numbers
  params = {'decayed': jnp.asarray([1.5, -2.0, 3.0]), 'masked': jnp.asarray([1.5, -2.0, 3.0])}
  opt = optim.adamw(lr, weight_decay=wd, mask={'decayed': True, 'masked': False})
  zeros = lambda p, t: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
  traj = trajectories.trajectory(opt, steps, params, zeros)
  final = jax.tree.map(lambda x: x[-1], traj)
  t = np.arange(1, steps + 1)[:, None]
  expected = np.asarray([1.5, -2.0, 3.0]) * (1 - lr * wd) ** t
  # Within 2 B_t (rounding.error_bound): the float32 run's rounding, and far less the closed form's.
  bound, _ = rounding.error_bound(opt, steps, params, zeros)
  gap = np.abs(np.asarray(traj['decayed'], np.float64) - expected)
  assert np.all(gap <= 2 * bound['decayed'][:, None]), gap.max()
  np.testing.assert_array_equal(final['masked'], params['masked'])


def test_learning_rate_schedule_is_evaluated_at_the_step_count():
  # u_t = -lr(t) * g for plain SGD: the schedule sees 0, 1, 2, ... on successive updates.
  opt = optim.sgd(lambda count: 0.5 ** count.astype(jnp.float32))
  x = jnp.zeros(3)
  state = opt.init(x)
  for t in range(5):
    u, state = opt.update(jnp.ones(3), state, x)
    np.testing.assert_array_equal(u, -(0.5**t) * np.ones(3, np.float32))
