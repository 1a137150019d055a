"""orbax checkpoints of a training state pytree, used by the single run and the sweep alike."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one pytree under `directory/<step>/`, keeping the newest `max_to_keep`.

  Saves are synchronous: once `save` returns the checkpoint is complete on disk (orbax writes it
  to a temporary folder and renames it), so a process killed at any moment leaves either the
  previous or the new checkpoint as the latest one, never a partial one.
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, like: Any) -> Any:
    """Restores the checkpoint of `step` with the structure, dtypes and shardings of `like`."""
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        like,
    )
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    self._manager.close()
