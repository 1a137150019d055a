"""Which value factors mattered: ANOVA for grids, first-order variance shares otherwise."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxopt_lab.analysis import stats
from jaxopt_lab.analysis.results import Group

GRID_DESIGNS = ("grid", "factorial")  # design names (substrings) analysed by ANOVA
SPACE_FILLING_DESIGNS = ("random", "sobol", "lhs", "halton", "qmc")  # ... by variance shares


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
