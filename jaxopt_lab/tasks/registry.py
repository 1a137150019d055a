"""The task registry: the ``Task`` every task builds, ``register`` / ``registered`` / ``resolve``
(a registered name or a user's 'path/to/my_task.py:get_task'), the field checks of a task's
model and data groups, and ``build(config)``.

The built-in tasks (modules ``classic`` and ``lm``) register through the same public
``register`` a user's file calls.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxopt_lab import plugins
from jaxopt_lab.data import batching
from jaxopt_lab.tasks.textmetrics import with_generation

Batch = dict[str, np.ndarray | jax.Array]
Params = Any  # pytree of float32 arrays


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything the trainer needs of a task; every callable is pure.

  Attributes:
    name: the task's name (``config.task``).
    init_params: PRNG key -> float32 params pytree (jittable, vmappable over keys).
    loss_fn: ``(params, batch) -> (mean loss, extra metrics)``, float32 scalars; classifiers'
      extras are ``{'accuracy'}``, the LM's ``{}``. Jittable, vmappable, differentiable.
    train_data: the training set, numpy arrays with a leading example axis.
    batch_indices: ``(data_seed, start_step, num_steps) -> [num_steps, batch_size]`` int array,
      the examples of each step's batch (`batching.batch_indices`); a pure function of its
      arguments. `train_batches` gathers them; a sweep gathers them on its devices, where the
      training set stays (only the indices travel each chunk).
    eval_data: ``'valid'`` and ``'test'`` -> numpy batch with leading axes
      ``[num_eval_batches, eval_batch_size]``, fixed.
    eval_metrics: ``(params, eval_data[split]) -> metrics`` averaged over the whole split, float32
      scalars: classifiers ``{'loss', 'accuracy'}``, the LM ``{'loss', 'perplexity',
      'bits_per_byte'}``. Jittable and vmappable over params.
    metric_modes: metric -> 'min' or 'max' (which direction is better).
    steps_per_epoch: full batches per pass over the training set.
    tokens_per_step: LM: ``batch_size * context``; otherwise None.
    flops_per_step: model FLOPs (forward + backward) of one training step. LM:
      ``flops_per_token * tokens_per_step``; classifiers: ``6 * param_count * batch_size``
      (2 per weight and example forward, 4 backward; biases counted like weights).
    param_count: number of scalar parameters.
    generate: LM: ``(params, prompts [n, length] int, steps) -> [n, steps] int32``, the greedy
      continuation (jittable, vmappable over params; ``steps`` static); None for tasks that
      generate no text. With ``config.eval.generation`` on, ``build`` adds prompts to the
      held-out splits and their ``generated`` continuations to ``eval_metrics`` (textmetrics).
    lr_multipliers: per μP rule (``optim.multipliers.RULES``: 'adam', 'sgd'), a tree shaped
      like the parameters of per-parameter factors on the optimizer's updates (μP's
      learning-rate scaling, ``models.parametrization``); the trainer applies the tree of the
      optimizer's declared rule after it (``optim.multipliers``); None: all 1.
  """

  name: str
  init_params: Callable[[jax.Array], Params]
  loss_fn: Callable[[Params, Batch], tuple[jax.Array, dict[str, jax.Array]]]
  train_data: Batch
  batch_indices: Callable[[int, int, int], np.ndarray]
  eval_data: dict[str, Batch]
  eval_metrics: Callable[[Params, Batch], dict[str, jax.Array]]
  metric_modes: dict[str, str]
  steps_per_epoch: int
  tokens_per_step: int | None
  flops_per_step: float | None
  param_count: int
  generate: Callable[[Params, jax.Array, int], jax.Array] | None = None
  lr_multipliers: dict[str, Params] | None = None

  def train_batches(self, data_seed: int, start_step: int, num_steps: int) -> Batch:
    """The batches of steps ``start_step ...`` for ``data_seed``: numpy arrays of leading axes
    ``[num_steps, batch_size]``, `train_data` at `batch_indices`; a pure function."""
    return batching.gather(self.train_data,
                           self.batch_indices(data_seed, start_step, num_steps))


TaskBuilder = Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], Task]
_REGISTRY: dict[str, TaskBuilder] = {}


def register(name: str, builder: TaskBuilder) -> TaskBuilder:
  """Makes `builder(config.model, config.data) -> Task` the task `config.task = name`.

  Raises:
    ValueError: if another builder is registered under `name`, or `name` has ':'.
  """
  if ':' in name:
    raise ValueError(f"task name {name!r}: ':' is kept for plugin specs")
  if _REGISTRY.get(name, builder) is not builder:
    raise ValueError(f'task {name!r} is already registered')
  _REGISTRY[name] = builder
  return builder


def registered() -> tuple[str, ...]:
  """Registered task names, the built-ins first."""
  return tuple(_REGISTRY)


def resolve(name: Any) -> TaskBuilder:
  """The builder of `config.task`: a registered name or a plugin 'path/file.py:get_task' /
  'package.module:get_task' (loaded when first named).

  Raises:
    ValueError: one line: an unknown name (listing the registered ones), or a plugin that fails
      to load or is not a function.
  """
  if isinstance(name, str) and name in _REGISTRY:
    return _REGISTRY[name]
  if not plugins.is_spec(name):
    raise ValueError(f"task: unknown task {name!r}; registered: {', '.join(_REGISTRY)}; or a "
                     f"plugin: {plugins.FORMS}")
  builder = plugins.load(name, 'task')
  if not callable(builder):
    raise ValueError(f'task: {name!r} is not a function (model_cfg, data_cfg) -> tasks.Task')
  return builder


def _check_fields(group: str, config: ml_collections.ConfigDict, allowed: set[str],
                  optional: dict[str, Any] | None = None) -> dict:
  """The group's fields: exactly ``allowed``, plus those of ``optional`` (filled with its
  values where absent, for configs written before they existed)."""
  optional = optional or {}
  values = {**optional, **config.to_dict()}
  allowed = allowed | set(optional)
  unknown = sorted(set(values) - allowed)
  if unknown:
    raise ValueError(
        f"{group}: unknown field(s) {', '.join(unknown)}; "
        f"valid fields: {', '.join(sorted(allowed))}"
    )
  missing = sorted(allowed - set(values))
  if missing:
    raise ValueError(f"{group}: missing field(s) {', '.join(missing)}")
  return values


def build(config: ml_collections.ConfigDict) -> Task:
  """The task ``config.task`` with model ``config.model`` and data ``config.data``, and the
  generation metrics of ``config.eval`` (``textmetrics.with_generation``; a config without an
  ``eval`` group has none).

  Unknown names, fields or values raise a ValueError naming the field (and the valid choices).
  """
  z_loss = config.train.z_loss if 'train' in config and 'z_loss' in config.train else 0.0
  if isinstance(z_loss, bool) or not isinstance(z_loss, int | float) or not z_loss >= 0:
    raise ValueError(f'train.z_loss: must be a number >= 0; got {z_loss!r}')
  if z_loss and config.task != 'lm':
    raise ValueError(f'train.z_loss: only the lm task has output logits to regularise; '
                     f'task is {config.task!r} (set train.z_loss = 0)')
  builder = resolve(config.task)
  if z_loss:  # config.task is 'lm' here (checked above): its builder takes z_loss
    builder = functools.partial(builder, z_loss=float(z_loss))
  task = builder(config.model, config.data)
  if not isinstance(task, Task):
    raise ValueError(f'task: {config.task!r} returned {type(task).__name__}, not a tasks.Task')
  if 'eval' in config:
    task = with_generation(task, config.eval)
  return task
