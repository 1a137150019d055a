"""The stage runner: trains one group of an adaptive design stage by stage (see `stages`).

The design is the one `config.sweep.design` names in the registry (`registry.resolve`); its
policy decides the stages, this module runs them.

Each stage runs through the same run loop as a fixed design's group (`runloop.run` with the
stage's end as its last step: a log row, an evaluation, the files and a checkpoint there). Between
stages the population is gathered over the point axis on the devices: a survivor's state, or the
state PBT's exploit copies, moves without a round trip through the host and without a change of
a bit. Every stage runs in the group's one program, laid out for the whole group: a stage's
points fill it from the front and the program runs only the slices that hold them (a traced
count, `programs.GroupPrograms.active`), so a design compiles its programs once, however many
population sizes its stages pass through (benchmarks/README.md, "One program for every stage":
a ladder of programs, one per size, spent more wall time compiling than training).

Checkpoints: `checkpoints/<group>/stage-<k>/<step>`. A resumed run replays the policy from the
first stage: a finished stage's checkpoint is restored (its scores come from the rows on disk),
the interrupted one continues from its last checkpoint, so the survivors and the numbers are the
same as without the kill.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxopt_lab import checkpoints, expdir, runloop, train
from jaxopt_lab.sweep import grouping, jobs, programs, store
from jaxopt_lab.sweep.adaptive import ranking, registry, stages


def make_policy(group: grouping.Group, workdir: str) -> stages.Policy:
  """The policy of the group's adaptive design (`sweep.design`), with its checked settings."""
  design = registry.resolve(group.config.sweep.design)
  settings = design.read_settings(group.config.sweep.adaptive)
  return design.policy(group, settings, workdir)


def _padded(points: int, mesh: Mesh) -> int:
  """The group's population on `mesh`: its points rounded up to whole devices (the program's
  slices may pad it further)."""
  devices = mesh.shape["points"]
  return -(-points // devices) * devices


def subgroup(group: grouping.Group, slots: np.ndarray, hparams: dict[str, np.ndarray]
             ) -> grouping.Group:
  """The points of `group` at positions `slots` with `hparams` ([S] each), as a group to run.

  The replicate indices keep pointing into the whole group's seeds, so every stage builds the
  same batches (and compiles the same programs) whichever points it runs.
  """
  return dataclasses.replace(group, points=[group.points[i] for i in slots],
                             hparams={k: np.asarray(v, np.float32) for k, v in hparams.items()},
                             seeds=group.seeds[slots], replicate=group.replicate[slots])


def gather(pop: programs.Population, index: np.ndarray, sharding: NamedSharding
           ) -> programs.Population:
  """`pop` at the positions `index` along the point axis (on the devices, bit for bit)."""
  idx = programs.to_global(np.asarray(index, np.int32), sharding)
  return jax.jit(lambda p, i: jax.tree.map(lambda x: x[i], p), out_shardings=sharding)(pop, idx)


class _StageJob(jobs.GroupJob):
  """A stage's part of the run loop: the group job, with the group's tally over its stages."""

  def __init__(self, run: programs.GroupPrograms, st: store.Store, group_points: int,
               before: tuple[float, int]):
    super().__init__(run, st)
    self.group_points = group_points
    self.seconds_before, self.points_steps_before = before
    self.compiled_before = run.compile_seconds  # compiles of earlier stages

  def write(self, step, pop, seconds):
    # `seconds` counts from this stage's first chunk: leave out the compiles since then.
    stage_seconds = seconds - (self.compile_seconds - self.compiled_before)
    self.record(step, pop, self.seconds_before + stage_seconds,
                self.points_steps_before + self.programs.n * (step - self.start))


def _scores(st: store.Store, ids: list[int], step: int, alive: np.ndarray) -> np.ndarray:
  """Each point's `sweep.metric` on the valid split at `step`, signed lower-is-better; inf when
  it diverged or has no finite value."""
  metric = st.config.sweep.metric
  wanted = set(ids)
  found = {r["point"]: r.get(metric, math.nan) for r in st.rows
           if r["step"] == step and r["split"] == "valid" and r["point"] in wanted}
  return ranking.signed(st, np.array([float(found.get(i, math.nan)) for i in ids]), alive)


def _rank(stage: stages.Stage, scores: np.ndarray, run: programs.GroupPrograms,
          sub: grouping.Group, pop: programs.Population, st: store.Store, ids: list[int]
          ) -> tuple[np.ndarray, ranking.Fork | None]:
  """The scores the stage's rung ranks by (`stage.rank_by`), recorded in stages.csv, and the
  cooldown fork that made them (None for the other rankings)."""
  fork, how = None, [stage.rank_by] * len(ids)
  if stage.rank_by == "cooldown":
    fork = ranking.cooldown_scores(run, sub, pop, stage, st)
    st.record_fork(sub.name, stage.index, stage.end, stage.end + stage.fork_steps, ids,
                   fork.values)
    scores = fork.scores
  elif stage.rank_by == "extrapolated":
    scores, how = ranking.extrapolate(st, ids, stage.end, stage.horizon or
                                      int(sub.config.train.steps), scores)
  if stage.end < stage.horizon:  # a rung that ranks (a bracket's last rung ranks nothing)
    st.record_ranking(sub.name, stage.index, ids, how, scores)
  return scores, fork


def train_group(group: grouping.Group, mesh: Mesh, st: store.Store, where: runloop.Position,
                progress: runloop.Progress) -> None:
  """Trains (or resumes) `group` stage by stage as its design's policy decides."""
  cfg = group.config
  recorded = jobs.read_layout(st, group)
  policy = make_policy(group, st.workdir)
  ids = np.array([p.point for p in group.points])
  st.register(group.name, group.task, ids.tolist(), group.hparams)
  current = {k: np.array(v, np.float32) for k, v in group.hparams.items()}  # per position
  if registry.resolve(cfg.sweep.design).read_settings(cfg.sweep.adaptive).get(
      "rank_by") == "cooldown":  # the programs take each point's fork (off while training)
    current[train.COOLDOWN_KEYS[0]] = np.full(len(ids), train.COOLDOWN_OFF, np.float32)
    current[train.COOLDOWN_KEYS[1]] = np.ones(len(ids), np.float32)
  values = [k for k in current if k not in train.COOLDOWN_KEYS]  # the points' own
  stage, previous, pop = policy.first(), None, None
  seconds, points_steps = 0.0, 0
  while stage is not None:
    slots = np.asarray(stage.slots)
    if stage.hparams is not None:
      for k, v in stage.hparams.items():
        current[k][slots] = v
      if stage.source is None:  # fresh points with proposed values: they enter design.csv
        st.set_values(ids[slots].tolist(), {k: current[k][slots] for k in group.points[0].values})
    sub = subgroup(group, slots, {k: v[slots] for k, v in current.items()})
    if stage.index == 0:  # the group's one program: the layout the checkpoints hold
      run = programs.GroupPrograms(sub, mesh, recorded["width"] if recorded else None,
                                   padded=_padded(len(group.points), mesh),
                                   widest=getattr(policy, "narrowest", len(slots)))
      logging.info("Group %s: one program of %d points (slices of %d) for every stage.",
                   group.name, run.padded, run.width)
      jobs.record_layout(st, group, recorded, run)
    else:
      run.place(sub)
    if stage.source is None:
      begin, pop = 0, run.init_population()
    else:
      begin = previous.end
      index = np.concatenate([stage.source, np.repeat(stage.source[-1:],
                                                      run.padded - len(slots))])
      pop = gather(pop, index, run.sharding)
    sources = (np.full(len(slots), -1) if stage.source is None
               else ids[np.asarray(previous.slots)[stage.source]])
    st.record_stage(group.name, stage.index, begin, stage.end, ids[slots].tolist(),
                    sources.tolist(), stage.note, {k: current[k][slots] for k in values})
    ckpt = checkpoints.Checkpointer(expdir.stage_checkpoints(st.workdir, group.name, stage.index))
    where.checkpoints = ckpt.directory
    start = begin
    if (restored := ckpt.restore_latest(pop)) is not None:
      start, pop = restored
    job = _StageJob(run, st, len(group.points), (seconds, points_steps))
    job.start = start
    if start < stage.end:  # (a finished stage's points may have rows of later stages: kept)
      st.truncate(group.name, start if start else -1, ids[slots].tolist())
      logging.info("Group %s, stage %d: %s%s.", group.name, stage.index, stage.note,
                   f" (resumed at step {start})" if start > begin else "")
      progress.points = len(slots)
      loop_cfg = copy.deepcopy(cfg)
      loop_cfg.train.steps = stage.end
      loop_cfg.train.eval_every = stage.eval_every or cfg.train.eval_every
      pop = runloop.run(job, pop, start, loop_cfg, ckpt, where, progress)
      seconds, points_steps = job.seconds, job.points_steps
    ckpt.close()
    alive = np.asarray(programs.to_host(pop.alive))[: len(slots)]
    diverged = np.asarray(programs.to_host(pop.diverged_step))[: len(slots)]
    st.update_points(ids[slots].tolist(), stage.end, alive, diverged)
    scores = _scores(st, ids[slots].tolist(), stage.end, alive)
    scores, spent = _rank(stage, scores, run, sub, pop, st, ids[slots].tolist())
    if spent is not None:  # a cooldown fork: its points x steps and seconds count as training
      points_steps, seconds = points_steps + spent.points_steps, seconds + spent.seconds
      st.record_group(group.name, run.compile_seconds, seconds, stage.fork_steps,
                      stage.end, len(group.points), run.width, group.task, points_steps)
      st.flush()
    previous, stage = stage, policy.next(stage, scores)
    going_on = set() if stage is None or stage.source is None else set(
        np.asarray(stage.slots).tolist())
    stopped = [int(ids[i]) for j, i in enumerate(slots) if alive[j] and i not in going_on]
    if previous.end < cfg.train.steps and stopped:
      st.stop_points(stopped, previous.end)
  st.flush()
