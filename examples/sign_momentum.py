"""Sign descent with momentum (signSGD / Signum, Bernstein et al. 2018), in the fewest lines.

  python scripts/sweep.py --config=experiments/sweep_sign_momentum.py --workdir=/tmp/sign
"""

import jax
import jax.numpy as jnp
import optax


def sign_momentum(learning_rate, beta=0.9):
  """u = -lr * sign(m), m <- beta m + (1 - beta) g. Every float argument is a value to sweep."""

  def init_fn(params):
    return jax.tree.map(jnp.zeros_like, params)

  def update_fn(grads, m, params=None):
    m = jax.tree.map(lambda mi, g: beta * mi + (1.0 - beta) * g, m, grads)
    return jax.tree.map(jnp.sign, m), m

  return optax.chain(optax.GradientTransformation(init_fn, update_fn),
                     optax.scale_by_learning_rate(learning_rate))
