"""The scale study's figure: loss against learning rate, one curve per scale, one panel per
series (the layout of Yang et al. 2022, Figure 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:  # scale imports this module to draw its section
  from jaxopt_lab.analysis import scale
from jaxopt_lab.analysis.plots import png  # noqa: F401  (the report's PNG writer, public here)


def lr_curves(result: scale.Analysis) -> Figure:
  """One panel per series: the seed-mean valid loss against lr per scale value, lr* marked."""
  study = result.study
  series = sorted({k[0] for k in study.groups})
  fig = Figure(figsize=(4.2 * len(series), 3.4), layout="constrained")
  axes = fig.subplots(1, len(series), sharey=True, squeeze=False)[0]
  scales = sorted({k[1] for k in study.groups})
  from matplotlib import colormaps  # noqa: PLC0415

  colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(scales)))
  stars = {(r["series"], r["scale"]): r for r in result.group_rows}
  finite = [np.mean(g, axis=1) for g in study.groups.values()]
  finite = np.concatenate([m[np.isfinite(m)] for m in finite])
  for ax, name in zip(axes, series, strict=True):
    for color, values in zip(colors, scales, strict=True):
      grid = study.groups.get((name, values))
      if grid is None:
        continue
      label = ",".join(f"{f}={v:g}" for f, v in zip(study.factors, values, strict=True))
      mean = np.mean(grid, axis=1)
      ax.plot(10**study.log_lrs, np.where(np.isfinite(mean), mean, np.nan), "o-", ms=3,
              color=color, label=label)
      row = stars[(name, label)]
      ax.axvline(row["lr_star"], color=color, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
  if finite.size:
    low = float(np.min(finite))
    axes[0].set_ylim(low - 0.05 * abs(low), low + 0.6 * (float(np.median(finite)) - low) + 0.5)
  axes[0].set_ylabel("valid loss (mean over seeds)")
  axes[-1].legend(fontsize=7)
  return fig
