"""Loading a user's object named by a config: 'path/to/file.py:name' or 'package.module:name'.

The optimizer and task registries use this to resolve names they do not hold. Nothing is loaded
before a config names it; a file is loaded once per process (like a config file, by path) and
every failure is one line naming the file or module and the cause. While a file loads, its
directory is on `sys.path`, so it may import the modules beside it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import traceback
from typing import Any

FORMS = "'path/to/file.py:name' or 'package.module:name'"
# Where the library, Python and installed packages live: a frame elsewhere is a user's code.
_NOT_USER = (os.path.dirname(os.path.abspath(__file__)), *{
    sysconfig.get_paths()[k] for k in ('stdlib', 'purelib', 'platlib')})


def is_spec(name: Any) -> bool:
  """Whether `name` has the form of a plugin spec (`source:attribute`)."""
  if not isinstance(name, str):
    return False
  source, sep, attr = name.rpartition(':')
  return bool(sep and source and attr)


def _load_file(path: str, where: str) -> Any:
  full = os.path.abspath(path)
  if not os.path.isfile(full):
    raise ValueError(f'{where}: no such file {path!r} (relative paths start at the current '
                     f'directory {os.getcwd()!r})')
  module_name = 'jaxopt_lab_plugin_' + hashlib.sha1(full.encode()).hexdigest()[:12]
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, full)
  module = importlib.util.module_from_spec(spec)
  # The file's directory is importable while it loads, as for `python file.py`: a user's file
  # imports the helper module beside it (`import nadamw_math`) without PYTHONPATH.
  folder = os.path.dirname(full)
  sys.path.insert(0, folder)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # A user's file: any failure is reported as one line.
    raise ValueError(f'{where}: {path} failed to import: {type(e).__name__}: {e}') from e
  finally:
    sys.path.remove(folder)
  sys.modules[module_name] = module
  return module


def _load_module(name: str, where: str) -> Any:
  try:
    return importlib.import_module(name)
  except Exception as e:  # A user's module: any failure is reported as one line.
    raise ValueError(f'{where}: module {name!r} failed to import: {type(e).__name__}: {e}') from e


def load(spec: str, where: str) -> Any:
  """The object `spec` names: `attribute` (dotted for nested) of a `.py` file or a module.

  Args:
    spec: 'path/to/file.py:name' (relative to the current directory) or 'package.module:name'.
    where: the config field, for error messages.

  Raises:
    ValueError: one line: a malformed spec, a missing file or module, an import failure, or a
      missing object (listing what the file or module defines).
  """
  if not is_spec(spec):
    raise ValueError(f'{where}: {spec!r} is not of the form {FORMS}')
  source, _, attr = spec.rpartition(':')
  if source.endswith('.py'):
    obj, origin = _load_file(source, where), source
  else:
    obj, origin = _load_module(source, where), f'module {source!r}'
  for part in attr.split('.'):
    if not hasattr(obj, part):
      names = sorted(n for n in dir(obj) if not n.startswith('_'))[:20]
      raise ValueError(f'{where}: {origin} has no {attr!r}; it defines: {", ".join(names)}')
    obj = getattr(obj, part)
  return obj


def user_frame(error: BaseException) -> str:
  """'file:line: ' of the innermost frame of `error` (or of the errors it was raised from) in a
  user's code, outside this library, Python and installed packages (JAX, Optax); '' if none."""
  found, seen = '', set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    for frame in traceback.extract_tb(error.__traceback__):
      path = os.path.abspath(frame.filename)
      if not path.startswith(_NOT_USER) and not frame.filename.startswith('<'):
        found = f'{short_path(path)}:{frame.lineno}: '
    error = error.__cause__ or error.__context__
  return found


def short_path(path: str) -> str:
  """`path` relative to the current directory when it lies below it, else absolute."""
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative
