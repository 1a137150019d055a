"""The adaptive study's numbers read back from its experiment directories
(`benchmarks/adaptive_study.py`): one `Trace` per design and seed.

An experiment directory holds one seed (a design run once per seed) or several as replicates:
the grid's, and successive halving's / Hyperband's with `sweep.adaptive.per_replicate` (each
replicate its own search, the searches in lockstep in one population). A directory of
replicates gives one trace per replicate, each with its own points only: its compute (its
points x steps in stages.csv, cooldown forks included; the grid's: the run's split evenly), its
incumbent curve and its best full-budget point; its seconds are the run's split evenly, as all
replicates trained at once.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import numpy as np

from jaxopt_lab import expdir


@dataclasses.dataclass
class Trace:
  """One design at one seed: its compute and the incumbent as the compute grew.

  Attributes:
    design, seed: which run.
    compute: points x steps the design spent (run.json's tally; a directory of replicates:
      split by replicate).
    curve: (compute so far, best full-budget valid loss so far), one pair per moment the
      incumbent could change: after each stage (adaptive designs), after each point in design
      order (random: the first k of N draws are a random search of k), or once (the grid).
    best_loss, best_lr: the final incumbent (inf / nan when no point finished the budget).
    finished: points trained to the full budget.
    train_seconds: the design's training time (run.json; compile time excluded; split by
      replicate).
    wall_seconds: the design's run, compiles and evaluations included (split by replicate);
      NaN when read back without running.
  """

  design: str
  seed: int
  compute: int
  curve: list[tuple[int, float]]
  best_loss: float
  best_lr: float
  finished: int
  train_seconds: float
  wall_seconds: float = math.nan


def read_csv(path: str) -> list[dict[str, str]]:
  """The rows of a CSV file; none when it does not exist."""
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _loss(row: dict[str, str]) -> float:
  """The point's valid loss at the full budget; inf where it did not finish it (stopped,
  diverged or unfinished)."""
  text = row.get(expdir.metric_column("final", "valid", "loss"), "")
  if row["status"] != "ok" or not text:
    return float("inf")
  return float(text)


def _stage_curve(rows: list[dict[str, str]], steps: int, loss: dict[int, float]
                 ) -> tuple[int, list[tuple[int, float]], list[int]]:
  """(points x steps, the incumbent after each stage, the points trained to `steps`) of one
  search's stages.csv rows."""
  curve, spent, best, finished = [], 0, np.inf, []
  for index in sorted({int(r["stage"]) for r in rows}):
    stage = [r for r in rows if int(r["stage"]) == index]
    spent += sum(int(r["end"]) - int(r["begin"]) for r in stage)  # cooldown forks included
    for r in stage:
      if int(r["end"]) == steps and r.get("kind", expdir.STAGE_KIND) == expdir.STAGE_KIND:
        finished.append(int(r["point"]))
        best = min(best, loss.get(int(r["point"]), np.inf))
    curve.append((spent, best))
  return spent, curve, finished


def read_traces(workdir: str, design: str) -> list[Trace]:
  """The traces of the experiment directory `workdir`, one per replicate."""
  with open(os.path.join(workdir, expdir.RUN_FILE)) as f:
    run = json.load(f)
  if run["status"] != "complete":
    raise ValueError(f"{workdir}: the sweep did not finish (run.json status {run['status']!r})")
  steps = int(run["total_steps"])
  compute = sum(int(g["points_steps"]) for g in run["groups"])
  seconds = sum(float(g["train_seconds"]) for g in run["groups"])
  summary = read_csv(os.path.join(workdir, expdir.SUMMARY_FILE))
  full = {int(r["point"]): r for r in summary if int(r["steps"]) == steps}
  lr = {int(r["point"]): float(r[expdir.HPARAM_PREFIX + "learning_rate"] or "nan")
        for r in summary}
  replicate = {int(r["point"]): int(r["replicate"]) for r in summary}
  replicates = sorted(set(replicate.values()))
  loss = {p: _loss(r) for p, r in full.items()}
  stages = read_csv(os.path.join(workdir, expdir.STAGES_FILE))
  seed = int(summary[0]["seed"]) - int(summary[0]["replicate"])

  def trace(rep: int, compute: int, curve: list[tuple[int, float]], points: list[int]) -> Trace:
    done = [p for p in points if np.isfinite(loss.get(p, np.inf))]
    best = min(done, key=lambda p: loss[p]) if done else None
    return Trace(design, seed + rep, compute, curve, loss[best] if best is not None else np.inf,
                 lr[best] if best is not None else np.nan, len(done),
                 seconds / len(replicates))

  out = []
  if stages:  # an adaptive design: each replicate's search, the incumbent after each stage
    total = 0
    for rep in replicates:
      spent, curve, finished = _stage_curve(
          [r for r in stages if replicate[int(r["point"])] == rep], steps, loss)
      total += spent
      out.append(trace(rep, spent, curve, finished))
    if total != compute:  # stages.csv and run.json tell one story, or the study says so
      raise ValueError(f"{workdir}: stages.csv sums to {total} points x steps, run.json to "
                       f"{compute}")
    return out
  for rep in replicates:  # the grid's replicates; a random design has one
    points = [int(r["point"]) for r in summary if int(r["replicate"]) == rep]
    share = compute // len(replicates)
    if design == "grid":
      curve = [(share, min(loss.get(p, np.inf) for p in points))]
    else:  # in design order: the first k draws are a random search of k points
      curve = [(steps * (k + 1), min(loss.get(p, np.inf) for p in points[: k + 1]))
               for k in range(len(points))]
    out.append(trace(rep, share, curve, points))
  return out
