"""A sweep's structural groups: each group's config, task, points and their values by name.

`build_groups` resolves, for each combination of the structural factors of a design, the
group's config (`group_config`), builds its task once and checks every point's hyperparameters
(a mapping by name, [points] each); `point_config` is the single-run config of one point (a test
trains it with `single.train` and compares with the sweep).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxopt_lab import tasks, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design


@dataclasses.dataclass
class Group:
  """One structural group: its config, task, points and the arrays of their values."""

  name: str
  config: ml_collections.ConfigDict
  task: tasks.Task
  points: list[design.Point]
  hparams: dict[str, np.ndarray]  # [P] float32 each
  seeds: np.ndarray  # [P] int32
  replicate: np.ndarray  # [P] int32 index into the group's distinct seeds
  distinct_seeds: list[int]


def build_groups(config: ml_collections.ConfigDict,
                 points: Sequence[design.Point]) -> list[Group]:
  """Resolves each group's config and task and every point's full hyperparameters."""
  groups = []
  for name, members in design.groups(points).items():
    cfg = group_config(config, members[0])
    task = tasks.build(cfg)
    names = factory.hparam_names(cfg.optimizer.name)
    per_point = []
    for point in members:
      opt = copy.deepcopy(cfg.optimizer)
      for factor, value in point.values.items():
        if factor not in names:
          raise ValueError(
              f"sweep.factors.{factor}: optimizer {cfg.optimizer.name!r} has no hyperparameter "
              f"{factor!r}; its hyperparameters: {', '.join(names)}")
        if not math.isnan(value):  # NaN: an Optuna round's value, not asked yet
          opt[factor] = float(value)
      per_point.append(factory.hparams_from_config(opt))
      train.validate_optimizer(cfg, per_point[-1])
      # An unasked value stays NaN (its stage gives it); the rest was checked with the config's.
      per_point[-1].update({k: np.float32(math.nan) for k, v in point.values.items()
                            if math.isnan(v)})
    hparams = {k: np.stack([h[k] for h in per_point]).astype(np.float32) for k in names}
    factory.check_traceable(cfg.optimizer, cfg.train.steps)  # before any compilation
    seeds = np.array([p.seed for p in members], np.int32)
    distinct = sorted(set(seeds.tolist()))
    replicate = np.array([distinct.index(s) for s in seeds], np.int32)
    groups.append(Group(name, cfg, task, list(members), hparams, seeds, replicate, distinct))
  return groups


def group_config(config: ml_collections.ConfigDict, point: design.Point
                 ) -> ml_collections.ConfigDict:
  """The config of `point`'s structural group: `config` with the group's fields set."""
  cfg = copy.deepcopy(config)
  for path, value in design.config_overrides(point).items():
    section, _, field = path.partition(".")
    if field not in cfg[section]:
      raise ValueError(
          f"sweep.factors: {path!r} is not a field of task {cfg.task!r}'s config; "
          f"{section} fields: {', '.join(sorted(cfg[section].keys()))}")
    try:
      cfg[section][field] = value
    except TypeError:  # ml_collections keeps a field's type: a bool stays a bool
      raise ValueError(f"sweep.factors: {path} must be a {type(cfg[section][field]).__name__}, "
                       f"got {value!r}") from None
  if "train" in cfg:  # a horizon factor's steps (train.steps) meet the checks of the base's
    train.validate_train_config(cfg)
  return cfg


def point_config(config: ml_collections.ConfigDict, point: design.Point
                 ) -> ml_collections.ConfigDict:
  """The single-run config of one point: its group's structure, its values and its seed."""
  cfg = group_config(config, point)
  for factor, value in point.values.items():
    cfg.optimizer[factor] = float(value)
  cfg.seed = point.seed
  return cfg
