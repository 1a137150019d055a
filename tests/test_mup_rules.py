"""μP's learning-rate rules for the Adam and the SGD family (optim/multipliers.py): derived from
Tensor Programs V's Table 3, laid out on the models' parameters, and reaching a user's
SGD-family optimizer through its declaration."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from small_configs import tiny_lm_config

from jaxopt_lab import models, train
from jaxopt_lab import single as single_run
from jaxopt_lab.models import transformer as T
from jaxopt_lab.optim import factory, multipliers, registry

# Yang et al. 2022 ("Tensor Programs V", arXiv 2203.03466), Table 3: μP's learning rates as
# powers of the width n (fan_out for input weights and biases, fan_in otherwise), in the form
# without multipliers, where the output weights are initialised with variance 1 / fan_in^2.
TABLE_3_LR = {'sgd': {'input': 1, 'hidden': 0, 'output': -1},
              'adam': {'input': 0, 'hidden': -1, 'output': -1}}
# Table 8's form (the models'): the output weights are W = W' / fan_in (a multiplier n^-1 on
# the logits) with W' initialised at a width-independent variance; the others unchanged.
MULTIPLIER_POWER = {'input': 0, 'hidden': 0, 'output': -1}
# Training W = c W' at lr eta' moves W by c * (the update of W'), and dL/dW' = c dL/dW. SGD:
# dW = -eta' c^2 dL/dW, so eta' = eta_W / c^2; a scale-invariant update (Adam): u(c g) = u(g),
# dW = -eta' c u, so eta' = eta_W / c. In powers of n: p' = p_W - k q, k = 2 (SGD) or 1 (Adam).
GRADIENT_POWER = {'sgd': 2, 'adam': 1}


def test_the_declared_rules_are_table_3_reparametrized():
  derived = {rule: {layer: TABLE_3_LR[rule][layer] - GRADIENT_POWER[rule] * MULTIPLIER_POWER[layer]
                    for layer in multipliers.LAYERS} for rule in multipliers.RULES}
  assert multipliers.MUP_LR_POWERS == derived
  assert derived['sgd'] == {'input': 1, 'hidden': 0, 'output': 1}  # the mup package's MuSGD
  for rule in multipliers.RULES:
    for layer in multipliers.LAYERS:
      assert multipliers.mup_lr(rule, layer, 4.0) == 4.0 ** derived[rule][layer]
      assert multipliers.mup_lr(rule, layer, 1.0) == 1.0


@pytest.mark.parametrize('rule,optimizer', [('sgd', optax.sgd), ('adam', optax.adam)])
def test_the_reparametrization_rule_against_optax(rule, optimizer):
  # The derivation's step, checked on Optax's own optimizers: W = c W' trained at eta / c^k
  # follows W trained at eta (k from GRADIENT_POWER), on a quadratic loss, 5 steps.
  c, eta = 0.25, 1e-2
  target = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)

  def run(scale, lr):
    tx = optimizer(lr)
    w = jnp.ones((4, 3)) / scale
    state = tx.init(w)
    for _ in range(5):
      g = jax.grad(lambda v: jnp.sum((scale * v - target) ** 2))(w)
      u, state = tx.update(g, state, w)
      w = w + u
    return scale * w

  direct, reparametrized = run(1.0, eta), run(c, eta / c ** GRADIENT_POWER[rule])
  # float32: 5 steps of a few roundings each on values of order 1 (Adam's eps, 1e-8, against
  # gradients of order 1, moves the invariance by ~1e-8 too).
  np.testing.assert_allclose(reparametrized, direct, rtol=1e-5, atol=1e-6)


def test_the_models_lay_the_rules_on_their_parameters():
  cfg = T.TransformerConfig(width=64, depth=1, heads=4, context=16, parametrization='mup',
                            base_width=16, qk_norm=True)
  shapes = models.pure(lambda r: T.Transformer(cfg, rngs=r)).param_shapes
  sgd, adam = T.lr_multipliers(cfg, shapes, 'sgd'), T.lr_multipliers(cfg, shapes, 'adam')
  block = sgd['blocks']['0']
  # m = 4: hidden matrices at lr x 1 under SGD (x 1/4 under Adam); every vector-like parameter
  # (embeddings, the tied readout, norm gains, the query / key norms) at lr x 4 (x 1 under Adam).
  assert [block['attn']['qkv']['kernel'], block['mlp']['down']['kernel']] == [1.0, 1.0]
  assert adam['blocks']['0']['attn']['qkv']['kernel'] == 0.25
  assert {sgd['embed']['embedding'], sgd['pos_embed'], sgd['final_norm']['scale'],
          block['attn']['q_norm']['scale'], block['attn_norm']['scale']} == {4.0}
  assert set(jax.tree.leaves(adam)) == {1.0, 0.25}
  widths = (8, 64, 64, 3)
  params = models.pure(lambda r: models.MLP(widths, rngs=r)).param_shapes
  mlp = models.mlp.mlp_lr_multipliers(widths, 'mup', 16, params, 'sgd')
  assert [mlp['layers'][str(i)]['kernel'] for i in range(3)] == [4.0, 1.0, 4.0]
  assert [mlp['layers'][str(i)]['bias'] for i in range(3)] == [4.0, 4.0, 1.0]  # 3 classes: fixed
  assert jax.tree.leaves(models.mlp.mlp_lr_multipliers((8, 3), 'mup', 2, models.pure(
      lambda r: models.MLP((8, 3), rngs=r)).param_shapes, 'sgd')) == [1.0, 1.0]


HEAVY_BALL = '''
import optax
from jaxopt_lab.optim import registry


def heavy_ball(learning_rate, beta=0.9):
  return optax.chain(optax.trace(decay=beta), optax.scale_by_learning_rate(learning_rate))


heavy_ball = registry.declare(heavy_ball, mup_rule='sgd')
'''


def test_a_user_s_sgd_family_optimizer_gets_sgd_s_rule(tmp_path):
  # A user's heavy ball, declared 'sgd' in its own file: the trainer scales its updates by the
  # task's SGD tree, with no other change to the optimizer.
  (tmp_path / 'heavy.py').write_text(HEAVY_BALL)
  config = tiny_lm_config(parametrization='mup', base_width=16)  # width 32: m = 2
  config.optimizer.name = f'{tmp_path / "heavy.py"}:heavy_ball'
  config.optimizer.learning_rate = 0.1
  task, hparams = single_run.validate(config)
  assert factory.resolve(config.optimizer.name).mup_rule == 'sgd'
  state = train.init_state(task, config, hparams, 0)
  batch = jax.tree.map(lambda x: x[0], task.train_batches(0, 0, 1))
  new, _ = train.make_train_step(task, config)(state, batch, hparams)
  plain = train.make_optimizer(config, hparams)  # the user's optimizer alone
  grads = jax.grad(lambda p: task.loss_fn(p, batch)[0])(state.params)
  updates, _ = plain.update(grads, plain.init(state.params), state.params)
  rule = task.lr_multipliers['sgd']
  assert rule['embed']['embedding'] == 2.0 and rule['blocks']['0']['attn']['qkv']['kernel'] == 1.0
  expected = jax.tree.map(lambda p, u, c: p + c * u, state.params, updates, rule)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), new.params,
               expected)


def test_the_built_ins_rules_and_a_bad_rule():
  assert factory.resolve('sgd').mup_rule == 'sgd'
  assert {factory.resolve(n).mup_rule for n in ('adam', 'adamw', 'rmsprop')} == {'adam'}
  with pytest.raises(ValueError, match="optimizer 'f': mup_rule: unknown μP rule 'lion'; "
                                       "valid choices: adam, sgd"):
    registry.declare(lambda learning_rate: optax.sgd(learning_rate), name='f', mup_rule='lion')
  with pytest.raises(ValueError, match="layer: unknown kind 'bias'"):
    multipliers.mup_lr('sgd', 'bias', 2.0)
