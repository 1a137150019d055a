"""A researcher's own optimizer, as they write it: the kit, plain factories, and failures in one
line before anything trains."""

import csv
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.sign_momentum import sign_momentum
from jaxopt_lab import single, tasks, train
from jaxopt_lab.optim import factory, registry, rounding, testing
from jaxopt_lab.sweep import driver
from tests.small_configs import classic_config, classic_sweep_config


def test_sign_momentum():  # the README's "Bring your own optimizer" test, as a user writes it
  reference = optax.chain(optax.ema(0.9, debias=False), optax.scale_by_sign(), optax.sgd(1e-2))
  testing.check_against_reference(sign_momentum(1e-2, beta=0.9), reference, steps=200)
  grid = {"learning_rate": [1e-3, 1e-2], "beta": [0.9, 0.5]}
  testing.check_vmap_equals_separate_runs(sign_momentum, grid)
  testing.check_no_recompile(sign_momentum, {"learning_rate": 1e-2, "beta": 0.9},
                             {"learning_rate": 1e-3, "beta": 0.5})
  testing.check_descends_on_quadratic(sign_momentum(1e-2))


# What researchers write: the learning rate a number, the state a list (used consistently).
PLAIN = '''
import jax
import jax.numpy as jnp
import optax


def momentum_list(learning_rate, beta=0.9):
  def init_fn(params):
    return [jax.tree.map(jnp.zeros_like, params)]

  def update_fn(grads, state, params=None):
    m = jax.tree.map(lambda m, g: beta * m + g, state[0], grads)
    return jax.tree.map(lambda m: -learning_rate * m, m), [m]

  return optax.GradientTransformation(init_fn, update_fn)


def sign_sgd(learning_rate):
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda g, s, p=None: (jax.tree.map(lambda x: -learning_rate * jnp.sign(x), g), s))


def takes_a_schedule(learning_rate: optax.ScalarOrSchedule, seen=[]):
  seen.append(learning_rate)
  return optax.sgd(learning_rate)
'''


@pytest.fixture
def plain(tmp_path):
  (tmp_path / "plain.py").write_text(PLAIN)
  return str(tmp_path / "plain.py")


def _cosine(peak, steps, end_factor):  # Optax's, not ours: the reference for our schedule
  return optax.cosine_decay_schedule(peak, steps, alpha=end_factor)


def test_a_factory_taking_a_number_gets_the_schedules_value_at_each_step(plain):
  cfg = classic_config(optimizer=f"{plain}:sign_sgd", learning_rate=0.1).optimizer
  cfg.schedule, cfg.end_factor = "cosine", 0.1
  assert not factory.resolve(cfg.name).schedule  # unannotated: a number
  ours = testing.trajectory(factory.build(cfg, factory.hparams_from_config(cfg), 30), 30)
  lr = _cosine(0.1, 30, 0.1)
  params, hand = testing.default_params(), []
  for t in range(30):  # a hand loop: -lr_t * sign(g)
    g = testing.default_grads(params, jnp.asarray(t))
    params = jax.tree.map(lambda p, g, t=t: p - np.float32(lr(t)) * jnp.sign(g), params, g)
    hand.append(params)
  hand = jax.tree.map(lambda *xs: np.stack(xs), *hand)
  # Each step rounds the rate and the product once (sign is exact): 2 ulps a step, no growth.
  testing.compare_trajectories(ours, hand, bound=jax.tree.map(
      lambda x: 2 * rounding.EPS32 * np.arange(1, 31) * np.max(np.abs(x)), hand))


def test_a_factory_taking_a_schedule_keeps_getting_one(plain):
  cfg = classic_config(optimizer=f"{plain}:takes_a_schedule").optimizer
  assert factory.resolve(cfg.name).schedule  # annotated optax.ScalarOrSchedule
  factory.build(cfg, factory.hparams_from_config(cfg), 30)
  seen = registry.resolve(cfg.name).builder.__defaults__[0]
  assert callable(seen[-1])


def _hand_loop(config, make, lr, seed):
  """Plain JAX + the user's factory, rebuilt with the schedule's value at each step."""
  task = tasks.build(config)
  params = task.init_params(train.point_keys(seed)[0])
  batches = task.train_batches(seed, 0, config.train.steps)
  state = make(lr(0)).init(params)
  grad = jax.jit(jax.grad(lambda p, b: task.loss_fn(p, b)[0]))
  for t in range(config.train.steps):
    batch = jax.tree.map(lambda x, t=t: x[t], batches)
    updates, state = make(np.float32(lr(t))).update(grad(params, batch), state, params)
    params = optax.apply_updates(params, updates)
  return float(task.eval_metrics(params, task.eval_data["valid"])["loss"])


def test_plain_and_list_state_factories_train_in_a_sweep_and_match_a_hand_loop(plain, tmp_path):
  config = classic_sweep_config(optimizers=(f"{plain}:momentum_list", f"{plain}:sign_sgd"),
                                learning_rates=(0.01, 0.05), replicates=1, steps=20)
  config.optimizer.schedule, config.optimizer.end_factor = "cosine", 0.1
  driver.run_sweep(config, str(tmp_path / "sweep"))
  with open(tmp_path / "sweep" / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
  module = registry.resolve(f"{plain}:sign_sgd").builder.__globals__
  for row in rows:
    name = row["optimizer"].rpartition(":")[2]
    lr = _cosine(float(row["learning_rate"]), 20, 0.1)
    hand = _hand_loop(config, module[name], lr, int(row["seed"]))
    # Two float32 runs of 20 steps of a convex loss (no growth): each within 16 ulps a step.
    np.testing.assert_allclose(float(row["final_valid_loss"]), hand,
                               rtol=2 * rounding.ULPS_PER_STEP * rounding.EPS32 * 20)


BROKEN = {
    "python_if": ('''
def opt(learning_rate):
  if learning_rate > 1e-2:
    return optax.sgd(learning_rate)
  return optax.adam(learning_rate)
''', r"^optimizer\.learning_rate: \S*python_if\.py:6: .*a Python `if` on a traced value"),
    "list_then_tuple": ('''
def opt(learning_rate):
  def init_fn(params):
    return [jax.tree.map(jnp.zeros_like, params)]
  def update_fn(grads, state, params=None):
    return jax.tree.map(lambda g: -learning_rate * g, grads), (state[0],)
  return optax.GradientTransformation(init_fn, update_fn)
''', r"^group optimizer=\S+:opt: \S*list_then_tuple\.py:5: optimizer '\S+' on task 'classic' "
     r".*tuple where init made list.*likely cause: the optimizer state changed structure .*a "
     r"list vs a tuple"),
    "schedule_as_number": ('''
def opt(learning_rate: optax.ScalarOrSchedule):
  return optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda g, s, p=None: (jax.tree.map(lambda x: -learning_rate * x, g), s))
''', r"^group optimizer=\S+:opt: \S*schedule_as_number\.py:8: .*'function'.*likely "
     r"cause: the learning rate used as a number"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_user_optimizer_fails_in_one_line_before_anything_trains(case, tmp_path):
  pattern = BROKEN[case][1]
  path = _broken_file(case, tmp_path)
  # adamw's group comes first: it must not train, and the workdir must stay unwritten.
  config = classic_sweep_config(optimizers=("adamw", f"{path}:opt"), learning_rates=(0.01,),
                                replicates=1, steps=10)
  with pytest.raises(ValueError) as e:
    driver.run_sweep(config, str(tmp_path / "sweep"))
  message = str(e.value)
  assert "\n" not in message, message
  assert re.search(pattern, message), message
  assert not os.path.exists(tmp_path / "sweep")


def _broken_file(case, tmp_path):
  path = tmp_path / f"{case}.py"
  path.write_text("import jax\nimport jax.numpy as jnp\nimport optax\n" + BROKEN[case][0])
  return path


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_user_optimizer_fails_a_single_run_in_one_line(case, tmp_path):
  """The single run traces its optimizer and task before its workdir is written
  (`preflight.check_run`): the sweep's line, without the group."""
  path = _broken_file(case, tmp_path)
  config = classic_config(optimizer=f"{path}:opt", steps=10)
  with pytest.raises(ValueError) as e:
    single.train(config, str(tmp_path / "run"))
  message = str(e.value)
  assert "\n" not in message, message
  assert re.search(BROKEN[case][1].replace(r"^group optimizer=\S+:opt: ", "^"), message), message
  assert not os.path.exists(tmp_path / "run")


def test_the_train_script_names_a_broken_user_optimizer_in_one_line(tmp_path):
  path = _broken_file("list_then_tuple", tmp_path)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, os.path.join(root, "scripts", "train.py"),
       "--config=experiments/classic.py", f"--config.optimizer.name={path}:opt",
       f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300, cwd=root)
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert re.search(r"^error: \S*list_then_tuple\.py:5: optimizer .*likely cause: the optimizer "
                   r"state changed structure", last), result.stderr[-3000:]
  assert not os.path.exists(tmp_path / "run")


def test_a_user_file_imports_the_module_beside_it(tmp_path):
  (tmp_path / "nadam_math.py").write_text("SCALE = 2.0\n")
  (tmp_path / "uses_helper.py").write_text(textwrap.dedent('''
      import optax
      import nadam_math

      def opt(learning_rate):
        return optax.sgd(nadam_math.SCALE * learning_rate)
  '''))
  spec = f"{tmp_path}/uses_helper.py:opt"
  assert factory.resolve(spec).builder(0.1) is not None
  assert str(tmp_path) not in sys.path  # only while it loads
