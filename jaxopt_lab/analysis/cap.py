"""The cap of a group: the value a failed (diverged) point counts as, the metric at
initialisation where the files know it."""

from __future__ import annotations

import math

import numpy as np


def cap_of(metric: str, mode: str, points: np.ndarray, valid: np.ndarray,
         curves: dict[int, dict[str, dict[str, np.ndarray]]]) -> tuple[float, str]:
  """The value a failed point counts as: the metric at initialisation where known."""
  at_init = []
  first_train = []
  for p in points[points >= 0]:
    splits = curves.get(int(p), {})
    valid_curve = splits.get("valid", {})
    if metric in valid_curve and valid_curve["step"].size and valid_curve["step"][0] == 0:
      at_init.append(valid_curve[metric][0])
    train_curve = splits.get("train", {})
    if metric in train_curve and train_curve["step"].size:
      first_train.append(train_curve[metric][0])
  at_init = np.array(at_init)
  at_init = at_init[np.isfinite(at_init)]
  if at_init.size:
    return float(np.median(at_init)), f"valid {metric} at step 0, median over the group"
  first_train = np.array(first_train)
  first_train = first_train[np.isfinite(first_train)]
  if first_train.size:
    return (float(np.median(first_train)),
            f"first logged train {metric}, median over the group; no step-0 evaluation")
  finite = valid[np.isfinite(valid)]
  if finite.size:
    worst = finite.max() if mode == "min" else finite.min()
    return float(worst), f"worst finite final valid {metric} in the group; no initial value logged"
  return math.nan, "unknown (no finite value in the group)"
