"""Paired comparisons over common-random-number seeds and the correction of a family of them.

* `paired_comparison`: the t interval of the mean difference (the paired t-test inverted, so the
  two always agree), the paired t-test and the Wilcoxon signed-rank test.
* `bonferroni`: adjusted p-values over a family of comparisons, and `simultaneous_level`: the
  level of the intervals that agree with them (Holm was dropped: no interval matches its steps).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import stats as sp_stats

from jaxopt_lab.analysis.intervals import t_interval

# Fewest pairs for which a two-sided exact Wilcoxon test can reach p < 0.05 (2 / 2**6).
WILCOXON_MIN_PAIRS = 6


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """Paired comparison of a and b over the same seeds; differences are a - b."""

  n: int  # pairs used
  mean_a: float
  mean_b: float
  mean_diff: float
  sd_diff: float  # sample standard deviation of the differences (ddof 1); NaN when n < 2
  ci_low: float  # t interval of mean_diff (the paired t-test inverted); NaN when n < 2
  ci_high: float
  t_statistic: float  # scipy.stats.ttest_rel(a, b); NaN when n < 2 or no spread
  t_pvalue: float
  wilcoxon_statistic: float  # scipy.stats.wilcoxon(a - b); NaN when n < WILCOXON_MIN_PAIRS
  wilcoxon_pvalue: float


def paired_comparison(a: np.typing.ArrayLike, b: np.typing.ArrayLike, *,
                      level: float = 0.95) -> PairedComparison:
  """Compares paired samples a[i], b[i] (same seed i): interval and tests of the mean difference.

  The interval is the Student t interval of the mean difference: it excludes 0 exactly when
  the paired t-test (SciPy's `ttest_rel`) gives p < 1 - level, at every n. With at least
  `WILCOXON_MIN_PAIRS` pairs not all equal, the Wilcoxon signed-rank test (two-sided) is added.

  Args:
    a: values of the first arm, one per seed; all finite.
    b: values of the second arm, the same seeds in the same order.
    level: coverage of the interval.

  Returns:
    A `PairedComparison`.
  """
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"a and b must be 1-D of the same non-zero length, got {a.shape}, {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("a and b must be finite; drop failed pairs first")
  d = a - b
  n = d.size
  low, high = t_interval(d, level=level)
  t_stat = t_p = w_stat = w_p = math.nan
  if n >= 2 and np.ptp(d) > 0:
    res = sp_stats.ttest_rel(a, b)
    t_stat, t_p = float(res.statistic), float(res.pvalue)
  if n >= WILCOXON_MIN_PAIRS and np.any(d != 0):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # SciPy warns when it falls back to the normal approximation.
      res = sp_stats.wilcoxon(a, b)
    w_stat, w_p = float(res.statistic), float(res.pvalue)
  return PairedComparison(
      n=n, mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=float(d.mean()),
      sd_diff=float(d.std(ddof=1)) if n >= 2 else math.nan, ci_low=low, ci_high=high,
      t_statistic=t_stat, t_pvalue=t_p, wilcoxon_statistic=w_stat, wilcoxon_pvalue=w_p)


def bonferroni(pvalues: np.typing.ArrayLike, num_comparisons: int | None = None) -> np.ndarray:
  """Bonferroni-adjusted p-values: min(1, m p), m = `num_comparisons` (default: the number of
  finite entries); NaN stays NaN.

  Rejecting where the adjusted p < alpha keeps the family-wise error rate at alpha, and it is
  the decision that simultaneous intervals at level 1 - alpha / m (`simultaneous_level`) agree
  with exactly: each excludes 0 when, and only when, its adjusted p < alpha.
  """
  p = np.asarray(pvalues, dtype=np.float64)
  m = int(np.isfinite(p).sum()) if num_comparisons is None else num_comparisons
  return np.minimum(1.0, p * max(m, 1))


def simultaneous_level(alpha: float, num_comparisons: int) -> float:
  """The level of each of `num_comparisons` intervals that hold together at 1 - alpha."""
  return 1.0 - alpha / max(num_comparisons, 1)
