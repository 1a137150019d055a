"""The full config of a run, assembled from each layer's defaults; experiments override fields."""

from __future__ import annotations

import ml_collections

from jaxopt_lab import tasks, train
from jaxopt_lab.optim import factory


def base_config(task: str, **model_overrides) -> ml_collections.ConfigDict:
  """Every field a run reads, with its default, for `task`; locked so a typo'd override fails.

  Groups: `task`, `seed`, `model` (incl. compute `dtype`), `data`, `optimizer`, `train`.
  """
  config = ml_collections.ConfigDict()
  config.task = task  # one of tasks.TASKS
  config.seed = 0  # point seed: parameter init, data order and stochastic layers derive from it
  config.model = tasks.default_model_config(task)
  config.model.update(model_overrides)
  config.data = tasks.default_data_config(task)
  config.optimizer = factory.default_config()
  config.train = train.default_train_config()
  config.lock()
  return config
