"""The three splits every dataset has."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLITS = ('train', 'valid', 'test')


@dataclasses.dataclass(frozen=True)
class Splits:
  """A dataset as three dicts of arrays with a common leading (example) axis.

  ``train`` is for fitting, ``valid`` for tuning hyperparameters, ``test`` for the final report.
  Arrays are read-only: they may be shared through caches.
  """

  train: dict[str, np.ndarray]
  valid: dict[str, np.ndarray]
  test: dict[str, np.ndarray]

  def __getitem__(self, split: str) -> dict[str, np.ndarray]:
    if split not in SPLITS:
      raise ValueError(f"split: unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    return getattr(self, split)

  def size(self, split: str) -> int:
    """Number of examples in ``split``."""
    return len(next(iter(self[split].values())))
