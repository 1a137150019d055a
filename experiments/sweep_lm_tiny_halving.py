r"""Successive halving over 27 learning rates of AdamW on the tiny byte LM (2 seeds each).

Every learning rate trains 22 steps; the best third (by the mean valid loss over the seeds)
continues to 67, the best third of those to 200 and the best to 600: 11% of the grid's
compute (3,596 of 32,400 points x steps). The report's "Adaptive design" section shows what
each rung kept and spent.

  python scripts/sweep.py --config=experiments/sweep_lm_tiny_halving.py --workdir=runs/lm_sh
  python scripts/sweep.py --config=experiments/sweep_lm_tiny_halving.py --workdir=runs/lm_hb \
      --config.sweep.design=hyperband --config.sweep.adaptive.initial=sobol
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.train.eval_every = 200
  config.sweep.design = "successive_halving"
  config.sweep.adaptive.initial = "grid"
  config.sweep.adaptive.eta = 3
  config.sweep.replicates = 2
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 0.3, "num": 27},
  })
  return config
