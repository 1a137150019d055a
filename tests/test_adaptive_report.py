"""The report's section on adaptive designs (analysis/adaptive.py), on synthetic stages.csv."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from jaxopt_lab import expdir, files
from jaxopt_lab.analysis import adaptive, lineage
from jaxopt_lab.analysis.document import Document, to_markdown

COLUMNS = [*expdir.STAGES_COLUMNS, "hp_learning_rate", "hp_b1"]


def write_experiment(workdir, design: str, rows: list[dict], steps: int,
                     summary: list[dict] | None = None) -> None:
  os.makedirs(workdir, exist_ok=True)
  config = {"sweep": {"design": design, "factors": {
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0, "num": 4},
      "b1": {"values": [0.9]}}}, "train": {"steps": steps}}
  files.atomic_write_json(os.path.join(workdir, expdir.CONFIG_FILE), config)
  files.atomic_write_json(os.path.join(workdir, expdir.RUN_FILE), {"total_steps": steps})
  files.atomic_write_csv(os.path.join(workdir, expdir.STAGES_FILE), rows, COLUMNS)
  if summary is not None:
    files.atomic_write_csv(os.path.join(workdir, expdir.SUMMARY_FILE), summary,
                           ["point", "group", "status", "steps", "final_valid_loss"])


def row(stage, begin, end, point, source, lr, group="all", note="", b1=0.9) -> dict:
  return {"stage": stage, "begin": begin, "end": end, "group": group, "point": point,
          "source": source, "note": note or f"stage {stage}", "hp_learning_rate": lr,
          "hp_b1": b1}


# PBT, 4 points, 30 steps, interval 10. Stage 1: point 3 takes point 0's state (lr 0.1 -> 0.125);
# stage 2: point 2 takes point 1's (lr 0.01 -> 0.008), point 3 keeps its own (descended from 0).
LRS = {0: 0.1, 1: 0.01, 2: 0.001, 3: 1.0}
PBT_ROWS = (
    [row(0, 0, 10, p, -1, LRS[p]) for p in range(4)]
    + [row(1, 10, 20, p, p, LRS[p]) for p in range(3)] + [row(1, 10, 20, 3, 0, 0.125)]
    + [row(2, 20, 30, 0, 0, 0.1), row(2, 20, 30, 1, 1, 0.01), row(2, 20, 30, 2, 1, 0.008),
       row(2, 20, 30, 3, 3, 0.125)])


def sh_rows(group: str, first: int) -> list[dict]:
  """Successive halving of 9 points over 27 steps, eta 3: rungs at 3, 9 and 27 steps."""
  ids = list(range(first, first + 9))
  return ([row(0, 0, 3, p, -1, 0.1, group) for p in ids]
          + [row(1, 3, 9, p, p, 0.1, group) for p in ids[:3]]
          + [row(2, 9, 27, ids[0], ids[0], 0.1, group)])


def sh_summary(group: str, first: int) -> list[dict]:
  steps = [27, 9, 9, 3, 3, 3, 3, 3, 3]
  return [{"point": first + i, "group": group, "status": "ok" if s == 27 else "stopped",
           "steps": s} for i, s in enumerate(steps)]


def test_pbt_compute_lineage_and_schedules(tmp_path):
  summary = [{"point": p, "group": "all", "status": "ok", "steps": 30, "final_valid_loss": v}
             for p, v in enumerate([0.5, 0.3, 0.4, ""])]
  write_experiment(tmp_path, "pbt", PBT_ROWS, steps=30, summary=summary)
  stages = adaptive.read_stages(tmp_path)
  c = adaptive.compute(stages, 30)
  # Each stage: 4 points x 10 steps = 40; total 120 = the grid's 4 x 30: PBT trains every point
  # to the end.
  assert [(s.stage, s.begin, s.end, s.points, s.point_steps, s.exploits) for s in c.stages] == [
      (0, 0, 10, 4, 40, 0), (1, 10, 20, 4, 40, 1), (2, 20, 30, 4, 40, 1)]
  assert (c.spent, c.points, c.steps, c.grid, c.share) == (120, 4, 30, 120, 1.0)
  roots = lineage.roots(stages, "all")
  assert roots[(1, 3)] == 0 and roots[(2, 3)] == 0 and roots[(2, 2)] == 1
  assert roots[(2, 0)] == 0 and roots[(0, 2)] == 2
  assert lineage.explored(stages) == ["learning_rate"]  # b1 never changed

  fig = lineage.lineage(stages)
  ax = fig.axes[0]
  dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
  # One dot per exploit: at step 10 on point 3 (y 3), at step 20 on point 2 (y 2).
  assert sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in dots) == [(10, 3),
                                                                                  (20, 2)]
  fig = lineage.schedules(stages, {"sweep": {"factors": {"learning_rate": {"scale": "log"}}}})
  ax = fig.axes[0]
  assert ax.get_yscale() == "log"
  # Point 3's schedule: 1.0 on 0-10 (its own), then 0.125 from point 0's lineage; the riser
  # at step 10 where explore moved it.
  segments = {(tuple(line.get_xdata()), tuple(line.get_ydata()), line.get_linestyle())
              for line in ax.get_lines()}
  assert ((0, 10), (1.0, 1.0), "-") in segments and ((10, 20), (0.125, 0.125), "-") in segments
  assert ((10, 10), (1.0, 0.125), ":") in segments and ((20, 20), (0.001, 0.008), ":") in segments
  assert sum(style == ":" for _, _, style in segments) == 2  # only where a value changed

  doc = Document()
  figures, tables = adaptive.section(doc, tmp_path)
  assert set(figures) == {lineage.LINEAGE_FIGURE, lineage.SCHEDULES_FIGURE}
  assert all(png.startswith(b"\x89PNG") for png in figures.values())
  columns, rows = tables["adaptive_compute.csv"]
  assert columns == adaptive.COMPUTE_COLUMNS
  assert rows[-1]["point_steps"] == "120" and rows[-1]["exploits"] == "2"
  text = to_markdown(doc)
  assert "120 points x steps over 4 points, against 120" in text and "100% of it" in text
  assert "2 time(s) over 3 stage(s)" in text
  # The final population, best first (no metric: last), with the values it ended with.
  columns, rows = tables["adaptive_population.csv"]
  assert columns == ["group", "point", "descends_from", "learning_rate", "final_valid_loss"]
  assert [(r["point"], r["descends_from"], r["learning_rate"], r["final_valid_loss"])
          for r in rows] == [("1", "1", "0.01", "0.3"), ("2", "1", "0.008", "0.4"),
                             ("0", "0", "0.1", "0.5"), ("3", "0", "0.125", "")]
  assert "| all | 2 | 1 | 0.008 | 0.4 |" in text
  assert f"]({lineage.LINEAGE_FIGURE})" in text and f"]({lineage.SCHEDULES_FIGURE})" in text


def test_successive_halving_compute_and_last_rungs(tmp_path):
  groups = [("optimizer=adam", 0), ("optimizer=sgd", 9)]
  rows = [r for g, first in groups for r in sh_rows(g, first)]
  summary = [r for g, first in groups for r in sh_summary(g, first)]
  write_experiment(tmp_path, "successive_halving", rows, steps=27, summary=summary)
  stages = adaptive.read_stages(tmp_path)
  c = adaptive.compute(stages, 27)
  # Per group: 9 x 3 + 3 x 6 + 1 x 18 = 63, against 9 x 27 = 243 for the grid.
  assert [(s.group, s.stage, s.points, s.point_steps) for s in c.stages] == [
      ("optimizer=adam", 0, 9, 27), ("optimizer=adam", 1, 3, 18), ("optimizer=adam", 2, 1, 18),
      ("optimizer=sgd", 0, 9, 27), ("optimizer=sgd", 1, 3, 18), ("optimizer=sgd", 2, 1, 18)]
  assert (c.spent, c.points, c.grid) == (126, 18, 486)
  np.testing.assert_allclose(c.share, 126 / 486)
  last = adaptive.last_stages(stages, [{k: str(v) for k, v in r.items()} for r in summary])
  ends = [(p.point, p.last_stage, p.last_end, p.status, p.steps) for p in last[:9]]
  assert ends == [(0, 2, 27, "ok", 27.0), (1, 1, 9, "stopped", 9.0), (2, 1, 9, "stopped", 9.0)] + [
      (p, 0, 3, "stopped", 3.0) for p in range(3, 9)]
  assert lineage.explored(stages) == []

  doc = Document()
  figures, tables = adaptive.section(doc, tmp_path)
  assert figures == {}  # no lineage for successive halving
  _, point_rows = tables["adaptive_points.csv"]
  assert len(point_rows) == 18
  assert point_rows[1] == {"group": "optimizer=adam", "point": "1", "last_stage": "1",
                           "last_end": "9", "status": "stopped", "steps": "9"}
  text = to_markdown(doc)
  assert "126 points x steps over 18 points, against 486" in text and "25.9% of it" in text
  assert "| optimizer=adam | 3 | 6 | stopped 6 |" in text
  assert "| optimizer=sgd | 27 | 1 | ok 1 |" in text


def test_a_fixed_design_has_no_section_and_a_bad_file_names_its_columns(tmp_path):
  doc = Document()
  assert adaptive.section(doc, tmp_path) == ({}, {})
  assert doc.blocks == []
  path = os.path.join(tmp_path, expdir.STAGES_FILE)
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([["stage", "point"], [0, 1]])
  try:
    adaptive.read_stages(tmp_path)
  except ValueError as e:
    assert "lacks columns ['begin', 'end', 'group', 'source', 'note']" in str(e)
  else:
    raise AssertionError("no error for a stages.csv without its columns")


def test_rung_ranks_against_the_closed_form_and_an_old_file(tmp_path):
  from jaxopt_lab.analysis import rung_ranks  # noqa: PLC0415

  # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: d = (1, 1, 1, 1, 0) -> 1 - 24 / 120.
  assert rung_ranks.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8, abs=1e-12)
  # A diverged point (inf) ranks last on both sides; fewer than 3 known points: no rho.
  assert rung_ranks.spearman([1, 2, np.inf], [0.5, 0.7, np.inf]) == pytest.approx(1.0)
  assert np.isnan(rung_ranks.spearman([1, 2, 3], [1, np.nan, 2]))
  assert np.isnan(rung_ranks.spearman([1, 1, 1], [1, 2, 3]))  # a constant ranking
  path = tmp_path / "stages.csv"
  path.write_text("stage,begin,end,group,point,source,note,kind,ranked_by,score,hp_lr\n"
                  + "".join(f"0,0,10,g,{p},-1,r,stage,cooldown,{s},0.1\n"
                            for p, s in enumerate([0.3, 0.1, 0.2, 0.4]))
                  + "".join(f"0,10,12,g,{p},{p},f,cooldown,,{s},0.1\n"
                            for p, s in enumerate([0.3, 0.1, 0.2, 0.4]))
                  + "1,10,30,g,1,1,r,stage,,,0.1\n")
  stages = adaptive.read_stages(tmp_path)
  (rank,) = rung_ranks.rung_ranks(stages, {0: 3.0, 1: 1.0, 2: 2.5, 3: 2.0})
  assert (rank.stage, rank.end, rank.ranked_by, rank.points, rank.known) == (
      0, 10, "cooldown", 4, 4)
  # scores rank 1 < 2 < 0 < 3, finals 1 < 3 < 2 < 0: d = (1, 0, 1, 2) -> 1 - 6 * 6 / 60.
  assert rank.rho == pytest.approx(0.4, abs=1e-12)
  # the fork's rows are not the stage's: compute counts their steps, not their points
  c = adaptive.compute(stages, 30)
  assert (c.stages[0].points, c.stages[0].point_steps, c.stages[0].end) == (4, 48, 10)
