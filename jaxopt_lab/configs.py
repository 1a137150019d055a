"""The full config of a run, assembled from the defaults; experiments override fields.

Configs are data: this module and `defaults` import no JAX, no Flax and no driver, so loading an
experiment config is instant and a config can be checked without a backend.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections

from jaxopt_lab import defaults


def base_config(task: str, **model_overrides) -> ml_collections.ConfigDict:
  """Every field a run reads, with its default, for `task`; locked so a typo'd override fails.

  Groups: `task`, `seed`, `model` (incl. compute `dtype`), `data`, `optimizer`, `train`, `eval`,
  and `sweep` (read by scripts/sweep.py only). The `optimizer` group stays open to the fields of
  a plugin optimizer's own hyperparameters; the factory checks the ones the optimizer reads.
  """
  config = ml_collections.ConfigDict()
  config.task = task  # a registered task (tasks.registered()) or 'path/my_task.py:get_task'
  config.seed = 0  # point seed: parameter init, data order and stochastic layers derive from it
  config.model = defaults.default_model_config(task)  # the model's shape and compute dtype
  config.model.update(model_overrides)
  config.data = defaults.default_data_config(task)  # the data set, its splits and the batch size
  config.optimizer = defaults.optimizer_config()  # the optimizer, its schedule and its values
  config.train = defaults.train_config()  # length and cadence of training
  config.eval = defaults.eval_config()  # optional held-out metrics (text generation)
  config.sweep = defaults.sweep_config()  # the design of a sweep and how it runs
  config.lock()
  config.optimizer.unlock()  # a plugin's own hyperparameters may be added
  config.sweep.adaptive.unlock()  # a plugin design's own settings may be added
  if ":" in task:  # a plugin task's model and data fields are its own
    config.model.unlock()
    config.data.unlock()
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


def beside(config_file: str, plugin: str) -> str:
  """A plugin spec 'file.py:name' relative to the experiment config `config_file`.

  `config.optimizer.name = configs.beside(__file__, "my_opt.py:lion")` names `lion` in the file
  `my_opt.py` next to the experiment, wherever the command runs from (a plain 'my_opt.py:lion'
  is relative to the current directory).
  """
  path, sep, name = plugin.rpartition(":")
  if not sep or not path.endswith(".py"):
    raise ValueError(f"configs.beside: {plugin!r} is not of the form 'file.py:name'")
  return f"{os.path.join(os.path.dirname(os.path.abspath(config_file)), path)}:{name}"
