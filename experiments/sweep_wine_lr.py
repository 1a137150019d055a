r"""SGD vs Adam over 6 learning rates x 3 seeds on a user's task (examples/wine_task.py), run by
scripts/sweep.py unchanged.

  python scripts/sweep.py --config=experiments/sweep_wine_lr.py --workdir=/tmp/wine_lr
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "wine").get_config()
  config.optimizer.momentum = 0.9
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0  # freeze a point whose loss exceeds 3x its first loss
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["sgd", "adam"]},
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 1.0, "num": 6},
  })
  return config
