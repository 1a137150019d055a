"""Follow-ups: the next experiment, designed from the report of a finished one (no JAX).

  python scripts/sweep.py --continue_from=runs/a --workdir=runs/b

`propose(a, base)` reads the experiment directory `a` through `jaxopt_lab.analysis` (the numbers
its report shows) and returns `base` (a's own config.json when None) with two kinds of change,
each with its reason in words:

* **Learning rate: narrowed to the measured basin.** In each group, the report's 5% basin
  (`BASIN_TOLERANCE`: the lrs around the best where the mean over seeds stays within 5% of the
  improvement from initialisation, `stats.basin_width`) and one swept step out on each side,
  never past the last lr below the group's first divergence, the ends rounded outwards to 2
  significant digits. Where the basin is open, one step beyond that edge, in the factor's
  scale. Every group runs the same value points (paired comparisons), so the new range is the
  hull of the groups' ranges (each group's own range is in the reason). The factor keeps its
  form and scale (a range stays a range, a list of values becomes values spread over the new
  range), with no more points than the follow-up's seeds can tell apart (`resolvable_points`).
  Groups that diverged at every learning rate, or learned at none, are named in `notes` and
  shape nothing. An explicit design's points are given by hand and are not changed.
* **After an adaptive design: the survivors confirmed.** A source that stopped points early
  (successive halving, Hyperband, ...) is followed by an explicit design of the configurations
  that trained the full budget, run to the full budget on the seeds the verdict needs: its
  narrowed range would be noise around one point.
* **Seeds: fresh, and more where the verdict was "not distinguishable".** The follow-up's seeds
  start after the source's (`sweep.seed` moves on by the source's replicates), so it is
  analysed alone, as the next look of the chain at the level `looks.alpha_at` gives (0.008 for
  the first follow-up, after the source's 0.04): all looks together keep a false "beats" below
  0.05. For each pair the verdict cannot tell apart, the lower end of its range of seeds needed
  (`verdict.seeds_needed`, computed at the follow-up's level) and without one (one seed, or no
  spread), twice the seeds and at least 3; `sweep.replicates` becomes the largest of these,
  capped at `MAX_SEED_FACTOR` times the source's seeds. A pair with the same difference on
  every seed is left alone.

The design type stays the source's otherwise (set back where `base` names another); everything
else stays as in `base`. A field set on the command line (`keep`, the overridden paths) wins:
the proposal leaves it and says so. The new config records its source in
`sweep.continue_from`; the follow-up's workdir holds `followup.json` (`record`: the changes,
the look, its level and how its seeds were chosen), which its report shows ("Follows from").
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Collection, Iterator
from typing import Any

import ml_collections

from jaxopt_lab import expdir, files, workdirs
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import followup_rules as rules
from jaxopt_lab.analysis import looks, results
from jaxopt_lab.analysis.document import Document
from jaxopt_lab.analysis.followup_rules import Change

FLAG = "--continue_from"


@dataclasses.dataclass(frozen=True)
class Proposal:
  """The next experiment: its config, the changes from the base config, and notes."""

  source: str  # the experiment it follows from, as given
  config: ml_collections.ConfigDict
  changes: tuple[Change, ...]
  notes: tuple[str, ...]  # what was measured but changed nothing (failed groups, kept fields)

  look: int = 2  # which look of the chain the follow-up is (`looks`)

  def record(self) -> dict[str, Any]:
    """The content of followup.json."""
    return {"source": self.source, "changes": [dataclasses.asdict(c) for c in self.changes],
            "notes": list(self.notes), "look": self.look,
            "alpha": looks.alpha_at(self.look),
            "analysis": "fresh seeds, analysed alone (alpha spending over the looks)"}


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
  look = f.look + 1
  seeds = rules.seeds_change(f, config, notes, looks.alpha_at(look))
  new_seeds = seeds.new if seeds else exp.num_replicates
  if rules.adaptive(exp):
    changes = rules.survivors_changes(f, config)
  else:
    changes = [rules.design_change(f, config), rules.lr_change(f, config, notes, new_seeds)]
  changes = [c for c in [*changes, seeds, rules.fresh_seeds_change(f, config)] if c]
  applied = []
  for c in changes:
    kept = [k for k in keep if k == c.field or k.startswith(c.field + ".")
            or c.field.startswith(k + ".")]
    if kept:
      notes.append(f"`{c.field}` is set on the command line (--config.{', '.join(sorted(kept))}"
                   f"): the proposal's {rules.text(c.new)} is not applied ({c.reason})")
      continue
    rules.set_field(config, c.field, c.new)
    applied.append(c)
  config.sweep.continue_from = os.path.normpath(source)
  return Proposal(source, config, tuple(applied), tuple(notes), look)


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
  return looks.read_record(workdir)


def _change_items(changes: list[dict[str, Any]], notes: list[str]) -> list[str]:
  return ([f"`{c['field']}`: `{rules.text(c['old'])}` -> `{rules.text(c['new'])}`. {c['reason']}"
           for c in changes] + list(notes))


def follows_from(doc: Document, exp: results.Experiment) -> None:
  """The report's "Follows from" section, for a follow-up's workdir."""
  rec = read_record(exp.workdir)
  if rec is None:
    return
  doc.heading(2, "Follows from")
  look = rec.get("look", 2)
  doc.para(f"This experiment follows from `{rec['source']}` (scripts/sweep.py {FLAG}; "
           f"{expdir.FOLLOWUP_FILE}). It is look {look} of the chain: "
           f"{rec.get('analysis', 'fresh seeds, analysed alone')}, at level "
           f"{looks.alpha_at(look):g} (`jaxopt_lab/analysis/looks.py`). "
           + ("Changes from the base config:" if rec["changes"]
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
  doc.para("Designed from this report (rules: `jaxopt_lab/analysis/followup_rules.py`): the "
           "learning rate narrowed to each group's measured basin (below its divergence, no "
           "finer than the seeds resolve), or an adaptive design's survivors confirmed; fresh "
           f"seeds, analysed alone at level {looks.alpha_at(p.look):g} (look {p.look}), more "
           "where the verdict could not tell groups apart; the rest as this experiment ran.")
  doc.bullets(_change_items([dataclasses.asdict(c) for c in p.changes], list(p.notes))
              or ["No change: the follow-up would repeat this experiment."])
  doc.para(f"Run it with `python scripts/sweep.py {FLAG}={source} --workdir={source}-next` "
           f"(the base config is the {expdir.CONFIG_FILE} this experiment ran; add "
           "`--config=<file>` to start from a config file instead, whose "
           "`--config.<field>=...` overrides win over the proposal).")
