"""The adaptive study's figure (`benchmarks/adaptive_study.py`): best full-budget valid loss
against points x steps per design."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.adaptive_rankings import COMPUTE_SHARE, TOLERANCE


def figure(study: Any):
  """Best full-budget valid loss against points x steps: each seed's incumbent as a thin step
  curve (from its first full-budget point), each design's final incumbents as a marker (median,
  bar from min to max over seeds, nudged sideways by 1% of the compute per design);
  the grid's best (mean over seeds) dashed, 1% above it shaded, a third of its compute dotted."""
  from matplotlib import colormaps, ticker  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  fig = Figure(figsize=(7.5, 4.6))
  ax = fig.add_subplot()
  cmap = colormaps["tab10"]
  finite = [v for t in study.traces for _, v in t.curve if np.isfinite(v)]
  markers = "osD^vP<>*hX"
  designs = list(dict.fromkeys(t.design for t in study.traces))
  for i, design in enumerate(designs):
    traces, color = study.of(design), cmap(i)
    if not traces:
      continue
    for t in traces:
      pts = [(x, v) for x, v in t.curve if np.isfinite(v)]
      if pts:
        x, v = zip(*pts, strict=True)
        ax.step(x, v, where="post", color=color, lw=1, alpha=0.45)
        ax.plot(x[-1:], v[-1:], ".", color=color, alpha=0.6)
    loss = np.array([t.best_loss for t in traces])
    loss = loss[np.isfinite(loss)]
    if loss.size:
      med = np.median(loss)
      # Designs of the same compute would hide each other: nudge each by 1% of the axis.
      x = np.mean([t.compute for t in traces]) * (1 + 0.01 * (i - 2))
      ax.errorbar([x], [med], yerr=[[med - loss.min()], [loss.max() - med]],
                  fmt=markers[i], color=color, ms=7, mec="black", mew=0.6, capsize=3,
                  label=f"{design} ({len(traces)} seed{'s' * (len(traces) != 1)})")
  grid = study.of("grid")
  if grid:
    best = float(np.mean([t.best_loss for t in grid]))
    ax.axhline(best, color="black", ls="--", lw=0.8)
    ax.axhspan(best, best * (1 + TOLERANCE), color="gray", alpha=0.2, lw=0,
               label="grid's best (mean) to +1%")
    ax.axvline(COMPUTE_SHARE * np.mean([t.compute for t in grid]), color="gray", ls=":",
               label="1/3 of the grid's compute")
  if finite:
    lo, hi = min(finite), max(finite)
    span = max(hi - lo, 1e-3)
    ax.set_ylim(lo - 0.06 * span, hi + 0.06 * span)
  ax.set_xlim(left=0)
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
  ax.set_xlabel("compute: points x steps trained (cumulative)")
  ax.set_ylabel("best valid loss among full-budget points")
  ax.set_title(f"learning rate, {study.task}, {study.steps} steps", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  return fig
