"""The entry scripts end to end in subprocesses: runs, a real kill and resume, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxopt_lab import configs
from jaxopt_lab import single as single_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT, **kwargs)


def test_train_script_runs_the_classic_example(tmp_path):
  result = _script("train.py", "--config=experiments/classic.py:rmsprop", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 10/10" in result.stderr  # the loss of every epoch is printed
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["optimizer"] == "rmsprop" and summary["steps"] == 10


_LONG = ["--config=experiments/classic.py", "--config.train.steps=1500",
         "--config.train.steps_per_call=10", "--config.train.log_every=10",
         "--config.train.eval_every=1000", "--config.train.checkpoint_every=100"]


def test_killed_train_script_resumes_to_the_uninterrupted_result(tmp_path):
  workdir = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "scripts/train.py", *_LONG, f"--workdir={workdir}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  def saved_steps():
    folder = workdir / "checkpoints"
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.exists() else []

  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and max(saved_steps(), default=0) < 200:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  assert not (workdir / "summary.json").exists()  # it was killed mid-run
  result = _script("train.py", *_LONG, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from the checkpoint" in result.stderr

  config = configs.sibling(os.path.join(ROOT, "experiments", "x.py"), "classic").get_config()
  config.train.update(dict(steps=1500, steps_per_call=10, log_every=10, eval_every=1000,
                           checkpoint_every=100))
  reference = single_run.train(config, str(tmp_path / "uninterrupted"))
  with open(workdir / "summary.json") as f:
    resumed = json.load(f)
  for key in reference:
    if key != "seconds_this_session":
      assert resumed[key] == reference[key], key
  reference_rows = tmp_path / "uninterrupted" / "metrics.jsonl"
  assert (workdir / "metrics.jsonl").read_text() == reference_rows.read_text()


@pytest.mark.parametrize("script,args,expected", [
    ("train.py", ["--config=experiments/classic.py", "--config.optimizer.nme=adam"],
     "config.optimizer has no field 'nme'; valid fields: b1, b2"),
    ("train.py", ["--config=experiments/nope.py"], "--config: no such config file"),
    ("train.py", ["--config=experiments/classic.py", "--config.task=mnist"],
     "task: unknown task 'mnist'; registered: classic, breast_cancer, digits, lm; or a plugin"),
    ("train.py", ["--config=experiments/classic.py", "--config.optimizer.name=lion"],
     "optimizer.name: unknown optimizer 'lion'; registered: sgd, adam, adamw, rmsprop; or a "
     "plugin"),
    ("train.py", ["--config=experiments/classic.py", "--config.optimizer.learning_rate=-1"],
     "learning_rate"),
    ("train.py", ["--config=experiments/classic.py", "--config.data.batch_size=1000"],
     "data.batch_size"),
    ("train.py", ["--config=experiments/lm_tiny.py", "--config.data.paths=no/such/dir"],
     "data.paths"),
    ("train.py", ["--config=experiments/lm_tiny.py", "--config.model.context=100000000"],
     "model.context"),
    ("sweep.py", ["--config=experiments/sweep_classic_lr.py",
                  "--config.sweep.design=halton"], "sweep.design"),
])
def test_user_mistakes_end_in_one_line_errors(tmp_path, script, args, expected):
  result = _script(script, *args, f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and expected in last, result.stderr[-2000:]


def test_unwritable_workdir_is_a_one_line_error(tmp_path):
  (tmp_path / "file").write_text("x")
  result = _script("train.py", "--config=experiments/classic.py",
                   f"--workdir={tmp_path / 'file' / 'w'}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: --workdir: cannot write")
