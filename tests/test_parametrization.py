"""μP and SP (models/parametrization.py): SP unchanged, μP at its base width is SP, the
coordinate check of Yang et al. (2021, 2022) across widths, and the options' bad inputs."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lab import models
from jaxopt_lab.models import parametrization
from jaxopt_lab.models import transformer as T
from jaxopt_lab.optim import alias, multipliers

# Real text (this file's bytes), 8 windows of 17 tokens.
_TEXT = np.frombuffer(pathlib.Path(__file__).read_bytes()[:8 * 17], np.uint8).astype(np.int32)
TOKENS = jnp.asarray(_TEXT.reshape(8, 17))


def _cfg(width, kind='sp', base=32, **kw):
  return T.TransformerConfig(width=width, depth=2, heads=4, context=16, parametrization=kind,
                             base_width=base, **kw)


def _loss(model, params, tokens):
  logits = model.apply(params, tokens[:, :-1]).astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]
  return (jax.nn.logsumexp(logits, -1) - picked).mean()


def _train(cfg, lr, steps, lr_mults='declared', seed=0):
  """Params after `steps` Adam steps on TOKENS, updates scaled by the declared multipliers."""
  model = models.pure(lambda r: T.Transformer(cfg, rngs=r))
  params = model.init(jax.random.key(seed))
  tree = T.lr_multipliers(cfg, params) if lr_mults == 'declared' else lr_mults
  tx = multipliers.with_multipliers(alias.adam(lr), tree)

  @jax.jit
  def run(params):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda q: _loss(model, q, TOKENS))(p)
      u, s = tx.update(g, s, p)
      return (jax.tree.map(jnp.add, p, u), s), None
    (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return p

  return model, params, run(params)


def _activation_change(cfg, lr=1e-2, steps=3, lr_mults='declared'):
  """Yang et al.'s coordinate check: mean |h_t - h_0| of each layer's output after `steps`."""
  _, p0, pt = _train(cfg, lr, steps, lr_mults)
  probe = models.pure(lambda r: T.Probe(cfg, rngs=r))
  before, after = probe.apply(p0, TOKENS[:, :-1]), probe.apply(pt, TOKENS[:, :-1])
  layers = ('embedding', 'block_0', 'block_1', 'logits')
  return {k: float(jnp.mean(jnp.abs(after[k] - before[k]))) for k in layers}


WIDTHS = (32, 128, 512)


def _spread(kind, **kw):
  """Per layer: largest over smallest activation change across WIDTHS, and widest / narrowest."""
  sizes = [_activation_change(_cfg(w, kind), **kw) for w in WIDTHS]
  return {k: (max(s[k] for s in sizes) / min(s[k] for s in sizes), sizes[-1][k] / sizes[0][k])
          for k in sizes[0]}


def test_coordinate_check_mup_is_flat_and_sp_grows():
  mup, sp = _spread('mup'), _spread('sp')
  for layer, (spread, _) in mup.items():
    assert spread <= 2.0, (layer, mup)
  # SP's hidden and output activations move ~width times more (Adam's update is ~lr per entry).
  for layer in ('block_0', 'block_1', 'logits'):
    assert sp[layer][1] > 4.0, (layer, sp)


def test_coordinate_check_fails_without_the_lr_multipliers():
  # Planted: μP's init and forward multipliers, but every learning rate as SP's.
  ones = lambda cfg: jax.tree.map(lambda _: 1.0, T.lr_multipliers(cfg, models.pure(  # noqa: E731
      lambda r: T.Transformer(cfg, rngs=r)).param_shapes))
  sizes = [_activation_change(_cfg(w, 'mup'), lr_mults=ones(_cfg(w, 'mup'))) for w in WIDTHS]
  assert sizes[-1]['block_1'] / sizes[0]['block_1'] > 2.0, sizes


def test_coordinate_check_fails_without_the_output_multiplier(monkeypatch):
  real = parametrization.multipliers
  monkeypatch.setattr(parametrization, 'multipliers',
                      lambda *a: real(*a)._replace(output=1.0))
  sizes = [_activation_change(_cfg(w, 'mup')) for w in WIDTHS]
  assert sizes[-1]['logits'] / sizes[0]['logits'] > 2.0, sizes


@pytest.mark.parametrize('qk_norm', [False, True])
def test_mup_at_base_width_is_sp_bit_for_bit(qk_norm):
  sp, mup = _cfg(64, 'sp', qk_norm=qk_norm), _cfg(64, 'mup', base=64, qk_norm=qk_norm)
  for a, b in zip(_train(sp, 3e-3, 3)[1:], _train(mup, 3e-3, 3)[1:], strict=True):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sp_is_the_model_without_the_new_fields():
  # A config written before the options existed (no parametrization / base_width / qk_norm)
  # builds today's model: same parameters, logits and trained parameters, bit for bit.
  old = T.transformer_from_config(dict(width=64, depth=2, heads=4, context=16))
  new = _cfg(64, 'sp', base=16)
  for a, b in zip(_train(old, 3e-3, 3, lr_mults=None)[1:], _train(new, 3e-3, 3)[1:], strict=True):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  assert T.lr_multipliers(new, models.pure(lambda r: T.Transformer(new, rngs=r)).param_shapes) \
      == jax.tree.map(lambda _: 1.0, models.pure(lambda r: T.Transformer(new, rngs=r)).param_shapes)


def test_mup_multipliers_follow_table_8():
  m = parametrization.multipliers('mup', 256, 64)
  assert m == parametrization.Multipliers(4.0, 0.5, 0.25, 2.0, 0.5)
  cfg = _cfg(256, 'mup', base=64)
  model = models.pure(lambda r: T.Transformer(cfg, rngs=r))
  params = model.init(jax.random.key(1))
  # Hidden init std 0.02 / sqrt(m); the tied embedding keeps 0.02 (init std measured over
  # 256 x 768 draws: a relative standard error of 0.2 %; 5 % is 25 of them).
  qkv = params['blocks']['0']['attn']['qkv']['kernel']
  np.testing.assert_allclose(np.std(qkv), 0.02 / 2, rtol=0.05)
  np.testing.assert_allclose(np.std(params['embed']['embedding']), 0.02, rtol=0.05)
  mults = T.lr_multipliers(cfg, params)
  assert mults['blocks']['0']['mlp']['down']['kernel'] == 0.25
  assert mults['embed']['embedding'] == 1.0 and mults['final_norm']['scale'] == 1.0
  # The logits: the tied readout of the final norm times 1/m.
  seen = models.pure(lambda r: T.Probe(cfg, rngs=r)).apply(params, TOKENS[:, :-1])
  x = seen['block_1']
  normed = x / jnp.sqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6) * params['final_norm']['scale']
  np.testing.assert_allclose(seen['logits'], normed @ params['embed']['embedding'].T / 4,
                             rtol=1e-4, atol=1e-6)
  # Attention logits q.k sqrt(d0) / d = SP's q.k / sqrt(d) times 1/2 here (one block: the same
  # inputs to its attention under both).
  one = {'mup': _cfg(256, 'mup', base=64), 'sp': _cfg(256, 'sp')}
  one = {k: T.TransformerConfig(**{**c.__dict__, 'depth': 1}) for k, c in one.items()}
  p1 = models.pure(lambda r: T.Transformer(one['sp'], rngs=r)).init(jax.random.key(2))
  top = {k: float(models.pure(lambda r, c=c: T.Probe(c, rngs=r)).apply(
      p1, TOKENS[:, :-1])['max_attention_logit']) for k, c in one.items()}
  np.testing.assert_allclose(top['mup'], top['sp'] / 2, rtol=1e-5)


def test_scale_by_multipliers_scales_each_leaf():
  tx = multipliers.scale_by_multipliers({'a': 0.5, 'b': 1.0})
  u, _ = tx.update({'a': jnp.array([2.0, 4.0]), 'b': jnp.array([3.0])}, tx.init(None))
  np.testing.assert_array_equal(u['a'], [1.0, 2.0])
  np.testing.assert_array_equal(u['b'], [3.0])


def test_qk_norm_bounds_the_attention_logits():
  # Layer-normalised q and k (unit scale, zero bias at init) have norm sqrt(d), so
  # |q.k| / sqrt(d) <= sqrt(d) (Cauchy-Schwarz) however large the projections; without the norm
  # the logits grow with the kernels' scale.
  def top(qk_norm):
    cfg = _cfg(64, qk_norm=qk_norm)
    probe = models.pure(lambda r: T.Probe(cfg, rngs=r))
    params = probe.init(jax.random.key(0))
    for block in params['blocks'].values():
      block['attn']['qkv']['kernel'] = block['attn']['qkv']['kernel'] * 50.0
    return float(probe.apply(params, TOKENS[:, :-1])['max_attention_logit'])

  assert top(True) <= np.sqrt(64 // 4) * (1 + 1e-5)
  assert top(False) > 100


@pytest.mark.parametrize('field,value,message', [
    ('parametrization', 'mupp', "model.parametrization: unknown parametrization 'mupp'"),
    ('base_width', 0, 'model.base_width: must be a positive integer'),
    ('base_width', 30, 'model.base_width: 30 is not divisible by heads 4'),
    ('qk_norm', 'yes', 'model.qk_norm: must be True or False'),
])
def test_bad_model_options(field, value, message):
  values = {**dict(width=32, heads=4, parametrization='mup', base_width=32), field: value}
  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    T.TransformerConfig(**values)


def test_mlp_mup_at_base_width_is_sp_and_scales_the_readout():
  widths = (8, 64, 64, 3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8)), jnp.float32)
  sp = models.pure(lambda r: models.MLP(widths, rngs=r))
  at_base = models.pure(lambda r: models.MLP(widths, parametrization='mup', base_width=64,
                                             rngs=r))
  params = sp.init(jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, params, at_base.init(jax.random.key(0)))
  np.testing.assert_array_equal(sp.apply(params, x), at_base.apply(params, x))
  wide = models.pure(lambda r: models.MLP(widths, parametrization='mup', base_width=16, rngs=r))
  np.testing.assert_allclose(wide.apply(params, x), sp.apply(params, x) / 4, rtol=1e-6)
  mults = models.mlp.mlp_lr_multipliers(widths, 'mup', 16, params)
  assert [mults['layers'][str(i)]['kernel'] for i in range(3)] == [1.0, 0.25, 1.0]
  assert all(mults['layers'][str(i)]['bias'] == 1.0 for i in range(3))
  # The readout's init std: sqrt(m / fan_in) = sqrt(1 / base_width) (Flax's truncated normal
  # rescaled to that std; 64 x 3 draws: a relative standard error ~5 %, 25 % is 5 of them).
  readout = wide.init(jax.random.key(3))['layers']['2']['kernel']
  np.testing.assert_allclose(np.std(readout), 1 / 4, rtol=0.25)
