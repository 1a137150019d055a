r"""The `small` byte-level transformer LM, worth a GPU (bf16 compute, float32 state).

  python scripts/train.py --config=experiments/lm_small.py --workdir=/tmp/lm_small
"""

from jaxopt_lab.configs import base_config
from jaxopt_lab.defaults import lm_size_config


def get_config():
  config = base_config("lm")
  size = lm_size_config("small")
  config.model.update(size.model)
  config.data.update(size.data)
  config.model.dtype = "bfloat16"
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.1
  config.optimizer.decay_mask = "matrices"  # no decay of biases and norm scales
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup = 0.05
  config.optimizer.clip_norm = 1.0
  config.train.steps = 2000
  config.train.steps_per_call = 50
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config
