r"""A multi-factor scrambled-Sobol design for AdamW on the tiny LM: lr, b2, weight decay, warmup.

32 points x 2 seeds, all in one compiled program.

  python scripts/sweep.py --config=experiments/sweep_lm_adamw_sobol.py --workdir=runs/lm_sobol
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.train.steps = 300
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  config.sweep.design = "sobol"
  config.sweep.num_points = 32
  config.sweep.replicates = 2
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1  # slices sized to the cache (CPU) or half the memory (accelerator)
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 3e-2},
      "b2": {"scale": "linear", "low": 0.9, "high": 0.999},
      "weight_decay": {"scale": "log", "low": 1e-3, "high": 0.3},
      "warmup": {"scale": "linear", "low": 0.0, "high": 0.2},
  })
  return config
