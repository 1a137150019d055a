"""How well a rung's ranking predicted the full horizon's: Spearman's rho per rung.

Successive halving and Hyperband keep the points their rung ranks best; the ranking is by the
valid metric there ('last'), a cooldown fork's or an extrapolation (`sweep.adaptive.rank_by`;
stages.csv's `ranked_by` and `score` on a ranking rung's rows). Its quality is the rank
correlation between the rung's scores and the same points' valid metric at the full horizon
(Spearman's rho, `scipy.stats.spearmanr`): +1, the rung ordered them as the end does.

Inside one experiment the full horizon is known only for the points that reached it (a rung's
survivors); `rung_ranks` uses those and says how many there were. A study that also trains the
grid of the same points (`benchmarks/adaptive_study.py`) knows every point's, and passes them as
`finals`. No JAX: files only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy import stats

MIN_POINTS = 3  # fewer: rho is +-1 or undefined, no evidence
_DIVERGED = 1e300  # a diverged point (inf) ranks last on both sides, tied with the others


def spearman(scores: np.ndarray, finals: np.ndarray) -> float:
  """Spearman's rho of two scorings of the same points (lower is better on both; inf ranks
  last); NaN with fewer than `MIN_POINTS` points or a constant scoring."""
  a, b = np.asarray(scores, np.float64), np.asarray(finals, np.float64)
  keep = ~(np.isnan(a) | np.isnan(b))
  a, b = a[keep], b[keep]
  if a.size < MIN_POINTS:
    return math.nan
  a, b = np.where(np.isfinite(a), a, _DIVERGED), np.where(np.isfinite(b), b, _DIVERGED)
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return math.nan
  return float(stats.spearmanr(a, b).statistic)


@dataclasses.dataclass(frozen=True)
class RungRank:
  """One ranking rung of one group: what ranked it, and how well.

  Attributes:
    group, stage, end: the rung (its stage and step).
    ranked_by: the rung's ranking (the most frequent of its rows' `ranked_by`: 'last',
      'cooldown', 'extrapolated', or 'last (<why the extrapolation failed>)').
    points: the points it ranked; known: those whose full-horizon value is known.
    rho: Spearman's rho over the known points (NaN with fewer than `MIN_POINTS`).
  """

  group: str
  stage: int
  end: int
  ranked_by: str
  points: int
  known: int
  rho: float


def rung_ranks(stages, finals: Mapping[int, float]) -> list[RungRank]:
  """Per ranking rung of `stages` (`adaptive.Stages`), the rank correlation of its scores with
  `finals` (point -> full-horizon score, lower is better; a point without one is unknown)."""
  out = []
  for group in stages.groups:
    for k in sorted(set(stages.stage[stages.rows(group)].tolist())):
      rows = stages.rows(group, k)
      rows = rows[stages.ranked_by[rows] != ""]
      if not rows.size:
        continue
      hows = stages.ranked_by[rows].tolist()
      final = np.array([finals.get(int(p), math.nan) for p in stages.point[rows]])
      out.append(RungRank(group, k, int(stages.end[rows].max()), max(set(hows), key=hows.count),
                          int(rows.size), int(np.isfinite(final).sum() + np.isinf(final).sum()),
                          spearman(stages.score[rows], final)))
  return out
