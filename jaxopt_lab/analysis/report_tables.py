"""The report's tables: each a list of dicts of formatted strings, written as CSV next to the
report and shown in its text (one string per number)."""

from __future__ import annotations

import numpy as np

from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis.document import fmt, fmt_lr, fmt_p


def settings_text(settings: dict[str, object]) -> str:
  parts = []
  for k, v in settings.items():
    if k == "learning_rate":
      continue
    parts.append(f"{k}={fmt(v, '.4g') if isinstance(v, (float, np.floating)) else v}")
  return ", ".join(parts)



COMPARISON_COLUMNS = [
    "rank", "group", "label", "learning_rate", "settings", "best_points", "configs", "points",
    "steps",
    "valid_mean", "test_mean", "test_ci_low", "test_ci_high", "n", "interval",
    "accuracy_mean", "accuracy_ci_low", "accuracy_ci_high", "diverged_replicates",
    "diff_vs_best", "diff_ci_low", "diff_ci_high", "diff_ci_level", "pairs", "t_pvalue",
    "p_bonferroni", "wilcoxon_pvalue"]
PAIR_COLUMNS = ["a", "b", "pairs", "mean_diff", "ci_low", "ci_high", "ci_level", "t_statistic",
                "t_pvalue", "p_bonferroni", "distinguishable", "wilcoxon_statistic",
                "wilcoxon_pvalue"]
SENSITIVITY_COLUMNS = (
    ["group", "label", "num_lrs", "lr_min", "lr_max", "best_lr", "best_mean_valid", "cap",
     "cap_source", "lr_sensitivity", "lr_sensitivity_ci_low", "lr_sensitivity_ci_high", "n"]
    + [f"basin_{round(t * 100)}pct_{k}" for t in fnd.BASIN_TOLERANCES
       for k in ("decades", "lr_low", "lr_high", "open")]
    + ["diverged_points", "first_diverged_lr"])
LR_CURVE_COLUMNS = ["group", "label", "learning_rate", "n", "mean", "ci_low", "ci_high",
                    "diverged", "diverged_steps"]
TUNING_COLUMNS = ["group", "label", "k", "expected_best", "ci_low", "ci_high"]
EFFECTS_COLUMNS = ["group", "label", "kind", "term", "sum_sq", "df", "mean_sq", "F", "p",
                   "eta_sq", "eps_sq"]
COMPUTE_COLUMNS = ["group", "points", "steps", "points_steps", "tokens", "compile_seconds",
                   "train_seconds",
                   "points_steps_per_second", "flops_per_second", "mfu", "wall_seconds"]


def _comparison_cells(p: fnd.Pair | None) -> dict[str, str]:
  keys = ("mean_diff", "ci_low", "ci_high", "ci_level", "pairs", "t_statistic", "t_pvalue",
          "p_bonferroni", "distinguishable", "wilcoxon_statistic", "wilcoxon_pvalue")
  if p is None:
    return dict.fromkeys(keys, "")
  c = p.comparison
  if c is None:
    return dict.fromkeys(keys, "") | {"pairs": "0"}
  return {"mean_diff": fmt(c.mean_diff), "ci_low": fmt(c.ci_low), "ci_high": fmt(c.ci_high),
          "ci_level": fmt(p.level, ".4g"), "pairs": fmt(c.n), "t_statistic": fmt(c.t_statistic),
          "t_pvalue": fmt_p(c.t_pvalue), "p_bonferroni": fmt_p(p.p_adjusted),
          "distinguishable": fmt(bool(p.distinguishable)),
          "wilcoxon_statistic": fmt(c.wilcoxon_statistic),
          "wilcoxon_pvalue": fmt_p(c.wilcoxon_pvalue)}


def comparison_rows(f: fnd.Findings) -> list[dict[str, str]]:
  """One row per group, ranked; the diff columns are the row's group minus the best group."""
  versus = {id(p.a): p for p in f.versus_best}
  rows = []
  for i, s in enumerate(f.ranked):
    c = _comparison_cells(versus.get(id(s)))
    acc = f.accuracy.get(s.group.group, fnd.NO_INTERVAL)
    rows.append({
        "rank": str(i + 1), "group": s.group.group, "label": s.group.label,
        "learning_rate": fmt_lr(s.lr), "settings": settings_text(s.settings),
        "best_points": " ".join(str(p) for p in s.points),
        "configs": fmt(s.num_configs), "points": fmt(s.num_points), "steps": fmt(s.steps),
        "valid_mean": fmt(s.valid.value), "test_mean": fmt(s.test.value),
        "test_ci_low": fmt(s.test.low), "test_ci_high": fmt(s.test.high),
        "n": fmt(s.test.n), "interval": s.test.method, "accuracy_mean": fmt(acc.value),
        "accuracy_ci_low": fmt(acc.low), "accuracy_ci_high": fmt(acc.high),
        "diverged_replicates": fmt(s.diverged_replicates),
        "diff_vs_best": c["mean_diff"], "diff_ci_low": c["ci_low"], "diff_ci_high": c["ci_high"],
        "diff_ci_level": c["ci_level"], "pairs": c["pairs"], "t_pvalue": c["t_pvalue"],
        "p_bonferroni": c["p_bonferroni"],
        "wilcoxon_pvalue": c["wilcoxon_pvalue"],
    })
  return rows


def pair_rows(f: fnd.Findings) -> list[dict[str, str]]:
  return [{"a": p.a.group.label, "b": p.b.group.label} | _comparison_cells(p) for p in f.pairs]


def _open_text(b) -> str:
  return {(True, True): "both", (True, False): "low", (False, True): "high"}.get(
      (b.open_low, b.open_high), "")


def sensitivity_rows(f: fnd.Findings) -> list[dict[str, str]]:
  rows = []
  for s in f.sensitivities:
    c = s.curve
    row = {
        "group": s.group.group, "label": s.group.label,
        "num_lrs": fmt(c.lr.size if c else 0),
        "lr_min": fmt_lr(c.lr.min()) if c else "", "lr_max": fmt_lr(c.lr.max()) if c else "",
        "best_lr": fmt_lr(s.best_lr), "best_mean_valid": fmt(s.best_mean),
        "cap": fmt(s.group.cap), "cap_source": s.group.cap_source,
        "lr_sensitivity": fmt(s.sensitivity.value),
        "lr_sensitivity_ci_low": fmt(s.sensitivity.low),
        "lr_sensitivity_ci_high": fmt(s.sensitivity.high), "n": fmt(s.sensitivity.n),
    }
    for b in s.basins:
      tag = f"basin_{round(b.rel_tol * 100)}pct"
      row[f"{tag}_decades"] = fmt(b.width_decades, ".3g")
      row[f"{tag}_lr_low"] = fmt_lr(b.lr_low)
      row[f"{tag}_lr_high"] = fmt_lr(b.lr_high)
      row[f"{tag}_open"] = _open_text(b)
    row["diverged_points"] = fmt(s.diverged_points)
    row["first_diverged_lr"] = fmt_lr(s.first_diverged_lr)
    rows.append(row)
  return rows


def lr_curve_rows(f: fnd.Findings) -> list[dict[str, str]]:
  rows = []
  for s in f.sensitivities:
    c = s.curve
    if c is None:
      continue
    for j in range(c.lr.size):
      steps = c.diverged_step[j][c.diverged[j] & np.isfinite(c.diverged_step[j])]
      rows.append({
          "group": s.group.group, "label": s.group.label, "learning_rate": fmt_lr(c.lr[j]),
          "n": fmt(c.n[j]), "mean": fmt(c.mean[j]), "ci_low": fmt(c.low[j]),
          "ci_high": fmt(c.high[j]), "diverged": fmt(int(c.diverged[j].sum())),
          "diverged_steps": " ".join(str(int(x)) for x in steps),
      })
  return rows


def tuning_rows(f: fnd.Findings) -> list[dict[str, str]]:
  rows = []
  for g, c in f.tuning:
    if c is None:
      continue
    for j in range(c.k.size):
      rows.append({"group": g.group, "label": g.label, "k": fmt(int(c.k[j])),
                   "expected_best": fmt(c.expected[j]), "ci_low": fmt(c.low[j]),
                   "ci_high": fmt(c.high[j])})
  return rows


def effects_rows(f: fnd.Findings) -> list[dict[str, str]]:
  rows = []
  for e in f.effects:
    for r in e.anova or []:
      rows.append({"group": e.group.group, "label": e.group.label, "kind": "anova",
                   "term": r.term, "sum_sq": fmt(r.sum_sq), "df": fmt(r.df),
                   "mean_sq": fmt(r.mean_sq), "F": fmt(r.f, ".4g"), "p": fmt_p(r.p),
                   "eta_sq": "", "eps_sq": ""})
    for r in e.variance or []:
      rows.append({"group": e.group.group, "label": e.group.label, "kind": "variance",
                   "term": r.factor, "sum_sq": "", "df": "", "mean_sq": "", "F": "", "p": "",
                   "eta_sq": fmt(r.eta_sq, ".3g"), "eps_sq": fmt(r.eps_sq, ".3g")})
  return rows


def compute_table_rows(f: fnd.Findings) -> list[dict[str, str]]:
  """Per-group rows; the "total" row also holds run.json's wall time."""
  wall = fmt(f.experiment.run.get("wall_seconds"), ".4g")
  return [{"group": r.group, "points": fmt(r.points), "steps": fmt(r.steps),
           "points_steps": fmt(r.points_steps, ".6g"), "tokens": fmt(r.tokens, ".4g"),
           "compile_seconds": fmt(r.compile_seconds, ".4g"),
           "train_seconds": fmt(r.train_seconds, ".4g"),
           "points_steps_per_second": fmt(r.points_steps_per_second, ".4g"),
           "flops_per_second": fmt(r.flops_per_second, ".4g"), "mfu": fmt(r.mfu, ".3g"),
           "wall_seconds": wall if r.group == "total" else ""}
          for r in f.compute]


