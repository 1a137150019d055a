"""Layers the transformer shares: a matmul with a CPU-friendly kernel gradient, the projection
through it, and rotary position embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


@jax.custom_vjp
def dense_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``x @ kernel`` [..., in] x [in, out] whose kernel gradient is computed as ``(g^T x)^T``.

  The same values as ``x @ kernel`` and its gradients (up to the order of a sum). For the kernel
  gradient ``x^T g`` (contracting the tokens) XLA's CPU layout assignment writes the incoming
  gradient ``g`` [tokens, out] transposed, in a loop fusion with whatever produced ``g``: for
  the MLP's up projection the GELU's backward, 11 ms of lm_tiny's 100 ms step per block at 2
  threads (benchmarks/README.md, "Where the LM step's time goes on a CPU"). Contracting ``g``
  as the left operand keeps its layout; the transpose moves to the small [out, in] result.
  """
  return x @ kernel


def _linear_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _linear_bwd(residuals, g):
  x, kernel = residuals
  tokens_g, tokens_x = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
  kernel_grad_t = jax.lax.dot_general(tokens_g, tokens_x, (((0,), (0,)), ((), ())))
  return g @ kernel.T, kernel_grad_t.T.astype(kernel.dtype)


dense_matmul.defvjp(_linear_fwd, _linear_bwd)


def project(layer: nnx.Linear, x: jax.Array) -> jax.Array:
  """``layer(x)`` (no bias), through ``dense_matmul`` on a CPU (measured there only)."""
  if jax.default_backend() != 'cpu':
    return layer(x)
  return dense_matmul(x.astype(layer.dtype), layer.kernel[...].astype(layer.dtype))


def apply_rope(x: jax.Array, base: float = 10000.0, start: jax.typing.ArrayLike = 0) -> jax.Array:
  """Rotary position embedding of ``x`` [..., time, heads, head_size] (Su et al., 2021).

  Channel ``i`` and ``i + head_size / 2`` form a pair rotated by ``t * base^(-2i / head_size)`` at
  position ``t = start, start + 1, ...``. Computed in float32, returned in ``x.dtype``.
  """
  time, size = x.shape[-3], x.shape[-1]
  half = size // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  positions = jnp.arange(time, dtype=jnp.float32) + jnp.asarray(start, jnp.float32)
  angles = positions[:, None] * freqs[None, :]
  sin, cos = jnp.sin(angles)[:, None, :], jnp.cos(angles)[:, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)
