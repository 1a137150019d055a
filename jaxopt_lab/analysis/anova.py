"""ANOVA of categorical factors and first-order variance shares of continuous ones."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats


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


