"""Designs: the table of points a sweep runs, and its file `design.csv`.

Grouping factors (structural, and value factors with `vmap=False`) are always crossed: every
combination of their values is a group, compiled once. Every group gets the same value points
(so the value design is paired across groups), chosen by `sweep.design`:

* `grid`: full factorial over each value factor's levels.
* `random`: `num_points` i.i.d. draws from `np.random.default_rng(sweep.seed)`.
* `sobol`: scrambled Sobol' points (`scipy.stats.qmc.Sobol`), mapped to the ranges.
* `lhs`: Latin hypercube (`scipy.stats.qmc.LatinHypercube`), mapped to the ranges.
* `factorial`: two-level full factorial 2^k at each factor's low / high.
* `fractional_factorial`: 2^(k-p) two-level design from `sweep.generators` ('a b c abc').
* `explicit`: `sweep.points` as given.

Adaptive designs (sweep/adaptive/) list every point they may train: the points of
`sweep.adaptive.initial` (grid, random, sobol, lhs), or those the design's declaration lays out
(`Design.points`: Hyperband's brackets, each drawn by the initial design with seed `sweep.seed +
bracket`; Optuna's `rounds x batch` points, NaN until its sampler proposes them), tagged with
their part of the design (design.csv's `bracket` / `round` column).

Each (group, value point) then runs `sweep.replicates` times, replicate r with seed
`sweep.seed + r`: points sharing a replicate share data order and initial parameters (common
random numbers), so comparisons between them are paired.

Example:
  points = make_design(config.sweep)
  for name, members in groups(points).items():
    overrides = config_overrides(members[0])  # {'optimizer.name': 'adam', ...}
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc

from jaxopt_lab import files
from jaxopt_lab.sweep.factors import Factor, config_path, format_value
from jaxopt_lab.sweep.space import Space, parse_space

_ID_COLUMNS = ("point", "group", "replicate", "seed")


@dataclasses.dataclass(frozen=True)
class Point:
  """One design point: a group, vmapped values and a seed.

  Attributes:
    point: index 0..N-1; points are ordered group-major, then value point, then replicate.
    group: 'optimizer=adam,nesterov=True' (grouping factors in declaration order) or 'all'.
    replicate: replicate index 0..R-1.
    seed: sweep.seed + replicate.
    structural: grouping factor -> value for this group (structural factors, and value factors
      declared with vmap=False).
    values: vmapped value factor -> value (python float; NaN until an Optuna round asks it).
    tags: the part of an adaptive design the point belongs to (its declared `tag` column:
      {'bracket': b} for hyperband, {'round': r} for optuna), else empty.
  """

  point: int
  group: str
  replicate: int
  seed: int
  structural: dict[str, Any]
  values: dict[str, float]
  tags: dict[str, int] = dataclasses.field(default_factory=dict)


def two_level_full(k: int) -> np.ndarray:
  """Two-level full factorial in standard (Yates) order: int array [2^k, k] of -1 / +1.

  Column j alternates every 2^j runs, so the first factor changes fastest.
  """
  runs = np.arange(2**k)[:, None]
  return np.where((runs >> np.arange(k)[None, :]) & 1, 1, -1)


def two_level_fractional(words: Sequence[str]) -> np.ndarray:
  """Two-level 2^(k-p) fractional factorial from checked generator words: [2^(k-p), k] of ±1.

  The leading single-letter words 'a', 'b', ... are the base factors, crossed in a full
  factorial; each later word ('abc', '-ab') is the (signed) product of its base columns.
  """
  num_base = sum(len(w) == 1 for w in words)
  base = two_level_full(num_base)
  columns = []
  for word in words:
    sign = -1 if word.startswith("-") else 1
    letters = word.lstrip("+-")
    column = np.ones(len(base), dtype=int)
    for letter in letters:
      column = column * base[:, ord(letter) - ord("a")]
    columns.append(sign * column)
  return np.stack(columns, axis=1) if columns else np.zeros((1, 0), dtype=int)


def _from_signs(factors: Sequence[Factor], signs: np.ndarray) -> list[list[Any]]:
  pairs = [f.two_levels() for f in factors]
  return [[pairs[j][int(s > 0)] for j, s in enumerate(row)] for row in signs]


def _value_rows(space: Space) -> list[list[Any]]:
  """Value points of one group as rows over `space.vmapped`, in the design's order."""
  factors = space.vmapped
  d = len(factors)
  design = space.initial
  if design == "grid":
    return [list(row) for row in itertools.product(*(f.levels() for f in factors))]
  if d == 0:
    return [[]]  # No value factor: one (empty) value point; replicates give the seeds.
  n = space.num_points
  if design == "random":
    rng = np.random.default_rng(space.seed)
    columns = [f.draw(rng, n) for f in factors]
    return [list(row) for row in zip(*columns, strict=True)]
  if design in ("sobol", "lhs"):
    if design == "sobol":
      sampler = qmc.Sobol(d, scramble=True, rng=space.seed)
    else:
      sampler = qmc.LatinHypercube(d, rng=space.seed)
    u = sampler.random(n)
    columns = [f.from_unit(u[:, j]) for j, f in enumerate(factors)]
    return [list(row) for row in zip(*columns, strict=True)]
  if design == "factorial":
    return _from_signs(factors, two_level_full(d))
  if design == "fractional_factorial":
    return _from_signs(factors, two_level_fractional(space.generators))
  raise ValueError(f"sweep.design: {space.design!r} has no value design.")  # Unreachable.


def _value_points(space: Space, steps: int | None) -> list[tuple[dict[str, float], dict]]:
  """(values, tags) of each value point of one group."""
  if space.design == "explicit":
    return [(dict(p), {}) for p in space.points]
  if space.declared is not None and space.declared.points is not None:
    return space.declared.points(space, steps, _value_rows)
  names = [f.name for f in space.vmapped]
  return [({k: float(v) for k, v in zip(names, row, strict=True)}, {})
          for row in _value_rows(space)]


def _group_name(structural: dict[str, Any]) -> str:
  if not structural:
    return "all"
  return ",".join(f"{k}={format_value(v)}" for k, v in structural.items())


def make_design(sweep_cfg: Any, steps: int | None = None) -> list[Point]:
  """The table of design points of `config.sweep`.

  Args:
    sweep_cfg: the sweep config (ConfigDict or dict); see `space.parse_space`.
    steps: `train.steps` (Hyperband sizes its brackets from it).

  Returns:
    Points ordered group-major (groups in the order of the crossed grouping factors, first
    factor slowest), then value point, then replicate.

  Raises:
    ValueError: for a mistake in the config, naming the field and the valid choices.
  """
  space = parse_space(sweep_cfg)
  value_points = _value_points(space, steps)
  grouping = space.grouping
  points = []
  for combo in itertools.product(*(f.levels() for f in grouping)):
    structural = {f.name: v for f, v in zip(grouping, combo, strict=True)}
    group = _group_name(structural)
    for values, tags in value_points:
      for r in range(space.replicates):
        points.append(
            Point(
                point=len(points),
                group=group,
                replicate=r,
                seed=space.seed + r,
                structural=dict(structural),
                values=dict(values),
                tags=dict(tags),
            )
        )
  return points


def config_overrides(point: Point) -> dict[str, Any]:
  """Config path -> value that the point's group sets, e.g. {'optimizer.name': 'adam'}."""
  return {config_path(name): value for name, value in point.structural.items()}


def groups(points: Sequence[Point]) -> dict[str, list[Point]]:
  """Points by group name, groups ordered by first appearance."""
  out: dict[str, list[Point]] = {}
  for p in points:
    out.setdefault(p.group, []).append(p)
  return out


def design_columns(sweep_cfg: Any) -> list[str]:
  """Columns of design.csv: point, group, replicate, seed, the design's tags (bracket, round),
  then grouping then value factors."""
  space = parse_space(sweep_cfg)
  return list(_ID_COLUMNS) + list(space.tag_columns) + list(space.factor_columns)


def design_row(point: Point) -> dict[str, Any]:
  """The design.csv row of `point`: ids, then factor values as text (floats round-trip)."""
  row = {"point": point.point, "group": point.group, "replicate": point.replicate}
  row["seed"] = point.seed
  row.update({k: int(v) for k, v in point.tags.items()})
  row.update({k: format_value(v) for k, v in point.structural.items()})
  row.update({k: repr(float(v)) for k, v in point.values.items()})
  return row


def write_design_csv(path: str | os.PathLike, points: Sequence[Point], sweep_cfg: Any) -> None:
  """Writes `points` to `path` (design.csv) atomically, one row per point."""
  files.atomic_write_csv(path, [design_row(p) for p in points], design_columns(sweep_cfg))


def read_design_csv(path: str | os.PathLike, sweep_cfg: Any) -> list[Point]:
  """Reads a design.csv written by `write_design_csv` for the same `sweep_cfg`.

  Grouping values get back their declared python types (bools, ints, strings, lists) and
  vmapped values are floats. Columns may come in any order.

  Raises:
    ValueError: if the file's columns or grouping values do not match `sweep_cfg`.
  """
  space = parse_space(sweep_cfg)
  expected = list(_ID_COLUMNS) + list(space.tag_columns) + list(space.factor_columns)
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or [])
    rows = list(reader)
  if sorted(header) != sorted(expected):
    raise ValueError(
        f"{os.fspath(path)}: columns {header} do not match the sweep config's {expected}."
    )
  lookup = {f.name: {format_value(v): v for v in f.levels()} for f in space.grouping}
  points = []
  for row in rows:
    structural = {}
    for name, table in lookup.items():
      if row[name] not in table:
        raise ValueError(
            f"{os.fspath(path)}: point {row['point']}: {name}={row[name]!r} is not a value of "
            f"sweep.factors.{name}; choices: {', '.join(table)}."
        )
      structural[name] = table[row[name]]
    points.append(
        Point(
            point=int(row["point"]),
            group=row["group"],
            replicate=int(row["replicate"]),
            seed=int(row["seed"]),
            structural=structural,
            values={k: float(row[k]) for k in space.value_names},
            tags={k: int(row[k]) for k in space.tag_columns},
        )
    )
  return points
