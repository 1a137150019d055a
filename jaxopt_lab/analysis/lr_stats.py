"""How much the metric depends on the learning rate: Wortsman et al.'s sensitivity, basins."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxopt_lab.analysis.best_of_k import check_mode


def _as_min(values: np.ndarray, mode: str) -> np.ndarray:
  check_mode(mode)
  return values if mode == "min" else -values


def lr_sensitivity(values: np.typing.ArrayLike, l0: float, mode: str = "min") -> float:
  r"""Learning-rate sensitivity of Wortsman et al. (2023), over the swept learning rates.

  $$S = \frac{1}{L}\sum_{j=1}^{L} \big[\min(\ell(\eta_j), \ell_0) - \ell^*\big],
  \qquad \ell^* = \min_j \min(\ell(\eta_j), \ell_0),$$

  an equal-weight mean over the L swept learning rates (for a grid uniform in log10 lr, the
  expectation over a log-uniform lr on the swept range), with $\ell_0$ the loss at
  initialisation; a diverged or non-finite $\ell(\eta_j)$ counts as $\ell_0$. For mode "max"
  the same with the signs flipped: mean of $\ell^* - \max(\ell(\eta_j), \ell_0)$.

  Args:
    values: the final metric at each swept learning rate; NaN or inf for diverged.
    l0: the metric at initialisation (the cap), finite.
    mode: "min" or "max".

  Returns:
    S >= 0 (0: flat over the range). NaN when `l0` is not finite.
  """
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError("values must be 1-D and non-empty")
  if not np.isfinite(l0):
    return math.nan
  v = _as_min(np.where(np.isfinite(v), v, l0 if mode == "min" else -np.inf), mode)
  capped = np.minimum(v, _as_min(np.float64(l0), mode))
  return float(np.mean(capped - capped.min()))


@dataclasses.dataclass(frozen=True)
class Basin:
  """The learning-rate interval around the best lr where the metric is within `rel_tol` of the
  best, as a fraction of the way from the best to the reference (`basin_width`)."""

  rel_tol: float
  width_decades: float  # log10(lr_high) - log10(lr_low)
  lr_low: float
  lr_high: float
  open_low: bool  # the basin reaches the smallest swept lr: the true basin may be wider
  open_high: bool  # ... the largest swept lr


def basin_width(
    lrs: np.typing.ArrayLike, values: np.typing.ArrayLike, rel_tol: float, mode: str = "min",
    *, reference: float = math.nan,
) -> Basin:
  """Width, in decades of learning rate, of the basin within `rel_tol` of the best value.

  The tolerance is a fraction of what training achieved, not of the metric's value, so adding a
  constant to the metric (an irreducible loss, an offset) or scaling it changes nothing: the
  threshold is t = best + rel_tol * |reference - best|, with `reference` the metric at
  initialisation (the report's cap); without a finite reference that differs from the best, the
  spread of the finite values (worst - best) takes its place. The basin is the interval of
  log10(lr) around the best swept lr where the piecewise-linear interpolation (in log10 lr) of
  the values stays within t; it ends where the interpolation crosses t, or at the last swept lr
  before a non-finite (diverged) value. For mode "max" the same with the signs flipped.

  Args:
    lrs: swept learning rates, positive and distinct.
    values: the metric at each lr; NaN/inf for diverged.
    rel_tol: fraction of the improvement, e.g. 0.01 for 1%.
    mode: "min" or "max".
    reference: the metric at initialisation.

  Returns:
    A `Basin`; NaN width when no value is finite.
  """
  lrs = np.asarray(lrs, dtype=np.float64)
  v = np.asarray(values, dtype=np.float64)
  if lrs.shape != v.shape or lrs.ndim != 1 or lrs.size == 0:
    raise ValueError(f"lrs and values must be 1-D of one length, got {lrs.shape}, {v.shape}")
  if np.any(lrs <= 0) or np.unique(lrs).size != lrs.size:
    raise ValueError("lrs must be positive and distinct")
  if rel_tol < 0:
    raise ValueError(f"rel_tol must be >= 0, got {rel_tol}")
  if not np.any(np.isfinite(v)):
    return Basin(rel_tol, math.nan, math.nan, math.nan, False, False)
  order = np.argsort(lrs)
  x = np.log10(lrs[order])
  v = _as_min(v[order], mode)
  v = np.where(np.isfinite(v), v, np.inf)
  b = int(np.argmin(v))
  ref = float(_as_min(np.float64(reference), mode))
  scale = ref - v[b] if math.isfinite(ref) and ref > v[b] else float(
      np.max(v[np.isfinite(v)]) - v[b])
  threshold = v[b] + rel_tol * scale

  def edge(step: int) -> tuple[float, bool]:
    i = b
    while 0 <= i + step < x.size and v[i + step] <= threshold:
      i += step
    j = i + step
    if not 0 <= j < x.size:
      return float(x[i]), True
    if not np.isfinite(v[j]):
      return float(x[i]), False
    t = (threshold - v[i]) / (v[j] - v[i])
    return float(x[i] + t * (x[j] - x[i])), False

  lo, open_lo = edge(-1)
  hi, open_hi = edge(+1)
  return Basin(rel_tol, hi - lo, 10.0**lo, 10.0**hi, open_lo, open_hi)
