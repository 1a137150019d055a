"""Several experiments in one comparison: a verdict per task and overall, a per-task table with
intervals, AlgoPerf-style performance profiles and steps / time to a target.

Each experiment is a task; its groups (matched across tasks by label, e.g. the optimizer name)
are the solvers. Per task the numbers are that experiment's own report's (`findings.analyse`):
the tuned optimizer compared on the test metric, its verdict at its own level.

* Verdict per task: the experiment's verdict headline. Overall, for each two groups: on how
  many tasks one beats the other. "A beats B on every task" is an intersection-union claim:
  it holds at each task's level, no correction needed (Berger 1982); anything less is
  reported as counts, not as a win.
* Target of a task: `TARGET_FRACTION` of the way from the metric at initialisation (the cap)
  to the best group's final mean valid metric. Any group can reach it or not: unlike the
  median group's final value, the rule does not decide who fails.
* Steps to target: the mean valid curve of the recommended configuration, linearly
  interpolated between the two evaluations around the crossing (inf: never reached); its
  resolution is the evaluation interval, stated. Time to target: those steps over the group's
  points x steps per second from run.json, one throughput measurement with no replicate, so
  marked indicative (no interval can be given).
* Performance profile (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023): for a solver s and
  tau >= 1, the fraction of tasks on which s reaches the target within tau times the best
  solver's measure; tau runs to the largest finite ratio seen.

Everything is written to the --out directory only; each task's own report is linked, not
rewritten.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os

import numpy as np
from matplotlib.figure import Figure

from jaxopt_lab import files
from jaxopt_lab.analysis import document as dm
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import plots, results
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.report_decisions import metric_range

TARGET_FRACTION = 0.9
REPORT_PAGE = os.path.join("report", "report.html")


def performance_profile(measures: np.typing.ArrayLike, taus: np.typing.ArrayLike) -> np.ndarray:
  """rho[s, j]: the fraction of tasks on which solver s is within taus[j] of the best solver.

  Args:
    measures: `[tasks, solvers]`, positive; inf (or NaN) where the solver failed the task.
    taus: ratios >= 1.

  Returns:
    Array `[solvers, len(taus)]`. A task that every solver failed counts as failed by all.
  """
  m = np.asarray(measures, dtype=np.float64)
  if m.ndim != 2 or m.size == 0:
    raise ValueError(f"measures must be [tasks, solvers], got shape {m.shape}")
  m = np.where(np.isfinite(m), m, np.inf)
  if np.any(m <= 0):
    raise ValueError("measures must be positive (steps or seconds to target)")
  best = m.min(axis=1, keepdims=True)
  with np.errstate(invalid="ignore"):
    ratio = np.where(np.isfinite(best), m / best, np.inf)
  taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
  return (ratio[:, :, None] <= taus[None, None, :]).mean(axis=0)


def steps_to_target(step: np.ndarray, values: np.ndarray, target: float, mode: str) -> float:
  """The step where the curve reaches `target` (<= for "min", >= for "max"), interpolated
  linearly between the evaluation before and the first one that reaches it; inf if none does."""
  s = np.asarray(step, dtype=np.float64)
  v = np.asarray(values, dtype=np.float64)
  reached = ((v <= target) if mode == "min" else (v >= target)) & np.isfinite(v)
  if not reached.any():
    return math.inf
  i = int(np.argmax(reached))
  if i == 0 or not np.isfinite(v[i - 1]) or v[i] == v[i - 1]:
    return float(s[i])
  return float(s[i - 1] + (target - v[i - 1]) / (v[i] - v[i - 1]) * (s[i] - s[i - 1]))


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  workdir: str
  findings: fnd.Findings
  headline: str  # the experiment's verdict headline
  target: float
  resolution: float  # the evaluation interval (steps) of the curves: steps' resolution
  steps: dict[str, float]  # label -> steps to target (inf: never; absent: not in this task)
  seconds: dict[str, float]  # label -> seconds per point to target (NaN: no timing)


def target(f: fnd.Findings) -> float:
  """`TARGET_FRACTION` of the way from the cap to the best group's final mean valid metric."""
  best = f.ranked[0].valid.value if f.ranked else math.nan
  caps = [s.group.cap for s in f.ranked if np.isfinite(s.group.cap)]
  if not (np.isfinite(best) and caps):
    return best
  cap = float(np.median(caps))
  return cap + TARGET_FRACTION * (best - cap)


def task(workdir: str, name: str, *, num_resamples: int = 200, seed: int = 0) -> Task:
  """The verdict, target, steps and time to target of every group of one experiment."""
  exp = results.load_experiment(workdir)
  f = fnd.analyse(exp, num_resamples=num_resamples, seed=seed)
  goal = target(f)
  rates = {str(g.get("group")): g.get("points_steps_per_second")
           for g in exp.run.get("groups", []) or []}
  steps, seconds, gaps = {}, {}, []
  for sel, curves in f.learning_curves:
    best = [c for c in curves if c.role == "best"]
    label = sel.group.label
    steps[label] = (steps_to_target(best[0].step, best[0].valid, goal, exp.mode)
                    if best and np.isfinite(goal) else math.inf)
    if best and best[0].step.size > 1:
      gaps.append(float(np.max(np.diff(best[0].step))))
    rate = rates.get(sel.group.group)
    rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else math.nan
    seconds[label] = steps[label] / rate if np.isfinite(rate) else math.nan
  return Task(name, exp.workdir, f, vd.verdict(f).headline, goal,
              max(gaps) if gaps else math.nan, steps, seconds)


@dataclasses.dataclass(frozen=True)
class Comparison:
  tasks: list[Task]
  labels: list[str]  # solvers, in order of first appearance
  metric: str
  mode: str


def compare(workdirs: list[str], *, num_resamples: int = 200, seed: int = 0) -> Comparison:
  """Loads every experiment; each becomes a task named after its directory."""
  if len(workdirs) < 2:
    raise ValueError(f"--workdir: a comparison needs at least 2 experiments, got {len(workdirs)}")
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names)) < len(names):
    names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
  try:
    exps = [results.load_experiment(w) for w in workdirs]
  except FileNotFoundError as e:  # not an experiment directory: the message says what is missing
    raise ValueError(f"--workdir: {e}") from None
  metrics = {(e.metric, e.mode) for e in exps}
  if len(metrics) > 1:
    raise ValueError(f"--workdir: the experiments tune different metrics {sorted(metrics)}; "
                     "compare experiments of one metric")
  tasks = [task(w, n, num_resamples=num_resamples, seed=seed)
           for w, n in zip(workdirs, names, strict=True)]
  labels = list(dict.fromkeys(label for t in tasks for label in t.steps))
  metric, mode = metrics.pop()
  return Comparison(tasks, labels, metric, mode)


def overall(c: Comparison) -> list[str]:
  """For each two groups present together: the tasks on which one beats the other."""
  lines = []
  for x, y in itertools.combinations(c.labels, 2):
    wins = {x: 0, y: 0}
    shared = 0
    for t in c.tasks:
      for p in t.findings.pairs:
        names = {p.a.group.label, p.b.group.label}
        if names != {x, y} or p.comparison is None:
          continue
        shared += 1
        if p.distinguishable and p.comparison.sd_diff > 0:
          a_better = (p.comparison.mean_diff < 0) == (c.mode == "min")
          wins[p.a.group.label if a_better else p.b.group.label] += 1
    if not shared:
      continue
    if wins[x] == shared or wins[y] == shared:
      winner = x if wins[x] == shared else y
      loser = y if winner == x else x
      lines.append(f"{winner} beats {loser} on every one of the {shared} tasks they share "
                   "(an intersection-union claim: it holds at each task's level).")
    elif wins[x] == wins[y] == 0:
      lines.append(f"{x} and {y} are not distinguishable on any of the {shared} tasks they "
                   "share.")
    else:
      lines.append(f"{x} beats {y} on {wins[x]} and {y} beats {x} on {wins[y]} of the "
                   f"{shared} tasks they share; on the rest they are not distinguishable: no "
                   "overall winner.")
  if not lines:
    return ["No two groups share a task: nothing to compare across tasks."]
  everywhere = [line for line in lines if "on every one of" in line]
  head = (f"{len(everywhere)} of {len(lines)} pairs of groups: one beats the other on every "
          "task they share." if everywhere else
          f"No group beats another on every task ({len(c.tasks)} tasks, each at its own level).")
  return [head, *lines]


def _matrix(c: Comparison, what: str) -> np.ndarray:
  """[tasks, solvers] of steps or seconds; inf where a solver is missing from a task."""
  return np.array([[getattr(t, what).get(label, math.inf) for label in c.labels]
                   for t in c.tasks])


def profile_figure(c: Comparison) -> Figure:
  """Performance profiles of steps and of time to target, side by side; tau up to the largest
  finite ratio (where the information is)."""
  fig = Figure(figsize=(10.0, 4.0), layout="constrained")
  for ax, what, title in zip(fig.subplots(1, 2), ("steps", "seconds"),
                             ("steps to target", "time to target (indicative)"), strict=True):
    m = _matrix(c, what)
    finite = np.where(np.isfinite(m), m, np.nan)
    with np.errstate(invalid="ignore"):
      ratios = finite / np.nanmin(finite, axis=1, keepdims=True) if np.isfinite(m).any() else m
    top = float(np.nanmax(ratios)) if np.isfinite(ratios).any() else 1.0
    taus = np.geomspace(1.0, max(top * 1.05, 1.05), 400)
    if not np.isfinite(m).any():
      ax.text(0.5, 0.5, f"no {title} measured", ha="center", transform=ax.transAxes)
    else:
      for label, r in zip(c.labels, performance_profile(m, taus), strict=True):
        ax.step(taus, r, where="post", label=label)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("tau (ratio to the best on each task)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title(f"Performance profile: {title}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  return fig


def _cell(x: float, spec: str) -> str:
  return "not reached" if x == math.inf else dm.cell(dm.fmt(x, spec))


def _link(t: Task, out: str) -> str:
  page = os.path.join(t.workdir, REPORT_PAGE)
  if not os.path.isfile(page):
    return f"`{t.name}` (no report yet: run scripts/report.py --workdir={t.workdir})"
  return f"[{t.name}]({os.path.relpath(page, out)})"


def _task_rows(t: Task) -> list[list[str]]:
  f = t.findings
  versus = {id(p.a): p for p in f.versus_best}
  bounds = metric_range(f.experiment.metric, f.kind)
  rows = []
  for i, s in enumerate(f.ranked):
    iv = s.test
    mean, low, high = dm.rounded(iv.value, iv.low, iv.high)
    warn = " †" if bounds and iv.n > 1 and (iv.low < bounds[0] or iv.high > bounds[1]) else ""
    p = versus.get(id(s))
    if i == 0 or p is None or p.comparison is None or not p.comparison.sd_diff > 0:
      diff, decision = "best" if i == 0 else "n/a", "-"
    else:
      c = p.comparison
      d, lo, hi = dm.rounded(c.mean_diff, c.ci_low, c.ci_high)
      diff = f"{d} [{lo}, {hi}] ({p.level:.2%})"
      decision = "distinguishable" if p.distinguishable else "not distinguishable"
    rows.append([t.name, s.group.label, dm.fmt_lr(s.lr),
                 f"{mean} [{low}, {high}]{warn}" if low else mean, str(iv.n), diff, decision])
  return rows


def write(workdirs: list[str], out: str, *, num_resamples: int = 200, seed: int = 0) -> str:
  """Writes `out/comparison.md`, `.html`, `profiles.png`, `to_target.csv` and `tasks.csv`
  (nothing elsewhere); returns the HTML's path."""
  c = compare(workdirs, num_resamples=num_resamples, seed=seed)
  doc = dm.Document()
  doc.heading(1, f"Comparison of {len(c.tasks)} experiments")
  doc.heading(2, "Verdict")
  doc.box(overall(c))
  doc.bullets([f"{_link(t, out)}: {t.headline}" for t in c.tasks])
  doc.heading(2, "Per task")
  tuned = f"tuned test {c.metric}"
  doc.para(f"Each task's own verdict and numbers (its report, linked above): {tuned} per "
           "group with its 95% interval (unadjusted), and its difference from the task's "
           "best with the simultaneous interval at the level of the task's verdict.")
  body = [row for t in c.tasks for row in _task_rows(t)]
  doc.table(["task", "group", "recommended lr", f"{tuned} [95% CI]", "seeds",
             f"{tuned} minus the task's best [simultaneous CI]", "verdict"], body)
  doc.heading(2, "Steps and time to target")
  doc.para(
      f"Target of a task: {TARGET_FRACTION:.0%} of the way from the valid {c.metric} at "
      f"initialisation to the best group's final mean valid {c.metric} (any group may miss "
      "it, the best one included: its curve is a mean over seeds). Steps to target: the mean "
      "valid curve of the recommended configuration, interpolated linearly between the "
      "evaluations around the crossing; resolution: the evaluation interval (per task in the "
      "table). Time to target: those steps over the group's points x steps per second, one "
      "throughput measurement per group with no replicate, so **indicative only**: no "
      "interval, and no ranking should rest on a small difference. Performance profile: the "
      "fraction of tasks on which a group is within a factor tau of the fastest (Dolan & "
      "Moré 2002; AlgoPerf).")
  fig = plots.png(profile_figure(c))
  doc.figure("profiles.png", "Performance profiles (higher and further left is better).")
  rows = []
  for t in c.tasks:
    for label in c.labels:
      if label in t.steps:
        rows.append({"task": t.name, "group": label, "target": dm.fmt(t.target),
                     "eval_interval": dm.fmt(t.resolution),
                     "steps_to_target": dm.fmt(t.steps[label]),
                     "seconds_to_target_indicative": dm.fmt(t.seconds[label], ".3g")})
  for what, title, spec in (("steps", "Steps to target", ".4g"),
                            ("seconds", "Time to target (s per point, indicative)", ".2g")):
    doc.heading(3, title)
    doc.table(["task", f"target (valid {c.metric})", "evaluation interval"] + c.labels,
              [[t.name, dm.cell(dm.fmt(t.target, ".4g")), dm.cell(dm.fmt(t.resolution))]
               + [_cell(getattr(t, what)[label], spec) if label in getattr(t, what) else "-"
                  for label in c.labels] for t in c.tasks])
  doc.para("Every digit: [to_target.csv](to_target.csv).")
  files.atomic_write_bytes(os.path.join(out, "profiles.png"), fig)
  files.atomic_write_csv(os.path.join(out, "to_target.csv"), rows,
                         ["task", "group", "target", "eval_interval", "steps_to_target",
                          "seconds_to_target_indicative"])
  files.atomic_write_text(os.path.join(out, "comparison.md"), dm.to_markdown(doc))
  path = os.path.join(out, "comparison.html")
  files.atomic_write_text(path, dm.to_html(doc, {"profiles.png": fig}, "Comparison"))
  return path
