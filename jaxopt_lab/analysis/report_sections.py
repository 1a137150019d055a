"""The report's descriptive sections: sensitivity, tuning, effects, learning curves, setup,
compute and methods."""

from __future__ import annotations

from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import looks
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import NO_INTERVAL, Document, cell, fmt, interval_text


def setup(doc: Document, f: fnd.Findings) -> None:
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


def sensitivity(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
                 figure: str | None) -> None:
  exp = f.experiment
  doc.heading(2, "Learning-rate sensitivity")
  doc.para(
      f"Final valid {exp.metric} against the learning rate: at each swept lr the configuration "
      "with the best mean over seeds (the profile over any other value factor), its mean "
      f"and 95% interval over seeds ({fnd.stats.interval_method(3, f.kind)}); the best lr is "
      "starred, the cap (the metric at initialisation) is the dashed line, and the y axis "
      "shows the informative range: a mean beyond it is drawn as a hollow triangle at its edge "
      "with its value written beside it; diverged seeds are marked with an x in their group's "
      "colour, at the cap, with the step where they diverged; a hollow square at the cap marks "
      "an lr where a seed that did not diverge ended worse than at initialisation and counts "
      "at the cap. LR sensitivity (Wortsman et al. "
      "2023): the mean "
      f"over the swept learning rates of min(l(lr), l0) - l*, l* the best capped value and l0 "
      f"the cap, computed per seed and averaged (95% interval over seeds). Basin: the "
      "width in decades of lr around the best lr where the mean stays within 1% / 5% of the "
      "improvement from initialisation (best + 1% / 5% of (cap - best): an offset of the "
      "metric changes nothing) (linear interpolation in log10 lr; 'open' = reaches the edge "
      "of the swept range, so the true basin may be wider). Every digit: "
      "[sensitivity.csv](sensitivity.csv), [lr_curves.csv](lr_curves.csv).")
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


def tuning(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
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


def effects(doc: Document, f: fnd.Findings, rows: list[dict[str, str]],
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


def learning(doc: Document, f: fnd.Findings, figure: str | None) -> None:
  doc.heading(2, "Learning curves")
  doc.para("The valid metric over training for the best configuration of each group and its "
           "neighbours in learning rate (the next lower and higher swept lr with the other "
           "factors equal; for random and quasi-random designs the nearest swept lrs), mean "
           "over seeds, each split at its own logged steps, from metrics.jsonl.")
  if figure:
    doc.figure(figure, "Learning curves of the best lr and its neighbours.")
  else:
    doc.para("No learning curves: metrics.jsonl is missing or has no rows for these points.")


def compute(doc: Document, f: fnd.Findings, rows: list[dict[str, str]]) -> None:
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


def methods(doc: Document, f: fnd.Findings) -> None:
  m = len(f.pairs)
  doc.heading(2, "Methods")
  doc.bullets([
      "Intervals of a mean over seeds (`jaxopt_lab/analysis/intervals.py`, chosen by "
      "simulation at 3 to 30 seeds): for a positive metric such as a loss, Cox's interval of a "
      "lognormal mean (95% cover 94.5-95.0% for lognormal(0.5) data, where the t interval "
      "covers 91.5-93.4%); for any other metric the Student t interval (95.0% for normal data, "
      f"95.6-96.3% for t(3)). This metric is of kind '{f.kind}'. With one seed there is no "
      f"interval ('{NO_INTERVAL}').",
      "Choosing: a configuration's value is its mean final valid metric over seeds; it picks "
      "the recommended configuration and ranks the groups. The compared quantity is the tuned "
      "optimizer: on each seed the configuration best on that seed's valid metric, evaluated "
      "on its test metric (the choosing is inside what is compared, so a lucky choice is not "
      "a win). Test metrics are reported, never used to choose.",
      f"Verdict: a group beats another when the paired t-test on the tuned test metric, "
      f"Bonferroni-corrected over the {m} pair(s) of groups, gives p < {f.alpha:g} (look "
      f"{f.look} of a chain of follow-ups: levels {looks.ALPHA:g} x {1 - looks.RATIO:g} x "
      f"{looks.RATIO:g}^(look - 1), so all looks together keep {looks.ALPHA:g}); the interval "
      f"of each difference is the simultaneous one at {1 - f.alpha / max(m, 1):.2%}, so it "
      "excludes 0 exactly when the verdict says \"beats\". Otherwise the seeds needed are a "
      f"range: those for which the paired t-test at level {f.alpha:g} / {m} has power "
      f"{vd.POWER}, over the {vd.RANGE_LEVEL:.0%} confidence interval of the effect size "
      "(noncentral t inverted; unbounded where that interval holds 0).",
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
