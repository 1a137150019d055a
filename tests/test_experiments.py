"""Every config in experiments/ loads, validates, and (for sweeps) yields a valid design."""

from __future__ import annotations

import glob
import inspect
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import pytest

from jaxopt_lab import configs, defaults, train
from jaxopt_lab.data import text
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import design, driver, grouping, slices

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")
NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(EXPERIMENTS, "*.py")))


def _load(name: str):
  return configs.sibling(os.path.join(EXPERIMENTS, "_"), name)


def _check_optimizer(config) -> None:
  hparams = factory.hparams_from_config(config.optimizer)
  tx = factory.build(config.optimizer, hparams, config.train.steps)
  tx.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})  # a decay mask is applied at init


def test_the_experiments_are_there():
  assert {"classic", "digits_mlp", "lm_tiny", "lm_small", "sweep_classic_lr", "sweep_digits_lr",
          "sweep_lm_tiny_lr", "sweep_lm_adamw_sobol", "sweep_lm_small_gpu"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_valid(name):
  module = _load(name)
  config = module.get_config()
  assert f"experiments/{name}.py" in (module.__doc__ or ""), "the docstring names its command"
  train.validate_train_config(config)
  slices.slice_width(config, 1)
  _check_optimizer(config)
  if not config.sweep.factors:
    return
  points = design.make_design(config.sweep)
  for point in points:  # every point's values are in range for its group's optimizer
    _check_optimizer(grouping.point_config(config, point))
  largest = max(len(m) for m in design.groups(points).values())
  assert driver.default_cpu_devices(config, 4) == min(4, largest)


@pytest.mark.parametrize("name", ["lm_tiny", "sweep_lm_lion_schedule_free"])
def test_loading_a_config_imports_no_jax_flax_or_driver(name):
  code = (
      "import importlib.util, sys\n"
      f"spec = importlib.util.spec_from_file_location('c', {os.path.join(EXPERIMENTS, name)!r}"
      " + '.py')\n"
      "module = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(module)\n"
      "config = module.get_config()\n"
      "heavy = [m for m in ('jax', 'flax', 'optax', 'jaxopt_lab.sweep.driver', 'jaxopt_lab.tasks')"
      " if m in sys.modules]\n"
      "print(config.optimizer.name, heavy)\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
  assert result.stdout.strip().endswith("[]"), result.stdout


def test_every_default_field_has_a_comment():
  source = inspect.getsource(defaults)
  for line in source.splitlines():
    code = line.split("#")[0].strip()
    assigns_field = re.match(r"^(c|model|data)\.\w+ = |^\w+=.*,$", code)
    if assigns_field and not code.startswith(("c = ", "model = ", "data = ")):
      assert "#" in line, f"default without a comment: {line.strip()}"
  assert defaults.default_data_config("lm").byte_budget == text.DEFAULT_BYTE_BUDGET
