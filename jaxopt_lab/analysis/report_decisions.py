"""The report's sections on decisions: the verdict box with its table, and the fair comparison.

One rule (`selection`): an interval printed beside a verdict has the verdict's level (the
simultaneous one over the m pairs); the per-group intervals are at 95% each, labelled
unadjusted, and live in the fair comparison, outside the verdict box.
"""

from __future__ import annotations

from jaxopt_lab import fairness
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import Document, cell, interval_text, rounded

RANGE_NOTE = "†"  # marks an interval that leaves the range the metric can take


def metric_range(metric: str, kind: str) -> tuple[float, float] | None:
  """The values a metric can take: [0, 1] for accuracy, (0, inf) for a positive one."""
  if metric == "accuracy":
    return 0.0, 1.0
  return (0.0, float("inf")) if kind == "positive" else None


def mean_ci(r: dict[str, str], prefix: str, n: int, bounds: tuple[float, float] | None) -> str:
  """`prefix`_mean with its interval, rounded to the interval's precision; `RANGE_NOTE` where
  the interval leaves `bounds`."""
  mean, low, high = r[f"{prefix}_mean"], r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
  if not mean:
    return "n/a"
  if not (low and high):
    return f"{mean} ({interval_text(low, high, n)})"
  m, lo, hi = rounded(float(mean), float(low), float(high))
  out = f"{m} [{lo}, {hi}]"
  if bounds and (float(low) < bounds[0] or float(high) > bounds[1]):
    out += " " + RANGE_NOTE
  return out


def _diff(r: dict[str, str]) -> str:
  if r["rank"] == "1":
    return "best"
  if not (r["diff_ci_low"] and r["diff_ci_high"]):
    n = int(r["pairs"] or 0)
    return f"{cell(r['diff_vs_best'])} ({interval_text(r['diff_ci_low'], r['diff_ci_high'], n)})"
  m, lo, hi = rounded(float(r["diff_vs_best"]), float(r["diff_ci_low"]),
                      float(r["diff_ci_high"]))
  return f"{m} [{lo}, {hi}]"


def _level(rows: list[dict[str, str]]) -> str:
  levels = {r["diff_ci_level"] for r in rows if r["diff_ci_level"]}
  return f"{float(levels.pop()):.2%}" if len(levels) == 1 else "simultaneous"


def verdict_section(doc: Document, f: fnd.Findings, v: vd.Verdict,
                    rows: list[dict[str, str]]) -> None:
  exp = f.experiment
  doc.heading(2, "Verdict")
  doc.box(v.lines())
  if len(rows) < 2 or not any(r["test_mean"] for r in rows):
    return
  settings = any(r["settings"] for r in rows)  # a one-factor sweep has none to show
  tuned = f"tuned {exp.test_split} {exp.metric}"
  doc.table(
      ["group", "recommended lr"] + (["other settings"] if settings else [])
      + [f"valid {exp.metric} at the recommended lr (mean; the selection criterion)",
         f"{tuned} (mean)",
         f"{tuned} minus the best's [{_level(rows)} simultaneous CI]",
         "Bonferroni p"],
      [[r["label"], cell(r["learning_rate"])] + ([r["settings"] or "-"] if settings else [])
       + [cell(r["valid_mean"]), cell(r["test_mean"]), _diff(r),
          cell(r["p_bonferroni"]) if r["rank"] != "1" else "-"] for r in rows])
  doc.para(f"Rows ranked by the valid {exp.metric} (what chose them). The difference and its "
           "interval are on the compared quantity, the tuned optimizer's "
           f"{exp.test_split} {exp.metric}; its interval holds jointly over all "
           f"{len(f.pairs)} pair(s), so it excludes 0 exactly when the verdict says "
           "\"beats\". The valid value of a chosen configuration has no interval: choosing the "
           "best of many makes it look better than it is.")


def comparison_section(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
                       prs: list[dict[str, str]]) -> None:
  exp = f.experiment
  doc.heading(2, "Fair comparison")
  bounds = metric_range(exp.metric, f.kind)
  acc = any(r["accuracy_mean"] for r in rows)
  tuned = f"tuned {exp.test_split} {exp.metric}"
  doc.para(
      f"The compared quantity is the tuned optimizer: on each seed, the configuration with the "
      f"best final valid {exp.metric} on that seed, evaluated on the same seed's final "
      f"{exp.test_split} {exp.metric} (diverged seeds at the cap). The recommended lr is the "
      f"one with the best mean valid {exp.metric} over seeds (rank order). Per-group intervals: "
      f"95% each, unadjusted ({fnd.stats.interval_method(3, f.kind)} interval, the metric being "
      f"of kind '{f.kind}'; `jaxopt_lab/analysis/intervals.py`); not for deciding. Differences "
      f"are paired over the shared seeds (row minus the best group): the simultaneous t "
      f"interval and the paired t-test (`scipy.stats.ttest_rel`) with Bonferroni's correction "
      f"over all {len(prs)} pair(s) (the verdict's rule), and the Wilcoxon signed-rank test "
      f"(`scipy.stats.wilcoxon`, from {fnd.stats.WILCOXON_MIN_PAIRS} pairs, unadjusted). "
      "Numbers in the text are rounded to their interval's precision; every digit is in "
      "[comparison.csv](comparison.csv) and [pairs.csv](pairs.csv).")
  unfair = fairness.unfair(fairness.from_summary(
      exp.summary.get("group", ()), exp.summary)) if "group" in exp.summary else []
  if unfair:
    doc.para("Not like for like: " + "; ".join(unfair) + ".")
  if not any(r["test_mean"] for r in rows):
    doc.para("No finished points yet.")
    return
  if len(rows) == 1:
    r = rows[0]
    doc.para(
        f"One group: {r['label']} at its best configuration (lr {cell(r['learning_rate'])}"
        + (f", {r['settings']}" if r["settings"] else "") + f"), chosen on the mean final valid "
        f"{exp.metric} over seeds: valid {cell(r['valid_mean'])} (the selection criterion, no "
        f"interval); {tuned} {mean_ci(r, 'test', int(r['n'] or 0), bounds)} (95%, n={r['n']}; "
        f"points {cell(r['best_points'])}). Budget: {r['configs']} configurations, "
        f"{r['points']} points, {cell(r['steps'])} steps each.")
    return
  doc.table(
      ["rank", "group", "recommended lr", "other settings", "budget (configs / points / steps)",
       f"valid {exp.metric} (selection criterion, no interval)",
       f"{tuned} [95% CI, unadjusted]", "n"]
      + ([f"tuned {exp.test_split} accuracy [95% CI, unadjusted]"] if acc else [])
      + ["diverged at the recommended lr", f"{tuned} minus the best's [{_level(rows)} "
         "simultaneous CI]", "Bonferroni p", "Wilcoxon p (unadjusted)"],
      [[r["rank"], r["label"], cell(r["learning_rate"]), r["settings"] or "-",
        f"{r['configs']} / {r['points']} / {cell(r['steps'])}", cell(r["valid_mean"]),
        mean_ci(r, "test", int(r["n"] or 0), bounds), r["n"]]
       + ([mean_ci(r, "accuracy", int(r["n"] or 0), (0.0, 1.0))] if acc else [])
       + [r["diverged_replicates"], _diff(r),
          cell(r["p_bonferroni"]) if r["rank"] != "1" else "-",
          cell(r["wilcoxon_pvalue"]) if r["rank"] != "1" else "-"] for r in rows])
  if any(RANGE_NOTE in mean_ci(r, k, int(r["n"] or 0), b) for r in rows
         for k, b in (("test", bounds), ("accuracy", (0.0, 1.0))) if r[f"{k}_mean"]):
    doc.para(f"{RANGE_NOTE} The interval leaves the range the metric can take: with few seeds "
             "the t interval is wide; the true mean is inside the range, so read the interval "
             "as reaching its edge.")
  if len(prs) > 1:
    doc.para(f"All pairs (a minus b, a ranked before b) on the {tuned}; Bonferroni over these "
             f"{len(prs)} t-tests, each interval at the simultaneous level "
             f"{_level([{'diff_ci_level': p['ci_level']} for p in prs])}:")
    doc.table(["a", "b", "pairs", "mean diff [simultaneous CI]", "t", "t-test p",
               "Bonferroni p", "distinguishable", "Wilcoxon p (unadjusted)"],
              [[p["a"], p["b"], p["pairs"], _pair_diff(p), cell(p["t_statistic"]),
                cell(p["t_pvalue"]), cell(p["p_bonferroni"]),
                "yes" if p["distinguishable"] == "True" else "no",
                cell(p["wilcoxon_pvalue"])] for p in prs])


def _pair_diff(p: dict[str, str]) -> str:
  return _diff({"rank": "", "diff_vs_best": p["mean_diff"], "diff_ci_low": p["ci_low"],
                "diff_ci_high": p["ci_high"], "pairs": p["pairs"]})
