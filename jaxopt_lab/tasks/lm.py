"""The byte-level language model: a decoder-only transformer on the bytes of text files,
next-byte cross-entropy, held-out perplexity and bits per byte, greedy generation; registered
as ``lm`` like a user's task."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxopt_lab import models
from jaxopt_lab.data import batching, text
from jaxopt_lab.defaults import default_data_config
from jaxopt_lab.losses import mean_over_batches
from jaxopt_lab.optim.multipliers import RULES
from jaxopt_lab.tasks.registry import Batch, Params, Task, _check_fields, register


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
  model, generator, probe = (lm_pure(cfg, m) for m in (
      models.Transformer, models.GreedyGenerator, models.transformer.Probe))

  def token_loss(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Next-token cross-entropy and log-partition ``log Z`` per position (float32; float64
    under the float64 compute dtype of numerical checks, as the classic tasks' losses)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
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
      lr_multipliers=({rule: models.transformer.lr_multipliers(cfg, model.param_shapes, rule)
                       for rule in RULES} if cfg.parametrization != 'sp' else None),
  )


@functools.lru_cache(maxsize=48)
def lm_pure(cfg: models.TransformerConfig, module: type) -> models.PureModel:
  """``module``'s ``PureModel`` (``Transformer``; ``GreedyGenerator``: ``apply(params, prompts,
  steps)``; ``Probe``: layer outputs and attention logits; all on the same parameters), one per
  structure, so repeated builds share functions."""
  return models.pure(lambda rngs: module(cfg, rngs=rngs))


register('lm', _build_lm)
