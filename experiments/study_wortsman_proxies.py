r"""Small-scale proxies of instability (Wortsman et al. 2023, arXiv 2309.14322) at CPU scale:
learning-rate sensitivity with and without qk-layernorm, the largest attention logit, and
z-loss against output-logit growth. docs/studies/wortsman_proxies.md holds the measured answer.

The tiny byte LM (2 blocks, 4 heads) on windows of 64 bytes, 4 a step, widths 32 and 128,
AdamW (their recipe: warmup 5 %, cosine decay, independent weight decay off here: no decay, the
setting in which they saw output logits diverge) for 150 steps; learning rates half a decade
apart from 1e-3 to 3e-1 (their grid's top), 3 seeds; qk_norm off / on and z-loss 0 / 1e-4: 144
points in 8 compiled groups. Every evaluation records the largest attention logit, the largest
output logit and the mean log Z (the LM's held-out metrics), so the report's tables show them per
point; the "Scale" section gives the optimal lr per group, and docs/studies/wortsman_proxies.md
computes their sensitivity (paired over seeds) from summary.csv.

  python scripts/sweep.py --config=experiments/study_wortsman_proxies.py --workdir=/tmp/wortsman

GPU-sized: experiments/study_wortsman_proxies_gpu.py.
"""

import ml_collections

from jaxopt_lab.configs import sibling


def get_config():
  config = sibling(__file__, "study_mup_transfer").get_config()
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.0  # Wortsman et al.: logit divergence shows without decay
  config.train.steps = 150
  config.train.steps_per_call = 15
  config.train.log_every = 15
  config.train.eval_every = 75
  config.train.checkpoint_every = 75
  config.sweep.factors = ml_collections.ConfigDict({
      "width": {"values": [32, 128]},
      "qk_norm": {"values": [False, True]},
      "z_loss": {"values": [0.0, 1e-4]},
      "learning_rate": {"scale": "log", "low": 1e-3, "high": 10**-0.5, "num": 6},
  })
  return config
