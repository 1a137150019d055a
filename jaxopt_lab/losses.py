"""The built-in tasks' losses, and held-out metrics averaged over batches (float32 whatever the
model's compute dtype)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Params = Any
Batch = dict[str, Any]


def _loss_dtype(logits: jax.Array) -> Any:
  """Losses are float32 (float64 under the float64 compute dtype of numerical checks)."""
  return jnp.promote_types(logits.dtype, jnp.float32)


def binary_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean BCE ``-[y log s(z) + (1 - y) log s(-z)]`` and accuracy of ``z > 0``."""
  z = logits.astype(_loss_dtype(logits))
  y = labels.astype(z.dtype)
  loss = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
  accuracy = ((z > 0) == (y > 0.5)).astype(z.dtype)
  return loss.mean(), accuracy.mean()


def softmax_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy ``logsumexp(z) - z[y]`` and accuracy of ``argmax z``."""
  z = logits.astype(_loss_dtype(logits))
  y = labels.astype(jnp.int32)
  picked = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
  loss = jax.nn.logsumexp(z, axis=-1) - picked
  accuracy = (jnp.argmax(z, axis=-1) == y).astype(z.dtype)
  return loss.mean(), accuracy.mean()


def mean_over_batches(
    per_batch: Callable[[Params, Batch], dict[str, jax.Array]], params: Params, data: Batch
) -> dict[str, jax.Array]:
  """Averages ``per_batch`` over the leading axis of ``data`` (equal batches) with a scan; a
  metric named ``max_*`` is the maximum over the batches instead."""
  shapes = jax.eval_shape(per_batch, params, jax.tree.map(lambda a: a[0], data))
  zeros = {k: jnp.full(s.shape, -jnp.inf if k.startswith('max_') else 0, s.dtype)
           for k, s in shapes.items()}

  def body(carry, batch):
    new = per_batch(params, batch)
    return {k: (jnp.maximum if k.startswith('max_') else jnp.add)(carry[k], new[k])
            for k in carry}, None

  sums, _ = jax.lax.scan(body, zeros, data)
  count = jax.tree.leaves(data)[0].shape[0]
  return {k: s if k.startswith('max_') else s / count for k, s in sums.items()}
