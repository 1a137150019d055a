"""The classifiers: ``classifier_task`` (the building block of a user's classification task too)
and the built-ins ``classic`` (logistic regression on a planted linear rule) and the tabular
``breast_cancer`` (logistic regression) and ``digits`` (an MLP, SP or μP), registered like a
user's task."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from jaxopt_lab import models
from jaxopt_lab.data import batching, synthetic, tabular
from jaxopt_lab.data.splits import Splits
from jaxopt_lab.defaults import default_data_config
from jaxopt_lab.losses import binary_loss, mean_over_batches, softmax_loss
from jaxopt_lab.optim.multipliers import RULES
from jaxopt_lab.tasks.registry import Batch, Params, Task, _check_fields, register


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
  multipliers = ({rule: models.mlp.mlp_lr_multipliers(widths, kind, base, model.param_shapes,
                                                     rule) for rule in RULES}
                 if kind != 'sp' else None)
  return classifier_task(name, model, splits, d['batch_size'], softmax_loss, multipliers)


register('classic', _build_classic)
register('breast_cancer', functools.partial(_build_tabular, 'breast_cancer'))
register('digits', functools.partial(_build_tabular, 'digits'))
