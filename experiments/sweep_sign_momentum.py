r"""Bring your own optimizer: sign descent with momentum (examples/sign_momentum.py) vs AdamW on
the tiny byte LM, 4 learning rates x 3 seeds each: 24 points x 160 steps, about 6 minutes on 2
CPU cores (lm_tiny: about 11 points x steps/s, benchmarks/README.md).

  python scripts/sweep.py --config=experiments/sweep_sign_momentum.py --workdir=/tmp/sign
"""

import ml_collections

from jaxopt_lab.configs import beside, sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.train.steps = 160  # a short budget: see the docstring
  config.train.eval_every = 80
  config.train.checkpoint_every = 80
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": ["adamw", beside(__file__, "../examples/sign_momentum.py:"
                                                         "sign_momentum")]},
      "learning_rate": {"low": 1e-4, "high": 1e-2, "num": 4},  # the declared scale: log
  })
  return config
