"""Atomic file writes: a reader (or a killed run) never sees half a file.

Files are created with the permissions the umask gives (0666 & ~umask, as `open` would), so a
colleague on a shared machine can read an experiment. Append-only logs (`append_bytes`) add whole
lines in one write; a kill may still leave a partial last line, which `read_complete_lines`
leaves out and `drop_partial_line` removes.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The temporary file of an atomic write: `.<name>.<8 random characters of mkstemp>.tmp`.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def umask() -> int:
  """The process's umask (from /proc where it can: setting it to read it is not thread-safe)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file in the same folder and a rename."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600: readable by its owner only
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def remove_stray_temp_files(folder: str | os.PathLike) -> list[str]:
  """Deletes the temporary files that killed atomic writes left in `folder`; returns their names.

  A process killed between creating its temporary file and the rename leaves the file behind
  (the rename never happens, and neither does the clean-up). Call only while holding the folder's
  `WorkdirLock`, so that no live writer's file is taken.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    return []
  stray = sorted(n for n in os.listdir(folder) if _TEMP_NAME.match(n)
                 and os.path.isfile(os.path.join(folder, n)))
  for name in stray:
    os.unlink(os.path.join(folder, name))
  return stray


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8, newlines as given) to `path` atomically."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
  """JSON lines of `rows` (NaN and inf as JSON's extensions, as `json` writes them)."""
  return "".join(json.dumps(dict(r), allow_nan=True) + "\n" for r in rows).encode("utf-8")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
  atomic_write_bytes(path, jsonl_bytes(rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The rows of a JSON-lines file; a partial last line (a killed append) is left out."""
  text = read_complete_lines(path).decode("utf-8")
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Appends `data` (whole lines) to `path` in one write and syncs it to disk."""
  with open(path, "ab") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def read_complete_lines(path: str | os.PathLike) -> bytes:
  """The bytes of `path` up to and including its last newline."""
  with open(path, "rb") as f:
    data = f.read()
  return data[: data.rfind(b"\n") + 1]


def drop_partial_line(path: str | os.PathLike) -> bool:
  """Cuts `path` back to its last newline (the partial line a killed append left); True if cut.

  Call only while holding the folder's `WorkdirLock`.
  """
  if not os.path.exists(path):
    return False
  size = os.path.getsize(path)
  keep = len(read_complete_lines(path))
  if keep == size:
    return False
  with open(path, "r+b") as f:
    f.truncate(keep)
    os.fsync(f.fileno())
  return True


def atomic_write_csv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
  """Writes `rows` as CSV with a header of `columns` (missing values are empty cells)."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", restval="")
  writer.writeheader()
  for row in rows:
    writer.writerow(row)
  atomic_write_text(path, buf.getvalue())


class WorkdirLock:
  """An exclusive lock on `workdir/.lock`, held while a run or sweep writes the directory.

  `flock` is released by the kernel when the process dies, so a killed run never leaves a stale
  lock; a second live run on the same directory is refused with a ValueError naming --workdir.
  """

  def __init__(self, workdir: str | os.PathLike):
    self._file = open(os.path.join(workdir, ".lock"), "a+")  # noqa: SIM115
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "unknown"
      self._file.close()
      raise ValueError(
          f"--workdir: {os.fspath(workdir)!r} is in use by another run (process {holder}); "
          "wait for it to end or use another workdir") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(str(os.getpid()))
    self._file.flush()

  def release(self) -> None:
    if not self._file.closed:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
