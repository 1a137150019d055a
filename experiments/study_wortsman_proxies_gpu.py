r"""Wortsman et al.'s small-scale proxies on an accelerator (not run here: sized for one
H100-class GPU): experiments/study_wortsman_proxies.py at widths 128 / 512 / 1024 (4 blocks,
8 heads), windows of 256 bytes, 32 a step, 2,000 steps, their grid 3e-4 .. 3e-1 (7 values)
x 3 seeds, qk-layernorm off / on, z-loss 0 / 1e-4; bfloat16 matmuls.

  python scripts/sweep.py --config=experiments/study_wortsman_proxies_gpu.py --workdir=runs/wortsman
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "study_wortsman_proxies").get_config()
  config.model.update(dict(depth=4, heads=8, context=256, base_width=128, dtype="bfloat16"))
  config.data.update(dict(batch_size=32, eval_windows=256, eval_batch_size=64))
  config.train.update(dict(steps=2000, steps_per_call=100, log_every=100, eval_every=500,
                           checkpoint_every=500))
  config.sweep.factors = ml_collections.ConfigDict({
      "width": {"values": [128, 512, 1024]},
      "qk_norm": {"values": [False, True]},
      "z_loss": {"values": [0.0, 1e-4]},
      "learning_rate": {"values": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]},
  })
  return config
