"""The experiment driver: runs (or resumes) a sweep, group after group, into its directory.

`run_sweep` checks everything it can before the directory is written, builds the design and its
structural groups (`programs.build_groups`), and trains each group's points in one compiled
program (`programs.GroupPrograms`) through the run loop (`runloop.run`): a fixed design from
step 0 to `train.steps` (`GroupJob`, here), an adaptive one in stages (`staged.train_group`).
Rows, statuses and timings go to the experiment store (`store.Store`); each group's population
is checkpointed, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxopt_lab import checkpoints, files, hardware, runloop, textmetrics, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design, preflight, programs, space, store


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


def check_groups(groups: Sequence[programs.Group], mesh: Mesh) -> None:
  """Raises ValueError for a group the mesh or the slice settings cannot run."""
  for group in groups:
    cfg = group.config
    programs.slice_width(cfg, 1)
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
  adaptive = config.sweep.design in space.ADAPTIVE_DESIGNS
  if adaptive:
    from jaxopt_lab.sweep import staged  # noqa: PLC0415  (it builds on this module)

    staged.validate(config)
  points = design.make_design(config.sweep, config.train.steps)
  groups = programs.build_groups(config, points)
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
          peak=_mesh_peak(mesh, group.config.model.get("dtype", "float32")),
          later=later, started=started)
      try:
        (staged.train_group if adaptive else _train_group)(group, mesh, st, where, progress)
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


def _layout(run: programs.GroupPrograms) -> dict[str, int]:
  return {"point_devices": run.mesh.shape["points"], "data_devices": run.mesh.shape["data"],
          "width": run.width, "padded": run.padded}


def _check_layout(group: programs.Group, recorded: dict[str, int], now: dict[str, int]) -> None:
  """A checkpoint holds the padded population of one device layout: resume only on that one."""
  if recorded != now:
    raise ValueError(
        f"--workdir: the checkpoints of group {group.name} hold {recorded['padded']} points "
        f"({recorded['point_devices']} x {recorded['data_devices']} devices, slices of "
        f"{recorded['width']}); this run lays them out as {now['padded']} points "
        f"({now['point_devices']} x {now['data_devices']} devices, slices of {now['width']}). "
        f"Resume with --cpu_devices={recorded['point_devices'] * recorded['data_devices']} on a "
        f"CPU (the same devices elsewhere) and the same sweep.slice_size, or use a new workdir")


class GroupJob:
  """The sweep's part of the run loop: a group's population, rows in the store, a diverged point
  frozen (the others go on). `seconds` and `points_steps` tally the training of this run."""

  def __init__(self, group_programs: programs.GroupPrograms, st: store.Store):
    self.programs, self.store, self.group = group_programs, st, group_programs.group
    self.ids = [p.point for p in self.group.points]
    self.group_points = len(self.ids)  # the whole group's (an adaptive design's stage: more)
    self.start = 0  # the step the loop starts from (a checkpoint's), for the tally of steps
    self.seconds, self.points_steps = 0.0, 0

  @property
  def compile_seconds(self) -> float:
    return self.programs.compile_seconds

  def batches(self, begin: int, end: int):
    return self.programs.device_batches(begin, end - begin)

  def run(self, pop, batches, begin, end):
    return self.programs.run_chunk(pop, batches)

  def fetch(self, end: int, metrics) -> dict[str, np.ndarray]:
    # metrics are [points, steps, names]; the loop's means sum over a leading step axis.
    values = np.asarray(programs.to_host(metrics))[: self.programs.n]
    return {name: values[:, :, j].T for j, name in enumerate(self.programs.metric_names)}

  def log(self, step: int, means: dict[str, np.ndarray], pop: programs.Population) -> str:
    self.store.add_train_rows(self.ids, step, means)
    alive = int(np.asarray(programs.to_host(pop.alive))[: self.programs.n].sum())
    median = (float(np.nanmedian(means["loss"])) if np.isfinite(means["loss"]).any()
              else math.nan)
    return f"median loss {median:.4f} | {alive}/{self.programs.n} alive"

  def evaluate(self, step: int, pop: programs.Population) -> None:
    values = programs.to_host(self.programs.evaluate(pop.state.params, self.programs.eval_data))
    self.store.add_eval_rows(self.ids, step, textmetrics.score_generated(
        self.group.task, {k: np.asarray(v)[: self.programs.n] for k, v in values.items()}))

  def write(self, step: int, pop: programs.Population, seconds: float) -> None:
    self.record(step, pop, seconds - self.compile_seconds, self.programs.n * (step - self.start))

  def record(self, step: int, pop: programs.Population, train_seconds: float,
             points_steps: int) -> None:
    """Writes the points' status and the group's tally (`train_seconds`, `points_steps` of this
    run) with the new rows."""
    status = programs.to_host((pop.alive, pop.diverged_step))
    self.store.update_points(self.ids, step, *(np.asarray(s)[: self.programs.n] for s in status))
    # Recorded at every write, before the checkpoint: a kill loses no step of the tally.
    self.seconds, self.points_steps = train_seconds, points_steps
    self.store.record_group(self.group.name, self.compile_seconds, train_seconds,
                            step - self.start, step, self.group_points, self.programs.width,
                            self.group.task, points_steps)
    self.store.flush()


def _train_group(group: programs.Group, mesh: Mesh, st: store.Store, where: runloop.Position,
                 progress: runloop.Progress) -> None:
  cfg = group.config
  ckpt_dir = os.path.join(st.workdir, "checkpoints", group.name)
  ckpt = checkpoints.Checkpointer(ckpt_dir)
  where.checkpoints = ckpt.directory
  layout_path = ckpt_dir + ".layout.json"
  recorded = None
  if ckpt.latest_step() is not None and os.path.exists(layout_path):
    with open(layout_path) as f:
      recorded = json.load(f)
  # A resumed group keeps the slice width it started with: the same programs, the same numbers.
  run = programs.GroupPrograms(group, mesh, width=recorded["width"] if recorded else None)
  if recorded:
    _check_layout(group, recorded, _layout(run))
  elif st.write:
    files.atomic_write_json(layout_path, _layout(run))
  job = GroupJob(run, st)
  st.register(group.name, group.task, job.ids, group.hparams)
  pop = run.init_population()
  start = 0
  if (restored := ckpt.restore_latest(pop)) is not None:
    start, pop = restored
    logging.info("Group %s: resumed from the checkpoint at step %d.", group.name, start)
    status = programs.to_host((pop.alive, pop.diverged_step))
    st.update_points(job.ids, start, *(np.asarray(s)[: run.n] for s in status))
  st.truncate(group.name, start if start else -1)  # rows past the checkpoint are trained again
  job.start = start
  runloop.run(job, pop, start, cfg, ckpt, where, progress)
  ckpt.close()
  if start < cfg.train.steps:
    logging.info("Group %s: compiled in %.1fs, trained %d points x %d steps in %.1fs.",
                 group.name, run.compile_seconds, run.n, cfg.train.steps - start,
                 job.seconds)
