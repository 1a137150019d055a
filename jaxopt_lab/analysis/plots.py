"""Figures of the report, drawn headless with Matplotlib's Agg canvas; each returns PNG bytes.

No pyplot: every figure is a `matplotlib.figure.Figure` of its own, so no global state is
touched and no display is needed.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxopt_lab.analysis import findings as fnd

DPI = 110


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
  return buf.getvalue()


def _colors(n: int) -> list:
  from matplotlib import colormaps  # noqa: PLC0415

  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def lr_sensitivity(f: fnd.Findings) -> bytes | None:
  """Validation metric against learning rate: median and 95% band per group; x = diverged."""
  items = [s for s in f.sensitivities if s.curve is not None]
  if not items:
    return None
  exp = f.experiment
  fig = Figure(figsize=(7.0, 4.5), layout="constrained")
  ax = fig.add_subplot()
  marked = False
  for s, color in zip(items, _colors(len(items)), strict=True):
    c = s.curve
    ax.plot(c.lr, c.median, "o-", color=color, label=s.group.label, ms=4)
    band = np.isfinite(c.low) & np.isfinite(c.high)
    if band.any():
      ax.fill_between(c.lr, np.where(band, c.low, c.median), np.where(band, c.high, c.median),
                      color=color, alpha=0.2, lw=0)
    div = c.diverged.any(axis=1)
    if div.any():
      ax.plot(c.lr[div], np.full(div.sum(), s.group.cap), "x", color="red", ms=9, mew=2,
              label=None if marked else "diverged (drawn at the cap)")
      marked = True
      for lr, steps in zip(c.lr[div], c.diverged_step[div], strict=True):
        finite = steps[np.isfinite(steps)]
        if finite.size:
          ax.annotate(f"step {int(finite.min())}", (lr, s.group.cap), textcoords="offset points",
                      xytext=(4, 4), fontsize=7, color="red")
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel(f"final valid {exp.metric}")
  ax.set_title("Learning-rate sensitivity (median over seeds, 95% bootstrap band)", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  return _png(fig)


def learning_curves(f: fnd.Findings) -> bytes | None:
  """Validation (solid) and train (dashed) curves of each group's best lr and its neighbours."""
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
    for c in curves:
      color, width = styles[c.role]
      ax.plot(c.step, c.valid, "-", color=color, lw=width, label=f"{c.role} {c.lr:.3g} (valid)")
      if c.train is not None:
        ax.plot(c.step, c.train, "--", color=color, lw=0.8, alpha=0.7)
    ax.set_title(sel.group.label, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(exp.metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Learning curves, median over seeds (dashed: train)", fontsize=10)
  return _png(fig)


def tuning_curves(f: fnd.Findings) -> bytes | None:
  """Expected best validation metric after k random draws, with bootstrap bands."""
  items = [(g, c) for g, c in f.tuning if c is not None]
  if not items:
    return None
  fig = Figure(figsize=(7.0, 4.5), layout="constrained")
  ax = fig.add_subplot()
  for (g, c), color in zip(items, _colors(len(items)), strict=True):
    ax.plot(c.k, c.expected, "-", color=color, label=g.label)
    band = np.isfinite(c.low)
    if band.any():
      ax.fill_between(c.k[band], c.low[band], c.high[band], color=color, alpha=0.2, lw=0)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k (random draws from the swept points)")
  ax.set_ylabel(f"expected best valid {f.experiment.metric}")
  ax.set_title("Tuning curves (95% bootstrap band)", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  return _png(fig)


def _log_axis(levels: np.ndarray) -> bool:
  if levels.dtype.kind != "f":
    return False
  v = levels[np.isfinite(levels)]
  return v.size > 1 and np.all(v > 0) and v.max() / v.min() >= 10


def effects(f: fnd.Findings) -> bytes | None:
  """Main effects: mean validation metric per level (or bin) of each value factor, per group."""
  factors = list(dict.fromkeys(name for e in f.effects for name in e.main_effects))
  if not factors:
    return None
  cols = min(3, len(factors))
  rows = math.ceil(len(factors) / cols)
  fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
  colors = dict(zip([e.group.group for e in f.effects], _colors(len(f.effects)), strict=True))
  for i, name in enumerate(factors):
    ax = fig.add_subplot(rows, cols, i + 1)
    log = False
    for e in f.effects:
      if name not in e.main_effects:
        continue
      levels, means = e.main_effects[name]
      x = levels if levels.dtype.kind == "f" else np.arange(levels.size)
      ax.plot(x, means, "o-", color=colors[e.group.group], label=e.group.label, ms=4)
      if levels.dtype.kind != "f":
        ax.set_xticks(x, [str(v) for v in levels], fontsize=7)
      log = log or _log_axis(levels)
    if log:
      ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(f"mean valid {f.experiment.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Main effects (diverged points at the cap)", fontsize=10)
  return _png(fig)
