"""Successive halving and Hyperband over the point axis of a group's population.

Successive halving (Jamieson & Talwalkar, 2016; Karnin et al., 2013) trains n value points to a
first rung of r steps, keeps the best 1/eta of them by the validation metric (the mean over each
value point's seed replicates, which stay together), trains those to r * eta steps, and so on up
to `train.steps`. Here a rung is a stage (`stages.Stage`): the survivors' states are gathered
into a smaller population and continue exactly where they were.

Hyperband (Li et al., 2018) runs successive halving in brackets that trade the number of points
against the first rung's budget: with s_max = floor(log_eta(steps / min_steps)), bracket s = s_max,
..., 0 starts ceil((s_max + 1) / (s + 1) * eta^s) fresh points at steps * eta^-s steps. Each
bracket's points are drawn by `sweep.adaptive.initial` (random, sobol or lhs) with their own
seed, so the design (design.csv, its `bracket` column) is known before anything trains.

Rungs of successive halving: with n value points and `min_steps` = 0 (auto) there are
s + 1 rungs, s = floor(log_eta(n)), at round(steps * eta^(k - s)) steps, k = 0..s, so that about
one value point reaches the last rung. With `min_steps` = r > 0, the rungs are r, r eta, ...
(below `steps`) and `steps`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxopt_lab.sweep import stages

# Hyperband without `min_steps`: the most exploratory bracket starts at steps / eta^3.
_HYPERBAND_AUTO_DEPTH = 3


def _log_floor(x: float, eta: int) -> int:
  """floor(log_eta(x)) for x >= 1, exact at powers of eta."""
  k = 0
  while eta ** (k + 1) <= x * (1 + 1e-12):
    k += 1
  return k


def rung_steps(steps: int, eta: int, min_steps: int, num_points: int) -> list[int]:
  """The steps at which successive halving ranks its points; the last one is `steps`."""
  if min_steps > 0:
    rungs, r = [], min_steps
    while r < steps:
      rungs.append(r)
      r *= eta
    return rungs + [steps]
  s = _log_floor(max(num_points, 1), eta)
  return sorted({max(1, round(steps * float(eta) ** (k - s))) for k in range(s + 1)})


def hyperband_brackets(steps: int, eta: int, min_steps: int, brackets: int = 0
                       ) -> list[tuple[int, list[int]]]:
  """Hyperband's brackets, most exploratory first: (value points, rung steps) of each."""
  if min_steps <= 0:
    min_steps = max(1, round(steps / eta**_HYPERBAND_AUTO_DEPTH))
  s_max = _log_floor(steps / min_steps, eta)
  out = []
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) / (s + 1) * eta**s)
    rungs = sorted({max(1, round(steps * float(eta) ** (k - s))) for k in range(s + 1)})
    out.append((n, rungs))
  return out[:brackets] if brackets > 0 else out


def keep(scores: np.ndarray, eta: int) -> np.ndarray:
  """Indices of the value points a rung keeps: the best max(1, n // eta) by score (lower is
  better), in rank order; a point whose score is not finite (diverged) is never kept.

  Args:
    scores: [n] float, each value point's mean score over its replicates.
    eta: the reduction factor.
  """
  scores = np.asarray(scores, np.float64)
  order = np.argsort(np.where(np.isfinite(scores), scores, np.inf), kind="stable")
  order = order[np.isfinite(scores[order])]
  return order[: max(1, len(scores) // eta)]


def value_points(positions: Sequence[int], points: Sequence[Any]) -> list[list[int]]:
  """`positions` grouped by value point (same values, any replicate), in order of appearance."""
  out: dict[tuple, list[int]] = {}
  for i in positions:
    out.setdefault(tuple(sorted(points[i].values.items())), []).append(int(i))
  return list(out.values())


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `sweep.adaptive` field a halving design cannot run with."""
  a, steps = config.sweep.adaptive, int(config.train.steps)
  eta = a.eta
  if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
    raise ValueError(f"sweep.adaptive.eta: must be an int >= 2 (each rung keeps 1/eta of the "
                     f"points), got {eta!r}")
  m = a.min_steps
  if isinstance(m, bool) or not isinstance(m, int) or m < 0:
    raise ValueError(f"sweep.adaptive.min_steps: must be an int >= 0 (0: auto), got {m!r}")
  if m >= steps:
    raise ValueError(f"sweep.adaptive.min_steps: the first rung ({m} steps) must come before the "
                     f"run's end (train.steps={steps})")
  b = a.brackets
  if isinstance(b, bool) or not isinstance(b, int) or b < 0:
    raise ValueError(f"sweep.adaptive.brackets: must be an int >= 0 (0: all), got {b!r}")


class Policy:
  """Successive halving (`sweep.design = 'successive_halving'`) or Hyperband ('hyperband') of
  one group, as a `stages.Policy`.

  Args:
    points: the group's points (`design.Point`s; Hyperband's carry their bracket in `tags`).
    config: the group's config.
  """

  def __init__(self, points: Sequence[Any], config: ml_collections.ConfigDict):
    self.points, self.eta = list(points), int(config.sweep.adaptive.eta)
    steps, min_steps = int(config.train.steps), int(config.sweep.adaptive.min_steps)
    self.brackets: list[tuple[list[list[int]], list[int]]] = []  # (value points, rungs)
    if config.sweep.design == "hyperband":
      by_bracket: dict[int, list[int]] = {}
      for i, p in enumerate(self.points):
        by_bracket.setdefault(int(p.tags["bracket"]), []).append(i)
      sizes = hyperband_brackets(steps, self.eta, min_steps, int(config.sweep.adaptive.brackets))
      for b, (_, rungs) in enumerate(sizes):
        self.brackets.append((value_points(by_bracket[b], self.points), rungs))
    else:
      vps = value_points(range(len(self.points)), self.points)
      self.brackets.append((vps, rung_steps(steps, self.eta, min_steps, len(vps))))
    # stage index -> (bracket, rung, the stage's value points as lists of positions in `slots`)
    self._made: dict[int, tuple[int, int, list[list[int]]]] = {}

  def _stage(self, index: int, bracket: int, rung: int, vps: list[list[int]],
             source: np.ndarray | None) -> stages.Stage:
    slots = np.array([i for vp in vps for i in vp], np.int64)
    at = {int(i): j for j, i in enumerate(slots)}
    self._made[index] = (bracket, rung, [[at[i] for i in vp] for vp in vps])
    rungs = self.brackets[bracket][1]
    where = f"bracket {bracket + 1}/{len(self.brackets)}, " if len(self.brackets) > 1 else ""
    note = (f"{where}rung {rung + 1}/{len(rungs)}: {len(vps)} value point"
            f"{'s' * (len(vps) != 1)} to step {rungs[rung]}")
    return stages.Stage(index, slots, rungs[rung], source=source, note=note)

  def first(self) -> stages.Stage:
    return self._stage(0, 0, 0, self.brackets[0][0], None)

  def next(self, stage: stages.Stage, scores: np.ndarray) -> stages.Stage | None:
    bracket, rung, vps = self._made[stage.index]
    rungs = self.brackets[bracket][1]
    if rung + 1 < len(rungs):
      means = np.array([np.mean(np.asarray(scores)[vp]) for vp in vps])
      kept = keep(means, self.eta)
      if len(kept):
        source = np.array([j for k in kept for j in vps[k]], np.int64)
        survivors = [[int(stage.slots[j]) for j in vps[k]] for k in kept]
        return self._stage(stage.index + 1, bracket, rung + 1, survivors, source)
    if bracket + 1 < len(self.brackets):
      return self._stage(stage.index + 1, bracket + 1, 0, self.brackets[bracket + 1][0], None)
    return None
