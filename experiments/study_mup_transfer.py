r"""μP against SP: does Adam's best learning rate stay put as the LM widens (Yang et al. 2022,
Figure 1, at CPU scale)? docs/studies/mup_transfer.md holds the measured answer.

The tiny byte LM (2 blocks, 4 heads) shortened as experiments/study_lm_tiny_adaptive.py does
(windows of 64 bytes, 4 a step), widths 32 / 64 / 128 / 256, Adam with 5 % warmup and a cosine
decay for 150 steps, 8 learning rates a quarter-decade apart (10^-3.75 .. 10^-2) x 3 seeds,
under 'sp' and under 'mup' with base width 32 (where the two are the same model): 192 points in
8 compiled groups, one held-out evaluation at the end. The report's "Scale" section fits log lr*
against log width per parametrization (widths 32..128) and predicts the held-out width 256.
(Sized to the 2 shared cores it was measured on; the GPU config goes to width 1024.)

  python scripts/sweep.py --config=experiments/study_mup_transfer.py --workdir=/tmp/mup_transfer

GPU-sized: experiments/study_mup_transfer_gpu.py.
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "lm_tiny").get_config()
  config.model.context = 64  # tokens per window (lm_tiny: 128)
  config.model.base_width = 32  # 'mup' equals 'sp' at this width
  config.data.batch_size = 4  # windows per step (lm_tiny: 16)
  config.data.eval_windows = 64  # windows per held-out split
  config.eval.prompts = 64  # (generation is off; kept <= eval_windows)
  config.optimizer.name = "adam"  # Table 8's rule is for Adam; no weight decay to couple
  config.optimizer.b2 = 0.95
  config.train.microbatch_size = 0  # batches of 4 windows are small already
  config.train.steps = 150
  config.train.steps_per_call = 15
  config.train.log_every = 15
  config.train.eval_every = 150  # the analysis reads the final held-out loss only
  config.train.checkpoint_every = 75
  config.sweep.design = "grid"
  config.sweep.replicates = 3
  config.sweep.diverge_factor = 3.0  # a point whose loss triples is frozen (and ranked last)
  config.sweep.slice_size = -1
  config.sweep.factors = ml_collections.ConfigDict({
      "parametrization": {"values": ["sp", "mup"]},
      "width": {"values": [32, 64, 128, 256]},
      "learning_rate": {"scale": "log", "low": 10**-3.75, "high": 10**-2, "num": 8},
  })
  return config
