"""The full config of a run, assembled from each layer's defaults; experiments override fields."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections

from jaxopt_lab import tasks, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import driver


def base_config(task: str, **model_overrides) -> ml_collections.ConfigDict:
  """Every field a run reads, with its default, for `task`; locked so a typo'd override fails.

  Groups: `task`, `seed`, `model` (incl. compute `dtype`), `data`, `optimizer`, `train`, and
  `sweep` (read by scripts/sweep.py only).
  """
  config = ml_collections.ConfigDict()
  config.task = task  # one of tasks.TASKS
  config.seed = 0  # point seed: parameter init, data order and stochastic layers derive from it
  config.model = tasks.default_model_config(task)
  config.model.update(model_overrides)
  config.data = tasks.default_data_config(task)
  config.optimizer = factory.default_config()
  config.train = train.default_train_config()
  config.sweep = driver.default_sweep_config()
  config.lock()
  return config


def sibling(config_file: str, name: str) -> ModuleType:
  """Loads the experiment config `name`.py that sits beside `config_file` (experiments/).

  Lets a sweep config start from a reference workload's config without making experiments/ a
  package: `sibling(__file__, "lm_tiny").get_config()`.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
