"""A task a user brings: a Flax NNX model on scikit-learn's wine data, through the public API.

178 wines, 13 chemical measurements, 3 cultivars. A config names it
`config.task = "examples/wine_task.py:get_task"` (from the repository root), and
scripts/train.py and scripts/sweep.py run it unchanged:

  python scripts/train.py --config=experiments/wine.py --workdir=/tmp/wine
  python scripts/sweep.py --config=experiments/sweep_wine_lr.py --workdir=/tmp/wine_lr
"""

import jax
import ml_collections
import numpy as np
from flax import nnx
from sklearn import datasets

from jaxopt_lab import models, tasks
from jaxopt_lab.data.splits import Splits
from jaxopt_lab.data.tabular import split_indices


class WineNet(nnx.Module):
  """Two tanh layers and a linear read-out: logits of the 3 cultivars."""

  def __init__(self, features: int, hidden: int, classes: int, *, rngs: nnx.Rngs):
    self.hidden1 = nnx.Linear(features, hidden, rngs=rngs)
    self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jax.nn.tanh(self.hidden2(jax.nn.tanh(self.hidden1(x)))))


def wine_splits(seed: int = 0) -> Splits:
  """Train / valid / test (60 / 20 / 20 %), standardised with the train split's statistics."""
  x, y = datasets.load_wine(return_X_y=True)
  idx = dict(zip(("train", "valid", "test"), split_indices(len(x), 0.2, 0.2, seed),
                 strict=True))
  mean, std = x[idx["train"]].mean(axis=0), x[idx["train"]].std(axis=0)
  return Splits(**{split: {"inputs": ((x[i] - mean) / std).astype(np.float32),
                           "labels": y[i].astype(np.int32)} for split, i in idx.items()})


def get_task(model_cfg: ml_collections.ConfigDict,
             data_cfg: ml_collections.ConfigDict) -> tasks.Task:
  """The wine classifier; reads `model.hidden` (default 32) and `data.batch_size`."""
  hidden = int(model_cfg.get("hidden", 32))
  splits = wine_splits(int(data_cfg.get("split_seed", 0)))
  model = models.pure(lambda rngs: WineNet(13, hidden, 3, rngs=rngs))
  return tasks.classifier_task("wine", model, splits, int(data_cfg.batch_size),
                               tasks.softmax_loss)
