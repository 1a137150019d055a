"""Learning curves of the recommended configurations and their lr neighbours; tuning curves."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxopt_lab.analysis import stats
from jaxopt_lab.analysis.results import Experiment, Group
from jaxopt_lab.analysis.selection import Selection, nan_stat


def tuning(group: Group, mode: str, *, num_resamples: int, seed: int) -> stats.TuningCurve | None:
  """Expected best validation metric after k draws from the group's finished points."""
  values = group.scored("valid")[group.finished]
  values = values[np.isfinite(values)]
  if values.size == 0:
    return None
  return stats.tuning_curve(values, mode, num_resamples=num_resamples, seed=seed)

@dataclasses.dataclass(frozen=True)
class LearningCurve:
  role: str  # "best", "lower lr" or "higher lr"
  lr: float
  points: tuple[int, ...]
  step: np.ndarray  # the logged evaluation steps
  valid: np.ndarray  # mean over the replicates at each step
  valid_low: np.ndarray  # the lowest and highest replicate at each step (the seed band)
  valid_high: np.ndarray
  train_step: np.ndarray | None  # the logged train steps (their own cadence)
  train: np.ndarray | None  # mean train metric, when logged


def _mean_curve(curves, points, split, metric):
  series = [curves.get(p, {}).get(split) for p in points]
  series = [s for s in series if s is not None and metric in s]
  if not series:
    return None, None, None, None
  steps = np.unique(np.concatenate([s["step"] for s in series]))
  grid = np.full((len(series), steps.size), np.nan)
  for i, s in enumerate(series):
    grid[i, np.searchsorted(steps, s["step"])] = s[metric]
  return (steps, nan_stat(grid, np.nanmean, axis=0), nan_stat(grid, np.nanmin, axis=0),
          nan_stat(grid, np.nanmax, axis=0))


def learning_curves(exp: Experiment, sel: Selection) -> list[LearningCurve]:
  """Curves of the chosen configuration and of its neighbours in learning rate.

  The neighbours are the configurations at the next lower and higher swept lr with every other
  value factor equal; where there are none (random and quasi-random designs), the nearest lrs.
  """
  group = sel.group
  if sel.config < 0:
    return []
  others = [f for f in group.factors if f != "learning_rate"]
  same = [c for c in range(group.num_configs)
          if all(str(group.levels[f][c]) == str(group.levels[f][sel.config]) for f in others)
          and np.isfinite(group.lr[c])]
  if len(same) < 2:  # space-filling designs: the nearest swept lrs, other factors differing
    same = [c for c in range(group.num_configs) if np.isfinite(group.lr[c])]
  same.sort(key=lambda c: group.lr[c])
  chosen = [(sel.config, "best")]
  if sel.config in same:
    i = same.index(sel.config)
    if i > 0:
      chosen.append((same[i - 1], "lower lr"))
    if i + 1 < len(same):
      chosen.append((same[i + 1], "higher lr"))
  out = []
  for c, role in chosen:
    points = tuple(int(p) for p in group.point[c][group.finished[c]])
    step, valid, low, high = _mean_curve(exp.curves, points, "valid", exp.metric)
    if step is None:
      continue
    train_step, train, _, _ = _mean_curve(exp.curves, points, "train", exp.metric)
    out.append(LearningCurve(role, float(group.lr[c]), points, step, valid, low, high,
                             train_step, train))
  return out


