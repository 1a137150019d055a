"""What every entry script does at its edge: log the devices, turn user errors into one line."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging as pylogging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

import jax
import ml_collections
from absl import app, flags, logging


def log_devices() -> None:
  """Logs the backend and the devices this process sees (and the process count on multi-host)."""
  devices = jax.devices()
  logging.info(
      "JAX %s on %s: %d device(s) %s; process %d of %d.",
      jax.__version__,
      jax.default_backend(),
      len(devices),
      sorted({d.device_kind for d in devices}),
      jax.process_index(),
      jax.process_count(),
  )


class _QuietLibraries(pylogging.Filter):
  """Drops INFO records of orbax, whose saves log a dozen lines each."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, printing a user's mistake as one line `error: ...` and exiting 1.

  A user's mistake is a `ValueError`, or a `FileNotFoundError` with a message of our own (no
  `filename`), raised by the library (each names the flag or config field and the valid
  choices), or a diverged training run; anything else is a bug and keeps its traceback. Ctrl-C
  prints one line (where training stopped, and that the same command resumes) and exits 130.
  """
  from jaxopt_lab.runloop import Interrupted, TrainingDiverged  # noqa: PLC0415  (keeps this light)

  def guarded(argv: list[str]) -> None:
    # orbax logs every step of every save at INFO; keep the run's own lines readable.
    pylogging.getLogger("absl").addFilter(_QuietLibraries())
    try:
      main(argv)
    except FileNotFoundError as e:
      if e.filename is not None:  # raised by the OS inside a library: a bug, keep the traceback
        raise
      _fail(str(e))
    except (ValueError, TrainingDiverged) as e:
      _fail(str(e))
    except KeyboardInterrupt as e:  # the files are consistent: each write is atomic
      print(str(e) if isinstance(e, Interrupted) else
            "interrupted; run the same command to start again", file=sys.stderr)
      sys.exit(130)

  app.run(guarded, flags_parser=parse_flags)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses absl flags, turning a bad `--config` file or override into a one-line error."""
  config_arg = next((a for a in argv[1:] if a.startswith("--config=")), None)
  if config_arg is not None:
    path = config_arg.split("=", 1)[1].split(":", 1)[0]
    if not os.path.isfile(path):
      _fail(f"--config: no such config file {path!r} (configs live in experiments/)")
  try:
    return flags.FLAGS(list(argv))
  except Exception as e:  # noqa: BLE001  (a config file can raise anything; see what it was)
    config = None
    if config_arg is not None:
      try:
        config = load_config(config_arg.split("=", 1)[1])
      except ValueError as problem:
        _fail(str(problem))
    if isinstance(e, (AttributeError, KeyError)):
      _fail(_explain_override(argv, config) or f"--config: {e}")
    if isinstance(e, flags.Error):
      _fail(str(e))
    raise
  return []  # unreachable


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of `--config=<path>[:<arg>]`, as `config_flags` loads it.

  Raises:
    ValueError: one line naming the file, the line where there is one, and what went wrong (not
      Python, a syntax error, no `get_config()`, or an exception raised while loading it).
  """
  path, _, arg = spec.partition(":")
  loader = importlib.machinery.SourceFileLoader("_config_module", path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  try:
    loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f"--config: {path} line {e.lineno}: not a valid Python config file "
                     f"({e.msg})") from None
  except Exception as e:  # noqa: BLE001  (the user's code)
    raise ValueError(f"--config: {path}{_line_in(path, e)}: loading it raised "
                     f"{type(e).__name__}: {e}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"--config: {path} defines no get_config(); a config file's get_config() "
                     "returns the experiment's ConfigDict (see experiments/)")
  try:
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # noqa: BLE001  (the user's code)
    raise ValueError(f"--config: {path}{_line_in(path, e)}: get_config() raised "
                     f"{type(e).__name__}: {e}") from None


def _line_in(path: str, error: BaseException) -> str:
  """' line N': the last line of `path` that the error's traceback passed through."""
  target = os.path.abspath(path)
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(f.filename) == target]
  return f" line {lines[-1]}" if lines else ""


def _explain_override(argv: Sequence[str], config: ml_collections.ConfigDict | None) -> str | None:
  """Names the `--config.a.b` override whose field does not exist, and the fields that do."""
  if config is None:
    return None
  for item in argv[1:]:
    if not item.startswith("--config."):
      continue
    node, walked = config, "config"
    for part in item[len("--config."):].split("=", 1)[0].split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        is_group = isinstance(node, ml_collections.ConfigDict)
        choices = ", ".join(sorted(node.keys())) if is_group else ""
        return (f"{item.split('=', 1)[0]}: {walked} has no field {part!r}"
                + (f"; valid fields: {choices}" if choices else ""))
      node, walked = node[part], f"{walked}.{part}"
  return None
