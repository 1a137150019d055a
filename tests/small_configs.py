"""Shared small configs: every test trains tiny models for few steps."""

from __future__ import annotations

import ml_collections

from jaxopt_lab import configs


def classic_config(optimizer: str = "adam", learning_rate: float = 0.05, steps: int = 40,
                   **train_fields) -> ml_collections.ConfigDict:
  """The classic task (logistic regression, 100 samples) with short, chunked training."""
  config = configs.base_config("classic")
  config.optimizer.name = optimizer
  config.optimizer.learning_rate = learning_rate
  config.train.update(dict(steps=steps, steps_per_call=10, log_every=10, eval_every=20,
                           checkpoint_every=20))
  config.train.update(train_fields)
  return config


def classic_sweep_config(learning_rates=(0.01, 0.1, 1.0), optimizers=("sgd", "adam"),
                         replicates: int = 2, steps: int = 40) -> ml_collections.ConfigDict:
  """A small sweep on the classic task: optimizers x explicit learning rates x seeds."""
  config = classic_config(steps=steps)
  config.sweep.design = "grid"
  config.sweep.replicates = replicates
  config.sweep.report = False
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": list(optimizers)},
      "learning_rate": {"values": [float(x) for x in learning_rates]},
  })
  return config


def tiny_lm_config(**model_fields) -> ml_collections.ConfigDict:
  """An LM smaller than `tiny`, for tests of the training core only."""
  config = configs.base_config("lm")
  config.model.update(dict(width=32, depth=1, heads=2, context=16))
  config.model.update(model_fields)
  config.data.update(dict(batch_size=4, eval_windows=8, eval_batch_size=4, byte_budget=200_000))
  config.optimizer.name = "adamw"
  config.optimizer.decay_mask = "matrices"  # as experiments/lm_tiny.py
  config.optimizer.learning_rate = 3e-3
  config.train.update(dict(steps=10, steps_per_call=5, log_every=5, eval_every=10,
                           checkpoint_every=10))
  return config
