"""The training core: pure steps, scan = loop, no recompilation, resume, divergence, errors."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from small_configs import classic_config, tiny_lm_config

from jaxopt_lab import checkpoints, files, runloop, tasks, train
from jaxopt_lab import single as single_run
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import programs


def _setup(config):
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  state = train.init_state(task, config, hparams, config.seed)
  return task, hparams, state


def test_scan_of_steps_equals_a_loop_of_steps():
  config = classic_config()
  task, hparams, state = _setup(config)
  step = jax.jit(train.make_train_step(task, config))
  batches = task.train_batches(0, 0, 5)
  looped = state
  losses = []
  for i in range(5):
    looped, metrics = step(looped, jax.tree.map(lambda x, i=i: x[i], batches), hparams)
    losses.append(metrics["loss"])
  scanned, scan_metrics = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, batches, hparams)
  for a, b in zip(jax.tree.leaves(looped), jax.tree.leaves(scanned), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(scan_metrics["loss"], np.array(losses), rtol=1e-6)
  assert int(scanned.step) == 5


def test_packed_hyperparameters_round_trip_by_name():
  """A sweep's compiled program takes the points' values packed in one array (one argument);
  the packing takes them by name, refuses another set of names, and gives them back by name."""
  config = classic_config()
  config.optimizer.clip_norm = 0.5
  _, hparams, _ = _setup(config)
  names = factory.hparam_names(config.optimizer.name)
  pack, unpack = programs.hparam_packing(names)
  packed = pack(hparams)
  assert packed.shape == (len(names),) and packed.dtype == np.float32
  np.testing.assert_array_equal(packed, [np.float32(hparams[n]) for n in names])
  points = {k: np.stack([v, 2 * v, 3 * v]) for k, v in hparams.items()}  # [3] each
  stacked = pack(points)
  assert stacked.shape == (3, len(names))
  for name, values in unpack(stacked).items():
    np.testing.assert_array_equal(values, points[name])
  with pytest.raises(ValueError, match="are not the optimizer's"):
    pack({**hparams, "momentum": np.float32(0.9)})
  with pytest.raises(ValueError, match="are not the optimizer's"):
    pack({k: v for k, v in hparams.items() if k != "eps"})


@pytest.mark.parametrize("clip_norm", [0.5, 0.0])
def test_fixed_hyperparameters_give_the_same_steps(clip_norm):
  """The single run compiles its values as constants (`with_fixed_hparams`): the same steps as
  the values passed traced, and what a value switches off is gone from the program (at
  `clip_norm` 0 or 0.5 the clipping's `lax.cond` on the threshold is decided at compile time)."""
  config = classic_config()
  config.optimizer.clip_norm = clip_norm
  task, hparams, state = _setup(config)
  step = train.scan_steps(train.make_train_step(task, config))
  batches = task.train_batches(0, 0, 20)
  traced = jax.jit(step)(state, batches, hparams)
  fixed_program = jax.jit(train.with_fixed_hparams(step, hparams))
  fixed = fixed_program(state, batches)
  for a, b in zip(jax.tree.leaves(traced), jax.tree.leaves(fixed), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
  text = fixed_program.lower(state, batches).compile().as_text()
  assert ("conditional(" in jax.jit(step).lower(state, batches, hparams).compile().as_text())
  assert "conditional(" not in text


def _with(config, **train_fields):
  config.train.update(train_fields)
  return config


@pytest.mark.parametrize("make_config, parts", [(classic_config, 5), (tiny_lm_config, 2),
                                                (tiny_lm_config, 4)])
def test_microbatches_give_the_batch_step(make_config, parts):
  """`train.microbatch_size`: the mean over equal parts of the batch is the batch's step (loss,
  the task's metrics, gradients and so the update), up to float32 rounding; under vmap too."""
  config = make_config()
  task, hparams, state = _setup(config)
  batches = task.train_batches(0, 0, 3)
  whole = jax.jit(train.scan_steps(train.make_train_step(task, config)))(state, batches, hparams)
  split_config = _with(make_config(), microbatch_size=config.data.batch_size // parts)
  train.validate_train_config(split_config)
  fn = train.scan_steps(train.make_train_step(task, split_config))
  whole_fn = train.scan_steps(train.make_train_step(task, config))
  scans = [str(jax.make_jaxpr(f)(state, batches, hparams)).count("scan[") for f in (whole_fn, fn)]
  assert scans[1] == scans[0] + 2  # the parts' scan, in the chunk's scan and at its last step
  run = jax.jit(fn)
  split = run(state, batches, hparams)
  assert sorted(split[1]) == sorted(whole[1])  # the log step's metrics: accuracy, the norms
  np.testing.assert_allclose(split[1]["loss"], whole[1]["loss"], rtol=1e-6)
  np.testing.assert_allclose(split[1]["grad_norm"][-1], whole[1]["grad_norm"][-1], rtol=1e-5)
  # Adam divides by the gradients' root mean square: where a gradient is nearly 0 its rounding
  # moves the update by a part of the learning rate (3e-3 for the LM).
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  # A part is not the batch: the first part alone gives another loss.
  first = jax.tree.map(lambda x: x[:, : x.shape[1] // parts], batches)
  alone = jax.jit(train.scan_steps(train.make_train_step(task, config)))(state, first, hparams)
  assert abs(float(alone[1]["loss"][0]) - float(whole[1]["loss"][0])) > 1e-4
  # Two points vmapped (the sweep's program) are the two single runs.
  two = jax.tree.map(lambda x: np.stack([x, x]), state)
  hp2 = {k: np.stack([v, v / 2]) for k, v in hparams.items()}
  both = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(two, batches, hp2)
  half = run(state, batches, {k: v / 2 for k, v in hparams.items()})
  for pair, single in ((jax.tree.map(lambda x: x[0], both), split),
                       (jax.tree.map(lambda x: x[1], both), half)):
    for a, b in zip(jax.tree.leaves(pair), jax.tree.leaves(single), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_log_step_metrics_come_from_the_last_step_and_match_optax():
  """A chunk computes the task's metrics and the norms at its last step only (NaN before): the
  accuracy of that step's batch and Optax's global norms of its gradients, updates and new
  parameters, all recomputed here with Optax's own Adam and NumPy's linear model."""
  config = classic_config()
  config.optimizer.clip_norm = 0.5  # clipping on: the updates are not a plain Adam step's
  task, hparams, state = _setup(config)
  k = 5
  batches = task.train_batches(0, 0, k)
  out, metrics = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, batches, hparams)
  assert set(metrics) == {"loss", "accuracy", "grad_norm", "update_norm", "param_norm"}
  for name in ("accuracy", "grad_norm", "update_norm", "param_norm"):
    assert np.all(np.isnan(metrics[name][:-1])) and np.isfinite(metrics[name][-1]), name

  tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(config.optimizer.learning_rate))
  params, opt_state = state.params, tx.init(state.params)
  for i in range(k):
    batch = jax.tree.map(lambda x, i=i: x[i], batches)
    grads = jax.grad(lambda p, b=batch: task.loss_fn(p, b)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    last, params = params, optax.apply_updates(params, updates)
  want = {"grad_norm": optax.global_norm(grads), "update_norm": optax.global_norm(updates),
          "param_norm": optax.global_norm(params)}
  for name, value in want.items():
    np.testing.assert_allclose(metrics[name][-1], value, rtol=2e-5, err_msg=name)
  (layer,) = jax.device_get(last).values()
  logits = np.asarray(batch["inputs"]) @ layer["kernel"] + layer["bias"]
  np.testing.assert_allclose(metrics["accuracy"][-1],
                             np.mean((logits[:, 0] > 0) == np.asarray(batch["labels"])))
  # One step called alone: the loss only, or everything with log=True.
  step = jax.jit(train.make_train_step(task, config), static_argnums=3)
  lean = step(state, jax.tree.map(lambda x: x[0], batches), hparams, False)[1]
  full = step(state, jax.tree.map(lambda x: x[0], batches), hparams, True)[1]
  assert set(lean) == {"loss"} and set(full) == set(metrics)
  np.testing.assert_array_equal(lean["loss"], full["loss"])
  np.testing.assert_allclose(full["loss"], metrics["loss"][0], rtol=1e-6)


def test_new_hyperparameter_values_do_not_recompile():
  config = classic_config()
  task, hparams, state = _setup(config)
  batches = task.train_batches(0, 0, 3)
  # One executable, compiled ahead of time (it cannot recompile): new values run through it, and
  # change the result, so they are arguments of the program, not constants baked into it.
  run = jax.jit(train.scan_steps(train.make_train_step(task, config))).lower(
      state, batches, hparams).compile()
  out_a, _ = run(state, batches, hparams)
  other = dict(hparams, learning_rate=np.float32(0.5), b1=np.float32(0.5))
  out_b, _ = run(state, batches, other)
  changed = [not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(out_a.params), jax.tree.leaves(out_b.params), strict=True)]
  assert all(changed)


def test_learning_rate_zero_leaves_parameters():
  config = classic_config(learning_rate=0.0)
  task, hparams, state = _setup(config)
  out, _ = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, task.train_batches(0, 0, 3), hparams)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(out.params), strict=True):
    np.testing.assert_array_equal(a, b)


def test_chunk_ends_depend_on_absolute_steps_only():
  assert list(runloop.chunk_ends(0, 25, (10, 4))) == [4, 8, 10, 12, 16, 20, 24, 25]
  assert list(runloop.chunk_ends(12, 25, (10, 4))) == [16, 20, 24, 25]
  assert list(runloop.chunk_ends(25, 25, (10,))) == []


def _strip_timing(summary):
  return {k: v for k, v in summary.items() if k != "seconds_this_session"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  summary = single_run.train(classic_config(), workdir)
  return workdir, summary


def test_train_writes_metrics_summary_and_checkpoints(uninterrupted):
  workdir, summary = uninterrupted
  rows = files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40]
  assert [r["step"] for r in rows if r["split"] == "valid"] == [0, 20, 40]
  train_row = next(r for r in rows if r["split"] == "train")
  assert {"loss", "accuracy", "grad_norm", "update_norm", "param_norm"} <= set(train_row)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == summary
  assert summary["status"] == "ok" and summary["steps"] == 40
  valid = [r["loss"] for r in rows if r["split"] == "valid"]
  assert summary["final_valid_loss"] == valid[-1] and summary["best_valid_loss"] == min(valid)
  assert checkpoints.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 40
  # the loss fell: the run trained
  train_losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert train_losses[-1] < train_losses[0]


def test_rerun_of_a_finished_run_resumes_to_the_same_summary(uninterrupted):
  workdir, summary = uninterrupted
  again = single_run.train(classic_config(), workdir)
  assert _strip_timing(again) == _strip_timing(summary)


class _Killed(BaseException):
  pass


@pytest.mark.parametrize("kill_at_write", [2, 3])
def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch,
                                                       kill_at_write):
  """A run killed after the metrics write of step 20 (before or after its checkpoint) resumes."""
  _, summary = uninterrupted
  workdir = str(tmp_path)
  calls = {"n": 0}
  real_write = files.append_bytes  # metrics.jsonl is appended at each log / eval step

  def dying_write(path, data):
    real_write(path, data)
    calls["n"] += 1
    if calls["n"] == kill_at_write:  # 2: after step 20's rows, before its checkpoint
      raise _Killed

  monkeypatch.setattr(files, "append_bytes", dying_write)
  with pytest.raises(_Killed):
    single_run.train(classic_config(), workdir)
  monkeypatch.setattr(files, "append_bytes", real_write)
  resumed = single_run.train(classic_config(), workdir)
  assert _strip_timing(resumed) == _strip_timing(summary)
  with open(os.path.join(workdir, "metrics.jsonl"), "rb") as f:
    rows = f.read()
  with open(os.path.join(uninterrupted[0], "metrics.jsonl"), "rb") as f:
    expected = f.read()
  assert rows == expected  # byte for byte


def test_diverged_run_stops_naming_the_step(tmp_path):
  config = classic_config(optimizer="sgd", learning_rate=1e38)
  with pytest.raises(runloop.TrainingDiverged, match=r"non-finite at step 2\b"):
    single_run.train(config, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["status"] == "diverged" and summary["diverged_step"] == 2


def test_bad_train_config_names_the_field(tmp_path):
  with pytest.raises(ValueError, match="train.checkpoint_every"):
    single_run.train(classic_config(checkpoint_every=15), str(tmp_path))
  with pytest.raises(ValueError, match="train.steps"):
    single_run.train(classic_config(steps=0), str(tmp_path))
  with pytest.raises(ValueError,
                     match=r"train.microbatch_size: must divide data.batch_size \(4\), got 3"):
    train.validate_train_config(_with(tiny_lm_config(), microbatch_size=3))
  with pytest.raises(ValueError, match="train.microbatch_size: must be a non-negative integer"):
    train.validate_train_config(_with(classic_config(), microbatch_size=-1))


def test_workdir_of_another_config_is_refused(uninterrupted):
  with pytest.raises(ValueError, match=r"--workdir.*optimizer.learning_rate"):
    single_run.train(classic_config(learning_rate=0.01), uninterrupted[0])


def test_a_workdir_in_use_is_refused(tmp_path):
  lock = files.WorkdirLock(str(tmp_path))
  try:
    with pytest.raises(ValueError, match="--workdir.*in use by another run"):
      single_run.train(classic_config(), str(tmp_path))
  finally:
    lock.release()


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="--workdir"):
    single_run.train(classic_config(), str(blocker / "sub"))


def test_bfloat16_compute_keeps_float32_state():
  config = tiny_lm_config(dtype="bfloat16")
  task, hparams, state = _setup(config)
  out, metrics = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, task.train_batches(0, 0, 3), hparams)
  for leaf in jax.tree.leaves((out.params, out.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert np.all(np.isfinite(metrics["loss"]))
  assert metrics["loss"].dtype == jnp.float32
