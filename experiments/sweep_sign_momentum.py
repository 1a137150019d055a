r"""Bring your own optimizer: sign descent with momentum (examples/sign_momentum.py) vs AdamW on
the tiny byte LM, 5 learning rates x 3 seeds each.

  python scripts/sweep.py --config=experiments/sweep_sign_momentum.py --workdir=/tmp/sign
"""

import ml_collections

from jaxopt_lab.configs import beside, sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.train.steps = 200
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["adamw", beside(__file__, "../examples/sign_momentum.py:"
                                                         "sign_momentum")]},
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 1e-2, "num": 5},
  })
  return config
