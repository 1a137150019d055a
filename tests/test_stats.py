"""Tests of jaxopt_lab.analysis.stats against SciPy, closed forms and worked examples."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from jaxopt_lab.analysis import stats

# ---------------------------------------------------------------------------------------------
# Paired comparisons.


def test_paired_comparison_matches_scipy():
  rng = np.random.default_rng(3)
  shared = rng.normal(size=12)  # common random numbers: the seed's own difficulty
  a = 1.0 + shared + 0.1 * rng.normal(size=12)
  b = 0.9 + shared + 0.1 * rng.normal(size=12)
  res = stats.paired_comparison(a, b)
  t_ref = sp_stats.ttest_rel(a, b)
  w_ref = sp_stats.wilcoxon(a, b)
  assert res.n == 12
  np.testing.assert_allclose(res.mean_diff, np.mean(a - b))
  np.testing.assert_allclose([res.t_statistic, res.t_pvalue], [t_ref.statistic, t_ref.pvalue])
  np.testing.assert_allclose(
      [res.wilcoxon_statistic, res.wilcoxon_pvalue], [w_ref.statistic, w_ref.pvalue])
  assert res.ci_low < res.mean_diff < res.ci_high
  # Pairing removes the shared noise: the paired interval is far narrower than unpaired spread.
  assert res.ci_high - res.ci_low < 0.5 * np.std(a)


def test_wilcoxon_cutoff_is_six_pairs():
  # With 5 pairs the exact two-sided test cannot go below 2 / 2**5 = 0.0625, so none is run;
  # from 6 pairs (2 / 2**6 = 0.03125) it is, and equals SciPy's.
  for n in (5, 6, 7):
    a = np.arange(1.0, n + 1) * 1.3
    b = np.zeros(n)
    res = stats.paired_comparison(a, b)
    if n < 6:
      assert math.isnan(res.wilcoxon_pvalue) and math.isnan(res.wilcoxon_statistic)
      assert sp_stats.wilcoxon(a, b).pvalue > 0.05
    else:
      ref = sp_stats.wilcoxon(a, b)
      np.testing.assert_allclose([res.wilcoxon_statistic, res.wilcoxon_pvalue],
                                 [ref.statistic, ref.pvalue])
      assert res.wilcoxon_pvalue == 2 / 2**n < 0.05


def test_paired_comparison_small_n():
  res = stats.paired_comparison([1.0, 2.0, 3.5], [0.5, 1.0, 2.0])
  assert res.n == 3
  np.testing.assert_allclose(res.t_pvalue, sp_stats.ttest_rel([1.0, 2.0, 3.5],
                                                              [0.5, 1.0, 2.0]).pvalue)
  assert math.isnan(res.wilcoxon_pvalue)  # n < 6: no Wilcoxon test
  one = stats.paired_comparison([1.0], [0.5])
  assert one.mean_diff == 0.5 and math.isnan(one.ci_low) and math.isnan(one.t_pvalue)


def test_paired_comparison_rejects_bad_input():
  with pytest.raises(ValueError, match="same"):
    stats.paired_comparison([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="finite"):
    stats.paired_comparison([1.0, np.inf], [1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Tuning curves.


@pytest.mark.parametrize("mode", ["min", "max"])
def test_expected_best_of_k_matches_enumeration(mode):
  values = np.array([0.3, 1.2, 0.7, 2.0])
  best = min if mode == "min" else max
  for k in (1, 2, 3):
    draws = list(itertools.product(values, repeat=k))  # every equally likely sequence
    exact = np.mean([best(d) for d in draws])
    np.testing.assert_allclose(stats.expected_best_of_k(values, [k], mode)[0], exact)


def test_expected_best_of_k_hand_worked():
  # Values {1, 2, 3}, k = 2: the minimum is 1 in 5 of 9 pairs, 2 in 3, 3 in 1 -> 14/9.
  np.testing.assert_allclose(stats.expected_best_of_k([3.0, 1.0, 2.0], [1, 2]), [2.0, 14 / 9])


def test_expected_best_of_k_matches_monte_carlo():
  rng = np.random.default_rng(6)
  values = rng.normal(size=30)
  ks = np.array([1, 5, 30])
  draws = values[rng.integers(0, 30, size=(200000, 30))]
  mc = np.array([draws[:, :k].min(axis=1).mean() for k in ks])
  np.testing.assert_allclose(stats.expected_best_of_k(values, ks), mc, atol=0.01)


def test_tuning_curve_shape_and_band():
  values = np.random.default_rng(7).normal(size=10)
  curve = stats.tuning_curve(values, "min", num_resamples=500)
  np.testing.assert_array_equal(curve.k, np.arange(1, 11))
  np.testing.assert_allclose(curve.expected[0], values.mean())
  assert np.all(np.diff(curve.expected) <= 1e-12)  # more draws never hurt
  assert np.all(curve.low <= curve.expected + 1e-12) and np.all(curve.expected <= curve.high)
  # The band is the 95% percentile bootstrap of the curve, as SciPy computes it.
  for k in (1, 3):
    ref = sp_stats.bootstrap(
        (values,),
        lambda x, axis, k=k: stats.expected_best_of_k(np.moveaxis(x, axis, -1), [k])[..., 0],
        method="percentile", n_resamples=500, rng=np.random.default_rng(3)).confidence_interval
    width = ref.high - ref.low
    assert abs(curve.low[k - 1] - ref.low) < 0.1 * width, k
    assert abs(curve.high[k - 1] - ref.high) < 0.1 * width, k
  single = stats.tuning_curve([2.0])
  assert single.expected[0] == 2.0 and math.isnan(single.low[0])
  with pytest.raises(ValueError, match="finite"):
    stats.tuning_curve([1.0, np.inf])
  with pytest.raises(ValueError, match="mode"):
    stats.tuning_curve([1.0, 2.0], "best")


# ---------------------------------------------------------------------------------------------
# ANOVA.

# Montgomery, Design and Analysis of Experiments, Example 5.1 (battery life): material type
# (3 levels) x temperature (15, 70, 125 F), 4 replicates per cell.
_BATTERY = {
    (1, 15): [130, 155, 74, 180], (1, 70): [34, 40, 80, 75], (1, 125): [20, 70, 82, 58],
    (2, 15): [150, 188, 159, 126], (2, 70): [136, 122, 106, 115], (2, 125): [25, 70, 58, 45],
    (3, 15): [138, 110, 168, 160], (3, 70): [174, 120, 150, 139], (3, 125): [96, 104, 82, 60],
}


def test_anova_matches_textbook_two_factor_example():
  material, temperature, life = [], [], []
  for (m, t), ys in _BATTERY.items():
    material += [m] * len(ys)
    temperature += [t] * len(ys)
    life += ys
  rows = {r.term: r for r in stats.anova(
      np.array(life, float), {"material": material, "temperature": temperature})}
  # The book's table: SS 10683.72, 39118.72, 9613.78, 18230.75, 77646.97; F 7.91, 28.97, 3.56.
  np.testing.assert_allclose(rows["material"].sum_sq, 10683.72, atol=0.01)
  np.testing.assert_allclose(rows["temperature"].sum_sq, 39118.72, atol=0.01)
  np.testing.assert_allclose(rows["material:temperature"].sum_sq, 9613.78, atol=0.01)
  np.testing.assert_allclose(rows["Residual"].sum_sq, 18230.75, atol=0.01)
  np.testing.assert_allclose(rows["Total"].sum_sq, 77646.97, atol=0.01)
  assert [rows[t].df for t in ("material", "temperature", "material:temperature", "Residual",
                               "Total")] == [2, 2, 4, 27, 35]
  np.testing.assert_allclose(
      [rows["material"].f, rows["temperature"].f, rows["material:temperature"].f],
      [7.91, 28.97, 3.56], atol=0.01)
  np.testing.assert_allclose(rows["material"].p, 0.0020, atol=0.0001)
  np.testing.assert_allclose(rows["material:temperature"].p, 0.0186, atol=0.0001)


def test_one_way_anova_matches_scipy_f_oneway():
  rng = np.random.default_rng(8)
  groups = [rng.normal(mu, 1.0, size=n) for mu, n in ((0.0, 5), (0.5, 7), (1.5, 6))]
  y = np.concatenate(groups)
  f = np.repeat(["a", "b", "c"], [5, 7, 6])
  row = stats.anova(y, {"f": f})[0]
  ref = sp_stats.f_oneway(*groups)
  np.testing.assert_allclose([row.f, row.p], [ref.statistic, ref.pvalue])


def test_anova_without_replicates_has_no_residual_for_full_model():
  a = np.repeat([0, 1, 2], 2)
  b = np.tile([0, 1], 3)
  y = np.array([1.0, 2.0, 2.5, 4.0, 3.0, 5.5])
  rows = {r.term: r for r in stats.anova(y, {"a": a, "b": b})}
  assert rows["Residual"].df == 0 and math.isnan(rows["a"].f)
  rows = {r.term: r for r in stats.anova(y, {"a": a, "b": b}, interactions=False)}
  assert rows["Residual"].df == 2 and np.isfinite(rows["a"].f)
  # Additive model sums of squares add up to the total for a balanced design.
  np.testing.assert_allclose(
      rows["a"].sum_sq + rows["b"].sum_sq + rows["Residual"].sum_sq, rows["Total"].sum_sq)


# ---------------------------------------------------------------------------------------------
# Variance decomposition.


def test_variance_decomposition_recovers_sobol_indices_of_additive_model():
  rng = np.random.default_rng(9)
  x1, x2, x3 = rng.uniform(size=(3, 4000))
  y = 3.0 * x1 + 1.0 * x2  # first-order Sobol' indices 0.9, 0.1, 0
  rows = {r.factor: r for r in stats.variance_decomposition(y, {"x1": x1, "x2": x2, "x3": x3},
                                                            num_bins=20)}
  np.testing.assert_allclose(rows["x1"].eps_sq, 0.9, atol=0.02)
  np.testing.assert_allclose(rows["x2"].eps_sq, 0.1, atol=0.02)
  np.testing.assert_allclose(rows["x3"].eps_sq, 0.0, atol=0.01)
  assert abs(rows["rest"].eta_sq) < 0.02


def test_variance_decomposition_pure_interaction_and_seed_share():
  rng = np.random.default_rng(10)
  configs = rng.uniform(size=(2, 500))
  x1, x2 = np.repeat(configs, 4, axis=1)  # 500 configurations x 4 seeds
  ids = np.repeat(np.arange(500), 4)
  signal = 10.0 * (x1 - 0.5) * (x2 - 0.5)  # no first-order effect, variance 100/144
  noise = rng.normal(0.0, math.sqrt(100 / 144), size=x1.size)  # equal variance from seeds
  rows = {r.factor: r for r in stats.variance_decomposition(
      signal + noise, {"x1": x1, "x2": x2}, config_ids=ids)}
  assert abs(rows["x1"].eps_sq) < 0.03 and abs(rows["x2"].eps_sq) < 0.03
  np.testing.assert_allclose(rows["seed"].eps_sq, 0.5, atol=0.05)
  np.testing.assert_allclose(rows["seed"].eta_sq, 0.5 * 3 / 4, atol=0.05)  # (R - 1) / R of it
  np.testing.assert_allclose(rows["rest"].eps_sq, 0.5, atol=0.07)


def test_variance_decomposition_null_factor_unbiased_with_replicated_configs():
  # 30 configurations x 4 seeds; x1 matters, x2 does not. Over many repeats the corrected eps^2
  # of x2 averages to zero, while the raw eta^2 is inflated by the chance binning of x1's effect.
  rng = np.random.default_rng(11)
  eta, eps = [], []
  for _ in range(200):
    x1, x2 = np.repeat(rng.uniform(size=(2, 30)), 4, axis=1)
    y = 5.0 * x1 + rng.normal(0.0, 0.3, size=x1.size)
    rows = {r.factor: r for r in stats.variance_decomposition(
        y, {"x1": x1, "x2": x2}, num_bins=5, config_ids=np.repeat(np.arange(30), 4))}
    eta.append(rows["x2"].eta_sq)
    eps.append(rows["x2"].eps_sq)
  assert abs(np.mean(eps)) < 0.02
  assert np.mean(eta) > 0.08  # about (bins - 1) / (configs - 1) of the total


def test_quantile_bins_keep_ties_together():
  values = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3)
  bins = stats.quantile_bins(values, 3)
  assert np.unique(bins).size == 3
  for v in np.unique(values):
    assert np.unique(bins[values == v]).size == 1
  np.testing.assert_array_equal(np.bincount(bins), [6, 6, 6])


# ---------------------------------------------------------------------------------------------
# Learning-rate sensitivity and basin width.


def test_lr_sensitivity_hand_worked():
  # Capped at l0 = 2.5: [2.5, 2, 1, 2, 2.5] (the NaN diverged), best 1 -> mean excess 1.0.
  values = np.array([3.0, 2.0, 1.0, 2.0, np.nan])
  np.testing.assert_allclose(stats.lr_sensitivity(values, 2.5), 1.0)
  np.testing.assert_allclose(stats.lr_sensitivity(-values, -2.5, "max"), 1.0)
  assert stats.lr_sensitivity([1.0, 1.0, 1.0], 5.0) == 0.0
  assert math.isnan(stats.lr_sensitivity([1.0, 2.0], math.nan))


def test_basin_width_of_quadratic():
  # l(x) = 1 + (x - x0)^2 with the reference (initial value) 2: the threshold is
  # 1 + tol * (2 - 1), so the half-width is sqrt(tol) decades.
  lrs = np.logspace(-4, 0, 401)
  x0 = -2.0
  values = 1.0 + (np.log10(lrs) - x0) ** 2
  for tol in (0.01, 0.05):
    basin = stats.basin_width(lrs, values, tol, reference=2.0)
    np.testing.assert_allclose(basin.width_decades, 2 * math.sqrt(tol), atol=1e-3)
    assert not basin.open_low and not basin.open_high
  # Accuracy-like: the same curve mirrored (best 2, reference 1).
  basin = stats.basin_width(lrs, 2.0 - (np.log10(lrs) - x0) ** 2, 0.05, "max", reference=1.0)
  np.testing.assert_allclose(basin.width_decades, 2 * math.sqrt(0.05), atol=1e-3)


@pytest.mark.parametrize("offset", [0.05, 2.0, 100.0])
def test_basin_width_does_not_depend_on_the_metric_offset(offset):
  # The same curvature at best 0.05 and at best 2.0 (the issue: 0.10 vs 0.63 decades when the
  # tolerance was relative to |best|): one basin whatever the offset, and whatever the scale.
  lrs = np.logspace(-4, 0, 401)
  shape = (np.log10(lrs) + 2.0) ** 2
  ref = stats.basin_width(lrs, shape, 0.05, reference=1.0)
  for scale in (1.0, 7.0):
    basin = stats.basin_width(lrs, offset + scale * shape, 0.05, reference=offset + scale)
    np.testing.assert_allclose(basin.width_decades, ref.width_decades, rtol=1e-9)
  np.testing.assert_allclose(ref.width_decades, 2 * math.sqrt(0.05), atol=1e-3)


def test_basin_width_edges_and_divergence():
  lrs = np.array([1e-4, 1e-3, 1e-2, 1e-1])
  basin = stats.basin_width(lrs, [1.0, 1.0, 1.0, np.nan], 0.01, reference=2.0)
  assert basin.open_low and not basin.open_high  # ends at the last stable lr
  np.testing.assert_allclose([basin.lr_low, basin.lr_high, basin.width_decades], [1e-4, 1e-2, 2])
  # Linear crossing: 1.0 at 1e-3 and 2.0 at 1e-2, reference 2 (threshold 1 + 0.05 * 1 = 1.05)
  # -> 0.05 decades to the right; 3.0 at 1e-4 -> 0.025 decades to the left.
  basin = stats.basin_width(lrs[:3], [3.0, 1.0, 2.0], 0.05, reference=2.0)
  np.testing.assert_allclose(basin.lr_high, 10 ** (-3 + 0.05))
  np.testing.assert_allclose(basin.lr_low, 10 ** (-3 - 0.025))
  # Without a reference the spread of the values (3 - 1) takes its place: threshold 1.1.
  basin = stats.basin_width(lrs[:3], [3.0, 1.0, 2.0], 0.05)
  np.testing.assert_allclose(basin.lr_high, 10 ** (-3 + 0.1))
  with pytest.raises(ValueError, match="distinct"):
    stats.basin_width([1e-3, 1e-3], [1.0, 2.0], 0.01)
