r"""AdamW vs Lion vs schedule-free AdamW on the tiny byte LM: 4 learning rates x 3 seeds each.

Lion and schedule-free AdamW come from examples/ (user files, written against the public API);
the sweep vmaps over their learning rates in one compilation per optimizer, like the built-ins.
All three run the same constant schedule after a short warmup (schedule-free AdamW's claim is
that it needs no decay); b2 = 0.95 and weight decay 0.1 (lm_tiny's) apply to all three.
36 points x 160 steps: lm_tiny trains about 11 points x steps/s on 2 CPU cores
(benchmarks/README.md), so 9 minutes there and less on a laptop with more cores.

  python scripts/sweep.py --config=experiments/sweep_lm_lion_schedule_free.py \
      --workdir=/tmp/lion_sf
"""

import ml_collections

from jaxopt_lab.configs import beside, sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.optimizer.schedule = "constant"  # after warmup; see the docstring
  config.train.steps = 160  # a short budget: see the docstring
  config.train.eval_every = 80
  config.train.checkpoint_every = 80
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0
  config.sweep.slice_size = -1  # slices sized to the cache (CPU) or half the memory (accelerator)
  config.sweep.factors = ml_collections.ConfigDict({
      "optimizer": {"values": [
          "adamw",
          beside(__file__, "../examples/lion.py:lion"),
          beside(__file__, "../examples/schedule_free.py:schedule_free_adamw"),
      ]},
      "learning_rate": {"low": 1e-4, "high": 1e-2, "num": 4},  # the declared scale: log
  })
  return config
