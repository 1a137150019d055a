"""A damaged newest checkpoint: the run resumes from the newest one that restores, one warning.

Faults injected into the newest checkpoint of a finished run (single run and sweep): every file
truncated, corrupt array data, array files overwritten with garbage, corrupt metadata, a partial
directory. The rerun must end with the
files of the uninterrupted run, byte for byte: the metrics past the older checkpoint are trained
again, not kept twice.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from small_configs import classic_config, classic_sweep_config
from workdir_faults import interrupt_after_flush

from jaxopt_lab import checkpoints, files, runloop
from jaxopt_lab import single as single_run
from jaxopt_lab.sweep import driver


def _files(folder: str) -> list[str]:
  return sorted(os.path.join(root, n) for root, _, names in os.walk(folder) for n in names)


def _truncate(step_dir: str) -> None:
  for path in _files(step_dir):
    os.truncate(path, os.path.getsize(path) // 2)


def _corrupt_data(step_dir: str) -> None:
  data = [p for p in _files(step_dir) if f"{os.sep}d{os.sep}" in p]
  assert data
  for path in data:
    with open(path, "r+b") as f:
      raw = bytearray(f.read())
      raw[len(raw) // 3:] = bytes(b ^ 0x5A for b in raw[len(raw) // 3:])
      f.seek(0)
      f.write(raw)


def _garbage(step_dir: str) -> None:
  """Every array file overwritten whole with random bytes (a user's `cat /dev/urandom >`)."""
  data = [p for p in _files(step_dir) if f"{os.sep}d{os.sep}" in p]
  assert data
  garbage = np.random.default_rng(0)
  for path in data:
    with open(path, "wb") as f:
      f.write(garbage.bytes(os.path.getsize(path)))


def _corrupt_metadata(step_dir: str) -> None:
  meta = [p for p in _files(step_dir) if "METADATA" in os.path.basename(p)]
  assert meta
  for path in meta:
    with open(path, "w") as f:
      f.write('{"item_handlers": ')


def _partial(step_dir: str) -> None:
  """As a copy that stopped after the metadata: the array store's files are missing."""
  data = [p for p in _files(step_dir) if "ocdbt" in os.path.basename(p) or os.sep + "d" + os.sep
          in p]
  assert data
  for path in data:
    os.unlink(path)


FAULTS = {"truncated": _truncate, "corrupt_data": _corrupt_data, "garbage": _garbage,
          "corrupt_metadata": _corrupt_metadata, "partial": _partial}


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _check_one_warning(caplog, capfd, skipped: str, resumed: int) -> None:
  warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1, [r.getMessage() for r in warnings]
  message = warnings[0].getMessage()
  assert message.startswith(f"Checkpoint {skipped} does not restore (")
  assert message.endswith(f"resuming from step {resumed}.") and "\n" not in message
  stderr = capfd.readouterr().err
  assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr[-2000:]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("single"))
  return workdir, single_run.train(classic_config(), workdir)


@pytest.mark.parametrize("fault", FAULTS)
def test_single_run_resumes_from_the_newest_checkpoint_that_restores(single, tmp_path, fault,
                                                                     caplog, capfd):
  reference, summary = single
  workdir = str(tmp_path / "w")
  shutil.copytree(reference, workdir)
  newest = os.path.join(workdir, "checkpoints", "40")
  FAULTS[fault](newest)
  capfd.readouterr()
  with caplog.at_level(logging.WARNING):
    again = single_run.train(classic_config(), workdir)
  _check_one_warning(caplog, capfd, newest, 20)
  strip = lambda s: {k: v for k, v in s.items() if k != "seconds_this_session"}  # noqa: E731
  assert strip(again) == strip(summary)
  for name in ("metrics.jsonl", "config.json"):
    assert _read(os.path.join(workdir, name)) == _read(os.path.join(reference, name)), name
  # the damaged checkpoint was replaced by a good one of the same step
  assert checkpoints.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 40


def test_no_checkpoint_restores_is_one_error_naming_the_directory(single, tmp_path):
  reference, _ = single
  workdir = str(tmp_path / "w")
  shutil.copytree(reference, workdir)
  folder = os.path.join(workdir, "checkpoints")
  _truncate(os.path.join(folder, "40"))
  _partial(os.path.join(folder, "20"))
  before = {p: _read(p) for p in _files(folder)}
  with pytest.raises(ValueError, match=rf"none of the 2 checkpoint\(s\) in {folder} restores"):
    single_run.train(classic_config(), workdir)
  assert {p: _read(p) for p in _files(folder)} == before  # nothing deleted: the user decides


GROUP = "optimizer=adam"


def _sweep_config():
  return classic_sweep_config(learning_rates=(0.1, 1.0), optimizers=("adam",), replicates=1)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  return workdir, driver.run_sweep(_sweep_config(), workdir)


@pytest.mark.parametrize("fault", FAULTS)
def test_sweep_group_resumes_from_the_newest_checkpoint_that_restores(swept, tmp_path, fault,
                                                                      caplog, capfd):
  reference, rows = swept
  workdir = str(tmp_path / "w")
  shutil.copytree(reference, workdir)
  newest = os.path.join(workdir, "checkpoints", GROUP, "40")
  FAULTS[fault](newest)
  capfd.readouterr()
  with caplog.at_level(logging.WARNING):
    again = driver.run_sweep(_sweep_config(), workdir)
  _check_one_warning(caplog, capfd, newest, 20)
  assert again == rows
  for name in ("metrics.jsonl", "summary.csv", "design.csv"):
    assert _read(os.path.join(workdir, name)) == _read(os.path.join(reference, name)), name


@pytest.mark.parametrize("damaged", [{}, {40: "truncated"}, {40: "truncated", 30: "partial"}])
def test_the_fallback_restores_the_newest_checkpoint_that_restores(tmp_path, damaged):
  """Four checkpoints, the newest ones damaged: the newest good one is restored, not an older
  one, and only the damaged ones are deleted."""
  steps = (10, 20, 30, 40)
  trees = {s: {"w": np.full((2, 3), s, np.float32), "count": np.int32(s)} for s in steps}
  ckpt = checkpoints.Checkpointer(tmp_path, max_to_keep=len(steps))
  for s in steps:
    ckpt.save(s, trees[s])
  ckpt.close()
  for s, fault in damaged.items():
    FAULTS[fault](str(tmp_path / str(s)))
  newest_good = max(s for s in steps if s not in damaged)
  ckpt = checkpoints.Checkpointer(tmp_path, max_to_keep=len(steps))
  step, tree = ckpt.restore_latest(trees[10])
  ckpt.close()
  assert step == newest_good
  np.testing.assert_array_equal(tree["w"], trees[newest_good]["w"])
  assert int(tree["count"]) == newest_good
  kept = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
  assert kept == [s for s in steps if s not in damaged]


def _resume_config():
  config = _sweep_config()
  config.train.update(dict(steps=60, log_every=10, eval_every=20, checkpoint_every=20))
  return config


@pytest.fixture(scope="module")
def killed_at_50(tmp_path_factory):
  """A sweep of 60 steps killed at its write of step 50 (checkpoints at 20 and 40 on disk), and
  the same sweep uninterrupted."""
  reference = str(tmp_path_factory.mktemp("whole"))
  driver.run_sweep(_resume_config(), reference)
  workdir = str(tmp_path_factory.mktemp("killed"))
  with interrupt_after_flush(lambda st: st.rows[-1]["step"] == 50), pytest.raises(
      runloop.Interrupted):
    driver.run_sweep(_resume_config(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", GROUP))) == ["20", "40"]
  return workdir, reference


@pytest.mark.parametrize("damaged, resumed", [((), 40), (("40",), 20)])
def test_a_resumed_group_names_the_newest_checkpoint_that_restores(killed_at_50, tmp_path,
                                                                   caplog, damaged, resumed):
  """The resumed run says which step it resumed from, and its first write continues there.

  The rerun is stopped at its first write, before it saves a checkpoint: a resume from an
  older checkpoint (or from step 0) is seen in what it says and writes, not in orbax refusing
  to save over a step that is on disk.
  """
  killed, reference = killed_at_50
  workdir = str(tmp_path / "w")
  shutil.copytree(killed, workdir)
  for step in damaged:
    _truncate(os.path.join(workdir, "checkpoints", GROUP, step))
  with caplog.at_level(logging.INFO), interrupt_after_flush(1), pytest.raises(runloop.Interrupted):
    driver.run_sweep(_resume_config(), workdir)
  said = [m for m in caplog.messages if "resumed from the checkpoint" in m]
  assert said == [f"Group {GROUP}: resumed from the checkpoint at step {resumed}."]
  # Its first write: the rows up to the checkpoint, then those of the next log step.
  rows = files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  expected = [r for r in files.read_jsonl(os.path.join(reference, "metrics.jsonl"))
              if r["step"] <= resumed + 10]
  assert rows == expected
