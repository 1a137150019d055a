"""What a rung ranks by (`sweep.adaptive.rank_by`): 'last' unchanged, cooldown forks, extrapolation.

The cooldown fork is checked against runs we do not fork: the grid (survivors' rows bit for bit)
and a grid whose schedule is the fork's decay (each fork's valid loss). The extrapolation is
checked against a power law's closed form.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from test_halving import LRS, _config, _csv, _rows

from jaxopt_lab.sweep import driver
from jaxopt_lab.sweep.adaptive import ranking

FRACTION = 0.2  # rungs at 10 and 30: forks of 2 and 6 steps


def _constant(config):
  # A constant learning rate (no warmup): a stable phase, whose cooldown is exactly a WSD run.
  config.optimizer.schedule, config.optimizer.warmup = "constant", 0.0
  return config


def _halving(rank_by: str):
  config = _constant(_config())
  config.sweep.adaptive.rank_by, config.sweep.adaptive.cooldown_fraction = rank_by, FRACTION
  return config


def _decayed_grid(steps: int, decay: int):
  """The grid of the same points with the fork's schedule: constant, then linear to 0 over the
  last `decay` of `steps` steps (what the fork at step `steps - decay` trains)."""
  config = _constant(_config("grid", steps=steps))
  config.optimizer.schedule, config.optimizer.decay_fraction = "wsd", decay / steps
  config.optimizer.end_factor = 0.0
  return config  # chunks end at 10, 20, 30 and `steps`: the halving run's and its fork's


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("rank_by")
  out = {}
  for name, config in [("grid", _constant(_config("grid"))), ("last", _halving("last")),
                       ("default", _constant(_config())), ("cooldown", _halving("cooldown")),
                       ("decayed12", _decayed_grid(12, 2)), ("decayed36", _decayed_grid(36, 6))]:
    out[name] = str(root / name)
    driver.run_sweep(config, out[name])
  return out


def _points_steps(workdir):
  with open(os.path.join(workdir, "run.json")) as f:
    (group,) = json.load(f)["groups"]
  return group["points_steps"]


def test_last_is_the_default_bit_for_bit(runs):
  for name in ("metrics.jsonl", "summary.csv", "design.csv"):
    with open(os.path.join(runs["last"], name)) as a, open(os.path.join(runs["default"],
                                                                        name)) as b:
      assert a.read() == b.read(), name
  stages = _csv(os.path.join(runs["last"], "stages.csv"))
  assert {r["kind"] for r in stages} == {"stage"}
  # Ranked rungs (10, 30) record 'last' and the mean-ranked value: the valid loss at the rung.
  rows = _rows(runs["last"])
  for r in stages:
    if r["end"] in ("10", "30"):
      assert r["ranked_by"] == "last"
      assert float(r["score"]) == rows[(int(r["point"]), int(r["end"]), "valid")]["loss"]
    else:
      assert r["ranked_by"] == r["score"] == ""


def test_the_fork_leaves_the_survivors_bit_identical_to_the_grid(runs):
  grid_rows, rows = _rows(runs["grid"]), _rows(runs["cooldown"])
  # Every row the cooldown design wrote (its training, not its forks: those are in stages.csv)
  # is the grid's row of the same point and step, bit for bit: forking changed no state.
  assert rows and all(grid_rows[k] == row for k, row in rows.items())
  assert max(s for _, s, _ in rows) == 90


def test_each_fork_is_the_run_with_the_decayed_schedule(runs):
  stages = _csv(os.path.join(runs["cooldown"], "stages.csv"))
  forks = [r for r in stages if r["kind"] == "cooldown"]
  assert {(r["begin"], r["end"]) for r in forks} == {("10", "12"), ("30", "36")}
  for r in forks:
    decayed = _rows(runs[f"decayed{r['end']}"])
    # The fork's learning rate is the decayed run's (`with_cooldown` is the same WSD expression
    # at the same float32 peak and steps), the batches are those of the same steps, and both run
    # the same per-point ops (slices of one point) in chunks of the same lengths. One rounding
    # may differ: the decayed run divides by its decay length as a compile-time constant, which
    # XLA may turn into a product with its reciprocal, exact only for a power of two; the fork's
    # length is traced (a true division). So: bit for bit for the 2-step forks; for the 6-step
    # ones each decayed step's learning rate may differ by 2 ulps (2^-23 relative), which moves
    # the loss of this convex problem by about as much per step: 2 d 2^-24 relative (1 ulp seen).
    d = int(r["end"]) - int(r["begin"])
    want = decayed[(int(r["point"]), int(r["end"]), "valid")]["loss"]
    if d & (d - 1) == 0:
      assert float(r["score"]) == want
    else:
      assert float(r["score"]) == pytest.approx(want, rel=2 * d * 2.0**-24, abs=0)


def test_the_rungs_keep_the_best_forks_and_count_their_steps(runs):
  stages = _csv(os.path.join(runs["cooldown"], "stages.csv"))
  forks = {(int(r["stage"]), int(r["point"])): float(r["score"]) for r in stages
           if r["kind"] == "cooldown"}
  alive = list(range(len(LRS)))  # value point v = points 2v, 2v + 1
  for stage in (0, 1):
    means = [np.mean([forks[(stage, 2 * v + r)] for r in (0, 1)]) for v in alive]
    alive = [alive[i] for i in np.argsort(means, kind="stable")[: max(1, len(alive) // 3)]]
    trained = {int(r["point"]) for r in stages if r["stage"] == str(stage + 1)
               and r["kind"] == "stage"}
    assert trained == {2 * v + r for v in alive for r in (0, 1)}
    ranked = [r for r in stages if r["stage"] == str(stage) and r["kind"] == "stage"]
    assert all(float(r["score"]) == forks[(stage, int(r["point"]))] for r in ranked)
  # 18 x 10 + 6 x 20 + 2 x 60 points x steps of training, and forks of 18 x 2 and 6 x 6.
  assert _points_steps(runs["cooldown"]) == 420 + 36 + 36
  assert sum(int(r["end"]) - int(r["begin"]) for r in stages) == 492
  summary = {int(r["point"]): r for r in _csv(os.path.join(runs["cooldown"], "summary.csv"))}
  assert {summary[2 * v]["stages"] for v in alive} == {"3"}  # a fork is no stage


def test_extrapolation_recovers_a_power_law_at_the_horizon():
  # L(t) = c + a t^-alpha sampled exactly at 4 steps: the log residuals vanish at the true
  # parameters, so least squares returns them to the solver's tolerance (xtol 1e-14 relative);
  # the prediction's relative error at t = 90 is far below 1e-9.
  c, a, alpha = 0.7, 3.0, 0.6
  steps = np.array([10.0, 20.0, 30.0, 40.0])
  fit = ranking.fit_power_law(steps, c + a * steps**-alpha)
  assert isinstance(fit, ranking.PowerLaw)
  assert fit(90.0) == pytest.approx(c + a * 90.0**-alpha, rel=1e-9)
  assert ranking.fit_power_law([10.0, 20.0], [1.0, 0.9]) == (
      "2 valid evaluations after step 0 (the fit needs 3)")


def test_extrapolated_rungs_fall_back_with_a_reason(tmp_path):
  workdir = str(tmp_path / "x")
  driver.run_sweep(_halving("extrapolated"), workdir)
  stages = _csv(os.path.join(workdir, "stages.csv"))
  rows = _rows(workdir)
  by_end = {}
  for r in stages:
    by_end.setdefault(r["end"], set()).add(r["ranked_by"])
  # evaluations every 10 steps: 1 by step 10 (no fit), 3 by step 30 (a fit unless diverged)
  assert "last (1 valid evaluations after step 0 (the fit needs 3))" in by_end["10"]
  assert by_end["10"] <= {"last (1 valid evaluations after step 0 (the fit needs 3))",
                          "last (diverged)"}
  for r in stages:
    if r["end"] == "30" and r["ranked_by"] == "extrapolated":
      curve = [(s, rows[(int(r["point"]), s, "valid")]["loss"]) for s in (10, 20, 30)]
      fit = ranking.fit_power_law(*zip(*curve, strict=True))
      assert float(r["score"]) == pytest.approx(fit(90), rel=1e-6)
  assert "extrapolated" in by_end["30"]


def test_fit_evals_evaluate_only_the_ranking_stages_densely(tmp_path):
  """`fit_evals` 5 in chunks of 2: the stage to rung 10 evaluates every 2 steps (10 / 5), the one
  from 10 to 30 every 4 (20 / 5), so rung 10 fits 5 evaluations (at the run's interval of 10 it
  falls back, above) and rung 30 eleven (5 + 6: 12, 16, ..., 28 and the rung); the last stage
  (30 to 90) evaluates at the run's `eval_every` (30 here); each score is the fit's closed form
  at the horizon."""
  config = _halving("extrapolated")
  config.train.update(dict(steps_per_call=2, log_every=10, eval_every=30))
  config.sweep.adaptive.fit_evals = 5
  workdir = str(tmp_path / "x")
  driver.run_sweep(config, workdir)
  rows = _rows(workdir)
  valid = {}
  for point, step, split in rows:
    if split == "valid":
      valid.setdefault(point, set()).add(step)
  stages = _csv(os.path.join(workdir, "stages.csv"))
  reached = {int(r["point"]): int(r["end"]) for r in stages}  # stages.csv rows are in order

  def dense(end):
    return set(range(0, 11, 2)) | (set(range(12, 29, 4)) | {30} if end >= 30 else set())

  for point, end in reached.items():
    assert valid[point] == dense(end) | ({60, 90} if end == 90 else set()), point
  ranked = [r for r in stages if r["ranked_by"] == "extrapolated"]
  assert {r["end"] for r in ranked} == {"10", "30"}
  for r in ranked:
    end = int(r["end"])
    curve = [(s, rows[(int(r["point"]), s, "valid")]["loss"]) for s in sorted(dense(end)) if s]
    assert float(r["score"]) == pytest.approx(
        ranking.fit_power_law(*zip(*curve, strict=True))(90), rel=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("rank_by", "best", "sweep.adaptive.rank_by: unknown rank_by 'best'; choices: last, "
     "cooldown, extrapolated."),
    ("cooldown_fraction", 0.0, r"sweep.adaptive.cooldown_fraction: must be a number in \(0, 1\]"),
])
def test_bad_rank_by_is_one_line(tmp_path, field, value, message):
  for design_name in ("successive_halving", "hyperband"):
    config = _config(design_name)
    if design_name == "hyperband":
      config.sweep.adaptive.initial = "random"
    config.sweep.adaptive[field] = value
    with pytest.raises(ValueError, match=message) as err:
      driver.run_sweep(config, str(tmp_path / "w"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


def test_stage_rows_of_an_old_file_read_without_ranking_columns(tmp_path):
  from jaxopt_lab.analysis import adaptive  # noqa: PLC0415

  path = tmp_path / "stages.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["stage", "begin", "end", "group", "point", "source", "note", "hp_lr"])
    w.writerow([0, 0, 10, "g", 0, -1, "rung", 0.1])
  stages = adaptive.read_stages(tmp_path)
  assert stages.kind.tolist() == ["stage"]
