"""Which groups of a sweep ignore a training setting that another group uses.

A comparison of optimizers is like for like when every group trains with the same regularisation
and the same schedule. The factory gives every optimizer the config's learning-rate schedule,
warmup and gradient clipping, so those hold by construction; weight decay is the optimizer's own
value: `optax:nadam` has none, so swept against `adamw` at weight decay 0.1 it trains without
decay, silently. `unfair` names each such group; the sweep prints it on the console before
training and the report's fair-comparison section repeats it. No JAX here: the sweep calls it on
its groups' values, the report on summary.csv's hp_* columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from jaxopt_lab.expdir import HPARAM_PREFIX

# Values that a comparison of methods should hold the same across groups (0 means off).
SHARED = ('weight_decay', 'clip_norm', 'warmup')


def unfair(groups: Mapping[str, Mapping[str, Sequence[float]]]) -> list[str]:
  """One line per group that lacks a `SHARED` value another group sets to something non-zero.

  Args:
    groups: group name -> {value name: the group's values of it (one per point)}; a value the
      group's optimizer does not have is absent (or all NaN).

  Returns:
    Lines such as "group optimizer=optax:nadam ignores weight_decay (group optimizer=adamw
    trains with 0.1): its optimizer has no weight_decay, so the comparison is not like for like".
  """
  lines = []
  for name in SHARED:
    users = {g: sorted({float(v) for v in values[name] if not math.isnan(v) and v != 0})
             for g, values in groups.items() if name in values}
    users = {g: v for g, v in users.items() if v}
    if not users:
      continue
    other, used = next(iter(users.items()))
    for group, values in groups.items():
      if all(math.isnan(float(v)) for v in values.get(name, ())):
        lines.append(f'group {group} ignores {name} (group {other} trains with '
                     f'{", ".join(f"{v:g}" for v in used)}): its optimizer has no {name}, so the '
                     'comparison is not like for like')
  return lines


def from_summary(group: Sequence[str], columns: Mapping[str, Sequence[float]]
                 ) -> dict[str, dict[str, list[float]]]:
  """`unfair`'s input from summary.csv: its `group` column and its hp_* columns (NaN where the
  point's optimizer has no such value)."""
  out: dict[str, dict[str, list[float]]] = {}
  for i, g in enumerate(group):
    values = out.setdefault(str(g), {})
    for column, col_values in columns.items():
      if column.startswith(HPARAM_PREFIX):
        values.setdefault(column[len(HPARAM_PREFIX):], []).append(float(col_values[i]))
  return out
