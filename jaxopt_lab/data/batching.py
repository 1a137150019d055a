"""Batches as a pure function of (data seed, step): resumable and shared across runs.

The batch at step ``s`` for data seed ``d`` takes the examples at positions
``[i * batch_size, (i + 1) * batch_size)`` of the permutation ``default_rng([d, epoch])`` of the
training set, where ``epoch, i = divmod(s, steps_per_epoch)``. An epoch drops the last
``num_examples % batch_size`` examples of its permutation (different ones every epoch), so every
step has a full batch, and within an epoch every other example is seen exactly once. Nothing is
stateful: a run resumes at any step, and two runs with the same data seed see the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def check_batch_size(batch_size: int, num_examples: int, what: str = 'examples') -> None:
  """Raises a ValueError naming ``data.batch_size`` unless ``1 <= batch_size <= num_examples``."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
    raise ValueError(f'data.batch_size: must be an integer; got {batch_size!r}')
  if batch_size < 1:
    raise ValueError(f'data.batch_size: must be positive; got {batch_size}')
  if batch_size > num_examples:
    raise ValueError(
        f'data.batch_size: {batch_size} is larger than the training set ({num_examples} {what})'
    )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch, ``num_examples // batch_size``."""
  check_batch_size(batch_size, num_examples)
  return num_examples // batch_size


def batch_indices(
    num_examples: int, batch_size: int, data_seed: int, start_step: int, num_steps: int
) -> np.ndarray:
  """Example indices of steps ``start_step ... start_step + num_steps - 1``.

  Args:
    num_examples: size of the training set.
    batch_size: examples per step.
    data_seed: non-negative integer seed of the example order.
    start_step: first step (non-negative).
    num_steps: number of steps (non-negative).

  Returns:
    int64 array [num_steps, batch_size].
  """
  data_seed, start_step, num_steps = int(data_seed), int(start_step), int(num_steps)
  if data_seed < 0:
    raise ValueError(f'data_seed: must be non-negative; got {data_seed}')
  if start_step < 0 or num_steps < 0:
    raise ValueError(
        f'start_step, num_steps: must be non-negative; got {start_step}, {num_steps}'
    )
  per_epoch = steps_per_epoch(num_examples, batch_size)
  steps = np.arange(start_step, start_step + num_steps)
  epochs, within = np.divmod(steps, per_epoch)
  out = np.empty((num_steps, batch_size), dtype=np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([data_seed, int(epoch)]).permutation(num_examples)
    batches = perm[: per_epoch * batch_size].reshape(per_epoch, batch_size)
    rows = epochs == epoch
    out[rows] = batches[within[rows]]
  return out


def gather(arrays: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
  """``{k: a[indices]}``: a batch (or a stack of batches) of each array's leading axis."""
  return {k: np.asarray(a)[indices] for k, a in arrays.items()}


def read_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The arrays, marked read-only (they live in caches shared by every caller)."""
  out = {}
  for k, a in arrays.items():
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    out[k] = a
  return out
