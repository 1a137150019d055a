"""examples/median_stopping.py tested as a user tests their own design: its decisions on scores
worked by hand, then a sweep with it beside the grid of the same experiment."""

from __future__ import annotations

import csv
import os
import types

import ml_collections
import numpy as np
import pytest
from small_configs import classic_sweep_config

from examples import median_stopping
from jaxopt_lab import files
from jaxopt_lab.sweep import driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "examples", "median_stopping.py") + ":median_stopping"
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)


def test_each_rung_stops_the_points_worse_than_the_median_of_the_others():
  config = ml_collections.ConfigDict({"train": {"steps": 40}})
  policy = median_stopping.MedianStopping(
      types.SimpleNamespace(points=list(range(5)), config=config), {"rungs": 4}, workdir="")
  first = policy.first()
  assert (first.slots.tolist(), first.end, first.source) == ([0, 1, 2, 3, 4], 10, None)
  # The others' medians: 3.5, 3.5, 3, 2.5, 2.5. Point 3 is worse than its; 4 diverged (inf).
  second = policy.next(first, np.array([1.0, 2.0, 3.0, 4.0, np.inf]))
  assert (second.slots.tolist(), second.source.tolist(), second.end) == ([0, 1, 2], [0, 1, 2], 20)
  # Medians 2, 2.5, 1.5: a point equal to the median goes on.
  third = policy.next(second, np.array([2.0, 1.0, 3.0]))
  assert (third.slots.tolist(), third.source.tolist(), third.end) == ([0, 1], [0, 1], 30)
  fourth = policy.next(third, np.array([0.5, 0.4]))
  assert (fourth.slots.tolist(), fourth.source.tolist(), fourth.end) == ([1], [1], 40)
  assert policy.next(fourth, np.array([0.3])) is None  # the last rung is the run's end


@pytest.mark.parametrize("design, rungs, expected", [
    (DESIGN, 0, "sweep.adaptive.rungs: must be an int >= 1 (rung k of the run's steps * k / "
                "rungs), got 0."),
    (DESIGN, 2.5, "sweep.adaptive.rungs: must be an int >= 1"),
    ("median", 4, "sweep.design: unknown design 'median'; choices: grid, random, sobol, lhs, "
                  "factorial, fractional_factorial, explicit, successive_halving, hyperband, pbt, "
                  "optuna; or a plugin: 'path/to/file.py:name' or 'package.module:name'."),
])
def test_a_bad_setting_is_refused_in_one_line_before_anything_is_written(tmp_path, design,
                                                                         rungs, expected):
  config = _config(design)
  config.sweep.adaptive.rungs = rungs  # a field the experiment file adds for its design
  with pytest.raises(ValueError) as error:
    driver.run_sweep(config, str(tmp_path / "w"))
  assert str(error.value).startswith(expected) and "\n" not in str(error.value)
  assert not (tmp_path / "w").exists()


def _config(design: str):
  config = classic_sweep_config(learning_rates=LRS, optimizers=("sgd",), replicates=1, steps=40)
  config.train.update(dict(steps_per_call=10, log_every=10, eval_every=10, checkpoint_every=10))
  config.sweep.design = design
  config.sweep.slice_size = 1  # a point's numbers do not depend on the points beside it
  return config


def _rows(workdir):
  return {(r["point"], r["step"], r["split"]): r
          for r in files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))}


@pytest.fixture(scope="module")
def grid_and_median(tmp_path_factory):
  root = tmp_path_factory.mktemp("median")
  driver.run_sweep(_config("grid"), str(root / "grid"))
  driver.run_sweep(_config(DESIGN), str(root / "median"))
  return str(root / "grid"), str(root / "median")


def test_a_sweep_stops_what_the_grid_says_and_trains_the_rest_bit_identically(grid_and_median):
  grid, median = grid_and_median
  grid_rows, median_rows = _rows(grid), _rows(median)
  assert median_rows and all(grid_rows[k] == row for k, row in median_rows.items())
  alive, stopped_at = list(range(len(LRS))), {}
  for step in (10, 20, 30):  # the rungs of 40 steps / 4, recomputed from the grid's curves
    losses = {p: grid_rows[(p, step, "valid")]["loss"] for p in alive}
    for p in list(alive):
      if len(losses) > 1 and losses[p] > np.median([v for q, v in losses.items() if q != p]):
        alive.remove(p)
        stopped_at[p] = step
  assert stopped_at and alive  # the test means something: some stop, some finish
  with open(os.path.join(median, "summary.csv"), newline="") as f:
    summary = {int(r["point"]): r for r in csv.DictReader(f)}
  for p in range(len(LRS)):
    expected = ("stopped", stopped_at[p]) if p in stopped_at else ("ok", 40)
    assert (summary[p]["status"], int(summary[p]["steps"])) == expected


def test_the_readme_shows_the_example_as_it_is():
  with open(os.path.join(ROOT, "examples", "median_stopping.py")) as f:
    code = f.read().split('"""\n', 1)[1].strip()
  with open(os.path.join(ROOT, "README.md")) as f:
    assert f"```python\n{code}\n```" in f.read()
