r"""Lion (Chen et al. 2023), written as a user would: against jaxopt_lab's public API only.

.. math::

  \begin{align*}
    u_t &\leftarrow -\alpha_t \left(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
                                     + \lambda\, x_{t-1}\right) \\
    m_t &\leftarrow \beta_2 m_{t-1} + (1-\beta_2) g_t
  \end{align*}

A config names it `config.optimizer.name = "examples/lion.py:lion"` (from the repository root).
Checked against `optax.lion` over 200 steps in tests/test_examples.py.

References:
  Chen et al., `Symbolic Discovery of Optimization Algorithms
  <https://arxiv.org/abs/2302.06675>`_, 2023
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab import optim


class ScaleByLionState(NamedTuple):
  """The step count (int32) and the momentum `m` (an EMA of gradients, rate b2)."""

  count: jax.Array
  mu: optax.Updates


def scale_by_lion(b1: jax.typing.ArrayLike = 0.9,
                  b2: jax.typing.ArrayLike = 0.99) -> optax.GradientTransformation:
  """The sign of an interpolation of momentum and gradient; the momentum decays with b2."""

  def init_fn(params):
    return ScaleByLionState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    direction = jax.tree.map(lambda g, m: jnp.sign((1.0 - b1) * g + b1 * m), updates, state.mu)
    mu = jax.tree.map(lambda g, m: (1.0 - b2) * g + b2 * m, updates, state.mu)
    return direction, ScaleByLionState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def lion(learning_rate: optax.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.9,
         b2: jax.typing.ArrayLike = 0.99,
         weight_decay: jax.typing.ArrayLike = 1e-3) -> optax.GradientTransformation:
  """Lion with decoupled weight decay; the signature and defaults of `optax.lion`."""
  return optax.chain(scale_by_lion(b1, b2), optim.add_decayed_weights(weight_decay),
                     optim.scale_by_learning_rate(learning_rate))


# The declaration adds ranges and sweep scales (without it the plain function works as well);
# it stays callable as `lion(...)`.
lion = optim.declare(lion, values=[
    optim.Value("learning_rate", 1e-4, low=0.0, scale="log"),
    optim.Value("b1", 0.9, low=0.0, high=1.0),
    optim.Value("b2", 0.99, low=0.0, high=1.0),
    optim.Value("weight_decay", 1e-3, low=0.0, scale="log"),
])
