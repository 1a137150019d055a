"""The single run: one point of a config trained in its workdir, resuming from its checkpoint.

`train(config, workdir)` checks the config, then runs the training core (`train`) through the
run loop (`runloop.run`) with the single run's job: one point, its values compiled as constants
(`train.with_fixed_hparams`), metric rows in `metrics.jsonl`, `summary.json` at the end (and
when the loss diverges), orbax checkpoints, every file atomic and named by `expdir`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxopt_lab import (
  checkpoints,
  defaults,
  expdir,
  files,
  hardware,
  preflight,
  runloop,
  tasks,
  tblog,
  workdirs,
)
from jaxopt_lab import train as core
from jaxopt_lab.optim import factory
from jaxopt_lab.tasks import textmetrics


def validate(config: ml_collections.ConfigDict) -> tuple[tasks.Task, dict[str, np.ndarray]]:
  """Checks every field a single run reads, and traces its optimizer and task abstractly
  (`preflight.check_run`); returns its task and hyperparameters.

  Raises ValueError naming the field, or one line naming the user's file and line. Nothing is
  written, so a refused start leaves the workdir as it was.
  """
  core.validate_train_config(config)
  tblog.validate(config)
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  core.validate_optimizer(config, hparams)
  factory.check_traceable(config.optimizer, config.train.steps)  # values enter traced
  preflight.check_run(config, task, list(hparams))  # a user's optimizer or task: one line
  return task, hparams


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one point of `config` in `workdir`, resuming from its last checkpoint.

  Writes `metrics.jsonl` (training rows every `train.log_every` steps, `valid`/`test` rows at
  step 0, every `train.eval_every` steps and at the end), `summary.json`, and orbax
  checkpoints, all atomically.
  Raises `runloop.TrainingDiverged` (after writing the summary) when the training loss becomes
  non-finite.

  Returns:
    The summary: final and best held-out metrics, steps, hyperparameters, timings.
  """
  task, hparams = validate(config)
  lock = workdirs.prepare(workdir, config)
  where = runloop.Position()
  try:
    return _train(config, workdir, task, hparams, where)
  except KeyboardInterrupt:
    raise where.interrupted(f"of {config.train.steps}") from None
  finally:
    lock.release()


class PointJob:
  """The single run's part of the run loop: one point, rows in `metrics.jsonl`, a non-finite
  loss stops the run (after writing its summary)."""

  def __init__(self, config, workdir, task, hparams, rows, started, metrics_log):
    self.config, self.workdir, self.task, self.rows, self.started = (
        config, workdir, task, rows, started)
    self.metrics_log = metrics_log
    self.hparams = hparams
    self.seed = int(config.seed)
    step = core.scan_steps(core.make_train_step(task, config))
    self.program = runloop.ChunkProgram(
        jax.jit(core.with_fixed_hparams(step, hparams), donate_argnums=0))
    self.eval_step = jax.jit(core.make_eval_step(task))
    self.eval_data = jax.device_put(task.eval_data)

  @property
  def compile_seconds(self) -> float:
    return self.program.compile_seconds

  def batches(self, begin: int, end: int):
    return jax.device_put(self.task.train_batches(self.seed, begin, end - begin))

  def run(self, state, batches, begin, end):
    return self.program(end - begin, state, batches)

  def fetch(self, end: int, metrics: core.Metrics) -> dict[str, np.ndarray]:
    metrics = jax.device_get(metrics)
    losses = metrics["loss"]
    if not np.all(np.isfinite(losses)):
      bad = end - len(losses) + int(np.argmin(np.isfinite(losses))) + 1
      seconds = time.perf_counter() - self.started
      summary = _summary(self.config, self.task, self.rows, self.hparams, bad - 1, "diverged",
                         seconds)
      summary["diverged_step"] = bad
      self.metrics_log.sync(self.rows)
      self.metrics_log.close()
      files.atomic_write_json(os.path.join(self.workdir, expdir.SINGLE_SUMMARY_FILE), summary)
      raise runloop.TrainingDiverged(
          f"training diverged: the loss became non-finite at step {bad} "
          f"(optimizer {self.config.optimizer.name}, learning_rate "
          f"{self.config.optimizer.learning_rate}); "
          "lower the learning rate or add clipping (optimizer.clip_norm)"
      )
    return metrics

  def log(self, step: int, means: dict[str, np.ndarray], state) -> str:
    row = {"step": step, "split": "train", **{k: float(v) for k, v in means.items()}}
    self.rows.append(row)
    return f"loss {row['loss']:.4f}"

  def evaluate(self, step: int, state) -> None:
    values = textmetrics.score_generated(
        self.task, jax.device_get(self.eval_step(state.params, self.eval_data)))
    for split in self.task.eval_data:
      prefix = f"{split}_"
      self.rows.append({"step": step, "split": split,
                        **{k[len(prefix):]: float(v) for k, v in values.items()
                           if k.startswith(prefix)}})

  def write(self, step: int, state, seconds: float) -> None:
    self.metrics_log.sync(self.rows)


def _train(config: ml_collections.ConfigDict, workdir: str, task: tasks.Task,
           hparams: dict[str, np.ndarray], where: runloop.Position) -> dict[str, Any]:
  total = config.train.steps
  started = time.perf_counter()
  state = jax.jit(lambda h, s: core.init_state(task, config, h, s))(
      jax.device_put(hparams), int(config.seed))
  ckpt = checkpoints.Checkpointer(expdir.checkpoints_dir(workdir))
  where.checkpoints = ckpt.directory
  metrics_path = os.path.join(workdir, expdir.METRICS_FILE)
  metrics_log = expdir.MetricsLog(metrics_path, tblog.for_run(config, workdir, hparams))
  rows: list[dict[str, Any]] = []
  start = 0
  if (restored := ckpt.restore_latest(state)) is not None:
    state = restored[1]
    start = int(state.step)
    if os.path.exists(metrics_path):  # rows past the checkpoint are trained again
      rows = metrics_log.truncate(start)
    logging.info("Resumed from the checkpoint at step %d.", start)

  job = PointJob(config, workdir, task, hparams, rows, started, metrics_log)
  progress = runloop.Progress(
      "", total, 1, tokens_per_step=task.tokens_per_step, flops_per_step=task.flops_per_step,
      peak=hardware.peak_flops(jax.devices()[0], defaults.compute_dtype(config)),
      started=started)
  runloop.run(job, state, start, config, ckpt, where, progress)
  ckpt.close()
  metrics_log.close()

  summary = _summary(config, task, rows, hparams, total, "ok", time.perf_counter() - started)
  files.atomic_write_json(os.path.join(workdir, expdir.SINGLE_SUMMARY_FILE), summary)
  return summary


def _summary(config, task, rows, hparams, steps, status, seconds) -> dict[str, Any]:
  summary: dict[str, Any] = {
      "task": task.name,
      "optimizer": config.optimizer.name,
      "seed": int(config.seed),
      "status": status,
      "steps": int(steps),
      "hparams": {k: float(v) for k, v in jax.device_get(hparams).items()},
      "param_count": task.param_count,
      "seconds_this_session": seconds,
  }
  summary.update(expdir.final_and_best(rows, tuple(task.eval_data), task.metric_modes))
  return summary
