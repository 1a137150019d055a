"""The adaptive-design registry: every adaptive design, built in or a user's, is a declaration.

An adaptive design trains a structural group in stages (`stages`): its **policy** looks at the
scores a stage reached and says what the next stage trains. A declaration names the policy's
builder, the **settings** it reads from `sweep.adaptive` (each with a default and a valid range,
checked before anything is written, as an optimizer's values are), the designs that may draw its
starting points (`sweep.adaptive.initial`) and, where the design lays out its own points (a
Hyperband bracket, an Optuna round), the function that does.

A config names a design by a name below or by a plugin spec, loaded when first named (nothing is
imported at start-up; the built-ins are loaded from their modules the same way):

  sweep.design = 'successive_halving'                  a built-in (see `builtin()`)
  sweep.design = 'path/to/file.py:median_stopping'     an object in a Python file
  sweep.design = 'my_package.search:median_stopping'   an object in an importable module

The object is a declaration (`declare(...)`) or a plain builder `builder(group, settings,
workdir) -> stages.Policy` (a design without settings, starting from `sweep.adaptive.initial`).

Example (a user's file; `examples/median_stopping.py` is the whole of one):

  class MedianStopping:
    def __init__(self, group, settings, workdir): ...
    def first(self) -> stages.Stage: ...
    def next(self, stage, scores) -> stages.Stage | None: ...

  median_stopping = registry.declare(MedianStopping, settings=[
      registry.Setting('interval', 10, low=1, note='steps between two rungs')])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxopt_lab import plugins

# The fixed designs that may draw an adaptive design's starting points (`sweep.adaptive.initial`).
INITIAL_DESIGNS = ("grid", "random", "sobol", "lhs")
PLUGIN_FORMS = "'path/to/file.py:name' or 'package.module:name'"
# The built-in designs: declared in their modules exactly as a user's file declares one.
_BUILTINS = {
    "successive_halving": "jaxopt_lab.sweep.adaptive.halving:successive_halving",
    "hyperband": "jaxopt_lab.sweep.adaptive.halving:hyperband",
    "pbt": "jaxopt_lab.sweep.adaptive.pbt:pbt",
    "optuna": "jaxopt_lab.sweep.adaptive.optuna_search:optuna",
}


def _is_number(x: Any) -> bool:
  return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class Setting:
  """A setting of an adaptive design: the field `sweep.adaptive.<name>`.

  Its kind is the default's: a bool takes True or False, an int ints, a float numbers, a str one
  of `choices`, a list a list of numbers (each in the range).

  Attributes:
    name: the field of `sweep.adaptive`.
    default: used when the config has no field of this name.
    low, high: the valid range's ends (None: unbounded); `include_low` / `include_high` whether
      they are valid.
    choices: a str setting's valid values.
    what: how the error line names a valid value ('a probability'; default: 'an int', 'a
      number', 'a list of numbers').
    note: why the range is what it is, for the error line ('0: auto').
  """

  name: str
  default: Any
  low: float | None = None
  high: float | None = None
  include_low: bool = True
  include_high: bool = True
  choices: tuple[str, ...] | None = None
  what: str = ""
  note: str = ""

  def _in_range(self, x: float) -> bool:
    lo = -math.inf if self.low is None else self.low
    hi = math.inf if self.high is None else self.high
    return (x >= lo if self.include_low else x > lo) and (x <= hi if self.include_high else x < hi)

  def _range_text(self) -> str:
    if self.low is not None and self.high is not None:
      return (f" in {'[' if self.include_low else '('}{self.low:g}, {self.high:g}"
              f"{']' if self.include_high else ')'}")
    if self.low is not None:
      return f" {'>=' if self.include_low else '>'} {self.low:g}"
    if self.high is not None:
      return f" {'<=' if self.include_high else '<'} {self.high:g}"
    return ""

  def check(self, value: Any) -> Any:
    """`value` as a plain python value; raises one ValueError line naming the field."""
    value = value.item() if isinstance(value, np.generic) else value
    where = f"sweep.adaptive.{self.name}"
    note = f" ({self.note})" if self.note else ""
    if isinstance(self.default, bool):  # before int: a bool is an int to Python
      if not isinstance(value, bool):
        raise ValueError(f"{where}: must be a bool, got {value!r}; choices: True, False.")
      return value
    if isinstance(self.default, str):
      if value not in (self.choices or (value,)) or not isinstance(value, str):
        raise ValueError(f"{where}: unknown {self.name} {value!r}; choices: "
                         f"{', '.join(self.choices or ())}.")
      return value
    if isinstance(self.default, list | tuple):
      ok = (isinstance(value, Sequence) and not isinstance(value, str)
            and all(_is_number(x) and self._in_range(x) for x in value))
      if not ok:
        raise ValueError(f"{where}: must be {self.what or 'a list of numbers'}"
                         f"{self._range_text()}{note}, got {value!r}.")
      return [float(x) for x in value]
    is_int = isinstance(self.default, int) and not isinstance(self.default, bool)
    kind_ok = (isinstance(value, int | np.integer) and not isinstance(value, bool) if is_int
               else _is_number(value) and math.isfinite(value))
    if not kind_ok or not self._in_range(value):
      what = self.what or ("an int" if is_int else "a number")
      raise ValueError(f"{where}: must be {what}{self._range_text()}{note}, got {value!r}.")
    return int(value) if is_int else float(value)


@dataclasses.dataclass(frozen=True)
class Design:
  """A declared adaptive design (see `declare`).

  Attributes:
    name: the registered name, or the spec that loaded it.
    policy: `policy(group, settings, workdir) -> stages.Policy`: the decisions for one group
      (`group`: a `grouping.Group`; `settings`: the checked settings, by name; `workdir`: the
      experiment directory).
    settings: the settings it reads from `sweep.adaptive`.
    initial: the designs that may draw its starting points (`sweep.adaptive.initial`); empty
      when `points` lays them all out.
    points: None (the starting points of `sweep.adaptive.initial` are every point), or
      `points(space, steps, draw) -> [(values, tags)]`: every value point it may train, where
      `draw(space)` gives the rows of a fixed design (`space.initial`, `space.num_points`).
    tag: the design.csv column of its points' tags (`expdir.BRACKET_COLUMN`), if any.
    check: `check(config, settings)`: the checks that need more than one field (raises one
      ValueError line naming the field), run before anything is written.
    initial_note: why `initial` is what it is, for the error line.
  """

  name: str
  policy: Callable[..., Any]
  settings: tuple[Setting, ...] = ()
  initial: tuple[str, ...] = INITIAL_DESIGNS
  points: Callable[..., list[tuple[dict[str, float], dict[str, int]]]] | None = None
  tag: str | None = None
  check: Callable[[Any, Mapping[str, Any]], None] | None = None
  initial_note: str = ""

  def read_settings(self, adaptive_cfg: Any) -> dict[str, Any]:
    """The checked settings of `config.sweep.adaptive` (a declared default where it has none)."""
    out = {}
    for s in self.settings:
      has = adaptive_cfg is not None and s.name in adaptive_cfg.keys()
      out[s.name] = s.check(adaptive_cfg[s.name] if has else s.default)
    return out


def declare(policy: Callable[..., Any], *, name: str | None = None,
            settings: Sequence[Setting] = (), initial: Sequence[str] = INITIAL_DESIGNS,
            points: Callable[..., Any] | None = None, tag: str | None = None,
            check: Callable[[Any, Mapping[str, Any]], None] | None = None,
            initial_note: str = "") -> Design:
  """Declares an adaptive design (see `Design` for the arguments); name: the policy's `__name__`.

  Raises:
    ValueError: for a setting declared twice or an initial design that cannot start one.
  """
  label = name or getattr(policy, "__name__", repr(policy))
  names = [s.name for s in settings]
  if len(set(names)) != len(names) or "initial" in names:
    raise ValueError(f"design {label!r}: settings {names} repeat a name or declare 'initial' "
                     "(the declaration's `initial` says which designs may start it)")
  bad = [d for d in initial if d not in INITIAL_DESIGNS]
  if bad:
    raise ValueError(f"design {label!r}: initial designs {bad} cannot start an adaptive design; "
                     f"choices: {', '.join(INITIAL_DESIGNS)}")
  return Design(label, policy, tuple(settings), tuple(initial), points, tag, check,
                initial_note)


_REGISTRY: dict[str, Design] = {}
_LOADED: dict[str, Design] = {}  # name or plugin spec -> declaration, loaded on first use


def register(design: Design) -> Design:
  """Makes `design` available by its name (`config.sweep.design = design.name`).

  Raises:
    ValueError: if another design has the name, or the name has ':'.
  """
  if ":" in design.name or design.name in _BUILTINS:
    raise ValueError(f"design name {design.name!r}: ':' is kept for plugin specs and the "
                     f"built-in names ({', '.join(_BUILTINS)}) for the built-ins")
  old = _REGISTRY.get(design.name)
  if old is not None and old.policy is not design.policy:
    raise ValueError(f"design {design.name!r} is already registered")
  _REGISTRY[design.name] = design
  return design


def names() -> tuple[str, ...]:
  """The adaptive designs a config may name without a spec: the built-ins, then registered."""
  return tuple(_BUILTINS) + tuple(_REGISTRY)


def is_adaptive(name: Any) -> bool:
  """Whether `sweep.design = name` names an adaptive design (a built-in, registered or a spec)."""
  return isinstance(name, str) and (name in _BUILTINS or name in _REGISTRY
                                    or plugins.is_spec(name))


def resolve(spec: str, where: str = "sweep.design") -> Design:
  """The declaration `sweep.design` names: a built-in or registered name, or a plugin spec.

  Raises:
    ValueError: one line: an unknown name, a missing file or module, an import failure, or an
      object that is no design.
  """
  if spec in _REGISTRY:
    return _REGISTRY[spec]
  if spec in _LOADED:
    return _LOADED[spec]
  if not is_adaptive(spec):
    raise ValueError(f"{where}: {spec!r} is not an adaptive design; adaptive designs: "
                     f"{', '.join(names())}; or a plugin: {PLUGIN_FORMS}")
  obj = plugins.load(_BUILTINS.get(spec, spec), where)
  if isinstance(obj, Design):
    design = dataclasses.replace(obj, name=spec)
  elif callable(obj):
    design = declare(obj, name=spec)
  else:
    raise ValueError(f"{where}: {spec!r} is neither a registry.declare(...) nor a policy builder "
                     f"(it is a {type(obj).__name__})")
  _LOADED[spec] = design
  return design


def check(config: Any) -> dict[str, Any]:
  """Checks the settings of `config.sweep.design` (declared ranges, then the design's own
  checks); returns them. Raises one ValueError line naming the field."""
  design = resolve(config.sweep.design)
  settings = design.read_settings(config.sweep.adaptive)
  if design.check is not None:
    design.check(config, settings)
  return settings
