"""Successive halving and Hyperband: rung selection, schedules, bit-identical survivors, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import recorded_rows
from small_configs import classic_sweep_config
from workdir_faults import interrupt_after_flush

from jaxopt_lab import files, runloop
from jaxopt_lab.sweep import design, driver
from jaxopt_lab.sweep.adaptive import halving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def test_keep_against_a_hand_worked_table():
  scores = [0.5, 0.2, math.inf, 0.3, math.nan, 0.1, 0.9, 0.4, 0.25]
  # 9 value points, eta 3: keep 3, best first; inf (diverged) and NaN never survive.
  assert halving.keep(scores, 3).tolist() == [5, 1, 8]
  assert halving.keep(scores, 4).tolist() == [5, 1]  # 9 // 4 = 2
  assert halving.keep([0.3, 0.3, 0.1], 2).tolist() == [2]  # ties: the first in design order
  assert halving.keep([0.3, 0.2], 3).tolist() == [1]  # at least one survives
  assert halving.keep([math.inf, math.nan, math.inf], 3).tolist() == []


def test_rungs_and_brackets_match_the_papers():
  # Li et al. (2018), Table 1: R = 81, eta = 3.
  brackets = halving.hyperband_brackets(81, 3, 1)
  assert [n for n, _ in brackets] == [81, 34, 15, 8, 5]
  assert [rungs for _, rungs in brackets] == [[1, 3, 9, 27, 81], [3, 9, 27, 81], [9, 27, 81],
                                              [27, 81], [81]]
  assert halving.hyperband_brackets(81, 3, 1, brackets=2) == brackets[:2]
  assert halving.hyperband_brackets(81, 3, 0) == halving.hyperband_brackets(81, 3, 3)  # 81/3^3
  # Successive halving: 27 points, eta 3 -> 4 rungs ending at the run's steps.
  assert halving.rung_steps(81, 3, 0, 27) == [3, 9, 27, 81]
  assert halving.rung_steps(90, 3, 0, 9) == [10, 30, 90]
  assert halving.rung_steps(100, 3, 10, 9) == [10, 30, 90, 100]
  # min_steps r: rungs r, r eta, ... below the end, whatever the ratio (not only powers of eta)
  assert halving.rung_steps(108, 9, 27, 9) == [27, 108]
  assert halving.rung_steps(108, 3, 20, 9) == [20, 60, 108]
  assert halving.rung_steps(100, 2, 0, 1) == [100]


def _config(design_name: str = "successive_halving", steps: int = 90):
  config = classic_sweep_config(learning_rates=LRS, optimizers=("sgd",), replicates=2,
                                steps=steps)
  config.data.batch_size = 10  # the data order matters: a wrong resume changes the numbers
  config.train.update(dict(steps_per_call=10, log_every=10, eval_every=10, checkpoint_every=10))
  config.sweep.design = design_name
  config.sweep.slice_size = 1  # one point per vmapped slice: a point's numbers never depend on
  # how many points run beside it, so survivors can be compared bit for bit with the grid
  return config


def _rows(workdir):
  return {(r["point"], r["step"], r["split"]): r for r in files.read_jsonl(
      os.path.join(workdir, "metrics.jsonl"))}


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid_and_halving(tmp_path_factory):
  root = tmp_path_factory.mktemp("halving")
  grid, sh = str(root / "grid"), str(root / "sh")
  driver.run_sweep(_config("grid"), grid)
  driver.run_sweep(_config(), sh)
  return grid, sh


def test_survivors_are_the_best_and_continue_bit_identically(grid_and_halving):
  grid, sh = grid_and_halving
  grid_rows, sh_rows = _rows(grid), _rows(sh)
  # Every row successive halving wrote is the grid's row of the same point and step, bit for bit.
  assert sh_rows and all(grid_rows[k] == row for k, row in sh_rows.items())

  # The survivors of each rung, recomputed from the grid's rows: best 1/3 of the value points by
  # their mean valid loss over the two seeds.
  alive = list(range(len(LRS)))  # value point v = points 2v, 2v + 1
  expected = {}
  for rung, step in enumerate([10, 30]):
    means = [np.mean([grid_rows[(2 * v + r, step, "valid")]["loss"] for r in (0, 1)])
             for v in alive]
    order = np.argsort(means, kind="stable")[: max(1, len(alive) // 3)]
    for v in alive:
      expected[v] = (rung, step)
    alive = [alive[i] for i in order]
  summary = {int(r["point"]): r for r in _csv(os.path.join(sh, "summary.csv"))}
  for v in range(len(LRS)):
    for r in (0, 1):
      row = summary[2 * v + r]
      if v in alive:
        assert (row["status"], row["steps"], row["stages"]) == ("ok", "90", "3")
        assert max(s for p, s, _ in sh_rows if p == 2 * v + r) == 90
      else:
        rung, step = expected[v]
        assert (row["status"], int(row["steps"]), int(row["stages"])) == ("stopped", step,
                                                                          rung + 1)
        assert max(s for p, s, _ in sh_rows if p == 2 * v + r) == step
  # The compute: 18 points x 10 steps, then 6 x 20, then 2 x 60 (the grid: 18 x 90).
  with open(os.path.join(sh, "run.json")) as f:
    (group,) = json.load(f)["groups"]
  assert group["points_steps"] == 18 * 10 + 6 * 20 + 2 * 60
  with open(os.path.join(grid, "run.json")) as f:
    assert json.load(f)["groups"][0]["points_steps"] == 18 * 90
  stages = _csv(os.path.join(sh, "stages.csv"))
  assert [(r["stage"], r["begin"], r["end"]) for r in stages].count(("1", "10", "30")) == 6
  assert all(r["source"] == r["point"] for r in stages if r["stage"] != "0")
  assert all(r["source"] == "-1" for r in stages if r["stage"] == "0")


def test_a_sweep_killed_mid_rung_resumes_to_the_same_survivors(grid_and_halving, tmp_path,
                                                               monkeypatch):
  _, reference = grid_and_halving
  workdir = str(tmp_path / "killed")
  # the 4th write: rung 3 (steps 30 -> 90) at step 40, before its checkpoint there
  with interrupt_after_flush(4), pytest.raises(runloop.Interrupted):
    driver.run_sweep(_config(), workdir)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "optimizer=sgd", "stage-1"))
  driver.run_sweep(_config(), workdir)
  for name in ("metrics.jsonl", "summary.csv", "design.csv", "stages.csv"):
    with open(os.path.join(workdir, name)) as a, open(os.path.join(reference, name)) as b:
      assert a.read() == b.read(), name


def test_hyperband_brackets_from_the_script(tmp_path):
  workdir = tmp_path / "hb"
  args = ["--config=experiments/classic.py", "--config.sweep.design=hyperband",
          "--config.sweep.adaptive.initial=sobol", "--config.sweep.adaptive.eta=3",
          "--config.sweep.adaptive.min_steps=4", "--config.train.steps=36",
          "--config.train.eval_every=36", "--config.train.checkpoint_every=36",
          "--config.train.log_every=4", "--config.train.steps_per_call=4",
          "--config.sweep.report=True"]
  config_text = ("--config.sweep.factors={'learning_rate': {'scale': 'log', 'low': 0.001, "
                 "'high': 30.0}}")
  result = subprocess.run([sys.executable, "scripts/sweep.py", *args, config_text,
                           f"--workdir={workdir}", "--cpu_devices=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  points = _csv(workdir / "design.csv")
  # steps 36 / min_steps 4: s_max = 2 -> brackets of 9, 5 and 3 value points.
  assert [sum(p["bracket"] == str(b) for p in points) for b in range(3)] == [9, 5, 3]
  stages = _csv(workdir / "stages.csv")
  assert [(r["begin"], r["end"]) for r in stages] == (
      [("0", "4")] * 9 + [("4", "12")] * 3 + [("12", "36")] * 1
      + [("0", "12")] * 5 + [("12", "36")] * 1 + [("0", "36")] * 3)
  summary = _csv(workdir / "summary.csv")
  assert sum(r["status"] == "ok" for r in summary) == 1 + 1 + 3
  assert (workdir / "report" / "report.html").exists()


def _survivors_by_hand(workdir, metric: str, eta: int) -> list[tuple[list[str], list[str]]]:
  """(survivors, their hand computation) of every rung after the first of each bracket.

  From stages.csv and metrics.jsonl only: a rung's value points (rows with the same hp_* values,
  in their recorded order) ranked by the mean of `metric` (maximised) over their replicates at
  the rung's end; the best max(1, n // eta) kept, best first, each with its replicates.
  """
  valid = recorded_rows.valid_metric(workdir, metric)
  by_stage = recorded_rows.stages(workdir)
  out = []
  for rung, after in zip(by_stage[:-1], by_stage[1:], strict=True):
    if after[0]["source"] == "-1":  # a new bracket's fresh points: no selection
      continue
    end = int(rung[0]["end"])
    value_points: dict[tuple, list[str]] = {}
    for row in rung:
      key = tuple(sorted((k, v) for k, v in row.items() if k.startswith("hp_")))
      value_points.setdefault(key, []).append(row["point"])
    vps = list(value_points.values())
    means = np.array([np.mean([valid[(int(p), end)] for p in vp]) for vp in vps])
    assert np.isfinite(means).all()
    ranked = np.argsort(-means, kind="stable")[: max(1, len(vps) // eta)]
    # The check has power: the worst points are not the best ones.
    assert means[ranked].min() > means.min(), means
    out.append(([r["point"] for r in after], [p for k in ranked for p in vps[k]]))
  return out


def test_halving_on_accuracy_keeps_the_most_accurate_points(tmp_path):
  config = _config()
  config.sweep.metric = "accuracy"  # maximised (the classic task's metric_modes)
  config.sweep.slice_size = 0
  driver.run_sweep(config, str(tmp_path))
  checked = _survivors_by_hand(tmp_path, "accuracy", eta=3)
  assert len(checked) == 2  # rungs at steps 10 and 30 (of 90): 9 -> 3 -> 1 value points
  for survivors, by_hand in checked:
    assert survivors == by_hand


def test_hyperband_on_accuracy_keeps_the_most_accurate_points_of_each_bracket(tmp_path):
  config = _config("hyperband", steps=36)
  config.sweep.metric = "accuracy"
  config.sweep.slice_size = 0
  config.sweep.replicates = 1
  config.sweep.adaptive.update(dict(initial="random", eta=3, min_steps=4))
  config.sweep.factors = ml_collections.ConfigDict(
      {"learning_rate": {"scale": "log", "low": 1e-3, "high": 30.0}})
  config.train.update(dict(steps_per_call=4, log_every=4, eval_every=36, checkpoint_every=36))
  driver.run_sweep(config, str(tmp_path))
  checked = _survivors_by_hand(tmp_path, "accuracy", eta=3)
  # brackets of 9 (rungs 4, 12, 36), 5 (12, 36) and 3 (36) value points: 3 selections
  assert [len(by_hand) for _, by_hand in checked] == [3, 1, 1]
  for survivors, by_hand in checked:
    assert survivors == by_hand


@pytest.mark.parametrize("field,value,message", [
    ("eta", 1, "sweep.adaptive.eta: must be an int >= 2"),
    ("min_steps", 90, r"sweep.adaptive.min_steps: the first rung \(90 steps\) must come before"),
    ("min_steps", -1, "sweep.adaptive.min_steps: must be an int >= 0"),
    ("initial", "factorial", "sweep.adaptive.initial: 'factorial' cannot start"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, field, value, message):
  config = _config()
  config.sweep.adaptive[field] = value
  with pytest.raises(ValueError, match=message):
    driver.run_sweep(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("design_name", ["successive_halving", "pbt", "grid"])
def test_a_metric_the_task_lacks_is_refused_before_anything_is_written(tmp_path, design_name):
  # Misspelt, it scored every point inf: halving stopped all of them at the first rung and
  # the sweep ended "complete"; a grid trained fully and failed only at the report.
  config = _config(design_name)
  config.sweep.metric = "acuracy"
  config.sweep.adaptive.interval = 30
  with pytest.raises(ValueError) as err:
    driver.run_sweep(config, str(tmp_path / "w"))
  assert str(err.value) == ("sweep.metric: 'acuracy' is not a metric of task 'classic'; "
                            "choices: loss, accuracy")
  assert not (tmp_path / "w").exists()


def test_an_adaptive_design_needs_a_value_factor():
  config = _config()
  config.sweep.factors = ml_collections.ConfigDict({"optimizer": {"values": ["sgd", "adam"]}})
  with pytest.raises(ValueError, match="sweep.factors: the 'successive_halving' design needs"):
    design.make_design(config.sweep, 90)
