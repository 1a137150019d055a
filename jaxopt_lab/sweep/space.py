"""Design spaces: the factors a sweep varies, read and checked from `config.sweep`.

Two kinds of factor, kept apart everywhere (see DESIGN.md):

* **value factors** (`factory.value_factors()`: learning rate, betas, eps, ...) are leaves of
  the `hparams` pytree. Every value point of a group runs in one compiled program (`jax.vmap`).
* **structural factors** (`factors.structural_factors()`: optimizer name, model width, batch
  size, ...) change the compiled program; each combination of their values is a *group*,
  compiled once.

A value factor declared with `vmap=False` is a grouping factor too: it sets `optimizer.<name>` in
the config of its group, one program per value. Seeds are not factors; they come from
`sweep.replicates` (replicate r uses `sweep.seed + r`).

Declaration order of `sweep.factors` fixes the order of design columns, of the parts of a group
name and of the letters of a fractional factorial. Note that `ml_collections.ConfigDict` iterates
its keys in sorted order unless it is built with `sort_keys=False`; that iteration order is the
declaration order used here. The factors' algebra (levels, draws) is `factors`; an adaptive
design's settings are declared in `adaptive.registry` and checked here with the rest.
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxopt_lab.optim import factory
from jaxopt_lab.sweep.adaptive import registry as designs
from jaxopt_lab.sweep.factors import (
    SCALES,
    Factor,
    format_value,
    load_optimizers,
    structural_factors,
)

# Adaptive designs (`adaptive.registry`: built-ins, registered, plugins) train a group in stages.
FIXED_DESIGNS = ("grid", "random", "sobol", "lhs", "factorial", "fractional_factorial",
                 "explicit")
SPEC_FIELDS = ("values", "scale", "low", "high", "num", "vmap")
# Designs whose value points come from the factors' grid levels; grouping factors always do.
_LEVEL_DESIGNS = ("grid",)
# Designs that draw `num_points` value points.
_DRAWN_DESIGNS = ("random", "sobol", "lhs")


@dataclasses.dataclass(frozen=True)
class Space:
  """A checked `config.sweep`: the design, its factors and the fields that design reads.

  Attributes:
    design: one of `FIXED_DESIGNS`, or an adaptive design's name or spec.
    initial: the design of the value points: `design` for a fixed design, `adaptive.initial` for
      an adaptive one, None for one that lays out its own points (Optuna).
    factors: declared factors, in declaration order.
    replicates: how many seeds each (group, value point) runs with.
    seed: replicate r uses seed + r; also seeds random / sobol / lhs draws.
    num_points: value points drawn by random / sobol / lhs (None for other designs).
    generators: words of a fractional factorial's generator string (empty for other designs).
    points: value points of an explicit design, as {factor: float} (empty for other designs).
    value_names: names of the vmapped value factors, in column order.
    adaptive: an adaptive design's checked settings (`sweep.adaptive`), by name; else empty.
    declared: an adaptive design's declaration (`adaptive.registry.Design`); None for a fixed.
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
  adaptive: dict[str, Any] = dataclasses.field(default_factory=dict)
  declared: designs.Design | None = None

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
    tag = self.declared.tag if self.declared is not None else None
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
  declared, initial = None, design
  if design not in FIXED_DESIGNS:
    if not designs.is_adaptive(design):
      raise ValueError(f"sweep.design: unknown design {design!r}; choices: "
                       f"{', '.join(FIXED_DESIGNS + designs.names())}; or a plugin: "
                       f"{designs.PLUGIN_FORMS}.")
    declared = designs.resolve(design)
    initial = _initial_design(sweep_cfg, declared)
  replicates = _int_field(sweep_cfg, "replicates", 1)
  seed = _int_field(sweep_cfg, "seed", 0)
  # A design that lays out its own points (Hyperband's brackets) draws no `num_points`.
  drawn = initial in _DRAWN_DESIGNS and (declared is None or declared.points is None)
  num_points = _int_field(sweep_cfg, "num_points", 1) if drawn else None
  specs = _field(sweep_cfg, "factors", "sweep")
  if not hasattr(specs, "keys"):
    raise ValueError(f"sweep.factors: must be a dict {{name: spec}}, got {specs!r}.")
  load_optimizers(specs)
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
  if declared is not None and not vmapped:
    raise ValueError(f"sweep.factors: the {design!r} design needs a vmapped value factor to "
                     "adapt (e.g. learning_rate with scale, low and high).")
  settings = ({} if declared is None
              else declared.read_settings(_field(sweep_cfg, "adaptive", "sweep")))
  return Space(design, initial, factors, replicates, seed, num_points, generators, points,
               value_names, settings, declared)


def _initial_design(sweep_cfg: Any, declared: designs.Design) -> str | None:
  """The design of an adaptive design's starting points (`sweep.adaptive.initial`)."""
  if not declared.initial:
    return None
  initial = _field(_field(sweep_cfg, "adaptive", "sweep"), "initial", "sweep.adaptive")
  if initial not in declared.initial:
    why = f" ({declared.initial_note})" if declared.initial_note else ""
    raise ValueError(f"sweep.adaptive.initial: {initial!r} cannot start the {declared.name!r} "
                     f"design{why}; choices: {', '.join(declared.initial)}.")
  return initial
