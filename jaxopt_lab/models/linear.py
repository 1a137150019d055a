"""Logistic regression: one linear unit whose logit the loss passes through a sigmoid."""

from __future__ import annotations

import jax
from flax import nnx

from jaxopt_lab.models.core import compute_dtype, param_dtype


class LogisticRegression(nnx.Module):
  """Binary logistic regression, ``p(y=1 | x) = sigmoid(w . x + b)``.

  ``__call__`` returns the logit ``w . x + b`` (shape ``x.shape[:-1]``), not the probability: the
  loss applies the sigmoid inside a log-sigmoid binary cross-entropy, which is stable for logits of
  any size. ``predict_proba`` gives the probability.
  """

  def __init__(self, features: int = 10, *, dtype: str = 'float32', rngs: nnx.Rngs):
    """Args: features: input size; dtype: compute dtype (parameters stay float32, except
    under float64); rngs: init."""
    self.linear = nnx.Linear(
        features, 1, dtype=compute_dtype(dtype), param_dtype=param_dtype(dtype), rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x)[..., 0]

  def predict_proba(self, x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self(x))
