"""Compute per group from run.json: points x steps, tokens, FLOP/s, MFU."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxopt_lab.analysis.results import Experiment


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


