r"""A learning-rate sweep of AdamW on the `small` LM in bf16: worth running on a GPU.

64 log-spaced learning rates, one seed, one compiled program.

  python scripts/sweep.py --config=experiments/sweep_lm_small_gpu.py --workdir=runs/lm_small
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_small").get_config()
  config.train.steps = 1000
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.sweep.design = "grid"
  config.sweep.replicates = 1
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1  # as many points per slice as half the accelerator's memory holds
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-5, "high": 3e-2, "num": 64},
  })
  return config
