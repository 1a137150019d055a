"""Design spaces: the factors a sweep varies, read and checked from `config.sweep`.

Two kinds of factor, kept apart everywhere (see DESIGN.md):

* **value factors** (`VALUE_FACTORS`: learning rate, betas, eps, ...) are leaves of the `hparams`
  pytree. Every value point of a group runs in one compiled program (`jax.vmap`).
* **structural factors** (`STRUCTURAL_FACTORS`: optimizer name, model width, batch size, ...)
  change the compiled program; each combination of their values is a *group*, compiled once.

A value factor declared with `vmap=False` is a grouping factor too: it sets `optimizer.<name>` in
the config of its group, one program per value. Seeds are not factors; they come from
`sweep.replicates` (replicate r uses `sweep.seed + r`).

Declaration order of `sweep.factors` fixes the order of design columns, of the parts of a group
name and of the letters of a fractional factorial. Note that `ml_collections.ConfigDict` iterates
its keys in sorted order unless it is built with `sort_keys=False`; that iteration order is the
declaration order used here.
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxopt_lab import expdir
from jaxopt_lab.optim import factory, registry

# Structural factors of the model and data -> the config path each sets for its group. Those of
# the optimizer (its flags, as declared in the optimizer registry) set `optimizer.<name>`.
_TASK_FACTORS: dict[str, str] = {
    "width": "model.width",
    "depth": "model.depth",
    "heads": "model.heads",
    "context": "model.context",
    "dtype": "model.dtype",
    "batch_size": "data.batch_size",
    "hidden": "model.hidden",
    # Scale studies: the parametrization and stability options, and the horizon (whose schedule
    # follows it: the schedules are fractions of train.steps).
    "parametrization": "model.parametrization",
    "base_width": "model.base_width",
    "qk_norm": "model.qk_norm",
    "horizon": "train.steps",  # (not "steps": a column of summary.csv already)
    "z_loss": "train.z_loss",
}


def structural_factors() -> dict[str, str]:
  """Structural factor -> config path: the optimizer, its flags (of every known optimizer, see
  `factory.flag_names`) and the model / data factors."""
  out = {"optimizer": "optimizer.name"}
  out.update({name: f"optimizer.{name}" for name in factory.flag_names()})
  out.update(_TASK_FACTORS)
  return out


def __getattr__(name: str) -> Any:
  # Live views: a plugin optimizer loaded later adds its values and flags.
  if name == "VALUE_FACTORS":
    return factory.value_factors()
  if name == "STRUCTURAL_FACTORS":
    return structural_factors()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

FIXED_DESIGNS = ("grid", "random", "sobol", "lhs", "factorial", "fractional_factorial",
                 "explicit")
# Adaptive designs train a group in stages (sweep/stages.py); their settings: `sweep.adaptive`.
ADAPTIVE_DESIGNS = ("successive_halving", "hyperband", "pbt", "optuna")
DESIGNS = FIXED_DESIGNS + ADAPTIVE_DESIGNS
# The designs of an adaptive design's starting points (`sweep.adaptive.initial`).
INITIAL_DESIGNS = ("grid", "random", "sobol", "lhs")
SCALES = ("log", "linear", "int")
SPEC_FIELDS = ("values", "scale", "low", "high", "num", "vmap")
# Designs whose value points come from the factors' grid levels; grouping factors always do.
_LEVEL_DESIGNS = ("grid",)
# Designs that draw `num_points` value points.
_DRAWN_DESIGNS = ("random", "sobol", "lhs")


def config_path(name: str) -> str:
  """The config path a grouping factor sets: `STRUCTURAL_FACTORS[name]` or `optimizer.<name>`."""
  return structural_factors().get(name, f"optimizer.{name}")


def format_value(value: Any) -> str:
  """A factor value as text, for group names and CSV cells (floats round-trip exactly).

  Sequences (e.g. `hidden=[64, 32]`) are written `64x32`, so a group name holds no extra commas.
  """
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, str):
    # A plugin optimizer 'path/to/lion.py:lion' is named 'lion.py:lion': a group name is also a
    # checkpoint directory, so it holds no '/'.
    return value.rsplit("/", 1)[-1]
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, list | tuple):
    return "x".join(format_value(v) for v in value)
  return str(value)


@dataclasses.dataclass(frozen=True)
class Factor:
  """One declared factor of a sweep.

  Attributes:
    name: factor name, a key of `STRUCTURAL_FACTORS` or an entry of `VALUE_FACTORS`.
    vmap: True for a vmapped value factor; False for a grouping factor (structural, or a value
      factor declared with `vmap=False`).
    scale: 'log', 'linear' or 'int' for a range; None when given by `values` (or, in an explicit
      design, a value factor declared only by name).
    low: lower end of the range (None for `values`).
    high: upper end of the range, inclusive (None for `values`).
    num: number of grid levels over the range (None when the design needs no levels).
    values: the explicit values (floats for a value factor, as declared for a structural one).
  """

  name: str
  vmap: bool
  scale: str | None = None
  low: float | None = None
  high: float | None = None
  num: int | None = None
  values: tuple[Any, ...] | None = None

  @property
  def structural(self) -> bool:
    return self.name in structural_factors()

  @property
  def path(self) -> str:
    return config_path(self.name)

  def _natural(self, x: Any) -> Any:
    """A drawn number as a python value: int for an 'int' scale, float otherwise."""
    return int(x) if self.scale == "int" else float(x)

  def levels(self) -> list[Any]:
    """Grid levels: `values`, or `num` points over [low, high] (geometric for 'log' scale)."""
    if self.values is not None:
      return list(self.values)
    if self.num is None:
      raise ValueError(f"sweep.factors.{self.name}.num: grid levels need 'num' (an int >= 1).")
    if self.scale == "log":
      grid = np.geomspace(self.low, self.high, self.num)
    elif self.scale == "linear":
      grid = np.linspace(self.low, self.high, self.num)
    else:
      grid = np.unique(np.round(np.linspace(self.low, self.high, self.num)))
    return [self._natural(x) for x in grid]

  def two_levels(self) -> tuple[Any, Any]:
    """The (-1, +1) levels of a two-level design: (low, high), or the first and last value."""
    if self.values is not None:
      return self.values[0], self.values[-1]
    return self._natural(self.low), self._natural(self.high)

  def from_unit(self, u: np.ndarray) -> list[Any]:
    """Maps coordinates in [0, 1) to factor values (log scale: uniform in log space)."""
    u = np.asarray(u, dtype=np.float64)
    if self.values is not None:
      n = len(self.values)
      return [self.values[i] for i in np.minimum(np.floor(u * n).astype(int), n - 1)]
    if self.scale == "log":
      lo, hi = math.log(self.low), math.log(self.high)
      return [float(x) for x in np.exp(lo + u * (hi - lo))]
    if self.scale == "linear":
      return [float(x) for x in self.low + u * (self.high - self.low)]
    span = int(self.high) - int(self.low) + 1
    return [int(self.low) + int(i) for i in np.minimum(np.floor(u * span), span - 1)]

  def draw(self, rng: np.random.Generator, n: int) -> list[Any]:
    """`n` i.i.d. draws: log-uniform, uniform, uniform integers, or a uniform choice of value."""
    if self.values is not None:
      return [self.values[i] for i in rng.integers(0, len(self.values), size=n)]
    if self.scale == "log":
      return [float(x) for x in np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))]
    if self.scale == "linear":
      return [float(x) for x in rng.uniform(self.low, self.high, n)]
    return [int(x) for x in rng.integers(int(self.low), int(self.high) + 1, size=n)]


@dataclasses.dataclass(frozen=True)
class Space:
  """A checked `config.sweep`: the design, its factors and the fields that design reads.

  Attributes:
    design: one of `DESIGNS`.
    initial: the design of the value points: `design` for a fixed design, `adaptive.initial` for
      successive halving, hyperband and PBT, None for Optuna (its sampler proposes them).
    factors: declared factors, in declaration order.
    replicates: how many seeds each (group, value point) runs with.
    seed: replicate r uses seed + r; also seeds random / sobol / lhs draws.
    num_points: value points drawn by random / sobol / lhs (None for other designs).
    generators: words of a fractional factorial's generator string (empty for other designs).
    points: value points of an explicit design, as {factor: float} (empty for other designs).
    value_names: names of the vmapped value factors, in column order.
    adaptive: the `sweep.adaptive` integers the design's points depend on: eta, min_steps and
      brackets (hyperband), rounds and batch (optuna); empty for other designs.
  """

  design: str
  initial: str | None
  factors: tuple[Factor, ...]
  replicates: int
  seed: int
  num_points: int | None
  generators: tuple[str, ...]
  points: tuple[dict[str, float], ...]
  value_names: tuple[str, ...]
  adaptive: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def grouping(self) -> tuple[Factor, ...]:
    """Factors that form groups (structural, and value factors with `vmap=False`)."""
    return tuple(f for f in self.factors if not f.vmap)

  @property
  def vmapped(self) -> tuple[Factor, ...]:
    """Declared vmapped value factors."""
    return tuple(f for f in self.factors if f.vmap)

  @property
  def factor_columns(self) -> tuple[str, ...]:
    """Factor columns of design.csv: grouping factors first, then vmapped value factors."""
    return tuple(f.name for f in self.grouping) + self.value_names

  @property
  def tag_columns(self) -> tuple[str, ...]:
    """design.csv columns of a point's part of the design: bracket (hyperband), round (optuna)."""
    tag = expdir.DESIGN_TAG_COLUMNS.get(self.design)
    return (tag,) if tag else ()


def _is_int(x: Any) -> bool:
  return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
  return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _plain(x: Any) -> Any:
  """Numpy scalars as python scalars (their repr would leak into names and files)."""
  return x.item() if isinstance(x, np.generic) else x


def _field(cfg: Any, name: str, where: str) -> Any:
  try:
    return cfg[name]
  except (KeyError, AttributeError) as e:
    raise ValueError(f"{where}.{name} is missing.") from e


def _int_field(cfg: Any, name: str, minimum: int) -> int:
  value = _field(cfg, name, "sweep")
  if not _is_int(value) or value < minimum:
    raise ValueError(f"sweep.{name}: must be an int >= {minimum}, got {value!r}.")
  return int(value)


def _number(spec: Any, name: str, field: str) -> float:
  value = _plain(_field(spec, field, f"sweep.factors.{name}"))
  if not _is_number(value) or not math.isfinite(value):
    raise ValueError(f"sweep.factors.{name}.{field}: must be a finite number, got {value!r}.")
  return value


def _check_values(name: str, values: Any, is_value_factor: bool) -> tuple[Any, ...]:
  where = f"sweep.factors.{name}.values"
  if isinstance(values, str) or not isinstance(values, Sequence) or not values:
    raise ValueError(f"{where}: must be a non-empty list of settings, got {values!r}.")
  values = tuple(_plain(v) for v in values)
  if is_value_factor:
    bad = [v for v in values if not _is_number(v) or not math.isfinite(v)]
    if bad:
      raise ValueError(
          f"{where}: {name!r} is a value factor; its values must be finite numbers, got {bad!r}."
      )
    values = tuple(float(v) for v in values)
  texts = [format_value(v) for v in values]
  if len(set(texts)) != len(texts):
    raise ValueError(f"{where}: values must be distinct, got {list(values)!r}.")
  return values


def _parse_factor(name: str, spec: Any, design: str) -> Factor:
  """Checks one entry of `sweep.factors` and returns it as a Factor."""
  value_names, structural = factory.value_factors(), structural_factors()
  valid = (
      f"value factors (vmapped): {', '.join(value_names)}; "
      f"structural factors: {', '.join(structural)}"
  )
  if name not in value_names and name not in structural:
    hint = (
        " Seeds are not factors: set sweep.replicates (replicate r uses sweep.seed + r)."
        if name == "seed"
        else ""
    )
    raise ValueError(f"sweep.factors.{name}: unknown factor. Valid factors: {valid}.{hint}")
  if not hasattr(spec, "keys"):
    raise ValueError(
        f"sweep.factors.{name}: must be a dict with 'values', or 'scale' with 'low', 'high' and "
        f"'num'; got {spec!r}."
    )
  fields = list(spec.keys())
  for field in fields:
    if field not in SPEC_FIELDS:
      raise ValueError(
          f"sweep.factors.{name}.{field}: unknown field; valid fields: {', '.join(SPEC_FIELDS)}."
      )
  structural = name in structural
  vmap = not structural
  if "vmap" in fields:
    vmap = spec["vmap"]
    if not isinstance(vmap, bool):
      raise ValueError(f"sweep.factors.{name}.vmap: must be True or False, got {vmap!r}.")
    if structural and vmap:
      raise ValueError(
          f"sweep.factors.{name}.vmap: {name!r} is a structural factor: it changes the compiled "
          f"program and cannot be vmapped. Vmappable factors: {', '.join(value_names)}."
      )
  if "values" in fields and "scale" in fields:
    raise ValueError(
        f"sweep.factors.{name}: give either 'values' or 'scale' (one of {', '.join(SCALES)}) "
        "with 'low', 'high' and 'num', not both."
    )
  if "values" in fields:
    for field in ("low", "high", "num"):
      if field in fields:
        raise ValueError(f"sweep.factors.{name}.{field}: not used with 'values'; remove it.")
    return Factor(name, vmap, values=_check_values(name, spec["values"], not structural))
  if structural:
    raise ValueError(
        f"sweep.factors.{name}.values: structural factor {name!r} must be given by 'values' "
        "(a list of settings)."
    )
  ranged = "low" in fields and "high" in fields
  if "scale" not in fields and not ranged:
    if design == "explicit" and vmap and not any(f in fields for f in ("low", "high", "num")):
      return Factor(name, vmap)  # Named only: an explicit design's points give its values.
    raise ValueError(
        f"sweep.factors.{name}: give 'values' (a list), or 'low', 'high' and 'num' (with "
        f"'scale', one of {', '.join(SCALES)}, or the scale the optimizer declares)."
    )
  # Without a 'scale', the one the optimizers' declarations give (learning rate: log).
  scale = spec["scale"] if "scale" in fields else factory.declared_scale(name)
  if scale not in SCALES:
    raise ValueError(
        f"sweep.factors.{name}.scale: unknown scale {scale!r}; choices: {', '.join(SCALES)}."
    )
  low, high = _number(spec, name, "low"), _number(spec, name, "high")
  if not low < high:
    raise ValueError(
        f"sweep.factors.{name}.low: must be less than sweep.factors.{name}.high "
        f"(got low={low!r}, high={high!r})."
    )
  if scale == "log" and low <= 0:
    raise ValueError(f"sweep.factors.{name}.low: a 'log' scale needs low > 0, got {low!r}.")
  if scale == "int":
    for field, x in (("low", low), ("high", high)):
      if float(x) != int(x):
        raise ValueError(
            f"sweep.factors.{name}.{field}: an 'int' scale needs an integer, got {x!r}."
        )
  num = None
  if "num" in fields or design in _LEVEL_DESIGNS or not vmap:
    num = _plain(_field(spec, "num", f"sweep.factors.{name}"))
    if not _is_int(num) or num < 1:
      raise ValueError(f"sweep.factors.{name}.num: must be an int >= 1, got {num!r}.")
    num = int(num)
  return Factor(name, vmap, scale=scale, low=float(low), high=float(high), num=num)


_WORD_CHARS = set(string.ascii_lowercase)


def _parse_generators(text: Any, names: Sequence[str]) -> tuple[str, ...]:
  """Checks a fractional factorial's generator string against the vmapped value factors."""
  example = "e.g. 'a b c abc' for a 2^(4-1) design of four factors"
  if not isinstance(text, str):
    raise ValueError(f"sweep.generators: must be a string ({example}), got {text!r}.")
  words = tuple(text.split())
  if len(words) != len(names):
    raise ValueError(
        f"sweep.generators: {text!r} has {len(words)} words but there are {len(names)} vmapped "
        f"value factors ({', '.join(names) or 'none'}); give one word per factor, {example}."
    )
  num_base = 0
  while num_base < len(words) and len(words[num_base]) == 1:
    num_base += 1
  base = string.ascii_lowercase[:num_base]
  if num_base == 0 or tuple(words[:num_base]) != tuple(base):
    raise ValueError(
        f"sweep.generators: {text!r} must start with the base factors 'a', 'b', 'c', ... in order "
        f"(letters are the first value factors in order), {example}."
    )
  seen = set()
  for word in words[num_base:]:
    letters = word[1:] if word[0] in "+-" else word
    if (
        len(letters) < 2
        or not set(letters) <= _WORD_CHARS
        or len(set(letters)) != len(letters)
        or not set(letters) <= set(base)
    ):
      raise ValueError(
          f"sweep.generators: bad word {word!r} in {text!r}; after the base factors "
          f"{' '.join(base)}, each word is a product of two or more distinct base letters, "
          f"optionally signed (e.g. 'ab', '-abc'), {example}."
      )
    key = frozenset(letters)
    if key in seen:
      raise ValueError(
          f"sweep.generators: {word!r} repeats a generated column in {text!r}; two factors "
          "would be completely confounded."
      )
    seen.add(key)
  return words


def _parse_points(
    points: Any, vmapped: Sequence[Factor], grouping: Sequence[Factor]
) -> tuple[dict[str, float], ...]:
  """Checks an explicit design's points; returns them as {factor: float} dicts."""
  if isinstance(points, str) or not isinstance(points, Sequence) or not points:
    raise ValueError(
        "sweep.points: the 'explicit' design needs a non-empty list of dicts {factor: value}, "
        f"got {points!r}."
    )
  for i, point in enumerate(points):
    if not hasattr(point, "keys"):
      raise ValueError(f"sweep.points[{i}]: must be a dict {{factor: value}}, got {point!r}.")
  if vmapped:
    names = [f.name for f in vmapped]
    expected = f"each point must name exactly the declared value factors: {', '.join(names)}"
  else:
    names = list(points[0].keys())
    value_names = factory.value_factors()
    unknown = [k for k in names if k not in value_names]
    if unknown or not names:
      raise ValueError(
          f"sweep.points[0]: unknown value factor(s) {unknown}; with no value factor declared in "
          f"sweep.factors, points name value factors from: {', '.join(value_names)}."
      )
    fixed = [f.name for f in grouping if f.name in names]
    if fixed:
      raise ValueError(
          f"sweep.points[0]: {fixed} declared in sweep.factors with vmap=False (one program per "
          "value); such a factor cannot also be set by the points."
      )
    expected = f"every point must name the same value factors as sweep.points[0]: {names}"
  out = []
  for i, point in enumerate(points):
    keys = list(point.keys())
    if set(keys) != set(names) or len(keys) != len(names):
      raise ValueError(f"sweep.points[{i}]: names {sorted(keys)}; {expected}.")
    row = {}
    for k in names:
      v = _plain(point[k])
      if not _is_number(v) or not math.isfinite(v):
        raise ValueError(f"sweep.points[{i}].{k}: must be a finite number, got {v!r}.")
      row[k] = float(v)
    out.append(row)
  return tuple(out)


def _load_optimizers(specs: Any) -> None:
  """Loads the optimizers a sweep names (plugins too), so their values and flags are factors."""
  spec = specs["optimizer"] if "optimizer" in specs.keys() else None
  if hasattr(spec, "keys") and "values" in spec.keys():
    values = spec["values"]
    if isinstance(values, Sequence) and not isinstance(values, str):
      for name in values:
        registry.resolve(name, "sweep.factors.optimizer.values")


def parse_space(sweep_cfg: Any) -> Space:
  """Reads and checks `config.sweep` (a ConfigDict or dict).

  Args:
    sweep_cfg: the sweep config: design, num_points, replicates, seed, generators, points,
      factors (only the fields the chosen design uses are read).

  Returns:
    The checked Space.

  Raises:
    ValueError: naming the field and the valid choices, for any mistake in the config.
  """
  design = _field(sweep_cfg, "design", "sweep")
  if design not in DESIGNS:
    raise ValueError(f"sweep.design: unknown design {design!r}; choices: {', '.join(DESIGNS)}.")
  initial = design
  if design in ADAPTIVE_DESIGNS:
    initial = _initial_design(sweep_cfg, design)
  replicates = _int_field(sweep_cfg, "replicates", 1)
  seed = _int_field(sweep_cfg, "seed", 0)
  drawn = initial in _DRAWN_DESIGNS and design != "hyperband"  # hyperband sizes its brackets
  num_points = _int_field(sweep_cfg, "num_points", 1) if drawn else None
  specs = _field(sweep_cfg, "factors", "sweep")
  if not hasattr(specs, "keys"):
    raise ValueError(f"sweep.factors: must be a dict {{name: spec}}, got {specs!r}.")
  _load_optimizers(specs)
  factors = tuple(_parse_factor(name, specs[name], initial or design) for name in specs.keys())
  vmapped = [f for f in factors if f.vmap]
  generators, points = (), ()
  value_names = tuple(f.name for f in vmapped)
  if design == "fractional_factorial":
    generators = _parse_generators(_field(sweep_cfg, "generators", "sweep"), value_names)
  if design == "explicit":
    grouping = [f for f in factors if not f.vmap]
    points = _parse_points(_field(sweep_cfg, "points", "sweep"), vmapped, grouping)
    value_names = tuple(points[0])
  if design in ADAPTIVE_DESIGNS and not vmapped:
    raise ValueError(f"sweep.factors: the {design!r} design needs a vmapped value factor to "
                     "adapt (e.g. learning_rate with scale, low and high).")
  return Space(design, initial, factors, replicates, seed, num_points, generators, points,
               value_names, _adaptive_ints(sweep_cfg, design))


def check_ranges(sweep_space: Space, optimizer: str) -> None:
  """Raises ValueError when a value an adaptive design may propose is invalid: both ends of each
  vmapped factor's range (or each listed value) must lie in the valid range that every optimizer
  of the sweep (the `optimizer` factor's values, else `optimizer`) declares (a range is an
  interval, so its ends decide)."""
  names = next((list(f.values) for f in sweep_space.grouping if f.name == "optimizer"),
               [optimizer])
  for name in names:
    declared = {v.name: v for v in (*factory.resolve(name).values, *factory.COMMON_VALUES)}
    for factor in sweep_space.vmapped:
      if factor.name not in declared:
        continue  # the driver names the optimizer that lacks it
      ends = factor.values if factor.values is not None else (factor.low, factor.high)
      fields = ("values",) * len(ends) if factor.values is not None else ("low", "high")
      for field, x in zip(fields, ends, strict=True):
        declared[factor.name].check(
            x, f"sweep.factors.{factor.name}.{field}: {factor.name} of optimizer {name!r}")


# The `sweep.adaptive` integers each design's points depend on, with their least valid value.
_ADAPTIVE_INTS = {"hyperband": {"eta": 2, "min_steps": 0, "brackets": 0},
                  "optuna": {"rounds": 1, "batch": 1}}


def _adaptive_ints(sweep_cfg: Any, design: str) -> dict[str, int]:
  fields = _ADAPTIVE_INTS.get(design, {})
  adaptive = _field(sweep_cfg, "adaptive", "sweep") if fields else None
  out = {}
  for name, minimum in fields.items():
    value = _plain(_field(adaptive, name, "sweep.adaptive"))
    if not _is_int(value) or value < minimum:
      raise ValueError(f"sweep.adaptive.{name}: must be an int >= {minimum}, got {value!r}.")
    out[name] = int(value)
  return out


def _initial_design(sweep_cfg: Any, design: str) -> str | None:
  """The design of an adaptive design's starting points (`sweep.adaptive.initial`)."""
  if design == "optuna":
    return None
  adaptive = _field(sweep_cfg, "adaptive", "sweep")
  initial = _field(adaptive, "initial", "sweep.adaptive")
  choices = INITIAL_DESIGNS[1:] if design == "hyperband" else INITIAL_DESIGNS
  if initial not in choices:
    why = " (hyperband draws each bracket's points)" if design == "hyperband" else ""
    raise ValueError(f"sweep.adaptive.initial: {initial!r} cannot start the {design!r} design"
                     f"{why}; choices: {', '.join(choices)}.")
  return initial
