"""Expected best of k random draws from the swept points, and tuning curves (Dodge et al. 2019)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxopt_lab.analysis.intervals import check_level

MODES = ("min", "max")


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _order_statistic_weights(n: int, ks: np.ndarray) -> np.ndarray:
  """w[k, i] = P(the best of k draws with replacement is the i-th best of n), shape [K, n]."""
  i = np.arange(1, n + 1, dtype=np.float64)
  k = ks.astype(np.float64)[:, None]
  return ((n - i + 1) / n) ** k - ((n - i) / n) ** k


def expected_best_of_k(
    values: np.typing.ArrayLike, ks: np.typing.ArrayLike, mode: str = "min"
) -> np.ndarray:
  r"""Expected best of k draws with replacement from `values`, in closed form.

  With the values sorted from best to worst, $v_{(1)}, \dots, v_{(N)}$,

  $$E[\text{best of } k] = \sum_{i=1}^N v_{(i)}\Big[\Big(\frac{N-i+1}{N}\Big)^k
      - \Big(\frac{N-i}{N}\Big)^k\Big]$$

  (Dodge et al. 2019, "Show your work", expected validation performance).

  Args:
    values: the swept points' values, shape `[..., N]`, finite.
    ks: numbers of draws, each >= 1.
    mode: "min" (smaller is better) or "max".

  Returns:
    Array `[..., len(ks)]`.
  """
  check_mode(mode)
  v = np.asarray(values, dtype=np.float64)
  ks = np.atleast_1d(np.asarray(ks))
  if v.ndim == 0 or v.shape[-1] == 0:
    raise ValueError("values must have at least one value on the last axis")
  if np.any(ks < 1):
    raise ValueError(f"ks must be >= 1, got {ks}")
  if not np.all(np.isfinite(v)):
    raise ValueError("values must be finite; give failed points a finite worst value first")
  v = np.sort(v, axis=-1)
  if mode == "max":
    v = v[..., ::-1]
  return v @ _order_statistic_weights(v.shape[-1], ks).T


@dataclasses.dataclass(frozen=True)
class TuningCurve:
  """Expected best value after k random draws, k = 1..N, with a bootstrap band."""

  k: np.ndarray  # [N] 1..N
  expected: np.ndarray  # [N]
  low: np.ndarray  # [N]; NaN when N = 1
  high: np.ndarray  # [N]


def tuning_curve(
    values: np.typing.ArrayLike,
    mode: str = "min",
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> TuningCurve:
  """Tuning curve of a set of swept points (Dodge et al. 2019; Schmidt et al. 2021).

  The band is the percentile bootstrap over the swept points: the points are resampled with
  replacement and the closed-form curve recomputed for each resample.

  Args:
    values: one finite value per swept point, shape `[N]`.
    mode: "min" or "max".
    level: coverage of the band.
    num_resamples: bootstrap resamples.
    seed: seed of the resampling.

  Returns:
    A `TuningCurve` with k = 1..N.
  """
  check_level(level)
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1:
    raise ValueError(f"values must be 1-D, got shape {v.shape}")
  n = v.size
  ks = np.arange(1, n + 1)
  expected = expected_best_of_k(v, ks, mode)
  if n == 1:
    nan = np.full(1, np.nan)
    return TuningCurve(k=ks, expected=expected, low=nan, high=nan)
  rng = np.random.default_rng(seed)
  boot = expected_best_of_k(v[rng.integers(0, n, size=(num_resamples, n))], ks, mode)
  alpha = (1.0 - level) / 2.0
  low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
  return TuningCurve(k=ks, expected=expected, low=low, high=high)


