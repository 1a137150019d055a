"""Factors: what a sweep varies, and the algebra of their values (levels, draws, unit maps).

A factor is a value factor (a leaf of the `hparams` pytree, vmapped; the optimizers' declared
values: `factory.value_factors()`) or a structural one (it changes the compiled program:
`structural_factors()`); a value factor declared with `vmap=False` groups too. `space` reads
them from `config.sweep`; the designs draw their values through `Factor`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxopt_lab.optim import factory, registry

SCALES = ("log", "linear", "int")

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

def config_path(name: str) -> str:
  """The config path a grouping factor sets: `structural_factors()[name]` or `optimizer.<name>`."""
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
    name: factor name, a key of `structural_factors()` or one of `factory.value_factors()`.
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


def check_ranges(sweep_space: Any, optimizer: str) -> None:
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


def load_optimizers(specs: Any) -> None:
  """Loads the optimizers a sweep names (plugins too), so their values and flags are factors."""
  spec = specs["optimizer"] if "optimizer" in specs.keys() else None
  if hasattr(spec, "keys") and "values" in spec.keys():
    values = spec["values"]
    if isinstance(values, Sequence) and not isinstance(values, str):
      for name in values:
        registry.resolve(name, "sweep.factors.optimizer.values")
