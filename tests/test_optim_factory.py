"""The factory used by the trainer and the sweep driver: names, config values, build."""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import defaults
from jaxopt_lab.optim import factory, registry, rounding, testing

TOTAL = 60


def _cfg(**overrides):
  cfg = defaults.optimizer_config()
  cfg.update(overrides)
  return cfg


def _params():
  k = jax.random.split(jax.random.key(0), 2)
  return {'w': jax.random.normal(k[0], (3, 4)), 'b': jax.random.normal(k[1], (4,))}


def _grads(params, t):
  return jax.tree.map(lambda x: 1.5 * (x - 0.3) + 0.1 * jnp.cos(jnp.asarray(t, x.dtype) * x),
                      params)


def _trajectory(opt, steps=TOTAL):
  return testing.trajectory(opt, steps, _params(), _grads)


def _assert_close(a, b, opt_b, err_msg=''):
  """`a` within twice the derived float32 rounding bound of `b`, `opt_b`'s run (`rounding`)."""
  assert all(np.all(np.isfinite(y)) for y in jax.tree.leaves(b)), err_msg
  bound = rounding.float32_tolerance(opt_b, TOTAL, _params(), _grads)
  testing.compare_trajectories(a, b, bound=bound, check=err_msg)


# --------------------------------------------------------------------------------------------
# Names and config values.


def test_hparam_names():
  assert factory.hparam_names('sgd') == ('learning_rate', 'momentum', 'warmup', 'clip_norm')
  assert factory.hparam_names('adam') == ('learning_rate', 'b1', 'b2', 'eps', 'warmup',
                                          'clip_norm')
  assert factory.hparam_names('adamw') == ('learning_rate', 'b1', 'b2', 'eps', 'weight_decay',
                                           'warmup', 'clip_norm')
  assert factory.hparam_names('rmsprop') == ('learning_rate', 'decay', 'eps', 'momentum',
                                             'warmup', 'clip_norm')
  for name in registry.registered():
    assert set(factory.hparam_names(name)) <= set(factory.value_factors())
  with pytest.raises(ValueError) as e:
    factory.hparam_names('lion')
  assert str(e.value) == (
      "optimizer.name: unknown optimizer 'lion'; registered: sgd, adam, adamw, rmsprop; or a "
      "plugin: 'path/to/file.py:name', 'package.module:name' or 'optax:<alias>'")


def test_default_config():
  cfg = defaults.optimizer_config()
  assert (cfg.name, cfg.schedule, cfg.nesterov, cfg.centered) == ('adam', 'constant', False, False)
  assert (cfg.learning_rate, cfg.b1, cfg.b2, cfg.eps) == (1e-3, 0.9, 0.999, 1e-8)
  assert (cfg.momentum, cfg.decay, cfg.weight_decay) == (0.0, 0.9, 1e-4)
  assert (cfg.warmup, cfg.clip_norm, cfg.decay_fraction, cfg.end_factor) == (0.0, 0.0, 0.2, 0.0)


@pytest.mark.parametrize('name', registry.registered())
def test_hparams_from_config(name):
  cfg = _cfg(name=name, learning_rate=0.25, momentum=0.5, weight_decay=0.125)
  hp = factory.hparams_from_config(cfg)
  assert tuple(hp) == factory.hparam_names(name)
  for k, v in hp.items():
    assert isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (), k
    assert v == np.float32(getattr(cfg, k))


BAD_CONFIGS = [
    (dict(name='lion'), 'optimizer.name'),
    (dict(learning_rate=-1e-3), 'optimizer.learning_rate'),
    (dict(learning_rate='fast'), 'optimizer.learning_rate'),
    (dict(learning_rate=None), 'optimizer.learning_rate'),
    (dict(learning_rate=True), 'optimizer.learning_rate'),
    (dict(b1=1.0), 'optimizer.b1'),
    (dict(b2=-0.5), 'optimizer.b2'),
    (dict(eps=-1e-8), 'optimizer.eps'),
    (dict(name='adamw', weight_decay=-0.1), 'optimizer.weight_decay'),
    (dict(name='sgd', momentum=1.0), 'optimizer.momentum'),
    (dict(name='rmsprop', decay=1.5), 'optimizer.decay'),
    (dict(warmup=1.5), 'optimizer.warmup'),
    (dict(warmup=-0.1), 'optimizer.warmup'),
    (dict(clip_norm=float('nan')), 'optimizer.clip_norm'),
]


@pytest.mark.parametrize('overrides,field', BAD_CONFIGS,
                         ids=[f'{i}-{f}' for i, (_, f) in enumerate(BAD_CONFIGS)])
def test_bad_config_values_name_the_field(overrides, field):
  cfg = defaults.optimizer_config()
  for k, v in overrides.items():  # Bypass ConfigDict's type check to mimic a user's mistake.
    cfg.unlock()
    del cfg[k]
    cfg[k] = v
  with pytest.raises(ValueError, match=field.replace('.', r'\.')):
    factory.hparams_from_config(cfg)


def test_vector_value_is_rejected_and_a_missing_field_takes_the_declared_default():
  cfg = types.SimpleNamespace(**defaults.optimizer_config().to_dict())
  cfg.learning_rate = [1e-3, 1e-2]
  with pytest.raises(ValueError, match=r'optimizer\.learning_rate.*single number'):
    factory.hparams_from_config(cfg)
  del cfg.b2
  cfg.learning_rate = 1e-3
  cfg.b1 = 0.5
  hp = factory.hparams_from_config(cfg)
  assert (hp['b1'], hp['b2']) == (np.float32(0.5), np.float32(0.999))  # Optax's default b2


def test_out_of_range_and_unknown_fields_name_the_field_and_the_range():
  with pytest.raises(ValueError) as e:
    factory.hparams_from_config(_cfg(b1=1.5))
  assert str(e.value) == 'optimizer.b1 must be in [0, 1), got 1.5'
  cfg = _cfg()
  cfg.learnig_rate = 0.1
  with pytest.raises(ValueError, match=r"optimizer\.learnig_rate: no known optimizer has this "
                                       r"field; 'adam' reads: learning_rate, b1"):
    factory.hparams_from_config(cfg)


# --------------------------------------------------------------------------------------------
# build: the same updates as Optax's aliases (constant schedule, no warmup, no clipping).

REFERENCE = {  # config overrides -> the Optax optimizer build() must reproduce.
    'sgd_plain': (dict(name='sgd', learning_rate=0.05, momentum=0.0), optax.sgd(0.05)),
    'sgd_nesterov': (dict(name='sgd', learning_rate=0.05, momentum=0.875, nesterov=True),
                     optax.sgd(0.05, momentum=0.875, nesterov=True)),
    'adam': (dict(name='adam', learning_rate=0.03125, b1=0.875, b2=0.9375, eps=2**-20),
             optax.adam(0.03125, b1=0.875, b2=0.9375, eps=2**-20)),
    'adamw': (dict(name='adamw', learning_rate=0.03125, weight_decay=0.125),
              optax.adamw(0.03125, b1=float(np.float32(0.9)), b2=float(np.float32(0.999)),
                          eps=float(np.float32(1e-8)), weight_decay=0.125)),
    # Decay of the (3, 4) matrix only, not the (4,) bias.
    'adamw_matrices': (dict(name='adamw', learning_rate=0.03125, weight_decay=0.125,
                            decay_mask='matrices'),
                       optax.adamw(0.03125, b1=float(np.float32(0.9)),
                                   b2=float(np.float32(0.999)), eps=float(np.float32(1e-8)),
                                   weight_decay=0.125, mask={'w': True, 'b': False})),
    'rmsprop': (dict(name='rmsprop', learning_rate=0.0625, decay=0.875, momentum=0.5,
                     centered=True),
                optax.rmsprop(0.0625, decay=0.875, eps=float(np.float32(1e-8)), momentum=0.5,
                              centered=True)),
}


@functools.cache
def _reference_results():
  def run():
    out = {}
    for case, (overrides, ref) in REFERENCE.items():
      cfg = _cfg(**overrides)
      ours = factory.build(cfg, factory.hparams_from_config(cfg), TOTAL)
      out[case] = (_trajectory(ours), _trajectory(ref))
    return out

  return jax.jit(run)()


@pytest.mark.parametrize('case', list(REFERENCE))
def test_build_matches_optax_aliases(case):
  ours, ref = _reference_results()[case]
  _assert_close(ours, ref, REFERENCE[case][1], case)


def test_decay_mask_leaves_biases_alone_and_names_its_choices():
  (ours, _), (everything, _) = (_reference_results()[c] for c in ('adamw_matrices', 'adamw'))
  # Adam is elementwise: the decayed matrix moves as without a mask, the bias does not decay.
  np.testing.assert_array_equal(ours['w'], everything['w'])
  assert not np.allclose(ours['b'], everything['b'])
  with pytest.raises(ValueError, match=r"optimizer\.decay_mask: unknown setting 'bias'; valid "
                                       r"choices: all, matrices"):
    factory.build(_cfg(name='adamw', decay_mask='bias'), {'learning_rate': 0.1, 'b1': 0.9,
                  'b2': 0.99, 'eps': 1e-8, 'weight_decay': 0.1, 'warmup': 0.0,
                  'clip_norm': 0.0}, TOTAL)


# --------------------------------------------------------------------------------------------
# build: schedules, warmup as a fraction, clipping.

PEAK, END_FACTOR, WARMUP, DECAY_FRACTION = 0.5, 0.1, 0.1, 0.25


def _reference_schedule(kind):
  w, d = int(WARMUP * TOTAL), int(DECAY_FRACTION * TOTAL)
  end = END_FACTOR * PEAK
  if kind == 'constant':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, PEAK, w), optax.constant_schedule(PEAK)], [w])
  if kind == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, PEAK, w, TOTAL, end_value=end)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, PEAK, w), optax.constant_schedule(PEAK),
       optax.linear_schedule(PEAK, end, d)], [w, TOTAL - d])


@pytest.mark.parametrize('kind', factory.SCHEDULES)
def test_build_schedules(kind):
  # Plain SGD on a gradient of ones: the update of step t is -lr(t).
  cfg = _cfg(name='sgd', learning_rate=PEAK, warmup=WARMUP, schedule=kind,
             decay_fraction=DECAY_FRACTION, end_factor=END_FACTOR)
  opt = factory.build(cfg, factory.hparams_from_config(cfg), TOTAL)

  def step(state, _):
    updates, state = opt.update(jnp.ones(()), state, jnp.zeros(()))
    return state, -updates

  _, lrs = jax.jit(lambda: jax.lax.scan(step, opt.init(jnp.zeros(())), None, length=TOTAL + 5))()
  expected = jax.vmap(_reference_schedule(kind))(jnp.arange(TOTAL + 5))
  np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-7)
  assert float(lrs[0]) == 0.0 and float(lrs[int(WARMUP * TOTAL)]) == pytest.approx(PEAK)


def test_build_clips_by_global_norm():
  grads = {'a': jnp.full((4,), 30.0), 'b': jnp.full((3,), -40.0)}
  for clip, expected_norm in ((2.0, 2.0), (0.0, float(np.sqrt(4 * 900 + 3 * 1600)))):
    cfg = _cfg(name='sgd', learning_rate=1.0, clip_norm=clip)
    opt = factory.build(cfg, factory.hparams_from_config(cfg), TOTAL)
    updates, _ = opt.update(grads, opt.init(grads), grads)
    norm = np.sqrt(sum(float(jnp.sum(u**2)) for u in jax.tree.leaves(updates)))
    assert norm == pytest.approx(expected_norm, rel=1e-6)


# --------------------------------------------------------------------------------------------
# build with traced hyperparameters: vmap over points = separate builds with floats.

STRUCTURES = {
    'sgd': _cfg(name='sgd', nesterov=True, schedule='wsd'),
    'adam': _cfg(name='adam', schedule='cosine', end_factor=0.1),
    'adamw': _cfg(name='adamw', schedule='constant'),
    'rmsprop': _cfg(name='rmsprop', centered=False, schedule='cosine'),
}
POINTS = [  # Values exact in float32, so Python floats and float32 arrays hold the same numbers.
    dict(learning_rate=0.0625, b1=0.875, b2=0.9921875, eps=2**-20, momentum=0.75, decay=0.875,
         weight_decay=0.125, warmup=0.125, clip_norm=0.0),
    dict(learning_rate=0.015625, b1=0.5, b2=0.9375, eps=2**-27, momentum=0.0, decay=0.96875,
         weight_decay=0.0, warmup=0.0, clip_norm=1.5),
]


@functools.cache
def _vmapped_and_separate():
  """Trajectories of the POINTS: batched (traced float32 arrays), and built from Python floats."""

  def run_all(hp):
    return {name: _trajectory(factory.build(cfg, hp, TOTAL)) for name, cfg in STRUCTURES.items()}

  grid = {k: jnp.asarray([p[k] for p in POINTS], jnp.float32) for k in POINTS[0]}
  batched = jax.jit(jax.vmap(run_all))(grid)
  floats = [jax.jit(functools.partial(run_all, point))() for point in POINTS]
  return batched, floats


@pytest.mark.parametrize('name', list(STRUCTURES))
def test_build_under_vmap_equals_separate_builds_with_floats(name):
  batched, floats = _vmapped_and_separate()
  for i in range(len(POINTS)):
    point = jax.tree.map(lambda x, i=i: x[i], batched[name])
    # Not bit for bit: Python floats are compile-time constants that XLA folds (1 - b1 computed
    # once, a division by a constant made a multiplication), and XLA on CPU fuses some
    # multiply-adds into FMAs in one program and not in the other, differently on each CPU's
    # vector instructions: within the derived rounding bound of either run.
    # (Batched against single runs with the same float32 arrays: test_optim_properties.)
    _assert_close(point, floats[i][name], factory.build(STRUCTURES[name], POINTS[i], TOTAL),
                  f'{name} point {i}')
  assert not np.allclose(jax.tree.leaves(floats[0][name])[0],
                         jax.tree.leaves(floats[1][name])[0])


def test_state_structure_and_compilation_do_not_depend_on_values():
  traces = []

  @jax.jit
  def step(hp, params):
    traces.append(1)
    opt = factory.build(STRUCTURES['sgd'], hp, TOTAL)
    return opt.update(params, opt.init(params), params)

  params = _params()
  first = step({k: jnp.float32(v) for k, v in POINTS[0].items()}, params)
  second = step({k: jnp.float32(v) for k, v in POINTS[1].items()}, params)
  assert len(traces) == 1
  assert jax.tree.structure(first) == jax.tree.structure(second)
  for name, cfg in STRUCTURES.items():
    states = [jax.eval_shape(factory.build(cfg, p, TOTAL).init, params) for p in POINTS]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1]), name


# --------------------------------------------------------------------------------------------
# build: errors.


def test_build_errors_name_the_field():
  hp = factory.hparams_from_config(_cfg())
  with pytest.raises(ValueError, match=r"optimizer\.schedule.*'step'.*constant, cosine, wsd"):
    factory.build(_cfg(schedule='step'), hp, TOTAL)
  with pytest.raises(ValueError, match='total_steps'):
    factory.build(_cfg(), hp, 0)
  with pytest.raises(ValueError, match=r'optimizer\.name'):
    factory.build(_cfg(name='adagrad'), hp, TOTAL)
  with pytest.raises(ValueError, match='momentum'):
    factory.build(_cfg(name='sgd'), hp, TOTAL)  # Adam's hparams lack a momentum.
  with pytest.raises(ValueError, match=r'optimizer\.decay_fraction'):
    factory.build(_cfg(schedule='wsd', decay_fraction=1.5), hp, TOTAL)
  with pytest.raises(ValueError, match=r'optimizer\.end_factor'):
    factory.build(_cfg(schedule='cosine', end_factor=-1.0), hp, TOTAL)
  with pytest.raises(ValueError, match=r"hparams\['b1'\]"):
    factory.build(_cfg(), dict(hp, b1=np.float32(1.0)), TOTAL)
