"""What the tests do to a workdir: a Ctrl-C after a chosen write, and byte snapshots."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from jaxopt_lab.sweep import store


@contextlib.contextmanager
def interrupt_after_flush(when: int | Callable[[store.Store], bool]) -> Iterator[None]:
  """Within the block, a sweep raises KeyboardInterrupt right after one of its writes.

  Args:
    when: the n-th `Store.flush` (counting from 1), or a predicate on the store, checked after
      every write.
  """
  real = store.Store.flush
  count = 0

  def flush(self, status="running"):
    nonlocal count
    real(self, status)
    count += 1
    if (count == when) if isinstance(when, int) else when(self):
      raise KeyboardInterrupt

  store.Store.flush = flush
  try:
    yield
  finally:
    store.Store.flush = real


def snapshot(folder: str | os.PathLike) -> dict[str, bytes] | None:
  """Every file under `folder` with its bytes; None when `folder` does not exist."""
  if not os.path.exists(folder):
    return None
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out
