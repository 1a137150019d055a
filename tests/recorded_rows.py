"""What an adaptive design's tests read back from an experiment directory: its recorded rows."""

from __future__ import annotations

import csv
import os

from jaxopt_lab import expdir, files


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def valid_metric(workdir: str | os.PathLike, metric: str) -> dict[tuple[int, int], float]:
  """(point, step) -> `metric` on the valid split, from metrics.jsonl."""
  return {(r["point"], r["step"]): float(r[metric])
          for r in files.read_jsonl(os.path.join(workdir, expdir.METRICS_FILE))
          if r["split"] == "valid"}


def stages(workdir: str | os.PathLike) -> list[list[dict[str, str]]]:
  """stages.csv's rows, stage by stage (of a one-group sweep), in their recorded order."""
  out: dict[int, list[dict[str, str]]] = {}
  for row in read_csv(os.path.join(workdir, expdir.STAGES_FILE)):
    out.setdefault(int(row["stage"]), []).append(row)
  return [out[k] for k in sorted(out)]
