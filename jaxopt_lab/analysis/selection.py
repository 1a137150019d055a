"""The fair comparison: each group tuned on the validation metric, compared on the test metric.

* **The compared quantity is the tuned optimizer**, not one configuration: on each seed
  (replicate) r, the group's configuration with the best final valid metric on that seed is
  chosen and its final test metric on the same seed is the group's value for r. Each seed's
  choice uses only that seed's points, so the values are independent over seeds and paired
  across groups (common random numbers): the paired t-test is valid for "tuned A against tuned
  B" with the choosing inside it. Comparing the two configurations that are best on the mean
  over seeds instead tests those configurations, whose true test values differ by the luck of
  the choice: 5.5-6.3% false "beats" at 5% (16 learning rates, 3 seeds; `tests/test_verdict.py`).
* **The recommended configuration** (the lr to use next) is the one with the best mean valid
  metric over seeds. Its valid mean is the selection criterion: biased by the choice (the
  winner's curse) and shown without an interval.
* **One rule for intervals and decisions**: the m pairs of groups are decided by the paired
  t-test with Bonferroni's correction (adjusted p < alpha, the experiment's level
  `looks.alpha_at`), and each pair's interval is the simultaneous one at level 1 - alpha / m:
  it excludes 0 exactly when the decision says the two differ.

A diverged point counts at the group's cap (`Group.scored`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np

from jaxopt_lab.analysis import stats
from jaxopt_lab.analysis.results import Group


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over replicates with its 95% interval (NaN ends when n < 2)."""

  value: float
  low: float
  high: float
  n: int
  method: str = ""  # `stats.interval_method`; "" without an interval


NO_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)


def interval(values: np.ndarray, kind: str) -> Interval:
  """The mean of the finite `values` with its interval (`stats.mean_interval` for `kind`)."""
  v = np.asarray(values, dtype=np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return NO_INTERVAL
  low, high = stats.mean_interval(v, kind=kind)
  return Interval(float(np.mean(v)), low, high, int(v.size), stats.interval_method(v.size, kind))


def point_value(values: np.ndarray) -> Interval:
  """The mean of the finite `values` without an interval (a selection criterion)."""
  v = np.asarray(values, dtype=np.float64)
  v = v[np.isfinite(v)]
  return Interval(float(np.mean(v)), math.nan, math.nan, int(v.size)) if v.size else NO_INTERVAL


def nan_stat(values: np.ndarray, fn, axis: int = -1) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as wanted
    return fn(values, axis=axis)


def nan_mean(values: np.ndarray) -> np.ndarray:
  """Mean over the last axis ignoring NaN (unfinished); NaN where nothing is finished."""
  return nan_stat(values, np.nanmean)


def better(a: float, b: float, mode: str) -> bool:
  if math.isnan(b):
    return not math.isnan(a)
  return (a < b) if mode == "min" else (a > b)


def best_index(values: np.ndarray, mode: str) -> int:
  """Index of the best finite value (the first one on ties); -1 when none is finite."""
  best = -1
  for i, v in enumerate(values):
    if np.isfinite(v) and (best < 0 or better(v, values[best], mode)):
      best = i
  return best


def tuned_per_seed(valid: np.ndarray, test: np.ndarray, mode: str) -> tuple[np.ndarray, ...]:
  """Per replicate: the configuration best on valid, its valid and its test value.

  Vectorised over leading axes; ties go to the first configuration.

  Args:
    valid: [..., C, R] scored valid metric (NaN unfinished).
    test: [..., C, R] scored test metric.
    mode: "min" or "max".

  Returns:
    (config [..., R], -1 where no configuration finished; valid [..., R]; test [..., R]),
    NaN where none finished.
  """
  valid, test = np.asarray(valid, np.float64), np.asarray(test, np.float64)
  key = valid if mode == "min" else -valid
  key = np.where(np.isnan(key), np.inf, key)
  chosen = np.argmin(key, axis=-2)[..., None, :]
  ok = np.any(np.isfinite(valid), axis=-2)

  def pick(x: np.ndarray) -> np.ndarray:
    return np.where(ok, np.take_along_axis(x, chosen, axis=-2)[..., 0, :], np.nan)

  return np.where(ok, chosen[..., 0, :], -1), pick(valid), pick(test)


@dataclasses.dataclass(frozen=True)
class Selection:
  """A group tuned on the validation metric (the module docstring)."""

  group: Group
  config: int  # the recommended configuration (best mean valid); -1 when none finished
  settings: dict[str, object]  # value-factor levels of the recommended configuration
  lr: float
  points: tuple[int, ...]  # the finished points of the recommended configuration
  valid: Interval  # its mean valid metric: the selection criterion, no interval
  test: Interval  # the tuned optimizer's test metric: mean over seeds of `test_values`
  test_values: np.ndarray  # [R] test metric of the per-seed choice (NaN: no finished point)
  seed_configs: np.ndarray  # [R] the configuration chosen on each seed (-1: none)
  diverged_replicates: int  # at the recommended configuration
  num_configs: int  # tuning budget: configurations with a finished point
  num_points: int  # ... finished points
  steps: float  # ... steps per point (the most any finished point did)


def select(group: Group, mode: str, kind: str) -> Selection:
  """The group's recommended configuration and its tuned per-seed values."""
  valid = group.scored("valid")
  means = nan_stat(valid, np.nanmean)
  best = best_index(means, mode)
  r = group.point.shape[1]
  budget = dict(num_configs=int(group.finished.any(axis=1).sum()),
                num_points=int(group.finished.sum()),
                steps=float(np.nanmax(group.steps)) if np.isfinite(group.steps).any() else math.nan)
  if best < 0:
    return Selection(group, -1, {}, math.nan, (), NO_INTERVAL, NO_INTERVAL, np.full(r, np.nan),
                     np.full(r, -1), 0, **budget)
  seed_configs, _, test_values = tuned_per_seed(valid, group.scored("test"), mode)
  return Selection(
      group=group, config=best,
      settings={f: group.levels[f][best] for f in group.factors}, lr=float(group.lr[best]),
      points=tuple(int(p) for p in group.point[best][group.finished[best]]),
      valid=point_value(valid[best]), test=interval(test_values, kind),
      test_values=test_values, seed_configs=seed_configs,
      diverged_replicates=int(group.diverged[best].sum()), **budget)


@dataclasses.dataclass(frozen=True)
class Pair:
  a: Selection
  b: Selection
  comparison: stats.PairedComparison | None  # None when no replicate is finished in both
  p_adjusted: float = math.nan  # the t-test p, Bonferroni-adjusted over every pair of groups
  num_pairs: int = 1  # the family the adjustment and the interval's level are over
  alpha: float = 0.05  # the family-wise level of the decision (`looks.alpha_at`)

  @property
  def level(self) -> float:
    """The level of `comparison`'s interval: simultaneous over the family."""
    return stats.simultaneous_level(self.alpha, self.num_pairs)

  @property
  def distinguishable(self) -> bool:
    return self.p_adjusted < self.alpha


def rank(selections: list[Selection], mode: str) -> list[Selection]:
  """Best first by the selection criterion, the mean validation metric; no result last."""
  def key(s: Selection) -> tuple[bool, float]:
    v = s.valid.value
    return (not np.isfinite(v), v if mode == "min" else -v)
  return sorted(selections, key=key)


def pair(a: Selection, b: Selection, num_pairs: int, alpha: float) -> Pair:
  """Paired comparison of the tuned test metric, a - b, over the replicates finished in both;
  the interval at the simultaneous level of `num_pairs` comparisons at family level `alpha`."""
  both = np.isfinite(a.test_values) & np.isfinite(b.test_values)
  comparison = None
  level = stats.simultaneous_level(alpha, num_pairs)
  if both.any():
    comparison = stats.paired_comparison(a.test_values[both], b.test_values[both], level=level)
  p = comparison.t_pvalue if comparison else math.nan
  return Pair(a, b, comparison, p, num_pairs, alpha)


def pairs(ranked: list[Selection], alpha: float) -> list[Pair]:
  """Every two ranked groups (a ranked before b), Bonferroni over all of them at `alpha`."""
  combos = list(itertools.combinations(ranked, 2))
  found = [pair(a, b, len(combos), alpha) for a, b in combos]
  adjusted = stats.bonferroni([p.p_adjusted for p in found], len(found))
  return [dataclasses.replace(p, p_adjusted=float(h)) for p, h in zip(found, adjusted, strict=True)]
