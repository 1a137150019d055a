"""A diverged point of a sweep is frozen, for good, at the state before the step that diverged.

The loss of step d is the loss of the parameters after d - 1 updates on batch d; when it is
non-finite or exceeds `sweep.diverge_factor` times the first loss, the point keeps the state of
step d - 1 (the one whose loss diverged, not the one the diverged step produced) and stays frozen
(`alive` is sticky) even where a later batch would give that state a tame loss again. The
reference is a single run of `train.train_step` on the same batches.
"""

from __future__ import annotations

import csv
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small_configs import classic_config, classic_sweep_config

from jaxopt_lab import files, tasks, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import driver, programs

STEPS = 24


def _config(optimizer, learning_rate, batch_size=100, diverge_factor=0.0):
  config = classic_config(optimizer=optimizer, learning_rate=learning_rate, steps=STEPS)
  config.data.batch_size = batch_size
  config.sweep.diverge_factor = diverge_factor
  return config


# Non-finite: Adam at lr 1e38 (its state includes a count and both moments). Loss growth: SGD at
# lr 10 on batches of 10 examples, whose loss first exceeds 4.5 times the first at step 6 and
# is below that threshold again on some later batches from the frozen state.
CASES = {
    'nonfinite': dict(optimizer='adam', learning_rate=1e38),
    'loss_growth': dict(optimizer='sgd', learning_rate=10.0, batch_size=10, diverge_factor=4.5),
}


@functools.cache
def _reference(case):
  """(config, task, hparams, batches, states [0..STEPS], losses [1..STEPS]) of a single run."""
  config = _config(**CASES[case])
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  batches = task.train_batches(int(config.seed), 0, STEPS)
  step = jax.jit(train.make_train_step(task, config))
  states, losses = [train.init_state(task, config, hparams, config.seed)], []
  for t in range(STEPS):
    state, metrics = step(states[-1], jax.tree.map(lambda x, t=t: x[t], batches), hparams)
    states.append(state)
    losses.append(float(metrics['loss']))
  return config, task, hparams, batches, states, np.asarray(losses)


def _first_diverged_step(losses, factor):
  bad = ~np.isfinite(losses)
  if factor > 0:
    bad |= losses > factor * losses[0]
  return int(np.argmax(bad)) + 1 if bad.any() else None


def _loss(task, params, batch):
  return float(task.loss_fn(params, batch)[0])


def _run_point(config, task, hparams, batches):
  """`programs.make_point_step` over the batches: (final population, per-step losses)."""
  point_step = programs.make_point_step(task, config)
  state = train.init_state(task, config, hparams, config.seed)
  pop = programs.Population(state, jnp.asarray(True), jnp.asarray(-1, jnp.int32),
                          jnp.asarray(jnp.nan, jnp.float32))
  run = jax.jit(lambda p, b: jax.lax.scan(lambda c, x: point_step(c, x, hparams), p, b))
  pop, metrics = run(pop, batches)
  return pop, np.asarray(metrics['loss'])


def _assert_state_close(got, want, err_msg):
  assert int(got.step) == int(want.step), err_msg
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-6, err_msg=err_msg)


@pytest.mark.parametrize('case', list(CASES))
def test_a_diverged_point_keeps_the_state_before_the_diverged_step(case):
  config, task, hparams, batches, states, losses = _reference(case)
  d = _first_diverged_step(losses, config.sweep.diverge_factor)
  assert d is not None and 1 < d < STEPS - 2, f'{case}: the reference must diverge mid-run'
  pop, point_losses = _run_point(config, task, hparams, batches)
  assert not bool(pop.alive) and int(pop.diverged_step) == d
  _assert_state_close(pop.state, states[d - 1], f'{case}: frozen state')
  np.testing.assert_allclose(point_losses[: d - 1], losses[: d - 1], rtol=1e-6)
  assert np.all(np.isnan(point_losses[d - 1:])), 'metrics of a frozen point are NaN'
  np.testing.assert_allclose(float(pop.initial_loss), losses[0], rtol=1e-6)


def test_a_point_stays_frozen_where_a_later_batch_would_be_tame():
  """The loss-growth case: from its frozen state, later batches give losses below the threshold
  (so an `alive` recomputed from each step's loss alone would bring the point back)."""
  config, task, hparams, batches, states, losses = _reference('loss_growth')
  factor = config.sweep.diverge_factor
  d = _first_diverged_step(losses, factor)
  later = [_loss(task, states[d - 1].params, jax.tree.map(lambda x, t=t: x[t], batches))
           for t in range(d, STEPS)]
  assert min(later) < factor * losses[0], 'the case must be one that would recover'
  pop, point_losses = _run_point(config, task, hparams, batches)
  assert not bool(pop.alive) and int(pop.diverged_step) == d
  assert np.all(np.isnan(point_losses[d - 1:]))
  _assert_state_close(pop.state, states[d - 1], 'frozen state at the end')


def test_a_point_diverged_by_one_poisoned_batch_stays_frozen():
  """A batch of NaN inputs at step 3 and clean batches after: the point's loss would be finite
  again from step 4, but it stays frozen at the state of step 2."""
  config = _config(optimizer='sgd', learning_rate=0.1, batch_size=10)
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  batches = task.train_batches(int(config.seed), 0, STEPS)
  poisoned = dict(batches)
  poisoned['inputs'] = np.asarray(batches['inputs']).copy()
  poisoned['inputs'][2] = np.nan
  step = jax.jit(train.make_train_step(task, config))
  state = train.init_state(task, config, hparams, config.seed)
  for t in range(2):
    state, _ = step(state, jax.tree.map(lambda x, t=t: x[t], batches), hparams)
  assert all(np.isfinite(_loss(task, state.params, jax.tree.map(lambda x, t=t: x[t], batches)))
             for t in range(3, STEPS))
  pop, point_losses = _run_point(config, task, hparams, poisoned)
  assert not bool(pop.alive) and int(pop.diverged_step) == 3
  assert np.all(np.isfinite(point_losses[:2])) and np.all(np.isnan(point_losses[2:]))
  _assert_state_close(pop.state, state, 'frozen at the state of step 2')


def test_sweep_records_the_frozen_point(tmp_path):
  """End to end through the driver (vmap, slices, shard_map) and the store: the diverged point's
  status, step, curves and held-out metrics are those of the frozen state; the other point is
  untouched and matches its own single run."""
  config, task, hparams, batches, states, losses = _reference('loss_growth')
  factor = config.sweep.diverge_factor
  d = _first_diverged_step(losses, factor)
  sweep = classic_sweep_config(learning_rates=(0.1, 10.0), optimizers=('sgd',), replicates=1,
                               steps=STEPS)
  sweep.data.batch_size = 10
  sweep.sweep.diverge_factor = factor
  sweep.train.update(dict(steps_per_call=4, log_every=4, eval_every=8, checkpoint_every=8))
  tame, wild = driver.run_sweep(sweep, str(tmp_path))
  assert (float(tame['learning_rate']), float(wild['learning_rate'])) == (0.1, 10.0)
  assert (tame['status'], tame['steps']) == ('ok', STEPS)
  assert (wild['status'], wild['diverged_step'], wild['steps']) == ('diverged', d, d - 1)
  eval_step = jax.jit(train.make_eval_step(task))
  frozen = {k: float(v) for k, v in eval_step(states[d - 1].params, task.eval_data).items()}
  for split in ('valid', 'test'):
    for metric in ('loss', 'accuracy'):
      np.testing.assert_allclose(float(wild[f'final_{split}_{metric}']),
                                 frozen[f'{split}_{metric}'], rtol=1e-5)
  curves = files.read_jsonl(os.path.join(tmp_path, 'metrics.jsonl'))
  train_rows = [r for r in curves if r['point'] == 1 and r['split'] == 'train']
  for row in train_rows:
    if row['step'] < d:  # Means over the 4 steps of the row.
      np.testing.assert_allclose(row['loss'], losses[row['step'] - 4: row['step']].mean(),
                                 rtol=1e-5)
    else:
      assert np.isnan(row['loss']), row
  valid_rows = [r for r in curves if r['point'] == 1 and r['split'] == 'valid' and r['step'] >= d]
  assert len(valid_rows) >= 2
  for row in valid_rows:
    np.testing.assert_allclose(row['loss'], frozen['valid_loss'], rtol=1e-5)
  with open(os.path.join(tmp_path, 'summary.csv')) as f:
    summary = list(csv.DictReader(f))
  assert summary[1]['status'] == 'diverged' and int(summary[1]['diverged_step']) == d
