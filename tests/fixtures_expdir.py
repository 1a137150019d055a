"""Synthetic experiment directories in the sweep driver's format, from a known ground truth.

The final validation loss of a point is

    base[opt] + CURVATURE * (log10(lr) - log10_best_lr[opt])**2 + wd_effect * weight_decay
      + shared[replicate] + noise

where `shared` is the replicate's common-random-number offset (the same for every configuration
and optimizer) and `noise` is small and independent; the test loss is the validation loss plus
a fixed offset plus its own small noise. Points listed in `diverge` diverge at DIVERGED_STEP:
status "diverged" and frozen (finite, bad) final metrics. The loss at initialisation is
INIT_LOSS (logged at step 0 of every point's validation curve).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from jaxopt_lab import files

INIT_LOSS = math.log(10.0)
CURVATURE = 0.3
DIVERGED_STEP = 30
FROZEN_LOSS = 4.0  # the frozen metrics of a diverged point: worse than INIT_LOSS on purpose
TEST_OFFSET = 0.02
BASE = {"adam": 0.30, "sgd": 0.45, "rmsprop": 0.40}
LOG10_BEST_LR = {"adam": -2.5, "sgd": -1.5, "rmsprop": -2.0}
METRIC_MODES = {"loss": "min", "accuracy": "max"}


@dataclasses.dataclass
class Truth:
  """What the synthetic experiment was built from."""

  workdir: str
  optimizers: tuple[str, ...]
  replicates: int
  points: list[dict]  # one dict per point: design values, status, final metrics


def _accuracy(loss: float) -> float:
  return float(np.clip(1.0 - loss / 3.0, 0.0, 1.0))


def write_expdir(
    workdir: str | os.PathLike,
    *,
    optimizers: tuple[str, ...] = ("adam", "sgd"),
    lrs: tuple[float, ...] = tuple(np.logspace(-4, -1, 7)),
    replicates: int = 3,
    weight_decays: tuple[float, ...] | None = None,
    wd_effect: float = 0.0,
    design: str = "grid",
    num_configs: int = 20,
    configs: list[dict[str, float]] | None = None,
    effects: dict[str, float] | None = None,
    diverge: tuple[tuple[str, float], ...] = (("sgd", 1e-1),),
    noise: float = 0.01,
    steps: int = 100,
    eval_every: int = 50,
    run_status: str = "complete",
    running_points: tuple[int, ...] = (),
    missing_points: tuple[int, ...] = (),
    peak_flops: float | None = None,
    seed: int = 0,
) -> Truth:
  """Writes config.json, design.csv, summary.csv, metrics.jsonl and run.json into `workdir`.

  `design="grid"` crosses `lrs` (and `weight_decays`) per optimizer; `design="random"` draws
  `num_configs` log-uniform learning rates in [min(lrs), max(lrs)] and uniform b1 in [0.8, 0.99]
  (b1 has no effect) per optimizer; any other `design` name takes the value settings from
  `configs` (each with a learning_rate), and `effects` adds effect * value to the loss per factor.
  `running_points` get summary rows with status "running"; `missing_points` get no summary row.
  """
  workdir = os.fspath(workdir)
  rng = np.random.default_rng(seed)
  shared = rng.normal(0.0, 0.05, size=replicates)
  factors = ["optimizer"]
  if design == "grid":
    factors.append("learning_rate")
    if weight_decays is not None:
      factors.append("weight_decay")
    settings = [{"learning_rate": float(lr)} | ({} if weight_decays is None else
                                                 {"weight_decay": float(wd)})
                for lr in lrs for wd in (weight_decays or [None])]
    per_opt = {o: settings for o in optimizers}
  elif design == "random":
    factors += ["learning_rate", "b1"]
    lo, hi = np.log10(min(lrs)), np.log10(max(lrs))
    per_opt = {o: [{"learning_rate": float(10 ** rng.uniform(lo, hi)),
                    "b1": float(rng.uniform(0.8, 0.99))} for _ in range(num_configs)]
               for o in optimizers}
  elif configs:
    factors += list(configs[0])
    per_opt = {o: configs for o in optimizers}
  else:
    raise ValueError(f"design {design!r} needs `configs`")

  diverge_set = {(o, float(lr)) for o, lr in diverge}
  points = []
  for opt in optimizers:
    for cfg in per_opt[opt]:
      for rep in range(replicates):
        lr = cfg["learning_rate"]
        wd = cfg.get("weight_decay", 0.0)
        valid = (BASE[opt] + CURVATURE * (math.log10(lr) - LOG10_BEST_LR[opt]) ** 2
                 + wd_effect * wd + shared[rep] + rng.normal(0.0, noise)
                 + sum(e * cfg[k] for k, e in (effects or {}).items()))
        test = valid + TEST_OFFSET + rng.normal(0.0, noise / 2)
        diverged = any(o == opt and math.isclose(lr, d) for o, d in diverge_set)
        if diverged:
          valid = test = FROZEN_LOSS
        points.append(dict(
            point=len(points), group=f"optimizer={opt}", replicate=rep, seed=1000 + rep,
            optimizer=opt, **cfg, valid=valid, test=test, diverged=diverged))

  files.atomic_write_json(os.path.join(workdir, "config.json"), {
      "task": "synthetic", "train": {"steps": steps, "eval_every": eval_every},
      "optimizer": {"name": "adam", "learning_rate": 1e-3}, "model": {}, "data": {},
      "sweep": {"design": design, "replicates": replicates, "seed": seed, "metric": "loss",
                "factors": {f: None for f in factors}},
  })
  design_cols = ["point", "group", "replicate", "seed"] + factors
  files.atomic_write_csv(os.path.join(workdir, "design.csv"),
                         [{c: p[c] for c in design_cols} for p in points], design_cols)

  hp_cols = ["hp_learning_rate", "hp_b1", "hp_weight_decay"]
  metric_cols = [f"{k}_{s}_{m}" for s in ("valid", "test") for m in ("loss", "accuracy")
                 for k in ("final", "best")]
  summary_cols = (design_cols + hp_cols
                  + ["status", "diverged_step", "steps", "final_train_loss"] + metric_cols)
  summary, metrics = [], []
  for p in points:
    n = p["point"]
    for step in range(0, steps + 1, eval_every):
      if p["diverged"] and step > DIVERGED_STEP:
        metrics.append({"point": n, "step": step, "split": "valid", "loss": math.nan,
                        "accuracy": math.nan})
        continue
      frac = (1.0 - step / steps) ** 2
      loss = p["valid"] + (INIT_LOSS - p["valid"]) * frac
      if step > 0:
        metrics.append({"point": n, "step": step, "split": "train", "loss": loss - 0.01,
                        "grad_norm": 1.0})
      metrics.append({"point": n, "step": step, "split": "valid", "loss": loss,
                      "accuracy": _accuracy(loss)})
    metrics.append({"point": n, "step": steps, "split": "test", "loss": p["test"],
                    "accuracy": _accuracy(p["test"])})
    if n in missing_points:
      continue
    status = "running" if n in running_points else ("diverged" if p["diverged"] else "ok")
    row = {c: p[c] for c in design_cols}
    row.update(hp_learning_rate=p["learning_rate"], hp_b1=p.get("b1", 0.9),
               hp_weight_decay=p.get("weight_decay", 0.0), status=status,
               diverged_step=DIVERGED_STEP if p["diverged"] else "",
               steps=DIVERGED_STEP if p["diverged"] else (steps // 2 if status == "running"
                                                          else steps),
               final_train_loss=p["valid"] - 0.01)
    for split in ("valid", "test"):
      for k in ("final", "best"):
        row[f"{k}_{split}_loss"] = p[split]
        row[f"{k}_{split}_accuracy"] = _accuracy(p[split])
    summary.append(row)
  files.atomic_write_csv(os.path.join(workdir, "summary.csv"), summary, summary_cols)
  files.atomic_write_jsonl(os.path.join(workdir, "metrics.jsonl"), metrics)

  run = {"status": run_status, "task": "synthetic", "total_steps": steps, "points": len(points),
         "devices": ["cpu:0"], "wall_seconds": 12.5, "metric_modes": METRIC_MODES,
         "groups": [{"group": f"optimizer={o}", "points": len(per_opt[o]) * replicates,
                     "compile_seconds": 1.5, "train_seconds": 4.0, "steps": steps,
                     "points_steps_per_second": len(per_opt[o]) * replicates * steps / 4.0,
                     "tokens_per_step": 256, "flops_per_step": 1.0e6} for o in optimizers]}
  if peak_flops is not None:
    run["peak_flops"] = peak_flops
  files.atomic_write_json(os.path.join(workdir, "run.json"), run)
  return Truth(workdir=workdir, optimizers=tuple(optimizers), replicates=replicates,
               points=points)
