"""The report's section on an adaptive design: the compute it spent, its rungs, PBT's lineage.

An adaptive design (successive halving, Hyperband, PBT, Optuna) trains each group in stages and
records them in `stages.csv` (`expdir.STAGES_COLUMNS`, then `hp_<factor>`): one row per (stage,
point) with the steps the point trained in the stage, the point whose state it continued from
(`source`: itself, another point after PBT's exploit, -1 when fresh from step 0) and the values
it trained with. This module reads that file (with config.json, run.json and summary.csv) and
gives:

* `compute`: per stage its points and points x steps, and the total against what the fixed grid
  of the same points would have spent (points x train.steps);
* `last_stages`: each point's last stage, with the status and steps of summary.csv (successive
  halving and Hyperband stop points early: status 'stopped');
* PBT's figures (`analysis.lineage`): whose state each point continued from and each explored
  hyperparameter's value over the steps;
* `section`: all of it added to a report `Document`, with its figures and tables.

No JAX: it reads files only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any

import numpy as np

from jaxopt_lab import expdir
from jaxopt_lab.analysis import lineage, plots, rung_ranks
from jaxopt_lab.analysis.document import Document, cell, fmt

# Designs whose stages stop points early (rungs) and the one whose stages copy states (lineage).
RUNG_DESIGNS = ("successive_halving", "hyperband")
LINEAGE_DESIGNS = ("pbt",)
COMPUTE_COLUMNS = ["group", "stage", "begin", "end", "points", "point_steps", "exploits", "note"]
POINT_COLUMNS = ["group", "point", "last_stage", "last_end", "status", "steps"]


@dataclasses.dataclass(frozen=True)
class Stages:
  """stages.csv as arrays, one entry per row (a point in a stage).

  Attributes:
    stage, begin, end, point, source: int arrays; `source` -1 for a fresh start.
    group, note: str arrays.
    hparams: value factor -> float array (the `hp_<factor>` columns, prefix dropped).
    kind, ranked_by: str arrays (`expdir.RANKING_COLUMNS`; a file without them: every row a
      stage's, nothing ranked).
    score: float array, what a ranking rung ranked the row's point by (lower is better), the
      fork's valid metric on a cooldown fork's row; NaN elsewhere.
  """

  stage: np.ndarray
  begin: np.ndarray
  end: np.ndarray
  group: np.ndarray
  point: np.ndarray
  source: np.ndarray
  note: np.ndarray
  hparams: dict[str, np.ndarray]
  kind: np.ndarray
  ranked_by: np.ndarray
  score: np.ndarray

  def rows(self, group: str, stage: int | None = None, kind: str | None = expdir.STAGE_KIND
           ) -> np.ndarray:
    """Row indices of `group` (and of one `stage`) of `kind` (None: any), in file order."""
    mask = self.group == group
    if stage is not None:
      mask &= self.stage == stage
    if kind is not None:
      mask &= self.kind == kind
    return np.flatnonzero(mask)

  @property
  def groups(self) -> list[str]:
    """The groups, in order of first appearance."""
    return list(dict.fromkeys(self.group.tolist()))


def _read_csv(path: str) -> list[dict[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def read_stages(workdir: str | os.PathLike) -> Stages | None:
  """stages.csv of `workdir`; None when there is none (a fixed design) or it has no rows.

  Raises:
    ValueError: the file lacks a column of `expdir.STAGES_COLUMNS` (named).
  """
  path = os.path.join(workdir, expdir.STAGES_FILE)
  if not os.path.isfile(path):
    return None
  rows = _read_csv(path)
  if not rows:
    return None
  missing = [c for c in expdir.STAGES_COLUMNS if c not in rows[0]]
  if missing:
    raise ValueError(f"{path!r} lacks columns {missing}; expected "
                     f"{list(expdir.STAGES_COLUMNS)} then hp_<factor>")

  def ints(column: str) -> np.ndarray:
    return np.array([int(r[column]) for r in rows], dtype=np.int64)

  prefix = expdir.HPARAM_PREFIX
  hparams = {c[len(prefix):]: np.array([float(r[c]) if r[c] else np.nan for r in rows])
             for c in rows[0] if c.startswith(prefix)}
  return Stages(stage=ints("stage"), begin=ints("begin"), end=ints("end"),
                group=np.array([r["group"] for r in rows], dtype=object), point=ints("point"),
                source=ints("source"), note=np.array([r["note"] for r in rows], dtype=object),
                hparams=hparams,
                kind=np.array([r.get("kind") or expdir.STAGE_KIND for r in rows], dtype=object),
                ranked_by=np.array([r.get("ranked_by") or "" for r in rows], dtype=object),
                score=np.array([float(r["score"]) if r.get("score") else np.nan for r in rows]))


@dataclasses.dataclass(frozen=True)
class StageCompute:
  """One stage of one group: its points, the steps it trained and the states it copied."""

  group: str
  stage: int
  begin: int  # the earliest first step of its rows
  end: int  # the latest last step of its rows
  points: int
  point_steps: int  # sum over its points of (end - begin), its cooldown fork's included
  exploits: int  # points that continued from another point's state
  note: str


@dataclasses.dataclass(frozen=True)
class Compute:
  """The compute an adaptive design spent, against the fixed grid of the same points.

  Attributes:
    stages: per (group, stage), in order.
    spent: points x steps trained, over every stage.
    points: distinct (group, point) pairs that trained at all.
    steps: train.steps, each point's budget in a fixed design.
  """

  stages: tuple[StageCompute, ...]
  spent: int
  points: int
  steps: int

  @property
  def grid(self) -> int:
    """points x train.steps: what training every point to the end would have cost."""
    return self.points * self.steps

  @property
  def share(self) -> float:
    """spent / grid (NaN for an empty grid)."""
    return self.spent / self.grid if self.grid else float("nan")


def compute(stages: Stages, steps: int) -> Compute:
  """Per stage its points and points x steps, and the totals (see `Compute`)."""
  out = []
  for group in stages.groups:
    for k in sorted(set(stages.stage[stages.rows(group)].tolist())):
      rows, every = stages.rows(group, k), stages.rows(group, k, kind=None)
      point, source = stages.point[rows], stages.source[rows]
      out.append(StageCompute(
          group=group, stage=k, begin=int(stages.begin[rows].min()),
          end=int(stages.end[rows].max()), points=int(np.unique(point).size),
          point_steps=int((stages.end[every] - stages.begin[every]).sum()),
          exploits=int(((source >= 0) & (source != point)).sum()),
          note=str(stages.note[rows[0]])))
  distinct = {(g, p) for g, p in zip(stages.group.tolist(), stages.point.tolist(), strict=True)}
  return Compute(tuple(out), sum(s.point_steps for s in out), len(distinct), int(steps))


@dataclasses.dataclass(frozen=True)
class LastStage:
  """Where one point's training ended: its last stage and step, and its summary row."""

  group: str
  point: int
  last_stage: int
  last_end: int
  status: str  # summary.csv 'status' ('' without a row)
  steps: float  # summary.csv 'steps' (NaN without a row)


def last_stages(stages: Stages, summary: list[dict[str, str]]) -> list[LastStage]:
  """Each point's last stage (the rung it stopped at), with its summary.csv status and steps."""
  by_point = {int(r["point"]): r for r in summary if r.get("point", "").strip()}
  out = []
  for group in stages.groups:
    rows = stages.rows(group)
    for p in sorted(set(stages.point[rows].tolist())):
      mine = rows[stages.point[rows] == p]
      last = mine[np.argmax(stages.end[mine])]
      row = by_point.get(p, {})
      steps = row.get("steps", "")
      out.append(LastStage(group, p, int(stages.stage[last]), int(stages.end[last]),
                           row.get("status", ""), float(steps) if steps.strip() else np.nan))
  return out


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def total_steps(config: dict[str, Any], run: dict[str, Any]) -> int:
  """train.steps: run.json's total_steps, else config.json's train.steps."""
  steps = run.get("total_steps") or config.get("train", {}).get("steps")
  if steps is None:
    raise ValueError("run.json has no total_steps and config.json no train.steps: the budget "
                     "of a fixed design is unknown")
  return int(steps)


def compute_rows(c: Compute) -> list[dict[str, str]]:
  """The compute table: one row per (group, stage), then the total against the grid."""
  rows = [{"group": s.group, "stage": fmt(s.stage), "begin": fmt(s.begin), "end": fmt(s.end),
           "points": fmt(s.points), "point_steps": fmt(s.point_steps),
           "exploits": fmt(s.exploits), "note": s.note} for s in c.stages]
  rows.append({"group": "total", "stage": "", "begin": "", "end": "", "points": fmt(c.points),
               "point_steps": fmt(c.spent), "exploits": fmt(sum(s.exploits for s in c.stages)),
               "note": f"fixed grid of the same points: {c.points} x {c.steps} = {c.grid}"})
  return rows


def point_rows(points: list[LastStage]) -> list[dict[str, str]]:
  return [{"group": p.group, "point": fmt(p.point), "last_stage": fmt(p.last_stage),
           "last_end": fmt(p.last_end), "status": p.status, "steps": fmt(p.steps)}
          for p in points]


def section(doc: Document, workdir: str | os.PathLike
            ) -> tuple[dict[str, bytes], dict[str, tuple[list, list]]]:
  """Adds the adaptive design's section to `doc`; nothing for a fixed design (no stages.csv).

  Args:
    doc: the report's document.
    workdir: the experiment directory.

  Returns:
    Its figures (filename -> PNG) and tables (filename -> (columns, rows)), for the report to
    write next to the others.
  """
  workdir = os.fspath(workdir)
  stages = read_stages(workdir)
  if stages is None:
    return {}, {}
  config = _read_json(os.path.join(workdir, expdir.CONFIG_FILE))
  run = _read_json(os.path.join(workdir, expdir.RUN_FILE))
  summary_path = os.path.join(workdir, expdir.SUMMARY_FILE)
  summary = _read_csv(summary_path) if os.path.isfile(summary_path) else []
  design = config.get("sweep", {}).get("design", "adaptive")
  c = compute(stages, total_steps(config, run))
  rows = compute_rows(c)
  tables = {"adaptive_compute.csv": (COMPUTE_COLUMNS, rows)}
  figures = {}

  doc.heading(2, "Adaptive design")
  doc.para(
      f"Design `{design}`: each group trained in stages, recorded in `stages.csv`. Compute "
      f"spent: {c.spent} points x steps over {c.points} points, against {c.grid} for the fixed "
      f"grid of the same points ({c.points} x {c.steps} steps): {fmt(100 * c.share, '.3g')}% "
      "of it.")
  doc.table(["group", "stage", "steps", "points", "points x steps", "copied states", "note"],
            [[r["group"], r["stage"], f"{r['begin']}-{r['end']}" if r["stage"] else "",
              r["points"], r["point_steps"], r["exploits"], r["note"]] for r in rows])

  if design in RUNG_DESIGNS:
    points = last_stages(stages, summary)
    tables["adaptive_points.csv"] = (POINT_COLUMNS, point_rows(points))
    ends: dict[tuple[str, int], list[LastStage]] = {}
    for p in points:
      ends.setdefault((p.group, p.last_end), []).append(p)
    doc.para("Where each point's training ended (its last rung; summary status 'stopped' for a "
             "point the design stopped early). Every point's row is in `adaptive_points.csv`.")
    doc.table(["group", "last step", "points", "status"],
              [[g, fmt(end), fmt(len(ps)), status_text(ps)]
               for (g, end), ps in sorted(ends.items())])
    _rung_ranks(doc, stages, summary, config, run, c.steps)

  doc.para(f"Selection on the test seeds: `{design}` chose which points to train on, and how far, "
           "by their valid metric on the same seeds (data order, initialisation) whose numbers "
           "this report shows. A verdict that rests on those points (the best learning rate, "
           "one setting beating another) is a selection scored where it was made: confirm it "
           "on fresh seeds (a new `sweep.seed`) before relying on it.")

  if design in LINEAGE_DESIGNS:
    for name, fig in ((lineage.LINEAGE_FIGURE, lineage.lineage(stages)),
                      (lineage.SCHEDULES_FIGURE, lineage.schedules(stages, config))):
      if fig is not None:
        figures[name] = plots.png(fig)
    exploits = sum(s.exploits for s in c.stages)
    doc.para(f"Population-based training: {exploits} time(s) over {len(c.stages)} stage(s) a "
             "point (one seed replicate of a value point) continued from a better point's state "
             "with its hyperparameters, then explore changed the swept values inside their "
             "declared ranges. A point's row in summary.csv holds the values it started with; "
             "those it ended with are below (and in `adaptive_population.csv`).")
    if lineage.LINEAGE_FIGURE in figures:
      doc.figure(lineage.LINEAGE_FIGURE,
                 "Lineage: a dot where a point continued from another point's state (the "
                 "connector leads to it); colour: the point the state descends from.")
    if lineage.SCHEDULES_FIGURE in figures:
      doc.figure(lineage.SCHEDULES_FIGURE,
                 "Hyperparameter schedules that explore produced, per point.")
    else:
      doc.para("No hyperparameter changed over the stages.")
    metric = config.get("sweep", {}).get("metric", "loss")
    mode = (run.get("metric_modes") or {}).get(metric) or expdir.DEFAULT_METRIC_MODES.get(
        metric, "min")
    pop = lineage.population(stages, summary, metric, mode)
    names = lineage.explored(stages)
    columns = ["group", "point", "descends_from", *names, f"final_valid_{metric}"]
    table = [{"group": p.group, "point": fmt(p.point), "descends_from": fmt(p.root),
              **{n: fmt(p.values[n]) for n in names}, f"final_valid_{metric}": fmt(p.valid)}
             for p in pop]
    tables["adaptive_population.csv"] = (columns, table)
    if table:
      doc.para(f"The final population, best final valid {metric} first:")
      doc.table(["group", "point", "descends from", *(f"final {n}" for n in names),
                 f"final valid {metric}"],
                [[r["group"], r["point"], r["descends_from"], *(cell(r[n]) for n in names),
                  cell(r[f"final_valid_{metric}"])] for r in table])
  return figures, {k: (list(cols), rs) for k, (cols, rs) in tables.items()}


def _rung_ranks(doc: Document, stages: Stages, summary: list[dict[str, str]],
                config: dict[str, Any], run: dict[str, Any], steps: int) -> None:
  """The rung-vs-final rank correlations (`rung_ranks`), over the points that reached the end."""
  metric = config.get("sweep", {}).get("metric", "loss")
  mode = (run.get("metric_modes") or {}).get(metric) or expdir.DEFAULT_METRIC_MODES.get(
      metric, "min")
  sign, key = (-1.0 if mode == "max" else 1.0), expdir.metric_column("final", "valid", metric)
  finals = {int(r["point"]): sign * float(r[key]) for r in summary
            if r.get("status") == "ok" and r.get(key) and float(r.get("steps") or 0) == steps}
  ranks = rung_ranks.rung_ranks(stages, finals)
  if not ranks:
    return
  doc.para(f"How well each rung's ranking predicted the end's: Spearman's rho between the "
           f"scores a rung ranked its points by (`ranked_by`) and their final valid {metric}, over "
           f"the points that reached step {steps} (a rung's survivors; rho needs "
           f"{rung_ranks.MIN_POINTS}). A study that trains the grid of the same points knows "
           "every point's (benchmarks/adaptive_study.py).")
  doc.table(["group", "stage", "step", "ranked by", "points", "known at the end", "rho"],
            [[r.group, fmt(r.stage), fmt(r.end), r.ranked_by, fmt(r.points), fmt(r.known),
              cell(fmt(r.rho, ".2f"))] for r in ranks])


def status_text(points: list[LastStage]) -> str:
  """'ok 3, stopped 24': the statuses of `points` with their counts."""
  counts: dict[str, int] = {}
  for p in points:
    counts[p.status or "no row"] = counts.get(p.status or "no row", 0) + 1
  return ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))

