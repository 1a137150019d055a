r"""Logistic regression on scikit-learn's breast-cancer data (30 standardised features).

  python scripts/train.py --config=experiments/breast_cancer.py --workdir=/tmp/bc
"""

from jaxopt_lab.configs import base_config


def get_config():
  config = base_config("breast_cancer")
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.data.batch_size = 32
  config.train.steps = 500
  config.train.steps_per_call = 50
  config.train.log_every = 50
  config.train.eval_every = 100
  config.train.checkpoint_every = 250
  return config
