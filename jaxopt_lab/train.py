"""The training core of ONE design point, and the single-run loop.

`train_step(state, batch, hparams)` is a pure function of one point: the sweep driver `jax.vmap`s
this very function over points, so a point of a sweep and a single run with the same values are
the same computation. `hparams` is a dict of float32 scalars holding the value factors of the point
(peak learning rate, betas, eps, momentum, decay, weight decay, warmup fraction, clip norm); the
optimizer and its schedule are built inside the step from it and from the static config (the
optimizer's name and flags), so new values never recompile and nothing branches on a value.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxopt_lab import (
  checkpoints,
  expdir,
  files,
  hardware,
  runloop,
  tasks,
  tblog,
  textmetrics,
  workdirs,
)
from jaxopt_lab.optim import factory, multipliers

# The loop's names that callers of the single run meet (its errors, its chunk boundaries).
from jaxopt_lab.runloop import Interrupted, Position, chunk_ends  # noqa: F401

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


def point_keys(seed: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Splits a point's seed into its parameter-init key and its stochastic-layer key.

  The data order comes from the same integer seed on the numpy side (see `tasks`). `seed` may be
  traced, so that the sweep can `vmap` initialisation over seeds.
  """
  key = jax.random.PRNGKey(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def make_optimizer(
    config: ml_collections.ConfigDict, hparams: HParams, lr_multipliers: Params | None = None
) -> optax.GradientTransformation:
  """The optimizer (with schedule and clipping) of `config.optimizer` at the values `hparams`,
  its updates scaled per parameter by the task's `lr_multipliers` (μP; `optim.multipliers`)."""
  return multipliers.with_multipliers(
      factory.build(config.optimizer, hparams, config.train.steps), lr_multipliers)


def init_state(
    task: tasks.Task,
    config: ml_collections.ConfigDict,
    hparams: HParams,
    seed: jax.typing.ArrayLike,
) -> TrainState:
  """The initial state of one point; pure, so `jax.vmap` over (hparams, seed) initialises many."""
  init_key, key = point_keys(seed)
  params = task.init_params(init_key)
  opt_state = make_optimizer(config, hparams, task.lr_multipliers).init(params)
  return TrainState(jnp.zeros((), jnp.int32), params, opt_state, key)


def pack_hparams(hparams: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
  """The values of `names` in `hparams` as one float32 array, stacked on a last axis.

  A sweep group's compiled program takes the points' hyperparameters as this one array rather
  than one argument per value: each argument of a compiled call costs its
  dispatch, a tenth of a small model's step (benchmarks/README.md, "The sweep's host work").
  """
  return np.stack([np.asarray(hparams[n], np.float32) for n in names], axis=-1)


def unpack_hparams(packed: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
  """The mapping `pack_hparams(hparams, names)` packed: `{name: packed[..., i]}`."""
  return {name: packed[..., i] for i, name in enumerate(names)}


def with_fixed_hparams(fn: Callable[..., Any], hparams: Mapping[str, Any]) -> Callable[..., Any]:
  """`fn(state, batch, hparams, ...)` (`train_step`, `scan_steps`'s run) with `hparams` fixed as
  constants of the compiled program: what the single run compiles.

  A run's hyperparameters never change, and as constants (as in a plain loop's
  `optax.adam(1e-3)`) XLA folds away what they switch off (clipping at `clip_norm` 0, a warmup of
  0 steps) and the call has one argument less: the one-step loop 0.87x -> 0.96x (classic) and
  0.89x -> 0.98x (digits) a plain Optax step (benchmarks/README.md, "Fixed hyperparameters").
  A sweep's points keep theirs traced, one compiled program for all of them.
  """
  fixed = {name: np.asarray(value, np.float32) for name, value in hparams.items()}

  def fixed_fn(state, batch, *rest):
    return fn(state, batch, fixed, *rest)

  return fixed_fn


def make_train_step(
    task: tasks.Task, config: ml_collections.ConfigDict, data_axis: str | None = None
) -> Callable[..., tuple[TrainState, Metrics]]:
  """Returns the pure `train_step(state, batch, hparams, log=False) -> (state, metrics)`.

  One point's step; the task and the static config enter by closure. Every step computes the
  training `loss` of the batch and the update, nothing else: what a plain training loop
  computes. The other training metrics are for log rows, which hold the loss's mean over the log
  interval and these at the interval's last step (`runloop.MetricMeans`); computed every step
  they cost a fifth to a third of a small model's step (benchmarks/README.md, issue 11).

  With `log=True` (a Python bool: the structure of the step) the step computes them too: the
  task's extra training metrics of the batch (at the parameters the step started from, as the
  loss) and the global norms of the gradients, updates and new parameters. With `data_axis`, the
  batch is a shard of the point's batch along that mapped axis (data parallelism): loss,
  metrics and gradients are averaged over it before the update. With `train.microbatch_size` =
  m > 0 smaller than the batch (the shard), loss, metrics and gradients are the means over its
  consecutive parts of m examples, computed one part after another (gradient accumulation in a
  `lax.scan`): the same values, up to float rounding, as at once where the task's loss and
  metrics are means over the batch's examples (all built-in tasks' are).
  """
  grad_fn = jax.value_and_grad(lambda params, batch: task.loss_fn(params, batch)[0])
  part_size = int(config.train.get("microbatch_size", 0))

  def loss_and_grads(params: Params, batch: Batch, log: bool):
    """The batch's loss and gradients (and, with `log`, the task's metrics): at once, or as
    the mean over its consecutive parts of `part_size` examples (gradient accumulation)."""
    size = jax.tree.leaves(batch)[0].shape[0]
    if not 0 < part_size < size:
      loss, grads = grad_fn(params, batch)
      # The task's metrics need a forward pass of their own (the gradient's leaves them out).
      return loss, grads, (task.loss_fn(params, batch)[1] if log else {})
    if size % part_size:
      raise ValueError(f"train.microbatch_size: {part_size} does not divide the {size} examples "
                       "of a step's batch" + (" on one data-parallel device" if data_axis else ""))
    micro = size // part_size
    parts = jax.tree.map(lambda x: x.reshape((micro, part_size) + x.shape[1:]), batch)
    # A part's working set is a `micro`-th of the batch's: on a CPU, XLA's temporary buffer
    # stays under glibc's 32 MB mmap threshold and is reused instead of page-faulted in at
    # every call (benchmarks/README.md, "Micro-batches").

    def of_part(part):
      if log:
        (loss, aux), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(params, part)
        return loss, grads, aux
      loss, grads = grad_fn(params, part)
      return loss, grads, {}

    shapes = jax.eval_shape(of_part, jax.tree.map(lambda x: x[0], parts))
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    total, _ = jax.lax.scan(lambda t, part: (jax.tree.map(jnp.add, t, of_part(part)), None),
                            zeros, parts)
    return jax.tree.map(lambda x: x / micro, total)

  def train_step(state: TrainState, batch: Batch, hparams: HParams, log: bool = False):
    loss, grads, aux = loss_and_grads(state.params, batch, log)
    if data_axis is not None:
      loss, grads = jax.lax.pmean((loss, grads), data_axis)
    updates, opt_state = make_optimizer(config, hparams, task.lr_multipliers).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss}
    if log:
      if data_axis is not None:  # of the shard; the norms are of the averaged gradients
        aux = jax.lax.pmean(aux, data_axis)
      metrics.update(aux, grad_norm=optax.global_norm(grads),
                     update_norm=optax.global_norm(updates), param_norm=optax.global_norm(params))
    return TrainState(state.step + 1, params, opt_state, state.key), metrics

  return train_step


def scan_chunk(step_at: Callable[[Any, jax.Array, bool], tuple[Any, Metrics]], carry: Any,
               k: int) -> tuple[Any, Metrics]:
  """Runs the `k` steps of a chunk: `step_at(carry, i, log) -> (carry, metrics)` for i < k.

  A `lax.scan` runs the first k - 1 with `log=False`, then the last runs with `log=True`, so the
  log-step metrics are computed once per chunk (chunks end at every log step,
  `runloop.chunk_ends`), outside the loop: a `lax.cond` in the loop's body cost more than the
  metrics it skipped (benchmarks/README.md). Returns the final carry and the metrics stacked on
  a leading step axis, those of the last step only NaN at the others.
  """
  carry, head = jax.lax.scan(lambda c, i: step_at(c, i, False), carry, jnp.arange(k - 1))
  carry, last = step_at(carry, jnp.asarray(k - 1), True)
  metrics = {}
  for name, value in last.items():
    before = head.get(name, jnp.full((k - 1,) + value.shape, jnp.nan, value.dtype))
    metrics[name] = jnp.concatenate([before, value[None]])
  return carry, metrics


def scan_steps(
    train_step: Callable[..., tuple[TrainState, Metrics]],
) -> Callable[[TrainState, Batch, HParams], tuple[TrainState, Metrics]]:
  """Runs `train_step` over batches stacked on a leading step axis (`scan_chunk`).

  Returns the final state and the per-step metrics stacked on that axis; the log-step metrics
  (all but `loss`) are those of the last step, NaN at the others.
  """

  def run(state: TrainState, batches: Batch, hparams: HParams):
    def step_at(s, i, log):
      return train_step(s, jax.tree.map(lambda x: x[i], batches), hparams, log)

    return scan_chunk(step_at, state, jax.tree.leaves(batches)[0].shape[0])

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


def _check_positive(config: ml_collections.ConfigDict, *names: str) -> None:
  for name in names:
    value = config.train[name]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"train.{name}: must be a positive integer, got {value!r}")


def validate_train_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `train.*` field that is out of range."""
  _check_positive(config, "steps", "steps_per_call", "log_every", "eval_every", "checkpoint_every")
  part = config.train.get("microbatch_size", 0)  # absent from configs saved before it existed
  if isinstance(part, bool) or not isinstance(part, int) or part < 0:
    raise ValueError(f"train.microbatch_size: must be a non-negative integer (0: the whole "
                     f"batch at once), got {part!r}")
  batch_size = config.get("data", {}).get("batch_size")
  if isinstance(batch_size, int) and 0 < part < batch_size and batch_size % part:
    raise ValueError(f"train.microbatch_size: must divide data.batch_size ({batch_size}), got "
                     f"{part}")
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
  where = runloop.Position()
  try:
    return _train(config, workdir, task, hparams, where)
  except KeyboardInterrupt:
    raise where.interrupted(f"of {config.train.steps}") from None
  finally:
    lock.release()


class _PointJob:
  """The single run's part of the run loop: one point, rows in `metrics.jsonl`, a non-finite
  loss stops the run (after writing its summary)."""

  def __init__(self, config, workdir, task, hparams, rows, started, metrics_log):
    self.config, self.workdir, self.task, self.rows, self.started = (
        config, workdir, task, rows, started)
    self.metrics_log = metrics_log
    self.hparams = hparams
    self.seed = int(config.seed)
    self.program = runloop.ChunkProgram(jax.jit(
        with_fixed_hparams(scan_steps(make_train_step(task, config)), hparams), donate_argnums=0))
    self.eval_step = jax.jit(make_eval_step(task))
    self.eval_data = jax.device_put(task.eval_data)

  @property
  def compile_seconds(self) -> float:
    return self.program.compile_seconds

  def batches(self, begin: int, end: int):
    return jax.device_put(self.task.train_batches(self.seed, begin, end - begin))

  def run(self, state, batches, begin, end):
    return self.program(end - begin, state, batches)

  def fetch(self, end: int, metrics: Metrics) -> dict[str, np.ndarray]:
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
      files.atomic_write_json(os.path.join(self.workdir, "summary.json"), summary)
      raise TrainingDiverged(
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
  state = jax.jit(lambda h, s: init_state(task, config, h, s))(
      jax.device_put(hparams), int(config.seed))
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

  job = _PointJob(config, workdir, task, hparams, rows, started, metrics_log)
  progress = runloop.Progress(
      "", total, 1, tokens_per_step=task.tokens_per_step, flops_per_step=task.flops_per_step,
      peak=hardware.peak_flops(jax.devices()[0], config.model.get("dtype", "float32")),
      started=started)
  runloop.run(job, state, start, config, ckpt, where, progress)
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
