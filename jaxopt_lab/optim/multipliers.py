"""Per-parameter multipliers on any optimizer's updates: how μP's learning rates reach every
optimizer, plugins included, with no change to the optimizer.

A model declares a tree of factors shaped like its parameters (``tasks.Task.lr_multipliers``,
e.g. μP's ``1 / m`` on hidden matrices, ``models.parametrization``); the trainer builds
``with_multipliers(optimizer, tree)``. For an optimizer whose update is ``-lr * d`` (Adam, AdamW,
RMSprop, SGD, a user's), scaling the update of a leaf by ``c`` is training that leaf at
learning rate ``c * lr``, whatever the schedule, clipping or direction ``d``.

μP's learning rates depend on how the optimizer's update scales with the gradient, so they
are declared here per *rule*, Yang et al. 2022 ("Tensor Programs V", arXiv 2203.03466), in the
form the models use (Table 8: the readout carries an output multiplier ``1 / m``), as
``lr * m**p`` with ``m = width / base_width`` of the dimension that grows:

================ =============================== ============== ==============
rule             input weights, all biases,      hidden weights output weights
                 norm gains (m of fan_out)       (m of fan_in)  (m of fan_in)
================ =============================== ============== ==============
``'adam'``       1                               1 / m          1
``'sgd'``        m                               1              m
================ =============================== ============== ==============

'adam' is for updates invariant to the gradient's scale (Adam, AdamW, RMSprop, Adagrad, sign
methods: ``u(c g) = u(g)``), 'sgd' for updates proportional to it (SGD, heavy ball, Nesterov:
``u(c g) = c u(g)``); the paper's Table 3 groups optimizers the same way. A vector whose
dimension does not grow (the readout's bias) has ``m = 1``. An optimizer declares its rule
(``registry.declare(..., mup_rule='sgd')``; default 'adam'), and the task a tree per rule
(``tasks.Task.lr_multipliers``); the trainer picks the optimizer's tree.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

RULES = ('adam', 'sgd')
LAYERS = ('input', 'hidden', 'output')
# The module docstring's table: the power of m in each learning rate.
MUP_LR_POWERS = {'adam': {'input': 0, 'hidden': -1, 'output': 0},
                 'sgd': {'input': 1, 'hidden': 0, 'output': 1}}


def check_rule(rule: Any, where: str = 'mup_rule') -> None:
  """Raises a one-line ValueError unless ``rule`` is one of RULES."""
  if rule not in RULES:
    raise ValueError(f'{where}: unknown μP rule {rule!r}; valid choices: {", ".join(RULES)}')


def mup_lr(rule: str, layer: str, m: float) -> float:
  """The factor ``m**p`` on the learning rate of a ``layer`` (of LAYERS) under ``rule``
  (module docstring); exactly 1.0 where ``m`` is 1 or the power 0, ``1 / m`` for -1."""
  check_rule(rule)
  if layer not in LAYERS:
    raise ValueError(f'layer: unknown kind {layer!r}; valid choices: {", ".join(LAYERS)}')
  power = MUP_LR_POWERS[rule][layer]
  if m == 1.0 or power == 0:
    return 1.0
  return float(m) if power == 1 else 1 / m


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
