"""Clipping by global norm: the norm after clipping, exact identity when off, traced threshold."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import optim


def _tree(scale=1.0):
  k = jax.random.split(jax.random.key(7), 3)
  return {
      'a': scale * jax.random.normal(k[0], ()),
      'b': [scale * jax.random.normal(k[1], (5,)), scale * jax.random.normal(k[2], (2, 3))],
  }


def _np_norm(tree):
  return float(np.linalg.norm(np.concatenate(
      [np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])))


def _clip(tree, max_norm):
  tx = optim.clip_by_global_norm(max_norm)
  return tx.update(tree, tx.init(tree))[0]


@pytest.mark.parametrize('scale', [1.0, 1e-30, 1e30])
def test_global_norm_matches_numpy_without_overflow(scale):
  tree = _tree(scale)
  np.testing.assert_allclose(float(optim.global_norm(tree)), _np_norm(tree), rtol=1e-6)
  assert float(optim.global_norm(jax.tree.map(jnp.zeros_like, tree))) == 0.0


@pytest.mark.parametrize('scale', [1.0, 1e-30, 1e30])
def test_clipped_updates_have_the_threshold_norm_and_direction(scale):
  tree = _tree(scale)
  max_norm = 0.25 * _np_norm(tree)
  clipped = _clip(tree, max_norm)
  np.testing.assert_allclose(_np_norm(clipped), max_norm, rtol=1e-6)
  for c, g in zip(jax.tree.leaves(clipped), jax.tree.leaves(tree), strict=True):
    np.testing.assert_allclose(np.asarray(c, np.float64), np.asarray(g, np.float64) * 0.25,
                               rtol=1e-6)


@pytest.mark.parametrize('max_norm', [0.0, -1.0, float('inf'), 1e6])
def test_no_clipping_returns_the_updates_bit_for_bit(max_norm):
  tree = _tree()
  out = jax.jit(_clip)(tree, jnp.float32(max_norm))  # Traced threshold.
  for c, g in zip(jax.tree.leaves(out), jax.tree.leaves(tree), strict=True):
    np.testing.assert_array_equal(c, g)
    assert c.dtype == g.dtype


def test_switched_off_a_traced_threshold_computes_no_norm():
  """The off branch of the compiled update has no reduction: a step without clipping does not
  pay for the gradients' norm (under vmap the branches become a select, tested above)."""
  tree = _tree()
  jaxpr = jax.make_jaxpr(_clip)(tree, jnp.float32(1.0))
  (cond,) = [e for e in jaxpr.eqns if e.primitive.name == 'cond']
  reductions = [{e.primitive.name for e in branch.jaxpr.eqns} & {'reduce_max', 'reduce_sum'}
                for branch in cond.params['branches']]
  assert sorted(map(bool, reductions)) == [False, True]


def test_matches_optax_when_clipping():
  tree = _tree()
  norm = _np_norm(tree)
  for max_norm in (0.1 * norm, 0.9 * norm, 2 * norm):
    ref = optax.clip_by_global_norm(max_norm)
    expected = ref.update(tree, ref.init(tree))[0]
    for a, b in zip(jax.tree.leaves(_clip(tree, max_norm)), jax.tree.leaves(expected),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6)


def test_vmapped_thresholds_equal_separate_calls():
  tree = _tree()
  thresholds = jnp.asarray([0.0, 0.5, 1.0, 100.0, -3.0, jnp.inf], jnp.float32)
  batched = jax.jit(jax.vmap(_clip, (None, 0)))(tree, thresholds)
  single = jax.jit(_clip)
  for i, c in enumerate(thresholds):
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x, i=i: x[i], batched)),
                    jax.tree.leaves(single(tree, c)), strict=True):
      np.testing.assert_array_equal(a, b)


def test_bfloat16_and_composition_with_chain():
  tree = jax.tree.map(lambda x: (10 * x).astype(jnp.bfloat16), _tree())
  tx = optax.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.5))
  updates, _ = tx.update(tree, tx.init(tree), tree)
  assert jax.tree.structure(updates) == jax.tree.structure(tree)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
  np.testing.assert_allclose(_np_norm(updates), 0.5, rtol=1e-2)  # bfloat16 has 8 bits.


def test_nan_threshold_is_rejected():
  with pytest.raises(ValueError, match='max_norm'):
    optim.clip_by_global_norm(float('nan'))
