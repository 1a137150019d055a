"""A fixed design's group through the run loop, and the group job an adaptive stage builds on.

`GroupJob` is the sweep's `runloop.Job`: a group's population, rows in the store, a diverged
point frozen. `train_group` trains (or resumes) one group of a fixed design from step 0 to
`train.steps`; `adaptive.runner` trains an adaptive design's group stage by stage with the same
job. `record_layout` writes (or checks) the device layout a group's checkpoints hold.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
from jax.sharding import Mesh

from jaxopt_lab import checkpoints, expdir, files, runloop
from jaxopt_lab.sweep import grouping, programs, store
from jaxopt_lab.tasks import textmetrics


def read_layout(st: store.Store, group: grouping.Group) -> dict[str, int] | None:
  """The layout recorded for `group`'s checkpoints (None if none was)."""
  path = expdir.layout_file(st.workdir, group.name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def layout(run: programs.GroupPrograms) -> dict[str, int]:
  """The device layout of a group's programs, as its checkpoints hold it."""
  return {"point_devices": run.mesh.shape["points"], "data_devices": run.mesh.shape["data"],
          "width": run.width, "padded": run.padded}


def record_layout(st: store.Store, group: grouping.Group, recorded: dict[str, int] | None,
                  run: programs.GroupPrograms) -> None:
  """Writes the layout of `run` (the group's first programs) where none is `recorded`; else
  raises ValueError when this run lays the group out otherwise (a checkpoint holds the padded
  population of one layout: resume only on that one)."""
  now = layout(run)
  if recorded is None:
    if st.write:
      files.atomic_write_json(expdir.layout_file(st.workdir, group.name), now)
    return
  if {k: now[k] for k in recorded} != recorded:
    recorded = {**now, **recorded}
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
    values = programs.to_host(self.programs.evaluate(pop.state.params))
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


def train_group(group: grouping.Group, mesh: Mesh, st: store.Store, where: runloop.Position,
                progress: runloop.Progress) -> None:
  """Trains (or resumes) every point of a fixed design's `group` to `train.steps`."""
  cfg = group.config
  ckpt = checkpoints.Checkpointer(expdir.group_checkpoints(st.workdir, group.name))
  where.checkpoints = ckpt.directory
  # Without a checkpoint nothing holds the recorded layout: this run lays the group out anew.
  recorded = read_layout(st, group) if ckpt.latest_step() is not None else None
  # A resumed group keeps the slice width it started with: the same programs, the same numbers.
  run = programs.GroupPrograms(group, mesh, width=recorded["width"] if recorded else None)
  record_layout(st, group, recorded, run)
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
