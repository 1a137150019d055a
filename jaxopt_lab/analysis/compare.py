"""Several experiments in one comparison: AlgoPerf-style performance profiles and
steps-to-target / time-to-target tables (e.g. the same optimizers on several tasks).

Each experiment is a task; its groups (matched across tasks by label, e.g. the optimizer name)
are the solvers. Per task, every group runs at its own best configuration (`findings.select`,
the mean validation metric over seeds), and its learning curve is the mean over seeds of the
validation metric at the logged evaluation steps.

* Target of a task: the final mean validation metric of the median group's best configuration
  (groups ordered by it; with an even count the worse of the two middle ones), so at least half
  of the groups reach it. AlgoPerf fixes targets from tuned baselines; with no baseline at hand
  the experiments' own median is the closest honest stand-in.
* Steps to target: the first logged evaluation step at which the mean curve reaches the target
  (inf: never). Time to target: those steps over the group's points x steps per second from
  run.json, i.e. the training time per point, compile and checkpoint time excluded.
* Performance profile (Dolan & Moré 2002; AlgoPerf, Dahl et al. 2023): for a solver s and
  tau >= 1, the fraction of tasks on which s reaches the target within tau times the best
  solver's measure on that task.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from matplotlib.figure import Figure

from jaxopt_lab import files
from jaxopt_lab.analysis import document as dm
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import plots, results

TAU_MAX = 10.0


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
  """The first logged step whose value reaches `target` (<= for "min", >= for "max"); inf if
  none does."""
  v = np.asarray(values, dtype=np.float64)
  reached = (v <= target) if mode == "min" else (v >= target)
  reached &= np.isfinite(v)
  return float(np.asarray(step)[reached][0]) if reached.any() else math.inf


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  workdir: str
  target: float
  steps: dict[str, float]  # label -> steps to target (inf: never; absent: not in this task)
  seconds: dict[str, float]  # label -> seconds per point to target (NaN: no timing)


def _target(selections: list[fnd.Selection], mode: str) -> float:
  finals = sorted((s.valid.value for s in selections if np.isfinite(s.valid.value)),
                  reverse=mode == "max")
  if not finals:
    return math.nan
  return finals[len(finals) // 2]  # the median; with an even count the worse middle one


def task(workdir: str, name: str, *, num_resamples: int = 200, seed: int = 0) -> Task:
  """Target, steps and time to target of every group of one experiment."""
  exp = results.load_experiment(workdir)
  f = fnd.analyse(exp, num_resamples=num_resamples, seed=seed)
  target = _target(f.ranked, exp.mode)
  rates = {str(g.get("group")): g.get("points_steps_per_second")
           for g in exp.run.get("groups", []) or []}
  steps, seconds = {}, {}
  for sel, curves in f.learning_curves:
    best = [c for c in curves if c.role == "best"]
    label = sel.group.label
    steps[label] = (steps_to_target(best[0].step, best[0].valid, target, exp.mode)
                    if best and np.isfinite(target) else math.inf)
    rate = rates.get(sel.group.group)
    rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else math.nan
    seconds[label] = steps[label] / rate if np.isfinite(rate) else math.nan
  return Task(name, exp.workdir, target, steps, seconds)


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
  exps = [results.load_experiment(w) for w in workdirs]
  metrics = {(e.metric, e.mode) for e in exps}
  if len(metrics) > 1:
    raise ValueError(f"--workdir: the experiments tune different metrics {sorted(metrics)}; "
                     "compare experiments of one metric")
  tasks = [task(w, n, num_resamples=num_resamples, seed=seed)
           for w, n in zip(workdirs, names, strict=True)]
  labels = list(dict.fromkeys(label for t in tasks for label in t.steps))
  metric, mode = metrics.pop()
  return Comparison(tasks, labels, metric, mode)


def _matrix(c: Comparison, what: str) -> np.ndarray:
  """[tasks, solvers] of steps or seconds; inf where a solver is missing from a task."""
  return np.array([[getattr(t, what).get(label, math.inf) for label in c.labels]
                   for t in c.tasks])


def profile_figure(c: Comparison) -> Figure:
  """Performance profiles of steps and of time to target, side by side."""
  taus = np.geomspace(1.0, TAU_MAX, 400)
  fig = Figure(figsize=(10.0, 4.0), layout="constrained")
  for ax, what, title in zip(fig.subplots(1, 2), ("steps", "seconds"),
                             ("steps to target", "time to target"), strict=True):
    m = _matrix(c, what)
    if np.all(~np.isfinite(m)):
      ax.text(0.5, 0.5, f"no {title} measured", ha="center", transform=ax.transAxes)
    else:
      rho = performance_profile(m, taus)
      for label, r in zip(c.labels, rho, strict=True):
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


def write(workdirs: list[str], out: str, *, num_resamples: int = 200, seed: int = 0) -> str:
  """Writes `out/comparison.md`, `.html`, `profiles.png` and `to_target.csv`; returns the
  HTML's path."""
  c = compare(workdirs, num_resamples=num_resamples, seed=seed)
  doc = dm.Document()
  doc.heading(1, f"Comparison of {len(c.tasks)} experiments")
  doc.para(
      f"Tasks: {', '.join(f'`{t.name}`' for t in c.tasks)}. Each group at its best "
      f"configuration (mean valid {c.metric} over seeds). Target of a task: the final mean "
      f"valid {c.metric} of the median group's best configuration. Steps to target: the "
      "first logged evaluation step where the mean curve reaches it; time to target: those "
      "steps over the group's points x steps per second (training time per point, compile "
      "excluded). Performance profile: the fraction of tasks on which a group is within a "
      "factor tau of the fastest (Dolan & Moré 2002; AlgoPerf).")
  fig = plots.png(profile_figure(c))
  doc.figure("profiles.png", "Performance profiles (higher and further left is better).")
  rows = []
  for t in c.tasks:
    for label in c.labels:
      if label in t.steps:
        rows.append({"task": t.name, "group": label, "target": dm.fmt(t.target),
                     "steps_to_target": dm.fmt(t.steps[label]),
                     "seconds_to_target": dm.fmt(t.seconds[label], ".4g")})
  for what, title, spec in (("steps", "Steps to target", ".6g"),
                            ("seconds", "Time to target (s per point)", ".3g")):
    doc.heading(2, title)
    doc.table(["task", f"target ({c.metric})"] + c.labels,
              [[t.name, dm.cell(dm.fmt(t.target))]
               + [_cell(getattr(t, what)[label], spec) if label in getattr(t, what) else "-"
                  for label in c.labels] for t in c.tasks])
  files.atomic_write_bytes(os.path.join(out, "profiles.png"), fig)
  files.atomic_write_csv(os.path.join(out, "to_target.csv"), rows,
                         ["task", "group", "target", "steps_to_target", "seconds_to_target"])
  files.atomic_write_text(os.path.join(out, "comparison.md"), dm.to_markdown(doc))
  path = os.path.join(out, "comparison.html")
  files.atomic_write_text(path, dm.to_html(doc, {"profiles.png": fig}, "Comparison"))
  return path
