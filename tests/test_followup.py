"""`--continue_from`: the next experiment designed from a finished one (`analysis.followup`).

The fixture experiments (`fixtures_expdir`) have a known truth: a group's mean validation loss is
BASE[opt] + CURVATURE * (log10 lr - LOG10_BEST_LR[opt])**2 plus the replicates' shared offsets,
so the basin and the design the rules give can be worked out by hand.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import fixtures_expdir as fx
import ml_collections
import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps
from small_configs import classic_sweep_config
from workdir_faults import snapshot

from jaxopt_lab import expdir, files
from jaxopt_lab.analysis import followup, looks, report, stats
from jaxopt_lab.sweep import driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LRS = tuple(np.logspace(-4, -1, 7))  # the fixture's grid: half a decade apart


def _with_factors(workdir, factors: dict, **sweep_fields) -> None:
  """Declares real factors (and other sweep fields) in the fixture's config.json."""
  path = os.path.join(workdir, expdir.CONFIG_FILE)
  with open(path) as f:
    config = json.load(f)
  config["sweep"]["factors"] = factors
  config["sweep"].update(sweep_fields)
  files.atomic_write_json(path, config)


def _lr_range(low=1e-4, high=0.1, num=7) -> dict:
  return {"scale": "log", "low": low, "high": high, "num": num}


def test_the_lr_range_narrows_to_the_basin_one_step_out(tmp_path):
  fx.write_expdir(tmp_path / "a", optimizers=("adam",))
  _with_factors(tmp_path / "a", {"optimizer": {"values": ["adam"]},
                                 "learning_rate": _lr_range()})
  # adam's mean valid loss is about 0.30 at its best swept lr 10^-2.5, the initial loss ln 10:
  # the 5% basin is where 0.3 (x + 2.5)^2 <= 0.05 (ln 10 - 0.30), half a width of 0.578
  # decades, so it holds 10^-3, 10^-2.5 and 10^-2; one swept step out on each side gives
  # [10^-3.5, 10^-1.5], rounded outwards to 2 significant digits [0.00031, 0.032]; the noise
  # (0.01) is small next to the curve, so the 7 levels are kept.
  p = followup.propose(str(tmp_path / "a"))
  assert [c.field for c in p.changes] == ["sweep.factors.learning_rate", "sweep.seed"]
  new = p.config.sweep.factors.learning_rate.to_dict()
  assert new["scale"] == "log" and new["num"] == 7
  assert new["low"] == pytest.approx(0.00031, rel=1e-12)
  assert new["high"] == pytest.approx(0.032, rel=1e-12)
  assert p.config.sweep.seed == 3  # fresh seeds: the source ran 0, 1, 2
  assert p.record()["look"] == 2 and p.record()["alpha"] == pytest.approx(0.008)
  assert p.changes[0].old == _lr_range()
  assert "adam: best lr 0.00316" in p.changes[0].reason
  # One group: no verdict pair, so the number of seeds stays; the design and the source are
  # recorded.
  assert p.config.sweep.replicates == 3 and p.config.sweep.design == "grid"
  assert p.config.sweep.continue_from == str(tmp_path / "a")
  assert p.record()["changes"][0]["new"] == new

  # A base config that lists the learning rates keeps the form: as many values over the range.
  base = classic_sweep_config(learning_rates=LRS, optimizers=("adam",), replicates=3)
  p = followup.propose(str(tmp_path / "a"), base)
  np.testing.assert_allclose(p.config.sweep.factors.learning_rate["values"],
                             np.geomspace(0.00031, 0.032, 7), rtol=1e-12)
  assert base.sweep.factors.learning_rate["values"] == list(LRS)  # the base is not changed
  assert [c.field for c in p.changes] == ["sweep.factors.learning_rate", "sweep.seed"]
  # A base whose design differs gets the source's back.
  base.sweep.design = "sobol"
  p = followup.propose(str(tmp_path / "a"), base)
  assert [(c.field, c.old, c.new) for c in p.changes][0] == ("sweep.design", "sobol", "grid")


def test_groups_share_the_hull_of_their_ranges_and_failed_groups_are_named(tmp_path):
  fx.write_expdir(tmp_path / "a")  # adam and sgd; sgd diverges at 0.1
  _with_factors(tmp_path / "a", {"optimizer": {"values": ["adam", "sgd"]},
                                 "learning_rate": _lr_range()})
  # adam: [0.00031, 0.032] as above. sgd: best at 10^-1.5, basin 10^-2..10^-1.5 (10^-1
  # diverged, at the cap): one step out is [10^-2.5, 10^-1], but 10^-1 diverged, so the range
  # stops at the last lr below it, 10^-1.5. Both groups run the same lrs: the hull. The
  # verdict tells adam from sgd (p < 0.04): the number of seeds stays.
  p = followup.propose(str(tmp_path / "a"))
  assert [c.field for c in p.changes] == ["sweep.factors.learning_rate", "sweep.seed"]
  new = p.config.sweep.factors.learning_rate
  assert (new.low, new.high, new.num) == (pytest.approx(0.00031, rel=1e-12),
                                          pytest.approx(0.032, rel=1e-12), 7)
  assert "sgd: best lr 0.0316" in p.changes[0].reason
  assert "none at or above its first diverged lr 0.1" in p.changes[0].reason

  fx.write_expdir(tmp_path / "b", diverge=tuple(("sgd", lr) for lr in LRS))
  _with_factors(tmp_path / "b", {"optimizer": {"values": ["adam", "sgd"]},
                                 "learning_rate": _lr_range()})
  p = followup.propose(str(tmp_path / "b"))
  new = p.config.sweep.factors.learning_rate
  assert (new.low, new.high) == (pytest.approx(0.00031, rel=1e-12),
                                 pytest.approx(0.032, rel=1e-12))
  assert any(n.startswith("sgd diverged at every learning rate") for n in p.notes), p.notes


def test_an_adaptive_source_is_confirmed_at_the_full_budget(tmp_path):
  # Successive halving kept one lr to the full budget (the others "stopped"): the follow-up is
  # an explicit design of that survivor, on fresh seeds, not a narrowed range around it.
  fx.write_expdir(tmp_path / "a", optimizers=("adam",))
  _with_factors(tmp_path / "a", {"learning_rate": _lr_range()}, design="successive_halving",
                adaptive={"eta": 3, "initial": "grid"})
  path = tmp_path / "a" / expdir.SUMMARY_FILE
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    if abs(math.log10(float(r["learning_rate"])) + 2.5) > 1e-6:
      r["status"] = "stopped"
  files.atomic_write_csv(str(path), rows, list(rows[0]))
  p = followup.propose(str(tmp_path / "a"))
  assert p.config.sweep.design == "explicit"
  assert p.config.sweep.points == [{"learning_rate": pytest.approx(10**-2.5)}]
  assert p.config.sweep.factors.learning_rate.to_dict() == {}
  assert p.config.sweep.seed == 3
  assert "to the full budget" in p.changes[0].reason


def _seeds_for_power(d, alpha):
  """Fewest n with noncentral-t power >= 0.8, by a plain upward scan (SciPy's nct)."""
  for n in range(2, 100_000):
    t = sps.t.ppf(1 - alpha / 2, n - 1)
    if sps.nct.sf(t, n - 1, d * math.sqrt(n)) + sps.nct.cdf(-t, n - 1, d * math.sqrt(n)) >= 0.8:
      return n
  raise AssertionError("no n")


def _needed_seeds(workdir) -> int:
  """The follow-up's seeds by hand: the lower end of the 80% range of seeds needed at its
  level (0.008, one pair): power seeds at the largest |d| of the noncentral-t interval of d
  (SciPy's root finder), at least 4, at most 4 x 3."""
  with open(os.path.join(workdir, expdir.SUMMARY_FILE)) as f:
    rows = list(csv.DictReader(f))
  test = {o: np.array([float(r["final_test_loss"]) for r in rows if r["optimizer"] == o])
          for o in ("adam", "sgd")}
  diff = test["adam"] - test["sgd"]
  t = diff.mean() / (diff.std(ddof=1) / math.sqrt(3))
  def cdf(nc):  # SciPy's nct is NaN far in a tail, where the cdf is 1 (nc << t) or 0
    value = sps.nct.cdf(t, 2, nc)
    return value if np.isfinite(value) else float(nc < t)

  ends = [optimize.brentq(lambda nc, q=q: cdf(nc) - q, t - 60, t + 60) / math.sqrt(3)
          for q in (0.9, 0.1)]
  return min(max(_seeds_for_power(max(abs(e) for e in ends), 0.008), 4), 12)


@pytest.mark.parametrize("seed", [4, 3, 1])
def test_more_seeds_where_the_verdict_cannot_tell_groups_apart(tmp_path, seed):
  # At lr 10^-1.75 adam and sgd have the same true loss (0.30 + 0.3 * 0.75^2 = 0.45 + 0.3 *
  # 0.25^2): the paired differences are noise only.
  workdir = tmp_path / "a"
  fx.write_expdir(workdir, lrs=(10**-1.75,), diverge=(), noise=0.02, seed=seed)
  _with_factors(workdir, {"optimizer": {"values": ["adam", "sgd"]},
                          "learning_rate": {"values": [10**-1.75]}})
  replicates = _needed_seeds(workdir)
  p = followup.propose(str(workdir))
  assert [c.field for c in p.changes] == ["sweep.replicates", "sweep.seed"]
  assert (p.changes[0].old, p.changes[0].new) == (3, replicates)
  assert p.config.sweep.replicates == replicates
  assert "not distinguishable with 3 seeds" in p.changes[0].reason
  assert any("basin to narrow" in n for n in p.notes)  # one lr swept: nothing to narrow

  # A field set on the command line wins over the proposal, and the notes say so.
  base = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  base.sweep.replicates = 5
  p = followup.propose(str(workdir), base, keep={"sweep.replicates": 5})
  assert [c.field for c in p.changes] == ["sweep.seed"] and p.config.sweep.replicates == 5
  assert any(n.startswith("`sweep.replicates` is set on the command line") for n in p.notes)


def test_two_runs_keep_false_beats_at_five_percent():
  # Under no difference (3 groups, 3 seeds), a first run and, where it could not tell every
  # pair apart, a follow-up of 12 fresh seeds analysed alone at the next look's level: any
  # false "beats" over both runs in at most 5% of chains (20,000 chains: Monte Carlo SE 0.15
  # points). The rule before (the first 3 seeds reused, both runs at 0.05): 6.8-7.2%.
  rng = np.random.default_rng(5)
  chains, m = 20_000, 3

  def beats(x, alpha):  # x: [chains, groups, seeds] -> any pair distinguishable
    p = [sps.ttest_rel(x[:, i], x[:, j], axis=-1).pvalue for i, j in ((0, 1), (0, 2), (1, 2))]
    return (stats.bonferroni(np.stack(p, axis=1), m) < alpha).any(axis=1)

  first = rng.normal(size=(chains, 3, 3))
  second = rng.normal(size=(chains, 3, 12))
  now = beats(first, looks.alpha_at(1))
  now |= beats(second, looks.alpha_at(2))  # the follow-up runs where the first was null
  assert now.mean() <= 0.05, now.mean()
  before = beats(first, 0.05) | beats(np.concatenate([first, second[..., 3:]], -1), 0.05)
  assert before.mean() > 0.05 + 3 * math.sqrt(0.05 * 0.95 / chains), before.mean()


def test_an_unfinished_or_foreign_directory_is_refused(tmp_path):
  fx.write_expdir(tmp_path / "running", run_status="running")
  fx.write_expdir(tmp_path / "points", running_points=(3,))
  (tmp_path / "empty").mkdir()
  single = tmp_path / "single"
  files.atomic_write_json(single / "config.json", {"task": "classic"})
  files.atomic_write_json(single / "summary.json", {"status": "ok"})
  for name, expected in [("nope", "does not exist"),
                         ("empty", "is not an experiment directory (missing config.json"),
                         ("running", "is not a finished experiment (run status 'running'"),
                         ("points", "is not a finished experiment (run status 'complete'; 41 of"),
                         ("single", "is a single run's directory")]:
    with pytest.raises(ValueError, match=r"^--continue_from: ") as e:
      followup.propose(str(tmp_path / name))
    assert expected in str(e.value) and "\n" not in str(e.value)



def test_the_script_refuses_in_one_line_and_leaves_both_workdirs_as_they_were(tmp_path):
  finished, running = str(tmp_path / "finished"), str(tmp_path / "running")
  fx.write_expdir(finished)
  fx.write_expdir(running, run_status="running")
  fx.write_expdir(tmp_path / "other")  # a trained experiment of another config
  sweep = "--config=experiments/sweep_classic_lr.py"
  cases = [  # (args, workdir, the last line's start)
      ([f"--continue_from={tmp_path / 'nope'}"], "new1", "error: --continue_from: "),
      ([f"--continue_from={running}"], "new2", "error: --continue_from: "),
      ([f"--continue_from={tmp_path}"], "new3", "error: --continue_from: "),
      ([f"--continue_from={finished}"], "finished", "error: --workdir: "),
      ([sweep, f"--continue_from={finished}"], "other", "error: --workdir: "),
      # the driver refuses the config: the record written for the run is taken back
      ([sweep, "--config.sweep.diverge_factor=-1", f"--continue_from={finished}"], "new4",
       "error: sweep.diverge_factor"),
  ]
  before = {name: snapshot(tmp_path / name) for name in ("finished", "running", "other")}
  with open(tmp_path / "cases.json", "w") as f:
    json.dump([{"script": "sweep.py", "args": [*args, f"--workdir={tmp_path / w}"]}
               for args, w, _ in cases], f)
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "script_forks.py"),
                  str(tmp_path / "cases.json"), str(tmp_path / "results.json")],
                 check=True, timeout=600, cwd=ROOT)
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for (args, workdir, start), result in zip(cases, results, strict=True):
    output = result["output"]
    assert result["returncode"] == 1 and "Traceback" not in output, output[-2000:]
    assert output.strip().splitlines()[-1].startswith(start), (args, output[-1000:])
    if workdir.startswith("new"):
      assert not (tmp_path / workdir).exists(), workdir
  assert {name: snapshot(tmp_path / name) for name in before} == before


def test_a_follow_up_runs_end_to_end_from_the_script(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  config = classic_sweep_config(learning_rates=(0.01, 0.1, 1.0, 10.0), optimizers=("sgd",),
                                replicates=2, steps=20)
  config.train.update(dict(eval_every=10, checkpoint_every=10))
  driver.run_sweep(config, a)
  expected = followup.propose(a)
  text = open(report.write_report(a, num_resamples=50), encoding="utf-8").read()
  next_section = text[text.index("## Next experiment"):]
  assert (f"`python scripts/sweep.py --continue_from={a} --workdir={a}-next`" in next_section)
  for change in expected.changes:
    assert change.reason in next_section

  result = subprocess.run([sys.executable, "scripts/sweep.py", f"--continue_from={a}",
                           f"--workdir={b}"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  record = followup.read_record(b)
  assert record == json.loads(json.dumps(expected.record()))
  assert record["source"] == a and record["changes"], record
  with open(os.path.join(b, expdir.CONFIG_FILE)) as f:
    ran = json.load(f)
  assert ran["sweep"]["continue_from"] == a
  assert ran == json.loads(json.dumps(expected.config.to_dict()))
  with open(os.path.join(b, expdir.RUN_FILE)) as f:
    assert json.load(f)["status"] == "complete"
  follow = open(report.write_report(b, num_resamples=50), encoding="utf-8").read()
  assert f"This experiment follows from `{a}`" in follow
  assert all(c["reason"] in follow for c in record["changes"])
