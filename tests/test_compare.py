"""Several experiments in one comparison: performance profiles and steps/time to target.

Profiles are checked by hand and against a direct loop over the definition; steps to target
against curves recomputed here from metrics.jsonl and summary.csv.
"""

import csv
import json
import math
import os
import subprocess
import sys

import fixtures_expdir as fx
import numpy as np
import pytest

from jaxopt_lab.analysis import compare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_performance_profile_hand_worked():
  inf = math.inf
  # Task 1: ratios 1, 2, failed; task 2: ratios 1, 1, 2.
  rho = compare.performance_profile([[1.0, 2.0, inf], [3.0, 3.0, 6.0]], [1.0, 1.5, 2.0, 100.0])
  np.testing.assert_allclose(rho, [[1, 1, 1, 1], [0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]])
  # A task every solver failed counts as failed by all.
  np.testing.assert_allclose(compare.performance_profile([[inf, inf], [1.0, 2.0]], [2.0]),
                             [[0.5], [0.5]])
  with pytest.raises(ValueError, match="positive"):
    compare.performance_profile([[0.0, 1.0]], [1.0])


def test_performance_profile_matches_definition():
  rng = np.random.default_rng(0)
  m = rng.uniform(1, 10, size=(7, 4))
  m[rng.uniform(size=m.shape) < 0.2] = math.inf
  taus = np.geomspace(1, 20, 15)
  rho = compare.performance_profile(m, taus)
  for s in range(4):
    for j, tau in enumerate(taus):
      count = 0
      for t in range(7):
        best = min(m[t])
        count += math.isfinite(m[t, s]) and m[t, s] / best <= tau
      assert rho[s, j] == count / 7


def _best_curve(workdir, opt):
  """Mean valid curve (step -> loss) of the optimizer's best lr, from the raw files."""
  with open(os.path.join(workdir, "summary.csv"), newline="", encoding="utf-8") as f:
    rows = [r for r in csv.DictReader(f) if r["optimizer"] == opt]
  by_lr = {}
  for r in rows:
    score = fx.INIT_LOSS if r["status"] == "diverged" else min(float(r["final_valid_loss"]),
                                                               fx.INIT_LOSS)
    by_lr.setdefault(float(r["learning_rate"]), []).append((int(r["point"]), score))
  lr = min(by_lr, key=lambda k: np.mean([s for _, s in by_lr[k]]))
  points = {p for p, _ in by_lr[lr]}
  curve = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if row["point"] in points and row["split"] == "valid":
        curve.setdefault(row["step"], []).append(row["loss"])
  final = np.mean([s for _, s in by_lr[lr]])
  return {s: np.mean(v) for s, v in sorted(curve.items())}, final


def _interpolated(curve, target):
  """The step where the curve (step -> value) crosses `target`, linear between evaluations."""
  steps, values = list(curve), list(curve.values())
  for i, v in enumerate(values):
    if v <= target + 1e-12:
      if i == 0:
        return steps[0]
      v0 = values[i - 1]
      return steps[i - 1] + (target - v0) / (v - v0) * (steps[i] - steps[i - 1])
  return math.inf


def test_interpolated_steps_hand_worked():
  # 1.0 at step 10, 0.5 at step 20: the target 0.8 is crossed 40% of the way, at step 14.
  assert compare.steps_to_target([0, 10, 20], [2.0, 1.0, 0.5], 0.8, "min") == 14.0
  assert math.isclose(compare.steps_to_target([0, 10], [0.1, 0.5], 0.3, "max"), 5.0)
  assert compare.steps_to_target([0, 10], [2.0, 1.0], 0.5, "min") == math.inf
  assert compare.steps_to_target([0, 10], [0.4, 0.3], 0.5, "min") == 0.0


def test_steps_and_time_to_target_of_two_tasks(tmp_path):
  a, b = tmp_path / "task_a", tmp_path / "task_b"
  fx.write_expdir(a, optimizers=("adam", "sgd"), eval_every=10, seed=1)
  fx.write_expdir(b, optimizers=("adam", "sgd", "rmsprop"), eval_every=10, seed=2)
  c = compare.compare([str(a), str(b)])
  assert [t.name for t in c.tasks] == ["task_a", "task_b"]
  assert c.labels == ["adam", "sgd", "rmsprop"]
  for t, workdir, opts in ((c.tasks[0], a, ("adam", "sgd")),
                           (c.tasks[1], b, ("adam", "sgd", "rmsprop"))):
    curves = {o: _best_curve(workdir, o) for o in opts}
    best = min(final for _, final in curves.values())
    # 90% of the way from the initial loss (the cap) to the best group's final valid loss.
    target = fx.INIT_LOSS + 0.9 * (best - fx.INIT_LOSS)
    assert math.isclose(t.target, target, rel_tol=1e-9)
    assert t.resolution == 10
    with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
      rates = {g["group"]: g["points_steps_per_second"] for g in json.load(f)["groups"]}
    for o in opts:
      curve, _ = curves[o]
      expected = _interpolated(curve, target)
      assert math.isclose(t.steps[o], expected, rel_tol=1e-9), (t.name, o)
      assert math.isclose(t.seconds[o], expected / rates[f"optimizer={o}"])
    assert "rmsprop" not in t.steps or t.name == "task_b"
  # The target does not decide the answer: every group reaches it here, sgd included.
  assert all(math.isfinite(s) for t in c.tasks for s in t.steps.values())
  assert c.tasks[0].steps["adam"] < c.tasks[0].steps["sgd"]


def test_report_script_compares_several_workdirs_writing_only_to_out(tmp_path):
  fx.write_expdir(tmp_path / "a", optimizers=("adam", "sgd"))
  fx.write_expdir(tmp_path / "b", optimizers=("adam", "sgd"), seed=5)
  run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "report.py"),
                        f"--workdir={tmp_path / 'a'}", "--num_resamples=50"],
                       capture_output=True, text=True, cwd=REPO, timeout=180,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr
  before = {n: sorted(os.listdir(tmp_path / n)) for n in ("a", "b")}
  page_a = (tmp_path / "a" / "report" / "report.html").read_bytes()
  run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "report.py"),
                        f"--workdir={tmp_path / 'a'}", f"--workdir={tmp_path / 'b'}",
                        "--num_resamples=50"], capture_output=True, text=True, cwd=REPO,
                       timeout=180, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr
  out = tmp_path / "comparison"
  assert f"Comparison: {out / 'comparison.html'}" in run.stderr
  for name in ("comparison.md", "comparison.html", "profiles.png", "to_target.csv"):
    assert (out / name).is_file(), name
  # The experiment directories are only read.
  assert {n: sorted(os.listdir(tmp_path / n)) for n in ("a", "b")} == before
  assert (tmp_path / "a" / "report" / "report.html").read_bytes() == page_a
  md = (out / "comparison.md").read_text(encoding="utf-8")
  assert "## Verdict" in md and "## Per task" in md and "### Steps to target" in md
  assert "adam beats sgd on every one of the 2 tasks" in md or "no overall winner" in md
  assert "[a](../a/report/report.html)" in md  # a's report is linked
  assert "no report yet" in md  # b has none
  assert "indicative" in md and "evaluation interval" in md
  rows = [line for line in md.splitlines() if line.startswith("| a | adam |")]
  assert rows and "[" in rows[0]  # the per-task table has intervals
  with pytest.raises(ValueError, match="--workdir: a comparison needs at least 2 experiments"):
    compare.compare([str(tmp_path / "a")])
