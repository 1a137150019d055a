"""The report of an experiment: Markdown, self-contained HTML, PNG figures and CSV tables.

`write_report(workdir)` reads the experiment directory, computes the findings and writes
`WORKDIR/report/`:

* `report.md` and `report.html` (the same document; the HTML embeds its figures as base64 PNG),
  opening with the verdict (`verdict.verdict`),
* `lr_sensitivity.png`, `learning_curves.png`, `tuning_curves.png`, `effects.png`,
  `two_factor.png` (each where it has something to show),
* a follow-up's "Follows from" and every finished sweep's "Next experiment" (`analysis.followup`),
* `comparison.csv`, `pairs.csv`, `sensitivity.csv`, `lr_curves.csv`, `tuning_curves.csv`,
  `effects.csv`, `compute.csv`.

Every number appears in the text exactly as in the CSV files: both are rendered from the same
formatted strings. Every file is written atomically. TensorBoard summaries are not written.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxopt_lab import files
from jaxopt_lab.analysis import adaptive, followup, plots, results, scale
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import (
  NO_INTERVAL,
  Document,
  cell,
  fmt,
  fmt_lr,
  fmt_p,
  interval_text,
  to_html,
  to_markdown,
)

REPORT_DIR = "report"
SECTIONS = ("Verdict", "Fair comparison", "Learning-rate sensitivity", "Tuning curves",
            "Hyperparameter effects", "Learning curves", "Setup", "Compute", "Methods",
            "Next experiment")  # a follow-up's report also has "Follows from", after the verdict


def _settings_text(settings: dict[str, object]) -> str:
  parts = []
  for k, v in settings.items():
    if k == "learning_rate":
      continue
    parts.append(f"{k}={fmt(v, '.4g') if isinstance(v, (float, np.floating)) else v}")
  return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Tables: each a list of dicts of formatted strings, written as CSV and shown in the text.

COMPARISON_COLUMNS = [
    "rank", "group", "label", "learning_rate", "settings", "best_points", "configs", "points",
    "steps",
    "valid_mean", "valid_ci_low", "valid_ci_high", "test_mean", "test_ci_low", "test_ci_high",
    "n", "interval", "diverged_replicates", "diff_vs_best", "diff_ci_low", "diff_ci_high", "pairs",
    "t_pvalue", "p_holm", "wilcoxon_pvalue"]
PAIR_COLUMNS = ["a", "b", "pairs", "mean_diff", "ci_low", "ci_high", "t_statistic", "t_pvalue",
                "p_holm", "wilcoxon_statistic", "wilcoxon_pvalue"]
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
  keys = ("mean_diff", "ci_low", "ci_high", "pairs", "t_statistic", "t_pvalue", "p_holm",
          "wilcoxon_statistic", "wilcoxon_pvalue")
  if p is None:
    return dict.fromkeys(keys, "")
  c = p.comparison
  if c is None:
    return dict.fromkeys(keys, "") | {"pairs": "0"}
  return {"mean_diff": fmt(c.mean_diff), "ci_low": fmt(c.ci_low), "ci_high": fmt(c.ci_high),
          "pairs": fmt(c.n), "t_statistic": fmt(c.t_statistic), "t_pvalue": fmt_p(c.t_pvalue),
          "p_holm": fmt_p(p.p_holm), "wilcoxon_statistic": fmt(c.wilcoxon_statistic),
          "wilcoxon_pvalue": fmt_p(c.wilcoxon_pvalue)}


def comparison_rows(f: fnd.Findings) -> list[dict[str, str]]:
  """One row per group, ranked; the diff columns are the row's group minus the best group."""
  versus = {id(p.a): p for p in f.versus_best}
  rows = []
  for i, s in enumerate(f.ranked):
    c = _comparison_cells(versus.get(id(s)))
    rows.append({
        "rank": str(i + 1), "group": s.group.group, "label": s.group.label,
        "learning_rate": fmt_lr(s.lr), "settings": _settings_text(s.settings),
        "best_points": " ".join(str(p) for p in s.points),
        "configs": fmt(s.num_configs), "points": fmt(s.num_points), "steps": fmt(s.steps),
        "valid_mean": fmt(s.valid.value), "valid_ci_low": fmt(s.valid.low),
        "valid_ci_high": fmt(s.valid.high), "test_mean": fmt(s.test.value),
        "test_ci_low": fmt(s.test.low), "test_ci_high": fmt(s.test.high),
        "n": fmt(s.test.n), "interval": s.test.method,
        "diverged_replicates": fmt(s.diverged_replicates),
        "diff_vs_best": c["mean_diff"], "diff_ci_low": c["ci_low"], "diff_ci_high": c["ci_high"],
        "pairs": c["pairs"], "t_pvalue": c["t_pvalue"], "p_holm": c["p_holm"],
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


# ---------------------------------------------------------------------------------------------
# The document.


def _setup(doc: Document, f: fnd.Findings) -> None:
  exp = f.experiment
  train = exp.config.get("train", {}) if isinstance(exp.config.get("train"), dict) else {}
  steps = exp.run.get("total_steps", train.get("steps", "n/a"))
  doc.heading(2, "Setup")
  doc.bullets([
      f"Task: `{exp.run.get('task', exp.config.get('task', 'n/a'))}`; design: "
      f"`{exp.design_name}`; {exp.progress.design_points} points in {len(exp.groups)} "
      f"group(s) x {exp.num_replicates} seed replicate(s) (common random numbers: replicates "
      f"share data order and initial parameters); {steps} steps per point.",
      "Structural factors (one compiled group each): "
      + (", ".join(f"`{s}`" for s in exp.structural_factors) or "none")
      + "; value factors: " + (", ".join(f"`{v}`" for v in exp.value_factors) or "none") + ".",
      "Groups: " + ", ".join(f"{g.label} (`{g.group}`)" for g in exp.groups) + ".",
      f"Metric: `{exp.metric}`, better is {exp.mode} ({exp.mode_source}); tuned on the final "
      f"valid {exp.metric}, reported on the final {exp.test_split} {exp.metric}.",
      "Learning rate: "
      + {"learning_rate": "the declared factor `learning_rate`.",
         "hp_learning_rate": "the resolved `hp_learning_rate` of summary.csv (not a factor).",
         None: "unknown (no learning_rate factor and no hp_learning_rate column)."}[exp.lr_column],
      "Diverged points count as failed, at the cap: "
      + "; ".join(f"{g.label}: {cell(fmt(g.cap))} ({g.cap_source})" for g in exp.groups) + ".",
  ])


def _verdict(doc: Document, f: fnd.Findings, v: vd.Verdict, rows: list[dict[str, str]]) -> None:
  exp = f.experiment
  doc.heading(2, "Verdict")
  doc.box(v.lines())
  if len(rows) < 2 or not any(r["test_mean"] for r in rows):
    return
  settings = any(r["settings"] for r in rows)  # a one-factor sweep has none to show
  doc.table(
      ["group", "lr"] + (["other settings"] if settings else [])
      + [f"valid {exp.metric}", f"{exp.test_split} {exp.metric}", "diff vs best [95% CI]",
         "Holm p"],
      [[r["label"], cell(r["learning_rate"])] + ([r["settings"] or "-"] if settings else [])
       + [cell(r["valid_mean"]), cell(r["test_mean"]),
          (f"{cell(r['diff_vs_best'])} "
           f"{interval_text(r['diff_ci_low'], r['diff_ci_high'], int(r['pairs'] or 0))}"
           if r["rank"] != "1" else "best"),
          cell(r["p_holm"]) if r["rank"] != "1" else "-"] for r in rows])


def _comparison(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
                prs: list[dict[str, str]]) -> None:
  exp = f.experiment
  doc.heading(2, "Fair comparison")
  if len(rows) == 1:
    r = rows[0]
    doc.para(
        f"One group: {r['label']} at its best configuration (lr {cell(r['learning_rate'])}"
        + (f", {r['settings']}" if r["settings"] else "") + f"), chosen on the mean final valid "
        f"{exp.metric} over seeds: valid {cell(r['valid_mean'])} "
        f"{interval_text(r['valid_ci_low'], r['valid_ci_high'], int(r['n'] or 0))}, "
        f"{exp.test_split} {cell(r['test_mean'])} "
        f"{interval_text(r['test_ci_low'], r['test_ci_high'], int(r['n'] or 0))} "
        f"(n={r['n']}; points {cell(r['best_points'])}). Budget: {r['configs']} configurations, "
        f"{r['points']} points, {cell(r['steps'])} steps each.")
    return
  doc.para(
      f"Each group at its own best configuration, chosen on the mean final valid {exp.metric} "
      f"over its seeds and ranked by it (diverged seeds at the cap); its final {exp.test_split} "
      f"{exp.metric} is the mean over the same seeds with a 95% interval (Student t below "
      f"{fnd.stats.BCA_MIN_N} seeds, BCa bootstrap from there). Differences are paired over "
      "the shared seeds (row minus the best group) on the test metric: t interval (the paired "
      "t-test inverted, so it excludes 0 exactly when p < 0.05), paired t-test "
      "(`scipy.stats.ttest_rel`) with Holm's correction over all pairs, and Wilcoxon "
      f"signed-rank test (`scipy.stats.wilcoxon`, from {fnd.stats.WILCOXON_MIN_PAIRS} pairs).")
  if not any(r["test_mean"] for r in rows):
    doc.para("No finished points yet.")
    return
  doc.table(
      ["rank", "group", "lr", "other settings", "budget (configs / points / steps)",
       f"valid {exp.metric}", f"{exp.test_split} {exp.metric}", "95% CI", "n", "diverged",
       "diff vs best", "diff 95% CI", "Holm p", "Wilcoxon p"],
      [[r["rank"], r["label"], cell(r["learning_rate"]), r["settings"] or "-",
        f"{r['configs']} / {r['points']} / {cell(r['steps'])}", cell(r["valid_mean"]),
        cell(r["test_mean"]), interval_text(r["test_ci_low"], r["test_ci_high"], int(r["n"])),
        r["n"], r["diverged_replicates"], cell(r["diff_vs_best"]) if r["rank"] != "1" else "-",
        (interval_text(r["diff_ci_low"], r["diff_ci_high"], int(r["pairs"] or 0))
         if r["rank"] != "1" else "-"),
        cell(r["p_holm"]) if r["rank"] != "1" else "-",
        cell(r["wilcoxon_pvalue"]) if r["rank"] != "1" else "-"] for r in rows])
  if len(prs) > 1:
    doc.para("All pairs (a minus b, a ranked before b), Holm's correction over these "
             f"{len(prs)} t-tests:")
    doc.table(["a", "b", "pairs", "mean diff", "95% CI", "t", "t-test p", "Holm p",
               "Wilcoxon p"],
              [[p["a"], p["b"], p["pairs"], cell(p["mean_diff"]),
                interval_text(p["ci_low"], p["ci_high"], int(p["pairs"] or 0)),
                cell(p["t_statistic"]), cell(p["t_pvalue"]), cell(p["p_holm"]),
                cell(p["wilcoxon_pvalue"])] for p in prs])


def _sensitivity(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
                 figure: str | None) -> None:
  exp = f.experiment
  doc.heading(2, "Learning-rate sensitivity")
  doc.para(
      f"Final valid {exp.metric} against the learning rate: at each swept lr the configuration "
      "with the best mean over seeds (the profile over any other value factor), its mean "
      "and 95% t interval over seeds; the best lr is starred, the cap (the metric at "
      "initialisation) is the dashed line, and the y axis shows the informative range: points "
      "beyond it are drawn as triangles at its edge; diverged points are marked (red x, at the "
      "cap, with the step where they diverged). LR sensitivity (Wortsman et al. 2023): the mean "
      f"over the swept learning rates of min(l(lr), l0) - l*, l* the best capped value and l0 "
      f"the cap, computed per seed and averaged (95% interval over seeds). Basin: the "
      "width in decades of lr around the best lr where the mean stays within 1% / 5% of the "
      "best (linear interpolation in log10 lr; 'open' = reaches the edge of the swept range, "
      "so the true basin may be wider).")
  if figure:
    doc.figure(figure, f"Final valid {exp.metric} against learning rate.")
  if not rows or not any(r["best_lr"] for r in rows):
    doc.para("No learning-rate curve: no finished points, or the learning rate is unknown.")
    return
  doc.table(
      ["group", "lrs swept", "best lr", f"mean valid {exp.metric}", "LR sensitivity",
       "95% CI", "basin 1% (decades)", "basin 5% (decades)", "diverged points",
       "first diverged lr"],
      [[r["label"], f"{r['num_lrs']} in [{cell(r['lr_min'])}, {cell(r['lr_max'])}]",
        cell(r["best_lr"]), cell(r["best_mean_valid"]), cell(r["lr_sensitivity"]),
        interval_text(r["lr_sensitivity_ci_low"], r["lr_sensitivity_ci_high"], int(r["n"])),
        _basin_text(r, 1), _basin_text(r, 5), r["diverged_points"],
        cell(r["first_diverged_lr"])] for r in rows])


def _basin_text(r: dict[str, str], pct: int) -> str:
  tag = f"basin_{pct}pct"
  if not r[f"{tag}_decades"]:
    return "n/a"
  text = (f"{r[f'{tag}_decades']} ({r[f'{tag}_lr_low']}..{r[f'{tag}_lr_high']})")
  if r[f"{tag}_open"]:
    text += f", open {r[f'{tag}_open']}"
  return text


def _tuning(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
            figure: str | None) -> None:
  exp = f.experiment
  doc.heading(2, "Tuning curves")
  doc.para(
      f"Expected best final valid {exp.metric} after k random draws (with replacement) from "
      "the group's N finished points (each draw one trained point: a configuration with one "
      "seed, so seed luck counts as it would in a real search), k = 1..N, in closed form "
      "(Dodge et al. 2019; Schmidt et al. 2021), diverged points at the cap; 95% percentile "
      "bootstrap band over the points (many points: the bootstrap is sound here). The full "
      "curves are in `tuning_curves.csv`.")
  if figure:
    doc.figure(figure, "Tuning curves.")
  if not rows:
    doc.para("No finished points yet.")
    return
  table = []
  for g, c in f.tuning:
    if c is None:
      continue
    ks = sorted({1, *[2**i for i in range(1, 20) if 2**i < c.k.size], int(c.k.size)})
    mine = {r["k"]: r for r in rows if r["group"] == g.group}
    for k in ks:
      r = mine[str(k)]
      table.append([g.label, r["k"], r["expected_best"],
                    interval_text(r["ci_low"], r["ci_high"], int(c.k.size))])
  doc.table(["group", "k", f"expected best valid {exp.metric}", "95% band"], table)


def _effects(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
             figure: str | None, two_factor: str | None) -> None:
  doc.heading(2, "Hyperparameter effects")
  varying = sorted({name for e in f.effects for name in e.group.factors})
  if len(varying) <= 1:
    doc.para(("One value factor, `" + varying[0] + "`: its effect is the curve in the "
              "learning-rate sensitivity above (ANOVA in `effects.csv`).") if varying else
             "No value factor varies within a group.")
    return
  doc.para("Which value factors mattered, per group (the structural factors are compared in "
           "the fair comparison above).")
  if figure:
    doc.figure(figure, "Main effects: mean valid metric per level (or bin) of each factor.")
  if two_factor:
    doc.figure(two_factor, "Two-factor view: learning rate against the next most important "
               "factor; points coloured by the valid metric (capped), over a kernel-smoothed "
               "surface.")
  for e in f.effects:
    doc.heading(3, e.group.label)
    doc.para(e.note)
    mine = [r for r in rows if r["group"] == e.group.group]
    if e.kind == "anova":
      doc.table(["term", "sum of squares", "df", "mean square", "F", "p"],
                [[r["term"], cell(r["sum_sq"]), r["df"], cell(r["mean_sq"]), cell(r["F"]),
                  cell(r["p"])] for r in mine])
      significant = [r["term"] for r in mine if r["p"] and float(r["p"]) < 0.05]
      doc.para("Significant at the 5% level: " + (", ".join(f"`{t}`" for t in significant)
                                                  or "none") + ".")
    elif e.kind == "variance":
      doc.table(["factor", "eta^2", "eps^2"],
                [[r["term"], cell(r["eta_sq"]), cell(r["eps_sq"])] for r in mine])
      named = [r for r in mine if r["term"] not in ("seed", "rest") and r["eps_sq"]]
      if named:
        top = max(named, key=lambda r: float(r["eps_sq"]))
        doc.para(f"Largest first-order share: `{top['term']}` (eps^2 = {top['eps_sq']}).")


def _learning(doc: Document, f: fnd.Findings, figure: str | None) -> None:
  doc.heading(2, "Learning curves")
  doc.para("The valid metric over training for the best configuration of each group and its "
           "neighbours in learning rate (the next lower and higher swept lr with the other "
           "factors equal; for random and quasi-random designs the nearest swept lrs), mean "
           "over seeds, each split at its own logged steps, from metrics.jsonl.")
  if figure:
    doc.figure(figure, "Learning curves of the best lr and its neighbours.")
  else:
    doc.para("No learning curves: metrics.jsonl is missing or has no rows for these points.")


def _compute(doc: Document, f: fnd.Findings, rows: list[dict[str, str]]) -> None:
  exp = f.experiment
  doc.heading(2, "Compute")
  if not rows:
    doc.para("run.json has no per-group compute records yet.")
    return
  has_peak = "peak_flops" in exp.run
  devices = exp.run.get("devices", []) or []
  doc.para(
      f"Wall time {cell(rows[-1]['wall_seconds'])} s on {len(devices)} device(s) "
      f"({', '.join(sorted(set(map(str, devices)))) or 'n/a'}). "
      "Points x steps: the steps every point trained, added up (an adaptive design stops points "
      "early; a resumed run counts the steps it trained again). Tokens = tokens_per_step x "
      "points x steps; achieved FLOP/s = flops_per_step x points x steps / train seconds "
      "(flops_per_step per point, from the task). "
      + ("MFU = achieved FLOP/s / run.json peak_flops."
         if has_peak else "No peak_flops in run.json: MFU not reported."))
  columns = ["group", "points", "steps", "points x steps", "tokens", "compile s", "train s",
             "points x steps / s", "achieved FLOP/s"] + (["MFU"] if has_peak else [])
  doc.table(columns, [[r["group"], r["points"], cell(r["steps"]), cell(r["points_steps"]),
                       cell(r["tokens"]),
                       cell(r["compile_seconds"]), cell(r["train_seconds"]),
                       cell(r["points_steps_per_second"]), cell(r["flops_per_second"])]
                      + ([cell(r["mfu"])] if has_peak else []) for r in rows])


def _methods(doc: Document) -> None:
  doc.heading(2, "Methods")
  doc.bullets([
      "Intervals of a mean over seeds: 95% Student t interval below "
      f"{fnd.stats.BCA_MIN_N} seeds (it keeps its coverage at 3 seeds for normal data; a "
      "bootstrap of 3 values would be their range and cover about 75% of the time), BCa "
      f"bootstrap from {fnd.stats.BCA_MIN_N} seeds; with one seed there is none "
      f"('{NO_INTERVAL}').",
      "One statistic: a configuration's value is its mean final valid metric over seeds; it "
      "chooses the best configuration and ranks the groups. Test metrics are reported, never "
      "used to choose.",
      "Verdict: a group beats another when the paired t-test on the test metric, Holm-corrected "
      f"over all pairs of groups, gives p < {vd.ALPHA}. Otherwise the seeds needed are those "
      f"for which the paired t-test (level {vd.ALPHA} / number of pairs) has power "
      f"{vd.POWER} at the observed mean and standard deviation of the paired differences "
      "(noncentral t).",
      "Paired comparisons: replicates share seeds across groups (common random numbers); "
      "differences use only seeds finished in both groups.",
      "A diverged point counts as failed: its metric is the cap l0 (the metric at "
      "initialisation where logged), in tuning, reporting and every statistic.",
      "Grid and factorial designs: ANOVA, factors as categorical levels, Type II sums of "
      "squares (equal to the textbook ones for balanced designs). Random and quasi-random "
      "designs: first-order variance shares of quantile-binned factors.",
      "TensorBoard summaries are not written; every number is in the CSV files next to this "
      "report.",
  ])


def build(f: fnd.Findings, v: vd.Verdict
          ) -> tuple[Document, dict[str, bytes], dict[str, tuple[list, list]]]:
  """The document, its figures (filename -> PNG) and its tables (filename -> (columns, rows))."""
  exp = f.experiment
  figures = {}
  for name, draw in (("lr_sensitivity.png", plots.lr_sensitivity),
                     ("learning_curves.png", plots.learning_curves),
                     ("tuning_curves.png", plots.tuning_curves),
                     ("effects.png", plots.effects),
                     ("two_factor.png", plots.two_factor)):
    fig = draw(f)
    if fig is not None:
      figures[name] = plots.png(fig)

  comp, prs, sens = comparison_rows(f), pair_rows(f), sensitivity_rows(f)
  eff, comp_rows = effects_rows(f), compute_table_rows(f)
  tune = tuning_rows(f)
  tables = {"comparison.csv": (COMPARISON_COLUMNS, comp), "pairs.csv": (PAIR_COLUMNS, prs),
            "sensitivity.csv": (SENSITIVITY_COLUMNS, sens),
            "lr_curves.csv": (LR_CURVE_COLUMNS, lr_curve_rows(f)),
            "tuning_curves.csv": (TUNING_COLUMNS, tune), "effects.csv": (EFFECTS_COLUMNS, eff),
            "compute.csv": (COMPUTE_COLUMNS, comp_rows)}

  doc = Document()
  doc.heading(1, f"Experiment report: `{os.path.basename(os.path.abspath(exp.workdir))}`")
  if not exp.progress.complete:
    doc.banner("Incomplete sweep: " + exp.progress.describe()
               + ". This report shows the finished points only.")
  _verdict(doc, f, v, comp)
  followup.follows_from(doc, exp)
  _comparison(doc, f, comp, prs)
  _sensitivity(doc, f, sens, "lr_sensitivity.png" if "lr_sensitivity.png" in figures else None)
  _tuning(doc, f, tune, "tuning_curves.png" if "tuning_curves.png" in figures else None)
  _effects(doc, f, eff, "effects.png" if "effects.png" in figures else None,
           "two_factor.png" if "two_factor.png" in figures else None)
  _learning(doc, f, "learning_curves.png" if "learning_curves.png" in figures else None)
  more_figures, more_tables = adaptive.section(doc, exp.workdir)  # nothing for a fixed design
  figures.update(more_figures)
  tables.update(more_tables)
  more_figures, more_tables = scale.section(doc, exp.workdir)  # nothing without a scale factor
  figures.update(more_figures)
  tables.update(more_tables)
  _setup(doc, f)
  _compute(doc, f, comp_rows)
  _methods(doc)
  followup.next_experiment(doc, f)
  return doc, figures, tables


@dataclasses.dataclass(frozen=True)
class Written:
  """What `write` wrote and what the console should end with."""

  markdown: str  # path of report.md
  html: str  # path of report.html
  verdict: vd.Verdict
  progress: results.Progress

  def console_lines(self) -> list[str]:
    """The verdict sentences, an incomplete sweep's state, and where the report is."""
    lines = self.verdict.lines()
    if not self.progress.complete:
      lines.append(f"Incomplete: {self.progress.finished} of {self.progress.design_points} points "
                   "finished; the report shows the finished points only.")
    return lines + [f"Report: {self.html}"]


def write(workdir: str | os.PathLike, *, num_resamples: int = 2000, seed: int = 0) -> Written:
  """Analyses the experiment in `workdir` and writes `workdir/report/`.

  Args:
    workdir: an experiment directory (config.json and design.csv at least).
    num_resamples: bootstrap resamples (BCa intervals from 20 seeds, tuning-curve bands).
    seed: seed of the bootstrap.

  Returns:
    The paths written and the verdict.

  Raises:
    FileNotFoundError: `workdir` is not an experiment directory (the message names the
      directory and the missing files).
    ValueError: the experiment's metric is not in its files.
  """
  exp = results.load_experiment(workdir)
  f = fnd.analyse(exp, num_resamples=num_resamples, seed=seed)
  v = vd.verdict(f)
  doc, figures, tables = build(f, v)
  out = os.path.join(exp.workdir, REPORT_DIR)
  for name, png in figures.items():
    files.atomic_write_bytes(os.path.join(out, name), png)
  for name, (columns, rows) in tables.items():
    files.atomic_write_csv(os.path.join(out, name), rows, columns)
  html_path = os.path.join(out, "report.html")
  files.atomic_write_text(html_path,
                          to_html(doc, figures, f"Report: {os.path.basename(exp.workdir)}"))
  path = os.path.join(out, "report.md")
  files.atomic_write_text(path, to_markdown(doc))
  return Written(path, html_path, v, exp.progress)


def write_report(workdir: str | os.PathLike, *, num_resamples: int = 2000, seed: int = 0) -> str:
  """`write`, returning the path of report.md."""
  return write(workdir, num_resamples=num_resamples, seed=seed).markdown
