r"""The classic first experiment: logistic regression (10 inputs -> 1) with binary cross-entropy.

100 samples of 10 features with a planted linear rule, full batch, 10 epochs, the loss printed
each epoch; Adam at learning rate 1e-3, or SGD / RMSprop with the config argument:

  python scripts/train.py --config=experiments/classic.py --workdir=/tmp/classic
  python scripts/train.py --config=experiments/classic.py:sgd --workdir=/tmp/classic_sgd
  python scripts/train.py --config=experiments/classic.py:rmsprop --workdir=/tmp/classic_rms
"""

from jaxopt_lab.configs import base_config


def get_config(optimizer: str = "adam"):
  config = base_config("classic")
  config.optimizer.name = optimizer  # adam | sgd | rmsprop (| adamw)
  config.optimizer.learning_rate = 1e-3
  config.data.batch_size = 100  # the whole training set: one step per epoch
  config.train.steps = 10  # 10 epochs
  config.train.steps_per_call = 1
  config.train.log_every = 1  # the loss of every epoch
  config.train.eval_every = 10
  config.train.checkpoint_every = 5
  return config
