r"""32 log-spaced learning rates x 3 seeds for SGD, Adam and RMSprop on the tiny byte LM.

  python scripts/sweep.py --config=experiments/sweep_lm_tiny_lr.py --workdir=runs/lm_tiny_lr
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.optimizer.momentum = 0.9
  config.train.steps = 300
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1  # slices sized to the cache (CPU) or half the memory (accelerator)
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
      "learning_rate": {"scale": "log", "low": 1e-5, "high": 1.0, "num": 32},
  })
  return config
