"""Causal softmax attention with a hand-written backward pass, for XLA's CPU backend.

``causal_attention(q, k, v)`` computes what ``jax.nn.dot_product_attention(q, k, v,
is_causal=True)`` computes (and the dense einsum attention of ``transformer.py``): per head,
``softmax(q k^T / sqrt(size) + causal mask) v`` in float32. It differs in how it runs:

* heads are moved next to the batch (``[..., heads, time, size]``) once, so every product is a
  batched matmul whose batch dimensions lead;
* the scale goes on the queries, ``Q' = Q / sqrt(size)`` (on the logits XLA fused it into the
  logits' matmul as a materialised ``[..., t, s]`` array of the scalar);
* the forward pass saves ``Q'``, the softmax probabilities ``P`` and the output ``O``, and the
  backward pass is written out (``custom_vjp``) instead of traced through the softmax:
  ``dS = P * (dO V^T - rowsum(dO * O))``, ``dQ = dS K / sqrt(size)``,
  ``dK = (Q'^T dS)^T``, ``dV = (dO^T P)^T``. The last two contract the query axis with the
  ``[time, size]`` operand on the left: XLA's CPU backend runs a batched matmul whose left
  operand is contracted over its leading axis (``P^T dO``) as a generic dot at about half the
  rate of YNNPACK's (1.2 ms against 0.7 ms for lm_tiny's 64 heads of 128 x 128 x 32, one core),
  and the transposed results are small.

Measured on a CPU only (benchmarks/README.md, "Where the LM step's time goes on a CPU"): the
model uses it for float32 dense attention on the CPU backend and keeps the einsum form elsewhere.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _probs(q_scaled: jax.Array, k: jax.Array) -> jax.Array:
  """Softmax over keys of the causally masked logits ``q_scaled k^T`` [..., t, s], in float32
  (float64 for float64 inputs)."""
  time, dtype = q_scaled.shape[-2], jnp.promote_types(q_scaled.dtype, jnp.float32)
  logits = jnp.einsum('...th,...sh->...ts', q_scaled, k).astype(dtype)
  logits = jnp.where(jnp.tril(jnp.ones((time, time), dtype=bool)), logits, jnp.finfo(dtype).min)
  exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return exp / jnp.sum(exp, axis=-1, keepdims=True)


@jax.custom_vjp
def _attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  return _attend_fwd(q, k, v)[0]


def _attend_fwd(q, k, v):
  # The scale on the [t, size] queries, not on the [t, s] logits (see the module docstring).
  q_scaled = q * (1 / math.sqrt(q.shape[-1]))
  probs = _probs(q_scaled, k)
  out = jnp.einsum('...ts,...sh->...th', probs.astype(v.dtype), v)
  return out, (q_scaled, k, v, probs, out)


def _attend_bwd(residuals, d_out):
  q_scaled, k, v, probs, out = residuals
  d_probs = jnp.einsum('...th,...sh->...ts', d_out, v).astype(probs.dtype)
  row = jnp.sum(d_out.astype(probs.dtype) * out.astype(probs.dtype), axis=-1, keepdims=True)
  d_logits = (probs * (d_probs - row)).astype(q_scaled.dtype)
  d_q = jnp.einsum('...ts,...sh->...th', d_logits, k) * (1 / math.sqrt(k.shape[-1]))
  d_k = jnp.swapaxes(jnp.einsum('...th,...ts->...hs', q_scaled, d_logits), -1, -2)
  # (d: size; another letter than d_k's einsum, whose name benchmarks/lm_profile.py reads)
  d_v = jnp.swapaxes(jnp.einsum('...td,...ts->...ds', d_out, probs.astype(v.dtype)), -1, -2)
  return d_q, d_k, d_v


_attend.defvjp(_attend_fwd, _attend_bwd)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Causal multi-head attention of ``q``, ``k``, ``v`` [..., time, heads, size].

  The values of ``jax.nn.dot_product_attention(q, k, v, is_causal=True)`` (up to the order of
  sums): position ``t`` attends to positions ``<= t``, logits scaled by ``1 / sqrt(size)``,
  softmax in float32 (float64 for float64 inputs). The gradient is the hand-written one of the
  module docstring; ``vmap`` adds leading batch dimensions.

  Args:
    q, k, v: queries, keys and values of the same shape [..., time, heads, size].

  Returns:
    The attention output [..., time, heads, size] in ``v``'s dtype.
  """
  if not q.shape == k.shape == v.shape or q.ndim < 3:
    raise ValueError(f'causal_attention: q, k, v must share a shape [..., time, heads, size]; '
                     f'got {q.shape}, {k.shape}, {v.shape}')
  heads_first = lambda x: jnp.swapaxes(x, -3, -2)  # noqa: E731 - [..., heads, time, size]
  return heads_first(_attend(heads_first(q), heads_first(k), heads_first(v)))
