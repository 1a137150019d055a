"""The training core of ONE design point: its state, its pure step, a scanned chunk, evaluation.

`train_step(state, batch, hparams)` is a pure function of one point: the sweep driver `jax.vmap`s
this very function over points, so a point of a sweep and a single run with the same values are
the same computation. `hparams` is a dict of float32 scalars holding the value factors of the point
(peak learning rate, betas, eps, momentum, decay, weight decay, warmup fraction, clip norm); the
optimizer and its schedule are built inside the step from it and from the static config (the
optimizer's name and flags), so new values never recompile and nothing branches on a value.
The single run's loop and files are `single`; a sweep's are `sweep.programs` and `sweep.jobs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxopt_lab import tasks
from jaxopt_lab.optim import factory, multipliers

Params = Any
Batch = Mapping[str, Any]
HParams = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# A point's cooldown fork (an adaptive design's rung ranks a decayed copy of the state): the two
# entries of `hparams` that make the schedule decay to zero from step `cooldown_start` over
# `cooldown_steps` steps. A start of COOLDOWN_OFF (2^24, exact in float32, beyond any run) is no
# fork: the schedule's values are the plain schedule's, bit for bit.
COOLDOWN_KEYS = ("cooldown_start", "cooldown_steps")
COOLDOWN_OFF = float(2**24)


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


def point_keys(seed: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Splits a point's seed into its parameter-init key and its stochastic-layer key.

  The data order comes from the same integer seed on the numpy side (see `tasks`). `seed` may be
  traced, so that the sweep can `vmap` initialisation over seeds.
  """
  key = jax.random.PRNGKey(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def make_optimizer(
    config: ml_collections.ConfigDict, hparams: HParams,
    lr_multipliers: Mapping[str, Params] | None = None
) -> optax.GradientTransformation:
  """The optimizer (with schedule and clipping) of `config.optimizer` at the values `hparams`,
  its updates scaled per parameter by the task's `lr_multipliers` of the optimizer's declared
  μP rule (`registry.Optimizer.mup_rule`, `optim.multipliers`). With the `COOLDOWN_KEYS` in
  `hparams`, its schedule decays from there (`factory.build`)."""
  tree = (None if lr_multipliers is None
          else lr_multipliers[factory.resolve(config.optimizer.name).mup_rule])
  cooldown = (tuple(hparams[k] for k in COOLDOWN_KEYS) if COOLDOWN_KEYS[0] in hparams
              else None)
  return multipliers.with_multipliers(
      factory.build(config.optimizer, hparams, config.train.steps, cooldown), tree)


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
    # every call (benchmarks/HISTORY.md, "Micro-batches").

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
