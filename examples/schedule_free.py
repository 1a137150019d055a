r"""Schedule-free AdamW (Defazio et al. 2024), written against jaxopt_lab's public API only.

With `z` the base (RMS-scaled, momentum-free AdamW) iterate, `x` its weighted average and `y` the
point where gradients are taken (the parameters the trainer holds):

.. math::

  \begin{align*}
    z_{t+1} &\leftarrow z_t + \Delta_{\text{AdamW}}(g_t), \qquad
    c_{t+1} \leftarrow \frac{w_{t+1}}{\sum_{i \le t+1} w_i}, \quad w_t = (\max_{i \le t}
    \alpha_i)^{p} \\
    x_{t+1} &\leftarrow (1 - c_{t+1})\, x_t + c_{t+1} z_{t+1}, \qquad
    y_{t+1} \leftarrow \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}
  \end{align*}

`x` is recovered from `y` and `z` ( x = (y - (1 - b1) z) / b1 ), so the state holds only `z` and
the second moment. Evaluate at `x` (`eval_params`) for the method's best numbers; the trainer
evaluates at `y`, the point it trains. Checked against `optax.contrib.schedule_free_adamw` over
200 steps in tests/test_examples.py.

References:
  Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_, 2024
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab import optim


class ScheduleFreeState(NamedTuple):
  """Step count from 1 (int32), the largest learning rate so far, the sum of the averaging
  weights, the base optimizer's state and the base iterate `z`."""

  count: jax.Array
  max_lr: jax.Array
  weight_sum: jax.Array
  base: optax.OptState
  z: optax.Params


def eval_params(state: ScheduleFreeState, params: optax.Params,
                b1: jax.typing.ArrayLike = 0.9) -> optax.Params:
  """The averaged iterate `x`, where the method is meant to be evaluated."""
  return jax.tree.map(lambda y, z: (y - (1.0 - b1) * z) / b1, params, state.z)


def schedule_free_adamw(learning_rate: optax.ScalarOrSchedule = 0.0025,
                        b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                        eps: jax.typing.ArrayLike = 1e-8,
                        weight_decay: jax.typing.ArrayLike = 0.0,
                        weight_lr_power: jax.typing.ArrayLike = 2.0
                        ) -> optax.GradientTransformation:
  """Schedule-free AdamW; the signature and defaults of `optax.contrib.schedule_free_adamw`."""
  base = optax.chain(
      optim.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
      optim.add_decayed_weights(weight_decay),
      optim.scale_by_learning_rate(learning_rate))

  def init_fn(params):
    return ScheduleFreeState(jnp.ones([], jnp.int32), jnp.zeros([], jnp.float32),
                             jnp.zeros([], jnp.float32), base.init(params),
                             jax.tree.map(jnp.copy, params))

  def update_fn(updates, state, params=None):
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr, jnp.float32))
    weight = max_lr**weight_lr_power
    weight_sum = state.weight_sum + weight
    c = jnp.nan_to_num(weight / weight_sum, nan=0.0)  # 0 / 0 while the learning rate is 0
    steps, base_state = base.update(updates, state.base, params)
    z = jax.tree.map(lambda zi, s: (zi + s).astype(zi.dtype), state.z, steps)
    x = eval_params(state, params, b1)
    x = jax.tree.map(lambda xi, zi: (1.0 - c) * xi + c * zi, x, z)
    y = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
    new_updates = jax.tree.map(lambda yi, p: (yi - p).astype(p.dtype), y, params)
    return new_updates, ScheduleFreeState(optax.safe_increment(state.count), max_lr,
                                          weight_sum, base_state, z)

  return optax.GradientTransformation(init_fn, update_fn)


# Ranges and sweep scales; still callable as `schedule_free_adamw(...)`.
schedule_free_adamw = optim.declare(
    schedule_free_adamw, values=[
        optim.Value("learning_rate", 0.0025, low=0.0, scale="log"),
        optim.Value("b1", 0.9, low=0.0, high=1.0, include_low=False),
        optim.Value("b2", 0.999, low=0.0, high=1.0),
        optim.Value("eps", 1e-8, low=0.0, scale="log"),
        optim.Value("weight_decay", 0.0, low=0.0, scale="log"),
        optim.Value("weight_lr_power", 2.0, low=0.0),
    ])
