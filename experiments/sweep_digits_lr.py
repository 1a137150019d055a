r"""32 log-spaced learning rates x 3 seeds for SGD (momentum 0.9), Adam and RMSprop: digits MLP.

  python scripts/sweep.py --config=experiments/sweep_digits_lr.py --workdir=runs/digits_lr
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "digits_mlp").get_config()
  config.optimizer.momentum = 0.9  # SGD with heavy-ball momentum; RMSprop uses it too
  config.train.steps = 500
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 10.0
  config.sweep.slice_size = -1  # slices sized to the cache (CPU) or half the memory (accelerator)
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
      "learning_rate": {"scale": "log", "low": 1e-5, "high": 1.0, "num": 32},
  })
  return config
