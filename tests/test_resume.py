"""Resume after Ctrl-C or a kill, with small batches: the data position and the checkpoint count.

Every run here trains the classic task on batches of 10 of its 100 examples, so a resume that
restarts the data order, or ignores a checkpoint, changes the numbers (a full batch per step
would only reorder a sum). The interrupts come after a checkpoint, so training resumes mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from small_configs import classic_config, classic_sweep_config
from workdir_faults import interrupt_after_flush

from jaxopt_lab import checkpoints, configs, files, runloop
from jaxopt_lab import single as single_run
from jaxopt_lab.sweep import design, driver, grouping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Saves dominate the time of this small task, so the interrupt usually comes during one.
_TRAIN = dict(steps=400, steps_per_call=10, log_every=10, eval_every=200, checkpoint_every=10)
_ARGS = ["--config=experiments/classic.py", "--config.data.batch_size=10",
         *(f"--config.train.{k}={v}" for k, v in _TRAIN.items())]


def _classic_config():
  config = configs.sibling(os.path.join(ROOT, "experiments", "x.py"), "classic").get_config()
  config.data.batch_size = 10
  config.train.update(_TRAIN)
  return config


def _strays(folder) -> list[str]:
  return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_ctrl_c_is_one_line_and_the_resume_is_identical(tmp_path):
  workdir = tmp_path / "interrupted"
  # The child must not inherit an ignored SIGINT (a runner started as a background job): exec
  # resets a caught signal to its default action, and Python then turns it into KeyboardInterrupt.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *_ARGS, f"--workdir={workdir}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  finally:
    signal.signal(signal.SIGINT, previous)
  checkpoints = workdir / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and not (
      checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
    time.sleep(0.01)
  time.sleep(0.2)  # into the run, where a save is likely in progress
  assert proc.poll() is None, "the run ended before it could be interrupted"
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = stderr.strip().splitlines()
  assert lines, (stdout, stderr)
  last = lines[-1]
  assert last.startswith("interrupted at step ") and last.endswith(
      "; run the same command to resume"), last
  step = int(last.split()[3])
  saved = int(last.split("last checkpoint: step ")[1].split(")")[0])
  assert 10 <= saved <= step < 400 and saved % 10 == 0
  # consistent files: whole rows up to where it stopped, no result yet, no temp file
  rows = files.read_jsonl(workdir / "metrics.jsonl")
  assert rows and max(r["step"] for r in rows) <= step
  assert not (workdir / "summary.json").exists() and not _strays(workdir)

  resumed = single_run.train(_classic_config(), str(workdir))
  reference = single_run.train(_classic_config(), str(tmp_path / "uninterrupted"))
  strip = lambda s: {k: v for k, v in s.items() if k != "seconds_this_session"}  # noqa: E731
  assert strip(resumed) == strip(reference)
  assert (workdir / "metrics.jsonl").read_text() == (
      tmp_path / "uninterrupted" / "metrics.jsonl").read_text()


def _sweep_config():
  config = classic_sweep_config(learning_rates=(0.1, 1.0), optimizers=("sgd", "adam"),
                                replicates=1, steps=40)
  config.data.batch_size = 10
  return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  return workdir, driver.run_sweep(_sweep_config(), workdir)


def test_sweep_resumes_a_group_mid_run_from_its_checkpoint(uninterrupted, tmp_path, monkeypatch,
                                                           caplog):
  """Ctrl-C after the second group's step 30 (its checkpoint is at 20): the group resumes there.

  Also: the console line of scripts/report.py on the interrupted sweep, the temp files a kill
  left, and run.json's tally over both runs (steps trained, steps run, wall time).
  """
  reference, rows = uninterrupted
  workdir = str(tmp_path / "w")
  started = time.perf_counter()
  # the 7th write: 4 of the first group (10..40), then the second's 10, 20, 30
  with interrupt_after_flush(7), pytest.raises(runloop.Interrupted) as interrupt:
    driver.run_sweep(_sweep_config(), workdir)
  first_run = time.perf_counter() - started
  groups = [g.name for g in grouping.build_groups(_sweep_config(), _design())]
  second = groups[1]
  assert str(interrupt.value) == (f"interrupted at step 30 of group {second} (last checkpoint: "
                                  "step 20); run the same command to resume")
  with open(os.path.join(workdir, "run.json")) as f:
    killed = json.load(f)
  assert killed["status"] == "running"
  assert 0 < killed["wall_seconds"] <= first_run
  assert [(g["group"], g["steps_trained"], g["steps_run"]) for g in killed["groups"]] == [
      (groups[0], 40, 40), (second, 30, 30)]

  report = subprocess.run([sys.executable, "scripts/report.py", f"--workdir={workdir}",
                           "--num_resamples=50"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert report.returncode == 0, report.stderr[-3000:]
  assert "Incomplete: 2 of 4 points finished" in report.stderr, report.stderr[-3000:]

  # temp files of writes that a kill cut short; the resume removes them (and nothing else)
  strays = [os.path.join(workdir, ".run.json.k2x_9qz1.tmp"),
            os.path.join(workdir, "checkpoints", f".{second}.layout.json.abcdefgh.tmp")]
  keep = [os.path.join(workdir, "notes.tmp"), os.path.join(workdir, ".run.json.tmp")]
  for path in strays + keep:
    with open(path, "w") as f:
      f.write("{")

  started = time.perf_counter()
  with caplog.at_level(logging.INFO):
    assert driver.run_sweep(_sweep_config(), workdir) == rows
  second_run = time.perf_counter() - started
  assert f"Group {second}: resumed from the checkpoint at step 20." in caplog.messages
  assert f"Group {groups[0]}: resumed from the checkpoint at step 40." in caplog.messages
  for name in ("metrics.jsonl", "summary.csv", "design.csv"):
    with open(os.path.join(workdir, name)) as a, open(os.path.join(reference, name)) as b:
      assert a.read() == b.read(), name
  assert not any(os.path.exists(p) for p in strays) and all(os.path.exists(p) for p in keep)

  with open(os.path.join(workdir, "run.json")) as f:
    run = json.load(f)
  assert run["status"] == "complete"
  # steps_trained: where the points got; steps_run: every step run, 30 + the 20 trained again
  assert [(g["group"], g["steps_trained"], g["steps_run"]) for g in run["groups"]] == [
      (groups[0], 40, 40), (second, 40, 50)]
  assert 0 < run["wall_seconds"] - killed["wall_seconds"] <= second_run
  done = {g["group"]: g for g in killed["groups"]}
  for g in run["groups"]:
    assert g["train_seconds"] >= done[g["group"]]["train_seconds"] > 0
    assert g["points_steps_per_second"] == pytest.approx(
        g["points"] * g["steps_run"] / g["train_seconds"])


def _design():
  return design.make_design(_sweep_config().sweep)


def test_ctrl_c_while_a_checkpoint_is_saved_names_that_checkpoint(tmp_path, monkeypatch):
  """The line is read from the disk: the save that was cut short had already renamed its step."""
  real_save = checkpoints.Checkpointer.save

  def interrupted_save(self, step, tree):
    real_save(self, step, tree)
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpoints.Checkpointer, "save", interrupted_save)
  with pytest.raises(runloop.Interrupted, match=r"^interrupted at step 20 of 40 \(last checkpoint: "
                                              r"step 20\); run the same command to resume$"):
    single_run.train(classic_config(), str(tmp_path))


def test_ctrl_c_during_a_save_waits_for_the_checkpoint(tmp_path, monkeypatch):
  """Interrupted inside orbax's save, the interpreter would shut down under orbax's threads."""
  real_wait = ocp.CheckpointManager.wait_until_finished
  finished = []

  def interrupted_wait(self):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the save is being finished
    real_wait(self)
    finished.append(True)

  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", interrupted_wait)
  ckpt = checkpoints.Checkpointer(tmp_path)
  tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
  with pytest.raises(KeyboardInterrupt):
    ckpt.save(7, tree)
  assert finished  # the interrupt came after the save had finished, not in it
  monkeypatch.undo()
  step, restored = checkpoints.Checkpointer(tmp_path).restore_latest(tree)
  assert step == 7
  np.testing.assert_array_equal(restored["w"], tree["w"])
