"""The task registry: built-ins registered like a user's task; a task file runs from the scripts."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxopt_lab import configs, defaults, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINE = os.path.join(ROOT, "examples", "wine_task.py") + ":get_task"


def test_the_built_ins_are_registered():
  assert tasks.registered()[:4] == defaults.TASKS == tasks.TASKS
  with pytest.raises(ValueError, match=r"^task: unknown task 'nope'; registered: classic, "
                                       r"breast_cancer, digits, lm(, \w+)*; or a plugin: "):
    tasks.resolve("nope")


def test_defaults_names_exactly_the_built_in_tasks():
  # defaults (plain data, no JAX) keeps its own list for the default configs: the names the
  # package's own modules register, in their order.
  def home(builder):
    return getattr(builder, "func", builder).__module__

  built_in = tuple(n for n in tasks.registered()
                   if home(tasks.resolve(n)).startswith("jaxopt_lab.tasks."))
  assert built_in == defaults.TASKS


def test_a_task_file_builds_a_task():
  config = configs.base_config(WINE)
  config.model.hidden = 8
  task = tasks.build(config)
  assert task.param_count == (13 * 8 + 8) + (8 * 8 + 8) + (8 * 3 + 3)
  sizes = [task.eval_data[s]["inputs"].shape[1] for s in ("valid", "test")]
  assert sizes == [36, 36] and task.steps_per_epoch == (178 - 72) // 32
  params = task.init_params(jax.random.key(0))
  metrics = jax.jit(task.eval_metrics)(params, task.eval_data["valid"])
  # An untrained 3-class classifier: its loss is near log(3).
  assert abs(float(metrics["loss"]) - np.log(3)) < 0.5


def test_bad_task_plugins_give_one_line(tmp_path):
  bad = tmp_path / "bad_task.py"
  bad.write_text("def get_task(model_cfg, data_cfg):\n  return 3\n")
  with pytest.raises(ValueError, match=r"^task: '.*bad_task\.py:get_task' returned int, not a "
                                       r"tasks\.Task$"):
    tasks.build(configs.base_config(f"{bad}:get_task"))
  with pytest.raises(ValueError, match=r"^task: no such file 'missing\.py'"):
    tasks.build(configs.base_config("missing.py:get_task"))
  with pytest.raises(ValueError, match=r"^task: .*bad_task\.py has no 'absent'; it defines: "
                                       r"get_task$"):
    tasks.build(configs.base_config(f"{bad}:absent"))


@pytest.mark.parametrize("script,config,expected", [
    ("train.py", "experiments/wine.py", "Summary: {'final_train_loss'"),
    ("sweep.py", "experiments/sweep_wine_lr.py", "Best of optimizer=adam: learning_rate="),
])
def test_the_scripts_run_a_task_file_unchanged(tmp_path, script, config, expected):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", script), f"--config={config}",
       f"--workdir={tmp_path}", "--config.train.steps=20", "--config.train.steps_per_call=10",
       "--config.train.eval_every=10", "--config.train.checkpoint_every=20",
       "--config.sweep.replicates=1", "--config.sweep.report=False"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert expected in result.stderr
