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
import optax
import pytest

from jaxopt_lab import optim

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
  np.testing.assert_allclose(_first_update(optim.adam(lr, b1, b2, eps)), expected, rtol=1e-6)


def test_adamw_first_step_adds_decay_times_learning_rate():
  lr, wd, eps = 0.01, 0.3, 1e-8
  x = jnp.asarray([2.0, -1.0, 0.5, -4.0, 3.0], jnp.float32)  # Signs of G: no cancellation.
  g, xd = np.asarray(G, np.float64), np.asarray(x, np.float64)
  expected = -lr * (g / (np.abs(g) + eps) + wd * xd)
  got = _first_update(optim.adamw(lr, b2=B2, eps=eps, weight_decay=wd), params=x)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


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
    np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)


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
  a = np.asarray([0.3, 1.0, 2.5, 7.0], np.float64)
  lr, mu, steps = 0.1, 0.8, 300
  opt = optim.sgd(lr, momentum=mu, nesterov=nesterov)

  def step(carry, _):
    x, state = carry
    updates, state = opt.update(jnp.asarray(a, jnp.float32) * x, state, x)
    x = x + updates
    return (x, state), x

  x0 = jnp.ones(a.shape, jnp.float32)
  _, xs = jax.jit(lambda: jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps))()
  expected = _heavy_ball_closed_form(a, lr, mu, nesterov, steps)
  # The recurrence contracts, so float32 rounding stays near machine precision of x_0 = 1.
  np.testing.assert_allclose(np.asarray(xs, np.float64), expected, rtol=1e-4, atol=1e-6)
  assert np.max(np.abs(expected[:20])) > 0.5  # The comparison covers non-trivial values.


def test_sgd_without_momentum_is_gradient_descent_and_momentum_zero_is_identical():
  lr = 0.25
  expected = -lr * np.asarray(G, np.float64)
  np.testing.assert_allclose(_first_update(optim.sgd(lr)), expected, rtol=1e-7)
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
  lr, wd, steps = 0.05, 0.2, 100
  params = {'decayed': jnp.asarray([1.5, -2.0, 3.0]), 'masked': jnp.asarray([1.5, -2.0, 3.0])}
  opt = optim.adamw(lr, weight_decay=wd, mask={'decayed': True, 'masked': False})
  zeros = jax.tree.map(jnp.zeros_like, params)

  def step(carry, _):
    p, s = carry
    u, s = opt.update(zeros, s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p['decayed']

  (final, _), traj = jax.jit(
      lambda: jax.lax.scan(step, (params, opt.init(params)), None, length=steps))()
  t = np.arange(1, steps + 1)[:, None]
  expected = np.asarray([1.5, -2.0, 3.0]) * (1 - lr * wd) ** t
  np.testing.assert_allclose(np.asarray(traj, np.float64), expected, rtol=1e-5)
  np.testing.assert_array_equal(final['masked'], params['masked'])


def test_learning_rate_schedule_is_evaluated_at_the_step_count():
  # u_t = -lr(t) * g for plain SGD: the schedule sees 0, 1, 2, ... on successive updates.
  opt = optim.sgd(lambda count: 0.5 ** count.astype(jnp.float32))
  x = jnp.zeros(3)
  state = opt.init(x)
  for t in range(5):
    u, state = opt.update(jnp.ones(3), state, x)
    np.testing.assert_array_equal(u, -(0.5**t) * np.ones(3, np.float32))
