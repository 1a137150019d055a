"""Decoder-only (GPT-style) transformer language model.

Token embedding, positions ('learned': an added table; 'rope': rotary embedding of queries and
keys), ``depth`` pre-norm blocks ``x + attn(norm(x))``, ``x + mlp(norm(x))`` with causal
multi-head self-attention and a 4x-wide GELU MLP, a final norm, and an output head tied to the
token embedding (logits = h @ E^T). Linear layers have no biases. Parameters are float32; with
``dtype='bfloat16'`` the matmuls (attention logits included) compute in bfloat16 while norm
statistics and the attention softmax stay float32. Logits come out in the compute dtype; the
loss upcasts them.

Initialisation follows GPT-2: embeddings and kernels N(0, 0.02^2), the two projections that write
into the residual stream (attention output, MLP output) scaled down by sqrt(2 * depth).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_lab.models.attention import causal_attention
from jaxopt_lab.models.core import compute_dtype

POSITIONS = ('learned', 'rope')
NORMS = ('rmsnorm', 'layernorm')
ATTENTIONS = ('dense', 'fused')
_INIT_STD = 0.02
KVCache = tuple[jax.Array, jax.Array]  # keys, values: [batch, positions, heads, head_size]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Structure of the LM; every field is a structural factor (one compilation per value).

  Attributes:
    vocab: vocabulary size (256 for bytes).
    width: model (residual stream) width; a multiple of ``heads``.
    depth: number of blocks.
    heads: attention heads; the head size ``width // heads`` must be even for rope.
    context: maximum sequence length (tokens per training window).
    positions: 'learned' or 'rope'.
    norm: 'rmsnorm' or 'layernorm'.
    dtype: compute dtype, 'float32' or 'bfloat16'.
    attention: 'dense' (einsums, a [time, time] mask, float32 softmax; in float32 on a CPU
      ``attention.causal_attention``, the same math with a hand-written backward) or 'fused'
      (``jax.nn.dot_product_attention`` with ``is_causal``: cuDNN's flash attention on a GPU in
      bfloat16, XLA's implementation elsewhere).
  """

  vocab: int = 256
  width: int = 128
  depth: int = 2
  heads: int = 4
  context: int = 128
  positions: str = 'learned'
  norm: str = 'rmsnorm'
  dtype: str = 'float32'
  attention: str = 'dense'

  def __post_init__(self):
    for name in ('vocab', 'width', 'depth', 'heads', 'context'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'model.{name}: must be a positive integer; got {value!r}')
    if self.positions not in POSITIONS:
      raise ValueError(
          f"model.positions: unknown positions {self.positions!r}; valid choices: "
          f"{', '.join(POSITIONS)}"
      )
    if self.norm not in NORMS:
      raise ValueError(
          f"model.norm: unknown norm {self.norm!r}; valid choices: {', '.join(NORMS)}"
      )
    if self.attention not in ATTENTIONS:
      raise ValueError(
          f"model.attention: unknown attention {self.attention!r}; valid choices: "
          f"{', '.join(ATTENTIONS)}"
      )
    compute_dtype(self.dtype)
    if self.width % self.heads:
      raise ValueError(
          f'model.heads: width {self.width} is not divisible by heads {self.heads}'
      )
    if self.positions == 'rope' and (self.width // self.heads) % 2:
      raise ValueError(
          f'model.heads: rope needs an even head size; width {self.width} / heads '
          f'{self.heads} = {self.width // self.heads}'
      )


def _norm_params(cfg: TransformerConfig) -> int:
  return cfg.width if cfg.norm == 'rmsnorm' else 2 * cfg.width


def nonembedding_param_count(cfg: TransformerConfig) -> int:
  """Parameters outside the token and position embeddings: ``depth * (12 width^2 + 2 norms) +
  final norm`` (a norm has ``width`` scales for RMSNorm, plus ``width`` biases for LayerNorm)."""
  per_block = 12 * cfg.width**2 + 2 * _norm_params(cfg)
  return cfg.depth * per_block + _norm_params(cfg)


def param_count(cfg: TransformerConfig) -> int:
  """All parameters: ``vocab * width`` (embedding, shared with the head) ``+ context * width``
  (learned positions only) ``+ nonembedding_param_count(cfg)``."""
  positions = cfg.context * cfg.width if cfg.positions == 'learned' else 0
  return cfg.vocab * cfg.width + positions + nonembedding_param_count(cfg)


def flops_per_token(cfg: TransformerConfig) -> int:
  """Model FLOPs of one forward and backward pass, per token of a full-context window.

  Kaplan et al. (2020, Table 1) style, counting only matmuls, 2 FLOPs per multiply-add and
  backward = 2 x forward::

      flops_per_token = 6 * N + 6 * depth * context * width,
      N = 12 * depth * width^2 + vocab * width.

  ``N`` is the number of matmul weights a token meets: per block the fused QKV projection
  (3 width^2), the attention output (width^2) and the MLP (8 width^2); plus the tied output head
  (vocab * width), which Kaplan et al. leave out but which is several percent at byte vocabularies
  and small widths. Norm scales and the embedding lookup (a gather) do no matmul work.
  The attention term: a query meets on average ``context / 2`` keys under the causal mask, in two
  matmuls (Q K^T and A V), so ``2 * 2 * (context / 2) * width`` forward FLOPs per block. A dense
  implementation (ours) also computes the masked half, i.e. executes
  ``6 * N + 12 * depth * context * width``; the formula counts useful work, as MFU does.
  Softmax, norms and activations (a few percent at these sizes) are not counted.

  Args:
    cfg: the model structure (a ``TransformerConfig`` or anything with the same attributes).

  Returns:
    The FLOPs per token, an integer.
  """
  n = 12 * cfg.depth * cfg.width**2 + cfg.vocab * cfg.width
  return 6 * n + 6 * cfg.depth * cfg.context * cfg.width


def _make_norm(cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
  kwargs = dict(dtype=compute_dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)
  if cfg.norm == 'rmsnorm':
    return nnx.RMSNorm(cfg.width, epsilon=1e-6, **kwargs)
  return nnx.LayerNorm(cfg.width, epsilon=1e-6, **kwargs)


def _dense(n_in: int, n_out: int, cfg: TransformerConfig, std: float, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(
      n_in, n_out, use_bias=False, kernel_init=nnx.initializers.normal(std),
      dtype=compute_dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs,
  )


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


def _project(layer: nnx.Linear, x: jax.Array) -> jax.Array:
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


class CausalSelfAttention(nnx.Module):
  """Multi-head self-attention where position t attends to positions <= t."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.heads = cfg.heads
    self.rope = cfg.positions == 'rope'
    self.fused = cfg.attention == 'fused'
    self.qkv = _dense(cfg.width, 3 * cfg.width, cfg, _INIT_STD, rngs)
    self.out = _dense(cfg.width, cfg.width, cfg, _INIT_STD / math.sqrt(2 * cfg.depth), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, time, width = x.shape
    size = width // self.heads
    qkv = _project(self.qkv, x).reshape(batch, time, 3, self.heads, size)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.rope:
      q, k = apply_rope(q), apply_rope(k)
    if self.fused:
      # jax picks XLA's implementation unless told: cuDNN's flash attention takes 16-bit inputs.
      cudnn = jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16)
      y = jax.nn.dot_product_attention(
          q, k, v, is_causal=True, implementation='cudnn' if cudnn else 'xla')
      return _project(self.out, y.reshape(batch, time, width))
    if jax.default_backend() == 'cpu' and q.dtype == jnp.float32:
      # The same math with a hand-written backward (models/attention.py; measured on a CPU only).
      return _project(self.out, causal_attention(q, k, v).reshape(batch, time, width))
    # Logits in the compute dtype, softmax in float32. (A float32-output einsum of bfloat16 inputs
    # would make the backward pass multiply float32 by bfloat16, which XLA's GPU matmuls don't
    # take natively; measured a few percent slower on an H200.)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k).astype(jnp.float32) / math.sqrt(size)
    causal = jnp.tril(jnp.ones((time, time), dtype=bool))
    logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum('bnts,bsnh->btnh', probs, v).reshape(batch, time, width)
    return _project(self.out, y)

  def extend(self, x: jax.Array, cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """Attention of ``x`` [batch, time, width] at positions ``start, ...`` to themselves and to
    the earlier positions held in ``cache``; returns the output and the cache with the new keys
    and values written. The math of ``__call__`` (dense, float32 softmax) over a longer, masked
    key axis; ``__call__`` of the whole prefix gives the same outputs up to rounding."""
    batch, time, width = x.shape
    size = width // self.heads
    qkv = _project(self.qkv, x).reshape(batch, time, 3, self.heads, size)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.rope:
      q, k = apply_rope(q, start=start), apply_rope(k, start=start)
    keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), start, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), start, 1)
    logits = jnp.einsum('btnh,bsnh->bnts', q, keys).astype(jnp.float32) / math.sqrt(size)
    seen = jnp.arange(keys.shape[1])[None, :] <= start + jnp.arange(time)[:, None]  # [t, s]
    logits = jnp.where(seen, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    y = jnp.einsum('bnts,bsnh->btnh', probs, values).reshape(batch, time, width)
    return _project(self.out, y), (keys, values)


class FeedForward(nnx.Module):
  """``width -> 4 width -> width`` with a GELU."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.up = _dense(cfg.width, 4 * cfg.width, cfg, _INIT_STD, rngs)
    self.down = _dense(4 * cfg.width, cfg.width, cfg, _INIT_STD / math.sqrt(2 * cfg.depth), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return _project(self.down, jax.nn.gelu(_project(self.up, x)))


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.attn_norm = _make_norm(cfg, rngs)
    self.attn = CausalSelfAttention(cfg, rngs=rngs)
    self.mlp_norm = _make_norm(cfg, rngs)
    self.mlp = FeedForward(cfg, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.attn_norm(x))
    return x + self.mlp(self.mlp_norm(x))

  def extend(self, x: jax.Array, cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """``__call__`` at positions ``start, ...`` given the earlier ones' keys and values."""
    y, cache = self.attn.extend(self.attn_norm(x), cache, start)
    x = x + y
    return x + self.mlp(self.mlp_norm(x)), cache


class Transformer(nnx.Module):
  """Decoder-only LM: integer tokens [..., time] -> logits [..., time, vocab].

  ``time`` may be anything up to ``cfg.context``. Parameters: ``embed/embedding`` [vocab, width]
  (also the output head), ``pos_embed`` [context, width] (learned positions only),
  ``blocks/<i>/{attn_norm, attn/{qkv, out}, mlp_norm, mlp/{up, down}}``, ``final_norm``.
  """

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(_INIT_STD)
    self.embed = nnx.Embed(
        cfg.vocab, cfg.width, embedding_init=init, dtype=compute_dtype(cfg.dtype),
        param_dtype=jnp.float32, rngs=rngs,
    )
    if cfg.positions == 'learned':
      self.pos_embed = nnx.Param(init(rngs.params(), (cfg.context, cfg.width), jnp.float32))
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.final_norm = _make_norm(cfg, rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    *lead, time = tokens.shape
    if time > self.cfg.context:
      raise ValueError(f'model.context: {time} tokens exceed the context of {self.cfg.context}')
    # Gather from the float32 table, then cast: the gradient of the gather is a scatter-add, which
    # on a GPU in bfloat16 serialises on the table's 256 rows (76 ms of an 90 ms lm_small step on
    # an H200) and in float32 takes 0.06 ms. Same values as nnx.Embed's cast-then-gather.
    table = self.embed.embedding[...]
    x = jnp.take(table, tokens.reshape(-1, time).astype(jnp.int32), axis=0)
    x = x.astype(compute_dtype(self.cfg.dtype))
    if self.cfg.positions == 'learned':
      x = x + self.pos_embed[:time].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    logits = self.embed.attend(self.final_norm(x))
    return logits.reshape(*lead, time, self.cfg.vocab)

  def init_cache(self, batch: int, length: int) -> list[KVCache]:
    """Zero keys and values of ``length`` positions, one pair per block (compute dtype)."""
    shape = (batch, length, self.cfg.heads, self.cfg.width // self.cfg.heads)
    zeros = jnp.zeros(shape, compute_dtype(self.cfg.dtype))
    return [(zeros, zeros) for _ in self.blocks]

  def extend(self, tokens: jax.Array, cache: list[KVCache], start: jax.Array
             ) -> tuple[jax.Array, list[KVCache]]:
    """Logits [batch, time, vocab] of ``tokens`` [batch, time] at positions ``start, ...``,
    given the keys and values of positions ``< start`` in ``cache``; returns them and the cache
    with the new positions written (a KV cache for decoding)."""
    time = tokens.shape[1]
    table = self.embed.embedding[...]
    x = jnp.take(table, tokens.astype(jnp.int32), axis=0).astype(compute_dtype(self.cfg.dtype))
    if self.cfg.positions == 'learned':
      x = x + jax.lax.dynamic_slice_in_dim(self.pos_embed[...], start, time).astype(x.dtype)
    new_cache = []
    for block, kv in zip(self.blocks, cache, strict=True):
      x, kv = block.extend(x, kv, start)
      new_cache.append(kv)
    return self.embed.attend(self.final_norm(x)), new_cache

  def generate(self, prompts: jax.Array, steps: int) -> jax.Array:
    """Greedy continuation: ``steps`` tokens [batch, steps] (int32) after ``prompts``
    [batch, length], each the argmax of the logits given the prompt and the tokens before it.

    One pass over the prompt fills a KV cache of ``length + steps - 1`` positions, then a
    ``lax.scan`` adds one token per step (fixed shapes: one compilation; vmappable over
    parameters). Attention is dense whatever ``cfg.attention``.
    """
    batch, length = prompts.shape
    if steps < 1 or length < 1 or length + steps - 1 > self.cfg.context:
      raise ValueError(
          f'generate: a prompt of {length} tokens continued by {steps} needs '
          f'{length + steps - 1} positions; the context is {self.cfg.context}')
    cache = self.init_cache(batch, length + steps - 1)
    logits, cache = self.extend(prompts, cache, jnp.int32(0))
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

    def step(carry, position):
      token, cache = carry
      logits, cache = self.extend(token[:, None], cache, position)
      return (jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache), token

    positions = jnp.arange(length, length + steps - 1, dtype=jnp.int32)
    (last, _), tokens = jax.lax.scan(step, (first, cache), positions)
    return jnp.concatenate([tokens.T, last[:, None]], axis=1)


class GreedyGenerator(Transformer):
  """A ``Transformer`` (same parameters) whose call is ``generate(prompts, steps)``: the module
  behind a ``core.pure`` generator, e.g. ``pure(lambda r: GreedyGenerator(cfg, rngs=r)).apply(
  params, prompts, 64)`` with the parameters of the ``Transformer`` of ``cfg``."""

  def __call__(self, prompts: jax.Array, steps: int) -> jax.Array:  # type: ignore[override]
    return self.generate(prompts, steps)


def transformer_from_config(model_config: Any) -> TransformerConfig:
  """``TransformerConfig`` from a mapping with exactly its fields (e.g. ``config.model``)."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  values = dict(model_config)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(
        f"model: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(fields))}"
    )
  return TransformerConfig(**values)
