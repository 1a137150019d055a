"""Median stopping (Golovin et al., 2017, "Google Vizier"), in the fewest lines: at each rung,
stop a point whose validation metric is worse than the median of the other points' at that step.

  python scripts/sweep.py --config=experiments/sweep_lm_tiny_halving.py --workdir=runs/lm_median \
      --config.sweep.design=examples/median_stopping.py:median_stopping
"""

import numpy as np

from jaxopt_lab.sweep import adaptive


class MedianStopping:
  """Every point trains to the first rung; at each rung the points above the others' median stop."""

  def __init__(self, group, settings, workdir):
    steps, rungs = group.config.train.steps, settings["rungs"]
    self.ends = sorted({max(1, round(steps * k / rungs)) for k in range(1, rungs + 1)})
    self.size = len(group.points)

  def first(self):
    return adaptive.Stage(0, np.arange(self.size), self.ends[0], note=f"{self.size} points")

  def next(self, stage, scores):  # scores: lower is better, inf where a point diverged
    others = [np.median(np.delete(scores, j)) if len(scores) > 1 else np.inf
              for j in range(len(scores))]
    keep = np.flatnonzero(np.isfinite(scores) & (scores <= others))
    if stage.index + 1 == len(self.ends) or not len(keep):
      return None
    end = self.ends[stage.index + 1]
    return adaptive.Stage(stage.index + 1, stage.slots[keep], end, source=keep,
                          note=f"{len(keep)} of {len(scores)} points to step {end}")


median_stopping = adaptive.declare(MedianStopping, settings=[
    adaptive.Setting("rungs", 4, low=1, note="rung k of the run's steps * k / rungs")])
