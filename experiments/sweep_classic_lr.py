r"""Learning-rate sweep of SGD, Adam and RMSprop on the classic example (the README's main job).

3 optimizers x 16 log-spaced learning rates x 3 seeds = 144 points in 3 compiled programs.

  python scripts/sweep.py --config=experiments/sweep_classic_lr.py --workdir=runs/classic_lr
"""

import ml_collections

from jaxopt_lab.configs import base_config


def get_config():
  config = base_config("classic")
  config.data.batch_size = 100  # full batch: one step per epoch
  config.train.steps = 200
  config.train.steps_per_call = 50
  config.train.log_every = 10
  config.train.eval_every = 50
  config.train.checkpoint_every = 100
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0  # freeze a point whose loss exceeds 3x its first loss
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 10.0, "num": 16},
  })
  return config
