"""The experiment driver: runs (or resumes) a sweep, group after group, into its directory.

`run_sweep` checks everything it can before the directory is written, builds the design and its
structural groups (`grouping.build_groups`), and trains each group's points in one compiled
program (`programs.GroupPrograms`) through the run loop (`runloop.run`): a fixed design from
step 0 to `train.steps` (`jobs.train_group`), an adaptive one in stages (`adaptive.runner`).
Rows, statuses and timings go to the experiment store (`store.Store`); each group's population
is checkpointed, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxopt_lab import defaults, hardware, preflight, runloop, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design, grouping, jobs, programs, slices, store
from jaxopt_lab.sweep.adaptive import registry as designs
from jaxopt_lab.sweep.adaptive import runner


def default_cpu_devices(config: ml_collections.ConfigDict, cores: int | None) -> int:
  """XLA CPU devices for a sweep: one per core, but no more than the largest group needs.

  A device per core runs the points of each core in its own thread (1.4-2x on 2 cores,
  benchmarks/README.md); a device without a point of its own would only pad, so a sweep whose
  groups are smaller than the cores keeps the rest of the cores for XLA's threads. With
  `sweep.data_parallel = d` each point takes d devices, and the count is a multiple of d. Call
  before JAX's backend starts (`jax_num_cpu_devices`).
  """
  dp = max(1, int(config.sweep.data_parallel))
  factory.resolve(config.optimizer.name)  # a plugin's own values become factors of the design
  points = design.make_design(config.sweep, config.train.steps)
  largest = max(len(m) for m in design.groups(points).values())
  return dp * max(1, min((cores or 1) // dp, largest))


def validate_sweep_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `sweep.*` execution field that is out of range."""
  factor = config.sweep.diverge_factor
  if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 0:
    raise ValueError("sweep.diverge_factor: must be a number >= 0 (0: freeze a point only when "
                     f"its loss is NaN or inf), got {factor!r}")


def check_groups(groups: Sequence[grouping.Group], mesh: Mesh) -> None:
  """Raises ValueError for a group the mesh or the slice settings cannot run, or whose task
  lacks `sweep.metric` (every point would score inf: an adaptive design would stop or copy
  nothing without a word, and the summary's best point would be none)."""
  for group in groups:
    cfg = group.config
    metric, modes = cfg.sweep.metric, group.task.metric_modes
    if metric not in modes:
      raise ValueError(f"sweep.metric: {metric!r} is not a metric of task {group.task.name!r}; "
                       f"choices: {', '.join(modes)}")
    slices.slice_width(cfg, 1)
    if cfg.data.batch_size % mesh.shape["data"]:
      raise ValueError(f"sweep.data_parallel: {mesh.shape['data']} must divide the batch size "
                       f"of group {group.name} (data.batch_size={cfg.data.batch_size})")


def _open_store(workdir: str, config: ml_collections.ConfigDict,
                points: Sequence[design.Point]) -> store.Store:
  """The store; on multi-host runs every process learns whether process 0 could open it."""
  main = jax.process_index() == 0
  error = None
  try:
    st = store.Store(workdir, config, points, write=main)
  except ValueError as e:
    error = e
  if jax.process_count() > 1:
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      raise ValueError(f"--workdir: process 0 refused {workdir!r} (its log says why)")
  if error is not None:
    raise error
  return st


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Runs (or resumes) the sweep of `config` in `workdir`; returns the rows of `summary.csv`.

  Everything that can be checked is checked before the directory is written, so a refused
  start leaves it as it was.
  """
  train.validate_train_config(config)
  factory.resolve(config.optimizer.name)  # a plugin's own values become factors of the design
  validate_sweep_config(config)
  adaptive = designs.is_adaptive(config.sweep.design)
  if adaptive:
    designs.check(config)
  points = design.make_design(config.sweep, config.train.steps)
  groups = grouping.build_groups(config, points)
  mesh = programs.make_mesh(int(config.sweep.data_parallel))
  check_groups(groups, mesh)
  preflight.check(groups)  # a user's optimizer or task fails here, before anything is written
  st = _open_store(workdir, config, points)
  try:
    logging.info("Device mesh: %s over %d device(s) %s.", dict(mesh.shape), mesh.devices.size,
                 sorted({d.device_kind for d in mesh.devices.flat}))
    logging.info("Design: %d points in %d group(s) (%s), %d steps each.", len(points),
                 len(groups), ", ".join(f"{g.name}: {len(g.points)}" for g in groups),
                 config.train.steps)
    started = time.perf_counter()
    for i, group in enumerate(groups):
      where = runloop.Position()
      later = sum(len(g.points) * g.config.train.steps for g in groups[i + 1:])
      task = group.task
      progress = runloop.Progress(
          f"group {i + 1}/{len(groups)} {group.name} ", group.config.train.steps,
          len(group.points), tokens_per_step=task.tokens_per_step,
          flops_per_step=task.flops_per_step,
          peak=_mesh_peak(mesh, defaults.compute_dtype(group.config)),
          later=later, started=started)
      try:
        (runner.train_group if adaptive else jobs.train_group)(group, mesh, st, where, progress)
      except KeyboardInterrupt:
        raise where.interrupted(f"of group {group.name}") from None
    st.finish()
    for group in groups:
      best = st.best_point(group.name)
      if best is not None:
        logging.info("Best of %s: %s", group.name, best)
  finally:  # also when interrupted: the next run in this process may lock it
    st.release()
  return st.summary_rows()


def _mesh_peak(mesh: Mesh, dtype: str) -> float | None:
  """The peak FLOP/s of all the mesh's devices together (None where the table has no entry)."""
  peak = hardware.peak_flops(mesh.devices.flat[0], dtype)
  return peak * mesh.devices.size if peak else None
