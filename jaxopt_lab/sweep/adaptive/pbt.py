"""Population-based training (Jaderberg et al. 2017) as a `stages.Policy` of one group.

The members of the population are the group's **value points**; a value point's seed replicates
stay together (a member's score is the mean of its replicates' scores, and its replicate r is the
slot of seed r). Every `sweep.adaptive.interval` steps, with truncation selection:

* **rank** the members by score (lower is better; a diverged member, score inf or NaN, ranks last;
  ties keep the order of the design);
* **exploit**: each member of the worst `fraction` copies the state and the hyperparameters of a
  member drawn uniformly from the best `fraction`, replicate r from the donor's replicate r (so
  common random numbers still pair the replicates);
* **explore**: each swept (vmapped) value factor of a recipient is, with probability `resample`,
  drawn afresh from its declared range (`sweep.factors`: log-uniform, uniform, or one of its
  `values`), else multiplied by one of `perturb` chosen uniformly; then clipped into the declared
  range (for `values`, their min and max) and the optimizer's valid range (its `registry.Value`).

Value factors that are not swept keep their values. The stage after the one ending at step t
trains every slot from t to min(t + interval, train.steps); its `source` names each slot's donor
(itself for a member that kept its state). Random choices of the decision before stage k come
from `np.random.default_rng((sweep.seed, k))`, and the current values are read from the stage
just finished, so a resumed run replays the same decisions. Every group draws from the same
generators: groups whose members rank alike make the same moves (common random numbers, as
their seeds are).

Example:
  settings = pbt.validate(config)            # before anything is written
  policy = pbt.Policy(group, config)
  stage = policy.first()
  ...                                        # the driver trains the stage, scores its slots
  stage = policy.next(stage, scores)         # None when train.steps is reached
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design, factors, space
from jaxopt_lab.sweep.adaptive import registry, stages


@dataclasses.dataclass(frozen=True)
class Settings:
  """The checked PBT settings of a config.

  Attributes:
    interval: steps between two decisions (`sweep.adaptive.interval`).
    fraction: the worst `fraction` of the members copy a member of the best `fraction`.
    perturb: explore's multipliers.
    resample: probability that explore draws a value afresh from its declared range.
    steps: `train.steps`, the end of the last stage.
    seed: `sweep.seed`, the seed of every decision's generator.
    factors: the swept (vmapped) value factors, the ones explore changes.
  """

  interval: int
  fraction: float
  perturb: tuple[float, ...]
  resample: float
  steps: int
  seed: int
  factors: tuple[factors.Factor, ...]


def validate(config: Any) -> Settings:
  """Checks the PBT settings of `config` (before the driver writes anything).

  Args:
    config: the experiment config, with `sweep.design = 'pbt'`.

  Returns:
    The checked `Settings`.

  Raises:
    ValueError: one line naming the field: an interval that is not an int in (0, train.steps),
      a fraction outside (0, 0.5], perturbation factors that are not positive numbers (or all
      1), a resample probability outside [0, 1], fewer than 2 members per group, or a mistake
      in `sweep.factors` or `sweep.adaptive.initial` (from `space.parse_space`).
  """
  parsed = space.parse_space(config.sweep)  # the declared settings, the initial design
  settings, steps = parsed.adaptive, int(config.train.steps)
  interval = settings["interval"]
  if not 0 < interval < steps:
    raise ValueError(f"sweep.adaptive.interval: PBT needs an int > 0 and < train.steps "
                     f"({steps}) (the steps between two exploit / explore steps), got "
                     f"{interval!r}.")
  perturb = settings["perturb"]
  if not perturb or not all(math.isfinite(p) and p > 0 for p in perturb) or all(
      p == 1 for p in perturb):
    raise ValueError(f"sweep.adaptive.perturb: must be a list of positive numbers, not all 1 "
                     f"(explore multiplies a value by one of them), got {perturb!r}.")
  points = design.make_design(config.sweep, steps)  # the points of sweep.adaptive.initial
  first_group = points[0].group
  members = sum(p.group == first_group and p.replicate == 0 for p in points)
  if members < 2:
    raise ValueError(f"sweep.factors: PBT needs at least 2 members (value points) per group, "
                     f"got {members}; sweep a vmapped value factor over 2 or more values (or "
                     "sweep.num_points >= 2 with a random initial design).")
  factors.check_ranges(parsed, config.optimizer.name)  # explore may go anywhere in a range
  return Settings(interval, settings["fraction"], tuple(perturb), settings["resample"], steps,
                  parsed.seed, parsed.vmapped)


def _bound(x: float, up: bool, strict: bool) -> np.float32:
  """The float32 closest to `x` inside the bound: >= x (or > x if strict) for a lower bound
  (`up`), <= x (< x) for an upper one."""
  direction = np.float32(np.inf if up else -np.inf)
  b = np.float32(x)
  exact = float(b)  # compared in float64: a python float next to a float32 is cast down
  if (exact < x if up else exact > x) or (strict and exact == x):
    b = np.nextafter(b, direction)
  return b


def value_range(factor: factors.Factor, optimizer: str) -> tuple[np.float32, np.float32]:
  """The float32 interval explore keeps `factor` in: its declared range (the min and max of its
  `values`) intersected with optimizer `optimizer`'s valid range (exclusive ends excluded)."""
  if factor.values is not None:
    low, high = min(factor.values), max(factor.values)
  else:
    low, high = factor.low, factor.high
  lo, hi = _bound(low, True, False), _bound(high, False, False)
  spec = {v.name: v for v in (*factory.resolve(optimizer).values, *factory.COMMON_VALUES)}
  valid = spec.get(factor.name)
  if valid is not None and valid.low is not None:
    lo = max(lo, _bound(valid.low, True, not valid.include_low))
  if valid is not None and valid.high is not None:
    hi = min(hi, _bound(valid.high, False, not valid.include_high))
  return lo, hi


def explore(value: float, factor: factors.Factor, settings: Settings, lo: np.float32,
            hi: np.float32, rng: np.random.Generator) -> np.float32:
  """One explore move of one value: a fresh draw with probability `resample`, else the value
  times a multiplier drawn uniformly from `perturb`; clipped into [lo, hi] (an 'int' scale
  rounds first)."""
  if rng.random() < settings.resample:
    new = float(factor.draw(rng, 1)[0])
  else:
    new = value * settings.perturb[int(rng.integers(len(settings.perturb)))]
  if factor.scale == "int":
    new = float(np.round(new))
  return np.clip(np.float32(new), lo, hi)


def truncation(scores: np.ndarray, fraction: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
  """Truncation selection: (recipients, donors), member indices, recipient i copying donors[i].

  The worst n = min(ceil(fraction * M), M // 2) of the M members (inf / NaN last, ties in
  member order) each copy a member drawn uniformly from the best n; recipients are listed
  worst first. A pair whose donor has diverged too (more than M - n members diverged) is
  dropped: copying a diverged state helps no one.
  """
  scores = np.where(np.isnan(scores), np.inf, np.asarray(scores, np.float64))
  m = scores.size
  n = min(math.ceil(fraction * m), m // 2)
  rank = np.argsort(scores, kind="stable")
  recipients = rank[m - n:][::-1]
  donors = rank[:n][rng.integers(0, n, size=n)]
  keep = np.isfinite(scores[donors])
  return recipients[keep], donors[keep]


class Policy:
  """PBT's decisions for one group (see the module docstring); a `stages.Policy`.

  Attributes:
    settings: the checked settings.
    members: [M, R] int, the positions in `group.points` of member m's replicate r.
  """

  def __init__(self, group: Any, config: Any):
    """`group`: a `grouping.Group` (name, config, points, hparams); `config`: the experiment's."""
    self.group = group
    self.settings = validate(config)
    self.optimizer = group.config.optimizer.name
    keys: dict[tuple, list[int]] = {}
    for i, point in enumerate(group.points):
      keys.setdefault(tuple(sorted(point.values.items())), []).append(i)
    by_replicate = [sorted(pos, key=lambda i: group.points[i].replicate) for pos in keys.values()]
    self.members = np.array(by_replicate, dtype=np.int64)
    self.ranges = {f.name: value_range(f, self.optimizer) for f in self.settings.factors}

  def _end(self, index: int) -> int:
    return min((index + 1) * self.settings.interval, self.settings.steps)

  def _name(self, member: int) -> str:
    return str(self.group.points[int(self.members[member, 0])].point)

  def first(self) -> stages.Stage:
    m, r = self.members.shape
    return stages.Stage(index=0, slots=self.members.ravel(), end=self._end(0),
                        note=f"PBT stage 0: {m} members x {r} replicates, steps 0-{self._end(0)}")

  def next(self, stage: stages.Stage, scores: np.ndarray) -> stages.Stage | None:
    if stage.end >= self.settings.steps:
      return None
    index = stage.index + 1
    slot_of = {int(p): s for s, p in enumerate(stage.slots)}  # position -> slot of `stage`
    slots = self.members.ravel()
    where = np.array([[slot_of[int(p)] for p in row] for row in self.members])  # [M, R]
    scores = np.where(np.isnan(scores), np.inf, np.asarray(scores, np.float64))
    member_scores = scores[where].mean(axis=1)
    current = stage.hparams if stage.hparams is not None else {
        k: np.asarray(v, np.float32)[stage.slots] for k, v in self.group.hparams.items()}
    rng = np.random.default_rng((self.settings.seed, index))
    recipients, donors = truncation(member_scores, self.settings.fraction, rng)
    source = where.copy()
    values = {k: np.asarray(v, np.float32)[where].copy() for k, v in current.items()}  # [M, R]
    for m, d in zip(recipients, donors, strict=True):
      source[m] = where[d]
      for k in values:
        values[k][m] = values[k][d]
      for f in self.settings.factors:
        lo, hi = self.ranges[f.name]
        # One move per member: its replicates keep one value, so they stay one value point.
        values[f.name][m] = explore(float(values[f.name][d, 0]), f, self.settings, lo, hi, rng)
    copies = ", ".join(f"{self._name(m)}<-{self._name(d)}"
                       for m, d in zip(recipients, donors, strict=True))
    note = (f"PBT stage {index}: steps {stage.end}-{self._end(index)}; exploit (point <- donor, "
            f"replicate 0): {copies}")
    return stages.Stage(index=index, slots=slots, end=self._end(index), source=source.ravel(),
                        hparams={k: v.ravel() for k, v in values.items()}, note=note)


def _pbt(group: Any, settings: Mapping[str, Any], workdir: str) -> Policy:
  return Policy(group, group.config)


pbt = registry.declare(
    _pbt, name="pbt", check=lambda config, settings: validate(config), settings=[
        registry.Setting("interval", 0, note="steps between two exploit / explore steps"),
        registry.Setting("fraction", 0.25, low=0.0, high=0.5, include_low=False,
                         note="the worst fraction copies a member of the best fraction"),
        registry.Setting("perturb", [0.8, 1.25], what="a list of positive numbers, not all 1"),
        registry.Setting("resample", 0.25, low=0.0, high=1.0, what="a probability")])
