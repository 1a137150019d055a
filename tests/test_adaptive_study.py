"""benchmarks/adaptive_study.py: its --quick run, its numbers against the experiment directories."""

import csv
import json
import os

import numpy as np
import pytest

from benchmarks import adaptive_study as study_mod
from jaxopt_lab import expdir
from jaxopt_lab.analysis import plots

STEPS, N = 9, 9  # --quick: 9 steps, the base config's 9 learning rates


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("study"))
  designs = ["grid", "random", "successive_halving", "hyperband", "pbt", "optuna",
             "successive_halving_cooldown", "successive_halving_extrapolated"]
  return out, study_mod.run_study(out, designs, seeds=1, quick=True)


def _summary(workdir):
  with open(os.path.join(workdir, expdir.SUMMARY_FILE), newline="") as f:
    return list(csv.DictReader(f))


def _run_compute(workdir):
  with open(os.path.join(workdir, expdir.RUN_FILE)) as f:
    return sum(g["points_steps"] for g in json.load(f)["groups"])


def test_compute_is_the_hand_computed_sum(study):
  out, s = study
  (grid,), (sh,), (hb,) = s.of("grid"), s.of("successive_halving"), s.of("hyperband")
  assert grid.compute == N * STEPS == _run_compute(os.path.join(out, "grid"))
  # Rungs at 1, 3, 9 steps: 9 points to step 1, 3 on to step 3, 1 on to step 9.
  assert sh.compute == 9 * 1 + 3 * (3 - 1) + 1 * (9 - 3) == 21
  assert sh.compute == _run_compute(os.path.join(out, "successive_halving"))
  # Hyperband's two most exploratory brackets (--hyperband_brackets 2): (9 points, rungs 1, 3,
  # 9), (5 points, 3, 9); the third, (3 points, 9), is left out.
  assert hb.compute == 21 + (5 * 3 + 1 * 6) == 42
  # The incumbent curve: nothing finished before SH's last rung; its last x is the total.
  assert [x for x, _ in sh.curve] == [9, 15, 21]
  assert not np.isfinite(sh.curve[0][1]) and not np.isfinite(sh.curve[1][1])
  assert [x for x, _ in hb.curve][-1] == 42
  # Random search: the first k of its N draws, k = 1..N, each trained to the full budget.
  (rnd,) = s.of("random")
  assert [x for x, _ in rnd.curve] == [STEPS * k for k in range(1, N + 1)]
  assert rnd.compute == N * STEPS == _run_compute(os.path.join(out, "random-seed0"))
  losses = [float(r["final_valid_loss"]) if r["status"] == "ok" else np.inf
            for r in _summary(os.path.join(out, "random-seed0"))]
  assert [v for _, v in rnd.curve] == list(np.minimum.accumulate(losses))
  # PBT: 6 members, all to the full budget; an incumbent only after the last interval.
  (pbt,) = s.of("pbt")
  assert pbt.compute == 6 * STEPS == _run_compute(os.path.join(out, "pbt-seed0"))
  assert all(not np.isfinite(v) for _, v in pbt.curve[:-1]) and pbt.curve[-1][0] == 6 * STEPS
  ok = [r for r in _summary(os.path.join(out, "pbt-seed0")) if r["status"] == "ok"]
  assert pbt.finished == len(ok) and pbt.best_loss == pbt.curve[-1][1]
  assert pbt.best_loss == min(float(r["final_valid_loss"]) for r in ok)
  # Optuna: 3 rounds of 3 trials, each trained to the full budget; an incumbent every round.
  if "optuna" in s.skipped:  # an optional extra: skipped with the reason
    assert "Optuna is not installed" in s.skipped["optuna"]
  else:
    (opt,) = s.of("optuna")
    assert opt.compute == 3 * 3 * STEPS == _run_compute(os.path.join(out, "optuna-seed0"))
    assert [x for x, _ in opt.curve] == [27, 54, 81]


def test_best_losses_match_summary_csv(study):
  out, s = study
  (grid,), (sh,) = s.of("grid"), s.of("successive_halving")
  rows = _summary(os.path.join(out, "grid"))
  ok = [r for r in rows if r["status"] == "ok" and int(r["steps"]) == STEPS]
  best = min(ok, key=lambda r: float(r["final_valid_loss"]))
  assert grid.best_loss == float(best["final_valid_loss"])
  assert grid.best_lr == float(best["hp_learning_rate"])
  assert grid.curve == [(N * STEPS, grid.best_loss)]
  # SH's one full-budget point; the stopped ones never count, even with a lower loss.
  rows = _summary(os.path.join(out, "successive_halving"))
  (full,) = [r for r in rows if int(r["steps"]) == STEPS]
  assert [r["status"] for r in rows if r is not full] == ["stopped"] * (N - 1)
  assert sh.best_loss == float(full["final_valid_loss"]) == sh.curve[-1][1]
  assert sh.finished == 1
  # Paired with the grid: the survivor trains as the grid's point of the same lr and seed (bit
  # for bit at slice_size=1; here up to the float order of other population widths).
  same = [r for r in _summary(os.path.join(out, "grid"))
          if float(r["hp_learning_rate"]) == float(full["hp_learning_rate"])]
  np.testing.assert_allclose(float(same[0]["final_valid_loss"]), sh.best_loss, rtol=1e-5)


def test_table_states_the_ratio_and_the_verdict(study):
  _, s = study
  columns, rows, lines = study_mod.table(s)
  by = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
  assert by["grid"]["points x steps (a seed)"] == "81" and by["grid"]["x grid"] == "1.000"
  assert by["successive_halving"]["x grid"] == f"{21 / 81:.3f}"
  assert by["hyperband"]["x grid"] == f"{42 / 81:.3f}"
  # Cooldown forks of max(1, round(0.2 x rung)) steps at rungs 1 and 3: 9 x 1 + 3 x 1 more.
  assert by["successive_halving_cooldown"]["x grid"] == f"{(21 + 12) / 81:.3f}"
  assert by["successive_halving_extrapolated"]["x grid"] == f"{21 / 81:.3f}"
  (sh,), (grid,) = s.of("successive_halving"), s.of("grid")
  met = (sh.best_loss <= 1.01 * grid.best_loss and sh.compute <= 81 / 3
         and sh.wall_seconds <= 0.5 * grid.wall_seconds)
  (line,) = [x for x in lines if x.startswith("successive_halving (rank_by last)")]
  assert line.endswith(f"met on {int(met)} of 1 seeds.")
  assert lines[-1].startswith("Selection on the test seeds:")
  # Every rung's ranking against the grid's final one: rho per seed for each rank_by.
  assert {r[0] for r in s.correlations} == {"last", "cooldown", "extrapolated"}


def test_figure_has_a_marker_per_design(study):
  _, s = study
  fig = study_mod.figure(s)
  labels = fig.axes[0].get_legend_handles_labels()[1]
  ran = [d for d in study_mod.DESIGNS if s.of(d)]
  assert [lab for lab in labels if lab.endswith("seed)")] == [f"{d} (1 seed)" for d in ran]
  assert plots.png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_design_is_one_line():
  with pytest.raises(ValueError, match="--designs: unknown design 'asha'; choices: grid"):
    study_mod.run_study("unused", ["grid", "asha"], seeds=1, quick=True)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
  """Successive halving at seeds 0 and 1: one sweep of two replicates, and a sweep per seed."""
  out = str(tmp_path_factory.mktemp("two_seeds"))
  return out, {layout: study_mod.run_study(out, ["grid", "successive_halving"], seeds=2,
                                           quick=True, adaptive_seeds=layout)
               for layout in ("replicates", "separate")}


def test_replicates_split_into_one_search_a_seed(two_seeds):
  out, by = two_seeds
  together, alone = by["replicates"].of("successive_halving"), by["separate"].of(
      "successive_halving")
  assert [t.seed for t in together] == [t.seed for t in alone] == [0, 1]
  # One run: its points x steps split by replicate, each a whole search (9 -> 3 -> 1 points).
  assert _run_compute(os.path.join(out, "successive_halving")) == 2 * 21
  rows = _summary(os.path.join(out, "successive_halving"))
  for t, a in zip(together, alone, strict=True):
    assert t.compute == a.compute == 21 and [x for x, _ in t.curve] == [9, 15, 21]
    # The replicate's one full-budget point is its own, not the other seed's.
    (full,) = [r for r in rows if int(r["steps"]) == STEPS and int(r["replicate"]) == t.seed]
    assert t.finished == 1 and t.best_loss == float(full["final_valid_loss"])
    # Replicate r (seed r) searches as the sweep of seed r alone: the same survivor, its loss up
    # to the float order of another population width (as the grid's point above).
    assert t.best_lr == a.best_lr
    np.testing.assert_allclose(t.best_loss, a.best_loss, rtol=1e-5)
  # Every trace of the one run carries half its wall time, as the grid's replicates do.
  assert together[0].wall_seconds == together[1].wall_seconds
  # The rung-vs-final correlations per seed's search: the same rows in both layouts.
  assert by["replicates"].correlations == by["separate"].correlations
  assert [r[3].count(" ") + 1 for r in by["replicates"].correlations] == [2, 2]  # 2 seeds


@pytest.mark.parametrize("kwargs,message", [
    (dict(adaptive_seeds="both"), "--adaptive_seeds: unknown 'both'; choices: replicates, "
                                  "separate"),
    (dict(hyperband_brackets=-1), r"--hyperband_brackets: must be >= 0 \(0: all\), got -1"),
])
def test_bad_flags_are_one_line(kwargs, message):
  with pytest.raises(ValueError, match=message):
    study_mod.run_study("unused", ["grid"], seeds=1, quick=True, **kwargs)
