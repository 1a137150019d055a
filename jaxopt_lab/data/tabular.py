"""Scikit-learn's bundled classification datasets (no download), standardised.

``breast_cancer``: 569 examples, 30 features, binary (labels float32 in {0, 1}, 1 = benign).
``digits``: 1797 8x8 images as 64 features, 10 classes (labels int32).
A fixed seeded permutation splits the examples into test, valid and train (in that order of the
permutation); features are standardised with the mean and standard deviation of the train split
only (a constant feature keeps scale 1, as in ``sklearn.preprocessing.StandardScaler``).
"""

from __future__ import annotations

import functools

import numpy as np

from jaxopt_lab.data.batching import read_only
from jaxopt_lab.data.splits import Splits

DATASETS = ('breast_cancer', 'digits')


def split_indices(
    num_examples: int, valid_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Disjoint (train, valid, test) index arrays covering ``range(num_examples)``."""
  for name, f in (('valid_fraction', valid_fraction), ('test_fraction', test_fraction)):
    if not 0.0 < f < 1.0:
      raise ValueError(f'data.{name}: must be in (0, 1); got {f!r}')
  n_test = max(1, round(num_examples * test_fraction))
  n_valid = max(1, round(num_examples * valid_fraction))
  if n_test + n_valid >= num_examples:
    raise ValueError(
        f'data.valid_fraction, data.test_fraction: {valid_fraction} + {test_fraction} leave no '
        f'training examples out of {num_examples}'
    )
  perm = np.random.default_rng(seed).permutation(num_examples)
  return perm[n_test + n_valid:], perm[n_test:n_test + n_valid], perm[:n_test]


@functools.lru_cache(maxsize=8)
def raw(name: str) -> tuple[np.ndarray, np.ndarray]:
  """The unscaled ``(features float64 [n, d], targets int [n])`` of dataset ``name``."""
  if name not in DATASETS:
    raise ValueError(f"data: unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow import, used once)

  bunch = getattr(datasets, f'load_{name}')()
  return np.asarray(bunch.data, np.float64), np.asarray(bunch.target)


@functools.lru_cache(maxsize=8)
def load(
    name: str, valid_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
  """Splits of ``{'inputs': float32 [n, d], 'labels': [n]}`` for 'breast_cancer' or 'digits'."""
  x, y = raw(name)
  idx = dict(zip(('train', 'valid', 'test'),
                 split_indices(len(x), valid_fraction, test_fraction, seed), strict=True))
  mean = x[idx['train']].mean(axis=0)
  std = x[idx['train']].std(axis=0)
  std = np.where(std > 0, std, 1.0)
  labels = y.astype(np.float32) if name == 'breast_cancer' else y.astype(np.int32)
  return Splits(**{
      split: read_only({
          'inputs': ((x[i] - mean) / std).astype(np.float32), 'labels': labels[i]
      })
      for split, i in idx.items()
  })
