"""The experiment directory of a sweep: design, curves, summary and run record, written atomically.

Layout (the contract with `jaxopt_lab.analysis`):
  config.json     the resolved config
  design.csv      one row per point, written before anything trains
  metrics.jsonl   {"point", "step", "split": "train"|"valid"|"test", <metric>: value, ...} per line,
                  appended at each write, ordered by (step, point) within a group, the groups
                  one after the other (valid/test rows at step 0 too: the initialisation)
  summary.csv     one row per point: factors, resolved hparams (hp_*), status (ok | diverged |
                  running), diverged_step, steps done, final/best metrics. A diverged point is
                  frozen at the state whose loss diverged, so its final metrics may be NaN or
                  huge: analysis treats it as failed. best_* leaves out the step-0 evaluation.
  run.json        status ("running" | "complete"), devices, timing and throughput of each group,
                  added up over every run of the command (a killed one up to its last write)
  checkpoints/    orbax checkpoints of each group's population
A sweep holds an exclusive lock on `.lock` while it runs (`files.WorkdirLock`, as a single run
does); a second one on the same directory is refused. metrics.jsonl is appended (a partial
last line left by a kill is cut on the next start, and the rows past a group's checkpoint are
dropped on resume); every other file is rewritten whole through a temporary file and a rename,
so a kill at any moment leaves the previous version. File names and run.json fields: `expdir`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxopt_lab import defaults, expdir, files, hardware, tasks, tblog, workdirs
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design
from jaxopt_lab.sweep.adaptive import registry as designs


class Store:
  """Reads and writes one experiment directory (only process 0 writes on multi-host runs)."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               points: Sequence[design.Point], write: bool = True):
    self.workdir, self.config, self.points, self.write = workdir, config, list(points), write
    self._lock = None
    tblog.validate(config)  # before anything is written
    if write:
      self._lock = workdirs.prepare(workdir, config)
      path = os.path.join(workdir, expdir.DESIGN_FILE)
      if os.path.exists(path):
        written = design.read_design_csv(path, config.sweep)
        if not _same_design(written, self.points):
          raise ValueError(f"--workdir: {path} holds another design; use a new workdir")
        self.points = written  # with the values an Optuna search has asked so far
      else:
        design.write_design_csv(path, self.points, config.sweep)
    listener = tblog.for_sweep(config, workdir, self.points) if write else None
    self.log = expdir.MetricsLog(os.path.join(workdir, expdir.METRICS_FILE), listener)
    self.rows: list[dict[str, Any]] = (
        self.log.read() if write else files.read_jsonl(self.log.path)
        if os.path.exists(self.log.path) else [])
    self.peak_flops, self.peak_flops_source = (
        _peak_flops(defaults.compute_dtype(config)) if write else (None, None))
    self.status: dict[int, dict[str, Any]] = {
        p.point: {"status": "running", "diverged_step": "", "steps": 0} for p in self.points}
    self.hparams: dict[int, dict[str, float]] = {}
    self.groups: dict[str, dict[str, Any]] = {}
    self.metric_modes: dict[str, str] = {}
    # Adaptive designs: (group, stage index[, 'fork']) -> the stage's (its fork's) rows of
    # stages.csv.
    self.stage_rows: dict[tuple, list[dict[str, Any]]] = {}
    self.eval_splits: tuple[str, ...] = ()
    self.total_steps = int(config.train.steps)
    # A point's horizon: its group's where train.steps is a grouping factor ('horizon').
    self.point_steps = {p.point: int(p.structural.get("horizon", self.total_steps))
                        for p in self.points}
    # Timings add up over every run of the command: those of the earlier runs (killed ones
    # included, up to their last write) come from run.json.
    self._started = time.perf_counter()
    self._earlier_wall = 0.0
    self._earlier_groups: dict[str, dict[str, Any]] = {}
    run_path = os.path.join(workdir, expdir.RUN_FILE)
    if os.path.exists(run_path):
      with open(run_path) as f:
        previous = json.load(f)
      self._earlier_groups = {g["group"]: g for g in previous.get("groups", [])}
      self.groups = dict(self._earlier_groups)
      self._earlier_wall = float(previous.get("wall_seconds", 0.0))

  def release(self) -> None:
    self.log.close()
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  # --- rows -------------------------------------------------------------------------------

  def truncate(self, group: str, step: int, points: Sequence[int] | None = None) -> None:
    """Drops the rows of `group`'s points (or of `points`) after `step` (their checkpoint),
    before resuming."""
    ids = set(points) if points is not None else {p.point for p in self.points if p.group == group}
    kept = [r for r in self.rows if r["point"] not in ids or r["step"] <= step]
    if self.write and len(kept) < len(self.rows):  # once per resumed group
      self.log.rewrite(kept)
    self.rows = kept

  def register(self, group_name: str, task: tasks.Task, point_ids: Sequence[int],
               hparams: Mapping[str, np.ndarray]) -> None:
    """Records a group's task metrics and its points' resolved hyperparameters."""
    self.metric_modes.update(task.metric_modes)
    self.eval_splits = tuple(task.eval_data)
    for i, point in enumerate(point_ids):
      # the float32 as its shortest round-trip text (expdir.metric_float): 1e-4, not 9.99999974e-05
      self.hparams[point] = {k: expdir.metric_float(v[i]) for k, v in hparams.items()}
    del group_name

  def add_train_rows(self, ids: Sequence[int], step: int, means: Mapping[str, np.ndarray]) -> None:
    for i, point in enumerate(ids):
      self.rows.append({"point": point, "step": step, "split": "train",
                        **{k: expdir.metric_float(v[i]) for k, v in means.items()}})

  def add_eval_rows(self, ids: Sequence[int], step: int, values: Mapping[str, np.ndarray]) -> None:
    for split in self.eval_splits:
      prefix = f"{split}_"
      for i, point in enumerate(ids):
        self.rows.append({"point": point, "step": step, "split": split,
                          **{k[len(prefix):]: expdir.metric_float(v[i]) for k, v in values.items()
                             if k.startswith(prefix)}})

  def update_points(self, ids: Sequence[int], step: int, alive: np.ndarray,
                    diverged_step: np.ndarray) -> None:
    for i, point in enumerate(ids):
      if alive[i]:
        status = "ok" if step == self.point_steps[point] else "running"
        self.status[point] = {"status": status, "diverged_step": "", "steps": step}
      else:
        d = int(diverged_step[i])
        self.status[point] = {"status": "diverged", "diverged_step": d, "steps": d - 1}

  def stop_points(self, ids: Sequence[int], step: int) -> None:
    """Marks points an adaptive design stopped after `step`."""
    for point in ids:
      self.status[point] = {"status": "stopped", "diverged_step": "", "steps": step}

  def set_values(self, ids: Sequence[int], values: Mapping[str, np.ndarray]) -> None:
    """Gives points their value factors (an Optuna round's proposals) and rewrites design.csv."""
    at = {p.point: i for i, p in enumerate(self.points)}
    for j, point in enumerate(ids):
      p = self.points[at[point]]
      new = {k: expdir.metric_float(values[k][j]) for k in p.values}
      self.points[at[point]] = dataclasses.replace(p, values=new)
    if self.write:
      design.write_design_csv(os.path.join(self.workdir, expdir.DESIGN_FILE), self.points,
                              self.config.sweep)

  def record_stage(self, group: str, index: int, begin: int, end: int, ids: Sequence[int],
                   sources: Sequence[int], note: str, hparams: Mapping[str, np.ndarray]) -> None:
    """Records an adaptive design's stage (rows of stages.csv, written at the next flush).

    The points' hp_* in summary.csv become the stage's values: the values a point trained with
    last (PBT's explore changes them; design.csv keeps the values it started with).
    """
    rows = []
    for j, point in enumerate(ids):
      self.hparams[point] = {k: expdir.metric_float(v[j]) for k, v in hparams.items()}
      rows.append({"stage": index, "begin": begin, "end": end, "group": group, "point": point,
                   "source": int(sources[j]), "note": note, "kind": expdir.STAGE_KIND,
                   "ranked_by": "", "score": "",
                   **{expdir.HPARAM_PREFIX + k: v for k, v in self.hparams[point].items()}})
    self.stage_rows[(group, index)] = rows

  def record_ranking(self, group: str, index: int, ids: Sequence[int], ranked_by: Sequence[str],
                     scores: np.ndarray) -> None:
    """Records what stage `index`'s rung ranked its points by (`ranked_by`, one per point) and
    the score (signed: lower is better) on the stage's rows."""
    at = {int(p): (how, s) for p, how, s in zip(ids, ranked_by, scores, strict=True)}
    for r in self.stage_rows[(group, index)]:
      how, score = at[r["point"]]
      r["ranked_by"], r["score"] = how, expdir.metric_float(score)

  def record_fork(self, group: str, index: int, begin: int, end: int, ids: Sequence[int],
                  values: np.ndarray) -> None:
    """Records the cooldown fork of stage `index` (rows of kind `expdir.FORK_KIND`: the points
    trained a copy of their state from `begin` to `end`; `score`: the fork's valid metric)."""
    stage = {r["point"]: r for r in self.stage_rows[(group, index)]}
    self.stage_rows[(group, index, expdir.FORK_KIND)] = [
        {**stage[int(p)], "begin": begin, "end": end, "source": int(p),
         "note": f"cooldown fork of {end - begin} steps", "kind": expdir.FORK_KIND,
         "ranked_by": "", "score": expdir.metric_float(v)}
        for p, v in zip(ids, values, strict=True)]

  def record_group(self, group: str, compile_seconds: float, train_seconds: float,
                   steps_run: int, steps_trained: int, n_points: int, slice_width: int,
                   task: tasks.Task, points_steps: int | None = None) -> None:
    """Records a group's progress in this run, adding the timings of the command's earlier runs.

    Args:
      group: the group's name.
      compile_seconds, train_seconds: of this run so far.
      steps_run: steps this run has trained so far.
      steps_trained: the step the group's points have reached (`steps` once it is finished).
      n_points, slice_width, task: the group's size, slices and task.
      points_steps: the points x steps this run has trained (default n_points x steps_run; an
        adaptive design trains fewer points in later stages).
    """
    earlier = self._earlier_groups.get(group, {})
    compile_seconds += earlier.get("compile_seconds", 0.0)
    train_seconds += earlier.get("train_seconds", 0.0)
    points_steps = n_points * steps_run if points_steps is None else points_steps
    points_steps += earlier.get("points_steps", 0)
    steps_run += earlier.get("steps_run", 0)
    self.groups[group] = {
        "group": group,
        "points": n_points,
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "steps": max((self.point_steps[p.point] for p in self.points if p.group == group),
                     default=self.total_steps),
        "steps_trained": steps_trained,
        # Over every run: steps trained again after a resume from an earlier checkpoint count.
        "steps_run": steps_run,
        "slice_width": slice_width,
        "points_steps": points_steps,  # the compute spent, over every run of the command
        "points_steps_per_second": points_steps / max(train_seconds, 1e-9),
        "tokens_per_step": task.tokens_per_step,
        "flops_per_step": task.flops_per_step,
    }

  # --- files ------------------------------------------------------------------------------

  @property
  def _adaptive(self) -> bool:
    return designs.is_adaptive(self.config.sweep.design)

  def summary_rows(self) -> list[dict[str, Any]]:
    """One row per point: factors, resolved hparams, status, and final / best metrics."""
    by_point: dict[int, list[dict[str, Any]]] = {}
    for row in self.rows:
      by_point.setdefault(row["point"], []).append(row)
    trained_stages: dict[int, int] = {}
    for rows in self.stage_rows.values():
      for r in rows:
        if r["kind"] != expdir.STAGE_KIND:  # a fork is no stage of the point
          continue
        trained_stages[r["point"]] = trained_stages.get(r["point"], 0) + 1
    out = []
    for p in self.points:
      row = design.design_row(p)
      row.update({expdir.HPARAM_PREFIX + k: v for k, v in self.hparams.get(p.point, {}).items()})
      row.update(self.status[p.point])
      if self._adaptive:
        row["stages"] = trained_stages.get(p.point, 0)
      rows = sorted(by_point.get(p.point, []), key=lambda r: r["step"])
      row.update(expdir.final_and_best(rows, self.eval_splits, self.metric_modes))
      out.append(row)
    return out

  def _summary_columns(self) -> list[str]:
    columns = design.design_columns(self.config.sweep)
    used = {k for h in self.hparams.values() for k in h}
    columns += [expdir.HPARAM_PREFIX + k for k in factory.value_factors() if k in used]
    columns += expdir.SUMMARY_STATUS_COLUMNS
    if self._adaptive:
      columns += ("stages",)
    return columns + expdir.metric_columns(self.eval_splits, list(self.metric_modes))

  def flush(self, status: str = "running") -> None:
    """Appends the new rows to metrics.jsonl; rewrites summary.csv and run.json."""
    if not self.write:
      return
    new = self.rows[self.log.written:]
    new.sort(key=lambda r: (r["step"], r["point"]))  # stable: train before eval rows
    self.rows[self.log.written:] = new
    self.log.append(new)
    files.atomic_write_csv(os.path.join(self.workdir, expdir.SUMMARY_FILE), self.summary_rows(),
                           self._summary_columns())
    if self.stage_rows:
      rows = [r for key in sorted(self.stage_rows) for r in self.stage_rows[key]]
      hp = sorted({k for r in rows for k in r if k.startswith(expdir.HPARAM_PREFIX)})
      files.atomic_write_csv(os.path.join(self.workdir, expdir.STAGES_FILE), rows,
                             list(expdir.STAGES_COLUMNS + expdir.RANKING_COLUMNS) + hp)
    files.atomic_write_json(os.path.join(self.workdir, expdir.RUN_FILE), expdir.run_record(
        status=status,
        task=self.config.task,
        total_steps=self.total_steps,
        points=len(self.points),
        devices=[d.device_kind for d in jax.devices()],
        device_count=jax.device_count(),
        process_count=jax.process_count(),
        wall_seconds=self.wall_seconds,
        metric_modes=self.metric_modes,
        structural_factors=list(self.points[0].structural) if self.points else [],
        peak_flops=self.peak_flops,
        peak_flops_source=self.peak_flops_source,
        groups=list(self.groups.values()),
    ))

  @property
  def wall_seconds(self) -> float:
    """Seconds since the first run of the command started, less the pauses between runs."""
    return self._earlier_wall + time.perf_counter() - self._started

  def finish(self) -> None:
    self.flush("complete")
    self.release()

  def best_point(self, group: str) -> str | None:
    """A line naming the best value point of `group`: the mean tuning metric over its seeds.

    The tuning metric is `sweep.metric` on the valid split; a diverged replicate makes its value
    point ineligible.
    """
    metric = self.config.sweep.metric
    key = expdir.metric_column("final", "valid", metric)
    sign = -1.0 if self.metric_modes.get(metric) == "max" else 1.0
    scores: dict[tuple, list[float]] = {}
    for p, row in zip(self.points, self.summary_rows(), strict=True):
      if p.group == group:
        ok = row["status"] == "ok" and math.isfinite(row.get(key, math.nan))
        scores.setdefault(tuple(p.values.items()), []).append(row[key] if ok else math.inf)
    finite = {v: float(np.mean(s)) for v, s in scores.items() if all(map(math.isfinite, s))}
    if not finite:
      return None
    best = min(finite, key=lambda v: sign * finite[v])
    values = ", ".join(f"{k}={v:.4g}" for k, v in best) or "the base config"
    n = len(scores[best])
    return f"{values}: valid {metric} {finite[best]:.4f} (mean over {n} seed{'s' * (n > 1)})"


def _same_design(written: Sequence[design.Point], planned: Sequence[design.Point]) -> bool:
  """Whether design.csv holds the planned design (a planned NaN value: any value, asked later)."""
  if len(written) != len(planned):
    return False
  for w, p in zip(written, planned, strict=True):
    if dataclasses.replace(w, values={}) != dataclasses.replace(p, values={}):
      return False
    if any(not math.isnan(v) and w.values.get(k) != v for k, v in p.values.items()):
      return False
  return True


def _peak_flops(dtype: str) -> tuple[float | None, str]:
  """FLOP/s of one device for MFU: its data sheet, else (CPUs) a measured matmul rate."""
  device = jax.devices()[0]
  peak = hardware.peak_flops(device, dtype)
  if peak is not None:
    return peak, f"data sheet {dtype}"
  return hardware.measure_matmul_flops(n=512, dtype=dtype, repeats=5), f"measured {dtype} matmul"
