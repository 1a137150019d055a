"""Statistics for optimizer experiments, in NumPy and SciPy.

* `t_interval` / `mean_interval`: the interval of a mean over seeds: Student t below
  `BCA_MIN_N` values (it keeps its coverage at n = 3 for normal data), BCa bootstrap from there.
* `bootstrap_ci`: percentile bootstrap interval of a mean or a median (vectorised).
* `paired_comparison`: paired differences over common-random-number seeds: the t interval of
  the mean difference (the inversion of the paired t-test, so the two always agree), paired
  t-test and Wilcoxon signed-rank test.
* `holm`: Holm's step-down adjustment of p-values over a family of comparisons.
* `paired_t_power` / `seeds_for_power`: power of the paired t-test (noncentral t) and the
  number of seeds that would resolve an observed difference.
* `expected_best_of_k` / `tuning_curve`: expected best value after k random draws (with
  replacement) from the swept points, in closed form, with a bootstrap band.
* `anova`: ANOVA of main effects and two-factor interactions for categorical factors.
* `variance_decomposition`: first-order variance shares (correlation ratios of binned factors).
* `lr_sensitivity` / `basin_width`: how much the loss depends on the learning rate.

Every function that can be told "min" or "max" treats the better value as the smaller or the
larger one; the others are mode-free.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats

MODES = ("min", "max")
STATISTICS = ("mean", "median")
# Fewest pairs for which a two-sided exact Wilcoxon test can reach p < 0.05 (2 / 2**6).
WILCOXON_MIN_PAIRS = 6
# Fewest values for a BCa bootstrap interval of a mean; below, the Student t interval (a
# bootstrap interval of 3 values is their range and covers the mean about 75% of the time).
BCA_MIN_N = 20


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_level(level: float) -> None:
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level!r}")


def _statistic(x: np.ndarray, statistic: str) -> np.ndarray:
  if statistic == "mean":
    return x.mean(axis=-1)
  if statistic == "median":
    return np.median(x, axis=-1)
  raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def _interval_samples(samples: np.typing.ArrayLike, level: float) -> np.ndarray:
  """`samples` as float64 with at least one value on the last axis; `level` checked."""
  _check_level(level)
  x = np.asarray(samples, dtype=np.float64)
  if x.ndim == 0 or x.shape[-1] == 0:
    raise ValueError("samples must have at least one value on the last axis")
  return x


def t_interval(
    samples: np.typing.ArrayLike, *, level: float = 0.95
) -> tuple[np.ndarray | float, np.ndarray | float]:
  r"""Student t interval of the mean over the last axis of `samples` (vectorised).

  $$\bar x \pm t_{n-1,\,(1+\text{level})/2}\; s / \sqrt{n}$$

  Exact for normal data at every n >= 2; with n = 1 both ends are NaN.

  Args:
    samples: values, shape `[..., n]`; all finite.
    level: coverage of the interval.

  Returns:
    (low, high), floats for 1-D input, else arrays of the leading shape.
  """
  x = _interval_samples(samples, level)
  n = x.shape[-1]
  mean = x.mean(axis=-1)
  if n == 1:
    half = np.full(mean.shape, np.nan)
  else:
    half = sp_stats.t.ppf(0.5 + level / 2.0, n - 1) * x.std(axis=-1, ddof=1) / math.sqrt(n)
  low, high = mean - half, mean + half
  return (float(low), float(high)) if x.ndim == 1 else (low, high)


def interval_method(n: int) -> str:
  """The method `mean_interval` uses for n values: "t", "BCa" or "" (no interval)."""
  return "" if n < 2 else ("t" if n < BCA_MIN_N else "BCa")


def mean_interval(
    samples: np.typing.ArrayLike,
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
  """Interval of the mean of 1-D `samples`: Student t below `BCA_MIN_N` values, BCa from there.

  BCa (SciPy's `scipy.stats.bootstrap`) corrects the percentile interval for bias and skew once
  there are enough values to estimate them; below that the t interval is the honest one.

  Args:
    samples: finite values, shape `[n]`.
    level: coverage of the interval.
    num_resamples: bootstrap resamples (BCa only).
    seed: seed of the resampling (BCa only).

  Returns:
    (low, high); NaN ends when n < 2.
  """
  x = np.asarray(samples, dtype=np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"samples must be 1-D and non-empty, got shape {x.shape}")
  if interval_method(x.size) != "BCa":
    return t_interval(x, level=level)
  if np.ptp(x) == 0:  # no spread: BCa is undefined, and the mean is known exactly
    return float(x[0]), float(x[0])
  res = sp_stats.bootstrap((x,), np.mean, confidence_level=level, method="BCa",
                           n_resamples=num_resamples, rng=np.random.default_rng(seed))
  return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_ci(
    samples: np.typing.ArrayLike,
    statistic: str = "mean",
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray | float, np.ndarray | float]:
  """Percentile bootstrap interval of `statistic` over the last axis of `samples`.

  The same resampling indices serve every leading index, so a batch of data sets (shape
  `[..., n]`) is done in one vectorised call. With n = 1 there is no interval: both ends are NaN.

  Args:
    samples: values, shape `[..., n]`; all finite.
    statistic: "mean" or "median".
    level: coverage of the interval, e.g. 0.95.
    num_resamples: bootstrap resamples.
    seed: seed of the resampling.

  Returns:
    (low, high), floats for 1-D input, else arrays of the leading shape.
  """
  x = _interval_samples(samples, level)
  _statistic(x[..., :1], statistic)  # validates `statistic`
  n = x.shape[-1]
  if n == 1:
    nan = np.full(x.shape[:-1], np.nan)
    return (float(nan), float(nan)) if x.ndim == 1 else (nan, nan)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(num_resamples, n))
  boot = _statistic(x[..., idx], statistic)  # [..., num_resamples]
  alpha = (1.0 - level) / 2.0
  low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=-1)
  return (float(low), float(high)) if x.ndim == 1 else (low, high)


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


def holm(pvalues: np.typing.ArrayLike) -> np.ndarray:
  r"""Holm's step-down adjusted p-values (strong control of the family-wise error rate).

  With the m finite p-values sorted, $p_{(1)} \le \dots \le p_{(m)}$, the adjusted value of
  $p_{(i)}$ is $\max_{j \le i} \min(1, (m - j + 1)\, p_{(j)})$; rejecting where the adjusted
  p < alpha is Holm's procedure at level alpha (Holm 1979). NaN entries stay NaN and do not
  count towards m.

  Args:
    pvalues: p-values, any shape.

  Returns:
    Adjusted p-values, the shape of `pvalues`.
  """
  p = np.asarray(pvalues, dtype=np.float64)
  out = np.full(p.shape, np.nan)
  flat, res = p.reshape(-1), out.reshape(-1)
  ok = np.flatnonzero(np.isfinite(flat))
  m = ok.size
  if m:
    order = ok[np.argsort(flat[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * flat[order])
    res[order] = np.maximum.accumulate(scaled)
  return out


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
  _check_level(alpha)
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
  _check_level(power)
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


def _order_statistic_weights(n: int, ks: np.ndarray) -> np.ndarray:
  """w[k, i] = P(the best of k draws with replacement is the i-th best of n), shape [K, n]."""
  i = np.arange(1, n + 1, dtype=np.float64)
  k = ks.astype(np.float64)[:, None]
  return ((n - i + 1) / n) ** k - ((n - i) / n) ** k


def expected_best_of_k(
    values: np.typing.ArrayLike, ks: np.typing.ArrayLike, mode: str = "min"
) -> np.ndarray:
  r"""Expected best of k draws with replacement from `values`, in closed form.

  With the values sorted from best to worst, $v_{(1)}, \dots, v_{(N)}$,

  $$E[\text{best of } k] = \sum_{i=1}^N v_{(i)}\Big[\Big(\frac{N-i+1}{N}\Big)^k
      - \Big(\frac{N-i}{N}\Big)^k\Big]$$

  (Dodge et al. 2019, "Show your work", expected validation performance).

  Args:
    values: the swept points' values, shape `[..., N]`, finite.
    ks: numbers of draws, each >= 1.
    mode: "min" (smaller is better) or "max".

  Returns:
    Array `[..., len(ks)]`.
  """
  _check_mode(mode)
  v = np.asarray(values, dtype=np.float64)
  ks = np.atleast_1d(np.asarray(ks))
  if v.ndim == 0 or v.shape[-1] == 0:
    raise ValueError("values must have at least one value on the last axis")
  if np.any(ks < 1):
    raise ValueError(f"ks must be >= 1, got {ks}")
  if not np.all(np.isfinite(v)):
    raise ValueError("values must be finite; give failed points a finite worst value first")
  v = np.sort(v, axis=-1)
  if mode == "max":
    v = v[..., ::-1]
  return v @ _order_statistic_weights(v.shape[-1], ks).T


@dataclasses.dataclass(frozen=True)
class TuningCurve:
  """Expected best value after k random draws, k = 1..N, with a bootstrap band."""

  k: np.ndarray  # [N] 1..N
  expected: np.ndarray  # [N]
  low: np.ndarray  # [N]; NaN when N = 1
  high: np.ndarray  # [N]


def tuning_curve(
    values: np.typing.ArrayLike,
    mode: str = "min",
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> TuningCurve:
  """Tuning curve of a set of swept points (Dodge et al. 2019; Schmidt et al. 2021).

  The band is the percentile bootstrap over the swept points: the points are resampled with
  replacement and the closed-form curve recomputed for each resample.

  Args:
    values: one finite value per swept point, shape `[N]`.
    mode: "min" or "max".
    level: coverage of the band.
    num_resamples: bootstrap resamples.
    seed: seed of the resampling.

  Returns:
    A `TuningCurve` with k = 1..N.
  """
  _check_level(level)
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1:
    raise ValueError(f"values must be 1-D, got shape {v.shape}")
  n = v.size
  ks = np.arange(1, n + 1)
  expected = expected_best_of_k(v, ks, mode)
  if n == 1:
    nan = np.full(1, np.nan)
    return TuningCurve(k=ks, expected=expected, low=nan, high=nan)
  rng = np.random.default_rng(seed)
  boot = expected_best_of_k(v[rng.integers(0, n, size=(num_resamples, n))], ks, mode)
  alpha = (1.0 - level) / 2.0
  low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
  return TuningCurve(k=ks, expected=expected, low=low, high=high)


@dataclasses.dataclass(frozen=True)
class AnovaRow:
  term: str  # "A", "A:B", "Residual" or "Total"
  sum_sq: float
  df: int
  mean_sq: float  # NaN for Total
  f: float  # NaN for Residual and Total, and when the residual has no degrees of freedom
  p: float


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
  _, inverse = np.unique(np.asarray(values), return_inverse=True)
  return inverse.reshape(-1), int(inverse.max()) + 1


def _effect_columns(codes: np.ndarray, num_levels: int) -> np.ndarray:
  """Sum-to-zero coding: num_levels - 1 columns; the last level is -1 in every column."""
  cols = np.zeros((codes.size, num_levels - 1))
  for j in range(num_levels - 1):
    cols[:, j] = (codes == j).astype(float) - (codes == num_levels - 1)
  return cols


def _rss_rank(y: np.ndarray, blocks: list[np.ndarray]) -> tuple[float, int]:
  x = np.concatenate([np.ones((y.size, 1))] + blocks, axis=1)
  coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
  resid = y - x @ coef
  return float(resid @ resid), int(rank)


def anova(
    y: np.typing.ArrayLike,
    factors: Mapping[str, Sequence | np.ndarray],
    *,
    interactions: bool = True,
) -> list[AnovaRow]:
  """ANOVA table with main effects and (optionally) all two-factor interactions.

  Factors are categorical: every distinct value is a level. Sums of squares are Type II
  (each term adjusted for every term that does not contain it), computed from least-squares
  fits with sum-to-zero coding; for a balanced design they equal the textbook sums of squares
  of the factorial ANOVA. Higher-order interactions, when present, are pooled into the
  residual. F = MS(term) / MS(residual) with p from the F distribution.

  Args:
    y: responses, shape `[n]`, finite.
    factors: factor name -> level of each observation, each of length n.
    interactions: include the two-factor interactions.

  Returns:
    Rows for each main effect (in the order given), then each interaction, then "Residual"
    and "Total".
  """
  y = np.asarray(y, dtype=np.float64)
  if y.ndim != 1 or not np.all(np.isfinite(y)):
    raise ValueError("y must be 1-D and finite")
  if not factors:
    raise ValueError("factors must name at least one factor")
  columns: dict[str, np.ndarray] = {}
  for name, levels in factors.items():
    levels = np.asarray(levels)
    if levels.shape != y.shape:
      raise ValueError(f"factor {name!r} has {levels.shape} values, y has {y.shape}")
    codes, num = _codes(levels)
    columns[name] = _effect_columns(codes, num)
  terms: list[tuple[str, ...]] = [(name,) for name in columns]
  if interactions:
    terms += list(itertools.combinations(columns, 2))

  def block(term: tuple[str, ...]) -> np.ndarray:
    if len(term) == 1:
      return columns[term[0]]
    a, b = columns[term[0]], columns[term[1]]
    return (a[:, :, None] * b[:, None, :]).reshape(y.size, -1)

  blocks = {t: block(t) for t in terms}
  rss_full, rank_full = _rss_rank(y, list(blocks.values()))
  df_res = y.size - rank_full
  ms_res = rss_full / df_res if df_res > 0 else math.nan
  rows = []
  for term in terms:
    others = [blocks[t] for t in terms if t != term and not set(term) <= set(t)]
    rss_without, rank_without = _rss_rank(y, others)
    rss_with, rank_with = _rss_rank(y, others + [blocks[term]])
    ss = max(rss_without - rss_with, 0.0)
    df = rank_with - rank_without
    ms = ss / df if df > 0 else math.nan
    f = ms / ms_res if df_res > 0 and df > 0 and ms_res > 0 else math.nan
    p = float(sp_stats.f.sf(f, df, df_res)) if np.isfinite(f) else math.nan
    rows.append(AnovaRow(":".join(term), ss, df, ms, f, p))
  ss_total = float(np.sum((y - y.mean()) ** 2))
  rows.append(AnovaRow("Residual", rss_full, df_res, ms_res, math.nan, math.nan))
  rows.append(AnovaRow("Total", ss_total, y.size - 1, math.nan, math.nan, math.nan))
  return rows


def quantile_bins(values: np.typing.ArrayLike, num_bins: int) -> np.ndarray:
  """Bin index of each value: about equal counts per bin, equal values always in one bin."""
  v = np.asarray(values, dtype=np.float64)
  uniq, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
  if uniq.size <= num_bins:
    return inverse.reshape(-1)
  below = np.concatenate([[0], np.cumsum(counts)[:-1]]) / v.size  # fraction below each value
  bins = np.minimum((below * num_bins).astype(int), num_bins - 1)
  _, bins = np.unique(bins, return_inverse=True)  # drop empty bins
  return bins[inverse.reshape(-1)]


@dataclasses.dataclass(frozen=True)
class VarianceShare:
  factor: str  # a factor name, "seed" (within-configuration) or "rest"
  eta_sq: float  # SS_between(bins) / SS_total: the correlation ratio, a binned Sobol' index
  eps_sq: float  # bias-corrected: (SS_between - (bins - 1) MS_within) / SS_total
  bins: int


def variance_decomposition(
    y: np.typing.ArrayLike,
    factors: Mapping[str, np.typing.ArrayLike],
    *,
    num_bins: int | None = None,
    config_ids: np.typing.ArrayLike | None = None,
) -> list[VarianceShare]:
  """First-order variance shares of continuous factors, for random and quasi-random designs.

  For each factor the values are cut into `num_bins` quantile bins (a monotone transform such
  as log10 does not change them) and the correlation ratio eta^2 = SS_between / SS_total is an
  estimate of the first-order Sobol' index Var(E[y | factor]) / Var(y). Few points per bin
  inflate eta^2; eps^2 subtracts the between-bin sum of squares expected from noise alone:
  (bins - 1) times the mean square between units within a bin, where the units are the
  configurations when `config_ids` is given (their seeds are not independent draws of the
  factors) and the points otherwise.
  With `config_ids` (points sharing all factor values, differing in seed), the "seed" row holds
  the within-configuration share: eta^2 = SS_within / SS_total, and eps^2 = MS_within /
  (SS_total / (n - 1)), the seed variance over the total variance. The "rest" row is what
  first-order effects and seeds leave: interactions and what the binning misses (1 minus the
  sum of the rows above it, column by column).

  Args:
    y: responses, shape `[n]`, finite.
    factors: factor name -> numeric value per observation.
    num_bins: bins per factor; default round(sqrt(number of distinct settings)), within [2, 10].
    config_ids: optional configuration id of each observation.

  Returns:
    One `VarianceShare` per factor, then "seed" (with `config_ids`), then "rest".
  """
  y = np.asarray(y, dtype=np.float64)
  if y.ndim != 1 or y.size < 2 or not np.all(np.isfinite(y)):
    raise ValueError("y must be 1-D, finite, with at least two values")
  ss_total = float(np.sum((y - y.mean()) ** 2))
  if num_bins is None:
    settings = y.size if config_ids is None else np.unique(np.asarray(config_ids)).size
    num_bins = int(np.clip(round(math.sqrt(settings)), 2, 10))
  if num_bins < 2:
    raise ValueError(f"num_bins must be >= 2, got {num_bins}")

  def between(groups: np.ndarray) -> tuple[float, int]:
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=y) / counts
    return float(np.sum(counts * (means - y.mean()) ** 2)), counts.size

  # The units that carry the factors: configurations when given (the factors are constant
  # within one), else the points. The between-bin sum of squares is judged against the
  # variation between units in one bin (a nested design when units hold several seeds).
  if config_ids is not None:
    config_ids = np.asarray(config_ids)
    ss_units, num_units = between(config_ids)
  else:
    ss_units, num_units = ss_total, y.size
  rows = []
  for name, values in factors.items():
    values = np.asarray(values, dtype=np.float64)
    if values.shape != y.shape:
      raise ValueError(f"factor {name!r} has {values.shape} values, y has {y.shape}")
    bins = quantile_bins(values, num_bins)
    ss_b, b = between(bins)
    df_err = num_units - b
    ms_err = (ss_units - ss_b) / df_err if df_err > 0 else math.nan
    eta = ss_b / ss_total if ss_total > 0 else math.nan
    eps = (ss_b - (b - 1) * ms_err) / ss_total if ss_total > 0 and df_err > 0 else math.nan
    rows.append(VarianceShare(name, eta, eps, b))
  if config_ids is not None:
    ss_w, b = ss_total - ss_units, num_units
    eta = ss_w / ss_total if ss_total > 0 else math.nan
    # Seed variance MS_within over the total variance SS_total / (n - 1).
    eps = ss_w / (y.size - b) * (y.size - 1) / ss_total if ss_total > 0 and y.size > b else eta
    rows.append(VarianceShare("seed", eta, eps, b))
  rest_eta = 1.0 - sum(r.eta_sq for r in rows) if ss_total > 0 else math.nan
  rest_eps = 1.0 - sum(r.eps_sq for r in rows) if ss_total > 0 else math.nan
  rows.append(VarianceShare("rest", rest_eta, rest_eps, 0))
  return rows


def _as_min(values: np.ndarray, mode: str) -> np.ndarray:
  _check_mode(mode)
  return values if mode == "min" else -values


def lr_sensitivity(values: np.typing.ArrayLike, l0: float, mode: str = "min") -> float:
  r"""Learning-rate sensitivity of Wortsman et al. (2023), over the swept learning rates.

  $$S = \frac{1}{L}\sum_{j=1}^{L} \big[\min(\ell(\eta_j), \ell_0) - \ell^*\big],
  \qquad \ell^* = \min_j \min(\ell(\eta_j), \ell_0),$$

  an equal-weight mean over the L swept learning rates (for a grid uniform in log10 lr, the
  expectation over a log-uniform lr on the swept range), with $\ell_0$ the loss at
  initialisation; a diverged or non-finite $\ell(\eta_j)$ counts as $\ell_0$. For mode "max"
  the same with the signs flipped: mean of $\ell^* - \max(\ell(\eta_j), \ell_0)$.

  Args:
    values: the final metric at each swept learning rate; NaN or inf for diverged.
    l0: the metric at initialisation (the cap), finite.
    mode: "min" or "max".

  Returns:
    S >= 0 (0: flat over the range). NaN when `l0` is not finite.
  """
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError("values must be 1-D and non-empty")
  if not np.isfinite(l0):
    return math.nan
  v = _as_min(np.where(np.isfinite(v), v, l0 if mode == "min" else -np.inf), mode)
  capped = np.minimum(v, _as_min(np.float64(l0), mode))
  return float(np.mean(capped - capped.min()))


@dataclasses.dataclass(frozen=True)
class Basin:
  """The learning-rate interval around the best lr where the metric is within rel_tol of best."""

  rel_tol: float
  width_decades: float  # log10(lr_high) - log10(lr_low)
  lr_low: float
  lr_high: float
  open_low: bool  # the basin reaches the smallest swept lr: the true basin may be wider
  open_high: bool  # ... the largest swept lr


def basin_width(
    lrs: np.typing.ArrayLike, values: np.typing.ArrayLike, rel_tol: float, mode: str = "min"
) -> Basin:
  """Width, in decades of learning rate, of the basin within `rel_tol` of the best value.

  With the threshold t = best + rel_tol * |best| (mode "min"; best - rel_tol * |best| for
  "max"), the basin is the interval of log10(lr) around the best swept lr where the
  piecewise-linear interpolation (in log10 lr) of the values stays within t; it ends where the
  interpolation crosses t, or at the last swept lr before a non-finite (diverged) value.

  Args:
    lrs: swept learning rates, positive and distinct.
    values: the metric at each lr; NaN/inf for diverged.
    rel_tol: relative tolerance, e.g. 0.01 for 1%.
    mode: "min" or "max".

  Returns:
    A `Basin`; NaN width when no value is finite.
  """
  lrs = np.asarray(lrs, dtype=np.float64)
  v = np.asarray(values, dtype=np.float64)
  if lrs.shape != v.shape or lrs.ndim != 1 or lrs.size == 0:
    raise ValueError(f"lrs and values must be 1-D of one length, got {lrs.shape}, {v.shape}")
  if np.any(lrs <= 0) or np.unique(lrs).size != lrs.size:
    raise ValueError("lrs must be positive and distinct")
  if rel_tol < 0:
    raise ValueError(f"rel_tol must be >= 0, got {rel_tol}")
  if not np.any(np.isfinite(v)):
    return Basin(rel_tol, math.nan, math.nan, math.nan, False, False)
  order = np.argsort(lrs)
  x = np.log10(lrs[order])
  v = _as_min(v[order], mode)
  v = np.where(np.isfinite(v), v, np.inf)
  b = int(np.argmin(v))
  threshold = v[b] + rel_tol * abs(v[b])

  def edge(step: int) -> tuple[float, bool]:
    i = b
    while 0 <= i + step < x.size and v[i + step] <= threshold:
      i += step
    j = i + step
    if not 0 <= j < x.size:
      return float(x[i]), True
    if not np.isfinite(v[j]):
      return float(x[i]), False
    t = (threshold - v[i]) / (v[j] - v[i])
    return float(x[i] + t * (x[j] - x[i])), False

  lo, open_lo = edge(-1)
  hi, open_hi = edge(+1)
  return Basin(rel_tol, hi - lo, 10.0**lo, 10.0**hi, open_lo, open_hi)
