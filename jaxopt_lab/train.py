"""The training core of ONE design point, and the single-run loop.

`train_step(state, batch, hparams)` is a pure function of one point: the sweep driver `jax.vmap`s
this very function over points, so a point of a sweep and a single run with the same values are
the same computation. `hparams` is a dict of float32 scalars holding the value factors of the point
(peak learning rate, betas, eps, momentum, decay, weight decay, warmup fraction, clip norm); the
optimizer and its schedule are built inside the step from it and from the static config (the
optimizer's name and flags), so new values never recompile and nothing branches on a value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxopt_lab import checkpoints, expdir, files, hardware, tasks, tblog, textmetrics, workdirs
from jaxopt_lab.optim import factory

Params = Any
Batch = Mapping[str, Any]
HParams = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(NamedTuple):
  """The whole state of one training run: everything a checkpoint must hold.

  Attributes:
    step: int32 scalar, the number of steps taken; with the data seed it fixes the next batch.
    params: float32 parameter pytree.
    opt_state: the optimizer's state.
    key: raw uint32 PRNG key of the point's stochastic layers. It never changes: a layer that
      needs randomness at step `s` draws from `jax.random.fold_in(key, s)`, so the key of a step
      is a function of (seed, step), a resumed run draws the same numbers, and a task with no
      stochastic layer pays nothing (splitting a key every step was a threefry loop that XLA
      cannot drop: about a fifth of the classic sweep's step, benchmarks/README.md).
  """

  step: jax.Array
  params: Params
  opt_state: optax.OptState
  key: jax.Array


class TrainingDiverged(RuntimeError):
  """Raised by the single-run loop when the training loss becomes non-finite."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message says where it stopped and that the same command resumes.

  Every file was written atomically and checkpoints are synchronous, so the workdir is
  consistent: a rerun resumes from the last checkpoint as after a kill.
  """


def point_keys(seed: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Splits a point's seed into its parameter-init key and its stochastic-layer key.

  The data order comes from the same integer seed on the numpy side (see `tasks`). `seed` may be
  traced, so that the sweep can `vmap` initialisation over seeds.
  """
  key = jax.random.PRNGKey(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def make_optimizer(
    config: ml_collections.ConfigDict, hparams: HParams
) -> optax.GradientTransformation:
  """The optimizer (with schedule and clipping) of `config.optimizer` at the values `hparams`."""
  return factory.build(config.optimizer, hparams, config.train.steps)


def init_state(
    task: tasks.Task,
    config: ml_collections.ConfigDict,
    hparams: HParams,
    seed: jax.typing.ArrayLike,
) -> TrainState:
  """The initial state of one point; pure, so `jax.vmap` over (hparams, seed) initialises many."""
  init_key, key = point_keys(seed)
  params = task.init_params(init_key)
  opt_state = make_optimizer(config, hparams).init(params)
  return TrainState(jnp.zeros((), jnp.int32), params, opt_state, key)


def make_train_step(
    task: tasks.Task, config: ml_collections.ConfigDict, data_axis: str | None = None
) -> Callable[[TrainState, Batch, HParams], tuple[TrainState, Metrics]]:
  """Returns the pure `train_step(state, batch, hparams) -> (state, metrics)` of one point.

  The task and the static config enter by closure. Metrics: the training loss and the task's
  extra training metrics, and the global norms of gradients, updates and parameters. With
  `data_axis`, the batch is a shard of the point's batch along that mapped axis (data
  parallelism): loss, metrics and gradients are averaged over it before the update.
  """
  grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Batch, hparams: HParams):
    (loss, aux), grads = grad_fn(state.params, batch)
    if data_axis is not None:
      loss, aux, grads = jax.lax.pmean((loss, aux, grads), data_axis)
    updates, opt_state = make_optimizer(config, hparams).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        **aux,
        "grad_norm": optax.global_norm(grads),
        "update_norm": optax.global_norm(updates),
        "param_norm": optax.global_norm(params),
    }
    return TrainState(state.step + 1, params, opt_state, state.key), metrics

  return train_step


def scan_steps(
    train_step: Callable[[TrainState, Batch, HParams], tuple[TrainState, Metrics]],
) -> Callable[[TrainState, Batch, HParams], tuple[TrainState, Metrics]]:
  """Runs `train_step` over batches stacked on a leading step axis with `lax.scan`.

  Returns the final state and the per-step metrics stacked on that axis.
  """

  def run(state: TrainState, batches: Batch, hparams: HParams):
    return jax.lax.scan(lambda s, b: train_step(s, b, hparams), state, batches)

  return run


def make_eval_step(task: tasks.Task) -> Callable[[Params, Mapping[str, Batch]], Metrics]:
  """Returns `eval_step(params, eval_data) -> {'<split>_<metric>': value}` over held-out splits."""

  def eval_step(params: Params, eval_data: Mapping[str, Batch]) -> Metrics:
    out = {}
    for split, data in eval_data.items():
      for name, value in task.eval_metrics(params, data).items():
        out[f"{split}_{name}"] = value
    return out

  return eval_step


def chunk_ends(start: int, total: int, every: tuple[int, ...]) -> Iterator[int]:
  """Ends of the compiled calls from `start` to `total`: a call stops at each multiple of `every`.

  The boundaries depend on absolute step numbers only, so a resumed run makes the same calls as an
  uninterrupted one.
  """
  step = start
  while step < total:
    step = min([total] + [(step // e + 1) * e for e in every if e > 0])
    yield step


def _check_positive(config: ml_collections.ConfigDict, *names: str) -> None:
  for name in names:
    value = config.train[name]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"train.{name}: must be a positive integer, got {value!r}")


def validate_train_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `train.*` field that is out of range."""
  _check_positive(config, "steps", "steps_per_call", "log_every", "eval_every", "checkpoint_every")
  if config.train.checkpoint_every % config.train.log_every:
    raise ValueError(
        f"train.checkpoint_every: must be a multiple of train.log_every "
        f"({config.train.log_every}), got {config.train.checkpoint_every}"
    )


def validate_optimizer(config: ml_collections.ConfigDict, hparams: Mapping[str, Any]) -> None:
  """Raises ValueError naming the `optimizer.*` field the optimizer cannot be built with.

  Builds the optimizer at concrete values, so the structure (schedule, end_factor,
  decay_fraction, decay_mask) is checked as training would use it; and refuses infinite values,
  which the range checks admit but no training survives (`clip_norm` = inf is "off").
  """
  for name, value in hparams.items():
    if name != "clip_norm" and not np.all(np.isfinite(value)):
      raise ValueError(f"optimizer.{name}: must be a finite number >= 0, got {float(value)}")
  make_optimizer(config, hparams)


def validate(config: ml_collections.ConfigDict) -> tuple[tasks.Task, dict[str, np.ndarray]]:
  """Checks every field a single run reads; returns its task and hyperparameters.

  Raises ValueError naming the field. Nothing is written, so a refused start leaves the workdir
  as it was.
  """
  validate_train_config(config)
  tblog.validate(config)
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  validate_optimizer(config, hparams)
  factory.check_traceable(config.optimizer, config.train.steps)  # values enter traced
  return task, hparams


@dataclasses.dataclass
class Position:
  """Where a training loop is, for the line that reports an interrupt."""

  step: int = 0  # the step the state reached
  checkpoints: str = ""  # the loop's checkpoint directory, once it has one

  def interrupted(self, of: str) -> Interrupted:
    """The error to raise on Ctrl-C; `of` completes "at step N ...", e.g. "of 1000"."""
    # From the disk: an interrupt may come while a save finishes (orbax renames a complete one).
    saved = (max((int(d) for d in os.listdir(self.checkpoints) if d.isdigit()), default=0)
             if os.path.isdir(self.checkpoints) else 0)
    where = f"last checkpoint: step {saved}" if saved else "no checkpoint yet"
    return Interrupted(f"interrupted at step {self.step} {of} ({where}); run the same command "
                       "to resume")


@dataclasses.dataclass
class MetricMeans:
  """Float64 sums of per-step metrics since the last log row (per point when metrics are [K, P])."""

  sums: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  count: int = 0

  def add(self, metrics: Mapping[str, np.ndarray]) -> None:
    """Adds metrics stacked on a leading step axis."""
    for name, values in metrics.items():
      self.sums[name] = self.sums.get(name, 0.0) + np.sum(values, axis=0, dtype=np.float64)
    self.count += len(next(iter(metrics.values())))

  def pop(self) -> dict[str, np.ndarray]:
    means = {name: total / self.count for name, total in self.sums.items()}
    self.sums, self.count = {}, 0
    return means


class Progress:
  """One line per log row: a bar, the loss, steps/s, and tokens/s and MFU where they apply."""

  def __init__(self, total: int, tokens_per_step: int | None, flops_per_step: float | None,
               peak: float | None):
    self.total, self.tokens, self.flops, self.peak = total, tokens_per_step, flops_per_step, peak
    self._time, self._step = time.perf_counter(), None

  def update(self, step: int, row: Mapping[str, float]) -> None:
    now = time.perf_counter()
    rate = 0.0 if self._step is None else (step - self._step) / max(now - self._time, 1e-9)
    self._time, self._step = now, step
    filled = int(20 * step / self.total)
    parts = [f"[{'#' * filled}{'.' * (20 - filled)}] step {step}/{self.total}",
             f"loss {row['loss']:.4f}", f"{rate:.1f} steps/s"]
    if self.tokens and rate:
      parts.append(f"{rate * self.tokens:,.0f} tok/s")
    if self.flops and rate:
      achieved = rate * self.flops
      parts.append(f"{achieved / 1e9:,.3g} GFLOP/s")
      if self.peak:
        parts.append(f"MFU {100 * achieved / self.peak:.1f}%")
    logging.info(" | ".join(parts))


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one point of `config` in `workdir`, resuming from its last checkpoint.

  Writes `metrics.jsonl` (training rows every `train.log_every` steps, `valid`/`test` rows at
  step 0, every `train.eval_every` steps and at the end), `summary.json`, and orbax
  checkpoints, all atomically.
  Raises `TrainingDiverged` (after writing the summary) when the training loss becomes non-finite.

  Returns:
    The summary: final and best held-out metrics, steps, hyperparameters, timings.
  """
  task, hparams = validate(config)
  lock = workdirs.prepare(workdir, config)
  where = Position()
  try:
    return _train(config, workdir, task, hparams, where)
  except KeyboardInterrupt:
    raise where.interrupted(f"of {config.train.steps}") from None
  finally:
    lock.release()


def _train(config: ml_collections.ConfigDict, workdir: str, task: tasks.Task,
           hparams: dict[str, np.ndarray], where: Position) -> dict[str, Any]:
  total = config.train.steps
  seed = int(config.seed)

  train_step = make_train_step(task, config)
  run_chunk = jax.jit(scan_steps(train_step), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(task))
  eval_data = jax.device_put(task.eval_data)
  hparams = jax.device_put(hparams)

  state = jax.jit(lambda h, s: init_state(task, config, h, s))(hparams, seed)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  where.checkpoints = ckpt.directory
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  metrics_log = expdir.MetricsLog(metrics_path, tblog.for_run(config, workdir, hparams))
  rows: list[dict[str, Any]] = []
  start = 0
  if (restored := ckpt.restore_latest(state)) is not None:
    state = restored[1]
    start = int(state.step)
    if os.path.exists(metrics_path):  # rows past the checkpoint are trained again
      rows = metrics_log.truncate(start)
    logging.info("Resumed from the checkpoint at step %d.", start)
  where.step = start

  device = jax.devices()[0]
  progress = Progress(total, task.tokens_per_step, task.flops_per_step,
                      hardware.peak_flops(device, config.model.get("dtype", "float32")))
  acc = MetricMeans()
  every = (config.train.steps_per_call, config.train.log_every, config.train.eval_every,
           config.train.checkpoint_every)
  started = time.perf_counter()

  def evaluate(step: int) -> None:
    values = textmetrics.score_generated(task, jax.device_get(eval_step(state.params, eval_data)))
    for split in task.eval_data:
      prefix = f"{split}_"
      rows.append({"step": step, "split": split,
                   **{k[len(prefix):]: float(v) for k, v in values.items()
                      if k.startswith(prefix)}})

  def finish_chunk(end: int, metrics: Metrics) -> None:
    metrics = jax.device_get(metrics)
    losses = metrics["loss"]
    if not np.all(np.isfinite(losses)):
      bad = end - len(losses) + int(np.argmin(np.isfinite(losses))) + 1
      seconds = time.perf_counter() - started
      summary = _summary(config, task, rows, hparams, bad - 1, "diverged", seconds)
      summary["diverged_step"] = bad
      metrics_log.sync(rows)
      files.atomic_write_json(os.path.join(workdir, "summary.json"), summary)
      raise TrainingDiverged(
          f"training diverged: the loss became non-finite at step {bad} "
          f"(optimizer {config.optimizer.name}, learning_rate {config.optimizer.learning_rate}); "
          "lower the learning rate or add clipping (optimizer.clip_norm)"
      )
    acc.add(metrics)

  if start == 0:  # the held-out metrics at initialisation: the reference of every curve
    evaluate(0)
  pending = None
  begin = start
  for end in chunk_ends(start, total, every):
    batches = task.train_batches(seed, begin, end - begin)
    state, metrics = run_chunk(state, batches, hparams)
    begin = where.step = end
    if pending is not None:  # fetch the previous call's metrics once this one is dispatched
      finish_chunk(*pending)
    pending = (end, metrics)
    log, ev = end % config.train.log_every == 0 or end == total, end % config.train.eval_every == 0
    if log or ev:
      finish_chunk(*pending)
      pending = None
      if log:
        row = {"step": end, "split": "train", **{k: float(v) for k, v in acc.pop().items()}}
        rows.append(row)
        progress.update(end, row)
      if ev or end == total:
        evaluate(end)
      metrics_log.sync(rows)
      if end % config.train.checkpoint_every == 0 or end == total:
        ckpt.save(end, state)
  ckpt.close()
  metrics_log.close()

  summary = _summary(config, task, rows, hparams, total, "ok", time.perf_counter() - started)
  files.atomic_write_json(os.path.join(workdir, "summary.json"), summary)
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
  summary.update(final_and_best(rows, tuple(task.eval_data), task.metric_modes))
  return summary


def final_and_best(rows: Sequence[Mapping[str, Any]], splits: Sequence[str],
                   modes: Mapping[str, str]) -> dict[str, float]:
  """`final_train_loss`, and `final_<split>_<metric>` / `best_<split>_<metric>` of metric rows.

  Best is the min (or max, as `modes` says) over the finite values of the evaluations after
  training began (step 0, the initialisation, counts only when it is the only evaluation).
  """
  out: dict[str, float] = {}
  train_rows = [r for r in rows if r["split"] == "train"]
  if train_rows:
    out["final_train_loss"] = train_rows[-1]["loss"]
  for split in splits:
    split_rows = [r for r in rows if r["split"] == split]
    for name, mode in modes.items():
      values = [r[name] for r in split_rows if name in r]
      if not values:
        continue
      out[f"final_{split}_{name}"] = values[-1]
      trained = [r[name] for r in split_rows if name in r and r["step"] > 0] or values
      finite = [v for v in trained if math.isfinite(v)]
      out[f"best_{split}_{name}"] = (max if mode == "max" else min)(finite) if finite else math.nan
  return out
