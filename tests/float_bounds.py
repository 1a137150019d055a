"""Derived float tolerances for comparisons of the training core's arrangements.

Two arrangements of the same math (a scan of steps and a loop, traced and constant
hyperparameters, a batch and its microbatches, a vmapped point and a single run, our chunk's
norms and Optax's) each lie within the bound `B` of `rounding.program_bound` of the exact
result, so within `2 B` of each other. `B` is measured on two float64 runs of the training
program (from the float32 run's start and from a start nudged by float32's epsilon) and scales
with the epsilon of the run it bounds: float64 comparisons get `2 B * EPS64 / EPS32`, 2^29
times tighter than float32's `2 B`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxopt_lab import tasks, train
from jaxopt_lab.optim import factory, rounding

# B is linear in the epsilon of the run it bounds (`rounding.program_bound`).
TO_FLOAT64 = rounding.EPS64 / rounding.EPS32


def float64_config(config: Any) -> Any:
  """`config` computing in float64 (parameters too): needs `jax.enable_x64` while used."""
  out = config.copy_and_resolve_references()
  out.model.dtype = "float64"
  return out


def step_ulps(config: Any, param_count: int) -> float:
  """`U` of one training step of `config` (`rounding.ulps_per_step`), from its reductions.

  Each output element comes through the forward pass's dot products (both dimensions of each
  dense layer, counted once for the forward and again for the backward's transposed products),
  the mean over the batch's examples or tokens (the loss; each weight's gradient sums over them
  too) and the global norm over all `param_count` parameters (clipping, the log-step norms).
  """
  if config.task == "lm":
    m = config.model
    w, tokens = m.width, config.data.batch_size * m.context
    block = [w, w, w // m.heads, m.context, m.context, w, w, w, w, 4 * w]  # norms, attention, mlp
    forward = block * m.depth + [w, w, m.vocab]  # final norm, readout, log-softmax
  else:
    widths = [int(config.data.get("features", 0)) or 64, *config.model.get("hidden", ())]
    forward = widths + [1]
    tokens = config.data.batch_size
  return rounding.ulps_per_step(*forward, *forward, tokens, tokens, param_count)


def assert_within(got: Any, want: Any, tolerance: Any, name: str = "") -> float:
  """`|got - want| <= tolerance` leaf by leaf (NaN where both are NaN: the metrics of a chunk's
  non-log steps); returns the largest ratio of the gap to its tolerance (printed, for the notes).
  """
  worst = 0.0
  leaves = zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(tolerance),
               strict=True)
  for i, (a, b, tol) in enumerate(leaves):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    gap = np.where(both_nan, 0.0, np.abs(a - b))
    assert np.all(np.isfinite(gap)), f"{name} leaf {i}: NaN in one only"
    assert np.all(gap <= tol), f"{name} leaf {i}: max gap {gap.max():.3g} > tolerance {tol:.3g}"
    worst = max(worst, float(gap.max(initial=0.0)) / tol if tol > 0 else 0.0)
  print(f"ratio {name}: {worst:.3g}")
  return worst


def tolerance(bound: Any, float64: bool = False) -> Any:
  """`2 B` per leaf: for two float32 runs, or (`float64`) two float64 runs."""
  return jax.tree.map(lambda b: 2.0 * b * (TO_FLOAT64 if float64 else 1.0), bound)


def run_bound(config: Any) -> dict[str, float]:
  """`B` of each metric a run of `config` logs (`final_train_loss`, the log rows' `loss`,
  `accuracy` and norms, `final_/best_<split>_<metric>`): its `train.steps` steps in chunks of
  `train.log_every` (the log metrics at each chunk's last step) and the evaluations every
  `train.eval_every` steps, as one program of the float32 run's start (`rounding.program_bound`).
  A metric's bound is the largest over the run's evaluations or log steps."""
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  state = train.init_state(task, config, hparams, config.seed)
  steps, log_every, eval_every = (config.train[k] for k in ("steps", "log_every", "eval_every"))
  batches = jax.device_put(task.train_batches(int(config.seed), 0, steps))
  eval_data = jax.device_put(task.eval_data)
  with jax.enable_x64(True):
    config64 = float64_config(config)
    task64 = tasks.build(config64)
    scan = train.scan_steps(train.make_train_step(task64, config64))
    evaluate = train.make_eval_step(task64)

    def program(s):
      rows = {"train": [], "eval": [evaluate(s.params, eval_data)]}
      for begin in range(0, steps, log_every):
        chunk = jax.tree.map(lambda x, b=begin: x[b:b + log_every], batches)
        s, metrics = scan(s, chunk, hparams)
        rows["train"].append(metrics)
        if (begin + log_every) % eval_every == 0:
          rows["eval"].append(evaluate(s.params, eval_data))
      return rows

    bound, _ = rounding.program_bound(program, state, steps,
                                      ulps_per_step=step_ulps(config, task.param_count))
  out = {}
  for metrics in bound["train"]:
    for name, b in metrics.items():
      out[name] = max(out.get(name, 0.0), b)
  out["final_train_loss"] = out["loss"]
  for metrics in bound["eval"]:
    for name, b in metrics.items():
      for key in (f"final_{name}", f"best_{name}"):
        out[key] = max(out.get(key, 0.0), b)
  return out
