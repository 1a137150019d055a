"""The adaptive study's rankings (issue 23): rung rankings other than 'last', a second task, and
the rank correlation of each rung with the full horizon (`benchmarks/adaptive_study.py`).

* Designs `<halving or hyperband>_<rank_by>`: successive halving or Hyperband whose rungs rank by
  a cooldown fork (`sweep.adaptive.rank_by = 'cooldown'`, `cooldown_fraction` 0.2: forks of 2
  and 7 steps at rungs 12 and 36 of 108) or by a power law extrapolated to the horizon
  ('extrapolated'; each stage that ranks so evaluates the valid split 4 times,
  `sweep.adaptive.fit_evals`, in chunks of steps / 36: rung 12 fits 4 points, rung 36 8; the
  last stage evaluates at the run's `eval_every`).
* Task `digits`: the digits MLP made small (64-64-64-10, batch 32, 108 steps, Adam with a
  warmup-stable-decay schedule: 5% warmup, the last 20% decaying to 0), the same 9 log-spaced
  learning rates from 1e-4 to 1. The LM keeps its warmup-cosine schedule: the two schedules a
  cooldown rung meets.
* `rung_correlations`: per ranking rung of a successive-halving search, Spearman's rank
  correlation (`analysis.rung_ranks`) between the rung's scores and the grid's final valid loss
  of the same learning rates on the same seed (the grid's replicate): how well the rung's
  ranking predicts the full-horizon ranking. A search is one seed's run, or one replicate of a
  run of all seeds as replicates (`sweep.adaptive.per_replicate`, `--adaptive_seeds`).
  Hyperband draws its own random points, whose full-horizon values the grid does not hold: no
  correlation for it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from benchmarks.adaptive_traces import read_csv
from jaxopt_lab import configs, expdir
from jaxopt_lab.analysis import adaptive, rung_ranks

RANKINGS = ("cooldown", "extrapolated")
RANKED = tuple(f"{d}_{r}" for d in ("successive_halving", "hyperband") for r in RANKINGS)
COOLDOWN_FRACTION = 0.2
FIT_EVALS = 4  # rank_by extrapolated: evaluations a ranking stage fits
TASKS = ("lm", "lm64", "digits")
LM64_WIDTH = 64  # task 'lm64': the study's LM at half its width (lm_tiny: 128)
# How successive halving / Hyperband run the seeds: one sweep with the seeds as replicates, each
# its own search (`sweep.adaptive.per_replicate`, as the grid's replicates: one compile), or a
# sweep per seed.
ADAPTIVE_SEEDS = ("replicates", "separate")
REPLICATED = ("successive_halving", "hyperband")  # the families `ADAPTIVE_SEEDS` applies to
TOLERANCE = 0.01  # the targets: within 1% of the grid's best loss ...
COMPUTE_SHARE = 1 / 3  # ... with at most a third of its compute (successive halving)


def split(design: str) -> tuple[str, str]:
  """('successive_halving', 'cooldown') for 'successive_halving_cooldown'; (design, 'last')
  for a design without a ranking suffix."""
  for r in RANKINGS:
    if design.endswith("_" + r):
      return design[: -len(r) - 1], r
  return design, "last"


def check_adaptive_seeds(adaptive_seeds: str) -> None:
  """Raises one ValueError line for an `--adaptive_seeds` not in `ADAPTIVE_SEEDS`."""
  if adaptive_seeds not in ADAPTIVE_SEEDS:
    raise ValueError(f"--adaptive_seeds: unknown {adaptive_seeds!r}; choices: "
                     f"{', '.join(ADAPTIVE_SEEDS)}")


def one_run(design: str, adaptive_seeds: str) -> bool:
  """Whether `design` runs all seeds in one sweep, as replicates (the grid always does)."""
  check_adaptive_seeds(adaptive_seeds)
  return design == "grid" or (split(design)[0] in REPLICATED and adaptive_seeds == "replicates")


def workdir(out_dir: str, design: str, seed: int, adaptive_seeds: str) -> str:
  """The experiment directory of `design` at `seed`: `<design>` for a run of all seeds as
  replicates, else `<design>-seed<seed>`."""
  name = design if one_run(design, adaptive_seeds) else f"{design}-seed{seed}"
  return os.path.join(out_dir, name)


def digits_config(lm: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The small digits MLP with the LM study's sweep and run-loop settings (`lm`)."""
  config = configs.base_config("digits")
  config.model.hidden = (64, 64)
  config.optimizer.name = "adam"
  config.data.batch_size = 32
  # Warmup-stable-decay: the schedule a cooldown rung imitates (the LM's is cosine).
  config.optimizer.update(dict(schedule="wsd", warmup=0.05, decay_fraction=0.2, end_factor=0.0))
  config.train.update(lm.train.to_dict())
  config.train.microbatch_size = 0  # the whole batch at once (the LM's splits it)
  config.sweep = ml_collections.ConfigDict(lm.sweep.to_dict())  # the factors: a new field
  return config


def set_ranking(config: ml_collections.ConfigDict, rank_by: str) -> None:
  """Sets `config` (an adaptive design's) to rank its rungs by `rank_by`."""
  a = config.sweep.adaptive
  a.rank_by, a.cooldown_fraction = rank_by, COOLDOWN_FRACTION
  if rank_by == "extrapolated":  # 4 evaluations a ranking stage, in chunks of steps / 36
    config.train.steps_per_call = max(1, int(config.train.steps) // 36)
    a.fit_evals = FIT_EVALS


def grid_finals(grid_dir: str) -> dict[tuple[int, float], float]:
  """(replicate, learning rate) -> the grid's final valid loss (inf where it diverged)."""
  key = expdir.metric_column("final", "valid", "loss")
  out = {}
  for r in read_csv(os.path.join(grid_dir, expdir.SUMMARY_FILE)):
    text = r.get(key, "")
    loss = float(text) if r["status"] == "ok" and text else math.inf
    out[(int(r["replicate"]), float(r[expdir.HPARAM_PREFIX + "learning_rate"]))] = loss
  return out


def rung_correlations(workdir: str, seed: int, finals: dict[tuple[int, float], float],
                      replicate: int | None = None) -> list[tuple[int, int, float]]:
  """(rung end, points, Spearman rho) for each ranking rung of a successive-halving search in
  `workdir` at design seed `seed`, against the grid's final losses of the same learning rates
  (`analysis.rung_ranks` with every point's full-horizon value known).

  Args:
    workdir: the run (one seed's, or all seeds' as replicates).
    seed: the seed (the grid's replicate) whose finals pair with the search.
    finals: `grid_finals`.
    replicate: the run's replicate that is the search (None: the whole run, one seed); the
      other replicates' rows are left out of the correlation.
  """
  stages = adaptive.read_stages(workdir)
  if stages is None:
    return []
  mine = None
  if replicate is not None:
    mine = {int(r["point"]) for r in read_csv(os.path.join(workdir, expdir.DESIGN_FILE))
            if int(r["replicate"]) == replicate}
  lr = stages.hparams["learning_rate"]
  known = {int(p): finals.get((seed, float(v)), math.nan)
           for p, v in zip(stages.point, lr, strict=True) if mine is None or int(p) in mine}
  return [(r.end, r.known, r.rho) for r in rung_ranks.rung_ranks(stages, known)]


def correlation_rows(out_dir: str, designs: list[str], seeds: int,
                     adaptive_seeds: str = "replicates") -> list[list[str]]:
  """The table of rung-vs-final rank correlations: one row per successive-halving design and
  rung, the rho of each seed's search and their mean (`adaptive_seeds`: where the searches are,
  `workdir`)."""
  grid = os.path.join(out_dir, "grid")
  if not os.path.exists(os.path.join(grid, expdir.SUMMARY_FILE)):
    return []
  finals = grid_finals(grid)
  rows = []
  for design in designs:
    if split(design)[0] != "successive_halving":
      continue
    by_rung: dict[tuple[int, int], list[float]] = {}
    for seed in range(seeds):
      one = one_run(design, adaptive_seeds)
      for end, n, rho in rung_correlations(workdir(out_dir, design, seed, adaptive_seeds), seed,
                                           finals, seed if one else None):
        by_rung.setdefault((end, n), []).append(rho)
    for (end, n), rhos in sorted(by_rung.items()):
      rows.append([split(design)[1], str(end), str(n), " ".join(f"{r:+.2f}" for r in rhos),
                   f"{np.nanmean(rhos):+.2f}" if np.isfinite(rhos).any() else "-"])
  return rows


CORRELATION_COLUMNS = ["rank_by", "rung (step)", "points", "Spearman rho per seed", "mean"]


# The targets of issue 23: (share of the grid's compute, of its wall time) per design family.
TARGETS = {"successive_halving": (COMPUTE_SHARE, 0.5), "hyperband": (0.6, None)}


def verdicts(study: Any, grid: dict[int, Any], designs: Sequence[str]) -> list[str]:
  """One line per halving / Hyperband design: the issue's target and whether each seed met it;
  then the caveat that every adaptive verdict is a selection scored on its own seeds."""
  lines = []
  for design in designs:
    family, rank_by = split(design)
    traces = [t for t in study.of(design) if t.seed in grid]
    if family not in TARGETS or not traces:
      continue
    share, wall_share = TARGETS[family]
    met = []
    for t in traces:
      g = grid[t.seed]
      ok = t.best_loss <= (1 + TOLERANCE) * g.best_loss and t.compute <= share * g.compute
      wall_ok = wall_share is None or not math.isfinite(t.wall_seconds) or (
          t.wall_seconds <= wall_share * g.wall_seconds)
      met.append(ok and wall_ok)
    walls = (np.mean([t.wall_seconds for t in traces]),
             np.mean([grid[t.seed].wall_seconds for t in traces]))
    wall_text = (f", wall <= {wall_share:g} x the grid's a seed ({walls[0]:.0f}s vs "
                 f"{walls[1]:.0f}s)" if wall_share else "")
    lines.append(f"{design} (rank_by {rank_by}): within 1% of the grid's best at <= {share:.2g} "
                 f"of its compute{wall_text}: met on {sum(met)} of {len(met)} seeds.")
  if lines:
    lines.append("Selection on the test seeds: each adaptive design chose its incumbent on the "
                 "same seed (data order, initialisation) it is scored on here, as the grid's "
                 "best is chosen on its replicate: a 'within 1%' compares two selections, and "
                 "a claim that one setting beats another needs fresh seeds.")
  return lines
