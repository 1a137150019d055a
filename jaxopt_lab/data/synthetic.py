"""The classic example's data: a planted linear rule with label noise.

Inputs are standard normal, ``x ~ N(0, I_features)``; the clean label is ``1[x . w* > 0]`` for a
planted ``w* ~ N(0, I)``; each label is then flipped independently with probability ``flip_prob``.
Since the clean rule is a deterministic function of ``x`` and the flips are independent of ``x``,
the best possible (Bayes) accuracy on fresh data is exactly ``1 - flip_prob``, and a linear model
can reach it. Held-out splits come from the same rule, so their accuracy means something.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxopt_lab.data.batching import read_only
from jaxopt_lab.data.splits import SPLITS, Splits


def bayes_accuracy(flip_prob: float) -> float:
  """The best accuracy any classifier can have on this data: ``1 - flip_prob``."""
  return 1.0 - float(flip_prob)


def planted_weights(features: int = 10, seed: int = 0) -> np.ndarray:
  """The planted rule ``w*`` (float64 [features]) of dataset ``seed``."""
  return np.random.default_rng([seed, 0]).standard_normal(features)


@functools.lru_cache(maxsize=16)
def make_synthetic(
    num_train: int = 100,
    num_valid: int = 1000,
    num_test: int = 1000,
    features: int = 10,
    flip_prob: float = 0.1,
    seed: int = 0,
) -> Splits:
  """The dataset: splits of ``{'inputs': float32 [n, features], 'labels': float32 [n] in {0, 1}}``.

  Args:
    num_train, num_valid, num_test: examples per split.
    features: input size.
    flip_prob: probability that a label is flipped, in [0, 0.5).
    seed: dataset seed (the rule and the samples; not the batch order).
  """
  sizes = {'train': num_train, 'valid': num_valid, 'test': num_test}
  for split, n in sizes.items():
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f'data.num_{split}: must be a positive integer; got {n!r}')
  if isinstance(features, bool) or not isinstance(features, int) or features < 1:
    raise ValueError(f'data.features: must be a positive integer; got {features!r}')
  if not 0.0 <= flip_prob < 0.5:
    raise ValueError(f'data.flip_prob: must be in [0, 0.5); got {flip_prob!r}')
  w = planted_weights(features, seed)
  out = {}
  for i, split in enumerate(SPLITS, start=1):
    rng = np.random.default_rng([seed, i])
    x = rng.standard_normal((sizes[split], features))
    clean = x @ w > 0
    flip = rng.random(sizes[split]) < flip_prob
    out[split] = read_only({
        'inputs': x.astype(np.float32), 'labels': (clean ^ flip).astype(np.float32)
    })
  return Splits(**out)
