"""The start of a run on its workdir: create, lock, clean up, record the config or take over.

Shared by the single run (`single.train`) and the sweep (`sweep.store.Store`). Everything a run
can check is checked before `prepare` is called, so a refused start writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any

import ml_collections

from jaxopt_lab import expdir, files

# What the start of a run writes before its first step: a start that got no further (refused,
# killed or interrupted before a step trained) is taken over by the next start, whatever its config.
_UNTRAINED_FILES = (expdir.CONFIG_FILE, expdir.DESIGN_FILE, expdir.METRICS_FILE,
                    expdir.SUMMARY_FILE, expdir.RUN_FILE)


def trained(workdir: str) -> bool:
  """Whether `workdir` holds a trained step: a checkpoint, a result, or metrics after step 0."""
  folder = expdir.checkpoints_dir(workdir)
  for _, dirs, _ in os.walk(folder):
    if any(d.isdigit() for d in dirs):
      return True
  if os.path.exists(os.path.join(workdir, expdir.SINGLE_SUMMARY_FILE)):
    return True
  path = os.path.join(workdir, expdir.METRICS_FILE)
  try:
    return os.path.exists(path) and any(r.get("step", 0) > 0 for r in files.read_jsonl(path))
  except ValueError:  # a damaged file: treat the run as trained and let the user decide
    return True


def prepare(workdir: str, config: ml_collections.ConfigDict) -> files.WorkdirLock:
  """Creates and locks `workdir` and records the config; returns the lock.

  Removes the temporary files of atomic writes that a killed run left. Refuses a workdir that
  holds a trained run of another config; one whose earlier start trained no step is taken over.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, expdir.WRITE_PROBE_FILE)
    with open(probe, "w") as f:
      f.write("ok")
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"--workdir: cannot write to {workdir!r}: {e.strerror or e}") from None
  lock = files.WorkdirLock(workdir)  # before anything is read: another start may be writing
  try:
    for folder in (workdir, expdir.checkpoints_dir(workdir)):
      for name in files.remove_stray_temp_files(folder):
        logging.info("Removed %s, left by a killed write.", os.path.join(folder, name))
    _record_config(workdir, config)
  except BaseException:
    lock.release()
    raise
  return lock


def check_config(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether `workdir` already records `config`; writes nothing.

  Raises:
    ValueError: naming --workdir, when it holds a trained run of another config (which
      `prepare` would refuse).
  """
  path = os.path.join(workdir, expdir.CONFIG_FILE)
  if not os.path.exists(path):
    return False
  resolved = json.loads(json.dumps(config.to_dict()))
  try:
    with open(path) as f:
      previous = json.load(f)
  except ValueError:
    previous = None
  if previous == resolved:
    return True
  if trained(workdir):
    if previous is None:
      raise ValueError(f"--workdir: {path} is not valid JSON; use a new workdir")
    diff = sorted(_flat_diff(previous, resolved))
    raise ValueError(
        f"--workdir: {workdir!r} holds a run with another config (differs in "
        f"{', '.join(diff[:8])}); use a new workdir or the same config to resume"
    )
  return False


def _record_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, expdir.CONFIG_FILE)
  if check_config(workdir, config):
    return
  if os.path.exists(path):
    logging.warning("--workdir: %r holds only the start of a run that trained no step; taking it "
                    "over.", workdir)
    for name in _UNTRAINED_FILES:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(workdir, name))
    shutil.rmtree(expdir.checkpoints_dir(workdir), ignore_errors=True)
  files.atomic_write_json(path, json.loads(json.dumps(config.to_dict())))


def _flat_diff(a: Any, b: Any, prefix: str = "") -> set[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = set()
    for key in set(a) | set(b):
      out |= _flat_diff(a.get(key), b.get(key), f"{prefix}{key}.")
    return out
  return set() if a == b else {prefix.rstrip(".")}
