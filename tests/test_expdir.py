"""The experiment directory as files: permissions, appended metrics, crash repair, write volume,
run.json's schema, a single run read as a one-point experiment, TensorBoard events."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from small_configs import classic_config, classic_sweep_config

from jaxopt_lab import expdir, files
from jaxopt_lab import single as single_run
from jaxopt_lab.analysis import findings, report, results
from jaxopt_lab.sweep import driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Killed(BaseException):
  pass


def _bytes(path) -> bytes:
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_respect_the_umask(tmp_path, mask):
  previous = os.umask(mask)
  try:
    files.atomic_write_json(tmp_path / "a.json", {"x": 1})
    log = expdir.MetricsLog(tmp_path / "m.jsonl")
    log.sync([{"step": 0, "split": "valid", "loss": 1.0}])
  finally:
    os.umask(previous)
  for name in ("a.json", "m.jsonl"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~mask, name


def test_a_run_is_readable_by_others(tmp_path):
  previous = os.umask(0o022)
  try:
    single_run.train(classic_config(steps=20), str(tmp_path))
  finally:
    os.umask(previous)
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644, name
  assert not os.path.exists(tmp_path / "tb")  # TensorBoard is off by default


def test_tensorboard_field_is_checked_before_anything_is_written(tmp_path):
  config = classic_config()
  config.train = ml_collections.ConfigDict({**config.train.to_dict(), "tensorboard": "yes"})
  with pytest.raises(ValueError, match="train.tensorboard: must be True or False, got 'yes'"):
    single_run.train(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_metric_floats_are_the_shortest_text_of_their_float32():
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.standard_normal(2000), 10.0 ** rng.uniform(-8, 8, 2000)])
  for x in values.astype(np.float32):
    text = repr(expdir.metric_float(x))
    assert np.float32(float(text)) == x  # round-trips the float32
    # NumPy's own shortest round-trip text of a float32 (Dragon4, unique=True) as the reference.
    assert float(text) == float(np.format_float_scientific(x, unique=True))
  assert json.dumps(expdir.metric_float(np.float32(0.1))) == "0.1"  # not 0.10000000149011612
  assert expdir.metric_float(1e300) == 1e300  # beyond float32: kept
  assert np.isnan(expdir.metric_float(float("nan")))


def test_a_partial_last_line_is_ignored_then_cut(tmp_path):
  path = tmp_path / expdir.METRICS_FILE
  rows = [{"point": 0, "step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(3)]
  expdir.MetricsLog(path).sync(rows)
  whole = _bytes(path)
  files.append_bytes(path, b'{"point": 0, "step": 3, "split": "tr')  # a killed append
  assert files.read_jsonl(path) == rows  # a reader (the report) leaves it out
  log = expdir.MetricsLog(path)
  assert log.read() == rows  # the writer's next start cuts it
  assert _bytes(path) == whole
  log.append([{"point": 0, "step": 3, "split": "train", "loss": 0.25}])
  assert files.read_jsonl(path)[-1]["step"] == 3


def _dying_append(monkeypatch, at: int) -> None:
  """Makes the `at`-th append write half its bytes and die, as a kill in the write would."""
  real, calls = files.append_bytes, {"n": 0}

  def append(path, data):
    calls["n"] += 1
    if calls["n"] == at:
      real(path, data[: len(data) // 2])
      raise _Killed
    real(path, data)

  monkeypatch.setattr(files, "append_bytes", append)


def test_single_run_killed_inside_an_append_resumes_byte_identical(tmp_path, monkeypatch):
  config = classic_config(steps=40, checkpoint_every=10)
  reference = str(tmp_path / "reference")
  single_run.train(config, reference)
  workdir = str(tmp_path / "killed")
  with monkeypatch.context() as m:
    _dying_append(m, at=3)  # the rows of step 30, after the checkpoint of step 20
    with pytest.raises(_Killed):
      single_run.train(config, workdir)
  assert not _bytes(os.path.join(workdir, "metrics.jsonl")).endswith(b"\n")
  single_run.train(config, workdir)
  for name in ("metrics.jsonl",):
    assert _bytes(os.path.join(workdir, name)) == _bytes(os.path.join(reference, name))
  with open(os.path.join(workdir, "summary.json")) as a, open(
      os.path.join(reference, "summary.json")) as b:
    drop = ("seconds_this_session",)
    assert ({k: v for k, v in json.load(a).items() if k not in drop}
            == {k: v for k, v in json.load(b).items() if k not in drop})


@pytest.fixture(scope="module")
def sweep_dirs(tmp_path_factory):
  """An uninterrupted sweep and one killed inside an append, then resumed."""
  config = classic_sweep_config(learning_rates=(0.01, 0.3), replicates=2, steps=40)
  config.train.checkpoint_every = 20
  base = tmp_path_factory.mktemp("sweeps")
  reference = str(base / "reference")
  driver.run_sweep(config, reference)
  workdir = str(base / "killed")
  with pytest.MonkeyPatch.context() as m:
    _dying_append(m, at=6)  # group 2, step 10 (group 1: steps 10, 20, 30, 40; group 2: 10...)
    with pytest.raises(_Killed):
      driver.run_sweep(config, workdir)
  partial = _bytes(os.path.join(workdir, expdir.METRICS_FILE))
  driver.run_sweep(config, workdir)
  return reference, workdir, partial


def test_sweep_killed_inside_an_append_resumes_byte_identical(sweep_dirs):
  reference, workdir, partial = sweep_dirs
  assert not partial.endswith(b"\n")
  for name in (expdir.METRICS_FILE, expdir.SUMMARY_FILE):
    assert _bytes(os.path.join(workdir, name)) == _bytes(os.path.join(reference, name)), name


def test_run_json_follows_the_schema_and_gives_mfu(sweep_dirs):
  reference, _, _ = sweep_dirs
  with open(os.path.join(reference, expdir.RUN_FILE)) as f:
    run = json.load(f)
  assert set(run) == set(expdir.RUN_FIELDS)
  assert run["structural_factors"] == ["optimizer"]
  assert run["peak_flops"] > 1e6 and run["peak_flops_source"].startswith("measured")
  exp = results.load_experiment(reference)
  assert exp.structural_factors == ("optimizer",)
  md = open(report.write_report(reference, num_resamples=50), encoding="utf-8").read()
  assert "MFU = achieved FLOP/s / run.json peak_flops." in md
  total = findings.compute_rows(exp)[-1]
  assert total.group == "total" and 0 < total.mfu < 1  # a measured peak is never exceeded much
  assert total.mfu == pytest.approx(total.flops_per_second / run["peak_flops"])


def test_run_json_refuses_an_undeclared_field():
  fields = dict.fromkeys(expdir.RUN_FIELDS, 0)
  assert list(expdir.run_record(**fields)) == list(expdir.RUN_FIELDS)
  with pytest.raises(ValueError, match="unknown \\['typo'\\]"):
    expdir.run_record(**fields, typo=1)


def _written_bytes() -> int:
  with open("/proc/self/io") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize("kind", ["single", "sweep"])
def test_write_volume_grows_linearly_with_the_run(tmp_path, kind):
  def volume(steps: int) -> int:
    if kind == "single":
      config = classic_config(steps=steps, steps_per_call=1, log_every=1, eval_every=steps,
                              checkpoint_every=steps)
      run = single_run.train
    else:
      config = classic_sweep_config(learning_rates=(0.01, 0.1), optimizers=("sgd",),
                                    replicates=2, steps=steps)
      config.train.update(dict(steps_per_call=1, log_every=1, eval_every=steps,
                               checkpoint_every=steps))
      run = driver.run_sweep
    before = _written_bytes()
    run(config, str(tmp_path / f"{kind}{steps}"))
    return _written_bytes() - before

  short, long = volume(100), volume(200)
  # Rewriting metrics.jsonl at every log step made this ratio about 4 (a quadratic volume).
  assert long / short < 2.3, (short, long)


def test_report_reads_a_single_run(tmp_path):
  workdir = str(tmp_path / "run")
  summary = single_run.train(classic_config(optimizer="sgd", steps=20), workdir)
  exp = results.load_experiment(workdir)
  (group,) = exp.groups
  assert group.label == "sgd" and group.point.tolist() == [[0]]
  assert group.valid[0, 0] == summary["final_valid_loss"]
  assert group.lr[0] == pytest.approx(0.05)
  assert exp.progress.complete
  np.testing.assert_array_equal(exp.curves[0]["valid"]["step"], [0, 20])
  script = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "report.py"),
                           f"--workdir={workdir}", "--num_resamples=50"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
  assert script.returncode == 0, script.stderr[-3000:]
  assert "Best configuration of sgd" in script.stderr
  assert os.path.isfile(os.path.join(workdir, "report", "report.html"))


# --- TensorBoard ------------------------------------------------------------------------------

def _events(folder: str) -> list:
  """Every Event in the TFRecord files of `folder` (length, crc, data, crc per record)."""
  from tensorboardX.proto import event_pb2

  out = []
  for name in sorted(os.listdir(folder)):
    if not name.startswith("events.out.tfevents."):
      continue
    data = _bytes(os.path.join(folder, name))
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
  return out


def _scalars(events) -> dict[str, dict[int, float]]:
  out: dict[str, dict[int, float]] = {}
  for e in events:
    for v in e.summary.value:
      if v.HasField("simple_value") or v.metadata.plugin_data.plugin_name == "scalars":
        value = v.simple_value if v.HasField("simple_value") else float(
            np.frombuffer(v.tensor.tensor_content, np.float32)[0])
        out.setdefault(v.tag, {})[e.step] = value
  return out


def _hparams(events) -> dict[str, object]:
  from tensorboardX.proto import plugin_hparams_pb2

  for e in events:
    for v in e.summary.value:
      if v.metadata.plugin_data.plugin_name == "hparams":
        data = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
        if data.HasField("session_start_info"):
          hp = data.session_start_info.hparams
          return {k: hp[k].WhichOneof("kind") and getattr(hp[k], hp[k].WhichOneof("kind"))
                  for k in hp}
  return {}


def test_tensorboard_events_of_a_sweep(tmp_path):
  pytest.importorskip("tensorboardX")
  config = classic_sweep_config(learning_rates=(0.01, 0.3), optimizers=("sgd",), replicates=1,
                                steps=20)
  config.train.tensorboard = True
  driver.run_sweep(config, str(tmp_path))
  rows = files.read_jsonl(tmp_path / expdir.METRICS_FILE)
  for point, lr in ((0, 0.01), (1, 0.3)):
    events = _events(str(tmp_path / "tb" / str(point)))
    scalars = _scalars(events)
    mine = [r for r in rows if r["point"] == point]
    for split, metric in (("train", "loss"), ("valid", "loss"), ("valid", "accuracy")):
      expected = {r["step"]: r[metric] for r in mine if r["split"] == split}
      assert scalars[f"{split}/{metric}"] == pytest.approx(expected, rel=1e-6)
    hp = _hparams(events)
    assert hp["optimizer"] == "sgd" and hp["learning_rate"] == pytest.approx(lr)


def test_tensorboard_events_of_a_single_run_after_a_resume(tmp_path, monkeypatch):
  pytest.importorskip("tensorboardX")
  config = classic_config(steps=40, checkpoint_every=20, tensorboard=True)
  with monkeypatch.context() as m:
    _dying_append(m, at=4)  # in step 40's rows: TensorBoard has step 30, past the checkpoint
    with pytest.raises(_Killed):
      single_run.train(config, str(tmp_path))
  single_run.train(config, str(tmp_path))
  events = _events(str(tmp_path / "tb"))
  # The resumed run restarts after step 20: its START event at step 30 tells TensorBoard to drop
  # the older events from that step on (the rows a kill left past the checkpoint).
  starts = [e.step for e in events if e.HasField("session_log")]
  assert starts == [0, 30]
  rows = files.read_jsonl(tmp_path / "metrics.jsonl")
  expected = {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
  assert _scalars(events)["train/loss"] == pytest.approx(expected, rel=1e-6)
  assert _hparams(events)["optimizer"] == "adam"
