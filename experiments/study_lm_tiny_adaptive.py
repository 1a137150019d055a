r"""The base config of the adaptive-design study (benchmarks/adaptive_study.py): AdamW's learning
rate on the tiny byte LM, shortened so that every design, over several seeds, runs on a laptop CPU.

The `lm_tiny` model (width 128, 2 layers, 4 heads; 0.44M parameters) and its AdamW recipe
(warmup, cosine decay, clipping), on windows of 64 bytes, 4 a step (lm_tiny: 128 and 16), for
108 steps: a point-step costs 1/8 of lm_tiny's, so the study's ~12,000 points x steps take
minutes on two cores. 108 = 12 x 9: successive halving's rungs at eta = 3 (12, 36, 108 steps)
and PBT's interval (18) fall on whole chunks of 6 steps. The learning rate, the one factor,
takes 9 log-spaced values from 1e-4 to 1 (the top two diverge). The study sets `sweep.design`
(and its `sweep.adaptive` settings) per design.

  python -m benchmarks.adaptive_study --out_dir=/tmp/adaptive_study
  python scripts/sweep.py --config=experiments/study_lm_tiny_adaptive.py --workdir=/tmp/study_grid
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.model.context = 64  # tokens per window (lm_tiny: 128)
  config.data.batch_size = 4  # windows per step (lm_tiny: 16)
  config.data.eval_windows = 64  # windows per held-out split (one batch of 64)
  config.eval.prompts = 64  # (generation is off; kept <= eval_windows)
  config.train.steps = 108
  config.train.steps_per_call = 6  # divides every rung (12, 36, 108) and PBT's interval (18)
  config.train.log_every = 6
  config.train.eval_every = 54
  config.train.checkpoint_every = 54
  config.sweep.design = "grid"
  config.sweep.diverge_factor = 3.0  # a point whose loss triples is frozen (and ranked last)
  config.sweep.report = False  # the study reads the experiment directories itself
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 1.0, "num": 9},
  })
  return config
