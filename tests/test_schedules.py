"""Learning-rate schedules: Optax's as reference, values at the breakpoints, traced parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import optim

COUNTS = jnp.arange(0, 260, dtype=jnp.int32)


def _values(schedule, counts=COUNTS):
  return np.asarray(jax.vmap(schedule)(counts), np.float64)


@pytest.mark.parametrize('init,peak,warmup,total,end', [
    (0.0, 1e-3, 20, 200, 0.0),
    (1e-4, 3e-2, 50, 250, 1e-3),
    (0.0, 0.5, 0, 100, 0.05),  # No warmup.
])
def test_warmup_cosine_matches_optax(init, peak, warmup, total, end):
  ours = optim.warmup_cosine_decay_schedule(peak, warmup, total, end_value=end, init_value=init)
  ref = optax.warmup_cosine_decay_schedule(init, peak, warmup, total, end_value=end)
  np.testing.assert_allclose(_values(ours), _values(ref), rtol=1e-6, atol=1e-7 * peak)


def test_warmup_cosine_breakpoints():
  peak, end, init, w, total = 2.0, 0.5, 0.25, 40, 240
  s = optim.warmup_cosine_decay_schedule(peak, w, total, end_value=end, init_value=init)
  mid = w + (total - w) // 2
  expected = {0: init, w // 2: (init + peak) / 2, w: peak, mid: (peak + end) / 2, total: end,
              total + 17: end}
  counts = jnp.asarray(list(expected), jnp.int32)
  np.testing.assert_allclose(_values(s, counts), list(expected.values()), rtol=1e-6)


def _wsd_reference(peak, warmup, total, decay, end):
  """WSD from Optax pieces: linear 0 -> peak, constant, linear peak -> end."""
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       optax.constant_schedule(peak),
       optax.linear_schedule(peak, end, decay)],
      [warmup, total - decay])


@pytest.mark.parametrize('peak,warmup,total,decay,end', [
    (1e-3, 20, 200, 40, 0.0),
    (0.3, 10, 250, 100, 0.03),
    (0.3, 0, 100, 30, 0.0),  # No warmup.
])
def test_warmup_stable_decay_matches_optax_pieces(peak, warmup, total, decay, end):
  ours = optim.warmup_stable_decay_schedule(peak, warmup, total, decay, end_value=end)
  ref = _wsd_reference(peak, warmup, total, decay, end)
  np.testing.assert_allclose(_values(ours), _values(ref), rtol=1e-6, atol=1e-7 * peak)


def test_warmup_stable_decay_breakpoints():
  peak, end, w, total, d = 4.0, 1.0, 20, 200, 60
  s = optim.warmup_stable_decay_schedule(peak, w, total, d, end_value=end)
  expected = {0: 0.0, w // 2: peak / 2, w: peak, total - d: peak, total - d // 2: (peak + end) / 2,
              total: end, total + 9: end}
  counts = jnp.asarray(list(expected), jnp.int32)
  np.testing.assert_allclose(_values(s, counts), list(expected.values()), rtol=1e-6)
  # No decay phase: the peak until total_steps.
  flat = optim.warmup_stable_decay_schedule(peak, w, total, 0, end_value=end)
  assert float(flat(total - 1)) == peak and float(flat(total)) == end


def test_constant_schedule():
  s = optim.constant_schedule(0.125)
  np.testing.assert_array_equal(_values(s, COUNTS[:5]), np.full(5, 0.125))
  traced = jax.jit(lambda v, t: optim.constant_schedule(v)(t))
  assert float(traced(jnp.float32(0.5), 3)) == 0.5


def test_traced_parameters_under_vmap_equal_separate_evaluation():
  """Peak, warmup (a fractional number of steps) and end as a vmapped batch of points."""
  peaks = np.asarray([1e-3, 3e-2, 0.5], np.float32)
  warmups = np.asarray([0.0, 12.5, 37.25], np.float32)
  ends = np.asarray([0.0, 1e-3, 0.1], np.float32)
  total, decay = 200, 50

  def both(peak, warmup, end, count):
    return (optim.warmup_cosine_decay_schedule(peak, warmup, total, end_value=end)(count),
            optim.warmup_stable_decay_schedule(peak, warmup, total, decay, end_value=end)(count))

  batched = jax.jit(jax.vmap(jax.vmap(both, (None, None, None, 0)), (0, 0, 0, None)))(
      peaks, warmups, ends, COUNTS)
  single = jax.jit(jax.vmap(both, (None, None, None, 0)))
  for i in range(len(peaks)):
    cos, wsd = single(peaks[i], warmups[i], ends[i], COUNTS)
    np.testing.assert_allclose(batched[0][i], cos, rtol=1e-7)
    np.testing.assert_allclose(batched[1][i], wsd, rtol=1e-7)
  # A fractional warmup interpolates: at step 6 of a 12.5-step warmup, 6 / 12.5 of the peak.
  np.testing.assert_allclose(batched[0][1][6], peaks[1] * 6 / 12.5, rtol=1e-6)


@pytest.mark.parametrize('make', [
    lambda w: optim.warmup_cosine_decay_schedule(1.0, w, 100),
    lambda w: optim.warmup_stable_decay_schedule(1.0, w, 100, 20),
    lambda w: optim.warmup_cosine_decay_schedule(1.0, w, w),  # Nothing left to decay.
], ids=['cosine', 'wsd', 'cosine_no_decay'])
def test_zero_warmup_is_finite_with_finite_gradients(make):
  def value(w, t):
    return make(w)(t)

  counts = jnp.asarray([0, 1, 50, 100, 150], jnp.int32)
  v, dv = jax.jit(jax.vmap(jax.value_and_grad(value), (None, 0)))(jnp.float32(0.0), counts)
  assert np.all(np.isfinite(v)) and np.all(np.isfinite(dv)), (v, dv)
  # Without warmup the schedule starts at its peak (or at its end if nothing is left).
  assert float(v[0]) in (1.0, 0.0)


@pytest.mark.parametrize('call,name', [
    (lambda: optim.warmup_cosine_decay_schedule(1.0, -1, 100), 'warmup_steps'),
    (lambda: optim.warmup_cosine_decay_schedule(1.0, 10, -100), 'decay_steps'),
    (lambda: optim.warmup_stable_decay_schedule(1.0, 10, -5, 2), 'total_steps'),
    (lambda: optim.warmup_stable_decay_schedule(1.0, 10, 100, float('nan')), 'decay_steps'),
])
def test_bad_schedule_arguments_name_the_argument(call, name):
  with pytest.raises(ValueError, match=name):
    call()
