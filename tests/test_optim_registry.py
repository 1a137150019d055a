"""The optimizer registry: built-ins and plugins declared the same way, loaded lazily, checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import optax
import pytest
from small_configs import classic_sweep_config

from jaxopt_lab import defaults
from jaxopt_lab import single as single_run
from jaxopt_lab.optim import factory, registry, testing
from jaxopt_lab.sweep import driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 100

PLUGIN = '''
import optax
open(__file__ + ".imported", "w").close()  # a trace of the import, for the laziness test


def signum(learning_rate, beta=0.9, *, nesterov=False, kind="sign"):
  base = optax.scale_by_sign() if kind == "sign" else optax.identity()
  return optax.chain(optax.trace(decay=beta, nesterov=nesterov), base,
                     optax.scale_by_learning_rate(learning_rate))


def branchy(learning_rate, beta=0.9):
  if beta > 0.5:  # Python control flow on a value: not traceable
    return optax.sgd(learning_rate)
  return optax.sgd(learning_rate, momentum=beta)


def not_an_optimizer(learning_rate):
  return 3.0


NUMBER = 3
'''


@pytest.fixture
def plugin(tmp_path):
  path = tmp_path / "my_opt.py"
  path.write_text(PLUGIN)
  return str(path)


def _cfg(name, **fields):
  cfg = defaults.optimizer_config()
  cfg.name = name
  cfg.update(fields)
  return cfg


def test_the_built_ins_are_declarations():
  assert registry.registered()[:4] == ('sgd', 'adam', 'adamw', 'rmsprop')
  adamw = registry.resolve('adamw')
  assert adamw.value_names == ('learning_rate', 'b1', 'b2', 'eps', 'weight_decay')
  assert [(f.name, f.choices) for f in adamw.flags] == [('nesterov', (False, True)),
                                                        ('decay_mask', ('all', 'matrices'))]
  lr = adamw.values[0]
  assert (lr.scale, lr.range_text, adamw.values[1].range_text) == ('log', '>= 0', 'in [0, 1)')


def test_a_plain_function_in_a_file_is_a_plugin_loaded_lazily(plugin, monkeypatch):
  cfg = _cfg(f'{plugin}:signum', learning_rate=0.05)
  assert not os.path.exists(plugin + '.imported')  # naming it in a config imports nothing
  assert factory.hparam_names(cfg.name) == ('learning_rate', 'beta', 'warmup', 'clip_norm')
  assert os.path.exists(plugin + '.imported')
  declared = registry.resolve(cfg.name)
  assert [(f.name, f.default) for f in declared.flags] == [('nesterov', False), ('kind', 'sign')]
  hp = factory.hparams_from_config(cfg)  # beta is not a config field: its default
  assert float(hp['beta']) == np.float32(0.9)
  reference = optax.chain(optax.trace(decay=0.9), optax.scale_by_sign(),
                          optax.scale_by_learning_rate(0.05))
  testing.check_against_reference(factory.build(cfg, hp, TOTAL), reference, steps=50)
  # A relative path starts at the current directory.
  monkeypatch.chdir(os.path.dirname(plugin))
  assert registry.resolve('my_opt.py:signum').value_names == ('learning_rate', 'beta')


def test_optax_aliases_are_plugins_with_traceable_values():
  cfg = _cfg('optax:lion', learning_rate=3e-3, b2=0.99, weight_decay=0.1)
  hp = factory.hparams_from_config(cfg)
  assert tuple(hp) == ('learning_rate', 'b1', 'b2', 'weight_decay', 'warmup', 'clip_norm')
  testing.check_against_reference(factory.build(cfg, hp, TOTAL),
                                  optax.lion(3e-3, b2=0.99, weight_decay=0.1), steps=200)
  factory.check_traceable(cfg, TOTAL)

  def make(**values):  # what the sweep does: values as traced arrays, one compilation
    return factory.build(cfg, {**hp, **values}, TOTAL)

  testing.check_vmap_equals_separate_runs(
      make, {'learning_rate': [1e-3, 1e-2], 'b1': [0.9, 0.5], 'weight_decay': [0.0, 0.1]},
      steps=20)
  testing.check_no_recompile(make, {'learning_rate': 1e-3}, {'learning_rate': 1e-2})


def test_an_optax_alias_typed_with_a_number_gets_the_schedules_value_at_each_step():
  cfg = _cfg('optax:contrib.schedule_free_adamw', learning_rate=1e-2)
  assert not factory.resolve(cfg.name).schedule  # its learning_rate is typed as a number
  hp = dict(b2=np.float32(0.999), eps=np.float32(1e-8), weight_decay=np.float32(1e-4))
  opt = factory.build(cfg, factory.hparams_from_config(cfg), TOTAL)
  testing.check_against_reference(opt, optax.contrib.schedule_free_adamw(1e-2, **hp), 50)
  # A cosine schedule: Optax's own wrapper for a number-taking alias is the reference.
  cosine = _cfg(cfg.name, schedule='cosine', end_factor=0.1, learning_rate=1e-2)
  opt = factory.build(cosine, factory.hparams_from_config(cosine), TOTAL)
  reference = optax.inject_hyperparams(optax.contrib.schedule_free_adamw)(
      learning_rate=optax.cosine_decay_schedule(1e-2, TOTAL, alpha=0.1), **hp)
  testing.check_against_reference(opt, reference, TOTAL)


def test_a_value_used_in_python_control_flow_is_named_at_set_up(plugin, tmp_path):
  with pytest.raises(ValueError) as e:
    factory.check_traceable(_cfg(f'{plugin}:branchy'), TOTAL)
  message = str(e.value)
  assert message.startswith("optimizer.beta: ") and 'declare it structural' in message
  assert '\n' not in message
  # A sweep and a single run check it before compiling anything.
  config = classic_sweep_config(optimizers=(f'{plugin}:branchy',), learning_rates=(0.1,))
  with pytest.raises(ValueError, match=r'^optimizer\.beta: .*declare it structural'):
    driver.run_sweep(config, str(tmp_path / 'sweep'))
  config.optimizer.name = f'{plugin}:branchy'
  with pytest.raises(ValueError, match=r'^optimizer\.beta: .*declare it structural'):
    single_run.train(config, str(tmp_path / 'single'))


def test_a_declaration_adds_ranges_and_sweep_scales(plugin):
  import importlib.util  # noqa: PLC0415

  spec = importlib.util.spec_from_file_location('plugin_for_declare', plugin)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  declared = registry.declare(module.signum, values=[
      registry.Value('beta', 0.9, low=0.0, high=1.0, include_high=False)],
      flags=[registry.Flag('kind', 'sign', ('sign', 'none'))])
  assert declared.values[1].range_text == 'in [0, 1)'
  with pytest.raises(ValueError, match=r"declares 'gamma', which the builder does not take"):
    registry.declare(module.signum, values=[registry.Value('gamma', 0.5)])
  with pytest.raises(ValueError, match=r"'warmup' is reserved"):
    registry.declare(module.signum, values=[registry.Value('warmup', 0.5)])


BAD = [
    ('nope', r"^optimizer\.name: unknown optimizer 'nope'; registered: sgd, adam, adamw, "
             r"rmsprop(, \w+)*; or a plugin: 'path/to/file\.py:name'"),
    ('missing.py:fn', r"^optimizer\.name: no such file 'missing\.py' \(relative paths start at"),
    ('{plugin}:absent', r"^optimizer\.name: .*my_opt\.py has no 'absent'; it defines: .*signum"),
    ('{plugin}:NUMBER', r"^optimizer\.name: '.*:NUMBER' is not a function returning an "
                        r"optax\.GradientTransformation nor a registry\.declare\(\.\.\.\) "
                        r"\(it is a int\)$"),
    ('no_such_pkg.opts:lion', r"^optimizer\.name: module 'no_such_pkg\.opts' failed to import: "
                              r"ModuleNotFoundError"),
    ('optax:no_such_alias', r"^optimizer\.name: module 'optax' has no 'no_such_alias'"),
]


@pytest.mark.parametrize('name,message', BAD, ids=[b[0] for b in BAD])
def test_bad_names_give_one_line(plugin, name, message):
  with pytest.raises(ValueError, match=message) as e:
    factory.hparam_names(name.format(plugin=plugin))
  assert '\n' not in str(e.value)


def test_failing_plugins_give_one_line(tmp_path, plugin):
  broken = tmp_path / 'broken.py'
  broken.write_text('import optax\nraise RuntimeError("boom")\n')
  with pytest.raises(ValueError, match=r"broken\.py failed to import: RuntimeError: boom$"):
    factory.hparam_names(f'{broken}:fn')
  cfg = _cfg(f'{plugin}:not_an_optimizer')
  with pytest.raises(ValueError, match=r"returned float, not an optax\.GradientTransformation$"):
    factory.build(cfg, factory.hparams_from_config(cfg), TOTAL)
  lion = os.path.join(ROOT, 'examples', 'lion.py') + ':lion'
  with pytest.raises(ValueError, match=r'^optimizer\.b1 must be in \[0, 1\], got 1\.5$'):
    factory.hparams_from_config(_cfg(lion, b1=1.5))


def test_a_sweep_vmaps_over_a_plugin_s_own_value(tmp_path):
  config = classic_sweep_config(optimizers=(), learning_rates=(0.01, 0.1), replicates=1,
                                steps=20)
  config.optimizer.name = os.path.join(ROOT, 'examples', 'sign_momentum.py') + ':sign_momentum'
  config.sweep.factors = ml_collections.ConfigDict({
      'beta': {'values': [0.5, 0.9]}, 'learning_rate': {'values': [0.01, 0.1]}})
  rows = driver.run_sweep(config, str(tmp_path))
  assert [(r['hp_beta'], r['hp_learning_rate']) for r in rows] == [
      (0.5, 0.01), (0.5, 0.1), (0.9, 0.01), (0.9, 0.1)]
  assert {r['status'] for r in rows} == {'ok'}
  with open(tmp_path / 'run.json') as f:
    assert len(json.load(f)['groups']) == 1  # one compilation for the four points


@pytest.mark.parametrize('script,flag,message', [
    ('train.py', '--config.optimizer.name=nope',
     "error: optimizer.name: unknown optimizer 'nope'; registered: sgd, adam, adamw, rmsprop; "),
    ('sweep.py', '--config.optimizer.name=missing.py:fn',
     "error: optimizer.name: no such file 'missing.py'"),
])
def test_scripts_print_one_line(tmp_path, script, flag, message):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', script),
       '--config=experiments/sweep_classic_lr.py', flag, f'--workdir={tmp_path}'],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
