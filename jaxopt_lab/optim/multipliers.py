"""Per-parameter multipliers on any optimizer's updates: how μP's learning rates reach every
optimizer, plugins included, with no change to the optimizer.

A model declares a tree of factors shaped like its parameters (``tasks.Task.lr_multipliers``,
e.g. μP's ``1 / m`` on hidden matrices, ``models.parametrization``); the trainer builds
``with_multipliers(optimizer, tree)``. For an optimizer whose update is ``-lr * d`` (Adam, AdamW,
RMSprop, SGD, a user's), scaling the update of a leaf by ``c`` is training that leaf at
learning rate ``c * lr``, whatever the schedule, clipping or direction ``d``.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each leaf of the updates by the matching leaf of ``multipliers``.

  .. math::
    u_i \\leftarrow c_i \\, u_i

  Args:
    multipliers: a pytree with the parameters' structure whose leaves are Python floats (or
      arrays broadcasting to the leaf). A leaf of exactly 1.0 is passed through untouched, so a
      tree of ones changes no bit of any update.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """

  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda u, c: u if isinstance(c, float) and c == 1.0 else u * c,
                          updates, multipliers)
    return scaled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def with_multipliers(optimizer: optax.GradientTransformation, multipliers: Any | None
                     ) -> optax.GradientTransformation:
  """``optimizer`` followed by ``scale_by_multipliers(multipliers)``; ``optimizer`` itself (its
  state unchanged) where ``multipliers`` is None.

  A weight decay inside ``optimizer`` is scaled with its update: under μP's ``1 / m`` this is the
  ``mup`` package's ``MuAdam(decoupled_wd=True)``.
  """
  if multipliers is None:
    return optimizer
  return optax.chain(optimizer, scale_by_multipliers(multipliers))
