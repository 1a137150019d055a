"""Parametrizations of width: standard (SP) and maximal-update (μP), declared in one place.

μP (Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466, Table 8 and Definition 4.1), for
the Adam family, in the width-multiplier form of the ``mup`` package: with
``m = width / base_width`` (the fan-in of a layer over its fan-in at the base width),

=================== ======================== ================= ==========================
layer               initialisation std       forward           Adam learning rate
=================== ======================== ================= ==========================
input (embeddings,  as SP                    as SP             as SP
biases, norms)
hidden matrices     SP's std / sqrt(m)       as SP             lr / m
                    (variance ∝ 1 / fan_in)
output (readout)    SP's std at base_width   logits / m        as SP
attention           --                       q.k sqrt(d0) / d  --
=================== ======================== ================= ==========================

``d`` is the head size and ``d0`` the head size at ``base_width``: the logits are
``q.k / sqrt(d)`` at the base width and ``q.k / d``-proportional beyond it. Every multiplier is 1
at ``m = 1``, so μP at ``base_width`` is SP exactly (the models skip a multiplication by 1).

The learning-rate column reaches every optimizer, plugins included, through one mechanism:
the task declares a tree of per-parameter multipliers (``tasks.Task.lr_multipliers``) and the
trainer chains ``optim.multipliers.scale_by_multipliers`` after the user's optimizer, scaling each
parameter's update. For the Adam family (Adam, AdamW, RMSprop, sign methods: updates of size
about lr whatever the gradient's scale) this is Table 8's ``lr / m``. A decoupled weight decay
inside the optimizer is scaled with the update (``lr * wd / m`` on hidden matrices): the ``mup``
package's ``MuAdam(decoupled_wd=True)``; its default multiplies ``wd`` by ``m`` instead.
The learning-rate column (Adam's, and SGD's: ``lr * m`` on input-like parameters and the
readout, ``lr`` on hidden matrices) is declared in ``optim.multipliers``, per the optimizer's
rule; the models say which parameter is which.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

PARAMETRIZATIONS = ('sp', 'mup')


class Multipliers(NamedTuple):
  """The width multipliers a model reads (all 1 under SP and at ``base_width``).

  Attributes:
    width: ``m = width / base_width``.
    hidden_init: factor on the initialisation std of hidden matrices, ``1 / sqrt(m)``.
    output: factor on the logits, ``1 / m``.
    output_init: factor on the readout's initialisation std when it is not tied to an input
      embedding, ``sqrt(m)`` (its variance ``1 / base fan-in``: constant in width).
    attention: factor on the queries, ``1 / sqrt(m)``: logits ``q.k sqrt(d0) / d``.
  """

  width: float
  hidden_init: float
  output: float
  output_init: float
  attention: float


def check(parametrization: Any, base_width: Any) -> None:
  """Raises a one-line ValueError for an unknown parametrization or a bad base width."""
  if parametrization not in PARAMETRIZATIONS:
    raise ValueError(f"model.parametrization: unknown parametrization {parametrization!r}; "
                     f"valid choices: {', '.join(PARAMETRIZATIONS)}")
  if not isinstance(base_width, int) or isinstance(base_width, bool) or base_width < 1:
    raise ValueError(f'model.base_width: must be a positive integer; got {base_width!r}')


def multipliers(parametrization: str, width: int, base_width: int) -> Multipliers:
  """The multipliers of ``parametrization`` at ``width`` (μP relative to ``base_width``)."""
  check(parametrization, base_width)
  if parametrization == 'sp' or width == base_width:
    return Multipliers(1.0, 1.0, 1.0, 1.0, 1.0)
  m = width / base_width
  return Multipliers(m, 1 / math.sqrt(m), 1 / m, math.sqrt(m), 1 / math.sqrt(m))


def scaled(x: Any, factor: float) -> Any:
  """``x * factor``, or ``x`` itself where the factor is 1 (the SP program stays as it was)."""
  return x if factor == 1.0 else x * factor
