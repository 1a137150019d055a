"""orbax checkpoints of a training state pytree, used by the single run and the sweep alike."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one pytree under `directory/<step>/`, keeping the newest `max_to_keep`.

  Saves are synchronous: once `save` returns the checkpoint is complete on disk (orbax writes it
  to a temporary folder and renames it), so a process killed at any moment leaves either the
  previous or the new checkpoint as the latest one, never a partial one. Ctrl-C waits for a save
  or restore in progress to end.
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.fspath(directory))
    self._max_to_keep = max_to_keep
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    with _orbax_silenced():  # it logs a damaged metadata file's whole content at ERROR
      return ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=self._max_to_keep,
              create=True,
              enable_async_checkpointing=False,
              cleanup_tmp_directories=True,
          ),
      )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, tree: Any) -> None:
    with _sigint_deferred():
      self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
      self._manager.wait_until_finished()

  def restore(self, step: int, like: Any) -> Any:
    """Restores the checkpoint of `step` with the structure, dtypes and shardings of `like`."""
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        like,
    )
    with _sigint_deferred():
      return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def restore_latest(self, like: Any) -> tuple[int, Any] | None:
    """(step, tree) of the newest checkpoint that restores; None when there is no checkpoint.

    A checkpoint damaged after its save (truncated or corrupt files, a partial copy) is skipped
    with one warning line and deleted, so that training can save that step again; the caller
    resumes from the older one as from any checkpoint.

    Raises:
      ValueError: naming the directory, when there are checkpoints and none of them restores.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    failed: list[tuple[int, str]] = []
    for step in steps:
      try:
        with _orbax_silenced():
          tree = self.restore(step, like)
      except Exception as e:  # noqa: BLE001  (orbax, tensorstore and json each raise their own)
        failed.append((step, _first_line(e)))
        with _orbax_silenced():
          # Finalise the failed restore's coroutines now, while their complaints are dropped.
          del e
          gc.collect()
          # A failed restore can leave the manager's idea of the checkpoint's items wrong.
          self._manager.close()
          self._manager = self._open()
        continue
      for bad, cause in failed:
        path = os.path.join(self.directory, str(bad))
        logging.warning("Checkpoint %s does not restore (%s); deleted it, resuming from step %d.",
                        path, cause, step)
        shutil.rmtree(path, ignore_errors=True)  # another process may have deleted it
      if failed:
        self._manager.close()
        self._manager = self._open()
      return step, tree
    if failed:
      raise ValueError(
          f"--workdir: none of the {len(failed)} checkpoint(s) in {self.directory} restores "
          f"(step {failed[0][0]}: {failed[0][1]}); move that directory away to train from the "
          "start")
    return None

  def close(self) -> None:
    self._manager.close()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
  """Holds Ctrl-C back until the block ends, then delivers it to the handler there was.

  orbax saves and restores in its own threads while the main thread waits: interrupted there,
  the interpreter shuts down under them and each prints a traceback. A save or restore is short;
  the interrupt comes right after it, with the checkpoint complete.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  caught: list[int] = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if caught:
      signal.raise_signal(signal.SIGINT)


def _first_line(error: Exception, limit: int = 160) -> str:
  """The start of an error's message: tensorstore's run to kilobytes of JSON spec."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  text = text.split(" See full TensorStore details")[0]
  return text if len(text) <= limit else text[:limit] + "..."


class _DropOrbax(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return record.name != "asyncio" and "orbax" not in record.pathname


@contextlib.contextmanager
def _orbax_silenced() -> Iterator[None]:
  """Drops orbax's log lines and the complaints of its asyncio tasks meanwhile.

  On a damaged checkpoint orbax logs the file's content at ERROR, and the reads still in flight
  when a restore fails end in "Task exception was never retrieved" (kilobytes of tensorstore
  spec) and "Event loop is closed" tracebacks; the caller reports the damage in one line.
  """
  drop, hook = _DropOrbax(), sys.unraisablehook
  loggers = [logging.getLogger("absl"), logging.getLogger("asyncio")]
  for logger in loggers:
    logger.addFilter(drop)
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    sys.unraisablehook = hook
    for logger in loggers:
      logger.removeFilter(drop)
