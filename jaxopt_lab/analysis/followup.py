"""Follow-ups: the next experiment, designed from the report of a finished one (no JAX).

  python scripts/sweep.py --continue_from=runs/a --workdir=runs/b

`propose(a, base)` reads the experiment directory `a` through `jaxopt_lab.analysis` (the numbers
its report shows) and returns `base` (a's own config.json when None) with two kinds of change,
each with its reason in words:

* **Learning rate: narrowed to the measured basin.** In each group, the report's 5% basin
  (`BASIN_TOLERANCE`: the lrs around the best where the mean over seeds stays within 5% of the
  best, `stats.basin_width`) and one swept step out on each side: the new range runs from the
  swept lr below the basin to the one above it. Where the basin is open (it reaches the edge of
  the swept range, so the true one may be wider), one step beyond that edge, in the factor's
  scale. Every group runs the same value points (paired comparisons), so the new range is the
  hull of the groups' ranges. The factor keeps its form and scale (a range stays a range, its
  `num` kept; a list of values becomes as many values spread over the new range): a finer grid
  for the same cost per seed. Groups that diverged at every learning rate, or learned at none
  (every point at the cap), are named in `notes` and shape nothing. An explicit design's points
  are given by hand and are not changed. An adaptive design's basin is over the points that
  trained the full budget, as in its report (so often the best alone: one step out around it).
  (The 95% intervals of the curve are not used: with the
  2 or 3 seeds sweeps run, they overlap over most of the range and would narrow nothing.)
* **Seeds: more where the verdict was "not distinguishable".** For each group the verdict
  compares with the best (`verdict.verdict`) and cannot tell apart, the seeds its power
  computation asks for (`verdict.seeds_needed`; beyond `verdict.MAX_SEEDS`: unbounded); without
  one (one seed, or no spread between seeds), twice a's seeds and at least 3. `sweep.replicates`
  becomes the largest of these, capped at `MAX_SEED_FACTOR` times a's seeds (a difference that
  needs more is small next to the seed noise: report it as such rather than buy it). A pair with
  the same difference on every seed is left alone: more seeds would not change it.

The design type stays the source's (adaptive ones included; set back where `base` names
another); everything else (adaptive settings, the other factors, the training) stays as in
`base`. A field set on the command line (`keep`, the overridden paths) wins: the proposal
leaves it and says so. The new config records its source in `sweep.continue_from`; the
follow-up's workdir holds `followup.json` (`record`), which its report shows ("Follows from").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
from collections.abc import Collection, Iterator
from typing import Any

import ml_collections
import numpy as np

from jaxopt_lab import expdir, files, workdirs
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import results
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import Document, fmt_lr

FLAG = "--continue_from"
BASIN_TOLERANCE = fnd.BASIN_TOLERANCES[-1]  # the report's wider basin: within 5% of the best
MAX_SEED_FACTOR = 4  # the follow-up runs at most this many times a's seeds
LR_FIELD = "sweep.factors.learning_rate"
SEEDS_FIELD = "sweep.replicates"
DESIGN_FIELD = "sweep.design"


@dataclasses.dataclass(frozen=True)
class Change:
  """One field of the config the proposal changes: its old and new value, and why."""

  field: str
  old: Any
  new: Any
  reason: str


@dataclasses.dataclass(frozen=True)
class Proposal:
  """The next experiment: its config, the changes from the base config, and notes."""

  source: str  # the experiment it follows from, as given
  config: ml_collections.ConfigDict
  changes: tuple[Change, ...]
  notes: tuple[str, ...]  # what was measured but changed nothing (failed groups, kept fields)

  def record(self) -> dict[str, Any]:
    """The content of followup.json."""
    return {"source": self.source, "changes": [dataclasses.asdict(c) for c in self.changes],
            "notes": list(self.notes)}


def check_finished(workdir: str) -> results.Experiment:
  """The experiment in `workdir`, loaded; raises ValueError naming --continue_from unless it
  is a finished sweep (every point finished and run.json status 'complete')."""
  where = f"{FLAG}: {workdir!r}"
  if not os.path.isdir(workdir):
    raise ValueError(f"{where} does not exist; give the --workdir of a finished sweep")
  if expdir.is_single_run(workdir):
    raise ValueError(f"{where} is a single run's directory (scripts/train.py); a follow-up "
                     "continues from a finished sweep (scripts/sweep.py)")
  needed = (expdir.CONFIG_FILE, expdir.DESIGN_FILE, expdir.SUMMARY_FILE)
  missing = [f for f in needed if not os.path.isfile(os.path.join(workdir, f))]
  if missing:
    raise ValueError(f"{where} is not an experiment directory (missing {', '.join(missing)}); "
                     "give the --workdir of a finished sweep (scripts/sweep.py)")
  try:
    exp = results.load_experiment(workdir)
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f"{where}: {e}") from None
  if not exp.progress.complete:
    raise ValueError(f"{where} is not a finished experiment ({exp.progress.describe()}); run "
                     "its sweep to the end first (its command resumes it)")
  return exp


def propose(workdir: str, base: ml_collections.ConfigDict | None = None, *,
            keep: Collection[str] = ()) -> Proposal:
  """The follow-up of the finished experiment in `workdir` (see the module docstring).

  Args:
    workdir: the finished experiment, as given on the command line.
    base: the config to change; None: the experiment's own config.json.
    keep: config paths set on the command line; the proposal changes none of them.

  Returns:
    The proposal.

  Raises:
    ValueError: naming --continue_from, when `workdir` is not a finished sweep.
  """
  exp = check_finished(workdir)
  return propose_from(fnd.analyse(exp), base, source=workdir, keep=keep)


def base_config(exp: results.Experiment) -> ml_collections.ConfigDict:
  """The config an experiment ran (its config.json), as a ConfigDict."""
  return ml_collections.ConfigDict(exp.config)


def propose_from(f: fnd.Findings, base: ml_collections.ConfigDict | None, *, source: str,
                 keep: Collection[str] = ()) -> Proposal:
  """`propose` from the findings of a loaded experiment (what its report measured)."""
  exp = f.experiment
  config = base_config(exp) if base is None else copy.deepcopy(base)
  notes: list[str] = []
  changes = [c for c in (_design_change(f, config), _lr_change(f, config, notes),
                         _seeds_change(f, config, notes)) if c]
  applied = []
  for c in changes:
    kept = [k for k in keep if k == c.field or k.startswith(c.field + ".")
            or c.field.startswith(k + ".")]
    if kept:
      notes.append(f"`{c.field}` is set on the command line (--config.{', '.join(sorted(kept))}"
                   f"): the proposal's {_text(c.new)} is not applied ({c.reason})")
      continue
    _set(config, c.field, c.new)
    applied.append(c)
  config.sweep.continue_from = os.path.normpath(source)
  return Proposal(source, config, tuple(applied), tuple(notes))


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node: Any = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return None
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, name = path.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[name] = value


def _text(value: Any) -> str:
  return json.dumps(value, sort_keys=True)


def _design_change(f: fnd.Findings, config: ml_collections.ConfigDict) -> Change | None:
  """The source's design type, where a base config file names another."""
  ran, base = f.experiment.design_name, _get(config, DESIGN_FIELD)
  if ran == "unknown" or base == ran:
    return None
  return Change(DESIGN_FIELD, base, ran, f"Kept the design the source ran ({ran}): a follow-up "
                "refines the same kind of experiment.")


# ---------------------------------------------------------------------------------------------
# The learning rate.


def _learned(g: results.Group) -> bool:
  """Whether some finished point of the group neither diverged nor stayed at the cap."""
  scored = g.scored("valid")
  return bool(np.any(g.finished & ~g.diverged & np.isfinite(scored) & (scored != g.cap)))


def _group_range(s: fnd.Sensitivity, log: bool) -> tuple[float, float, str] | None:
  """The group's new lr range and why; None when it has no basin to narrow to."""
  c, basin = s.curve, s.basins[fnd.BASIN_TOLERANCES.index(BASIN_TOLERANCE)]
  if c is None or c.lr.size < 2 or not math.isfinite(basin.width_decades):
    return None
  inside = np.flatnonzero((c.lr >= basin.lr_low * (1 - 1e-9))
                          & (c.lr <= basin.lr_high * (1 + 1e-9)))
  lo, hi = int(inside.min()), int(inside.max())

  def beyond(edge: int, inner: int) -> float:  # one step past the edge, in the factor's scale
    x, y = c.lr[edge], c.lr[inner]
    return float(x * x / y) if log else float(max(2 * x - y, 0.0) or x)

  low = float(c.lr[lo - 1]) if lo > 0 else beyond(0, 1)
  high = float(c.lr[hi + 1]) if hi + 1 < c.lr.size else beyond(-1, -2)
  why = (f"{s.group.label}: best lr {fmt_lr(s.best_lr)}, {BASIN_TOLERANCE:.0%} basin "
         f"{fmt_lr(basin.lr_low)}..{fmt_lr(basin.lr_high)}, so {fmt_lr(low)}..{fmt_lr(high)} "
         "(one swept step out" + (", past the edge of the swept range: the basin is open there"
                                  if lo == 0 or hi + 1 == c.lr.size else "") + ")")
  return low, high, why


def _lr_change(f: fnd.Findings, config: ml_collections.ConfigDict,
               notes: list[str]) -> Change | None:
  for s in f.sensitivities:
    g = s.group
    if not g.finished.any():
      notes.append(f"{g.label}: no finished point: it says nothing about the learning rate.")
    elif g.diverged[g.finished].all():
      notes.append(f"{g.label} diverged at every learning rate it ran: it shapes no range; "
                   "try lower learning rates (or clipping) in its own experiment.")
    elif not _learned(g):
      notes.append(f"{g.label} learned at no learning rate (every point at the cap "
                   f"{g.cap:.4g}): it shapes no range.")
  spec = _get(config, LR_FIELD)
  if f.experiment.design_name == "explicit":
    notes.append("The explicit design's points are given by hand: the learning rate is not "
                 "narrowed (edit sweep.points).")
    return None
  if not isinstance(spec, dict) or not ("values" in spec or {"low", "high"} <= set(spec)):
    notes.append("The learning rate is not a factor of the base config declared by values or "
                 "a range: not narrowed.")
    return None
  values = spec.get("values")
  log = spec.get("scale", "log") == "log" and (values is None or min(values) > 0)
  ranges = [r for s in f.sensitivities if s.group.finished.any() and _learned(s.group)
            and (r := _group_range(s, log)) is not None]
  if not ranges:
    notes.append("No group has a learning-rate basin to narrow to (one learning rate swept, or "
                 "no group learned): the learning rate is not changed.")
    return None
  low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
  old_low, old_high = (min(values), max(values)) if values else (spec["low"], spec["high"])
  if low >= high or (math.isclose(low, old_low) and math.isclose(high, old_high)):
    notes.append("The measured basins span the swept learning-rate range: it is kept. "
                 + "; ".join(r[2] for r in ranges) + ".")
    return None
  if values:
    grid = np.geomspace(low, high, len(values)) if log else np.linspace(low, high, len(values))
    new = {**spec, "values": [float(x) for x in grid]}
    size = f"the same {len(values)} values, spread over it"
  else:
    new = {**spec, "low": low, "high": high}
    size = f"num {spec['num']} kept: a finer grid" if "num" in spec else "drawn from it"
  hull = " The groups share the value points, so the new range covers each one." if len(
      ranges) > 1 else ""
  return Change(LR_FIELD, spec, new,
                "Narrowed to the measured basin: " + "; ".join(r[2] for r in ranges) + "."
                + hull + f" Range {fmt_lr(low)}..{fmt_lr(high)} ({size}).")


# ---------------------------------------------------------------------------------------------
# The seeds.


def _seeds_change(f: fnd.Findings, config: ml_collections.ConfigDict,
                  notes: list[str]) -> Change | None:
  seeds = f.experiment.num_replicates
  targets = []
  for p in f.versus_best:
    c, names = p.comparison, f"{p.b.group.label} and {p.a.group.label}"
    if c is None:
      notes.append(f"{names} share no finished seed: not compared.")
      continue
    spread = c.n >= 2 and math.isfinite(c.sd_diff) and c.sd_diff > 0
    if spread and p.distinguishable:
      continue  # the verdict tells them apart
    if not spread and c.n >= 2 and c.mean_diff != 0:
      continue  # the same difference on every seed: more seeds would not change it
    seeds_run = f"{c.n} seed" + ("" if c.n == 1 else "s")
    if spread:
      low, high = vd.seeds_needed(p)
      asks = f"{low} to {high}" if high is not None else f"at least {low}"
      targets.append((low, f"{names} are not distinguishable with {seeds_run} (Bonferroni p = "
                           f"{p.p_adjusted:.3g}); the verdict's range of seeds needed is {asks}, "
                           "the follow-up runs its lower end"))
    else:
      targets.append((max(2 * seeds, 3), f"{names} are not distinguishable with {seeds_run} "
                                         "(no spread to estimate power from): twice the seeds, "
                                         "at least 3"))
  if not targets:
    return None
  target, why = max(targets, key=lambda t: t[0])
  new = int(min(target, MAX_SEED_FACTOR * seeds))
  old = _get(config, SEEDS_FIELD)
  if isinstance(old, int) and new <= old:
    notes.append(f"{why}; the base config already runs {old} seeds.")
    return None
  capped = f", capped at {MAX_SEED_FACTOR}x the {seeds} seeds of the experiment" if (
      new < target) else ""
  return Change(SEEDS_FIELD, old, new, f"More seeds: {why}{capped}.")


# ---------------------------------------------------------------------------------------------
# followup.json and the report.


def check_workdir(workdir: str, proposal: Proposal) -> None:
  """Raises ValueError naming --workdir where the follow-up cannot run; writes nothing."""
  source = proposal.source
  if os.path.exists(workdir) and os.path.samefile(workdir, source):
    raise ValueError(f"--workdir: {workdir!r} is the experiment of {FLAG}; the follow-up needs "
                     "a new workdir (e.g. " + os.path.normpath(source) + "-next)")
  workdirs.check_config(workdir, proposal.config)


@contextlib.contextmanager
def recorded(workdir: str, proposal: Proposal) -> Iterator[None]:
  """Writes followup.json into `workdir` (atomically) for the run inside the block.

  A run refused before it recorded its config (so before it wrote anything) gets the workdir
  back as it was: the record removed, or the earlier one put back, and a folder created here
  removed again.
  """
  check_workdir(workdir, proposal)
  path = os.path.join(workdir, expdir.FOLLOWUP_FILE)
  existed = os.path.isdir(workdir)
  before = None
  if os.path.isfile(path):
    with open(path, "rb") as f:
      before = f.read()
  files.atomic_write_json(path, proposal.record())
  try:
    yield
  except BaseException:
    if not os.path.exists(os.path.join(workdir, expdir.CONFIG_FILE)):
      if before is None:
        os.unlink(path)
        if not existed and not os.listdir(workdir):
          os.rmdir(workdir)
      else:
        files.atomic_write_bytes(path, before)
    raise


def read_record(workdir: str) -> dict[str, Any] | None:
  """followup.json of `workdir`; None when it is not a follow-up."""
  path = os.path.join(workdir, expdir.FOLLOWUP_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _change_items(changes: list[dict[str, Any]], notes: list[str]) -> list[str]:
  return ([f"`{c['field']}`: `{_text(c['old'])}` -> `{_text(c['new'])}`. {c['reason']}"
           for c in changes] + list(notes))


def follows_from(doc: Document, exp: results.Experiment) -> None:
  """The report's "Follows from" section, for a follow-up's workdir."""
  rec = read_record(exp.workdir)
  if rec is None:
    return
  doc.heading(2, "Follows from")
  doc.para(f"This experiment follows from `{rec['source']}` (scripts/sweep.py {FLAG}; "
           f"{expdir.FOLLOWUP_FILE}). " + ("Changes from the base config:" if rec["changes"]
                                           else "The base config ran unchanged."))
  doc.bullets(_change_items(rec["changes"], rec.get("notes", [])))


def next_experiment(doc: Document, f: fnd.Findings) -> None:
  """The report's closing "Next experiment" section: the proposal and the command to run it."""
  exp = f.experiment
  if expdir.is_single_run(exp.workdir):
    return
  doc.heading(2, "Next experiment")
  if not exp.progress.complete:
    doc.para(f"The sweep is not finished: {FLAG} proposes a follow-up once it is.")
    return
  p = propose_from(f, None, source=exp.workdir)
  source = os.path.normpath(exp.workdir)
  doc.para("Designed from this report (rules: `jaxopt_lab/analysis/followup.py`): the learning "
           "rate narrowed to each group's measured basin, more seeds where the verdict could "
           "not tell groups apart; the design and everything else as this experiment ran.")
  doc.bullets(_change_items([dataclasses.asdict(c) for c in p.changes], list(p.notes))
              or ["No change: the follow-up would repeat this experiment."])
  doc.para(f"Run it with `python scripts/sweep.py {FLAG}={source} --workdir={source}-next` "
           f"(the base config is the {expdir.CONFIG_FILE} this experiment ran; add "
           "`--config=<file>` to start from a config file instead, whose "
           "`--config.<field>=...` overrides win over the proposal).")
