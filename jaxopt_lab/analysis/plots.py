"""Figures of the report, drawn headless with Matplotlib's Agg canvas; each returns PNG bytes.

No pyplot: every figure is a `matplotlib.figure.Figure` of its own, so no global state is
touched and no display is needed. Each function returns the Figure (None when it has nothing
to show); `png` renders one.

Every figure shows the answer first: the y axis spans the informative range (from the best
value to the cap, the metric at initialisation, which no scored value passes; `y_range`), values
beyond it are drawn as triangles at the edge, the best setting is starred, and each factor's
axis follows the scale the sweep declared for it.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxopt_lab.analysis import findings as fnd

DPI = 110
PAD = 0.06  # of the range, on each side
SMOOTH_BANDWIDTH = 0.12  # of each axis of the two-factor view, in its declared scale
ZOOM = 0.2  # the zoomed sensitivity panel shows values within this share of (cap - best)


def png(fig: Figure) -> bytes:
  """The figure as PNG bytes."""
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
  return buf.getvalue()


def _colors(n: int) -> list:
  from matplotlib import colormaps  # noqa: PLC0415

  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def y_range(values: np.ndarray, cap: float, mode: str) -> tuple[float, float] | None:
  """The informative y range: from the best finite value to the cap (or the worst value when
  there is no finite cap), padded by `PAD`; None when nothing is finite."""
  v = np.asarray(values, dtype=np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return None
  best = v.min() if mode == "min" else v.max()
  worst = cap if np.isfinite(cap) else (v.max() if mode == "min" else v.min())
  lo, hi = min(best, worst), max(best, worst)
  span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
  return lo - PAD * span, hi + PAD * span


def _offscale(ax, x: np.ndarray, y: np.ndarray, lo: float, hi: float, color,
              xlim: tuple[float, float] | None = None, label: bool = True) -> None:
  """Values outside [lo, hi] (and, with `xlim`, inside it) as hollow triangles on the edge they
  passed, each with its value written beside it (`label`): a clipped point is never silent."""
  x, y = np.asarray(x), np.asarray(y)
  inside = np.ones(x.shape, bool) if xlim is None else (x >= xlim[0]) & (x <= xlim[1])
  for mask, edge, marker, dy in ((inside & (y > hi), hi, "^", -10), (inside & (y < lo), lo, "v",
                                                                     4)):
    if mask.any():
      ax.plot(x[mask], np.full(mask.sum(), edge), marker, mfc="none", mec=color, ms=8,
              clip_on=False, mew=1.5)
      for xi, yi in zip(x[mask], y[mask], strict=True) if label else ():
        ax.annotate(f"{yi:.3g}", (xi, edge), textcoords="offset points", xytext=(4, dy),
                    fontsize=6, color=color)


def _scale_axis(ax, axis: str, scale: str | None, values: np.ndarray) -> None:
  """Log where the sweep declared 'log' (or, undeclared, positive values over a decade)."""
  if scale is None:
    v = values[np.isfinite(values)] if values.dtype.kind == "f" else np.array([])
    log = v.size > 1 and np.all(v > 0) and v.max() / v.min() >= 10
  else:
    log = scale == "log"
  if log:
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


DIVERGED_MARKERS = ("x", "+", "1", "2", "3", "4")  # one per group, in the group's colour


def _lr_panel(ax, f: fnd.Findings, items: list[fnd.Sensitivity], lo: float, hi: float,
              xlim: tuple[float, float] | None, legend: bool) -> None:
  exp = f.experiment
  for i, (s, color) in enumerate(zip(items, _colors(len(items)), strict=True)):
    c = s.curve
    ax.plot(c.lr, c.mean, "o-", color=color, label=s.group.label if legend else None, ms=4)
    band = np.isfinite(c.low) & np.isfinite(c.high)
    if band.any():
      ax.fill_between(c.lr, np.where(band, c.low, c.mean), np.where(band, c.high, c.mean),
                      color=color, alpha=0.2, lw=0)
    _offscale(ax, c.lr, c.mean, lo, hi, color, xlim)
    if np.isfinite(s.best_lr):
      ax.plot([s.best_lr], [s.best_mean], "*", color=color, ms=15, mec="black", mew=0.8,
              zorder=5)
    if np.isfinite(s.group.cap):
      ax.axhline(s.group.cap, color=color, ls="--", lw=0.8, alpha=0.7)
    div = c.diverged.any(axis=1)
    if div.any():
      ax.plot(c.lr[div], np.full(div.sum(), s.group.cap), DIVERGED_MARKERS[i % 6],
              color=color, ms=10, mew=2,
              label=f"{s.group.label}: diverged (at the cap)" if legend else None)
      steps = c.diverged_step[div][0]
      steps = steps[np.isfinite(steps)]
      if steps.size and legend:  # one note per group, at its smallest diverged lr
        ax.annotate(f"step {int(steps.min())}", (c.lr[div][0], s.group.cap),
                    textcoords="offset points", xytext=(-10, -12 - 8 * i), fontsize=7,
                    color=color)
    clipped = c.clipped.any(axis=1) & ~div
    if clipped.any():  # seeds worse than the cap, counted at it: say so on the plot
      ax.plot(c.lr[clipped], np.full(clipped.sum(), s.group.cap), "s", mfc="none", mec=color,
              ms=9, mew=1.2, label=f"{s.group.label}: a seed worse than at initialisation, "
              "counted at the cap" if legend else None)
  _scale_axis(ax, "x", exp.factor_scale("learning_rate") or "log", items[0].curve.lr)
  ax.set_ylim(lo, hi)
  if xlim:
    ax.set_xlim(*xlim)
  ax.set_xlabel("learning rate")
  ax.set_ylabel(f"final valid {exp.metric}")
  ax.grid(True, which="both", alpha=0.3)


def lr_sensitivity(f: fnd.Findings) -> Figure | None:
  """Validation metric against learning rate, mean and 95% band per group; two panels: the
  range up to the cap (dashed), and a zoom on the best values (the region that decides)."""
  items = [s for s in f.sensitivities if s.curve is not None and np.isfinite(s.best_mean)]
  if not items:
    return None
  exp = f.experiment
  means = np.concatenate([s.curve.mean for s in items])
  cap = max((s.group.cap for s in items), key=lambda c: c if exp.mode == "min" else -c)
  full = y_range(means, cap, exp.mode)
  best = min(s.best_mean for s in items) if exp.mode == "min" else max(
      s.best_mean for s in items)
  # Zoom: values within ZOOM of the way from the best to the cap; x over the lrs that reach it.
  limit = best + ZOOM * (cap - best) if np.isfinite(cap) else np.nanmax(means)
  near = np.concatenate([s.curve.lr[(s.curve.mean - limit) * (1 if exp.mode == "min" else -1)
                                    <= 0] for s in items])
  fig = Figure(figsize=(11.0, 4.3), layout="constrained")
  ax_full, ax_zoom = fig.subplots(1, 2)
  _lr_panel(ax_full, f, items, *full, None, legend=True)
  ax_full.set_title("Up to the cap (dashed: the metric at initialisation)", fontsize=9)
  # The zoom spans the means near the best (wide bands of few seeds are cut by its edges).
  span = abs(limit - best) or 1e-12
  zoom = sorted((best - 0.25 * span * (1 if exp.mode == "min" else -1), limit))
  xlim = (near.min() / 1.5, near.max() * 1.5) if near.size else None
  _lr_panel(ax_zoom, f, items, zoom[0], zoom[1], xlim, legend=False)
  ax_zoom.set_title("Zoom on the best (triangles: beyond the axis)", fontsize=9)
  fig.legend(loc="outside lower center", ncol=len(items) + 1, fontsize=8)
  fig.suptitle(f"Learning-rate sensitivity: final valid {exp.metric}, mean over seeds with its "
               f"95% band ({fnd.stats.interval_method(3, f.kind)}), best lr starred",
               fontsize=10)
  return fig


def learning_curves(f: fnd.Findings) -> Figure | None:
  """Validation (solid) and train (dashed, at its own steps) curves of each group's best lr and
  its neighbours; y from the best value to the cap."""
  items = [(s, curves) for s, curves in f.learning_curves if curves]
  if not items:
    return None
  exp = f.experiment
  cols = min(3, len(items))
  rows = math.ceil(len(items) / cols)
  fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
  styles = {"best": ("C0", 2.0), "lower lr": ("C1", 1.0), "higher lr": ("C2", 1.0)}
  for i, (sel, curves) in enumerate(items):
    ax = fig.add_subplot(rows, cols, i + 1)
    shown = []
    for c in curves:
      color, width = styles[c.role]
      # Markers at the evaluations: the lines between them are not measurements.
      ax.plot(c.step, c.valid, "-o", color=color, lw=width, ms=3,
              label=f"{c.role} {c.lr:.3g} (valid, {len(c.points)} seeds)")
      if len(c.points) > 1:  # the seed band: lowest to highest seed at each evaluation
        ax.fill_between(c.step, c.valid_low, c.valid_high, color=color, alpha=0.15, lw=0)
      shown.append(c.valid)
      if c.train is not None:
        ax.plot(c.train_step, c.train, "--", color=color, lw=0.8, alpha=0.7,
                label=f"{c.role} (train)")
        shown.append(c.train)
    # The top: the cap, or the curves' own start where it lies beyond (the cap is a median).
    starts = [c.valid[0] for c in curves if np.isfinite(c.valid[0])]
    pick = max if exp.mode == "min" else min
    top = pick([sel.group.cap, *starts]) if np.isfinite(sel.group.cap) else math.nan
    limits = y_range(np.concatenate(shown), top, exp.mode)
    if limits:
      ax.set_ylim(*limits)
      for c in curves:
        _offscale(ax, c.step, c.valid, *limits, styles[c.role][0])
    ax.set_title(sel.group.label, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(exp.metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"Learning curves: {exp.metric}, mean over seeds (band: lowest to highest "
               "seed; markers: evaluations; dashed: train)", fontsize=10)
  return fig


def tuning_curves(f: fnd.Findings) -> Figure | None:
  """Expected best validation metric after k random draws, with bootstrap bands."""
  items = [(g, c) for g, c in f.tuning if c is not None]
  if not items:
    return None
  exp = f.experiment
  fig = Figure(figsize=(7.0, 4.5), layout="constrained")
  ax = fig.add_subplot()
  for (g, c), color in zip(items, _colors(len(items)), strict=True):
    ax.plot(c.k, c.expected, "-", color=color, label=g.label)
    band = np.isfinite(c.low)
    if band.any():
      ax.fill_between(c.k[band], c.low[band], c.high[band], color=color, alpha=0.2, lw=0)
  caps = [g.cap for g, _ in items if np.isfinite(g.cap)]
  cap = (max(caps) if exp.mode == "min" else min(caps)) if caps else math.nan
  limits = y_range(np.concatenate([c.expected for _, c in items]
                                  + [c.low[np.isfinite(c.low)] for _, c in items]), cap, exp.mode)
  if limits:
    ax.set_ylim(*limits)
  if np.isfinite(cap):
    ax.axhline(cap, color="gray", ls="--", lw=0.8, label="cap (metric at initialisation)")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k (random draws from the swept points)")
  ax.set_ylabel(f"expected best valid {exp.metric}")
  ax.set_title("Tuning curves (95% bootstrap band)", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def effects(f: fnd.Findings) -> Figure | None:
  """Main effects: mean validation metric per level (or bin) of each value factor, per group.

  None for a one-factor sweep: the learning-rate sensitivity already is that curve."""
  factors = list(dict.fromkeys(name for e in f.effects for name in e.main_effects))
  if len(factors) < 2:
    return None
  exp = f.experiment
  cols = min(3, len(factors))
  rows = math.ceil(len(factors) / cols)
  fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
  colors = dict(zip([e.group.group for e in f.effects], _colors(len(f.effects)), strict=True))
  for i, name in enumerate(factors):
    ax = fig.add_subplot(rows, cols, i + 1)
    shown = []
    for e in f.effects:
      if name not in e.main_effects:
        continue
      levels, means = e.main_effects[name]
      x = levels if levels.dtype.kind == "f" else np.arange(levels.size)
      ax.plot(x, means, "o-", color=colors[e.group.group], label=e.group.label, ms=4)
      if levels.dtype.kind != "f":
        ax.set_xticks(x, [str(v) for v in levels], fontsize=7)
      else:
        _scale_axis(ax, "x", exp.factor_scale(name), levels)
      shown.append(means)
    # Means over bins are far from the cap (capped points are already in them): the data's range.
    limits = y_range(np.concatenate(shown), math.nan, exp.mode)
    if limits:
      ax.set_ylim(*limits)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(name)
    ax.set_ylabel(f"mean valid {exp.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Main effects (diverged points at the cap)", fontsize=10)
  return fig


def _unit(values: np.ndarray, log: bool) -> np.ndarray:
  """Coordinates in [0, 1] over the values' range (in log10 where `log`)."""
  v = np.log10(values) if log else values
  lo, hi = v.min(), v.max()
  return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def smooth_surface(x: np.ndarray, y: np.ndarray, z: np.ndarray, gx: np.ndarray, gy: np.ndarray,
                   bandwidth: float = SMOOTH_BANDWIDTH) -> np.ndarray:
  """Nadaraya-Watson (Gaussian kernel) estimate of z on the grid (gx, gy); all coordinates in
  unit-free [0, 1] units. Returns an array of the grid's shape."""
  d2 = (gx.reshape(-1, 1) - x) ** 2 + (gy.reshape(-1, 1) - y) ** 2
  w = np.exp(-0.5 * d2 / bandwidth**2)
  return ((w @ z) / w.sum(axis=1)).reshape(gx.shape)


def two_factor(f: fnd.Findings) -> Figure | None:
  """Learning rate against the next most important value factor, one panel per group: every
  configuration coloured by its mean valid metric (capped), over a kernel-smoothed surface."""
  items = [(e, fnd.second_factor(e)) for e in f.effects]
  items = [(e, y) for e, y in items if y is not None and e.group.lr.size > 2]
  if not items:
    return None
  from matplotlib import colormaps  # noqa: PLC0415

  exp = f.experiment
  cmap = colormaps["viridis_r" if exp.mode == "min" else "viridis"]  # bright = good
  fig = Figure(figsize=(5.2 * len(items[:3]), 4.2), layout="constrained")
  for i, (e, name) in enumerate(items[:3]):
    g = e.group
    ax = fig.add_subplot(1, len(items[:3]), i + 1)
    z = fnd.nan_mean(g.scored("valid"))
    yv = g.levels[name].astype(np.float64)
    ok = np.isfinite(z) & np.isfinite(g.lr) & np.isfinite(yv)
    lr, yv, z = g.lr[ok], yv[ok], z[ok]
    lr_log = (exp.factor_scale("learning_rate") or "log") == "log"
    y_log = exp.factor_scale(name) == "log"
    ux, uy = _unit(lr, lr_log), _unit(yv, y_log)
    gx, gy = np.meshgrid(np.linspace(0, 1, 60), np.linspace(0, 1, 60))
    surface = smooth_surface(ux, uy, z, gx, gy)
    ax_x = (10 ** (np.log10(lr.min()) + gx * np.log10(lr.max() / lr.min())) if lr_log
            else lr.min() + gx * (lr.max() - lr.min()))
    ax_y = (10 ** (np.log10(yv.min()) + gy * np.log10(yv.max() / yv.min())) if y_log
            else yv.min() + gy * (yv.max() - yv.min()))
    vmin, vmax = z.min(), z.max()
    ax.contourf(ax_x, ax_y, surface, levels=14, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.55)
    pts = ax.scatter(lr, yv, c=z, cmap=cmap, vmin=vmin, vmax=vmax, s=28, edgecolors="black",
                     linewidths=0.4)
    best = int(np.argmin(z) if exp.mode == "min" else np.argmax(z))
    ax.plot([lr[best]], [yv[best]], "*", color="red", ms=16, mec="black", label="best")
    if lr_log:
      ax.set_xscale("log")
    if y_log:
      ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(name)
    ax.set_title(g.label, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.colorbar(pts, ax=ax, label=f"mean valid {exp.metric} (capped)")
  fig.suptitle("Two-factor view: learning rate x the next most important factor", fontsize=10)
  return fig
