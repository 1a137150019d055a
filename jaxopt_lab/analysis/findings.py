"""From a loaded experiment to the numbers of the report (`analyse`), and the names the report
reads them by.

Conventions, used everywhere:

* A diverged point (status "diverged", or a non-finite final metric) counts as failed: its
  metric is the group's cap (`Group.cap`: the metric at initialisation where logged), and no
  point counts worse than the cap (`Group.scored`), in every statistic.
* Choosing is on the final **validation** metric, reporting and comparing on the final **test**
  metric (`selection`): the recommended configuration of a group is the one with the best mean
  valid metric over seeds; the compared quantity is the tuned optimizer, chosen per seed.
* The metric's kind (`stats.metric_kind`: "positive" for a loss, else "general") chooses the
  interval of a mean (`stats.mean_interval`).
* A configuration is one setting of the value factors; its replicates share seeds with the
  other configurations and groups (common random numbers), so comparisons are paired.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxopt_lab import expdir
from jaxopt_lab.analysis import looks, stats
from jaxopt_lab.analysis.compute import ComputeRow, compute_rows
from jaxopt_lab.analysis.curves import LearningCurve, learning_curves, tuning
from jaxopt_lab.analysis.effects import Effects, effects, second_factor
from jaxopt_lab.analysis.results import Experiment, Group
from jaxopt_lab.analysis.selection import (
  NO_INTERVAL,
  Interval,
  Pair,
  Selection,
  interval,
  nan_mean,
  pair,
  pairs,
  rank,
  select,
)
from jaxopt_lab.analysis.sensitivity import BASIN_TOLERANCES, LrCurve, Sensitivity, sensitivity

__all__ = [
    "BASIN_TOLERANCES", "NO_INTERVAL", "ComputeRow", "Effects", "Findings", "Interval",
    "LearningCurve", "LrCurve", "Pair", "Selection", "Sensitivity", "analyse", "compute_rows",
    "effects", "learning_curves", "metric_kind", "nan_mean", "pair", "pairs", "rank", "select",
    "second_factor", "sensitivity", "stats", "tuning"]


def metric_kind(exp: Experiment) -> str:
  """The kind of the experiment's metric, from every scored value of both splits."""
  values = [g.scored(split).ravel() for g in exp.groups for split in ("valid", "test")]
  return stats.metric_kind(exp.mode, np.concatenate(values) if values else np.zeros(0))


@dataclasses.dataclass(frozen=True)
class Findings:
  experiment: Experiment
  kind: str  # the metric's kind (`metric_kind`)
  look: int  # 1, or which follow-up in a chain (`looks`)
  alpha: float  # the level of this look's verdict (`looks.alpha_at`)
  sensitivities: list[Sensitivity]
  ranked: list[Selection]
  versus_best: list[Pair]  # (group, best group) for every ranked group after the first
  pairs: list[Pair]  # every two ranked groups, a ranked before b
  tuning: list[tuple[Group, stats.TuningCurve | None]]
  effects: list[Effects]
  learning_curves: list[tuple[Selection, list[LearningCurve]]]
  compute: list[ComputeRow]
  # group -> accuracy of the tuned optimizer on the test split, where the task logs accuracy
  # and the experiment is tuned on another metric
  accuracy: dict[str, Interval] = dataclasses.field(default_factory=dict)


def accuracy(exp: Experiment, sel: Selection) -> Interval | None:
  """The tuned optimizer's final accuracy on the test split (each seed at its chosen
  configuration, as the compared metric), with its "general" interval; None where summary.csv
  has no accuracy or accuracy is the tuned metric itself."""
  column = expdir.metric_column("final", exp.test_split, "accuracy")
  if exp.metric == "accuracy" or column not in exp.summary or "point" not in exp.summary:
    return None
  row = {int(p): i for i, p in enumerate(exp.summary["point"])}
  values = np.full(sel.seed_configs.size, np.nan)
  for r, c in enumerate(sel.seed_configs):
    point = int(sel.group.point[c, r]) if c >= 0 else -1
    if point in row and not sel.group.diverged[c, r]:
      values[r] = float(exp.summary[column][row[point]])
  return interval(values, "general")


def analyse(exp: Experiment, *, num_resamples: int = 2000, seed: int = 0) -> Findings:
  """Computes every number of the report from a loaded experiment.

  `num_resamples` and `seed` are the tuning curves' bootstrap (the only resampling left).
  """
  kind, look = metric_kind(exp), looks.look_of(exp.workdir)
  alpha = looks.alpha_at(look)
  selections = [select(g, exp.mode, kind) for g in exp.groups]
  ranked = rank(selections, exp.mode)
  all_pairs = pairs(ranked, alpha)
  return Findings(
      experiment=exp, kind=kind, look=look, alpha=alpha,
      sensitivities=[sensitivity(g, exp.mode, kind) for g in exp.groups],
      ranked=ranked,
      versus_best=[dataclasses.replace(pair(p.b, p.a, p.num_pairs, alpha),
                                       p_adjusted=p.p_adjusted)
                   for p in all_pairs if p.a is ranked[0]],
      pairs=all_pairs,
      tuning=[(g, tuning(g, exp.mode, num_resamples=num_resamples, seed=seed))
              for g in exp.groups],
      effects=[effects(g, exp.design_name) for g in exp.groups],
      learning_curves=[(s, learning_curves(exp, s)) for s in selections],
      compute=compute_rows(exp),
      accuracy={s.group.group: a for s in selections if (a := accuracy(exp, s)) is not None})
