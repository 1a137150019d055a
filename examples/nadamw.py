r"""NAdamW (Dozat 2016, with decoupled weight decay) as a paper's code writes it: plain JAX + Optax
types, the learning rate a number.

The factory uses `learning_rate` as a number (`-learning_rate * ...`); the tool passes it the
schedule's value at each step (see the README, "Bring your own optimizer"). Its math is checked
without a reference implementation in tests/test_examples.py (the kit's closed form under a
constant gradient, scale invariance, float32 against float64), and against `optax.nadamw`.

.. math::

  m_t = b_1 m_{t-1} + (1 - b_1) g_t, \quad v_t = b_2 v_{t-1} + (1 - b_2) g_t^2, \\
  \hat m_t = \frac{b_1 m_t}{1 - b_1^{t+1}} + \frac{(1 - b_1) g_t}{1 - b_1^t}, \quad
  \hat v_t = \frac{v_t}{1 - b_2^t}, \quad
  u_t = -\eta \left(\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda x_t\right)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class NAdamWState(NamedTuple):
  """The step count (int32) and the two moments."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def nadamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4):
  """NAdamW: Adam with a Nesterov look-ahead on the first moment, decoupled weight decay."""

  def init_fn(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return NAdamWState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update_fn(grads, state, params):
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)

    def update(m, v, g, p):
      m_hat = b1 * m / (1 - b1 ** (count + 1)) + (1 - b1) * g / (1 - b1 ** count)
      v_hat = v / (1 - b2 ** count)
      return -learning_rate * (m_hat / (jnp.sqrt(v_hat) + eps) + weight_decay * p)

    return jax.tree.map(update, mu, nu, grads, params), NAdamWState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
