"""Tasks: a model, its data, its loss and its metrics, looked up by name.

A ``Task`` holds pure functions only (no modules, no mutable state), so the trainer can ``jit``,
``vmap`` (over design points) and ``lax.scan`` (over steps) them directly:

=============== ============================ ======================= ========================
task            model                        data                    loss
=============== ============================ ======================= ========================
classic         logistic regression, 10 in   planted linear rule     log-sigmoid BCE
breast_cancer   logistic regression, 30 in   sklearn breast cancer   log-sigmoid BCE
digits          MLP 64-256-256-10            sklearn digits          softmax cross-entropy
lm              decoder-only transformer     bytes of text files     next-byte cross-entropy
=============== ============================ ======================= ========================

``build(config)`` reads ``config.task``, ``config.model`` and ``config.data``; the defaults of each
task are ``default_model_config(task)`` and ``default_data_config(task)``. With
``config.eval.generation`` on, the LM is also scored by BLEU and ROUGE-L of greedy continuations
of held-out prompts (``textmetrics``). Loading is cached, so
``build`` is cheap to call again. Losses and metrics are computed in float32 whatever the model's
compute dtype.

The built-ins are registered with ``register(name, builder)``, the call a user makes too; a
config may also name a builder in a user's file, ``config.task = 'path/to/my_task.py:get_task'``
(or ``'package.module:get_task'``), loaded when first named: ``get_task(config.model,
config.data)`` returns a ``Task`` (``classifier_task`` builds one from a model and splits; see
examples/wine_task.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxopt_lab import models, plugins
from jaxopt_lab.data import batching, synthetic, tabular, text
from jaxopt_lab.data.splits import Splits
from jaxopt_lab.defaults import (  # noqa: F401  (the task defaults, public here too)
  LM_SIZES,
  TASKS,
  default_data_config,
  default_model_config,
  lm_size_config,
)
from jaxopt_lab.losses import (  # noqa: F401  (public here too)
  binary_loss,
  mean_over_batches,
  softmax_loss,
)
from jaxopt_lab.tasks import textmetrics

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
    lr_multipliers: a tree shaped like the parameters of per-parameter factors on the
      optimizer's updates (μP's learning-rate scaling, ``models.parametrization``), which the
      trainer applies after any optimizer (``optim.multipliers``); None: all 1.
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
  lr_multipliers: Params | None = None

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


# ----------------------------------------------------------------------------- losses


# ----------------------------------------------------------------------------- tasks


def _whole_split(split: dict[str, np.ndarray]) -> Batch:
  """A held-out split as one batch: leading axes [1, n]."""
  return {k: a[None] for k, a in split.items()}


def classifier_task(
    name: str,
    model: models.PureModel,
    splits: Splits,
    batch_size: int,
    loss: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    lr_multipliers: Params | None = None,
) -> Task:
  """A classification task: `model` on `splits` ({'inputs', 'labels'}), minibatches of
  `batch_size` reshuffled every epoch, `loss` (`binary_loss` or `softmax_loss`) and accuracy.

  The building block of the built-in classifiers and of a user's task file (examples/).
  """
  num_train = splits.size('train')
  batching.check_batch_size(batch_size, num_train)

  def loss_fn(params: Params, batch: Batch):
    value, accuracy = loss(model.apply(params, batch['inputs']), batch['labels'])
    return value, {'accuracy': accuracy}

  def per_batch(params: Params, batch: Batch):
    value, accuracy = loss(model.apply(params, batch['inputs']), batch['labels'])
    return {'loss': value, 'accuracy': accuracy}

  def batch_indices(data_seed: int, start_step: int, num_steps: int) -> np.ndarray:
    return batching.batch_indices(num_train, batch_size, data_seed, start_step, num_steps)

  return Task(
      name=name,
      init_params=model.init,
      loss_fn=loss_fn,
      train_data=dict(splits.train),
      batch_indices=batch_indices,
      eval_data={s: _whole_split(splits[s]) for s in ('valid', 'test')},
      eval_metrics=lambda params, data: mean_over_batches(per_batch, params, data),
      metric_modes={'loss': 'min', 'accuracy': 'max'},
      steps_per_epoch=num_train // batch_size,
      tokens_per_step=None,
      flops_per_step=float(6 * model.param_count * batch_size),
      param_count=model.param_count,
      lr_multipliers=lr_multipliers,
  )


def _logistic_model(features: int, dtype: str) -> models.PureModel:
  models.compute_dtype(dtype)
  return models.pure(lambda rngs: models.LogisticRegression(features, dtype=dtype, rngs=rngs))


def _build_classic(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict):
  m = _check_fields('model', model_cfg, {'dtype'})
  d = _check_fields('data', data_cfg, set(default_data_config('classic')))
  splits = synthetic.make_synthetic(
      d['num_train'], d['num_valid'], d['num_test'], d['features'], float(d['flip_prob']),
      d['seed'],
  )
  model = _logistic_model(d['features'], m['dtype'])
  return classifier_task('classic', model, splits, d['batch_size'], binary_loss)


def _build_tabular(
    name: str, model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict
):
  d = _check_fields('data', data_cfg, set(default_data_config(name)))
  splits = tabular.load(
      name, float(d['valid_fraction']), float(d['test_fraction']), d['split_seed']
  )
  features = splits.train['inputs'].shape[1]
  if name == 'breast_cancer':
    m = _check_fields('model', model_cfg, {'dtype'})
    model = _logistic_model(features, m['dtype'])
    return classifier_task(name, model, splits, d['batch_size'], binary_loss)
  m = _check_fields('model', model_cfg, {'hidden', 'activation', 'dtype'},
                    {'parametrization': 'sp', 'base_width': 256})
  models.mlp.activation_fn(m['activation'])
  models.compute_dtype(m['dtype'])
  widths = (features, *m['hidden'], int(splits.train['labels'].max()) + 1)
  kind, base = m['parametrization'], m['base_width']
  models.mlp.mlp_multipliers(widths, kind, base)  # validates them (one line) before tracing
  model = models.pure(lambda rngs: models.MLP(
      widths, m['activation'], dtype=m['dtype'], parametrization=kind, base_width=base,
      rngs=rngs))
  multipliers = (models.mlp.mlp_lr_multipliers(widths, kind, base, model.param_shapes)
                 if kind != 'sp' else None)
  return classifier_task(name, model, splits, d['batch_size'], softmax_loss, multipliers)


def _evenly_spaced(windows: np.ndarray, count: int, batch_size: int, split: str) -> Batch:
  """``count`` (at most all, rounded down to whole batches) evenly spaced windows, batched."""
  n = min(count, len(windows)) // batch_size * batch_size
  if n == 0:
    raise ValueError(
        f'data.eval_batch_size: {batch_size} is more than the {len(windows)} windows of the '
        f'{split} split (or data.eval_windows {count} is less)'
    )
  idx = np.arange(n) * len(windows) // n
  tokens = windows[idx]
  return {'tokens': tokens.reshape(n // batch_size, batch_size, tokens.shape[-1])}


def _build_lm(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict,
              z_loss: float = 0.0):
  """The LM task; ``z_loss`` (``train.z_loss``) adds ``z_loss * mean(log^2 Z)`` of the output
  logits to the training loss (PaLM, Chowdhery et al. 2022); held-out losses leave it out."""
  cfg = models.transformer_from_config(model_cfg)
  d = _check_fields('data', data_cfg, set(default_data_config('lm')))
  for field in ('eval_windows', 'eval_batch_size'):
    if isinstance(d[field], bool) or not isinstance(d[field], int) or d[field] < 1:
      raise ValueError(f'data.{field}: must be a positive integer; got {d[field]!r}')
  splits = text.make_windows(
      cfg.context, text.parse_paths(d['paths']), d['byte_budget'], float(d['valid_fraction']),
      float(d['test_fraction']),
  )
  windows = splits.train['tokens']
  batch_size = d['batch_size']
  batching.check_batch_size(batch_size, len(windows), f'windows of {cfg.context + 1} bytes')
  model, generator, probe = (_lm_pure(cfg, m) for m in (
      models.Transformer, models.GreedyGenerator, models.transformer.Probe))

  def token_loss(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Next-token cross-entropy and log-partition ``log Z`` per position (float32)."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, tokens[..., 1:, None], axis=-1)[..., 0]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    return log_z - picked, log_z

  def loss_fn(params: Params, batch: Batch):
    tokens = batch['tokens'].astype(jnp.int32)
    loss, log_z = token_loss(model.apply(params, tokens[..., :-1]), tokens)
    if z_loss:  # structure: a zero coefficient leaves the step as it was
      return loss.mean() + z_loss * jnp.mean(log_z**2), {}
    return loss.mean(), {}

  def held_out(params: Params, batch: Batch) -> dict[str, jax.Array]:
    # One forward pass gives the loss and Wortsman et al.'s instability signals: the mean log Z,
    # the largest output logit (absolute) and the largest attention logit.
    tokens = batch['tokens'].astype(jnp.int32)
    seen = probe.apply(params, tokens[..., :-1])
    loss, log_z = token_loss(seen['logits'], tokens)
    return {'loss': loss.mean(), 'log_z': log_z.mean(),
            'max_output_logit': jnp.max(jnp.abs(seen['logits'].astype(jnp.float32))),
            'max_attention_logit': seen['max_attention_logit']}

  def eval_metrics(params: Params, data: Batch):
    metrics = mean_over_batches(held_out, params, data)
    loss = metrics['loss']
    return {**metrics, 'perplexity': jnp.exp(loss), 'bits_per_byte': loss / math.log(2.0)}

  def batch_indices(data_seed: int, start_step: int, num_steps: int) -> np.ndarray:
    return batching.batch_indices(len(windows), batch_size, data_seed, start_step, num_steps)

  tokens_per_step = batch_size * cfg.context
  return Task(
      name='lm',
      init_params=model.init,
      loss_fn=loss_fn,
      train_data={'tokens': windows},
      batch_indices=batch_indices,
      eval_data={
          s: _evenly_spaced(splits[s]['tokens'], d['eval_windows'], d['eval_batch_size'], s)
          for s in ('valid', 'test')
      },
      eval_metrics=eval_metrics,
      metric_modes={'loss': 'min', 'perplexity': 'min', 'bits_per_byte': 'min',
                    'log_z': 'min', 'max_attention_logit': 'min', 'max_output_logit': 'min'},
      steps_per_epoch=len(windows) // batch_size,
      tokens_per_step=tokens_per_step,
      flops_per_step=float(models.flops_per_token(cfg) * tokens_per_step),
      param_count=model.param_count,
      generate=generator.apply,
      lr_multipliers=(models.transformer.lr_multipliers(cfg, model.param_shapes)
                      if cfg.parametrization != 'sp' else None),
  )


@functools.lru_cache(maxsize=48)
def _lm_pure(cfg: models.TransformerConfig, module: type) -> models.PureModel:
  """``module``'s ``PureModel`` (``Transformer``; ``GreedyGenerator``: ``apply(params, prompts,
  steps)``; ``Probe``: layer outputs and attention logits; all on the same parameters), one per
  structure, so repeated builds share functions."""
  return models.pure(lambda rngs: module(cfg, rngs=rngs))


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
  builder = functools.partial(_build_lm, z_loss=float(z_loss)) if z_loss else resolve(config.task)
  task = builder(config.model, config.data)
  if not isinstance(task, Task):
    raise ValueError(f'task: {config.task!r} returned {type(task).__name__}, not a tasks.Task')
  if 'eval' in config:
    task = textmetrics.with_generation(task, config.eval)
  return task


register('classic', _build_classic)
register('breast_cancer', functools.partial(_build_tabular, 'breast_cancer'))
register('digits', functools.partial(_build_tabular, 'digits'))
register('lm', _build_lm)
