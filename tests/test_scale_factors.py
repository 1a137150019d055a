"""The scale study's factors in a sweep: the horizon (train.steps) as a grouping factor, z-loss,
μP through the sweep's step, and their bad inputs."""

from __future__ import annotations

import csv
import os

import jax
import ml_collections
import numpy as np
import pytest
from small_configs import classic_sweep_config, tiny_lm_config

from jaxopt_lab import models, tasks, train
from jaxopt_lab import single as single_run
from jaxopt_lab.analysis import scale
from jaxopt_lab.sweep import design, driver, grouping

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _rows(workdir):
  with open(os.path.join(workdir, "summary.csv")) as f:
    return list(csv.DictReader(f))


def test_horizon_is_a_grouping_factor(tmp_path):
  config = classic_sweep_config(optimizers=("adam",), learning_rates=(0.01, 0.1, 1.0))
  config.train.update(dict(steps=40, steps_per_call=10, log_every=10, eval_every=20,
                           checkpoint_every=20))
  config.sweep.factors.horizon = {"values": [20, 40]}
  driver.run_sweep(config, str(tmp_path))
  rows = _rows(tmp_path)
  assert {r["group"] for r in rows} == {"horizon=20,optimizer=adam", "horizon=40,optimizer=adam"}
  assert {r["status"] for r in rows} == {"ok"}
  for r in rows:  # each group trained to its own horizon
    assert int(r["steps"]) == int(r["horizon"])
  study = scale.load(tmp_path)
  assert study.factors == ("horizon",) and len(study.groups) == 2
  # The horizon-20 group is the single run of 20 steps (its schedule's horizon too).
  point = next(r for r in rows if r["horizon"] == "20" and r["learning_rate"] == "0.1"
               and r["replicate"] == "0")
  single = config.copy_and_resolve_references()
  single.train.steps = 20
  single.optimizer.name, single.optimizer.learning_rate = "adam", 0.1
  single.seed = int(point["seed"])
  task, hparams = single_run.validate(single)
  state = train.init_state(task, single, hparams, single.seed)
  step = jax.jit(train.with_fixed_hparams(train.make_train_step(task, single), hparams))
  batches = task.train_batches(single.seed, 0, 20)
  for i in range(20):
    state, _ = step(state, jax.tree.map(lambda x, i=i: x[i], batches))
  valid = jax.jit(task.eval_metrics)(state.params, task.eval_data["valid"])
  np.testing.assert_allclose(float(point["final_valid_loss"]), valid["loss"], rtol=1e-5)


@pytest.mark.parametrize("factor,values,message", [
    ("horizon", [0, 20], "train.steps: must be"),
    ("parametrization", ["sp", "mu"], "model.parametrization: unknown parametrization 'mu'"),
    ("qk_norm", [False, "on"], "sweep.factors: model.qk_norm must be a bool, got 'on'"),
    ("z_loss", [0.0, -1.0], "train.z_loss: must be a number >= 0"),
    ("base_width", [0], "model.base_width: must be a positive integer"),
])
def test_bad_scale_factor_values(factor, values, message):
  config = tiny_lm_config()
  config.sweep.factors = ml_collections.ConfigDict({
      "learning_rate": {"values": [1e-3]}, factor: {"values": values}})
  points = design.make_design(config.sweep, config.train.steps)
  with pytest.raises(ValueError, match=message):
    grouping.build_groups(config, points)


def test_z_loss_adds_the_mean_squared_log_partition():
  config = tiny_lm_config()
  plain = tasks.build(config)
  config.train.z_loss = 1e-2
  with_z = tasks.build(config)
  params = plain.init_params(jax.random.key(0))
  batch = {"tokens": plain.train_data["tokens"][:4]}
  logits = np.asarray(tasks.lm.lm_pure(models.transformer_from_config(config.model),
                                        models.Transformer).apply(
      params, batch["tokens"][:, :-1].astype(np.int32)), np.float64)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  expected = float(plain.loss_fn(params, batch)[0]) + 1e-2 * np.mean(log_z**2)
  np.testing.assert_allclose(float(with_z.loss_fn(params, batch)[0]), expected, rtol=1e-5)
  # Held-out losses leave it out; the held-out metrics record log Z.
  held = jax.jit(with_z.eval_metrics)(params, with_z.eval_data["valid"])
  np.testing.assert_allclose(held["loss"],
                             jax.jit(plain.eval_metrics)(params, plain.eval_data["valid"])["loss"])
  config.task = "classic"
  with pytest.raises(ValueError, match="train.z_loss: only the lm task"):
    tasks.build(ml_collections.ConfigDict({**config.to_dict(), "model": {"dtype": "float32"}}))


def test_mup_reaches_a_plugin_optimizer_unchanged():
  # A user's optimizer (a plain function returning an optax transformation, examples/) trains
  # under μP with no change: each leaf's update is the optimizer's own update times the
  # declared multiplier.
  config = tiny_lm_config(parametrization="mup", base_width=16)
  config.optimizer.name = os.path.join(EXAMPLES, "sign_momentum.py") + ":sign_momentum"
  config.optimizer.learning_rate = 0.1
  task, hparams = single_run.validate(config)
  state = train.init_state(task, config, hparams, 0)
  batch = jax.tree.map(lambda x: x[0], task.train_batches(0, 0, 1))
  new, _ = train.make_train_step(task, config)(state, batch, hparams)
  grads = jax.grad(lambda p: task.loss_fn(p, batch)[0])(state.params)
  plain = train.make_optimizer(config, hparams)  # the user's optimizer alone
  updates, _ = plain.update(grads, plain.init(state.params), state.params)
  adam_rule = task.lr_multipliers["adam"]  # sign_momentum is a plain function: the Adam rule
  expected = jax.tree.map(lambda p, u, c: p + c * u, state.params, updates, adam_rule)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), new.params,
               expected)
  assert adam_rule["blocks"]["0"]["attn"]["qkv"]["kernel"] == 0.5
