"""The verdict: one statistic for choosing, Holm over all pairs, honest sentences, the console.

Expected values are recomputed here from summary.csv with the csv module and SciPy.
"""

import csv
import math
import os
import subprocess
import sys

import fixtures_expdir as fx
import numpy as np
from scipy import stats as sp_stats

from jaxopt_lab.analysis import findings, report, results, verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(workdir, name):
  with open(os.path.join(workdir, "report", name), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _scored(workdir):
  """(optimizer, lr) -> [replicate] of (capped valid, capped test) from summary.csv."""
  out = {}
  with open(os.path.join(workdir, "summary.csv"), newline="", encoding="utf-8") as f:
    for r in sorted(csv.DictReader(f), key=lambda r: int(r["replicate"])):
      pair = ((fx.INIT_LOSS, fx.INIT_LOSS) if r["status"] == "diverged" else
              (min(float(r["final_valid_loss"]), fx.INIT_LOSS),
               min(float(r["final_test_loss"]), fx.INIT_LOSS)))
      out.setdefault((r["optimizer"], float(r["learning_rate"])), []).append(pair)
  return {k: np.array(v) for k, v in out.items()}


def _power_seeds(d, alpha):
  """Fewest n with noncentral-t power >= 0.8, by a plain upward scan."""
  n = 2
  while True:
    crit = sp_stats.t.ppf(1 - alpha / 2, n - 1)
    nc = abs(d) * math.sqrt(n)
    if sp_stats.nct.sf(crit, n - 1, nc) + sp_stats.nct.cdf(-crit, n - 1, nc) >= 0.8:
      return n
    n += 1


def test_three_seeds_not_distinguishable_and_seeds_needed(tmp_path):
  # Three optimizers 0.05 to 0.1 apart with seed noise 0.04: not resolved by 3 seeds.
  fx.write_expdir(tmp_path, optimizers=("adam", "sgd", "rmsprop"), noise=0.04, seed=3)
  written = report.write(tmp_path, num_resamples=100)
  scored = _scored(tmp_path)
  best = {}
  for opt in ("adam", "sgd", "rmsprop"):
    lrs = [lr for o, lr in scored if o == opt]
    best[opt] = min(lrs, key=lambda lr: scored[opt, lr][:, 0].mean())
  order = sorted(best, key=lambda o: scored[o, best[o]][:, 0].mean())  # by validation
  comp = _rows(tmp_path, "comparison.csv")
  assert [r["label"] for r in comp] == order
  tests = {o: scored[o, best[o]][:, 1] for o in order}
  raw = [sp_stats.ttest_rel(tests[a], tests[b]).pvalue
         for i, a in enumerate(order) for b in order[i + 1:]]
  pairs = _rows(tmp_path, "pairs.csv")
  assert [(p["a"], p["b"]) for p in pairs] == [(a, b) for i, a in enumerate(order)
                                               for b in order[i + 1:]]
  m = len(raw)
  order_p = np.argsort(raw)  # Holm by hand: sorted p times (m - i), then a running maximum
  holm = np.empty(m)
  holm[order_p] = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * np.sort(raw)))
  for p, expected in zip(pairs, holm, strict=True):
    assert p["p_holm"] == report.fmt_p(expected)
  lines = written.console_lines()
  assert lines[0].startswith(f"Best by validation: {order[0]} at lr ")
  for other, line in zip(order[1:], lines[1:3], strict=True):
    d = tests[other] - tests[order[0]]
    p_holm = float(next(p["p_holm"] for p in pairs if {p["a"], p["b"]} == {order[0], other}))
    if p_holm >= 0.05:
      need = max(_power_seeds(d.mean() / d.std(ddof=1), 0.05 / m), 4)
      assert line == (f"{order[0]} and {other} are not distinguishable with 3 seeds; about "
                      f"{need} seeds would resolve a difference of this size (power 0.8).")
    else:
      assert " beats " in line
  assert any("not distinguishable with 3 seeds" in line for line in lines)
  assert lines[-1] == f"Report: {written.html}" and os.path.isfile(written.html)
  md = open(written.markdown, encoding="utf-8").read()
  for line in lines[:-1]:
    assert line in md  # the console says what the report says


def test_clear_difference_is_called_and_test_does_not_choose(tmp_path):
  # adam 0.15 better than sgd with tiny noise over 5 seeds: "adam beats sgd". Then sgd's test
  # metric is made the best: the ranking (by validation) must not move.
  fx.write_expdir(tmp_path, optimizers=("adam", "sgd"), replicates=5, noise=0.002)
  v = verdict.verdict(findings.analyse(results.load_experiment(tmp_path), num_resamples=50))
  assert v.sentences[0].startswith("adam beats sgd: test loss lower by ")
  path = os.path.join(tmp_path, "summary.csv")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
    columns = list(rows[0])
  for r in rows:
    if r["optimizer"] == "sgd" and r["status"] == "ok":
      r["final_test_loss"] = str(float(r["final_test_loss"]) - 0.5)
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, columns)
    w.writeheader()
    w.writerows(rows)
  written = report.write(tmp_path, num_resamples=50)
  comp = _rows(tmp_path, "comparison.csv")
  assert [r["label"] for r in comp] == ["adam", "sgd"]  # still ranked by validation
  assert written.verdict.sentences[0].startswith("sgd beats adam: test loss lower by ")


def test_one_statistic_mean_not_median(tmp_path):
  # Noisy seeds: the lr with the best mean and the one with the best median differ here, and
  # the console, the comparison, the sensitivity table and the curves all use the mean.
  fx.write_expdir(tmp_path, optimizers=("adam",), lrs=tuple(np.logspace(-3.5, -1.5, 9)),
                  noise=0.05, seed=6)
  scored = _scored(tmp_path)
  lrs = sorted(lr for _, lr in scored)
  by_mean = min(lrs, key=lambda lr: scored["adam", lr][:, 0].mean())
  by_median = min(lrs, key=lambda lr: np.median(scored["adam", lr][:, 0]))
  assert by_mean != by_median  # the fixture discriminates
  written = report.write(tmp_path, num_resamples=50)
  assert float(_rows(tmp_path, "comparison.csv")[0]["learning_rate"]) == float(f"{by_mean:.3g}")
  assert float(_rows(tmp_path, "sensitivity.csv")[0]["best_lr"]) == float(f"{by_mean:.3g}")
  assert f"lr {by_mean:.3g}" in written.verdict.headline
  assert written.verdict.headline.startswith("Best configuration of adam")  # one group
  md = open(written.markdown, encoding="utf-8").read()
  assert "One group: adam at its best configuration" in md and "| rank |" not in md


def test_lr_sensitivity_is_per_seed_then_averaged(tmp_path):
  # Noisy seeds whose best lr differs: averaging the curves over seeds first gives another value.
  fx.write_expdir(tmp_path, optimizers=("adam",), lrs=tuple(np.logspace(-3.5, -1.5, 9)),
                  noise=0.05, seed=4)
  scored = _scored(tmp_path)
  values = np.array([scored["adam", lr][:, 0] for lr in sorted(lr for _, lr in scored)])
  per_seed = np.mean([np.mean(values[:, r] - values[:, r].min()) for r in range(3)])
  pooled = np.mean(values.mean(axis=1) - values.mean(axis=1).min())
  assert abs(per_seed - pooled) > 1e-3  # the fixture discriminates
  report.write(tmp_path, num_resamples=50)
  row = _rows(tmp_path, "sensitivity.csv")[0]
  np.testing.assert_allclose(float(row["lr_sensitivity"]), per_seed, rtol=1e-4)


def test_scripts_print_the_verdict_and_the_report_path(tmp_path):
  fx.write_expdir(tmp_path / "a", optimizers=("adam", "sgd"))
  run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "report.py"),
                        f"--workdir={tmp_path / 'a'}", "--num_resamples=50"],
                       capture_output=True, text=True, cwd=REPO, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr
  lines = [line.split("] ", 1)[-1] for line in run.stderr.strip().splitlines()]
  html = os.path.join(str(tmp_path / "a"), "report", "report.html")
  assert lines[-1] == f"Report: {html}"
  assert lines[-3].startswith("Best by validation: adam at lr ")
  assert lines[-2].startswith("adam beats sgd: ") or "not distinguishable" in lines[-2]


def test_sweep_script_ends_with_the_verdict_and_the_report(tmp_path):
  # The README's main job, shrunk: 2 optimizers x 3 learning rates x 2 seeds, 20 steps.
  config = tmp_path / "small.py"
  config.write_text(
      "import runpy\n"
      "def get_config():\n"
      f"  c = runpy.run_path({os.path.join(REPO, 'experiments', 'sweep_classic_lr.py')!r})"
      "['get_config']()\n"
      "  c.train.steps, c.train.steps_per_call, c.train.eval_every = 20, 10, 10\n"
      "  c.train.checkpoint_every = 20\n"
      "  c.sweep.factors.optimizer['values'] = ['sgd', 'adam']\n"
      "  c.sweep.factors.learning_rate.num = 3\n"
      "  c.sweep.replicates = 2\n"
      "  return c\n", encoding="utf-8")
  workdir = tmp_path / "w"
  run = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), f"--config={config}",
       f"--workdir={workdir}", "--cpu_devices=1"],
      capture_output=True, text=True, cwd=REPO, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr[-3000:]
  lines = [line.split("] ", 1)[-1] for line in run.stderr.strip().splitlines()]
  assert lines[-1] == f"Report: {workdir / 'report' / 'report.html'}"
  assert lines[-3].startswith("Best by validation: ")
  assert " beats " in lines[-2] or "not distinguishable with 2 seeds" in lines[-2]
  md = (workdir / "report" / "report.md").read_text(encoding="utf-8")
  assert lines[-3] in md and lines[-2] in md
