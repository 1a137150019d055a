"""The slice loop runs only the slices in use: one compiled program serves every stage size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lab.sweep import design, driver, grouping, programs, slices
from jaxopt_lab.sweep.adaptive import runner
from tests.small_configs import classic_sweep_config


@pytest.mark.parametrize("active", [0, 1, 2, 3, 4, 5, 6])
def test_by_slices_runs_the_slices_that_hold_the_points_in_use(active):
  """Slices of 2 over 6 points: the first ceil(active / 2) slices run `fn`; the others keep the
  carried values (`keep`) and give blank outputs (NaN for floats, 0 for ints), as NumPy says."""
  x = np.arange(6, dtype=np.float32)
  y = np.arange(6, dtype=np.int32) * 10

  def fn(a, b):
    return a + 1.5, {"f": a * 2, "i": b + 1}

  got = jax.jit(lambda n, a, b: slices.by_slices(fn, 2, n, (a, b), keep=a))(active, x, y)
  ran = np.arange(6) < 2 * -(-active // 2)
  np.testing.assert_array_equal(got[0], np.where(ran, x + 1.5, x))
  np.testing.assert_array_equal(got[1]["f"], np.where(ran, x * 2, np.nan))
  np.testing.assert_array_equal(got[1]["i"], np.where(ran, y + 1, 0))


def test_a_stage_of_fewer_points_runs_in_the_groups_program():
  """A group's program placed for its first k points (an adaptive stage) trains them exactly as
  the program of all its points does (the same executable on the same slices: bit for bit),
  computes the padding of their last slice as a copy of the last point, leaves the points of the
  slices past them untouched, and compiles nothing new."""
  config = classic_sweep_config(learning_rates=(0.01, 0.03, 0.1, 0.3, 1.0), optimizers=("adam",),
                                replicates=1, steps=20)
  config.sweep.slice_size = 2
  group = grouping.build_groups(config, design.make_design(config.sweep))[0]
  run = programs.GroupPrograms(group, programs.make_mesh())
  assert (run.width, run.padded) == (2, 6)  # 5 points in 3 slices of 2 (one padded)
  start = run.init_population()
  full, full_metrics = run.run_chunk(jax.tree.map(jnp.copy, start), run.device_batches(0, 10))
  k = 3  # slices 0 and 1 hold the stage's points; slice 2 does not run
  run.place(runner.subgroup(group, np.arange(k), {n: v[:k] for n, v in group.hparams.items()}))
  np.testing.assert_array_equal(np.asarray(run.active), [k])
  part, part_metrics = run.run_chunk(jax.tree.map(jnp.copy, start), run.device_batches(0, 10))
  assert list(run.chunk.compiled) == [10]
  for a, b, s in zip(jax.tree.leaves(full), jax.tree.leaves(part), jax.tree.leaves(start),
                     strict=True):
    np.testing.assert_array_equal(np.asarray(b)[:k], np.asarray(a)[:k])
    np.testing.assert_array_equal(np.asarray(b)[k], np.asarray(b)[k - 1])  # padding
    np.testing.assert_array_equal(np.asarray(b)[4:], np.asarray(s)[4:])
  np.testing.assert_array_equal(np.asarray(part_metrics)[:k], np.asarray(full_metrics)[:k])
  assert np.isnan(np.asarray(part_metrics)[4:]).all()
  evals = {n: np.asarray(v) for n, v in run.evaluate(part.state.params).items()}
  assert all(np.isfinite(v[:4]).all() and np.isnan(v[4:]).all() for v in evals.values())


def test_successive_halving_builds_one_program_for_its_stages(tmp_path, monkeypatch):
  """Three rungs (9, 3 and 1 value points) run through one `GroupPrograms`, whose chunk program
  compiles once per chunk length (the old ladder built one program per population size), in
  slices as wide as the narrowest stage (`slice_size` 0 would put all 9 in one slice, and the
  last rung would compute 8 points out of use for its 1)."""
  built = []
  real = programs.GroupPrograms.__init__

  def counting(self, *args, **kwargs):
    real(self, *args, **kwargs)
    built.append(self)

  monkeypatch.setattr(programs.GroupPrograms, "__init__", counting)
  lrs = [float(x) for x in np.geomspace(1e-3, 1.0, 9)]
  config = classic_sweep_config(learning_rates=lrs, optimizers=("adam",), replicates=1, steps=27)
  config.train.update(dict(steps_per_call=3, log_every=3, eval_every=27, checkpoint_every=27))
  config.sweep.design = "successive_halving"
  config.sweep.adaptive.initial = "grid"
  driver.run_sweep(config, str(tmp_path / "sh"))
  assert len(built) == 1
  assert sorted(built[0].chunk.compiled) == [3]
  assert (built[0].width, built[0].padded) == (1, 9)
