"""Batches as a pure function of (data seed, step): resumable and shared across runs.

The batch at step ``s`` for data seed ``d`` takes the examples at positions
``[i * batch_size, (i + 1) * batch_size)`` of the permutation of epoch ``epoch`` of the training
set, where ``epoch, i = divmod(s, steps_per_epoch)``. That permutation sorts the examples by a
64-bit hash of ``(d, epoch, example)`` (SplitMix64's finaliser), so the permutations of all the
epochs a chunk of steps touches come from one vectorised computation (a generator per epoch cost
more than the compiled steps when an epoch is one step). An epoch drops the last
``num_examples % batch_size`` examples of its permutation (different ones every epoch), so every
step has a full batch, and within an epoch every other example is seen exactly once. Nothing is
stateful: a run resumes at any step, and two runs with the same data seed see the same batches.
"""

from __future__ import annotations

import functools
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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's output function, elementwise on uint64 (wrapping arithmetic)."""
  z = x + _GOLDEN
  z = (z ^ (z >> np.uint64(30))) * _MIX1
  z = (z ^ (z >> np.uint64(27))) * _MIX2
  return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=16)
def epoch_permutations(num_examples: int, data_seed: int, epochs: tuple[int, ...]) -> np.ndarray:
  """The example order of each of ``epochs`` for ``data_seed``: [len(epochs), num_examples].

  Row ``j`` sorts ``range(num_examples)`` by ``mix(mix(mix(data_seed) ^ epochs[j]) ^ example)``
  (ties have probability ~ n^2 / 2^65). Cached (read-only), because successive chunks of steps
  of a large training set fall in the same epoch.
  """
  seed = _mix(np.asarray([data_seed], np.uint64))
  per_epoch = _mix(seed ^ np.asarray(epochs, np.uint64))
  keys = _mix(per_epoch[:, None] ^ np.arange(num_examples, dtype=np.uint64)[None, :])
  out = np.argsort(keys, axis=1).astype(np.int32 if num_examples < 2**31 else np.int64)
  out.flags.writeable = False
  return out


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
  if not 0 <= data_seed < 2**64:
    raise ValueError(f'data_seed: must be in [0, 2**64); got {data_seed}')
  if start_step < 0 or num_steps < 0:
    raise ValueError(
        f'start_step, num_steps: must be non-negative; got {start_step}, {num_steps}'
    )
  per_epoch = steps_per_epoch(num_examples, batch_size)
  steps = np.arange(start_step, start_step + num_steps)
  epochs, within = np.divmod(steps, per_epoch)
  unique, which = np.unique(epochs, return_inverse=True)
  perms = epoch_permutations(num_examples, data_seed, tuple(unique.tolist()))
  perms = perms[:, : per_epoch * batch_size]
  batches = perms.reshape(len(unique), per_epoch, batch_size)
  return batches[which, within].astype(np.int64)


def gather(arrays: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
  """``{k: a[indices]}``: a batch (or a stack of batches) of each array's leading axis.

  `np.take` along the leading axis gives the same array as fancy indexing, about 6x faster for
  a stack of small batches (benchmarks/HISTORY.md, "The sweep's host work").
  """
  return {k: np.take(np.asarray(a), indices, axis=0) for k, a in arrays.items()}


def read_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The arrays, marked read-only (they live in caches shared by every caller)."""
  out = {}
  for k, a in arrays.items():
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    out[k] = a
  return out
