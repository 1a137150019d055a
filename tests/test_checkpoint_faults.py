"""A damaged newest checkpoint: the run resumes from the newest one that restores, one warning.

Faults injected into the newest checkpoint of a finished run (single run and sweep): every file
truncated, corrupt array data, corrupt metadata, a partial directory. The rerun must end with the
files of the uninterrupted run, byte for byte: the metrics past the older checkpoint are trained
again, not kept twice.
"""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from small_configs import classic_config, classic_sweep_config

from jaxopt_lab import checkpoints
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


FAULTS = {"truncated": _truncate, "corrupt_data": _corrupt_data,
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
  newest = os.path.join(workdir, "checkpoints", "optimizer=adam", "40")
  FAULTS[fault](newest)
  capfd.readouterr()
  with caplog.at_level(logging.WARNING):
    again = driver.run_sweep(_sweep_config(), workdir)
  _check_one_warning(caplog, capfd, newest, 20)
  assert again == rows
  for name in ("metrics.jsonl", "summary.csv", "design.csv"):
    assert _read(os.path.join(workdir, name)) == _read(os.path.join(reference, name)), name
