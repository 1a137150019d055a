"""Tests of jaxopt_lab.tasks: the Task interface, losses and metrics, learning, config errors."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from jaxopt_lab import models, tasks
from jaxopt_lab.data import synthetic, tabular, text

# A shrunk LM for the tests that train or evaluate it (the real 'tiny' builds in the interface
# test); the stdlib corpus capped at 2 MB.
SMALL_LM = dict(width=64, depth=2, heads=4, context=64)
SMALL_LM_DATA = dict(batch_size=16, byte_budget=2_000_000, eval_windows=128, eval_batch_size=64)


def _config(task: str, model: dict | None = None, data: dict | None = None):
  config = ml_collections.ConfigDict({
      'task': task, 'model': tasks.default_model_config(task),
      'data': tasks.default_data_config(task),
  })
  config.model.update(model or {})
  config.data.update(data or {})
  return config


@functools.cache
def _task(name: str, **model) -> tasks.Task:
  if name == 'lm_small':
    return tasks.build(_config('lm', {**SMALL_LM, **model}, SMALL_LM_DATA))
  return tasks.build(_config(name, model))


def _train(task: tasks.Task, steps: int, lr: float, seed: int = 0):
  """Plain Optax Adam over ``task.train_batches(seed, 0, steps)``, one jitted lax.scan."""
  opt = optax.adam(lr)

  @jax.jit
  def run(params, batches):
    def step(carry, batch):
      params, state = carry
      (loss, _), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(params, batch)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), batches)
    return params, losses

  return run(task.init_params(jax.random.key(seed)), task.train_batches(seed, 0, steps))


# ----------------------------------------------------------------------------- configs


def test_unknown_task():
  message = ("task: unknown task 'mnist'; registered: classic, breast_cancer, digits, lm; or a "
             "plugin: 'path/to/file.py:name' or 'package.module:name'")
  for fn in (tasks.default_model_config, tasks.default_data_config):
    with pytest.raises(ValueError, match=message):
      fn('mnist')
  config = _config('classic')
  config.task = 'mnist'
  with pytest.raises(ValueError, match=message):
    tasks.build(config)


def test_lm_sizes():
  tiny, small = tasks.lm_size_config('tiny'), tasks.lm_size_config('small')
  assert (tiny.model.width, tiny.model.depth, tiny.model.heads, tiny.model.context,
          tiny.data.batch_size) == (128, 2, 4, 128, 16)
  assert (small.model.width, small.model.depth, small.model.heads, small.model.context,
          small.data.batch_size) == (512, 8, 8, 512, 32)
  assert tasks.default_model_config('lm') == tiny.model
  with pytest.raises(ValueError, match="unknown size 'huge'; valid choices: tiny, small"):
    tasks.lm_size_config('huge')


# ----------------------------------------------------------------------------- interface


@pytest.mark.parametrize('name', tasks.TASKS)
def test_task_interface(name):
  task = _task(name)
  data = tasks.default_data_config(name)
  assert task.name == name
  batches = task.train_batches(1, 5, 3)
  for a in batches.values():
    assert isinstance(a, np.ndarray) and a.shape[:2] == (3, data.batch_size)
  assert set(task.eval_data) == {'valid', 'test'}
  for split in task.eval_data.values():
    leading = {a.shape[:2] for a in split.values()}
    assert len(leading) == 1 and all(isinstance(a, np.ndarray) for a in split.values())

  params = jax.jit(task.init_params)(jax.random.key(0))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
  assert task.param_count == sum(a.size for a in jax.tree.leaves(params))
  loss, extra = jax.jit(task.loss_fn)(params, jax.tree.map(lambda a: a[0], batches))
  assert loss.shape == () and loss.dtype == jnp.float32 and np.isfinite(loss)
  metrics = jax.jit(task.eval_metrics)(params, task.eval_data['valid'])
  assert set(metrics) == set(task.metric_modes)
  assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values())
  assert set(extra) <= set(task.metric_modes)

  if name == 'lm':
    cfg = models.transformer_from_config(tasks.default_model_config('lm'))
    assert extra == {}
    assert task.tokens_per_step == data.batch_size * cfg.context
    assert task.flops_per_step == models.flops_per_token(cfg) * task.tokens_per_step
    assert task.metric_modes == {'loss': 'min', 'perplexity': 'min', 'bits_per_byte': 'min',
                                 'log_z': 'min', 'max_attention_logit': 'min',
                                 'max_output_logit': 'min'}
    # An untrained byte model is close to uniform: about 8 bits per byte.
    assert 7.0 < metrics['bits_per_byte'] < 8.5
  else:
    assert set(extra) == {'accuracy'}
    assert task.tokens_per_step is None
    assert task.flops_per_step == 6 * task.param_count * data.batch_size
    assert task.metric_modes == {'loss': 'min', 'accuracy': 'max'}
  train_size = {'classic': 100, 'breast_cancer': 341, 'digits': 1079}.get(name)
  if train_size:
    assert task.steps_per_epoch == train_size // data.batch_size


@pytest.mark.parametrize('name', ['classic', 'lm_small'])
def test_train_batches_resume_and_seed(name):
  task = _task(name)
  whole = task.train_batches(7, 0, 12)
  part = task.train_batches(7, 9, 3)
  for k in whole:
    np.testing.assert_array_equal(part[k], whole[k][9:])
  other = task.train_batches(8, 0, 12)
  assert not all(np.array_equal(whole[k], other[k]) for k in whole)


def test_classic_loss_and_metrics_by_hand():
  task = _task('classic')
  params = jax.jit(task.init_params)(jax.random.key(3))
  w = np.asarray(params['linear']['kernel'])[:, 0]
  b = float(params['linear']['bias'][0])
  batch = jax.tree.map(lambda a: a[0], task.train_batches(0, 0, 1))
  logits = batch['inputs'] @ w + b
  loss, extra = jax.jit(task.loss_fn)(params, batch)
  np.testing.assert_allclose(
      loss, optax.sigmoid_binary_cross_entropy(logits, batch['labels']).mean(), rtol=1e-5)
  np.testing.assert_allclose(extra['accuracy'], np.mean((logits > 0) == batch['labels']))
  split = synthetic.make_synthetic().valid  # Eval covers the whole split.
  logits = split['inputs'] @ w + b
  metrics = jax.jit(task.eval_metrics)(params, task.eval_data['valid'])
  np.testing.assert_allclose(
      metrics['loss'], optax.sigmoid_binary_cross_entropy(logits, split['labels']).mean(),
      rtol=1e-5)
  np.testing.assert_allclose(metrics['accuracy'], np.mean((logits > 0) == split['labels']))


def test_losses_match_optax_and_are_stable():
  z = jnp.array([-200.0, -3.0, 0.0, 2.5, 150.0])
  y = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
  loss, acc = tasks.binary_loss(z, y)
  np.testing.assert_allclose(loss, optax.sigmoid_binary_cross_entropy(z, y).mean(), rtol=1e-6)
  assert np.isfinite(loss) and np.isclose(acc, 0.4)
  logits = jax.random.normal(jax.random.key(0), (6, 10)) * 50
  labels = jnp.arange(6) % 10
  loss, acc = tasks.softmax_loss(logits.astype(jnp.bfloat16), labels)
  ref = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.bfloat16).astype(jnp.float32), labels).mean()
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(acc, np.mean(np.argmax(logits, -1) == labels))


def test_lm_eval_averages_batches():
  task = _task('lm_small')
  params = jax.jit(task.init_params)(jax.random.key(0))
  data = task.eval_data['test']
  assert data['tokens'].shape == (2, 64, 65)
  metrics = jax.jit(task.eval_metrics)(params, data)
  loss_fn = jax.jit(task.loss_fn)
  losses = [loss_fn(params, {'tokens': data['tokens'][i]})[0] for i in range(2)]
  np.testing.assert_allclose(metrics['loss'], np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(metrics['bits_per_byte'], metrics['loss'] / math.log(2), rtol=1e-6)
  np.testing.assert_allclose(metrics['perplexity'], np.exp(metrics['loss']), rtol=1e-5)
  # The same windows in batches of 8 (lm_tiny's, for speed on a CPU): the same metrics.
  small = tasks.build(_config('lm', SMALL_LM, {**SMALL_LM_DATA, 'eval_batch_size': 8}))
  tokens = small.eval_data['test']['tokens']
  assert tokens.shape == (16, 8, 65)
  np.testing.assert_array_equal(tokens.reshape(data['tokens'].shape), data['tokens'])
  by_eight = jax.jit(small.eval_metrics)(params, small.eval_data['test'])
  for name, value in metrics.items():
    np.testing.assert_allclose(by_eight[name], value, rtol=1e-5)


@pytest.mark.parametrize('name', ['classic', 'digits'])
def test_loss_and_eval_vmap_over_params(name):
  task = _task(name)
  params = jax.vmap(task.init_params)(jax.random.split(jax.random.key(0), 3))
  batch = jax.tree.map(lambda a: a[0], task.train_batches(0, 0, 1))
  losses, _ = jax.jit(jax.vmap(task.loss_fn, in_axes=(0, None)))(params, batch)
  metrics = jax.jit(jax.vmap(task.eval_metrics, in_axes=(0, None)))(params, task.eval_data['test'])
  loss_fn, eval_metrics = jax.jit(task.loss_fn), jax.jit(task.eval_metrics)
  for i in range(3):
    one = jax.tree.map(lambda a, i=i: a[i], params)
    np.testing.assert_allclose(losses[i], loss_fn(one, batch)[0], rtol=1e-5)
    single = eval_metrics(one, task.eval_data['test'])
    for k, v in single.items():
      np.testing.assert_allclose(metrics[k][i], v, rtol=1e-5)


def test_bfloat16_lm_loss_is_float32_and_close():
  task32, task16 = _task('lm_small'), _task('lm_small', dtype='bfloat16')
  params = jax.jit(task32.init_params)(jax.random.key(0))
  batch = jax.tree.map(lambda a: a[0], task32.train_batches(0, 0, 1))
  loss32, _ = jax.jit(task32.loss_fn)(params, batch)
  loss16, _ = jax.jit(task16.loss_fn)(params, batch)
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(loss16, loss32, rtol=0.02)


# ----------------------------------------------------------------------------- learning


def test_classic_learns_like_sklearn():
  task = _task('classic')
  params, losses = _train(task, 300, 0.05)
  data = synthetic.make_synthetic()
  reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(
      data.train['inputs'], data.train['labels'])
  # Full-batch Adam reaches the maximum-likelihood fit sklearn finds.
  reference_loss = log_loss(data.train['labels'],
                            reference.predict_proba(data.train['inputs'])[:, 1])
  np.testing.assert_allclose(losses[-1], reference_loss, rtol=1e-3)
  valid = jax.jit(task.eval_metrics)(params, task.eval_data['valid'])
  assert abs(valid['accuracy'] - reference.score(data.valid['inputs'], data.valid['labels'])) < 0.01
  # 100 noisy examples in 10 dimensions leave the fit short of the Bayes accuracy (0.9): sklearn's
  # fit scores 0.80 +- 0.04 over dataset seeds. Well above chance (0.5) all the same.
  assert valid['accuracy'] > synthetic.bayes_accuracy(0.1) - 0.2


def test_digits_learns():
  task = _task('digits')
  params, losses = _train(task, 200, 1e-3)
  assert losses[-1] < 0.1 * losses[0]
  for split in ('valid', 'test'):
    assert jax.jit(task.eval_metrics)(params, task.eval_data[split])['accuracy'] > 0.9


def test_lm_beats_the_unigram_entropy():
  task = _task('lm_small')
  params, losses = _train(task, 300, 3e-3)
  corpus = text.load_corpus((), SMALL_LM_DATA['byte_budget'], 0.1, 0.1)
  counts = np.bincount(corpus.tokens('train'), minlength=256)
  p = counts[counts > 0] / counts.sum()
  unigram_bits = -(p * np.log2(p)).sum()
  assert 4.0 < unigram_bits < 6.0  # Python source.
  valid = jax.jit(task.eval_metrics)(params, task.eval_data['valid'])
  assert valid['bits_per_byte'] < unigram_bits - 0.75


# ----------------------------------------------------------------------------- errors


def _lm_dir(tmp_path, sizes=(300, 300, 300, 300, 300)):
  rng = np.random.default_rng(0)
  for i, size in enumerate(sizes):
    (tmp_path / f'f{i}.txt').write_bytes(bytes(rng.integers(97, 123, size).astype(np.uint8)))
  return str(tmp_path)


@pytest.mark.parametrize('task, model, data, match', [
    ('classic', {}, {'batch_size': 101},
     r'data.batch_size: 101 is larger than the training set \(100 examples\)'),
    ('digits', {}, {'batch_size': 2000},
     r'data.batch_size: 2000 is larger than the training set \(1079 examples\)'),
    ('digits', {'activation': 'swish'}, {},
     r"model.activation: unknown activation 'swish'; valid choices: relu, gelu, tanh"),
    ('classic', {'dtype': 'float16'}, {}, r"model.dtype: unknown dtype 'float16'"),
    ('lm', {'positions': 'alibi'}, {}, r"model.positions: unknown positions 'alibi'"),
    ('lm', {}, {'paths': 'no/such/file.txt'}, r"data.paths: 'no/such/file.txt' does not exist"),
])
def test_bad_configs(task, model, data, match):
  with pytest.raises(ValueError, match=match):
    tasks.build(_config(task, model, data))


def test_unknown_and_missing_fields():
  config = _config('classic')
  config.model.widht = 3
  with pytest.raises(ValueError, match=r'model: unknown field\(s\) widht; valid fields: dtype'):
    tasks.build(config)
  config = _config('digits')
  del config.data['split_seed']
  with pytest.raises(ValueError, match=r'data: missing field\(s\) split_seed'):
    tasks.build(config)


def test_bad_lm_data(tmp_path):
  (tmp_path / 'ok').mkdir()
  root = _lm_dir(tmp_path / 'ok')
  small = {'paths': root, 'eval_windows': 4, 'eval_batch_size': 1, 'valid_fraction': 0.2,
           'test_fraction': 0.2}
  task = tasks.build(_config('lm', {'context': 16}, {**small, 'batch_size': 2}))
  assert task.train_batches(0, 0, 1)['tokens'].shape == (1, 2, 17)
  with pytest.raises(ValueError, match=r'data.batch_size: 1000 is larger than the training set '
                                       r'\(\d+ windows of 17 bytes\)'):
    tasks.build(_config('lm', {'context': 16}, {**small, 'batch_size': 1000}))
  with pytest.raises(ValueError, match='model.context: 512 needs files of at least 513 bytes'):
    tasks.build(_config('lm', {'context': 512}, {**small, 'batch_size': 1}))
  with pytest.raises(ValueError, match='data.eval_batch_size: 100 is more than'):
    tasks.build(_config('lm', {'context': 16}, {**small, 'batch_size': 1,
                                                'eval_batch_size': 100}))
  empty = tmp_path / 'empty'
  empty.mkdir()
  for i in range(3):
    (empty / f'e{i}.txt').write_bytes(b'')
  with pytest.raises(ValueError, match='data.paths: no text in'):
    tasks.build(_config('lm', {}, {'paths': str(empty)}))


def test_build_reuses_loaded_data():
  tabular.load('digits', 0.2, 0.2, 0)
  hits = tabular.load.cache_info().hits
  tasks.build(_config('digits'))
  assert tabular.load.cache_info().hits == hits + 1
  _task('lm_small')
  hits = text.make_windows.cache_info().hits
  tasks.build(_config('lm', SMALL_LM, SMALL_LM_DATA))
  assert text.make_windows.cache_info().hits == hits + 1
