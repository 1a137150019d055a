r"""μP against SP on an accelerator (not run here: sized for one H100-class GPU, about an hour):
experiments/study_mup_transfer.py at widths 128 / 256 / 512 / 1024 (4 blocks, 8 heads, base width
128 as in Yang et al.'s GPT runs), windows of 256 bytes, 32 a step, 2,000 steps, 10 learning
rates a quarter-decade apart (10^-4 .. 10^-1.75) x 3 seeds; bfloat16 matmuls.

  python scripts/sweep.py --config=experiments/study_mup_transfer_gpu.py --workdir=runs/mup_gpu
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "study_mup_transfer").get_config()
  config.model.update(dict(depth=4, heads=8, context=256, base_width=128, dtype="bfloat16"))
  config.data.update(dict(batch_size=32, eval_windows=256, eval_batch_size=64))
  config.train.update(dict(steps=2000, steps_per_call=100, log_every=100, eval_every=500,
                           checkpoint_every=500))
  config.sweep.factors = ml_collections.ConfigDict({
      "parametrization": {"values": ["sp", "mup"]},
      "width": {"values": [128, 256, 512, 1024]},
      "learning_rate": {"scale": "log", "low": 1e-4, "high": 10**-1.75, "num": 10},
  })
  return config
