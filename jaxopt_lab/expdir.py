"""The experiment directory's schema: file names, columns, `run.json` fields (no JAX).

The sweep's store (`sweep.store`) and the single run (`single.train`) write it; the analysis
(`analysis.results`) reads it. A sweep's directory:

  config.json     the resolved config
  design.csv      one row per point (DESIGN_ID_COLUMNS, then one column per factor)
  metrics.jsonl   one metric row per line (METRIC_ROW_KEYS, then <metric>: value), appended
  summary.csv     one row per point: factors, hp_*, status, final_* / best_* metrics (and, for
                  adaptive designs, `stages`: how many stages, e.g. rungs, the point trained in)
  run.json        RUN_FIELDS
  stages.csv      adaptive designs only: one row per (stage, point) and per (cooldown fork,
                  point) (STAGES_COLUMNS, RANKING_COLUMNS, then hp_*)
  optuna.db       the Optuna design only: the study (SQLite; optuna-dashboard reads it)
  followup.json   a follow-up (--continue_from) only: its source and changes (analysis.followup)
  checkpoints/    orbax checkpoints: checkpoints/<group>/<step> (a fixed design),
                  checkpoints/<group>/stage-<k>/<step> (an adaptive one), and each group's
                  device layout beside them, checkpoints/<group>.layout.json
  tb/<point>/     TensorBoard event files (config.train.tensorboard)

A single run's directory (scripts/train.py) holds config.json, metrics.jsonl (rows without
"point"), summary.json and checkpoints/: the analysis reads it as a one-point experiment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

import numpy as np

from jaxopt_lab import files

CONFIG_FILE = "config.json"
DESIGN_FILE = "design.csv"
SUMMARY_FILE = "summary.csv"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
SINGLE_SUMMARY_FILE = "summary.json"  # a single run's summary instead of summary.csv
STAGES_FILE = "stages.csv"
OPTUNA_FILE = "optuna.db"
FOLLOWUP_FILE = "followup.json"
SCALE_FILE = "scale.csv"  # the report's scale study: optimal lr per group (analysis/scale.py)
SCALE_FIT_FILE = "scale_fit.csv"  # its fits of log lr* against log width / depth / steps
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
LAYOUT_SUFFIX = ".layout.json"  # checkpoints/<group>.layout.json: the layout its states hold
STAGE_PREFIX = "stage-"  # checkpoints/<group>/stage-<k>/: an adaptive design's stage k
WRITE_PROBE_FILE = ".write_test"  # written and removed at a start: is the workdir writable?
REQUIRED_FILES = (CONFIG_FILE, DESIGN_FILE)
SINGLE_RUN_FILES = (CONFIG_FILE, SINGLE_SUMMARY_FILE)
DESIGN_ID_COLUMNS = ("point", "group", "replicate", "seed")
# design.csv's column naming the part of an adaptive design a point belongs to (not a factor):
# the one its declaration names (`adaptive.registry.Design.tag`).
BRACKET_COLUMN = "bracket"  # Hyperband's bracket
ROUND_COLUMN = "round"  # Optuna's round
DESIGN_TAG_COLUMNS = {"hyperband": BRACKET_COLUMN, "optuna": ROUND_COLUMN}
# A train row: the loss's mean over the log interval, the other training metrics (the task's, and
# grad_norm, update_norm, param_norm) at its step (`runloop.MetricMeans`).
METRIC_ROW_KEYS = ("point", "step", "split")  # then the row's metrics; split: train | valid | test
# summary "status"; "stopped": an adaptive design stopped the point early (at its `steps`)
STATUSES = ("ok", "diverged", "running", "stopped")
# stages.csv: the stage's index, its first and last step, the group, the point that trained in it,
# the point whose state it continued from (itself, another: PBT's exploit, or -1: fresh from step
# 0) and the stage's note; then hp_<value factor> (the values it trained with in the stage).
STAGES_COLUMNS = ("stage", "begin", "end", "group", "point", "source", "note")
# Then the rung's ranking (successive halving, Hyperband): `kind`, STAGE_KIND for a stage's row or
# FORK_KIND for a rung's cooldown fork (the point trained a copy of its state from `begin` to
# `end`, then the copy was dropped; its points x steps count); `ranked_by` on a ranking rung's
# rows, what ranked the point ('last', 'cooldown', 'extrapolated', or 'last (<why the
# extrapolation failed>)'); `score`, the value it was ranked by (lower is better: the metric,
# negated where it is maximised) on those rows, the fork's valid metric on a fork's row.
# Files written before them lack these columns (read as a stage's row, not ranked).
RANKING_COLUMNS = ("kind", "ranked_by", "score")
STAGE_KIND = "stage"
FORK_KIND = "cooldown"
# summary.csv: the design's columns, hp_<value factor> (resolved), SUMMARY_STATUS_COLUMNS, then
# metric_columns(...) for each held-out split.
HPARAM_PREFIX = "hp_"
SUMMARY_STATUS_COLUMNS = ("status", "diverged_step", "steps", "final_train_loss")
FINISHED = ("ok", "diverged", "stopped")
# Used only when run.json (which records the modes) is missing.
DEFAULT_METRIC_MODES = {"loss": "min", "perplexity": "min", "bits_per_byte": "min",
                        "accuracy": "max"}

RUN_FIELDS = {
    "status": "'running' | 'complete'",
    "task": "the task's name",
    "total_steps": "train.steps",
    "points": "number of design points",
    "devices": "device_kind of each device",
    "device_count": "jax.device_count()",
    "process_count": "jax.process_count()",
    "wall_seconds": "over every run of the command",
    "metric_modes": "metric -> 'min' | 'max'",
    "structural_factors": "the factors that make groups (each group compiles once)",
    "peak_flops": "FLOP/s of one device: data sheet, or a measured matmul (CPUs); null if neither",
    "peak_flops_source": "'data sheet <dtype>' | 'measured <dtype> matmul'",
    "groups": "per group: points, compile/train seconds, steps, throughput, flops_per_step",
}


def metric_column(kind: str, split: str, metric: str) -> str:
  """The summary column of a metric: kind 'final' (last evaluation) or 'best' (over steps > 0)."""
  return f"{kind}_{split}_{metric}"


def metric_columns(splits: Sequence[str], metrics: Sequence[str]) -> list[str]:
  """The summary's metric columns, split by split: final_* then best_* of each metric."""
  return [metric_column(kind, split, m) for split in splits for kind in ("final", "best")
          for m in metrics]


def run_record(**fields: Any) -> dict[str, Any]:
  """The `run.json` document; raises ValueError on a field RUN_FIELDS does not declare or lacks."""
  unknown = sorted(set(fields) - set(RUN_FIELDS))
  missing = sorted(set(RUN_FIELDS) - set(fields))
  if unknown or missing:
    raise ValueError(f"run.json fields: unknown {unknown}, missing {missing}; "
                     f"declared: {', '.join(RUN_FIELDS)}")
  return {name: fields[name] for name in RUN_FIELDS}


def metric_float(value: Any) -> float:
  """A metric as the float whose shortest text round-trips its float32 value.

  Metrics are float32 on the device (means over steps in float64 of float32 values): writing the
  float64 expansion of a float32 (0.10000000149011612) says 17 digits where 8 hold the value.
  Values beyond float32's range stay as they are.
  """
  value = float(value)
  if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
    return value
  return float(str(np.float32(value)))


class RowListener(Protocol):
  """Receives the rows a `MetricsLog` appends (the TensorBoard writer of `tblog`)."""

  def add_rows(self, rows: Sequence[Mapping[str, Any]]) -> None: ...


class MetricsLog:
  """`metrics.jsonl`, appended: each write adds the new rows, so the I/O grows with the run.

  A resume cuts it back to the checkpoint (`truncate`); a partial last line left by a kill is
  dropped when it is read. The caller holds the workdir's lock.
  """

  def __init__(self, path: str | os.PathLike, listener: RowListener | None = None):
    self.path = os.fspath(path)
    self.listener = listener
    self.written: int | None = None  # rows of the caller's list already in the file

  def read(self) -> list[dict[str, Any]]:
    """The rows in the file (none if it is missing), after cutting a partial last line."""
    rows = []
    if os.path.exists(self.path):
      files.drop_partial_line(self.path)
      rows = files.read_jsonl(self.path)
    self.written = len(rows)
    return rows

  def rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replaces the file by `rows` atomically."""
    files.atomic_write_jsonl(self.path, rows)
    self.written = len(rows)

  def truncate(self, keep: Callable[[Mapping[str, Any]], bool] | int) -> list[dict[str, Any]]:
    """Keeps the rows for which `keep` holds (an int: rows up to that step), in file order.

    Rewrites the file only when a row is dropped; returns the rows kept.
    """
    if isinstance(keep, int):
      last = keep
      keep = lambda r: r["step"] <= last  # noqa: E731
    rows = self.read()
    kept = [r for r in rows if keep(r)]
    if len(kept) != len(rows):
      self.rewrite(kept)
    self.written = len(kept)
    return kept

  def append(self, rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Appends `rows`, their floats rounded in place by `metric_float` (so what the caller keeps
    is what a resume reads back)."""
    if self.written is None:  # rows of an earlier start the caller did not keep
      self.truncate(lambda r: False)
    for row in rows:
      for k, v in row.items():
        if isinstance(v, float):
          row[k] = metric_float(v)
    if rows:
      files.append_bytes(self.path, files.jsonl_bytes(rows))
      if self.listener is not None:
        self.listener.add_rows(rows)
    self.written = (self.written or 0) + len(rows)

  def sync(self, rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Appends the rows of `rows` past those already written (a run's growing list)."""
    if self.written is None:
      self.truncate(lambda r: False)
    self.append(rows[self.written:])

  def close(self) -> None:
    close = getattr(self.listener, "close", None)
    if close is not None:
      close()


def checkpoints_dir(workdir: str | os.PathLike) -> str:
  """The folder of every checkpoint of the experiment (a single run's own checkpoints)."""
  return os.path.join(os.fspath(workdir), CHECKPOINTS_DIR)


def group_checkpoints(workdir: str | os.PathLike, group: str) -> str:
  """The checkpoints of a sweep's group (an adaptive design's: one folder per stage in it)."""
  return os.path.join(checkpoints_dir(workdir), group)


def stage_checkpoints(workdir: str | os.PathLike, group: str, stage: int) -> str:
  """The checkpoints of stage `stage` of an adaptive design's group."""
  return os.path.join(group_checkpoints(workdir, group), f"{STAGE_PREFIX}{stage}")


def layout_file(workdir: str | os.PathLike, group: str) -> str:
  """The device layout a group's checkpoints hold (points x data devices, slice width, padded
  points): a resume checks it against its own."""
  return group_checkpoints(workdir, group) + LAYOUT_SUFFIX


def is_single_run(workdir: str | os.PathLike) -> bool:
  """Whether `workdir` is a single run's directory (summary.json, no design.csv)."""
  return (all(os.path.isfile(os.path.join(workdir, f)) for f in SINGLE_RUN_FILES)
          and not os.path.isfile(os.path.join(workdir, DESIGN_FILE)))


def single_run_tables(config: Mapping[str, Any], summary: Mapping[str, Any]
                      ) -> tuple[list[str], list[dict[str, str]], list[str], list[dict[str, str]]]:
  """design.csv and summary.csv (columns, rows of text) of a single run: one point, one group.

  The group is the optimizer, the seed the run's; the summary row holds its hyperparameters as
  hp_* and its status, steps and final / best metrics.
  """
  optimizer = str(summary.get("optimizer", config.get("optimizer", {}).get("name", "")))
  design_columns = [*DESIGN_ID_COLUMNS, "optimizer"]
  design_row = {"point": "0", "group": f"optimizer={optimizer}", "replicate": "0",
                "seed": str(summary.get("seed", config.get("seed", 0))), "optimizer": optimizer}
  row = dict(design_row)
  row.update({HPARAM_PREFIX + k: repr(float(v)) for k, v in summary.get("hparams", {}).items()})
  row["status"] = str(summary.get("status", "running"))
  row["diverged_step"] = str(summary.get("diverged_step", ""))
  row["steps"] = str(summary.get("steps", ""))
  row.update({k: repr(float(v)) for k, v in summary.items()
              if k.startswith(("final_", "best_")) and isinstance(v, (int, float))})
  return design_columns, [design_row], list(row), [row]


def final_and_best(rows: Sequence[Mapping[str, Any]], splits: Sequence[str],
                   modes: Mapping[str, str]) -> dict[str, float]:
  """`final_train_loss`, and `final_<split>_<metric>` / `best_<split>_<metric>` of metric rows.

  Best is the min (or max, as `modes` says) over the finite values of the evaluations after
  training began (step 0, the initialisation, counts only when it is the only evaluation).
  """
  out: dict[str, float] = {}
  train_rows = [r for r in rows if r["split"] == "train"]
  if train_rows:
    out["final_train_loss"] = train_rows[-1]["loss"]
  for split in splits:
    split_rows = [r for r in rows if r["split"] == split]
    for name, mode in modes.items():
      values = [r[name] for r in split_rows if name in r]
      if not values:
        continue
      out[f"final_{split}_{name}"] = values[-1]
      trained = [r[name] for r in split_rows if name in r and r["step"] > 0] or values
      finite = [v for v in trained if math.isfinite(v)]
      out[f"best_{split}_{name}"] = (max if mode == "max" else min)(finite) if finite else math.nan
  return out
