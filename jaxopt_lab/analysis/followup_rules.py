"""The rules of a follow-up's proposal (`followup`): each reads the findings of the source and
returns a `Change` of one config field with its reason."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import ml_collections
import numpy as np

from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import looks, results
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import fmt_lr

BASIN_TOLERANCE = fnd.BASIN_TOLERANCES[-1]  # the report's wider basin: within 5% of the best
MAX_SEED_FACTOR = 4  # the follow-up runs at most this many times a's seeds
LR_FIELD = "sweep.factors.learning_rate"
SEEDS_FIELD = "sweep.replicates"
SEED_FIELD = "sweep.seed"
DESIGN_FIELD = "sweep.design"
POINTS_FIELD = "sweep.points"
# Two lrs' means are told apart when they differ by this many standard errors of a mean
# (1.96 x sqrt(2): a two-sided 95% difference of two independent means).
RESOLUTION_SE = 1.96 * math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class Change:
  """One field of the config the proposal changes: its old and new value, and why."""

  field: str
  old: Any
  new: Any
  reason: str


def get_field(config: ml_collections.ConfigDict, path: str) -> Any:
  node: Any = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return None
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, name = path.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[name] = value


def text(value: Any) -> str:
  return json.dumps(value, sort_keys=True)


def design_change(f: fnd.Findings, config: ml_collections.ConfigDict) -> Change | None:
  """The source's design type, where a base config file names another."""
  ran, base = f.experiment.design_name, get_field(config, DESIGN_FIELD)
  if ran == "unknown" or base == ran:
    return None
  return Change(DESIGN_FIELD, base, ran, f"Kept the design the source ran ({ran}): a follow-up "
                "refines the same kind of experiment.")


# ---------------------------------------------------------------------------------------------
# The learning rate.


def learned(g: results.Group) -> bool:
  """Whether some finished point of the group neither diverged nor stayed at the cap."""
  scored = g.scored("valid")
  return bool(np.any(g.finished & ~g.diverged & np.isfinite(scored) & (scored != g.cap)))


def round_out(x: float, up: bool) -> float:
  """`x` to 2 significant digits, rounded away from the range's inside (a decimal float)."""
  if not (math.isfinite(x) and x > 0):
    return x
  exponent = math.floor(math.log10(x)) - 1
  digits = (math.ceil if up else math.floor)(x / 10.0**exponent * (1 - 1e-12 if up else 1 + 1e-12))
  return float(f"{digits}e{exponent}")  # parsed from decimal text: 0.47, not 0.47000000000000003


def group_range(s: fnd.Sensitivity, log: bool) -> tuple[float, float, str] | None:
  """The group's new lr range and why; None when it has no basin to narrow to."""
  c, basin = s.curve, s.basins[fnd.BASIN_TOLERANCES.index(BASIN_TOLERANCE)]
  if c is None or c.lr.size < 2 or not math.isfinite(basin.width_decades):
    return None
  inside = np.flatnonzero((c.lr >= basin.lr_low * (1 - 1e-9))
                          & (c.lr <= basin.lr_high * (1 + 1e-9)))
  lo, hi = int(inside.min()), int(inside.max())
  # The lrs the group can train at: below its first divergence.
  stable = c.lr.size if not math.isfinite(s.first_diverged_lr) else int(
      np.searchsorted(c.lr, s.first_diverged_lr))

  def beyond(edge: int, inner: int) -> float:  # one step past the edge, in the factor's scale
    x, y = c.lr[edge], c.lr[inner]
    return float(x * x / y) if log else float(max(2 * x - y, 0.0) or x)

  low = float(c.lr[lo - 1]) if lo > 0 else beyond(0, 1)
  if hi + 1 < stable:
    high = float(c.lr[hi + 1])
  elif stable < c.lr.size:
    high = float(c.lr[max(stable - 1, hi)])  # the last lr below the first divergence
  else:
    high = beyond(-1, -2)
  low, high = round_out(low, up=False), round_out(high, up=True)
  why = (f"{s.group.label}: best lr {fmt_lr(s.best_lr)}, {BASIN_TOLERANCE:.0%} basin "
         f"{fmt_lr(basin.lr_low)}..{fmt_lr(basin.lr_high)}, so {fmt_lr(low)}..{fmt_lr(high)} "
         "(one swept step out" + (", past the edge of the swept range: the basin is open there"
                                  if lo == 0 or hi + 1 == c.lr.size else "")
         + (f"; none at or above its first diverged lr {fmt_lr(s.first_diverged_lr)}"
            if stable < c.lr.size else "") + ")")
  return low, high, why


def resolvable_points(f: fnd.Findings, low: float, high: float, seeds: int) -> int | None:
  """The most lrs in [low, high] whose means `seeds` seeds can tell apart.

  In each group, the rise of the source's mean curve over the range (worst minus best there)
  divided by the smallest difference two means of `seeds` seeds resolve (`RESOLUTION_SE`
  standard errors, the seed SD pooled over the group's lrs): that many steps on each side of
  the best, so 1 + 2 x ceil(rise / step) points; the largest over the groups. None where no
  group has a seed SD (one seed).
  """
  best = None
  for s in f.sensitivities:
    c = s.curve
    if c is None:
      continue
    keep = (c.lr >= low * (1 - 1e-9)) & (c.lr <= high * (1 + 1e-9)) & np.isfinite(c.mean)
    values = c.values[keep & (c.n >= 2)]
    if not keep.any() or values.size == 0:
      continue
    sd = math.sqrt(np.nanmean(np.nanvar(values, axis=1, ddof=1)))
    if not sd > 0:
      continue
    rise = float(np.ptp(c.mean[keep]))
    n = 1 + 2 * math.ceil(rise / (RESOLUTION_SE * sd / math.sqrt(seeds)))
    best = n if best is None else max(best, n)
  return best


def lr_change(f: fnd.Findings, config: ml_collections.ConfigDict,
               notes: list[str], seeds: int) -> Change | None:
  for s in f.sensitivities:
    g = s.group
    if not g.finished.any():
      notes.append(f"{g.label}: no finished point: it says nothing about the learning rate.")
    elif g.diverged[g.finished].all():
      notes.append(f"{g.label} diverged at every learning rate it ran: it shapes no range; "
                   "try lower learning rates (or clipping) in its own experiment.")
    elif not learned(g):
      notes.append(f"{g.label} learned at no learning rate (every point at the cap "
                   f"{g.cap:.4g}): it shapes no range.")
  spec = get_field(config, LR_FIELD)
  if f.experiment.design_name == "explicit":
    notes.append("The explicit design's points are given by hand: the learning rate is not "
                 "narrowed (edit sweep.points).")
    return None
  if not isinstance(spec, dict) or not ("values" in spec or {"low", "high"} <= set(spec)):
    notes.append("The learning rate is not a factor of the base config declared by values or "
                 "a range: not narrowed.")
    return None
  values = spec.get("values")
  log = spec.get("scale", "log") == "log" and (values is None or min(values) > 0)
  ranges = [r for s in f.sensitivities if s.group.finished.any() and learned(s.group)
            and (r := group_range(s, log)) is not None]
  if not ranges:
    notes.append("No group has a learning-rate basin to narrow to (one learning rate swept, or "
                 "no group learned): the learning rate is not changed.")
    return None
  low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
  old_low, old_high = (min(values), max(values)) if values else (spec["low"], spec["high"])
  if low >= high or (math.isclose(low, old_low) and math.isclose(high, old_high)):
    notes.append("The measured basins span the swept learning-rate range: it is kept. "
                 + "; ".join(r[2] for r in ranges) + ".")
    return None
  old_num = len(values) if values else spec.get("num")
  resolvable = resolvable_points(f, low, high, seeds)
  num = old_num if old_num is None or resolvable is None else max(min(old_num, resolvable), 3)
  fewer = (f"; {num} points, not {old_num}: {seeds} seeds tell apart no finer steps of the "
           "measured curve" if num != old_num else "")
  if values:
    grid = np.geomspace(low, high, num) if log else np.linspace(low, high, num)
    new = {**spec, "values": [float(x) for x in grid]}
    size = f"{num} values spread over it" + fewer
  else:
    new = {**spec, "low": low, "high": high} | ({"num": num} if num is not None else {})
    size = (f"num {num}" + fewer) if "num" in spec else "drawn from it"
  hull = " The groups share the value points, so the new range covers each one." if len(
      ranges) > 1 else ""
  return Change(LR_FIELD, spec, new,
                "Narrowed to the measured basin: " + "; ".join(r[2] for r in ranges) + "."
                + hull + f" Range {fmt_lr(low)}..{fmt_lr(high)} ({size}).")


# ---------------------------------------------------------------------------------------------
# The seeds.


def seeds_change(f: fnd.Findings, config: ml_collections.ConfigDict,
                  notes: list[str], alpha: float) -> Change | None:
  seeds = f.experiment.num_replicates
  targets = []
  for p in f.versus_best:
    c, names = p.comparison, f"{p.b.group.label} and {p.a.group.label}"
    if c is None:
      notes.append(f"{names} share no finished seed: not compared.")
      continue
    spread = c.n >= 2 and math.isfinite(c.sd_diff) and c.sd_diff > 0
    if spread and p.distinguishable:
      continue  # the verdict tells them apart
    if not spread and c.n >= 2 and c.mean_diff != 0:
      continue  # the same difference on every seed: more seeds would not change it
    seeds_run = f"{c.n} seed" + ("" if c.n == 1 else "s")
    if spread:
      low, high = vd.seeds_needed(p, alpha)
      asks = f"{low} to {high}" if high is not None else f"at least {low}"
      targets.append((low, f"{names} are not distinguishable with {seeds_run} (Bonferroni p = "
                           f"{p.p_adjusted:.3g}); at the follow-up's level {alpha:g} the range "
                           f"of seeds needed is {asks}: the follow-up runs its lower end"))
    else:
      targets.append((max(2 * seeds, 3), f"{names} are not distinguishable with {seeds_run} "
                                         "(no spread to estimate power from): twice the seeds, "
                                         "at least 3"))
  if not targets:
    return None
  target, why = max(targets, key=lambda t: t[0])
  new = int(min(target, MAX_SEED_FACTOR * seeds))
  old = get_field(config, SEEDS_FIELD)
  if isinstance(old, int) and new <= old:
    notes.append(f"{why}; the base config already runs {old} seeds.")
    return None
  capped = f", capped at {MAX_SEED_FACTOR}x the {seeds} seeds of the experiment" if (
      new < target) else ""
  return Change(SEEDS_FIELD, old, new, f"More seeds: {why}{capped}.")


def fresh_seeds_change(f: fnd.Findings, config: ml_collections.ConfigDict) -> Change | None:
  """Seeds no earlier look used: `sweep.seed` moved on by the source's replicates."""
  ran = f.experiment.config.get("sweep", {})
  start = int(ran.get("seed", 0)) + f.experiment.num_replicates
  old = get_field(config, SEED_FIELD)
  if isinstance(old, int) and old >= start:
    return None
  return Change(SEED_FIELD, old, start, f"Fresh seeds: the source ran seeds "
                f"{int(ran.get('seed', 0))}..{start - 1}; the follow-up starts at {start} and is "
                f"analysed alone, as look {f.look + 1} at level "
                f"{looks.alpha_at(f.look + 1):g} (`jaxopt_lab/analysis/looks.py`).")


# ---------------------------------------------------------------------------------------------
# After an adaptive design.


def adaptive(exp: results.Experiment) -> bool:
  """Whether the source stopped points early (an adaptive design)."""
  status = exp.summary.get("status")
  return status is not None and any(str(x).strip() == "stopped" for x in status)


def survivors_changes(f: fnd.Findings, config: ml_collections.ConfigDict) -> list[Change]:
  """An explicit design of the configurations that trained the full budget."""
  exp = f.experiment
  points: list[dict[str, float]] = []
  for g in exp.groups:
    for c in np.flatnonzero(g.finished.any(axis=1)):
      point = {name: float(exp.design[name][int(g.point[c][g.finished[c]][0])])
               for name in exp.value_factors
               if isinstance(exp.design[name][0], (float, np.floating))}
      if point and point not in points:
        points.append(point)
  if not points:
    return []
  why = (f"The source ({exp.design_name}) trained {len(points)} configuration(s) to the full "
         "budget: the follow-up confirms them at the full budget with the seeds the verdict "
         "needs, instead of narrowing around them (its neighbours differ by noise).")
  changes = [Change(DESIGN_FIELD, get_field(config, DESIGN_FIELD), "explicit", why),
             Change(POINTS_FIELD, get_field(config, POINTS_FIELD), points, why)]
  for name in points[0]:
    field = f"sweep.factors.{name}"
    spec = get_field(config, field)
    if isinstance(spec, dict) and spec:
      changes.append(Change(field, spec, {}, "Named only: the explicit design's points give "
                            "its values."))
  return changes
