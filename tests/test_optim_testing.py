"""The optimizer test kit fails on planted bugs (a mutant Adam among them) and passes on Optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxopt_lab.optim import testing


def _mutant_adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  """Adam whose first moment is bias-corrected with b2 instead of b1: a plausible typo."""

  def init_fn(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return jnp.zeros([], jnp.int32), zeros, zeros

  def update_fn(grads, state, params=None):
    count, mu, nu = state
    count = count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1, c2 = 1 - b2**count, 1 - b2**count  # the bug: c1 should use b1
    updates = jax.tree.map(lambda m, v: -learning_rate * (m / c1) / (jnp.sqrt(v / c2) + eps),
                           mu, nu)
    return updates, (count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def test_the_mutant_adam_fails_the_kit_and_optax_adam_passes():
  testing.check_against_reference(optax.adam(1e-2), optax.adam(1e-2), steps=200)
  with pytest.raises(testing.OptimizerCheckError,
                     match=r"check_against_reference: step 1, leaf \['b'\]\[0\]: max abs error"):
    testing.check_against_reference(_mutant_adam(1e-2), optax.adam(1e-2), steps=200)


def test_vmap_check_rejects_values_without_effect():
  testing.check_vmap_equals_separate_runs(
      lambda learning_rate: optax.sgd(learning_rate), {'learning_rate': [0.1, 0.01]}, steps=5)
  with pytest.raises(testing.OptimizerCheckError, match='no effect'):
    testing.check_vmap_equals_separate_runs(
        lambda learning_rate: optax.sgd(0.1), {'learning_rate': [0.1, 0.01]}, steps=5)


def test_jit_check_catches_python_state():
  calls = []  # A Python-side step counter: frozen into the compiled update, live when eager.

  def update_fn(grads, state, params=None):
    calls.append(1)
    return jax.tree.map(lambda g: -0.1 * len(calls) * g, grads), state

  testing.check_jit_equals_eager(optax.adam(0.1))
  with pytest.raises(testing.OptimizerCheckError, match=r'check_jit_equals_eager: step \d'):
    testing.check_jit_equals_eager(optax.GradientTransformation(optax.init_empty_state,
                                                                update_fn))


def test_recompile_check_catches_a_python_float():
  testing.check_no_recompile(optax.adam, {'learning_rate': 0.1}, {'learning_rate': 0.01})
  with pytest.raises(testing.OptimizerCheckError, match='cannot be traced'):
    testing.check_no_recompile(lambda learning_rate: optax.adam(float(learning_rate)),
                               {'learning_rate': 0.1}, {'learning_rate': 0.01})


def test_zero_learning_rate_check_catches_undamped_weight_decay():
  testing.check_zero_learning_rate_is_identity(optax.adamw(0.0, weight_decay=0.1))
  coupled = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(0.0),
                        optax.add_decayed_weights(-0.1))  # decay not scaled by the rate
  with pytest.raises(testing.OptimizerCheckError,
                     match=r'check_zero_learning_rate_is_identity: step 1, leaf'):
    testing.check_zero_learning_rate_is_identity(coupled)


def test_dtype_check_catches_a_promoted_state():
  def init_fn(params):
    return jnp.zeros([], jnp.int32)

  def update_fn(grads, count, params=None):
    return grads, count + 0.5  # int32 -> float32

  testing.check_state_dtypes_stable(optax.adam(1e-3))
  with pytest.raises(testing.OptimizerCheckError, match=r'state leaf <root>: float32\[\], '
                                                        r'expected int32\[\]'):
    testing.check_state_dtypes_stable(optax.GradientTransformation(init_fn, update_fn))


def test_descent_check_catches_ascent():
  testing.check_descends_on_quadratic(optax.sgd(0.1))
  with pytest.raises(testing.OptimizerCheckError, match='check_descends_on_quadratic: loss'):
    testing.check_descends_on_quadratic(optax.sgd(-0.1))
