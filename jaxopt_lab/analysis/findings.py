"""From a loaded experiment to the numbers of the report.

Conventions, used everywhere below:

* A diverged point (status "diverged", or a non-finite final metric) counts as failed: its
  metric is the group's cap (`Group.cap`: the metric at initialisation where logged), and no
  point counts worse than the cap (`Group.scored`), in every statistic below.
* One statistic: a configuration's value is its **mean** final validation metric over seeds.
  It picks the best configuration (console, tables, curves, sensitivity) and ranks the groups;
  the final **test** metric is reported and compared, never used to choose.
* A configuration is one setting of the value factors; its replicates share seeds with the
  other configurations and groups (common random numbers), so comparisons are paired.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np

from jaxopt_lab.analysis import stats
from jaxopt_lab.analysis.results import Experiment, Group

BASIN_TOLERANCES = (0.01, 0.05)
GRID_DESIGNS = ("grid", "factorial")  # design names (substrings) analysed by ANOVA
SPACE_FILLING_DESIGNS = ("random", "sobol", "lhs", "halton", "qmc")  # ... by variance shares


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over replicates with its 95% interval (NaN ends when n < 2)."""

  value: float
  low: float
  high: float
  n: int
  method: str = ""  # "t" or "BCa" (`stats.interval_method`); "" without an interval


NO_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)


def interval(values: np.ndarray, *, num_resamples: int, seed: int) -> Interval:
  """The mean of the finite `values` with its interval (`stats.mean_interval`)."""
  v = np.asarray(values, dtype=np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return NO_INTERVAL
  low, high = stats.mean_interval(v, num_resamples=num_resamples, seed=seed)
  return Interval(float(np.mean(v)), low, high, int(v.size), stats.interval_method(v.size))


def _nan_stat(values: np.ndarray, fn, axis: int = -1) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as wanted
    return fn(values, axis=axis)


def _better(a: float, b: float, mode: str) -> bool:
  if math.isnan(b):
    return not math.isnan(a)
  return (a < b) if mode == "min" else (a > b)


def _best_index(values: np.ndarray, mode: str) -> int:
  """Index of the best finite value (the first one on ties); -1 when none is finite."""
  best = -1
  for i, v in enumerate(values):
    if np.isfinite(v) and (best < 0 or _better(v, values[best], mode)):
      best = i
  return best


# ---------------------------------------------------------------------------------------------
# Learning-rate sensitivity.


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
  diverged_step: np.ndarray  # [L, R]
  mean: np.ndarray  # [L] mean over replicates
  low: np.ndarray  # [L] interval of the mean
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


def lr_curve(group: Group, mode: str, *, num_resamples: int, seed: int) -> LrCurve | None:
  """The profile of the validation metric over the group's swept learning rates."""
  scored = group.scored("valid")
  means = _nan_stat(scored, np.nanmean)
  lrs = np.unique(group.lr[np.isfinite(group.lr)])
  if lrs.size == 0:
    return None
  chosen = []
  for lr in lrs:
    candidates = np.flatnonzero(group.lr == lr)
    best = _best_index(means[candidates], mode)
    chosen.append(candidates[max(best, 0)])
  chosen = np.array(chosen)
  values = scored[chosen]
  low, high, n, mean = [], [], [], []
  for row in values:
    iv = interval(row, num_resamples=num_resamples, seed=seed)
    mean.append(iv.value)
    low.append(iv.low)
    high.append(iv.high)
    n.append(iv.n)
  return LrCurve(lr=lrs, config=chosen, values=values, diverged=group.diverged[chosen],
                 diverged_step=group.diverged_step[chosen], mean=np.array(mean),
                 low=np.array(low), high=np.array(high), n=np.array(n))


def sensitivity(group: Group, mode: str, *, num_resamples: int, seed: int) -> Sensitivity:
  """LR sensitivity (per replicate, then mean and interval) and basin widths of one group."""
  curve = lr_curve(group, mode, num_resamples=num_resamples, seed=seed)
  nan_basins = tuple(stats.Basin(t, math.nan, math.nan, math.nan, False, False)
                     for t in BASIN_TOLERANCES)
  diverged_points = int(group.diverged.sum())
  if curve is None:
    return Sensitivity(group, None, math.nan, math.nan, NO_INTERVAL, nan_basins,
                       diverged_points, math.nan)
  per_replicate = [stats.lr_sensitivity(curve.values[:, r], group.cap, mode)
                   for r in range(curve.values.shape[1])
                   if np.all(np.isfinite(curve.values[:, r]))]
  sens = interval(np.array(per_replicate), num_resamples=num_resamples, seed=seed)
  best = _best_index(curve.mean, mode)
  ok = np.isfinite(curve.mean)
  basins = (tuple(stats.basin_width(curve.lr[ok], curve.mean[ok], t, mode)
                  for t in BASIN_TOLERANCES) if ok.any() else nan_basins)
  div_lrs = curve.lr[curve.diverged.any(axis=1)]
  return Sensitivity(
      group=group, curve=curve, best_lr=float(curve.lr[best]) if best >= 0 else math.nan,
      best_mean=float(curve.mean[best]) if best >= 0 else math.nan, sensitivity=sens,
      basins=basins, diverged_points=diverged_points,
      first_diverged_lr=float(div_lrs.min()) if div_lrs.size else math.nan)


# ---------------------------------------------------------------------------------------------
# Fair comparison.


@dataclasses.dataclass(frozen=True)
class Selection:
  """A group at its own best configuration (chosen on the validation metric)."""

  group: Group
  config: int  # -1 when no configuration has a finished point
  settings: dict[str, object]  # value-factor levels of the chosen configuration
  lr: float
  points: tuple[int, ...]  # the finished points of the chosen configuration
  valid: Interval  # mean scored validation metric over replicates (the selection criterion)
  test: Interval  # mean scored test metric over replicates
  test_values: np.ndarray  # [R] scored test metric (NaN unfinished)
  diverged_replicates: int  # at the chosen configuration
  num_configs: int  # tuning budget: configurations with a finished point
  num_points: int  # ... finished points
  steps: float  # ... steps per point (the most any finished point did)


def select(group: Group, mode: str, *, num_resamples: int, seed: int) -> Selection:
  """Picks the configuration with the best mean validation metric over its replicates."""
  valid = group.scored("valid")
  means = _nan_stat(valid, np.nanmean)
  best = _best_index(means, mode)
  r = group.point.shape[1]
  budget = dict(num_configs=int(group.finished.any(axis=1).sum()),
                num_points=int(group.finished.sum()),
                steps=float(np.nanmax(group.steps)) if np.isfinite(group.steps).any() else math.nan)
  if best < 0:
    return Selection(group, -1, {}, math.nan, (), NO_INTERVAL, NO_INTERVAL, np.full(r, np.nan), 0,
                     **budget)
  test_values = group.scored("test")[best]
  return Selection(
      group=group, config=best,
      settings={f: group.levels[f][best] for f in group.factors}, lr=float(group.lr[best]),
      points=tuple(int(p) for p in group.point[best][group.finished[best]]),
      valid=interval(valid[best], num_resamples=num_resamples, seed=seed),
      test=interval(test_values, num_resamples=num_resamples, seed=seed),
      test_values=test_values, diverged_replicates=int(group.diverged[best].sum()), **budget)


@dataclasses.dataclass(frozen=True)
class Pair:
  a: Selection
  b: Selection
  comparison: stats.PairedComparison | None  # None when no replicate is finished in both
  p_holm: float = math.nan  # the t-test p, Holm-adjusted over every pair of groups


def rank(selections: list[Selection], mode: str) -> list[Selection]:
  """Best first by the selection criterion, the mean validation metric; no result last."""
  def key(s: Selection) -> tuple[bool, float]:
    v = s.valid.value
    return (not np.isfinite(v), v if mode == "min" else -v)
  return sorted(selections, key=key)


def pair(a: Selection, b: Selection) -> Pair:
  """Paired comparison of the test metric, a - b, over the replicates finished in both."""
  both = np.isfinite(a.test_values) & np.isfinite(b.test_values)
  comparison = None
  if both.any():
    comparison = stats.paired_comparison(a.test_values[both], b.test_values[both])
  return Pair(a, b, comparison)


def pairs(ranked: list[Selection]) -> list[Pair]:
  """Every two ranked groups (a ranked before b), with Holm's correction over all of them."""
  found = [pair(a, b) for a, b in itertools.combinations(ranked, 2)]
  adjusted = stats.holm([p.comparison.t_pvalue if p.comparison else math.nan for p in found])
  return [dataclasses.replace(p, p_holm=float(h)) for p, h in zip(found, adjusted, strict=True)]


# ---------------------------------------------------------------------------------------------
# Tuning curves.


def tuning(group: Group, mode: str, *, num_resamples: int, seed: int) -> stats.TuningCurve | None:
  """Expected best validation metric after k draws from the group's finished points."""
  values = group.scored("valid")[group.finished]
  values = values[np.isfinite(values)]
  if values.size == 0:
    return None
  return stats.tuning_curve(values, mode, num_resamples=num_resamples, seed=seed)


# ---------------------------------------------------------------------------------------------
# Which hyperparameters mattered.


@dataclasses.dataclass(frozen=True)
class Effects:
  group: Group
  kind: str  # "anova", "variance" or "none"
  note: str
  anova: list[stats.AnovaRow] | None
  variance: list[stats.VarianceShare] | None
  main_effects: dict[str, tuple[np.ndarray, np.ndarray]]  # factor -> (levels or bin centres, mean)


def _is_numeric(levels: np.ndarray) -> bool:
  return levels.dtype.kind == "f"


def effects(group: Group, design_name: str) -> Effects:
  """ANOVA (grid/factorial designs) or first-order variance shares (space-filling designs).

  The design name decides; for another name (an explicit list of points) a full crossing of the
  factors' levels makes it a grid. Categorical factors always go to the ANOVA.
  """
  factors = tuple(f for f in group.factors if np.unique(group.levels[f].astype(str)).size > 1)
  if not factors:
    return Effects(group, "none", "one configuration only: no value factor varies.", None, None,
                   {})
  cfg, _ = np.nonzero(group.finished)
  y = group.scored("valid")[group.finished]
  keep = np.isfinite(y)
  cfg, y = cfg[keep], y[keep]
  if y.size < 3:
    return Effects(group, "none", "fewer than 3 finished points.", None, None, {})
  per_point = {f: group.levels[f][cfg] for f in factors}
  name = design_name.lower()
  if any(d in name for d in GRID_DESIGNS):
    is_grid = True
  elif any(d in name for d in SPACE_FILLING_DESIGNS):
    is_grid = False
  else:  # e.g. an explicit list of points: a grid if its levels are fully crossed
    num_levels = [np.unique(group.levels[f].astype(str)).size for f in factors]
    is_grid = (math.prod(num_levels) == group.num_configs
               and (len(factors) == 1 or max(num_levels) < group.num_configs))
  main_effects = {}
  if is_grid or not all(_is_numeric(per_point[f]) for f in factors):
    for f in factors:
      levels = np.unique(per_point[f])
      main_effects[f] = (levels, np.array([y[per_point[f] == lv].mean() for lv in levels]))
    what = "main effects and two-factor interactions" if len(factors) > 1 else "one-way"
    note = (f"ANOVA ({what}) with factors as categorical levels, Type II sums of squares; "
            "response the validation metric of every finished point (replicates included; "
            "diverged points at the cap).")
    table = stats.anova(y, per_point, interactions=len(factors) > 1)
    full_df = {f: np.unique(per_point[f].astype(str)).size - 1 for f in factors}
    aliased = any(row.df < full_df[row.term] for row in table if row.term in full_df)
    if len(factors) > 1 and (table[-2].df == 0 or aliased):
      table = stats.anova(y, per_point, interactions=False)
      why = "aliased with main effects" if aliased else "leaving no residual degrees of freedom"
      note += f" Two-factor interactions {why}: main effects only, interactions pooled into "
      note += "the residual."
    return Effects(group, "anova", note, table, None, main_effects)
  num_bins = int(np.clip(round(math.sqrt(np.unique(cfg).size)), 2, 10))
  raw = stats.variance_decomposition(y, per_point, num_bins=num_bins, config_ids=cfg)
  # Shares cannot be negative: a negative corrected estimate (less signal than the noise it is
  # judged against) is shown as 0, and "rest" is what the shown shares leave.
  rows = [dataclasses.replace(r, eps_sq=max(r.eps_sq, 0.0)) for r in raw[:-1]]
  rows.append(dataclasses.replace(
      raw[-1], eta_sq=max(1.0 - sum(r.eta_sq for r in rows), 0.0),
      eps_sq=max(1.0 - sum(r.eps_sq for r in rows), 0.0)))
  for f in factors:
    bins = stats.quantile_bins(per_point[f], num_bins)
    centres = np.array([np.median(per_point[f][bins == b]) for b in np.unique(bins)])
    means = np.array([y[bins == b].mean() for b in np.unique(bins)])
    main_effects[f] = (centres, means)
  note = (f"First-order variance shares: each factor cut into {num_bins} quantile bins; eta^2 = "
          "SS_between / SS_total (the correlation ratio, a binned first-order Sobol' index) and "
          "eps^2 with the noise expected from the bin count removed; 'seed' is the variance "
          "between replicates of one configuration, 'rest' what remains (interactions and "
          "within-bin variation); negative estimates are shown as 0. Response: the validation "
          "metric of every finished point (diverged at the cap).")
  configs = np.unique(cfg).size
  if configs < 5 * num_bins:
    note += (f" Only {configs} configurations for {num_bins} bins per factor: rough estimates, "
             "and factors correlated by chance share their effects.")
  return Effects(group, "variance", note, None, rows, main_effects)


def second_factor(e: Effects) -> str | None:
  """The most important numeric value factor after the learning rate (the largest eps^2 or,
  for an ANOVA, sum of squares); None without a learning rate and another numeric factor."""
  g = e.group
  if "learning_rate" not in g.factors:
    return None
  others = [f for f in g.factors if f != "learning_rate" and _is_numeric(g.levels[f])]
  if not others:
    return None
  weight = {r.factor: r.eps_sq for r in e.variance or []}
  weight |= {r.term: r.sum_sq for r in e.anova or []}
  return max(others, key=lambda f: weight.get(f, -math.inf))


def nan_mean(values: np.ndarray) -> np.ndarray:
  """Mean over the last axis ignoring NaN (unfinished); NaN where nothing is finished."""
  return _nan_stat(values, np.nanmean)


# ---------------------------------------------------------------------------------------------
# Learning curves.


@dataclasses.dataclass(frozen=True)
class LearningCurve:
  role: str  # "best", "lower lr" or "higher lr"
  lr: float
  points: tuple[int, ...]
  step: np.ndarray  # the logged evaluation steps
  valid: np.ndarray  # mean over the replicates at each step
  train_step: np.ndarray | None  # the logged train steps (their own cadence)
  train: np.ndarray | None  # mean train metric, when logged


def _mean_curve(curves, points, split, metric):
  series = [curves.get(p, {}).get(split) for p in points]
  series = [s for s in series if s is not None and metric in s]
  if not series:
    return None, None
  steps = np.unique(np.concatenate([s["step"] for s in series]))
  grid = np.full((len(series), steps.size), np.nan)
  for i, s in enumerate(series):
    grid[i, np.searchsorted(steps, s["step"])] = s[metric]
  return steps, _nan_stat(grid, np.nanmean, axis=0)


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
    step, valid = _mean_curve(exp.curves, points, "valid", exp.metric)
    if step is None:
      continue
    train_step, train = _mean_curve(exp.curves, points, "train", exp.metric)
    out.append(LearningCurve(role, float(group.lr[c]), points, step, valid, train_step, train))
  return out


# ---------------------------------------------------------------------------------------------
# Compute.


@dataclasses.dataclass(frozen=True)
class ComputeRow:
  group: str
  points: int
  steps: float
  points_steps: float  # the compute spent: run.json's points_steps (else points x steps)
  tokens: float  # tokens_per_step x points_steps; NaN when unknown
  compile_seconds: float
  train_seconds: float
  points_steps_per_second: float
  flops_per_second: float  # flops_per_step x points_steps / train_seconds; NaN when unknown
  mfu: float  # flops_per_second / run.json peak_flops; NaN without a peak


def compute_rows(exp: Experiment) -> list[ComputeRow]:
  """Per-group compute from run.json, and a total row (group "total")."""
  peak = _float(exp.run.get("peak_flops"))
  rows = []
  for g in exp.run.get("groups", []) or []:
    points, steps = _float(g.get("points")), _float(g.get("steps"))
    train_s = _float(g.get("train_seconds"))
    # An adaptive design trains fewer points in later stages: what it spent is points_steps.
    work = _float(g.get("points_steps", steps * points))
    tokens = _float(g.get("tokens_per_step")) * work
    flops = _float(g.get("flops_per_step")) * work
    fps = flops / train_s if train_s > 0 else math.nan
    rows.append(ComputeRow(
        group=str(g.get("group")), points=int(points) if np.isfinite(points) else 0, steps=steps,
        points_steps=work, tokens=tokens, compile_seconds=_float(g.get("compile_seconds")),
        train_seconds=train_s,
        points_steps_per_second=_float(g.get("points_steps_per_second")),
        flops_per_second=fps, mfu=fps / peak if peak > 0 else math.nan))
  if rows:
    train_s = sum(r.train_seconds for r in rows)
    flops = sum(r.flops_per_second * r.train_seconds for r in rows)
    fps = flops / train_s if train_s > 0 else math.nan
    rows.append(ComputeRow(
        group="total", points=sum(r.points for r in rows),
        steps=sum(r.steps * r.points for r in rows) / max(sum(r.points for r in rows), 1),
        points_steps=sum(r.points_steps for r in rows), tokens=sum(r.tokens for r in rows),
        compile_seconds=sum(r.compile_seconds for r in rows), train_seconds=train_s,
        points_steps_per_second=(sum(r.points_steps for r in rows) / train_s
                                 if train_s > 0 else math.nan),
        flops_per_second=fps, mfu=fps / peak if peak > 0 else math.nan))
  return rows


def _float(value) -> float:
  try:
    return math.nan if value is None else float(value)
  except (TypeError, ValueError):
    return math.nan


# ---------------------------------------------------------------------------------------------
# Everything.


@dataclasses.dataclass(frozen=True)
class Findings:
  experiment: Experiment
  sensitivities: list[Sensitivity]
  ranked: list[Selection]
  versus_best: list[Pair]  # (group, best group) for every ranked group after the first
  pairs: list[Pair]  # every two ranked groups, a ranked before b
  tuning: list[tuple[Group, stats.TuningCurve | None]]
  effects: list[Effects]
  learning_curves: list[tuple[Selection, list[LearningCurve]]]
  compute: list[ComputeRow]


def analyse(exp: Experiment, *, num_resamples: int = 2000, seed: int = 0) -> Findings:
  """Computes every number of the report from a loaded experiment."""
  kw = dict(num_resamples=num_resamples, seed=seed)
  selections = [select(g, exp.mode, **kw) for g in exp.groups]
  ranked = rank(selections, exp.mode)
  all_pairs = pairs(ranked)
  return Findings(
      experiment=exp,
      sensitivities=[sensitivity(g, exp.mode, **kw) for g in exp.groups],
      ranked=ranked,
      versus_best=[dataclasses.replace(pair(p.b, p.a), p_holm=p.p_holm)
                   for p in all_pairs if p.a is ranked[0]],
      pairs=all_pairs,
      tuning=[(g, tuning(g, exp.mode, **kw)) for g in exp.groups],
      effects=[effects(g, exp.design_name) for g in exp.groups],
      learning_curves=[(s, learning_curves(exp, s)) for s in selections],
      compute=compute_rows(exp))
