"""The level of each look in a chain of follow-ups: alpha spending over experiments.

An experiment and its follow-ups (`scripts/sweep.py --continue_from`) are looks at one question.
Each follow-up runs on fresh seeds (seeds no earlier look used) and is analysed alone; look k
decides at level

    alpha_k = ALPHA x (1 - RATIO) x RATIO**(k - 1)   (0.04, 0.008, 0.0016, ... for ALPHA 0.05),

so the looks together spend at most ALPHA: the chance of any false "beats" over a whole chain
is at most the sum, 0.05, however many follow-ups run (the looks are independent: fresh seeds).
Most of it goes to the first look, the experiment most people run alone. Measured under no
difference (3 groups, 3 then 12 seeds, 200,000 chains): 4.6% over two looks; reusing the first
run's seeds and retesting at 0.05 after a null look: 8.9%.
"""

from __future__ import annotations

import json
import os

from jaxopt_lab import expdir

ALPHA = 0.05  # family-wise error rate of every verdict over a chain of looks, all pairs
RATIO = 0.2  # each look spends this fraction of the one before


def alpha_at(look: int) -> float:
  """The level of look `look` (1 for an experiment that follows from none)."""
  if look < 1:
    raise ValueError(f"look must be >= 1, got {look}")
  return ALPHA * (1.0 - RATIO) * RATIO ** (look - 1)


def read_record(workdir: str) -> dict | None:
  """followup.json of `workdir`; None when it is not a follow-up."""
  path = os.path.join(workdir, expdir.FOLLOWUP_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def look_of(workdir: str) -> int:
  """Which look the experiment in `workdir` is: 1, or its followup.json's "look"."""
  rec = read_record(workdir)
  return int(rec.get("look", 2)) if rec else 1
