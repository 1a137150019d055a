"""Power of the paired t-test and the seeds a comparison needs."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sp_stats

from jaxopt_lab.analysis.intervals import check_level


def paired_t_power(effect_size: float, n: int, *, alpha: float = 0.05) -> float:
  r"""Power of the two-sided paired (one-sample) t-test with n pairs at level alpha.

  With $d$ = mean difference / standard deviation of the differences, the statistic follows a
  noncentral t with $n - 1$ degrees of freedom and noncentrality $d\sqrt n$:
  $P(|T| > t_{n-1, 1-\alpha/2})$.

  Args:
    effect_size: d, the standardised mean difference.
    n: pairs, >= 2.
    alpha: level of the test.

  Returns:
    The power, in [alpha, 1].
  """
  if n < 2:
    raise ValueError(f"n must be >= 2, got {n}")
  check_level(alpha)
  df = n - 1
  crit = sp_stats.t.ppf(1.0 - alpha / 2.0, df)
  nc = abs(effect_size) * math.sqrt(n)
  power = float(sp_stats.nct.sf(crit, df, nc) + sp_stats.nct.cdf(-crit, df, nc))
  if not math.isfinite(power):  # SciPy's nct fails far in the tail: T is near normal there
    power = float(sp_stats.norm.sf(crit - nc) + sp_stats.norm.cdf(-crit - nc))
  return power


def seeds_for_power(mean_diff: float, sd_diff: float, *, power: float = 0.8,
                    alpha: float = 0.05, max_n: int = 100_000) -> int | None:
  """Fewest paired seeds for which the paired t-test detects `mean_diff` with `power`.

  The effect size is the observed one, |mean_diff| / sd_diff (a plug-in estimate: the answer
  is "about" that many seeds).

  Args:
    mean_diff: the observed mean difference.
    sd_diff: the observed standard deviation of the differences, > 0.
    power: wanted power, in (0, 1).
    alpha: level of the test.
    max_n: the search stops here.

  Returns:
    The number of seeds, or None when it exceeds `max_n` (or mean_diff is 0).
  """
  check_level(power)
  if not (np.isfinite(mean_diff) and np.isfinite(sd_diff) and sd_diff > 0):
    raise ValueError(f"need a finite mean_diff and sd_diff > 0, got {mean_diff}, {sd_diff}")
  d = abs(mean_diff) / sd_diff
  if d == 0:
    return None
  if paired_t_power(d, 2, alpha=alpha) >= power:
    return 2
  lo, hi = 2, 4  # power grows with n: double, then bisect for the first n that reaches it
  while paired_t_power(d, hi, alpha=alpha) < power:
    if hi >= max_n:
      return None
    lo, hi = hi, min(2 * hi, max_n)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if paired_t_power(d, mid, alpha=alpha) >= power:
      hi = mid
    else:
      lo = mid
  return hi




def effect_size_interval(
    t_statistic: np.typing.ArrayLike, n: int, *, level: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
  r"""Confidence interval of the standardised effect d = mean / sd of paired differences.

  The paired t statistic of n normal differences follows a noncentral t with n - 1 degrees of
  freedom and noncentrality $d\sqrt n$; the interval inverts it (the ends solve
  $F_{nct}(t; n-1, d\sqrt n) = (1 \pm \text{level}) / 2$), so it is exact for normal
  differences at every n. Vectorised: 50 bisection steps on every entry at once.

  Args:
    t_statistic: observed paired t statistics, finite.
    n: pairs, >= 2.
    level: coverage of the interval.

  Returns:
    (low, high) of d, arrays the shape of `t_statistic`.
  """
  check_level(level)
  if n < 2:
    raise ValueError(f"n must be >= 2, got {n}")
  t = np.asarray(t_statistic, dtype=np.float64)
  df = n - 1

  def solve(target: float) -> np.ndarray:
    lo = t - 10.0 * (np.abs(t) + 10.0)  # cdf(t; nc) falls from 1 to 0 as nc grows
    hi = t + 10.0 * (np.abs(t) + 10.0)
    for _ in range(50):
      mid = (lo + hi) / 2.0
      cdf = sp_stats.nct.cdf(t, df, mid)
      # SciPy's nct gives NaN far in a tail, where the cdf is 1 (nc far below t) or 0.
      above = np.where(np.isnan(cdf), mid < t, cdf > target)
      lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return (lo + hi) / 2.0 / math.sqrt(n)

  return solve((1.0 + level) / 2.0), solve((1.0 - level) / 2.0)


def seeds_range(mean_diff: float, sd_diff: float, n: int, *, alpha: float, power: float = 0.8,
                level: float = 0.8, max_n: int = 100_000) -> tuple[int, int | None]:
  """The seeds a paired comparison needs, as a range that holds the true need with `level`.

  The effect size d is not known, only its interval (`effect_size_interval`); the seeds needed
  (`seeds_for_power` at level `alpha`) fall as |d| grows, so the range runs from the seeds for
  the largest |d| in the interval to those for the smallest (unbounded, None, when the
  interval holds 0 or the need passes `max_n`). It holds the seeds the true d needs whenever
  the interval holds d: with probability `level` at least, for normal differences.

  Args:
    mean_diff: the observed mean difference.
    sd_diff: the observed standard deviation of the differences, > 0.
    n: pairs, >= 2.
    alpha: the level of the test that is to resolve the difference (alpha / m for m pairs).
    power: wanted power.
    level: coverage of the range.
    max_n: the search stops here.

  Returns:
    (fewest, most) seeds; most is None when unbounded.
  """
  if not (np.isfinite(mean_diff) and np.isfinite(sd_diff) and sd_diff > 0):
    raise ValueError(f"need a finite mean_diff and sd_diff > 0, got {mean_diff}, {sd_diff}")
  low, high = effect_size_interval(mean_diff / sd_diff * math.sqrt(n), n, level=level)
  low, high = float(low), float(high)
  largest = max(abs(low), abs(high))
  smallest = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
  fewest = seeds_for_power(largest, 1.0, power=power, alpha=alpha, max_n=max_n)
  most = seeds_for_power(smallest, 1.0, power=power, alpha=alpha, max_n=max_n) if (
      smallest > 0) else None
  return (max_n if fewest is None else fewest), most
