"""Tests of the report built from synthetic experiment directories with a known ground truth.

Numbers are checked against values recomputed here straight from summary.csv (with the csv
module and SciPy), not through the analysis code.
"""

import csv
import math
import os
import re
import subprocess
import sys

import fixtures_expdir as fx
import numpy as np
import pytest
from scipy import stats as sp_stats

from jaxopt_lab.analysis import document, findings, report, results

RESAMPLES = 500
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _close(text, value, rel=1e-4):
  return math.isclose(float(text), value, rel_tol=rel, abs_tol=1e-12)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
  """Two optimizers x 7 learning rates x 3 seeds; sgd diverges at lr 0.1."""
  workdir = tmp_path_factory.mktemp("grid")
  truth = fx.write_expdir(workdir)
  path = report.write_report(workdir, num_resamples=RESAMPLES)
  with open(path, encoding="utf-8") as f:
    md = f.read()
  return truth, str(workdir), path, md


def _summary_by_config(workdir):
  """(optimizer, lr) -> list of summary rows over replicates, from the raw CSV."""
  out = {}
  for row in _read_csv(os.path.join(workdir, "summary.csv")):
    out.setdefault((row["optimizer"], float(row["learning_rate"])), []).append(row)
  return out


def _scored(row, split):
  """Diverged at the cap, and nothing worse than the cap (sgd at lr 1e-4 ends above it)."""
  if row["status"] == "diverged":
    return fx.INIT_LOSS
  return min(float(row[f"final_{split}_loss"]), fx.INIT_LOSS)


def test_report_has_every_section_and_figure(grid):
  _, workdir, path, md = grid
  out = os.path.dirname(path)
  assert path == os.path.join(workdir, "report", "report.md")
  for section in report.SECTIONS:
    assert f"\n## {section}\n" in md, section
  linked = re.findall(r"\]\(([^)]+\.png)\)", md)
  # One value factor: no effects figure, one line instead (the sensitivity curve is the effect).
  assert sorted(linked) == sorted(["lr_sensitivity.png", "learning_curves.png",
                                   "tuning_curves.png"])
  assert "One value factor, `learning_rate`" in md and "| term |" not in md
  # The verdict comes first, right after the title.
  assert md.split("\n\n")[1] == "## Verdict"
  assert md.split("\n\n")[2].startswith("> **The two optimizers are distinguishable at 3 seeds; "
                                        "best by validation: adam")
  for name in linked:
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for name in ("comparison.csv", "sensitivity.csv", "pairs.csv", "lr_curves.csv",
               "tuning_curves.csv", "effects.csv", "compute.csv"):
    assert os.path.isfile(os.path.join(out, name)), name
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # atomic writes left nothing
  with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
    page = f.read()
  assert page.count('src="data:image/png;base64,') == len(linked)
  assert "http" not in page  # self-contained: links go to sections and to the CSV files beside it
  assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
  for target in re.findall(r'href="([^"]+)"', page):
    assert target.startswith("#") or os.path.isfile(os.path.join(out, target)), target
  for name in ("comparison.csv", "pairs.csv", "sensitivity.csv"):
    assert f'href="{name}"' in page
  for section in report.SECTIONS:
    anchor = re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")
    assert f'<h2 id="{anchor}">{section}</h2>' in page
    assert f'<li><a href="#{anchor}">{section}</a></li>' in page  # the contents
  assert "TensorBoard" in md
  assert page.count('<div class="scroll"><table>') == page.count("<table>") > 0


def test_comparison_matches_summary(grid):
  _, workdir, path, md = grid
  by_config = _summary_by_config(workdir)
  rows = {r["label"]: r for r in _read_csv(os.path.join(workdir, "report", "comparison.csv"))}
  chosen = {}
  for opt in ("adam", "sgd"):
    # The best configuration by mean validation loss (diverged at the initial loss).
    configs = {lr: rs for (o, lr), rs in by_config.items() if o == opt}
    best_lr = min(configs, key=lambda lr: np.mean([_scored(r, "valid") for r in configs[lr]]))
    np.testing.assert_allclose(np.log10(best_lr), fx.LOG10_BEST_LR[opt])  # the ground truth
    reps = sorted(configs[best_lr], key=lambda r: int(r["replicate"]))
    # The compared quantity: on each seed, the lr best on that seed's valid loss, its test loss.
    per_seed = [min((rs[i] for rs in configs.values()), key=lambda r: _scored(r, "valid"))
                for i in range(3)]
    chosen[opt] = np.array([_scored(r, "test") for r in per_seed])
    row = rows[opt]
    assert _close(row["learning_rate"], best_lr, rel=1e-2)
    assert row["best_points"] == " ".join(r["point"] for r in reps)
    assert _close(row["test_mean"], chosen[opt].mean())
    assert _close(row["valid_mean"], np.mean([_scored(r, "valid") for r in reps]))
    assert row["n"] == "3" and row["configs"] == "7" and row["points"] == "21"
    assert float(row["test_ci_low"]) < float(row["test_mean"]) < float(row["test_ci_high"])
    # The text shows the same numbers, rounded to the interval's precision.
    assert f"| {row['rank']} | {opt} | {row['learning_rate']} |" in md
    mean, low, high = document.rounded(*(float(row[k]) for k in ("test_mean", "test_ci_low",
                                                                   "test_ci_high")))
    assert f"| {mean} [{low}, {high}] | 3 |" in md
    assert len(high.split(".")[1]) == 1 - math.floor(math.log10((float(row["test_ci_high"])
                                                                  - float(row["test_ci_low"])) / 2))
  assert rows["adam"]["rank"] == "1" and rows["sgd"]["rank"] == "2"
  sgd = rows["sgd"]
  assert _close(sgd["diff_vs_best"], np.mean(chosen["sgd"] - chosen["adam"]))
  ref = sp_stats.ttest_rel(chosen["sgd"], chosen["adam"])
  assert sgd["t_pvalue"] == document.fmt_p(ref.pvalue)
  assert sgd["wilcoxon_pvalue"] == ""  # 3 pairs: too few for a Wilcoxon test
  mean, low, high = document.rounded(*(float(sgd[k]) for k in ("diff_vs_best", "diff_ci_low",
                                                                "diff_ci_high")))
  assert f"| {mean} [{low}, {high}] |" in md
  assert sgd["diff_ci_level"] == "0.96"  # one pair at the first look's level 0.04


def test_sensitivity_matches_summary(grid):
  _, workdir, _, md = grid
  by_config = _summary_by_config(workdir)
  rows = {r["label"]: r for r in _read_csv(os.path.join(workdir, "report", "sensitivity.csv"))}
  sens = {}
  for opt in ("adam", "sgd"):
    lrs = sorted(lr for o, lr in by_config if o == opt)
    values = np.array([[_scored(r, "valid") for r in sorted(by_config[opt, lr],
                                                           key=lambda r: int(r["replicate"]))]
                       for lr in lrs])  # [lr, replicate]
    capped = np.minimum(values, fx.INIT_LOSS)
    sens[opt] = np.mean(capped - capped.min(axis=0), axis=0).mean()  # Wortsman, per seed
    row = rows[opt]
    assert _close(row["lr_sensitivity"], sens[opt])
    assert _close(row["cap"], fx.INIT_LOSS) and "step 0" in row["cap_source"]
    assert _close(row["best_mean_valid"], np.mean(values, axis=1).min())
    assert row["num_lrs"] == "7"
    assert f"| {row['lr_sensitivity']} |" in md
  assert rows["sgd"]["diverged_points"] == "3" and _close(rows["sgd"]["first_diverged_lr"], 0.1)
  assert rows["adam"]["diverged_points"] == "0" and rows["adam"]["first_diverged_lr"] == ""
  assert sens["sgd"] > sens["adam"]  # sgd's optimum sits near the diverging edge
  curves = _read_csv(os.path.join(workdir, "report", "lr_curves.csv"))
  top = [r for r in curves if r["label"] == "sgd" and _close(r["learning_rate"], 0.1)]
  assert top[0]["diverged"] == "3" and top[0]["diverged_steps"] == "30 30 30"


def test_tuning_curve_matches_closed_form(grid):
  _, workdir, _, _ = grid
  by_config = _summary_by_config(workdir)
  rows = [r for r in _read_csv(os.path.join(workdir, "report", "tuning_curves.csv"))
          if r["label"] == "sgd"]
  v = np.sort([_scored(r, "valid") for (o, _), rs in by_config.items() if o == "sgd"
               for r in rs])
  n = v.size
  assert len(rows) == n
  for r in rows:
    k = int(r["k"])
    i = np.arange(1, n + 1)
    expected = np.sum(v * (((n - i + 1) / n) ** k - ((n - i) / n) ** k))
    assert _close(r["expected_best"], expected)
  assert _close(rows[0]["expected_best"], v.mean())


def test_learning_curves_of_best_and_neighbours(grid):
  _, workdir, _, _ = grid
  exp = results.load_experiment(workdir)
  f = findings.analyse(exp, num_resamples=100)
  by_config = _summary_by_config(workdir)
  for sel, curves in f.learning_curves:
    assert [c.role for c in curves] == ["best", "lower lr", "higher lr"]
    for c in curves:
      final = [float(r["final_valid_loss"]) for r in by_config[sel.group.label, c.lr]
               if r["status"] == "ok"]
      if final:  # the curve ends at the summary's final value (mean over seeds)
        assert _close(c.valid[-1], np.mean(final))
      # The train curve keeps its own logged steps (every 50 from 50), not the eval steps.
      np.testing.assert_array_equal(c.train_step, [50, 100] if final else [])
      assert c.step[0] == 0 and _close(c.valid[0], fx.INIT_LOSS)
  assert f.learning_curves[1][1][2].lr == pytest.approx(0.1)  # sgd's diverged neighbour
  assert np.isnan(f.learning_curves[1][1][2].valid[-1])


def test_compute_accounting(grid):
  _, workdir, _, md = grid
  rows = {r["group"]: r for r in _read_csv(os.path.join(workdir, "report", "compute.csv"))}
  adam = rows["optimizer=adam"]
  assert _close(adam["tokens"], 256 * 100 * 21) and _close(adam["flops_per_second"],
                                                            1e6 * 100 * 21 / 4.0)
  assert rows["total"]["points"] == "42" and adam["mfu"] == ""
  assert rows["total"]["wall_seconds"] == "12.5" and "Wall time 12.5 s" in md
  assert "MFU not reported" in md


def test_mfu_with_peak_flops(tmp_path):
  fx.write_expdir(tmp_path, optimizers=("adam",), lrs=(1e-3, 1e-2), replicates=1, diverge=(),
                  peak_flops=1e8)
  md = open(report.write_report(tmp_path, num_resamples=50), encoding="utf-8").read()
  rows = _read_csv(os.path.join(tmp_path, "report", "compute.csv"))
  assert _close(rows[0]["mfu"], 1e6 * 100 * 2 / 4.0 / 1e8)
  assert "| MFU |" in md


def test_anova_of_grid_matches_hand_computed_sums_of_squares(tmp_path):
  fx.write_expdir(tmp_path, optimizers=("adam",), lrs=tuple(np.logspace(-4, -1, 4)),
                  weight_decays=(0.0, 0.1, 0.2), wd_effect=0.5, replicates=2, diverge=())
  report.write_report(tmp_path, num_resamples=50)
  rows = {r["term"]: r for r in _read_csv(os.path.join(tmp_path, "report", "effects.csv"))}
  summary = _read_csv(os.path.join(tmp_path, "summary.csv"))
  y = np.array([float(r["final_valid_loss"]) for r in summary])
  grand = y.mean()
  for factor in ("learning_rate", "weight_decay"):
    levels = np.array([float(r[factor]) for r in summary])
    ss = sum(np.sum(levels == lv) * (y[levels == lv].mean() - grand) ** 2
             for lv in np.unique(levels))  # balanced main-effect sum of squares
    assert _close(rows[factor]["sum_sq"], ss)
    assert float(rows[factor]["p"]) < 1e-3  # both factors matter in the ground truth
  assert rows["learning_rate"]["df"] == "3" and rows["weight_decay"]["df"] == "2"
  assert rows["learning_rate:weight_decay"]["df"] == "6" and rows["Residual"]["df"] == "12"
  assert _close(rows["Total"]["sum_sq"], np.sum((y - grand) ** 2))


def test_fractional_factorial_falls_back_to_main_effects(tmp_path):
  # A 2^(3-1) design (c = a * b): the a:b interaction is aliased with c, so only main effects.
  half = [{"learning_rate": 1e-3, "a": a, "b": b, "c": a * b} for a in (-1.0, 1.0)
          for b in (-1.0, 1.0)]
  fx.write_expdir(tmp_path, optimizers=("adam",), design="fractional_factorial", configs=half,
                  effects={"a": 0.2, "c": 0.1}, replicates=2, diverge=())
  md = open(report.write_report(tmp_path, num_resamples=50), encoding="utf-8").read()
  rows = {r["term"]: r for r in _read_csv(os.path.join(tmp_path, "report", "effects.csv"))}
  assert set(rows) == {"a", "b", "c", "Residual", "Total"}
  assert [rows[t]["df"] for t in ("a", "b", "c", "Residual")] == ["1", "1", "1", "4"]
  assert float(rows["a"]["p"]) < 1e-3 and float(rows["c"]["p"]) < 1e-3
  assert "aliased with main effects" in md


def test_random_design_gives_variance_decomposition(tmp_path):
  fx.write_expdir(tmp_path, optimizers=("adam",), design="random", num_configs=64,
                  replicates=2, diverge=())
  md = open(report.write_report(tmp_path, num_resamples=50), encoding="utf-8").read()
  rows = {r["term"]: r for r in _read_csv(os.path.join(tmp_path, "report", "effects.csv"))}
  assert {r["kind"] for r in rows.values()} == {"variance"}
  assert float(rows["learning_rate"]["eps_sq"]) > 0.5  # lr is what matters in the truth
  assert abs(float(rows["b1"]["eps_sq"])) < 0.1  # b1 has no effect
  assert "First-order variance shares" in md and "Largest first-order share: `learning_rate`" in md
  sens = _read_csv(os.path.join(tmp_path, "report", "sensitivity.csv"))
  assert sens[0]["num_lrs"] == "64"


def test_single_replicate_and_basin_width(tmp_path):
  # A fine lr grid and no noise: the 5% basin of b + c (x - x0)^2 is where the curve stays
  # within 5% of the improvement (l0 - b) from the initial loss l0: width 2 sqrt(.05 (l0 - b) / c).
  truth = fx.write_expdir(tmp_path, optimizers=("adam",), lrs=tuple(np.logspace(-4, -1, 31)),
                          replicates=1, noise=0.0, diverge=())
  md = open(report.write_report(tmp_path, num_resamples=50), encoding="utf-8").read()
  row = _read_csv(os.path.join(tmp_path, "report", "sensitivity.csv"))[0]
  best = min(p["valid"] for p in truth.points)
  for tol, tag in ((0.01, "1pct"), (0.05, "5pct")):
    width = 2 * math.sqrt(tol * (fx.INIT_LOSS - best) / fx.CURVATURE)
    assert abs(float(row[f"basin_{tag}_decades"]) - width) < 0.03, (tag, row)
    assert row[f"basin_{tag}_open"] == ""
  assert row["lr_sensitivity_ci_low"] == "" and row["n"] == "1"
  assert document.NO_INTERVAL in md
  comp = _read_csv(os.path.join(tmp_path, "report", "comparison.csv"))[0]
  assert comp["test_ci_low"] == "" and comp["n"] == "1"


def test_incomplete_sweep_is_reported_as_such(tmp_path):
  truth = fx.write_expdir(tmp_path, run_status="running", running_points=(1, 2),
                          missing_points=(40, 41))
  written = report.write(tmp_path, num_resamples=50)
  md = open(written.markdown, encoding="utf-8").read()
  # The console says so too, before the path of the report.
  assert written.console_lines()[-2].startswith("Incomplete: 38 of 42 points finished")
  first_blocks = md.split("\n\n")[:2]
  assert first_blocks[1].startswith("> **Incomplete sweep:")
  assert "run status 'running'" in md and "38 of 42 points finished" in md
  assert "2 running" in md and "2 without a summary row" in md
  rows = {r["label"]: r for r in _read_csv(os.path.join(tmp_path, "report", "comparison.csv"))}
  assert int(rows["adam"]["points"]) == 19  # points 1 and 2 (adam) not yet finished
  assert len(truth.points) == 42


def test_sweep_without_summary_yet(tmp_path):
  fx.write_expdir(tmp_path, run_status="running")
  os.remove(os.path.join(tmp_path, "summary.csv"))
  md = open(report.write_report(tmp_path, num_resamples=50), encoding="utf-8").read()
  assert "no summary.csv yet" in md and "0 of 42 points finished" in md
  assert "No finished points yet." in md
  for section in report.SECTIONS:
    assert f"\n## {section}\n" in md


def test_not_an_experiment_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing config.json, design.csv") as e:
    report.write_report(tmp_path)
  assert str(tmp_path) in str(e.value)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    report.write_report(tmp_path / "nope")


def test_unknown_metric_is_a_clear_error(tmp_path):
  fx.write_expdir(tmp_path, optimizers=("adam",), lrs=(1e-3,), replicates=1, diverge=())
  path = os.path.join(tmp_path, "config.json")
  text = open(path, encoding="utf-8").read().replace('"metric": "loss"', '"metric": "bleu"')
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  with pytest.raises(ValueError, match="sweep.metric='bleu'"):
    report.write_report(tmp_path)


def test_script_fails_without_traceback(tmp_path):
  # The success path of the script is write_report (tested above) and the sweep's end-to-end test.
  script = os.path.join(REPO, "scripts", "report.py")
  fail = subprocess.run([sys.executable, script, f"--workdir={tmp_path}"], capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
                        timeout=120)
  assert fail.returncode != 0
  assert "Traceback" not in fail.stderr
  assert str(tmp_path) in fail.stderr and "design.csv" in fail.stderr


def test_analysis_does_not_import_jax():
  code = ("import sys; import jaxopt_lab.analysis.report; "
          "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')]")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_scores_are_capped_for_every_statistic(grid):
  # sgd at lr 1e-4 ends above the initial loss without diverging; it counts as the cap in
  # selection, sensitivity, tuning curves and effects alike (they all read Group.scored).
  _, workdir, _, _ = grid
  exp = results.load_experiment(workdir)
  sgd = next(g for g in exp.groups if g.label == "sgd")
  assert np.nanmax(sgd.valid) > fx.INIT_LOSS  # the raw value is worse than the cap
  np.testing.assert_allclose(np.nanmax(sgd.scored("valid")), fx.INIT_LOSS)
  row = sgd.scored("valid")[np.argmin(sgd.lr)]
  np.testing.assert_allclose(row, fx.INIT_LOSS)
  f = findings.analyse(exp, num_resamples=50)
  effect_levels, effect_means = next(e for e in f.effects if e.group is sgd).main_effects[
      "learning_rate"]
  np.testing.assert_allclose(effect_means[0], fx.INIT_LOSS)


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(REPO, "experiments"))
                                        if n.startswith("sweep_") and n.endswith(".py")))
def test_every_example_sweep_detects_divergence(name):
  import importlib.util  # noqa: PLC0415

  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(REPO, "experiments", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().sweep.diverge_factor > 1.0
