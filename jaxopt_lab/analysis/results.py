"""Loads an experiment directory into NumPy arrays, one block per structural group.

The experiment directory (its schema: `jaxopt_lab.expdir`) holds `config.json`, `design.csv`,
`summary.csv`, `metrics.jsonl` and `run.json`. This module reads those files and nothing else;
a sweep still running (or killed) loads with what is there, and `Progress` says what is not. A
single run's directory (scripts/train.py: config.json, summary.json, metrics.jsonl) loads as a
one-point experiment.

Within a group, the points are arranged as a `[configurations, replicates]` grid: a
configuration is one setting of the value factors, a replicate index is a common-random-number
seed shared across configurations and groups, so `[:, r]` of two groups are paired.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from typing import Any

import numpy as np

from jaxopt_lab import expdir, files
from jaxopt_lab.analysis.cap import cap_of


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _to_float(text: str) -> float:
  try:
    return float(text) if text.strip() else math.nan
  except ValueError:
    return math.nan


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def parse_column(texts: list[str]) -> np.ndarray:
  """A float array if every non-empty cell is a number (empty -> NaN), else an object array."""
  if all(_is_number(t) for t in texts if t.strip()):
    return np.array([_to_float(t) for t in texts], dtype=np.float64)
  return np.array(texts, dtype=object)


@dataclasses.dataclass(frozen=True)
class Progress:
  """How far the sweep got."""

  run_status: str | None  # run.json "status"; None when run.json is missing
  design_points: int
  finished: int  # summary rows with status ok or diverged
  running: int  # summary rows with status running
  missing: int  # design points without a summary row
  has_summary: bool
  max_step: dict[int, int]  # point -> last step in metrics.jsonl (for points not finished)

  @property
  def complete(self) -> bool:
    return self.run_status == "complete" and self.running == 0 and self.missing == 0

  def describe(self) -> str:
    """One sentence for the banner of an incomplete sweep."""
    status = "unknown (no run.json)" if self.run_status is None else repr(self.run_status)
    parts = [f"run status {status}",
             f"{self.finished} of {self.design_points} points finished"]
    if self.running:
      parts.append(f"{self.running} running")
    if self.missing:
      parts.append(f"{self.missing} without a summary row")
    if not self.has_summary:
      parts.append("no summary.csv yet")
    if self.max_step:
      steps = np.array(list(self.max_step.values()))
      parts.append(f"unfinished points logged up to step {steps.min()}..{steps.max()}")
    return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class Group:
  """The finished points of one structural group, as `[C, R]` arrays (C configs, R replicates).

  Cells without a finished point hold `point = -1`, `finished = False` and NaN values.
  """

  group: str  # the `group` column
  label: str  # the optimizer name when groups differ only by optimizer, else `group`
  factors: tuple[str, ...]  # value factors that vary within the group
  levels: dict[str, np.ndarray]  # factor -> level per configuration, [C]
  lr: np.ndarray  # [C]; NaN when the learning rate is unknown
  point: np.ndarray  # int [C, R]
  finished: np.ndarray  # bool [C, R]
  diverged: np.ndarray  # bool [C, R]; status diverged or a non-finite final metric
  diverged_step: np.ndarray  # [C, R]
  steps: np.ndarray  # [C, R] steps done
  valid: np.ndarray  # [C, R] final valid metric as in summary.csv
  test: np.ndarray  # [C, R] final test metric as in summary.csv
  cap: float  # the metric a failed point counts as (see `cap_source`)
  cap_source: str
  mode: str = "min"  # of the metric: "min" or "max"

  @property
  def num_configs(self) -> int:
    return self.point.shape[0]

  def scored(self, split: str) -> np.ndarray:
    """[C, R] values of `split` ("valid" or "test"): diverged points at the cap, and every
    value no worse than the cap (a point that ends worse than at initialisation failed too).

    This one scoring serves selection, sensitivity, tuning curves and effects. Unfinished cells
    stay NaN.
    """
    values = {"valid": self.valid, "test": self.test}[split]
    values = np.where(self.diverged, self.cap, values)
    if not np.isfinite(self.cap):
      return values
    clip = np.fmin if self.mode == "min" else np.fmax  # fmin/fmax keep the NaN of unfinished
    return np.where(np.isnan(values), values, clip(values, self.cap))


@dataclasses.dataclass(frozen=True)
class Experiment:
  """An experiment directory, loaded."""

  workdir: str
  config: dict[str, Any]
  run: dict[str, Any]  # empty when run.json is missing
  design: dict[str, np.ndarray]  # design.csv columns
  summary: dict[str, np.ndarray]  # summary.csv columns (all rows); empty when missing
  metric: str  # config["sweep"]["metric"]
  mode: str  # "min" | "max"
  mode_source: str
  test_split: str  # "test", or "valid" when summary.csv has no test metric
  structural_factors: tuple[str, ...]
  value_factors: tuple[str, ...]
  # "learning_rate" (a declared factor), "hp_learning_rate" (also for PBT, whose design holds a
  # point's starting value, its summary the value it trained with last) or None
  lr_column: str | None
  num_replicates: int
  progress: Progress
  groups: tuple[Group, ...]
  curves: dict[int, dict[str, dict[str, np.ndarray]]]  # point -> split -> {"step", metrics}

  @property
  def design_name(self) -> str:
    design = self.config.get("sweep", {}).get("design")
    return design if isinstance(design, str) else "unknown"

  def factor_scale(self, name: str) -> str | None:
    """The scale the sweep's space declares for a factor ("log", "linear", "int"); None when
    the factor is given by a list of values (or not declared)."""
    sweep = self.config.get("sweep", {})
    factors = sweep.get("factors", {}) if isinstance(sweep, dict) else {}
    spec = factors.get(name) if isinstance(factors, dict) else None
    scale = spec.get("scale") if isinstance(spec, dict) else None
    return scale if isinstance(scale, str) else None


def check_experiment_dir(workdir: str | os.PathLike) -> str:
  """Returns `workdir` as a str; raises FileNotFoundError when it is not an experiment."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"experiment directory {workdir!r} does not exist")
  missing = [f for f in expdir.REQUIRED_FILES if not os.path.isfile(os.path.join(workdir, f))]
  if missing and not expdir.is_single_run(workdir):
    raise FileNotFoundError(
        f"{workdir!r} is not an experiment directory: missing {', '.join(missing)} "
        f"(an experiment directory holds {', '.join(expdir.REQUIRED_FILES)}, written by "
        "scripts/sweep.py; "
        f"a single run's holds {', '.join(expdir.SINGLE_RUN_FILES)}, written by scripts/train.py)")
  return workdir


def _structural_factors(factor_columns: list[str], groups: np.ndarray,
                        run: dict[str, Any]) -> tuple[str, ...]:
  """The factors that make groups: run.json's `structural_factors`; for a directory written
  before run.json recorded them, the factors named as `name=` in the group labels."""
  recorded = run.get("structural_factors")
  if isinstance(recorded, list):
    return tuple(f for f in recorded if f in factor_columns)
  found = []
  for name in factor_columns:
    pattern = re.compile(rf"(?:^|[^\w]){re.escape(name)}=")
    if all(pattern.search(str(g)) for g in np.unique(groups)):
      found.append(name)
  return tuple(found)


def _load_curves(path: str) -> dict[int, dict[str, dict[str, np.ndarray]]]:
  if not os.path.isfile(path):
    return {}
  rows: dict[int, dict[str, list[dict[str, Any]]]] = {}
  for row in files.read_jsonl(path):
    rows.setdefault(int(row.get("point", 0)), {}).setdefault(str(row["split"]), []).append(row)
  curves = {}
  for point, splits in rows.items():
    curves[point] = {}
    for split, rs in splits.items():
      rs = sorted(rs, key=lambda r: r["step"])
      keys = sorted({k for r in rs for k in r} - {"point", "split"})
      curves[point][split] = {
          k: np.array([_num(r.get(k)) for r in rs], dtype=np.float64) for k in keys}
  return curves


def _num(value: Any) -> float:
  if value is None:
    return math.nan
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def load_experiment(workdir: str | os.PathLike) -> Experiment:
  """Reads an experiment directory.

  Args:
    workdir: the directory written by the sweep driver.

  Returns:
    An `Experiment`.

  Raises:
    FileNotFoundError: `workdir` is not an experiment directory (names what is missing).
    ValueError: the tuning metric or its mode is unknown, or design.csv lacks its id columns.
  """
  workdir = check_experiment_dir(workdir)
  with open(os.path.join(workdir, expdir.CONFIG_FILE), encoding="utf-8") as f:
    config = json.load(f)
  run_path = os.path.join(workdir, expdir.RUN_FILE)
  run: dict[str, Any] = {}
  if os.path.isfile(run_path):
    with open(run_path, encoding="utf-8") as f:
      run = json.load(f)

  if expdir.is_single_run(workdir):
    with open(os.path.join(workdir, expdir.SINGLE_SUMMARY_FILE), encoding="utf-8") as f:
      single = json.load(f)
    design_columns, design_rows, summary_columns, summary_rows = expdir.single_run_tables(
        config, single)
    run = {"status": "complete" if single.get("status") in expdir.FINISHED else "running",
           "task": single.get("task", config.get("task")), "total_steps": single.get("steps"),
           "structural_factors": ["optimizer"], **run}
  else:
    design_columns, design_rows = _read_csv(os.path.join(workdir, expdir.DESIGN_FILE))
    summary_columns, summary_rows = ([], [])
    if os.path.isfile(os.path.join(workdir, expdir.SUMMARY_FILE)):
      summary_columns, summary_rows = _read_csv(os.path.join(workdir, expdir.SUMMARY_FILE))
  missing_cols = [c for c in expdir.DESIGN_ID_COLUMNS if c not in design_columns]
  if missing_cols:
    raise ValueError(f"{os.path.join(workdir, expdir.DESIGN_FILE)!r} lacks columns {missing_cols}; "
                     f"expected {list(expdir.DESIGN_ID_COLUMNS)} then one column per factor")
  design_text = {c: [r[c] for r in design_rows] for c in design_columns}
  design = {c: parse_column(v) for c, v in design_text.items()}
  not_factors = (*expdir.DESIGN_ID_COLUMNS, *expdir.DESIGN_TAG_COLUMNS.values())
  factor_columns = [c for c in design_columns if c not in not_factors]
  structural = _structural_factors(factor_columns, design["group"], run)
  value_factors = tuple(c for c in factor_columns if c not in structural)

  summary = {c: parse_column([r[c] for r in summary_rows]) for c in summary_columns}

  sweep = config.get("sweep", {})
  metric = sweep.get("metric", "loss") if isinstance(sweep, dict) else "loss"
  modes = run.get("metric_modes") or {}
  if metric in modes:
    mode, mode_source = modes[metric], "run.json metric_modes"
  elif metric in expdir.DEFAULT_METRIC_MODES:
    mode = expdir.DEFAULT_METRIC_MODES[metric]
    mode_source = "default for the metric (run.json lacks it)"
  else:
    raise ValueError(
        f"config sweep.metric={metric!r}: its mode (min/max) is not in run.json metric_modes "
        f"{sorted(modes)} nor among the known metrics {sorted(expdir.DEFAULT_METRIC_MODES)}")
  if mode not in ("min", "max"):
    raise ValueError(f"run.json metric_modes[{metric!r}] must be 'min' or 'max', got {mode!r}")
  valid_col = expdir.metric_column("final", "valid", metric)
  test_col = expdir.metric_column("final", "test", metric)
  if summary_rows and valid_col not in summary:
    available = sorted(c[len("final_valid_"):] for c in summary if c.startswith("final_valid_"))
    raise ValueError(f"config sweep.metric={metric!r} has no column {valid_col!r} in "
                     f"summary.csv; metrics there: {available}")
  test_split = "test" if (not summary_rows or test_col in summary) else "valid"
  if test_split == "valid":
    test_col = valid_col

  explored = config.get("sweep", {}).get("design") == "pbt"
  if "learning_rate" in value_factors and not explored:
    lr_column = "learning_rate"
  elif "hp_learning_rate" in summary:
    lr_column = "hp_learning_rate"
  else:
    lr_column = None

  curves = _load_curves(os.path.join(workdir, expdir.METRICS_FILE))

  # Index the summary by point.
  status = {}
  by_point: dict[int, int] = {}
  if summary_rows:
    for i, p in enumerate(summary["point"]):
      by_point[int(p)] = i
      status[int(p)] = str(summary_rows[i].get("status", "")).strip()
  finished_points = {p for p, s in status.items() if s in expdir.FINISHED}
  design_points = [int(p) for p in design["point"]]
  unfinished = [p for p in design_points if p not in finished_points]
  max_step = {}
  for p in unfinished:
    steps = [c["step"][-1] for c in curves.get(p, {}).values() if c["step"].size]
    if steps:
      max_step[p] = int(max(steps))
  progress = Progress(
      run_status=run.get("status"),
      design_points=len(design_points),
      finished=len(finished_points & set(design_points)),
      running=sum(1 for p in design_points if status.get(p) == "running"),
      missing=sum(1 for p in design_points if p not in status),
      has_summary=bool(summary_columns),
      max_step=max_step)

  num_replicates = int(np.nanmax(design["replicate"])) + 1 if design_points else 0
  only_optimizer = structural == ("optimizer",)
  groups = []
  for group in dict.fromkeys(str(g) for g in design["group"]):
    rows = [i for i, g in enumerate(design["group"]) if str(g) == group]
    keys = {}
    for i in rows:
      keys.setdefault(tuple(design_text[f][i] for f in value_factors), []).append(i)
    c, r = len(keys), num_replicates
    point = np.full((c, r), -1)
    fin = np.zeros((c, r), bool)
    div = np.zeros((c, r), bool)
    div_step, steps, valid, test = (np.full((c, r), np.nan) for _ in range(4))
    lr = np.full(c, np.nan)
    for ci, members in enumerate(keys.values()):
      if lr_column == "learning_rate":
        lr[ci] = design["learning_rate"][members[0]]
      for i in members:
        p, rep = design_points[i], int(design["replicate"][i])
        point[ci, rep] = p
        if p not in finished_points or status[p] == "stopped":
          continue  # a point an adaptive design stopped early has no full-budget result
        s = by_point[p]
        fin[ci, rep] = True
        valid[ci, rep] = summary[valid_col][s]
        test[ci, rep] = summary[test_col][s]
        steps[ci, rep] = summary["steps"][s] if "steps" in summary else np.nan
        div_step[ci, rep] = summary["diverged_step"][s] if "diverged_step" in summary else np.nan
        div[ci, rep] = status[p] == "diverged" or not np.isfinite(valid[ci, rep])
        if np.isnan(lr[ci]) and "hp_learning_rate" in summary:
          lr[ci] = summary["hp_learning_rate"][s]
    first = [members[0] for members in keys.values()]
    levels_all = {f: design[f][first] for f in value_factors}
    varying = tuple(f for f, v in levels_all.items() if np.unique(v.astype(str)).size > 1)
    cap, cap_source = cap_of(metric, mode, point, valid, curves)
    label = group
    if only_optimizer:
      label = str(design["optimizer"][rows[0]])
    groups.append(Group(
        group=group, label=label, factors=varying,
        levels={f: levels_all[f] for f in varying}, lr=lr, point=point, finished=fin,
        diverged=div, diverged_step=div_step, steps=steps, valid=valid, test=test, cap=cap,
        cap_source=cap_source, mode=mode))

  return Experiment(
      workdir=workdir, config=config, run=run, design=design, summary=summary, metric=metric,
      mode=mode, mode_source=mode_source, test_split=test_split, structural_factors=structural,
      value_factors=value_factors, lr_column=lr_column, num_replicates=num_replicates,
      progress=progress, groups=tuple(groups), curves=curves)
