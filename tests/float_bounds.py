"""Derived float tolerances for comparisons of the training core's arrangements.

Two arrangements of the same math (a scan of steps and a loop, traced and constant
hyperparameters, a batch and its microbatches, a vmapped point and a single run, our chunk's
norms and Optax's) each lie within the bound `B` of `rounding.program_bound` of the exact
result, so within `2 B` of each other. `B` is measured on two float64 runs of the training
program (from the float32 run's start and from a start nudged by float32's epsilon) and scales
with the epsilon of the run it bounds: float64 comparisons get `2 B * EPS64 / EPS32`, 2^29
times tighter than float32's `2 B`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxopt_lab.optim import rounding

# B is linear in the epsilon of the run it bounds (`rounding.program_bound`).
TO_FLOAT64 = rounding.EPS64 / rounding.EPS32


def float64_config(config: Any) -> Any:
  """`config` computing in float64 (parameters too): needs `jax.enable_x64` while used."""
  out = config.copy_and_resolve_references()
  out.model.dtype = "float64"
  return out


def step_ulps(config: Any, param_count: int) -> float:
  """`U` of one training step of `config` (`rounding.ulps_per_step`), from its reductions.

  Each output element comes through the forward pass's dot products (both dimensions of each
  dense layer, counted once for the forward and again for the backward's transposed products),
  the mean over the batch's examples or tokens (the loss; each weight's gradient sums over them
  too) and the global norm over all `param_count` parameters (clipping, the log-step norms).
  """
  if config.task == "lm":
    m = config.model
    w, tokens = m.width, config.data.batch_size * m.context
    block = [w, w, w // m.heads, m.context, m.context, w, w, w, w, 4 * w]  # norms, attention, mlp
    forward = block * m.depth + [w, w, m.vocab]  # final norm, readout, log-softmax
  else:
    widths = [int(config.data.get("features", 0)) or 64, *config.model.get("hidden", ())]
    forward = widths + [1]
    tokens = config.data.batch_size
  return rounding.ulps_per_step(*forward, *forward, tokens, tokens, param_count)


def assert_within(got: Any, want: Any, tolerance: Any, name: str = "") -> float:
  """`|got - want| <= tolerance` leaf by leaf (NaN where both are NaN: the metrics of a chunk's
  non-log steps); returns the largest ratio of the gap to its tolerance (printed, for the notes).
  """
  worst = 0.0
  leaves = zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(tolerance),
               strict=True)
  for i, (a, b, tol) in enumerate(leaves):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    gap = np.where(both_nan, 0.0, np.abs(a - b))
    assert np.all(np.isfinite(gap)), f"{name} leaf {i}: NaN in one only"
    assert np.all(gap <= tol), f"{name} leaf {i}: max gap {gap.max():.3g} > tolerance {tol:.3g}"
    worst = max(worst, float(gap.max(initial=0.0)) / tol if tol > 0 else 0.0)
  print(f"ratio {name}: {worst:.3g}")
  return worst


def tolerance(bound: Any, float64: bool = False) -> Any:
  """`2 B` per leaf: for two float32 runs, or (`float64`) two float64 runs."""
  return jax.tree.map(lambda b: 2.0 * b * (TO_FLOAT64 if float64 else 1.0), bound)
