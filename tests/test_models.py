"""Tests of jaxopt_lab.models: shapes, parameter counts, causality, tied head, FLOPs, purity."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jaxopt_lab import models

SMALL = dict(vocab=256, width=32, depth=2, heads=4, context=16)


def _lm(**overrides) -> tuple[models.TransformerConfig, models.PureModel]:
  cfg = models.TransformerConfig(**{**SMALL, **overrides})
  return cfg, models.pure(lambda rngs: models.Transformer(cfg, rngs=rngs))


@functools.cache
def _small_lm(positions: str):
  """(cfg, model, params, jitted apply) of a small LM; built once, shared by tests."""
  cfg, model = _lm(positions=positions)
  params = jax.jit(model.init)(jax.random.key(0))
  return cfg, model, params, jax.jit(model.apply)


@pytest.fixture(params=['learned', 'rope'])
def lm(request):
  return _small_lm(request.param)


def _tokens(shape, seed=0) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.int32)


# ----------------------------------------------------------------------------- pure functions


def test_init_vmaps_over_keys_like_a_loop():
  model = models.pure(lambda rngs: models.MLP((3, 5, 2), rngs=rngs))
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.jit(jax.vmap(model.init))(keys)
  init = jax.jit(model.init)
  for i in range(3):
    single = init(keys[i])
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched), strict=True):
      np.testing.assert_allclose(a, b[i], rtol=1e-6)
      assert a.dtype == jnp.float32
  kernels = batched['layers']['0']['kernel']
  assert not np.allclose(kernels[0], kernels[1])  # Different keys, different params.
  raw_key = init(jax.random.PRNGKey(0))  # Raw uint32 keys work too.
  assert jax.tree.structure(raw_key) == jax.tree.structure(single)


def test_apply_vmaps_over_params_like_a_loop():
  cfg, model, params, apply = _small_lm('rope')
  scales = jnp.array([1.0, 0.5, 2.0])
  params = jax.tree.map(lambda a: a * scales.reshape(-1, *[1] * a.ndim), params)
  x = _tokens((2, 16))
  batched = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(params, x)
  assert batched.shape == (3, 2, 16, cfg.vocab)
  for i in range(3):
    single = apply(jax.tree.map(lambda a, i=i: a[i], params), x)
    np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)


def test_pure_rejects_non_parameter_state():
  class WithDropout(models.MLP):
    def __init__(self, rngs):
      super().__init__((2, 2), rngs=rngs)
      self.dropout = nnx.Dropout(0.5, rngs=rngs)

  with pytest.raises(ValueError, match='other than nnx.Param'):
    models.pure(WithDropout)


# ----------------------------------------------------------------------------- small models


def test_logistic_regression_is_an_affine_logit():
  model = models.pure(lambda rngs: models.LogisticRegression(10, rngs=rngs))
  params = jax.jit(model.init)(jax.random.key(0))
  assert model.param_count == 11
  x = np.random.default_rng(0).standard_normal((7, 10)).astype(np.float32)
  w, b = np.asarray(params['linear']['kernel']), np.asarray(params['linear']['bias'])
  logits = jax.jit(model.apply)(params, x)
  assert logits.shape == (7,)
  np.testing.assert_allclose(logits, x @ w[:, 0] + b[0], rtol=1e-5, atol=1e-6)


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize(
    'activation, fn', [('relu', lambda x: np.maximum(x, 0)), ('gelu', _gelu_tanh),
                       ('tanh', np.tanh)]
)
def test_mlp_matches_numpy_forward(activation, fn):
  model = models.pure(lambda rngs: models.MLP((64, 256, 256, 10), activation, rngs=rngs))
  # 64*256 + 256 + 256*256 + 256 + 256*10 + 10, counted by hand.
  assert model.param_count == 16640 + 65792 + 2570
  params = jax.jit(model.init)(jax.random.key(0))
  x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
  h = x
  for i in range(3):
    layer = params['layers'][str(i)]
    if i:
      h = fn(h)
    h = h @ np.asarray(layer['kernel']) + np.asarray(layer['bias'])
  np.testing.assert_allclose(jax.jit(model.apply)(params, x), h, rtol=1e-4, atol=1e-5)


def test_unknown_activation_lists_choices():
  with pytest.raises(ValueError, match=r"model.activation: unknown activation 'swish'.*relu, gelu"):
    models.MLP((2, 2), 'swish', rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- transformer


@pytest.mark.parametrize('positions, norm, expected', [
    # embedding 256*32 + positions 16*32 + 2 blocks * (qkv 32*96 + out 32*32 + mlp 2*32*128
    # + 2 RMSNorm scales of 32) + final scale 32.
    ('learned', 'rmsnorm', 256 * 32 + 16 * 32 + 2 * (3072 + 1024 + 8192 + 64) + 32),
    # no position table; LayerNorm has scale and bias.
    ('rope', 'layernorm', 256 * 32 + 2 * (3072 + 1024 + 8192 + 128) + 64),
])
def test_transformer_param_count_by_hand(positions, norm, expected):
  cfg, model = _lm(positions=positions, norm=norm)
  assert models.param_count(cfg) == expected
  assert model.param_count == expected
  assert models.nonembedding_param_count(cfg) == expected - 256 * 32 - (
      16 * 32 if positions == 'learned' else 0)
  shapes = jax.tree.map(lambda s: s.shape, model.param_shapes)
  assert shapes['embed']['embedding'] == (256, 32)
  assert shapes['blocks']['1']['attn']['qkv']['kernel'] == (32, 96)
  assert shapes['blocks']['0']['mlp']['down']['kernel'] == (128, 32)


@pytest.mark.parametrize('size, params', [('tiny', 443_008), ('small', 25_567_744)])
def test_lm_size_param_counts(size, params):
  from jaxopt_lab import tasks

  cfg = models.transformer_from_config(tasks.lm_size_config(size).model)
  model = models.pure(lambda rngs: models.Transformer(cfg, rngs=rngs))  # Abstract: no arrays.
  w, d, c = cfg.width, cfg.depth, cfg.context
  assert params == 256 * w + c * w + d * (12 * w * w + 2 * w) + w
  assert models.param_count(cfg) == model.param_count == params


def test_causal(lm):
  _, _, params, apply = lm
  x = _tokens((2, 16))
  base = apply(params, x)
  for t in (0, 7, 15):
    changed = x.at[:, t:].set((x[:, t:] + 1 + jnp.arange(16 - t)) % 256)
    out = apply(params, changed)
    np.testing.assert_allclose(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
    assert np.abs(out[:, t] - base[:, t]).max() > 1e-3  # The changed token is seen.


@pytest.mark.parametrize('positions', ['learned', 'rope'])
def test_fused_attention_equals_dense(positions):
  _, _, params, apply = _small_lm(positions)
  _, fused = _lm(positions=positions, attention='fused')
  x = _tokens((2, 16))
  np.testing.assert_allclose(jax.jit(fused.apply)(params, x), apply(params, x), rtol=1e-5,
                             atol=1e-5)
  grad = lambda m: jax.jit(jax.grad(lambda p: m.apply(p, x)[:, :9, 3].sum()))(params)  # noqa: E731
  for a, b in zip(jax.tree.leaves(grad(fused)), jax.tree.leaves(grad(_small_lm(positions)[1])),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rope_positions_are_relative():
  q = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 8)), (12, 1, 8))
  k = jnp.broadcast_to(jax.random.normal(jax.random.key(1), (1, 8)), (12, 1, 8))
  rq, rk = models.transformer.apply_rope(q), models.transformer.apply_rope(k)
  dots = jnp.einsum('tnh,snh->ts', rq, rk)
  np.testing.assert_allclose(dots[5, 2], dots[9, 6], rtol=1e-5)  # Offset 3 both times.
  np.testing.assert_allclose(dots[3, 3], q[0, 0] @ k[0, 0], rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
  assert abs(dots[5, 2] - dots[5, 3]) > 1e-3


def test_output_head_is_tied_to_the_embedding(lm):
  cfg, model, params, apply = lm
  vocab_sized = [p for p, s in jax.tree_util.tree_flatten_with_path(model.param_shapes)[0]
                 if cfg.vocab in s.shape]
  assert len(vocab_sized) == 1  # Only the embedding has a vocab axis: no separate head.
  x = _tokens((2, 16)) % 200  # Tokens 200..255 never appear in the input.
  params = jax.tree.map(lambda a: a, params)  # A new dict: the fixture's stays unchanged.
  params['embed'] = {'embedding': params['embed']['embedding'].at[231].set(0.0)}
  logits = apply(params, x)
  np.testing.assert_array_equal(logits[..., 231], 0.0)
  assert np.abs(logits[..., 230]).min() > 0
  grad = jax.jit(jax.grad(lambda p: model.apply(p, x)[..., 250].sum()))(params)
  assert np.abs(grad['embed']['embedding'][250]).sum() > 0  # The head's gradient, via the tie.


def test_bfloat16_computes_in_bf16_with_float32_params():
  cfg32, _, params, apply32 = _small_lm('learned')
  _, model16 = _lm(dtype='bfloat16')
  params16 = jax.eval_shape(model16.init, jax.random.key(0))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params16))
  x = _tokens((2, 16))
  out16 = jax.jit(model16.apply)(params, x)
  out32 = apply32(params, x)
  assert out16.dtype == jnp.bfloat16 and out32.dtype == jnp.float32
  np.testing.assert_allclose(out16.astype(jnp.float32), out32, atol=0.05 * np.abs(out32).max())
  hlo = jax.jit(model16.apply).lower(params, x).as_text()
  assert 'bf16' in hlo and hlo.count('dot_general') >= 4 * cfg32.depth


def test_bfloat16_embedding_gradient_scatters_in_float32():
  # A bf16 scatter-add into the 256-row table took 76 ms of a 90 ms lm_small step on an H200.
  _, _, params, _ = _small_lm('learned')
  _, model16 = _lm(dtype='bfloat16')
  x = _tokens((2, 16))
  loss = lambda p: model16.apply(p, x).astype(jnp.float32).sum()  # noqa: E731
  jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
  scatters = [eqn.invars[0].aval.dtype for eqn in _eqns(jaxpr)
              if eqn.primitive.name.startswith('scatter')]
  assert scatters and all(dtype == jnp.float32 for dtype in scatters), scatters


def _eqns(jaxpr):
  """Every equation of `jaxpr`, into sub-jaxprs."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _eqns(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _eqns(sub)


def _dot_general_flops(jaxpr) -> int:
  """2 * (output size) * (contracted size) for every dot_general, into sub-jaxprs."""
  total = 0
  for eqn in _eqns(jaxpr):
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
  return total


def test_flops_per_token_against_counted_matmuls(lm):
  cfg, model, params, _ = lm
  batch = 4
  tokens = _tokens((batch, cfg.context + 1))

  def loss(p, t):
    return jax.nn.log_softmax(model.apply(p, t[:, :-1]))[..., 0].mean()

  step = jax.value_and_grad(loss)
  counted = _dot_general_flops(jax.make_jaxpr(step)(params, tokens).jaxpr)
  n_tokens = batch * cfg.context
  # Our dense attention also computes the masked half, which the formula (useful work) skips.
  masked_half = 6 * cfg.depth * cfg.context * cfg.width
  assert counted == (models.flops_per_token(cfg) + masked_half) * n_tokens
  # XLA's own count adds the elementwise work (softmax, norms, GELU, Adam-free backward).
  xla = jax.jit(step).lower(params, tokens).compile().cost_analysis()['flops']
  assert counted <= xla <= 1.2 * counted


def test_flops_formula_numbers():
  cfg = models.TransformerConfig(vocab=256, width=512, depth=8, heads=8, context=512)
  assert models.flops_per_token(cfg) == 6 * (12 * 8 * 512**2 + 256 * 512) + 6 * 8 * 512 * 512


@pytest.mark.parametrize('field, value, match', [
    ('positions', 'absolute', r"model.positions: unknown positions 'absolute'.*learned, rope"),
    ('norm', 'batchnorm', r"model.norm: unknown norm 'batchnorm'.*rmsnorm, layernorm"),
    ('attention', 'flash', r"model.attention: unknown attention 'flash'.*dense, fused"),
    ('dtype', 'float16', r"model.dtype: unknown dtype 'float16'.*float32, bfloat16"),
    ('heads', 5, r'model.heads: width 32 is not divisible by heads 5'),
    ('width', 0, r'model.width: must be a positive integer'),
])
def test_bad_transformer_config(field, value, match):
  with pytest.raises(ValueError, match=match):
    models.TransformerConfig(**{**SMALL, field: value})


def test_bad_transformer_inputs(lm):
  _, model, params, _ = lm
  with pytest.raises(ValueError, match='model.context: 17 tokens exceed the context of 16'):
    model.apply(params, _tokens((1, 17)))
  with pytest.raises(ValueError, match=r'model: unknown field\(s\) hiden'):
    models.transformer_from_config({**SMALL, 'hiden': 3})


def test_dense_matmul_gradients_are_the_matmul_s():
  # Its custom kernel gradient (g^T x)^T against NumPy's closed form x^T g, and under vmap over
  # kernels (a sweep's points) against a loop.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 4)).astype(np.float32)
  kernels = rng.normal(size=(2, 4, 6)).astype(np.float32)
  g = rng.normal(size=(3, 5, 6)).astype(np.float32)
  y, vjp = jax.vjp(models.dense_matmul, jnp.asarray(x), jnp.asarray(kernels[0]))
  dx, dk = vjp(jnp.asarray(g))
  np.testing.assert_allclose(y, x @ kernels[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dx, g @ kernels[0].T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, x.reshape(-1, 4).T @ g.reshape(-1, 6), rtol=1e-5, atol=1e-5)
  loss = lambda k: (models.dense_matmul(jnp.asarray(x), k) * g).sum()  # noqa: E731
  batched = jax.vmap(jax.grad(loss))(jnp.asarray(kernels))
  for i in range(2):
    np.testing.assert_allclose(batched[i], x.reshape(-1, 4).T @ g.reshape(-1, 6), rtol=1e-5,
                               atol=1e-5)


def _attention_inputs(shape, dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=shape).astype(dtype)) for _ in range(4)]


def test_causal_attention_equals_jax_dot_product_attention():
  # Outputs and gradients against jax.nn.dot_product_attention(is_causal=True), one call and
  # under vmap over a leading point axis (a sweep's points) against a loop of it.
  q, k, v, r = _attention_inputs((3, 2, 7, 3, 4))  # [points, batch, time, heads, size]
  ref = functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation='xla')
  loss = lambda f: lambda q, k, v, r: (f(q, k, v) * r).sum()  # noqa: E731
  np.testing.assert_allclose(models.causal_attention(q[0], k[0], v[0]), ref(q[0], k[0], v[0]),
                             rtol=1e-5, atol=1e-6)
  ours = jax.vmap(jax.grad(loss(models.causal_attention), argnums=(0, 1, 2)))(q, k, v, r)
  for i in range(3):
    theirs = jax.grad(loss(ref), argnums=(0, 1, 2))(q[i], k[i], v[i], r[i])
    for a, b in zip(ours, theirs, strict=True):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jax.jit(models.causal_attention)(q, k, v),
                             jax.vmap(ref)(q, k, v), rtol=1e-5, atol=1e-6)


def test_causal_attention_float64_against_numpy_and_finite_differences():
  with jax.enable_x64(True):
    q, k, v, _ = _attention_inputs((2, 5, 2, 3), np.float64)
    logits = np.einsum('btnh,bsnh->bnts', q, k) / math.sqrt(3)
    logits = np.where(np.tril(np.ones((5, 5), bool)), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = models.causal_attention(q, k, v)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, np.einsum('bnts,bsnh->btnh', probs, v), rtol=1e-12)
    check_grads(models.causal_attention, (q, k, v), order=1, modes=['rev'],
                              atol=1e-7, rtol=1e-7)


def test_causal_attention_rejects_mismatched_shapes():
  q, k, _, _ = _attention_inputs((2, 5, 2, 3))
  with pytest.raises(ValueError, match='causal_attention: q, k, v must share a shape'):
    models.causal_attention(q, k, k[:, :4])
