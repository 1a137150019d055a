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

from jaxopt_lab.models import parametrization
from jaxopt_lab.models.attention import causal_attention
from jaxopt_lab.models.core import compute_dtype
from jaxopt_lab.models.counts import (  # noqa: F401  (public here too)
  flops_per_token,
  nonembedding_param_count,
  param_count,
)
from jaxopt_lab.models.layers import apply_rope, dense_matmul, project  # noqa: F401
from jaxopt_lab.optim import multipliers

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
    parametrization: 'sp' (GPT-2's, below) or 'mup' (``parametrization.py``: hidden init and
      learning rates, the attention scale and the logits scaled by ``width / base_width``).
    base_width: the width at which 'mup' is 'sp' exactly (its head size ``base_width / heads``).
    qk_norm: layer-normalise the queries and keys of each head before their product (a scale
      and bias per head channel; Dehghani et al. 2023, Wortsman et al. 2023).
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
  parametrization: str = 'sp'
  base_width: int = 128
  qk_norm: bool = False

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
    parametrization.check(self.parametrization, self.base_width)
    if self.parametrization == 'mup' and self.base_width % self.heads:
      raise ValueError(f'model.base_width: {self.base_width} is not divisible by heads '
                       f'{self.heads} (the base head size)')
    if not isinstance(self.qk_norm, bool):
      raise ValueError(f'model.qk_norm: must be True or False; got {self.qk_norm!r}')
    if self.width % self.heads:
      raise ValueError(
          f'model.heads: width {self.width} is not divisible by heads {self.heads}'
      )
    if self.positions == 'rope' and (self.width // self.heads) % 2:
      raise ValueError(
          f'model.heads: rope needs an even head size; width {self.width} / heads '
          f'{self.heads} = {self.width // self.heads}'
      )


def _multipliers(cfg: TransformerConfig) -> parametrization.Multipliers:
  return parametrization.multipliers(cfg.parametrization, cfg.width, cfg.base_width)


def _make_norm(cfg: TransformerConfig, rngs: nnx.Rngs, kind: str | None = None,
               size: int | None = None) -> nnx.Module:
  kwargs = dict(dtype=compute_dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)
  if (kind or cfg.norm) == 'rmsnorm':
    return nnx.RMSNorm(size or cfg.width, epsilon=1e-6, **kwargs)
  return nnx.LayerNorm(size or cfg.width, epsilon=1e-6, **kwargs)


def _dense(n_in: int, n_out: int, cfg: TransformerConfig, std: float, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(
      n_in, n_out, use_bias=False, kernel_init=nnx.initializers.normal(std),
      dtype=compute_dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs,
  )


class CausalSelfAttention(nnx.Module):
  """Multi-head self-attention where position t attends to positions <= t."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.heads = cfg.heads
    self.rope = cfg.positions == 'rope'
    self.fused = cfg.attention == 'fused'
    mult = _multipliers(cfg)
    self.query_scale = mult.attention
    std = _INIT_STD * mult.hidden_init
    self.qkv = _dense(cfg.width, 3 * cfg.width, cfg, std, rngs)
    self.out = _dense(cfg.width, cfg.width, cfg, std / math.sqrt(2 * cfg.depth), rngs)
    if cfg.qk_norm:
      size = cfg.width // cfg.heads
      self.q_norm = _make_norm(cfg, rngs, 'layernorm', size)
      self.k_norm = _make_norm(cfg, rngs, 'layernorm', size)

  def _qkv(self, x: jax.Array, start: jax.typing.ArrayLike = 0):
    """Queries (scaled by μP's attention factor), keys and values [batch, time, heads, size]
    of positions ``start, ...``: qk-norm, then rope."""
    batch, time, width = x.shape
    qkv = project(self.qkv, x).reshape(batch, time, 3, self.heads, width // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if hasattr(self, 'q_norm'):
      q, k = self.q_norm(q), self.k_norm(k)
    if self.rope:
      q, k = apply_rope(q, start=start), apply_rope(k, start=start)
    return parametrization.scaled(q, self.query_scale), k, v

  def max_logit(self, x: jax.Array) -> jax.Array:
    """The largest attention logit (scaled, as the softmax sees it) over the causal pairs,
    heads and batch of ``x``; float32."""
    q, k, _ = self._qkv(x)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones(logits.shape[-2:], dtype=bool))
    return jnp.max(jnp.where(causal, logits, -jnp.inf))

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, time, width = x.shape
    size = width // self.heads
    q, k, v = self._qkv(x)
    if self.fused:
      # jax picks XLA's implementation unless told: cuDNN's flash attention takes 16-bit inputs.
      cudnn = jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16)
      y = jax.nn.dot_product_attention(
          q, k, v, is_causal=True, implementation='cudnn' if cudnn else 'xla')
      return project(self.out, y.reshape(batch, time, width))
    if jax.default_backend() == 'cpu' and q.dtype == jnp.float32:
      # The same math with a hand-written backward (models/attention.py; measured on a CPU only).
      return project(self.out, causal_attention(q, k, v).reshape(batch, time, width))
    # Logits in the compute dtype, softmax in float32. (A float32-output einsum of bfloat16 inputs
    # would make the backward pass multiply float32 by bfloat16, which XLA's GPU matmuls don't
    # take natively; measured a few percent slower on an H200.)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k).astype(jnp.float32) / math.sqrt(size)
    causal = jnp.tril(jnp.ones((time, time), dtype=bool))
    logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum('bnts,bsnh->btnh', probs, v).reshape(batch, time, width)
    return project(self.out, y)

  def extend(self, x: jax.Array, cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """Attention of ``x`` [batch, time, width] at positions ``start, ...`` to themselves and to
    the earlier positions held in ``cache``; returns the output and the cache with the new keys
    and values written. The math of ``__call__`` (dense, float32 softmax) over a longer, masked
    key axis; ``__call__`` of the whole prefix gives the same outputs up to rounding."""
    batch, time, width = x.shape
    size = width // self.heads
    q, k, v = self._qkv(x, start)
    keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), start, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), start, 1)
    logits = jnp.einsum('btnh,bsnh->bnts', q, keys).astype(jnp.float32) / math.sqrt(size)
    seen = jnp.arange(keys.shape[1])[None, :] <= start + jnp.arange(time)[:, None]  # [t, s]
    logits = jnp.where(seen, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    y = jnp.einsum('bnts,bsnh->btnh', probs, values).reshape(batch, time, width)
    return project(self.out, y), (keys, values)


class FeedForward(nnx.Module):
  """``width -> 4 width -> width`` with a GELU."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    std = _INIT_STD * _multipliers(cfg).hidden_init
    self.up = _dense(cfg.width, 4 * cfg.width, cfg, std, rngs)
    self.down = _dense(4 * cfg.width, cfg.width, cfg, std / math.sqrt(2 * cfg.depth), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return project(self.down, jax.nn.gelu(project(self.up, x)))


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
    return self.readout(x).reshape(*lead, time, self.cfg.vocab)

  def readout(self, x: jax.Array) -> jax.Array:
    """Logits of the last block's output: the tied head after the final norm, times μP's
    output multiplier (Table 8's readout of a tied embedding)."""
    logits = self.embed.attend(self.final_norm(x))
    return parametrization.scaled(logits, _multipliers(self.cfg).output)

  def probe(self, tokens: jax.Array) -> dict[str, jax.Array]:
    """What a scale study watches, of ``tokens`` [batch, time]: each layer's output
    (``embedding``, ``block_<i>``, ``logits``) and the largest attention logit of any block."""
    table = self.embed.embedding[...]
    x = jnp.take(table, tokens.astype(jnp.int32), axis=0).astype(compute_dtype(self.cfg.dtype))
    if self.cfg.positions == 'learned':
      x = x + self.pos_embed[:tokens.shape[-1]].astype(x.dtype)
    out, attention = {'embedding': x}, []
    for i, block in enumerate(self.blocks):
      attention.append(block.attn.max_logit(block.attn_norm(x)))
      x = block(x)
      out[f'block_{i}'] = x
    out['logits'] = self.readout(x)
    out['max_attention_logit'] = jnp.max(jnp.stack(attention))
    return out

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
    return self.readout(x), new_cache

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


class Probe(Transformer):
  """A ``Transformer`` (same parameters) whose call is ``probe(tokens)``."""

  def __call__(self, tokens: jax.Array) -> dict[str, jax.Array]:  # type: ignore[override]
    return self.probe(tokens)


def lr_multipliers(cfg: TransformerConfig, params: Any, rule: str = 'adam') -> Any:
  """The per-parameter learning-rate multipliers of ``cfg``'s parametrization under μP's
  ``rule`` (``optim.multipliers``: 'adam' or 'sgd'), a tree of Python floats shaped like
  ``params`` (all 1 under SP and at the base width). The kernels of ``qkv``, ``out``, ``up``,
  ``down`` are hidden weights (every dimension grows with the width: m of the fan-in); every
  other parameter has the width as its one growing dimension, input-like: the embeddings (the
  tied one is also the readout; input and output weights have equal factors under both rules),
  norm gains and biases, the query / key norms (of the head size, width / heads)."""
  m = _multipliers(cfg).width

  def of(path, _):
    names = [str(getattr(k, 'key', k)) for k in path]
    hidden = names[-1] == 'kernel' and names[-2] in ('qkv', 'out', 'up', 'down')
    return multipliers.mup_lr(rule, 'hidden' if hidden else 'input', m)

  return jax.tree_util.tree_map_with_path(of, params)


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
