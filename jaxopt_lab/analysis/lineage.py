"""PBT's lineage in the report: whose state each point continued from, and what it explored.

From `stages.csv` (read by `adaptive.read_stages`): `roots` follows each point's state back to the
fresh start it descends from; `lineage` and `schedules` draw it and each explored value over the
steps; `population` lists the final population. No JAX: it reads files only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
  from jaxopt_lab.analysis.adaptive import Stages

LINEAGE_FIGURE = "lineage.png"
SCHEDULES_FIGURE = "schedules.png"

def roots(stages: Stages, group: str) -> dict[tuple[int, int], int]:
  """(stage, point) -> the point whose fresh start the state descends from (following sources
  back through the stages of `group`)."""
  root: dict[tuple[int, int], int] = {}
  previous: dict[int, int] = {}  # point -> root at the end of the last stage
  for k in sorted(set(stages.stage[stages.rows(group)].tolist())):
    now = {}
    for i in stages.rows(group, k):
      p, s = int(stages.point[i]), int(stages.source[i])
      now[p] = p if s < 0 else previous.get(s, s)
      root[(k, p)] = now[p]
    previous = previous | now
  return root


def explored(stages: Stages) -> list[str]:
  """The value factors whose value changes over a point's stages (PBT's explore moved them)."""
  out = []
  for name, values in stages.hparams.items():
    for group in stages.groups:
      rows = stages.rows(group)
      points = stages.point[rows]
      if any(np.unique(values[rows][points == p]).size > 1 for p in np.unique(points)):
        out.append(name)
        break
  return out


def _colors(points: list[int]) -> dict[int, Any]:
  """A colour per point (by its position among the group's points)."""
  from matplotlib import colormaps  # noqa: PLC0415

  cmap = colormaps["tab10" if len(points) <= 10 else "tab20"]
  return {p: cmap(i % cmap.N) for i, p in enumerate(points)}


def lineage(stages: Stages) -> Figure | None:
  """Whose state each point continued from: one line per point over the steps (coloured by the
  point its state descends from), a connector and a dot where it took another point's state."""
  groups = [g for g in stages.groups if stages.rows(g).size]
  if not groups:
    return None
  fig = Figure(figsize=(8.0, 1.0 + 0.28 * max(len(set(stages.point[stages.rows(g)].tolist()))
                                                  for g in groups) * len(groups)),
               layout="constrained")
  for j, group in enumerate(groups):
    ax = fig.add_subplot(len(groups), 1, j + 1)
    rows = stages.rows(group)
    points = sorted(set(stages.point[rows].tolist()))
    y = {p: i for i, p in enumerate(points)}
    colors = _colors(points)
    root = roots(stages, group)
    marked = False
    for i in rows:
      k, p, s = int(stages.stage[i]), int(stages.point[i]), int(stages.source[i])
      b, e = int(stages.begin[i]), int(stages.end[i])
      ax.plot([b, e], [y[p], y[p]], "-", color=colors[root[(k, p)]], lw=2.5,
              solid_capstyle="butt")
      if s >= 0 and s != p and s in y:
        ax.plot([b, b], [y[s], y[p]], "-", color="0.4", lw=0.8)
        ax.plot([b], [y[p]], "o", color=colors[root[(k, p)]], mec="black", mew=0.6, ms=5)
        marked = True
    ax.set_yticks(range(len(points)), [str(p) for p in points], fontsize=7)
    ax.set_ylim(-0.7, len(points) - 0.3)
    ax.set_ylabel("point")
    ax.set_title(group, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
  ax.set_xlabel("step")
  fig.suptitle("Lineage: each point's state over the steps, coloured by the point it descends "
               "from" + ("\n(a dot: its state was copied from the point at the connector's "
                         "other end)" if marked else ""), fontsize=9)
  return fig


def _log_scale(name: str, values: np.ndarray, config: dict[str, Any]) -> bool:
  """Log where the sweep declared 'log' for the factor; else where positive values span a
  decade (a factor given by values)."""
  spec = config.get("sweep", {}).get("factors", {}).get(name, {})
  scale = spec.get("scale") if isinstance(spec, dict) else None
  if scale is not None:
    return scale == "log"
  v = values[np.isfinite(values)]
  return bool(v.size > 1 and np.all(v > 0) and v.max() / v.min() >= 10)


def schedules(stages: Stages, config: dict[str, Any]) -> Figure | None:
  """Each explored hyperparameter's value over the steps, one step line per point (coloured as
  in `lineage`, by the point its state descends from)."""
  names = explored(stages)
  if not names:
    return None
  groups = stages.groups
  fig = Figure(figsize=(max(6.0, 4.5 * len(names)), 3.2 * len(groups)), layout="constrained")
  for j, group in enumerate(groups):
    rows = stages.rows(group)
    points = sorted(set(stages.point[rows].tolist()))
    colors = _colors(points)
    root = roots(stages, group)
    for n, name in enumerate(names):
      ax = fig.add_subplot(len(groups), len(names), j * len(names) + n + 1)
      values = stages.hparams[name]
      for p in points:
        mine = rows[stages.point[rows] == p]
        previous = None
        for i in mine[np.argsort(stages.begin[mine], kind="stable")]:
          color = colors[root[(int(stages.stage[i]), p)]]
          b, e, v = int(stages.begin[i]), int(stages.end[i]), values[i]
          ax.plot([b, e], [v, v], "-", lw=1.4, color=color, solid_capstyle="butt")
          if previous is not None and previous != v:  # explore moved it: a dotted riser
            ax.plot([b, b], [previous, v], ":", lw=0.9, color=color)
          previous = v
      if _log_scale(name, values[rows], config):
        ax.set_yscale("log")
      ax.set_xlabel("step")
      ax.set_ylabel(name)
      ax.set_title(group if len(groups) > 1 else name, fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
  fig.suptitle("Explored values over the steps, per point (colour: the point its state "
               "descends from)", fontsize=10)
  return fig


@dataclasses.dataclass(frozen=True)
class Member:
  """A point of PBT's final population: where its state came from and what it ended with."""

  group: str
  point: int
  root: int  # the point whose fresh start its final state descends from
  values: dict[str, float]  # value factor -> its value in the last stage
  valid: float  # summary.csv final_valid_<metric> (NaN without it)


def population(stages: Stages, summary: list[dict[str, str]], metric: str,
               mode: str = "min") -> list[Member]:
  """The points of each group's last stage, best final valid `metric` first (by `mode`, 'min'
  or 'max'; NaN last)."""
  column = f"final_valid_{metric}"
  valid = {int(r["point"]): float(r[column]) if r.get(column, "").strip() else np.nan
           for r in summary if r.get("point", "").strip()}
  out = []
  for group in stages.groups:
    rows = stages.rows(group)
    last = int(stages.stage[rows].max())
    root = roots(stages, group)
    members = [Member(group, int(stages.point[i]), root[(last, int(stages.point[i]))],
                      {n: float(v[i]) for n, v in stages.hparams.items()},
                      valid.get(int(stages.point[i]), np.nan))
               for i in stages.rows(group, last)]
    sign = -1.0 if mode == "max" else 1.0
    out += sorted(members, key=lambda m: (np.isnan(m.valid), sign * m.valid))
  return out
