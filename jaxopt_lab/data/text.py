"""A byte-level language-modelling corpus (vocabulary 256), offline and deterministic.

Source: by default the ``.py`` files of the running Python's standard library
(``sysconfig.get_paths()['stdlib']``, without ``site-packages``/``dist-packages``, the
``test``/``tests``/``idle_test`` directories and ``pydoc_data``, which is documentation); or the
text files named by ``data.paths`` (comma-separated files, directories (all their files) or glob
patterns). Files containing a NUL byte count as binary and are skipped.

Selection: files are visited in the order of a hash of their relative path (a fixed, path-only
shuffle, so the selection mixes packages rather than taking the alphabetically first ones) and
kept while their total stays within ``byte_budget``.

Splits are by file: in the order of another hash of the relative path, a file goes to test if it
fits in test's share (``test_fraction`` of the bytes), else to valid if it fits in
``valid_fraction``, else to train (a split that nothing fits gets the smallest file). No file is
in two splits, and the assignment depends only on the paths and sizes.

Windows: each file of ``n`` bytes gives ``(n - 1) // context`` windows of ``context + 1`` bytes at
offsets ``0, context, 2 context, ...`` (consecutive windows share one byte, so every byte but a
file's first is a prediction target exactly once); files shorter than ``context + 1`` give none.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import sysconfig
from collections.abc import Sequence

import numpy as np

from jaxopt_lab.data.batching import read_only
from jaxopt_lab.data.splits import SPLITS, Splits

DEFAULT_BYTE_BUDGET = 8_000_000
VOCAB = 256
_EXCLUDED_DIRS = frozenset(
    {'site-packages', 'dist-packages', '__pycache__', 'test', 'tests', 'idle_test', 'pydoc_data'}
)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Files of each split: ``files[split]`` is a tuple of ``(relative path, uint8 bytes)``."""

  files: dict[str, tuple[tuple[str, np.ndarray], ...]]
  source: str

  def tokens(self, split: str) -> np.ndarray:
    """All bytes of ``split``'s files, concatenated (uint8)."""
    return np.concatenate([a for _, a in self.files[split]])

  def num_bytes(self, split: str) -> int:
    return int(sum(a.size for _, a in self.files[split]))


def parse_paths(paths: str | Sequence[str] | None) -> tuple[str, ...]:
  """``data.paths`` as a tuple: a comma-separated string or a sequence; '' or None -> ()."""
  if paths is None:
    return ()
  if isinstance(paths, str):
    paths = paths.split(',')
  return tuple(p.strip() for p in paths if p.strip())


def _hash(salt: str, rel: str) -> int:
  return int.from_bytes(hashlib.sha256(f'{salt}:{rel}'.encode()).digest()[:8], 'big')


def _stdlib_files() -> list[tuple[str, str]]:
  root = sysconfig.get_paths()['stdlib']
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS and not d.startswith('.'))
    for name in sorted(filenames):
      if name.endswith('.py'):
        path = os.path.join(dirpath, name)
        out.append((os.path.relpath(path, root).replace(os.sep, '/'), path))
  return out


def _user_files(patterns: tuple[str, ...]) -> list[tuple[str, str]]:
  found: dict[str, str] = {}
  for pattern in patterns:
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
      matches = sorted(glob.glob(expanded, recursive=True))
      if not matches:
        raise ValueError(f'data.paths: {pattern!r} matches no file')
    elif os.path.exists(expanded):
      matches = [expanded]
    else:
      raise ValueError(f'data.paths: {pattern!r} does not exist')
    for match in matches:
      if os.path.isdir(match):
        for dirpath, dirnames, filenames in os.walk(match):
          dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
          for name in sorted(filenames):
            if not name.startswith('.'):
              path = os.path.join(dirpath, name)
              found[os.path.realpath(path)] = path
      elif os.path.isfile(match):
        found[os.path.realpath(match)] = match
  if not found:
    raise ValueError(f'data.paths: no files in {", ".join(patterns)}')
  paths = sorted(found)
  common = os.path.commonpath([os.path.dirname(p) for p in paths])
  return [(os.path.relpath(p, common).replace(os.sep, '/'), p) for p in paths]


def _split_by_file(
    files: list[tuple[str, np.ndarray]], valid_fraction: float, test_fraction: float, source: str
) -> dict[str, tuple[tuple[str, np.ndarray], ...]]:
  if len(files) < 3:
    raise ValueError(
        f'data.paths: need at least 3 text files to split by file into train/valid/test; '
        f'found {len(files)} in {source}'
    )
  total = sum(a.size for _, a in files)
  target = {'test': test_fraction * total, 'valid': valid_fraction * total}
  taken = {'test': 0, 'valid': 0}
  out: dict[str, list] = {split: [] for split in SPLITS}
  for rel, data in sorted(files, key=lambda f: _hash('split', f[0])):
    split = next((s for s in ('test', 'valid') if taken[s] + data.size <= target[s]), 'train')
    out[split].append((rel, data))
    taken[split] = taken.get(split, 0) + data.size
  for split in ('test', 'valid'):
    if not out[split]:  # Every file was larger than the split's share: take the smallest.
      smallest = min(range(len(out['train'])), key=lambda i: out['train'][i][1].size)
      out[split].append(out['train'].pop(smallest))
  return {split: tuple(sorted(v, key=lambda f: f[0])) for split, v in out.items()}


@functools.lru_cache(maxsize=4)
def load_corpus(
    paths: tuple[str, ...] = (),
    byte_budget: int = DEFAULT_BYTE_BUDGET,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Corpus:
  """Reads and splits the corpus (cached on the arguments).

  Args:
    paths: ``parse_paths(data.paths)``; () for the standard library's sources.
    byte_budget: at most this many bytes are kept.
    valid_fraction, test_fraction: shares of the bytes for the valid and test splits.

  Returns:
    The ``Corpus``.
  """
  for name, f in (('valid_fraction', valid_fraction), ('test_fraction', test_fraction)):
    if not 0.0 < f < 1.0:
      raise ValueError(f'data.{name}: must be in (0, 1); got {f!r}')
  if valid_fraction + test_fraction >= 1.0:
    raise ValueError(
        f'data.valid_fraction, data.test_fraction: {valid_fraction} + {test_fraction} leave no '
        'training data'
    )
  if isinstance(byte_budget, bool) or not isinstance(byte_budget, int) or byte_budget < 1:
    raise ValueError(f'data.byte_budget: must be a positive integer; got {byte_budget!r}')
  if paths:
    candidates, source = _user_files(paths), f'data.paths {", ".join(paths)}'
  else:
    candidates, source = _stdlib_files(), 'the Python standard library'
  files, total, too_big = [], 0, 0
  for rel, path in sorted(candidates, key=lambda f: _hash('select', f[0])):
    size = os.path.getsize(path)
    if total + size > byte_budget:
      too_big += size > 0
      continue
    with open(path, 'rb') as f:
      data = f.read()
    if not data or b'\0' in data:
      continue
    files.append((rel, np.frombuffer(data, dtype=np.uint8)))
    total += len(data)
  if not files:
    if too_big:
      raise ValueError(
          f'data.byte_budget: {byte_budget} bytes is smaller than every file of {source}'
      )
    raise ValueError(f'data.paths: no text in {source} (files are empty or binary)')
  return Corpus(_split_by_file(files, valid_fraction, test_fraction, source), source)


@functools.lru_cache(maxsize=4)
def make_windows(
    context: int,
    paths: tuple[str, ...] = (),
    byte_budget: int = DEFAULT_BYTE_BUDGET,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Splits:
  """The corpus cut into windows: splits of ``{'tokens': uint8 [n, context + 1]}`` (cached).

  A window's first ``context`` bytes are the inputs and its last ``context`` the targets.
  """
  if isinstance(context, bool) or not isinstance(context, int) or context < 1:
    raise ValueError(f'model.context: must be a positive integer; got {context!r}')
  corpus = load_corpus(paths, byte_budget, valid_fraction, test_fraction)
  out = {}
  for split in SPLITS:
    files = corpus.files[split]
    windows = [
        np.lib.stride_tricks.sliding_window_view(a, context + 1)[::context]
        for _, a in files if a.size > context
    ]
    if not windows:
      longest = max(a.size for _, a in files)
      raise ValueError(
          f'model.context: {context} needs files of at least {context + 1} bytes, but the '
          f'longest file of the {split} split of {corpus.source} has {longest}'
      )
    out[split] = read_only({'tokens': np.concatenate(windows)})
  return Splits(**out)
