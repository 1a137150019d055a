"""Scale studies: where the best learning rate goes as the model widens, deepens or trains longer.

Whenever an experiment has a learning-rate factor and a scale factor (`width`, `depth`, or
`horizon` = train.steps) with two or more values, each structural group (one setting of the
other grouping factors, a *series*, e.g. `parametrization=mup`, at one scale) gets:

* its optimal learning rate ``lr*``: the minimum of the parabola in ``log10 lr`` through the best
  grid point of the seed-mean held-out loss and its two neighbours (the grid point itself where
  the best is at the grid's edge or a neighbour diverged), with a 95 % percentile interval from a
  bootstrap over seeds;
* per series, the least-squares fit ``log lr* = a + b log scale`` (one ``b`` per scale factor
  present) with a 95 % percentile interval on ``b`` from the same bootstrap: seeds are resampled
  once for every group (replicate ``r`` shares its data order across groups: the groups are
  paired), so each resample refits the whole study;
* fitted on all but the largest value of the first scale factor, the predicted ``lr*`` and best
  loss there (the loss from a line in log scale), against what was measured, in grid steps.

The percentile bootstrap over seeds under-covers at the sizes run: simulated on parabolic loss
curves with 0.05 nats of seed noise (tests/test_scale.py's `_synthetic`, 100 studies), the 95 %
interval on ``b`` covered the true exponent 74 % of the time with 3 seeds and 87 % with 10.
Read the intervals as rough (the study pages do); a calibrated interval is still to be built.
The analysis reads summary.csv and config.json only (no JAX); `section` adds the report's
"Scale" section, `scale_plot` draws Yang et al. (2022)'s Figure 1 layout.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxopt_lab import expdir

SCALE_FACTORS = ("width", "depth", "horizon")
LR = "learning_rate"
LEVEL = 0.95
RESAMPLES = 1000
GROUP_COLUMNS = ["series", "scale", "role", "lr_star", "lr_star_low", "lr_star_high",
                 "best_grid_lr", "best_loss", "at_edge", "seeds"]
FIT_COLUMNS = ["series", "factor", "b", "b_low", "b_high", "a", "held_out", "predicted_lr",
               "measured_lr", "error_grid_steps", "predicted_loss", "measured_loss",
               "loss_at_predicted_lr"]


def vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
  """``(x*, at_edge)``: the minimiser of the parabola through the best point of ``y`` (over
  sorted ``x``) and its neighbours; the best ``x`` itself (``at_edge``) where it has no two
  finite neighbours or the parabola opens downward. NaN where no ``y`` is finite."""
  finite = np.isfinite(y)
  if not finite.any():
    return math.nan, True
  k = int(np.argmin(np.where(finite, y, np.inf)))
  if k == 0 or k == len(x) - 1 or not (finite[k - 1] and finite[k + 1]):
    return float(x[k]), True
  (x0, x1, x2), (y0, y1, y2) = x[k - 1:k + 2], y[k - 1:k + 2]
  # The vertex of the interpolating parabola (divided differences).
  d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
  curvature = (d12 - d01) / (x2 - x0)
  if not curvature > 0:
    return float(x1), True
  return float((x0 + x1) / 2 - d01 / (2 * curvature)), False


def fit_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Least squares ``y = c[0] + x @ c[1:]`` for ``x`` [n, k] (NaN coefficients if singular)."""
  design = np.column_stack([np.ones(len(y)), x])
  if len(y) < design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
    return np.full(design.shape[1], math.nan)
  return np.linalg.lstsq(design, y, rcond=None)[0]


@dataclasses.dataclass(frozen=True)
class Study:
  """The loss grids of a scale study.

  Attributes:
    factors: the scale factors present (of SCALE_FACTORS, with >= 2 values).
    log_lrs: the learning-rate grid, log10, sorted.
    groups: (series, scale values) -> loss [lrs, seeds] (inf where a point diverged).
  """

  factors: tuple[str, ...]
  log_lrs: np.ndarray
  groups: dict[tuple[str, tuple[float, ...]], np.ndarray]


def _read(workdir: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
  with open(os.path.join(workdir, expdir.CONFIG_FILE)) as f:
    config = json.load(f)
  path = os.path.join(workdir, expdir.SUMMARY_FILE)
  if not os.path.isfile(path):
    return config, []
  with open(path, newline="", encoding="utf-8") as f:
    return config, list(csv.DictReader(f))


def load(workdir: str | os.PathLike) -> Study | None:
  """The study in an experiment directory; None where it has no lr factor or no scale factor."""
  config, rows = _read(os.fspath(workdir))
  metric = config.get("sweep", {}).get("metric", "loss")
  if not rows or LR not in rows[0]:
    return None
  grouping = [kv.split("=", 1)[0] for kv in rows[0]["group"].split(",") if "=" in kv]
  factors = tuple(f for f in SCALE_FACTORS if f in grouping
                  and len({r[f] for r in rows}) >= 2)
  if not factors:
    return None
  series_factors = [f for f in grouping if f not in factors]
  lrs = sorted({float(r[LR]) for r in rows})
  seeds = sorted({int(r["replicate"]) for r in rows})
  column = expdir.metric_column("final", "valid", metric)
  groups: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}
  for r in rows:
    series = ",".join(f"{f}={r[f]}" for f in series_factors) or "all"
    key = (series, tuple(float(r[f]) for f in factors))
    grid = groups.setdefault(key, np.full((len(lrs), len(seeds)), math.nan))
    value = float(r[column]) if r.get(column, "").strip() else math.nan
    if r["status"] == "diverged" or (r["status"] == "ok" and not math.isfinite(value)):
      value = math.inf  # diverged: worse than any loss; unfinished points stay NaN
    grid[lrs.index(float(r[LR])), seeds.index(int(r["replicate"]))] = value
  groups = {k: g for k, g in groups.items() if not np.isnan(g).any()}  # finished groups only
  return Study(factors, np.log10(np.asarray(lrs)), groups) if groups else None


def _lr_stars(study: Study, take: np.ndarray) -> dict[tuple[str, tuple[float, ...]], float]:
  """lr* (log10) of every group from the seed columns ``take``."""
  return {key: vertex(study.log_lrs, np.mean(grid[:, take], axis=1))[0]
          for key, grid in study.groups.items()}


def _fit(study: Study, stars: dict, series: str, exclude: float | None) -> np.ndarray:
  keys = [k for k in study.groups if k[0] == series and k[1][0] != exclude
          and math.isfinite(stars[k])]
  x = np.log10(np.asarray([k[1] for k in keys], dtype=float)).reshape(len(keys),
                                                                       len(study.factors))
  return fit_line(x, np.asarray([stars[k] for k in keys]))


@dataclasses.dataclass(frozen=True)
class Analysis:
  """`analyse`'s result: scale.csv's and scale_fit.csv's rows, and the study."""

  study: Study
  group_rows: list[dict[str, Any]]
  fit_rows: list[dict[str, Any]]


def analyse(study: Study, *, resamples: int = RESAMPLES, seed: int = 0) -> Analysis:
  """Per-group lr* with bootstrap intervals, the per-series fits and the held-out prediction."""
  n_seeds = next(iter(study.groups.values())).shape[1]
  rng = np.random.default_rng(seed)
  takes = [np.arange(n_seeds)] + [rng.integers(0, n_seeds, n_seeds) for _ in range(resamples)]
  boots = [_lr_stars(study, t) for t in takes]
  alpha = (1 - LEVEL) / 2
  step = float(np.median(np.diff(study.log_lrs))) if len(study.log_lrs) > 1 else math.nan
  first = sorted({k[1][0] for k in study.groups})
  held_out = first[-1] if len(first) >= 3 else None
  group_rows = []
  for key, grid in sorted(study.groups.items()):
    mean = np.mean(grid, axis=1)
    star, edge = vertex(study.log_lrs, mean)
    low, high = np.nanquantile([b[key] for b in boots[1:]], [alpha, 1 - alpha])
    best = int(np.argmin(np.where(np.isfinite(mean), mean, np.inf)))
    group_rows.append(dict(
        series=key[0], scale=",".join(f"{f}={v:g}" for f, v in zip(study.factors, key[1],
                                                                     strict=True)),
        role="held_out" if key[1][0] == held_out else "fit", lr_star=10**star,
        lr_star_low=10**low, lr_star_high=10**high, best_grid_lr=10**study.log_lrs[best],
        best_loss=float(mean[best]), at_edge=edge, seeds=n_seeds))
  fit_rows = []
  for series in sorted({k[0] for k in study.groups}):
    coefs = [_fit(study, b, series, held_out) for b in boots]
    for j, factor in enumerate(study.factors):
      row = dict(series=series, factor=factor, b=coefs[0][j + 1], a=coefs[0][0])
      row["b_low"], row["b_high"] = np.nanquantile([c[j + 1] for c in coefs[1:]],
                                                   [alpha, 1 - alpha])
      fit_rows.append(row)
    if held_out is not None:
      fit_rows[-len(study.factors)].update(_predict(study, boots[0], coefs[0], series,
                                                    held_out, step))
  return Analysis(study, group_rows, fit_rows)


def _predict(study: Study, stars: dict, coef: np.ndarray, series: str, held_out: float,
             step: float) -> dict[str, Any]:
  """The held-out prediction of one series: lr* and the best loss, against the measured."""
  keys = [k for k in study.groups if k[0] == series and k[1][0] == held_out]
  if not keys:
    return {}
  key = keys[0]
  predicted = coef[0] + float(np.log10(np.asarray(key[1], float)) @ coef[1:])
  mean = np.mean(study.groups[key], axis=1)
  finite = np.isfinite(mean)
  at_predicted = (float(np.interp(predicted, study.log_lrs[finite], mean[finite]))
                  if finite.any() else math.nan)
  smaller = [k for k in study.groups if k[0] == series and k[1][0] < held_out]
  means = [np.mean(study.groups[k], axis=1) for k in smaller]
  best = [float(np.min(np.where(np.isfinite(m), m, np.inf))) for m in means]
  loss_line = fit_line(np.log10([[k[1][0]] for k in smaller]), np.asarray(best))
  return dict(held_out=f"{study.factors[0]}={held_out:g}", predicted_lr=10**predicted,
              measured_lr=10**stars[key], error_grid_steps=(predicted - stars[key]) / step,
              predicted_loss=loss_line[0] + loss_line[1] * math.log10(held_out),
              measured_loss=float(np.min(np.where(finite, mean, np.inf))),
              loss_at_predicted_lr=at_predicted)


def fmt_row(row: dict[str, Any], columns: Sequence[str]) -> list[str]:
  """A row's cells as text (4 significant digits; '' for a missing value)."""
  out = []
  for c in columns:
    v = row.get(c, "")
    if isinstance(v, bool) or isinstance(v, str):
      out.append(str(v))
    elif v is None or (isinstance(v, float) and math.isnan(v)):
      out.append("")
    else:
      out.append(format(float(v), ".4g"))
  return out


def section(doc: Any, workdir: str | os.PathLike
            ) -> tuple[dict[str, bytes], dict[str, tuple[list, list]]]:
  """Adds the "Scale" section to the report's `doc` (nothing without a scale study).

  Returns its figure (filename -> PNG) and tables (filename -> (columns, rows))."""
  study = load(workdir)
  if study is None:
    return {}, {}
  from jaxopt_lab.analysis import scale_plot  # noqa: PLC0415  (matplotlib only when drawn)

  result = analyse(study)
  tables = {expdir.SCALE_FILE: (GROUP_COLUMNS, [dict(zip(GROUP_COLUMNS, fmt_row(
      r, GROUP_COLUMNS), strict=True)) for r in result.group_rows]),
            expdir.SCALE_FIT_FILE: (FIT_COLUMNS, [dict(zip(FIT_COLUMNS, fmt_row(
                r, FIT_COLUMNS), strict=True)) for r in result.fit_rows])}
  figure = "scale_lr_curves.png"
  doc.heading(2, "Scale")
  doc.para(
      f"Optimal learning rate per group against {', '.join(study.factors)}: lr* is the "
      "minimum of a parabola in log10 lr through the best grid point of the seed-mean valid "
      "loss and its neighbours; intervals are nominal 95 % percentile bootstraps over seeds "
      "(resampled jointly for all groups). They are NOT calibrated: simulated, the interval on b "
      "covered the true exponent 74 % of the time at 3 seeds and 87 % at 10 "
      "(`jaxopt_lab/analysis/scale.py`), so read them as indicative, not as a test. The fit is "
      "log lr* = a + b log(scale), per series, on all but the largest scale, which it predicts.")
  doc.table(GROUP_COLUMNS, [fmt_row(r, GROUP_COLUMNS) for r in result.group_rows])
  doc.table(FIT_COLUMNS, [fmt_row(r, FIT_COLUMNS) for r in result.fit_rows])
  doc.figure(figure, "Valid loss against learning rate, one curve per scale (mean over seeds), "
             "one panel per series (Yang et al. 2022, Figure 1 layout); dots: lr*.")
  return {figure: scale_plot.png(scale_plot.lr_curves(result))}, tables
