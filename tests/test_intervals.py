"""Small-sample intervals, their agreement with the t-test, Holm's correction and t-test power.

The coverage checks are simulations: 2,000 data sets per sample size, each interval asked to
cover the true mean. References: SciPy's t-test and its confidence interval, the noncentral t
by Monte Carlo, and published sample-size tables.
"""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from jaxopt_lab.analysis import stats

SETS = 2000


def _coverage(data: np.ndarray, truth: float) -> float:
  low, high = stats.t_interval(data)
  return float(np.mean((low <= truth) & (truth <= high)))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mean_interval_keeps_coverage_at_small_n(n):
  data = np.random.default_rng(n).normal(0.5, 0.01, size=(SETS, n))
  coverage = _coverage(data, 0.5)
  assert abs(coverage - 0.95) <= 0.02, coverage
  # The percentile bootstrap the report used before fails the same check (75% at n = 3).
  low, high = stats.bootstrap_ci(data, "mean", num_resamples=1000, seed=1)
  boot = np.mean((low <= 0.5) & (0.5 <= high))
  assert boot < 0.92, boot


# Recorded coverage of the 95% t interval for lognormal(0, 1) samples (true mean e^0.5), from
# this simulation: strongly skewed data undercover (about 82% at every n from 3 to 10).
LOGNORMAL_COVERAGE = {3: 0.823, 5: 0.81, 10: 0.82}


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mean_interval_coverage_for_lognormal_data_is_recorded(n):
  data = np.random.default_rng(100 + n).lognormal(0.0, 1.0, size=(SETS, n))
  coverage = _coverage(data, math.exp(0.5))
  assert abs(coverage - LOGNORMAL_COVERAGE[n]) < 0.005, coverage


def test_mean_interval_switches_to_bca_at_large_n():
  assert [stats.interval_method(n) for n in (1, 2, 19, 20)] == ["", "t", "t", "BCa"]
  x = np.random.default_rng(3).lognormal(size=40)
  ref = sp_stats.bootstrap((x,), np.mean, method="BCa", n_resamples=4000,
                           rng=np.random.default_rng(9)).confidence_interval
  low, high = stats.mean_interval(x, num_resamples=4000, seed=4)
  width = ref.high - ref.low
  assert abs(low - ref.low) < 0.05 * width and abs(high - ref.high) < 0.05 * width
  # BCa follows the skew: the upper arm is longer than the lower one.
  assert high - x.mean() > x.mean() - low
  np.testing.assert_allclose(stats.mean_interval(x[:5]), stats.t_interval(x[:5]))
  assert stats.mean_interval(np.full(25, 2.0)) == (2.0, 2.0)


def test_bca_interval_covers_at_n_30():
  data = np.random.default_rng(8).normal(size=(300, 30))
  cover = [lo <= 0.0 <= hi for lo, hi in (stats.mean_interval(x, num_resamples=999, seed=i)
                                          for i, x in enumerate(data))]
  assert 0.90 <= np.mean(cover) <= 0.99


def test_t_interval_matches_scipy_and_hand_worked():
  # [1, 2, 3]: mean 2, s = 1, t_{2, 0.975} = 4.302652729749464.
  low, high = stats.t_interval([1.0, 2.0, 3.0])
  half = 4.302652729749464 / math.sqrt(3)
  np.testing.assert_allclose([low, high], [2 - half, 2 + half])
  x = np.random.default_rng(2).normal(size=7)
  ref = sp_stats.ttest_1samp(x, 0.0).confidence_interval(0.9)
  np.testing.assert_allclose(stats.t_interval(x, level=0.9), [ref.low, ref.high])
  assert all(math.isnan(v) for v in stats.t_interval([4.0]))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_paired_interval_under_the_null_excludes_zero_five_percent(n):
  rng = np.random.default_rng(20 + n)
  shared = rng.normal(size=(SETS, n))  # the seed's own difficulty, common to both arms
  a = shared + 0.1 * rng.normal(size=(SETS, n))
  b = shared + 0.1 * rng.normal(size=(SETS, n))
  excludes = [not (c.ci_low <= 0.0 <= c.ci_high)
              for c in (stats.paired_comparison(x, y) for x, y in zip(a, b, strict=True))]
  assert abs(np.mean(excludes) - 0.05) <= 0.02


def test_paired_interval_and_t_test_agree():
  rng = np.random.default_rng(5)
  checked = disagree = 0
  for trial in range(600):
    n = 2 + trial % 11
    shift = rng.choice([0.0, 0.3, 1.0])
    a = rng.normal(size=n)
    b = a - shift + rng.normal(0.0, 0.5, size=n)
    c = stats.paired_comparison(a, b)
    ref = sp_stats.ttest_rel(a, b)
    np.testing.assert_allclose(c.t_pvalue, ref.pvalue)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose([c.ci_low, c.ci_high], [ci.low, ci.high], rtol=1e-10)
    excludes = not (c.ci_low <= 0.0 <= c.ci_high)
    disagree += excludes != (c.t_pvalue < 0.05)
    checked += excludes
  assert disagree == 0
  assert 50 < checked < 550  # both outcomes occur


def _holm_by_procedure(p: np.ndarray, alpha: float) -> np.ndarray:
  """Holm's step-down procedure as written in the paper: which hypotheses are rejected."""
  order = np.argsort(p)
  rejected = np.zeros(p.size, bool)
  for i, j in enumerate(order):
    if p[j] > alpha / (p.size - i):
      break
    rejected[j] = True
  return rejected


def test_holm_matches_the_step_down_procedure():
  rng = np.random.default_rng(6)
  for _ in range(300):
    p = rng.uniform(0, 0.1, size=rng.integers(1, 8))
    adjusted = stats.holm(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    for alpha in (0.01, 0.05, 0.1):
      np.testing.assert_array_equal(adjusted <= alpha, _holm_by_procedure(p, alpha))
  # Hand-worked: sorted 0.01, 0.03, 0.04 (m = 3) -> 0.03, 0.06, max(0.06, 0.04) = 0.06.
  np.testing.assert_allclose(stats.holm([0.04, 0.01, 0.03, np.nan])[:3], [0.06, 0.03, 0.06])
  assert math.isnan(stats.holm([0.04, np.nan])[1])
  np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def test_power_matches_monte_carlo_of_the_t_test():
  rng = np.random.default_rng(7)
  for d, n in ((0.5, 10), (1.0, 5), (2.0, 3)):
    x = rng.normal(d, 1.0, size=(20000, n))
    mc = np.mean(sp_stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05)
    np.testing.assert_allclose(stats.paired_t_power(d, n), mc, atol=0.015)
  assert abs(stats.paired_t_power(0.0, 5) - 0.05) < 1e-12


def test_seeds_for_power_matches_published_tables():
  # Cohen (1988) / G*Power, two-sided one-sample t-test, alpha 0.05, power 0.8:
  # d = 0.5 -> 34, d = 0.8 -> 15.
  assert stats.seeds_for_power(0.5, 1.0) == 34
  assert stats.seeds_for_power(-0.8, 1.0) == 15
  n = stats.seeds_for_power(0.3, 1.0)
  assert stats.paired_t_power(0.3, n) >= 0.8 > stats.paired_t_power(0.3, n - 1)
  assert stats.seeds_for_power(1e-6, 1.0, max_n=1000) is None
  assert stats.seeds_for_power(0.0, 1.0) is None
  with pytest.raises(ValueError, match="sd_diff"):
    stats.seeds_for_power(0.1, 0.0)
