r"""A user's task (examples/wine_task.py: a Flax NNX MLP on scikit-learn's wine data), trained by
scripts/train.py unchanged.

  python scripts/train.py --config=experiments/wine.py --workdir=/tmp/wine
"""

from jaxopt_lab.configs import base_config, beside


def get_config():
  config = base_config(beside(__file__, "../examples/wine_task.py:get_task"))
  config.model.hidden = 32  # the plugin's own field: hidden width
  config.data.batch_size = 32  # of 106 training wines
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.train.update(dict(steps=200, steps_per_call=50, log_every=10, eval_every=50,
                           checkpoint_every=100))
  return config
