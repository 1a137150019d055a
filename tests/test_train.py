"""The training core: pure steps, scan = loop, no recompilation, resume, divergence, errors."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from float_bounds import assert_within, float64_config, step_ulps, tolerance
from small_configs import classic_config, tiny_lm_config

from jaxopt_lab import checkpoints, files, runloop, tasks, train
from jaxopt_lab import single as single_run
from jaxopt_lab.optim import factory, rounding
from jaxopt_lab.sweep import programs


def _setup(config):
  task = tasks.build(config)
  hparams = factory.hparams_from_config(config.optimizer)
  state = train.init_state(task, config, hparams, config.seed)
  return task, hparams, state


def _float64(config, state):
  """Under `jax.enable_x64`: `config`'s task computing in float64 and the float32 run's start
  as float64 (the same numbers), for the float64 twin of a float32 comparison. The twin keeps
  the float32 hyperparameters: a single run compiles them as float32 constants
  (`with_fixed_hparams`), and the optimizer's arithmetic on them (1 - b1, the bias
  corrections) is then the same in both twins."""
  config64 = float64_config(config)
  return config64, tasks.build(config64), rounding.to_float64(state)


def _scan_bound(config, task, state, batches, hparams, steps):
  """`(B, exact)` of `steps` scanned steps of `config` from the float32 `state`
  (`rounding.program_bound` on float64 runs; `step_ulps` the rounding a step adds)."""
  with jax.enable_x64(True):
    config64, task64, _ = _float64(config, state)
    scan = train.scan_steps(train.make_train_step(task64, config64))
    return rounding.program_bound(lambda s: scan(s, batches, hparams), state, steps,
                                  ulps_per_step=step_ulps(config, task.param_count))


def _loop_and_scan(task, config, state, batches, hparams):
  step = jax.jit(train.make_train_step(task, config))
  looped, losses = state, []
  for i in range(len(batches["labels"])):
    looped, metrics = step(looped, jax.tree.map(lambda x, i=i: x[i], batches), hparams)
    losses.append(metrics["loss"])
  scanned, scan_metrics = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, batches, hparams)
  return (looped, np.array(losses)), (scanned, scan_metrics["loss"])


def test_scan_of_steps_equals_a_loop_of_steps():
  """The same 5 steps scanned and looped (XLA compiles a scan's body and a lone step apart):
  within 2 B of each other, in float64 (B 2^29 times tighter) and in float32."""
  config = classic_config()
  task, hparams, state = _setup(config)
  batches = jax.device_put(task.train_batches(0, 0, 5))
  looped, scanned = _loop_and_scan(task, config, state, batches, hparams)
  bound, _ = _scan_bound(config, task, state, batches, hparams, 5)
  tol = (bound[0], bound[1]["loss"])
  assert_within(looped, scanned, tolerance(tol), "scan vs loop, float32")
  with jax.enable_x64(True):
    config64, task64, state64 = _float64(config, state)
    looped64, scanned64 = _loop_and_scan(task64, config64, state64, batches, hparams)
  assert_within(looped64, scanned64, tolerance(tol, float64=True), "scan vs loop, float64")
  assert int(scanned[0].step) == int(scanned64[0].step) == 5


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
  batches = jax.device_put(task.train_batches(0, 0, 20))
  traced = jax.jit(step)(state, batches, hparams)
  fixed_program = jax.jit(train.with_fixed_hparams(step, hparams))
  fixed = fixed_program(state, batches)
  # Within 2 B of each other (float_bounds), in float32 and in float64.
  bound, traced64 = _scan_bound(config, task, state, batches, hparams, 20)
  assert_within(fixed, traced, tolerance(bound), "fixed vs traced, float32")
  with jax.enable_x64(True):
    config64, task64, state64 = _float64(config, state)
    step64 = train.scan_steps(train.make_train_step(task64, config64))
    fixed64 = jax.jit(train.with_fixed_hparams(step64, hparams))(state64, batches)
  assert_within(fixed64, traced64, tolerance(bound, float64=True), "fixed vs traced, float64")
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
  batches = jax.device_put(task.train_batches(0, 0, 3))
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
  # Within 2 B (float_bounds): the parts' sums and their mean are a reduction over the batch's
  # examples as long as the whole batch's, which `step_ulps` counts. In float32 and float64.
  bound, whole64 = _scan_bound(config, task, state, batches, hparams, 3)
  assert_within(split, whole, tolerance(bound), f"microbatches x{parts}, float32")
  with jax.enable_x64(True):
    split64_config, task64, state64 = _float64(split_config, state)
    run64 = jax.jit(train.scan_steps(train.make_train_step(task64, split64_config)))
    split64 = run64(state64, batches, hparams)
    # A part is not the batch: the first part alone gives another loss, farther than rounding.
    first = jax.tree.map(lambda x: x[:, : x.shape[1] // parts], batches)
    whole_config64 = float64_config(config)
    alone64 = jax.jit(train.scan_steps(train.make_train_step(task64, whole_config64)))(
        state64, first, hparams)
  assert_within(split64, whole64, tolerance(bound, float64=True), f"microbatches x{parts}, float64")
  loss_tol = tolerance(bound, float64=True)[1]["loss"]
  assert abs(float(alone64[1]["loss"][0]) - float(whole64[1]["loss"][0])) > loss_tol
  # Two points vmapped (the sweep's program) are the two single runs, each within its 2 B.
  two = jax.tree.map(lambda x: np.stack([x, x]), state)
  halved = {k: v / 2 for k, v in hparams.items()}
  hp2 = {k: np.stack([v, halved[k]]) for k, v in hparams.items()}
  both = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(two, batches, hp2)
  half = run(state, batches, halved)
  half_bound, _ = _scan_bound(config, task, state, batches, halved, 3)
  for i, single, b in ((0, split, bound), (1, half, half_bound)):
    assert_within(jax.tree.map(lambda x, i=i: x[i], both), single, tolerance(b),
                  f"vmapped point {i}, float32")


def test_log_step_metrics_come_from_the_last_step_and_match_optax():
  """A chunk computes the task's metrics and the norms at its last step only (NaN before): the
  accuracy of that step's batch and Optax's global norms of its gradients, updates and new
  parameters, all recomputed here with Optax's own Adam and NumPy's linear model."""
  config = classic_config()
  config.optimizer.clip_norm = 0.5  # clipping on: the updates are not a plain Adam step's
  task, hparams, state = _setup(config)
  k = 5
  batches = jax.device_put(task.train_batches(0, 0, k))
  out, metrics = jax.jit(train.scan_steps(train.make_train_step(task, config)))(
      state, batches, hparams)
  assert set(metrics) == {"loss", "accuracy", "grad_norm", "update_norm", "param_norm"}
  for name in ("accuracy", "grad_norm", "update_norm", "param_norm"):
    assert np.all(np.isnan(metrics[name][:-1])) and np.isfinite(metrics[name][-1]), name

  # The float64 twin takes the values in float64 too: Optax computes its bias corrections and
  # clipping factor from Python floats, ours from the hyperparameters' dtype.
  bound, out64 = _scan_bound(config, task, state, batches, rounding.to_float64(hparams), k)
  want, last, batch = _optax_norms(task, state.params, batches, hparams)
  tol = tolerance(bound[1])
  for name, value in want.items():
    assert_within(metrics[name][-1], value, tol[name], f"{name} vs Optax, float32")
  with jax.enable_x64(True):  # the same in float64, 2^29 times tighter
    _, task64, state64 = _float64(config, state)
    want64, _, _ = _optax_norms(task64, state64.params, batches, hparams)
  tol = tolerance(bound[1], float64=True)
  for name, value in want64.items():
    assert_within(out64[1][name][-1], value, tol[name], f"{name} vs Optax, float64")
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
  assert_within(full["loss"], metrics["loss"][0], tolerance(bound[1]["loss"]), "lone step's loss")


def _optax_norms(task, params, batches, hparams):
  """Optax's clip-by-global-norm(0.5) + Adam over `batches` from `params` (at the float32
  values of `hparams`, in the dtype of `params`): the last step's global norms, the parameters
  that step started from, and its batch."""
  hp = {name: float(hparams[name]) for name in ("learning_rate", "b1", "b2", "eps")}
  tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(**hp))
  opt_state = tx.init(params)
  for i in range(len(batches["labels"])):
    batch = jax.tree.map(lambda x, i=i: x[i], batches)
    grads = jax.grad(lambda p, b=batch: task.loss_fn(p, b)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    last, params = params, optax.apply_updates(params, updates)
  want = {"grad_norm": optax.global_norm(grads), "update_norm": optax.global_norm(updates),
          "param_norm": optax.global_norm(params)}
  return want, last, batch


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
