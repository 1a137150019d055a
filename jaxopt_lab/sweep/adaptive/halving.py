"""Successive halving and Hyperband over the point axis of a group's population.

Successive halving (Jamieson & Talwalkar, 2016; Karnin et al., 2013) trains n value points to a
first rung of r steps, keeps the best 1/eta of them by the validation metric (the mean over each
value point's seed replicates, which stay together), trains those to r * eta steps, and so on up
to `train.steps`. Here a rung is a stage (`stages.Stage`): the survivors' states are gathered
into a smaller population and continue exactly where they were.

Hyperband (Li et al., 2018) runs successive halving in brackets that trade the number of points
against the first rung's budget: with s_max = floor(log_eta(steps / min_steps)), bracket s = s_max,
..., 0 starts ceil((s_max + 1) / (s + 1) * eta^s) fresh points at steps * eta^-s steps. Each
bracket's points are drawn by `sweep.adaptive.initial` (random, sobol or lhs) with their own
seed, so the design (design.csv, its `bracket` column) is known before anything trains.

What a rung ranks by (`sweep.adaptive.rank_by`, `stages.RANK_BY`; `ranking` scores them):
'last' (the default), each point's valid metric at the rung; 'cooldown', that of a fork of its
state whose learning rate decays linearly to zero over `cooldown_fraction` of the steps so far
(Hägele et al., 2024; the fork is discarded, the survivors continue from the state it forked);
'extrapolated', a power law fitted to its valid curve so far, at the bracket's last rung (Domhan
et al., 2015), from `fit_evals` evaluations spread over each stage that ranks so (its interval
whole chunks of `train.steps_per_call`: one chunk length, hence one compiled program). The
short-horizon bias (Wu et al., 2018) makes 'last' keep learning rates too high at early rungs.

Replicates (`sweep.replicates`): by default ('per_replicate' False) a value point's replicates
stay together and a rung ranks it by its mean score over them. With
`sweep.adaptive.per_replicate` True each replicate (seed) is its own independent search: a rung
keeps the best 1/eta of the value points within each replicate, by that replicate's own score,
and the replicates run in lockstep through the same rungs, so R independent searches share one
population and its compiled programs, as a grid's replicates do. It is for studies of the design
itself (how often one search on one seed finds the grid's best, `benchmarks/adaptive_study.py`)
without R separate sweeps' compiles and small populations; with one replicate it is the default.

Rungs of successive halving: with n value points and `min_steps` = 0 (auto) there are
s + 1 rungs, s = floor(log_eta(n)), at round(steps * eta^(k - s)) steps, k = 0..s, so that about
one value point reaches the last rung. With `min_steps` = r > 0, the rungs are r, r eta, ...
(below `steps`) and `steps`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxopt_lab import expdir
from jaxopt_lab.sweep.adaptive import registry, stages

# Hyperband without `min_steps`: the most exploratory bracket starts at steps / eta^3.
_HYPERBAND_AUTO_DEPTH = 3


def _log_floor(x: float, eta: int) -> int:
  """floor(log_eta(x)) for x >= 1, exact at powers of eta."""
  k = 0
  while eta ** (k + 1) <= x * (1 + 1e-12):
    k += 1
  return k


def rung_steps(steps: int, eta: int, min_steps: int, num_points: int) -> list[int]:
  """The steps at which successive halving ranks its points; the last one is `steps`."""
  if min_steps > 0:
    rungs, r = [], min_steps
    while r < steps:
      rungs.append(r)
      r *= eta
    return rungs + [steps]
  s = _log_floor(max(num_points, 1), eta)
  return sorted({max(1, round(steps * float(eta) ** (k - s))) for k in range(s + 1)})


def hyperband_brackets(steps: int, eta: int, min_steps: int, brackets: int = 0
                       ) -> list[tuple[int, list[int]]]:
  """Hyperband's brackets, most exploratory first: (value points, rung steps) of each."""
  if min_steps <= 0:
    min_steps = max(1, round(steps / eta**_HYPERBAND_AUTO_DEPTH))
  s_max = _log_floor(steps / min_steps, eta)
  out = []
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) / (s + 1) * eta**s)
    rungs = sorted({max(1, round(steps * float(eta) ** (k - s))) for k in range(s + 1)})
    out.append((n, rungs))
  return out[:brackets] if brackets > 0 else out


def keep(scores: np.ndarray, eta: int) -> np.ndarray:
  """Indices of the value points a rung keeps: the best max(1, n // eta) by score (lower is
  better), in rank order; a point whose score is not finite (diverged) is never kept.

  Args:
    scores: [n] float, each value point's mean score over its replicates in the search (one
      replicate's score with `per_replicate`).
    eta: the reduction factor.
  """
  scores = np.asarray(scores, np.float64)
  order = np.argsort(np.where(np.isfinite(scores), scores, np.inf), kind="stable")
  order = order[np.isfinite(scores[order])]
  return order[: max(1, len(scores) // eta)]


def _survivors(n: int, eta: int, rungs: int) -> int:
  """The value points `keep` leaves of `n` after `rungs` rankings (none diverged)."""
  for _ in range(rungs):
    n = max(1, n // eta)
  return n


def value_points(positions: Sequence[int], points: Sequence[Any]) -> list[list[int]]:
  """`positions` grouped by value point (same values, any replicate), in order of appearance."""
  out: dict[tuple, list[int]] = {}
  for i in positions:
    out.setdefault(tuple(sorted(points[i].values.items())), []).append(int(i))
  return list(out.values())


def searches(positions: Sequence[int], points: Sequence[Any], per_replicate: bool
             ) -> list[list[list[int]]]:
  """`positions` as the independent searches a rung ranks within, each a list of value points
  (lists of positions): one search of whole value points, or (`per_replicate`) one per
  replicate, in replicate order, each value point holding that replicate's position only."""
  if not per_replicate:
    return [value_points(positions, points)]
  by_replicate: dict[int, list[int]] = {}
  for i in positions:
    by_replicate.setdefault(int(points[i].replicate), []).append(int(i))
  return [value_points(by_replicate[r], points) for r in sorted(by_replicate)]


def check(config: Any, settings: Mapping[str, Any]) -> None:
  """Raises ValueError when the first rung does not come before the run's end."""
  m, steps = settings["min_steps"], int(config.train.steps)
  if m >= steps:
    raise ValueError(f"sweep.adaptive.min_steps: the first rung ({m} steps) must come before the "
                     f"run's end (train.steps={steps})")


class Policy:
  """Successive halving (`brackets` None) or Hyperband of one group, as a `stages.Policy`.

  Args:
    points: the group's points (`design.Point`s; Hyperband's carry their bracket in `tags`).
    steps: `train.steps`.
    eta, min_steps: the checked settings (`sweep.adaptive`).
    brackets: Hyperband's brackets to run (0: all); None for successive halving.
    rank_by, cooldown_fraction: what a rung ranks by (see the module's docstring).
    fit_evals, chunk: an extrapolating rung's stage evaluates `fit_evals` times, every so many
      whole chunks of `chunk` steps (`train.steps_per_call`) as fit in it (0: at the run's
      `train.eval_every`); the other stages evaluate at the run's interval.
    per_replicate: each replicate an independent search (see the module's docstring).
  """

  def __init__(self, points: Sequence[Any], steps: int, eta: int, min_steps: int,
               brackets: int | None = None, rank_by: str = "last",
               cooldown_fraction: float = 0.2, per_replicate: bool = False,
               fit_evals: int = 0, chunk: int = 1):
    self.points, self.eta = list(points), int(eta)
    self.fit_evals, self.chunk = int(fit_evals), int(chunk)
    self.rank_by, self.cooldown_fraction = rank_by, float(cooldown_fraction)
    self.brackets: list[tuple[list[list[list[int]]], list[int]]] = []  # (searches, rungs)
    if brackets is not None:
      by_bracket: dict[int, list[int]] = {}
      for i, p in enumerate(self.points):
        by_bracket.setdefault(int(p.tags[expdir.BRACKET_COLUMN]), []).append(i)
      sizes = hyperband_brackets(steps, self.eta, min_steps, brackets)
      for b, (_, rungs) in enumerate(sizes):
        self.brackets.append((searches(by_bracket[b], self.points, per_replicate), rungs))
    else:
      found = searches(range(len(self.points)), self.points, per_replicate)
      self.brackets.append((found, rung_steps(steps, self.eta, min_steps, len(found[0]))))
    # The fewest points a stage trains (each bracket's last rung): the slice width that computes
    # no point out of use (`runner`: every stage runs in the group's one program).
    self.narrowest = min(sum(len(vps[0]) * _survivors(len(vps), self.eta, len(rungs) - 1)
                             for vps in found) for found, rungs in self.brackets)
    # stage index -> (bracket, rung, the stage's searches: value points as positions in `slots`)
    self._made: dict[int, tuple[int, int, list[list[list[int]]]]] = {}

  def _stage(self, index: int, bracket: int, rung: int, found: list[list[list[int]]],
             source: np.ndarray | None) -> stages.Stage:
    slots = np.array([i for vps in found for vp in vps for i in vp], np.int64)
    at = {int(i): j for j, i in enumerate(slots)}
    self._made[index] = (bracket, rung, [[[at[i] for i in vp] for vp in vps] for vps in found])
    rungs = self.brackets[bracket][1]
    where = f"bracket {bracket + 1}/{len(self.brackets)}, " if len(self.brackets) > 1 else ""
    sizes = [len(vps) for vps in found]
    count = f"{'/'.join(map(str, sorted(set(sizes))))} value point{'s' * (max(sizes) != 1)}"
    if len(found) > 1:  # per_replicate: a search per replicate
      count += f" in {'each of ' * (len(set(sizes)) == 1)}{len(found)} replicates' searches"
    note = f"{where}rung {rung + 1}/{len(rungs)}: {count} to step {rungs[rung]}"
    end, ranked = rungs[rung], rung + 1 < len(rungs)  # the last rung ranks nothing
    rank_by = self.rank_by if ranked else "last"
    fork = max(1, round(self.cooldown_fraction * end)) if rank_by == "cooldown" else 0
    every = 0
    if rank_by == "extrapolated" and self.fit_evals:
      begin = rungs[rung - 1] if rung else 0
      every = max(1, (end - begin) // (self.fit_evals * self.chunk)) * self.chunk
    return stages.Stage(index, slots, end, source=source, note=note, rank_by=rank_by,
                        fork_steps=fork, horizon=rungs[-1], eval_every=every)

  def first(self) -> stages.Stage:
    return self._stage(0, 0, 0, self.brackets[0][0], None)

  def next(self, stage: stages.Stage, scores: np.ndarray) -> stages.Stage | None:
    bracket, rung, found = self._made[stage.index]
    rungs = self.brackets[bracket][1]
    if rung + 1 < len(rungs):
      source, survivors = [], []
      for vps in found:  # each search keeps its own best (a search with none kept ends)
        kept = keep(np.array([np.mean(np.asarray(scores)[vp]) for vp in vps]), self.eta)
        source += [j for k in kept for j in vps[k]]
        if len(kept):
          survivors.append([[int(stage.slots[j]) for j in vps[k]] for k in kept])
      if survivors:
        return self._stage(stage.index + 1, bracket, rung + 1, survivors,
                           np.array(source, np.int64))
    if bracket + 1 < len(self.brackets):
      return self._stage(stage.index + 1, bracket + 1, 0, self.brackets[bracket + 1][0], None)
    return None


def hyperband_points(space: Any, steps: int | None, draw: Callable[[Any], list[list[Any]]]
                     ) -> list[tuple[dict[str, float], dict[str, int]]]:
  """Every bracket's value points, drawn by `sweep.adaptive.initial` with seed `sweep.seed +
  bracket`, tagged with their bracket (design.csv's `bracket` column)."""
  if steps is None:
    raise ValueError("sweep.design: 'hyperband' sizes its brackets from train.steps.")
  names, a, out = [f.name for f in space.vmapped], space.adaptive, []
  for b, (n, _) in enumerate(hyperband_brackets(steps, a["eta"], a["min_steps"], a["brackets"])):
    drawn = dataclasses.replace(space, num_points=n, seed=space.seed + b)
    out += [({k: float(v) for k, v in zip(names, row, strict=True)}, {expdir.BRACKET_COLUMN: b})
            for row in draw(drawn)]
  return out


def _policy(group: Any, settings: Mapping[str, Any], brackets: int | None) -> Policy:
  return Policy(group.points, int(group.config.train.steps), settings["eta"],
                settings["min_steps"], brackets, settings["rank_by"],
                settings["cooldown_fraction"], settings["per_replicate"], settings["fit_evals"],
                int(group.config.train.steps_per_call))


def _successive_halving(group: Any, settings: Mapping[str, Any], workdir: str) -> Policy:
  return _policy(group, settings, None)


def _hyperband(group: Any, settings: Mapping[str, Any], workdir: str) -> Policy:
  return _policy(group, settings, settings["brackets"])


_ETA = registry.Setting("eta", 3, low=2, note="each rung keeps 1/eta of the points")
_MIN_STEPS = registry.Setting("min_steps", 0, low=0, note="0: auto")
_RANK_BY = registry.Setting("rank_by", "last", choices=stages.RANK_BY)
_FIT_EVALS = registry.Setting("fit_evals", 0, low=0,
                              note="evaluations an extrapolating rung's stage makes for its fit "
                                   "(0: at train.eval_every)")
_COOLDOWN = registry.Setting("cooldown_fraction", 0.2, low=0, high=1, include_low=False,
                             note="a rung's fork decays over this fraction of its steps")
_PER_REPLICATE = registry.Setting("per_replicate", False)
successive_halving = registry.declare(_successive_halving, name="successive_halving",
                                      settings=[_ETA, _MIN_STEPS, _RANK_BY, _COOLDOWN,
                                                _FIT_EVALS, _PER_REPLICATE],
                                      check=check)
hyperband = registry.declare(
    _hyperband, name="hyperband",
    settings=[_ETA, _MIN_STEPS, registry.Setting("brackets", 0, low=0, note="0: all"),
              _RANK_BY, _COOLDOWN, _FIT_EVALS, _PER_REPLICATE],
    initial=("random", "sobol", "lhs"), points=hyperband_points, tag=expdir.BRACKET_COLUMN,
    check=check, initial_note="hyperband draws each bracket's points")
