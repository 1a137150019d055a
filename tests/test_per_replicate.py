"""sweep.adaptive.per_replicate: each replicate (seed) an independent successive halving /
Hyperband search, all in one population; rungs checked against rankings recomputed from the
experiment directory's recorded valid losses."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest
import recorded_rows
from small_configs import classic_sweep_config

from jaxopt_lab import expdir
from jaxopt_lab.sweep import design, driver
from jaxopt_lab.sweep.adaptive import halving

LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
ETA = 3


def _config(replicates: int, per_replicate: bool):
  config = classic_sweep_config(learning_rates=LRS, optimizers=("sgd",),
                                replicates=replicates, steps=90)
  config.data.batch_size = 10  # small batches: the two seeds' curves differ
  config.train.update(dict(steps_per_call=10, log_every=10, eval_every=10, checkpoint_every=90))
  config.sweep.design = "successive_halving"
  config.sweep.adaptive.per_replicate = per_replicate
  return config


def _by_hand(workdir) -> list[tuple[dict[int, list[int]], dict[int, list[int]]]]:
  """Per rung that selects: (the next stage's points per replicate, the best max(1, n // eta)
  of that replicate's points at the rung by their own valid loss, best first), read from
  stages.csv, design.csv and metrics.jsonl only."""
  valid = recorded_rows.valid_metric(workdir, "loss")
  replicate = {int(r["point"]): int(r["replicate"])
               for r in recorded_rows.read_csv(os.path.join(workdir, expdir.DESIGN_FILE))}
  by_stage = recorded_rows.stages(workdir)
  out = []
  for rung, after in zip(by_stage[:-1], by_stage[1:], strict=True):
    end = int(rung[0]["end"])
    got: dict[int, list[int]] = {}
    for row in after:
      got.setdefault(replicate[int(row["point"])], []).append(int(row["point"]))
    want = {}
    for r in sorted({replicate[int(row["point"])] for row in rung}):
      points = [int(row["point"]) for row in rung if replicate[int(row["point"])] == r]
      losses = np.array([valid[(p, end)] for p in points])
      assert np.isfinite(losses).all(), losses  # nothing diverged: every point was rankable
      want[r] = [points[i] for i in np.argsort(losses, kind="stable")[: len(points) // ETA]]
    out.append((got, want))
  return out


@pytest.fixture(scope="module")
def two_searches(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("per_replicate"))
  driver.run_sweep(_config(2, True), workdir)
  return workdir


def test_each_replicate_keeps_its_own_best(two_searches):
  checked = _by_hand(two_searches)
  assert len(checked) == 2  # rungs at steps 10 and 30 (of 90): 9 -> 3 -> 1 value points a seed
  for got, want in checked:
    assert got == want
  # The check has power: the seeds' searches disagree at some rung (a mean over the seeds would
  # have kept the same learning rates for both).
  lr = {int(r["point"]): r["learning_rate"]
        for r in recorded_rows.read_csv(os.path.join(two_searches, expdir.DESIGN_FILE))}
  assert any({lr[p] for p in want[0]} != {lr[p] for p in want[1]} for _, want in checked)
  # The compute: each seed's search is 9 points x 10 steps, 3 x 20, 1 x 60.
  with open(os.path.join(two_searches, expdir.RUN_FILE)) as f:
    (group,) = json.load(f)["groups"]
  assert group["points_steps"] == 2 * (9 * 10 + 3 * 20 + 1 * 60)


def test_one_replicate_is_the_default_bit_for_bit(tmp_path):
  runs = {}
  for flag in (False, True):
    runs[flag] = str(tmp_path / str(flag))
    driver.run_sweep(_config(1, flag), runs[flag])
  for name in (expdir.METRICS_FILE, expdir.SUMMARY_FILE, expdir.DESIGN_FILE, expdir.STAGES_FILE):
    with open(os.path.join(runs[False], name)) as a, open(os.path.join(runs[True], name)) as b:
      assert a.read() == b.read(), name


def _points(replicates: int, brackets: list[int]) -> list[design.Point]:
  """Hyperband's points: value points v of bracket b, each with its replicates (design order)."""
  out = []
  for b, n in enumerate(brackets):
    for v in range(n):
      for r in range(replicates):
        out.append(design.Point(len(out), "all", r, r, {}, {"learning_rate": 10.0 * b + v},
                                {expdir.BRACKET_COLUMN: b}))
  return out


def test_hyperband_brackets_search_each_replicate_alone():
  # steps 36, min_steps 4, eta 3: brackets of 9 (rungs 4, 12, 36), 5 (12, 36) and 3 (36).
  points = _points(2, [9, 5, 3])
  policy = halving.Policy(points, 36, ETA, 4, brackets=0, per_replicate=True)
  rng = np.random.default_rng(0)
  stage, selections = policy.first(), 0
  while stage is not None:
    slots = np.asarray(stage.slots)
    scores = rng.permutation(len(slots)).astype(np.float64)  # the seeds rank differently
    after = policy.next(stage, scores)
    if after is not None and after.source is not None:  # a selection within the bracket
      selections += 1
      for r in (0, 1):
        mine = [j for j, i in enumerate(slots) if points[i].replicate == r]
        best = [mine[k] for k in np.argsort(scores[mine], kind="stable")[: len(mine) // ETA]]
        kept = [int(slots[j]) for j in after.source if points[slots[j]].replicate == r]
        assert kept == [int(slots[j]) for j in best]
        assert [int(after.slots[k]) for k, j in enumerate(after.source)
                if points[slots[j]].replicate == r] == kept  # each continues its own state
    stage = after
  assert selections == 2 + 1


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_bad_value_is_one_line_naming_the_field(tmp_path, value):
  config = _config(2, True)
  # A config's own `adaptive` block (type-checked only by the design's declared setting).
  config.sweep.adaptive = ml_collections.ConfigDict(
      dict(config.sweep.adaptive.to_dict(), per_replicate=value))
  with pytest.raises(ValueError) as err:
    driver.run_sweep(config, str(tmp_path / "w"))
  assert str(err.value) == (f"sweep.adaptive.per_replicate: must be a bool, got {value!r}; "
                            "choices: True, False.")
  assert not (tmp_path / "w").exists()
