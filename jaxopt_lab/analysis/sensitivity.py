"""Learning-rate sensitivity of each group: the profile over the swept lrs, Wortsman et al.'s
sensitivity and the basins around the best lr."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxopt_lab.analysis import stats
from jaxopt_lab.analysis.results import Group
from jaxopt_lab.analysis.selection import NO_INTERVAL, Interval, best_index, interval, nan_stat

BASIN_TOLERANCES = (0.01, 0.05)  # of the improvement from initialisation (`stats.basin_width`)


@dataclasses.dataclass(frozen=True)
class LrCurve:
  """The validation metric against the learning rate for one group.

  At each swept lr the configuration with the best mean over replicates is shown (when other
  value factors vary too, this is the profile over them).
  """

  lr: np.ndarray  # [L] increasing
  config: np.ndarray  # [L] configuration index in the group
  values: np.ndarray  # [L, R] scored validation metric (diverged at the cap, unfinished NaN)
  diverged: np.ndarray  # bool [L, R]
  clipped: np.ndarray  # bool [L, R]: finished, not diverged, worse than the cap: counted at it
  diverged_step: np.ndarray  # [L, R]
  mean: np.ndarray  # [L] mean over replicates
  low: np.ndarray  # [L] interval of the mean (`stats.mean_interval` of the metric's kind)
  high: np.ndarray
  n: np.ndarray  # [L] finished replicates


@dataclasses.dataclass(frozen=True)
class Sensitivity:
  group: Group
  curve: LrCurve | None  # None when the group has no known learning rate
  best_lr: float
  best_mean: float  # mean validation metric over replicates at best_lr
  sensitivity: Interval  # Wortsman et al. LR sensitivity, mean over replicates
  basins: tuple[stats.Basin, ...]  # on the mean curve, one per BASIN_TOLERANCES
  diverged_points: int
  first_diverged_lr: float  # smallest lr with a diverged replicate; NaN when none


def lr_curve(group: Group, mode: str, kind: str) -> LrCurve | None:
  """The profile of the validation metric over the group's swept learning rates."""
  scored = group.scored("valid")
  means = nan_stat(scored, np.nanmean)
  lrs = np.unique(group.lr[np.isfinite(group.lr)])
  if lrs.size == 0:
    return None
  chosen = []
  for lr in lrs:
    candidates = np.flatnonzero(group.lr == lr)
    best = best_index(means[candidates], mode)
    chosen.append(candidates[max(best, 0)])
  chosen = np.array(chosen)
  values = scored[chosen]
  low, high, n, mean = [], [], [], []
  for row in values:
    iv = interval(row, kind)
    mean.append(iv.value)
    low.append(iv.low)
    high.append(iv.high)
    n.append(iv.n)
  raw = group.valid[chosen]
  worse = raw > group.cap if mode == "min" else raw < group.cap
  clipped = group.finished[chosen] & ~group.diverged[chosen] & np.isfinite(raw) & worse
  return LrCurve(lr=lrs, config=chosen, values=values, diverged=group.diverged[chosen],
                 clipped=clipped,
                 diverged_step=group.diverged_step[chosen], mean=np.array(mean),
                 low=np.array(low), high=np.array(high), n=np.array(n))


def sensitivity(group: Group, mode: str, kind: str) -> Sensitivity:
  """LR sensitivity (per replicate, then mean and interval) and basin widths of one group."""
  curve = lr_curve(group, mode, kind)
  nan_basins = tuple(stats.Basin(t, math.nan, math.nan, math.nan, False, False)
                     for t in BASIN_TOLERANCES)
  diverged_points = int(group.diverged.sum())
  if curve is None:
    return Sensitivity(group, None, math.nan, math.nan, NO_INTERVAL, nan_basins,
                       diverged_points, math.nan)
  per_replicate = [stats.lr_sensitivity(curve.values[:, r], group.cap, mode)
                   for r in range(curve.values.shape[1])
                   if np.all(np.isfinite(curve.values[:, r]))]
  sens = interval(np.array(per_replicate), "general")
  best = best_index(curve.mean, mode)
  ok = np.isfinite(curve.mean)
  basins = (tuple(stats.basin_width(curve.lr[ok], curve.mean[ok], t, mode,
                                     reference=group.cap)
                  for t in BASIN_TOLERANCES) if ok.any() else nan_basins)
  div_lrs = curve.lr[curve.diverged.any(axis=1)]
  return Sensitivity(
      group=group, curve=curve, best_lr=float(curve.lr[best]) if best >= 0 else math.nan,
      best_mean=float(curve.mean[best]) if best >= 0 else math.nan, sensitivity=sens,
      basins=basins, diverged_points=diverged_points,
      first_diverged_lr=float(div_lrs.min()) if div_lrs.size else math.nan)


