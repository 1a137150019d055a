"""How a device's points are cut into vmapped slices, and the loop that runs the slices in use.

A group's program vmaps its step over a slice of points and loops over a device's slices
(`by_slices`): the slice width bounds the activation memory (`sweep.slice_size`, or the widest
that fits, `programs.GroupPrograms`), the loop's trip count is the number of slices holding
points in use, a traced value.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections


def blank(dtype) -> Any:
  """What a slice that did not run holds: NaN for floats, 0 (False) otherwise."""
  return jnp.nan if jnp.issubdtype(dtype, jnp.inexact) else 0


def by_slices(fn, width: int, active: jax.Array, trees: tuple, keep: Any = None):
  """Applies `fn` (vmapped over points) to `trees` in slices of `width` points, running only the
  slices that hold the first `active` points (a traced count: one compiled program serves every
  population an adaptive design's stages leave, instead of one program per size).

  The slices not run output `blank` values, except the first output, which keeps `keep` (the
  population a chunk program carries: a point not in use is left as it was).
  """
  n = jax.tree.leaves(trees)[0].shape[0]

  def sliced(tree):
    return jax.tree.map(lambda x: x.reshape((n // width, width) + x.shape[1:]), tree)

  run = jax.vmap(fn)
  args = sliced(trees)
  shapes = jax.eval_shape(run, *jax.tree.map(lambda x: x[0], args))
  out = jax.tree.map(lambda s: jnp.full((n // width,) + s.shape, blank(s.dtype), s.dtype), shapes)
  if keep is not None:
    out = (sliced(keep), *out[1:])

  def body(i, out):
    result = run(*jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), args))
    return jax.tree.map(lambda o, r: jax.lax.dynamic_update_index_in_dim(o, r, i, 0), out, result)

  out = jax.lax.fori_loop(0, (active + width - 1) // width, body, out)
  return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)


def least_padded_width(local: int, widest: int) -> int:
  """Of the slice widths from `widest` down to half of it, the one whose slices pad a device's
  `local` points least (the widest of those): padded points are computed for nothing (digits,
  64 points a device: slices of 3 padded them to 66 and ran 0.93x slices of 2;
  benchmarks/README.md, "Slice widths without padding")."""
  widest = min(widest, local)
  return min(range(-(-widest // 2), widest + 1), key=lambda w: (even_slices(local, w)[1], -w))


def even_slices(local: int, width: int) -> tuple[int, int]:
  """(width, points) of a device's `local` points in slices of at most `width`: the same number
  of slices, the least padding."""
  slices = -(-local // width)
  width = -(-local // slices)
  return width, slices * width


def slice_width(config: ml_collections.ConfigDict, n_local: int) -> int:
  """Points per vmapped slice on one device: `sweep.slice_size`, capped by the local points."""
  size = int(config.sweep.slice_size)
  if size < -1:
    raise ValueError(f"sweep.slice_size: must be >= -1 (-1 auto, 0 all), got {size}")
  return n_local if size <= 0 else min(size, n_local)
