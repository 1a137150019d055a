r"""An MLP 64-256-256-10 on scikit-learn's 8x8 digits, batch 128.

  python scripts/train.py --config=experiments/digits_mlp.py --workdir=/tmp/digits
"""

from jaxopt_lab.configs import base_config


def get_config():
  config = base_config("digits")
  config.model.hidden = (256, 256)  # hidden widths: 64 inputs -> 256 -> 256 -> 10 classes
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.data.batch_size = 128
  config.train.steps = 1000
  config.train.steps_per_call = 50
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 500
  return config
