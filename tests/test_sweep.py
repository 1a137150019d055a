"""The sweep driver: points = single runs, slicing, devices, divergence, resume, errors."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from float_bounds import run_bound
from small_configs import classic_sweep_config

from jaxopt_lab import files, hardware
from jaxopt_lab import single as single_run
from jaxopt_lab.data import batching
from jaxopt_lab.sweep import design, driver, grouping, programs, slices, store

TESTS = os.path.dirname(os.path.abspath(__file__))


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The reference sweep: sgd and adam x lr (0.01, 0.1, 1.0) x 2 seeds, 40 steps."""
  workdir = str(tmp_path_factory.mktemp("sweep"))
  config = classic_sweep_config()
  rows = driver.run_sweep(config, workdir)
  return config, workdir, rows


def test_experiment_directory(swept):
  config, workdir, rows = swept
  assert sorted(os.listdir(workdir)) == [
      ".lock", "checkpoints", "config.json", "design.csv", "metrics.jsonl", "run.json",
      "summary.csv"]
  points = design.read_design_csv(os.path.join(workdir, "design.csv"), config.sweep)
  assert len(points) == 12 and points == design.make_design(config.sweep)
  summary = _read_csv(os.path.join(workdir, "summary.csv"))
  assert [int(r["point"]) for r in summary] == list(range(12))
  assert {r["status"] for r in summary} == {"ok"} and {r["steps"] for r in summary} == {"40"}
  assert {r["group"] for r in summary} == {"optimizer=sgd", "optimizer=adam"}
  for row in summary:  # the resolved hyperparameters are the design's values
    assert float(row["hp_learning_rate"]) == pytest.approx(float(row["learning_rate"]), rel=1e-7)
  with open(os.path.join(workdir, "run.json")) as f:
    run = json.load(f)
  assert run["status"] == "complete" and run["points"] == 12
  assert [g["points"] for g in run["groups"]] == [6, 6]
  assert all(g["compile_seconds"] > 0 and g["points_steps_per_second"] > 0 for g in run["groups"])
  metrics = files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert len([r for r in metrics if r["split"] == "train"]) == 12 * 4
  assert len([r for r in metrics if r["split"] == "test"]) == 12 * 3  # steps 0, 20, 40


def test_common_random_numbers_pair_the_points(swept):
  """Same replicate -> same initial parameters, whatever the optimizer and learning rate."""
  _, workdir, _ = swept
  first = {}
  summary = _read_csv(os.path.join(workdir, "summary.csv"))
  for row in summary:
    first.setdefault(row["replicate"], set()).add(row["seed"])
  assert first == {"0": {"0"}, "1": {"1"}}


@pytest.fixture(scope="module")
def bounds():
  """`B` of every metric of each point of the reference sweep (`float_bounds.run_bound`): two
  float32 runs of a point's math (vmapped in a sweep, alone, sliced, sharded) lie within 2 B."""
  config = classic_sweep_config()
  return {p.point: run_bound(grouping.point_config(config, p))
          for p in design.make_design(config.sweep)}


def _assert_within_2b(got, want, bound, what):
  gap = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
  assert np.all(gap <= 2 * bound), f"{what}: {gap.max():.3g} > 2 B = {2 * bound:.3g}"
  print(f"ratio {what}: {gap.max() / (2 * bound):.3g}")


@pytest.mark.parametrize("point_id", [0, 3, 8])
def test_each_point_reproduces_the_single_run(swept, bounds, tmp_path, point_id):
  config, workdir, rows = swept
  point = design.make_design(config.sweep)[point_id]
  single = single_run.train(grouping.point_config(config, point), str(tmp_path))
  row = rows[point_id]
  for key in ("final_valid_loss", "final_test_accuracy", "best_valid_loss", "final_train_loss"):
    _assert_within_2b(row[key], single[key], bounds[point_id][key], key)
  # The training rows too: the loss's means and the log step's accuracy and norms.
  want = [r for r in files.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
          if r["split"] == "train"]
  got = [r for r in files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
         if r["split"] == "train" and r["point"] == point_id]
  assert [r["step"] for r in got] == [r["step"] for r in want] and len(want) == 4
  for key in ("loss", "accuracy", "grad_norm", "update_norm", "param_norm"):
    _assert_within_2b([r[key] for r in got], [r[key] for r in want], bounds[point_id][key],
                      f"train rows' {key}")


def _assert_rows_close(got, want, bounds):
  """Summary rows (dicts or summary.csv text) agree: metrics within 2 B (`bounds` by point),
  the rest exactly."""
  assert len(got) == len(want)
  for a, b in zip(got, want, strict=True):
    metrics = sorted(k for k in a if k.startswith(("final_", "best_")))
    assert len(metrics) == 9
    assert {k: v for k, v in a.items() if k not in metrics} == {
        k: v for k, v in b.items() if k not in metrics}
    for k in metrics:
      _assert_within_2b(float(a[k]), float(b[k]), bounds[int(a["point"])][k], k)


def test_sliced_equals_unsliced(swept, bounds, tmp_path):
  """Slices of 4 (6 points padded to 8) match all-at-once up to float32 rounding.

  XLA's batched CPU kernels may sum in an order that depends on the batch width, so across
  widths the agreement is to a few ulps; at one width it is exact (see the next tests).
  """
  config, workdir, rows = swept
  sliced = classic_sweep_config()
  sliced.sweep.slice_size = 4
  _assert_rows_close(driver.run_sweep(sliced, str(tmp_path)), rows, bounds)


def test_a_diverging_point_leaves_the_others_bit_identical(tmp_path):
  tame = classic_sweep_config()
  tame.sweep.slice_size = 2
  rows = driver.run_sweep(tame, str(tmp_path / "tame"))
  wild = classic_sweep_config(learning_rates=(0.01, 0.1, 1.0, 1e38))
  wild.sweep.slice_size = 2
  out = driver.run_sweep(wild, str(tmp_path / "wild"))
  diverged = [r for r in out if r["status"] == "diverged"]
  assert len(diverged) == 4 and all(r["diverged_step"] == 2 for r in diverged)
  kept = [r for r in out if r["status"] == "ok"]
  strip = lambda r: {k: v for k, v in r.items() if k not in ("point",)}  # noqa: E731
  assert [strip(r) for r in kept] == [strip(r) for r in rows]


def test_living_points_sharing_a_slice_with_a_diverging_one_are_unchanged(tmp_path):
  """One slice of 4 points, one of which diverges at step 2: the other three keep every bit of
  their summary and curves (the freeze is a select that leaves a living point's state alone)."""
  lrs = (0.01, 0.1, 1.0)
  tame = classic_sweep_config(learning_rates=lrs + (0.5,), optimizers=("adam",), replicates=1)
  wild = classic_sweep_config(learning_rates=lrs + (1e38,), optimizers=("adam",), replicates=1)
  for config in (tame, wild):
    config.sweep.slice_size = 4
  rows = driver.run_sweep(tame, str(tmp_path / "tame"))
  out = driver.run_sweep(wild, str(tmp_path / "wild"))
  assert [r["status"] for r in out] == ["ok", "ok", "ok", "diverged"]
  assert out[3]["diverged_step"] == 2 and out[3]["steps"] == 1
  strip = lambda r: {k: v for k, v in r.items() if k != "learning_rate"}  # noqa: E731
  assert [strip(r) for r in out[:3]] == [strip(r) for r in rows[:3]]
  curves = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("tame", "wild")]
  tame_rows = [r for r in curves[0] if '"point": 3' not in r]
  wild_rows = [r for r in curves[1] if '"point": 3' not in r]
  assert tame_rows == wild_rows and len(tame_rows) > 3


def test_divergence_by_loss_growth(tmp_path):
  config = classic_sweep_config(learning_rates=(0.1, 1e6), optimizers=("sgd",), replicates=1)
  config.sweep.diverge_factor = 10.0
  out = driver.run_sweep(config, str(tmp_path))
  assert [r["status"] for r in out] == ["ok", "diverged"]
  assert out[1]["diverged_step"] == 2 and out[1]["steps"] == 1


class _Killed(BaseException):
  pass


def test_interrupted_sweep_resumes_to_the_same_summary(swept, tmp_path, monkeypatch):
  _, ref_dir, rows = swept
  real_save = store.Store.flush
  calls = {"n": 0}

  def dying_flush(self, status="running"):
    real_save(self, status)
    calls["n"] += 1
    if calls["n"] == 6:  # in the second group, after its rows of step 20 and before a checkpoint
      raise _Killed

  monkeypatch.setattr(store.Store, "flush", dying_flush)
  with pytest.raises(_Killed):
    driver.run_sweep(classic_sweep_config(), str(tmp_path))
  monkeypatch.setattr(store.Store, "flush", real_save)
  with open(tmp_path / "run.json") as f:
    assert json.load(f)["status"] == "running"
  assert driver.run_sweep(classic_sweep_config(), str(tmp_path)) == rows
  for name in ("summary.csv", "metrics.jsonl", "design.csv"):
    with open(tmp_path / name) as a, open(os.path.join(ref_dir, name)) as b:
      assert a.read() == b.read(), name


def test_a_second_sweep_on_a_directory_in_use_is_refused(tmp_path):
  config = classic_sweep_config()
  points = design.make_design(config.sweep)
  holder = store.Store(str(tmp_path), config, points)
  try:
    with pytest.raises(ValueError, match="in use by another run"):
      driver.run_sweep(config, str(tmp_path))
  finally:
    holder.release()


def test_a_config_error_leaves_the_workdir_unwritten(tmp_path):
  config = classic_sweep_config()
  config.sweep.slice_size = -5
  with pytest.raises(ValueError, match="sweep.slice_size"):
    driver.run_sweep(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  config.sweep.slice_size = 0
  config.sweep.data_parallel = 3
  with pytest.raises(ValueError, match="sweep.data_parallel"):
    driver.run_sweep(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_hyperparameter_not_of_the_optimizer_is_a_clear_error(tmp_path):
  config = classic_sweep_config(optimizers=("sgd",))
  config.sweep.factors.b2 = {"values": [0.9, 0.99]}
  with pytest.raises(ValueError, match=r"sweep.factors.b2: optimizer 'sgd'.*learning_rate"):
    driver.run_sweep(config, str(tmp_path))


def _child_path() -> str:
  """The tests' folder, then the caller's PYTHONPATH (a worktree's package before the installed)."""
  return os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p)


def _run_child(code: str, env_extra: dict[str, str], cwd) -> None:
  env = dict(os.environ, PYTHONPATH=_child_path(), **env_extra)
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  print(result.stdout, end="")  # the ratios of gaps to their bounds, with -s


_DEVICES_CHILD = """
    import jax
    assert jax.device_count() == {n}
    from small_configs import classic_sweep_config
    from jaxopt_lab.sweep import driver
    config = classic_sweep_config()
    config.sweep.slice_size = 2
    driver.run_sweep(config, "out{n}")
    if {n} == 4:  # 2 points x 2 data shards
      config.sweep.data_parallel = 2
      driver.run_sweep(config, "out_dp")
"""


def test_four_devices_give_the_same_results(bounds, tmp_path):
  """At one slice width, 1 and 4 devices give the same summary.csv.

  The programs differ (a 4-way sharded one against one), and XLA may fuse them differently, so
  metrics are compared to float32 rounding (they were byte-identical when measured); ids, design
  values, statuses and steps exactly.
  """
  for n in (1, 4):
    _run_child(_DEVICES_CHILD.format(n=n),
               {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}, tmp_path)
  one, four = (_read_csv(tmp_path / d / "summary.csv") for d in ("out1", "out4"))
  _assert_rows_close(four, one, bounds)
  # Data parallelism averages gradients of batch halves: the same math, within 2 B (the halves'
  # sums and their mean are a reduction as long as the batch's, which B counts).
  _assert_rows_close(_read_csv(tmp_path / "out_dp" / "summary.csv"), one, bounds)


_PROCESS_CHILD = """
import sys
import jax
jax.distributed.initialize("localhost:{port}", 2, int(sys.argv[1]))
from small_configs import classic_sweep_config
from jaxopt_lab.sweep import driver
config = classic_sweep_config()
config.sweep.slice_size = 2
driver.run_sweep(config, "out_mp")
"""


def test_two_processes_give_the_summary_of_one(bounds, tmp_path):
  """A 2-process jax.distributed run on localhost writes the summary.csv of a 1-process run.

  Byte-identical when measured; compared like the device test, to float32 rounding.
  """
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  code = _PROCESS_CHILD.format(port=port)
  env = dict(os.environ, PYTHONPATH=_child_path(),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  _run_child(_DEVICES_CHILD.format(n=1), {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
             tmp_path)
  _assert_rows_close(_read_csv(tmp_path / "out_mp" / "summary.csv"),
                     _read_csv(tmp_path / "out1" / "summary.csv"), bounds)


def test_report_of_a_real_sweep(swept):
  """The report of the reference sweep: every section, every linked figure, summary's numbers."""
  from jaxopt_lab.analysis import report  # analysis sits above the sweep; imported here only

  _, workdir, rows = swept
  path = report.write_report(workdir)
  text = open(path).read()
  for section in ("## Setup", "## Fair comparison", "## Learning-rate sensitivity",
                  "## Tuning curves", "## Hyperparameter effects", "## Learning curves",
                  "## Compute"):
    assert section in text, section
  folder = os.path.dirname(path)
  figures = [line.split("](", 1)[1].split(")", 1)[0] for line in text.splitlines()
             if line.startswith("![")]
  assert len(figures) >= 3 and all(os.path.getsize(os.path.join(folder, f)) > 0 for f in figures)
  html = open(os.path.join(folder, "report.html")).read()
  assert html.count("data:image/png;base64,") == len(figures)
  assert "step-0 evaluation" not in text  # the driver evaluates at initialisation
  # comparison.csv: each group's best lr is the one with the best mean valid loss over seeds,
  # and its test loss is the mean of summary.csv's final_test_loss over those seeds.
  comparison = {r["group"]: r for r in _read_csv(os.path.join(folder, "comparison.csv"))}
  assert set(comparison) == {"optimizer=sgd", "optimizer=adam"}
  for group, row in comparison.items():
    mine = [r for r in rows if r["group"] == group]
    by_lr = {}
    for r in mine:
      by_lr.setdefault(float(r["learning_rate"]), []).append(r)
    best_lr = min(by_lr, key=lambda lr: np.mean([r["final_valid_loss"] for r in by_lr[lr]]))
    assert float(row["learning_rate"]) == best_lr
    test_mean = np.mean([r["final_test_loss"] for r in by_lr[best_lr]])
    assert float(row["test_mean"]) == pytest.approx(test_mean, rel=1e-4)
    assert f"{float(row['test_mean']):.5g}" in text


def test_the_device_gather_gives_the_single_runs_batches():
  """A group's program keeps the training set on its devices and receives each chunk's example
  indices (`task.batch_indices`, the host's pure function of seed and step); the batches it
  gathers, per point under vmap as in the program, are NumPy's indexing of the training set."""
  config = classic_sweep_config(optimizers=("adam",), replicates=2)
  group = grouping.build_groups(config, design.make_design(config.sweep))[0]
  run = programs.GroupPrograms(group, programs.make_mesh())
  task, begin, k = group.task, 7, 5
  data, indices = run.device_batches(begin, k)
  host = {name: np.asarray(a) for name, a in task.train_data.items()}
  for name, a in data.items():
    np.testing.assert_array_equal(np.asarray(a), host[name])
  idx = np.asarray(indices)
  assert idx.shape[:2] == (len(group.distinct_seeds), k) and idx.dtype == np.int32
  pick = jax.jit(jax.vmap(lambda r, i: programs.gather_batch(data, indices[r, i]),
                          in_axes=(0, None)))
  for i in range(k):
    got = pick(np.asarray(group.replicate), i)
    for p, r in enumerate(group.replicate):
      seed = group.distinct_seeds[r]
      want = batching.batch_indices(len(host["labels"]), idx.shape[2], seed, begin + i, 1)[0]
      np.testing.assert_array_equal(idx[r, i], want)
      single = task.train_batches(seed, begin + i, 1)
      for name, a in host.items():
        np.testing.assert_array_equal(np.asarray(got[name][p]), a[want])
        np.testing.assert_array_equal(np.asarray(got[name][p]), single[name][0])


def test_auto_slice_width_follows_the_memory_analysis(tmp_path, monkeypatch):
  """slice_size=-1: the widest slice whose compiled program fits `hardware.slice_budget_bytes`:
  half an accelerator's memory; on a CPU, four L2 caches within half the RAM."""
  config = classic_sweep_config(optimizers=("adam",))
  config.sweep.slice_size = -1
  group = grouping.build_groups(config, design.make_design(config.sweep))[0]
  st = store.Store(str(tmp_path), config, design.make_design(config.sweep))
  mesh = programs.make_mesh()
  fixed, per_point = programs.GroupPrograms(group, mesh).slice_memory()
  # The training set (100 x 10 inputs) and the chunk's indices are shared; a point's own state
  # and batches are a few KB.
  assert 4e3 < fixed < 4e6 and 0 < per_point < 1e5
  monkeypatch.setattr(hardware, "l2_cache_bytes", lambda: (fixed + 2.5 * per_point) / 4)
  assert programs.GroupPrograms(group, mesh).width == 2  # 6 points, room for 2.5 -> slices of 2
  monkeypatch.setattr(hardware, "l2_cache_bytes", lambda: 1e15)
  monkeypatch.setattr(hardware, "device_memory_bytes",
                      lambda device: 2 * (fixed + 3.5 * per_point))
  assert programs.GroupPrograms(group, mesh).width == 3  # half the RAM is the tighter bound
  monkeypatch.setattr(hardware, "device_memory_bytes", lambda device: 1e15)
  assert programs.GroupPrograms(group, mesh).width == 6
  st.release()


@pytest.mark.parametrize("local, widest, width", [
    (64, 3, 2), (16, 3, 2), (13, 4, 2), (64, 64, 64), (66, 8, 6), (100, 7, 5), (4, 3, 3),
    (7, 1, 1), (5, 9, 5)])
def test_auto_width_pads_least(local, widest, width):
  """slice_size=-1 takes, of the widths from the budget's down to half of it, the one whose
  slices pad a device's points least (then the widest): never more padding than the budget's."""
  assert slices.least_padded_width(local, widest) == width
  padded = lambda w: -(-local // w) * -(-local // -(-local // w))
  assert padded(width) <= padded(min(widest, local))
  assert padded(width) == min(padded(w) for w in range(-(-min(widest, local) // 2),
                                                       min(widest, local) + 1))


def test_default_cpu_devices_one_per_core_at_most_one_per_point():
  config = classic_sweep_config()  # 2 groups of 3 learning rates x 2 seeds
  assert driver.default_cpu_devices(config, 16) == 6
  assert driver.default_cpu_devices(config, 2) == 2
  assert driver.default_cpu_devices(config, None) == 1
  assert driver.default_cpu_devices(classic_sweep_config((0.1,), ("adam",), 1), 8) == 1
  config.sweep.data_parallel = 2  # each point takes 2 devices: a multiple of 2, <= the cores
  assert driver.default_cpu_devices(config, 16) == 12
  assert driver.default_cpu_devices(config, 5) == 4
  assert driver.default_cpu_devices(config, 1) == 2


def test_a_resume_keeps_the_recorded_slices_and_refuses_another_layout(tmp_path, monkeypatch):
  config = classic_sweep_config(optimizers=("adam",))
  config.sweep.slice_size = -1
  monkeypatch.setattr(hardware, "l2_cache_bytes", lambda: 0.0)  # auto: slices of 1
  rows = driver.run_sweep(config, str(tmp_path))
  layout_path = tmp_path / "checkpoints" / "optimizer=adam.layout.json"
  layout = json.loads(layout_path.read_text())
  assert layout == {"point_devices": 1, "data_devices": 1, "width": 1, "padded": 6}
  monkeypatch.setattr(hardware, "l2_cache_bytes", lambda: 1e15)  # auto would now take all 6
  assert driver.run_sweep(config, str(tmp_path)) == rows
  assert json.loads(layout_path.read_text()) == layout
  layout_path.write_text(json.dumps(dict(layout, point_devices=4, padded=8)))
  with pytest.raises(ValueError, match=r"hold 8 points \(4 x 1 devices.*--cpu_devices=4"):
    driver.run_sweep(config, str(tmp_path))


def test_l2_cache_and_slice_budget(tmp_path):
  assert [hardware.parse_cache_size(t) for t in ("2048K", "2M", "512\n", "1G", "big", "")] == [
      2 << 20, 2 << 20, 512, 1 << 30, None, None]
  for index, level, size in (("index0", "1", "48K"), ("index2", "2", "1280K"),
                             ("index3", "3", "105M")):
    (tmp_path / index).mkdir()
    (tmp_path / index / "level").write_text(level + "\n")
    (tmp_path / index / "size").write_text(size + "\n")
  assert hardware.l2_cache_bytes(cache_dir=str(tmp_path)) == 1280 << 10
  assert hardware.l2_cache_bytes(7, cache_dir=str(tmp_path / "none")) == 7
  cpu = jax.devices("cpu")[0]
  assert hardware.slice_budget_bytes(cpu) == min(4 * hardware.l2_cache_bytes(),
                                                 hardware.device_memory_bytes(cpu) / 2)
  assert 1 <= hardware.usable_cpus() <= (os.cpu_count() or 1)


def test_points_equal_single_runs_in_float64(tmp_path):
  """With 64-bit JAX and float64 compute, batched and single runs agree within 2 B * EPS64 /
  EPS32 over the run (`float_bounds`: B measured from the float32 twin's start, a point within
  float32 rounding of this run's), 2^29 times tighter than the float32 tests above."""
  _run_child("""
      import jax
      import numpy as np
      from float_bounds import TO_FLOAT64, run_bound
      from small_configs import classic_sweep_config
      from jaxopt_lab import single as single_run
      from jaxopt_lab.sweep import design, driver, grouping
      config = classic_sweep_config(learning_rates=(0.03, 0.3, 3.0), replicates=2, steps=60)
      config32 = config.copy_and_resolve_references()
      config.model.dtype = "float64"
      rows = driver.run_sweep(config, "sweep")
      for point in design.make_design(config.sweep)[::2]:
        single = single_run.train(grouping.point_config(config, point), f"single{point.point}")
        assert single["final_valid_loss"] != float(np.float32(single["final_valid_loss"]))
        bound = run_bound(grouping.point_config(config32, point))
        for key in ("final_valid_loss", "final_test_loss", "final_train_loss"):
          gap = abs(rows[point.point][key] - single[key])
          assert gap <= 2 * bound[key] * TO_FLOAT64, (key, gap, bound[key])
          print("ratio", key, gap / (2 * bound[key] * TO_FLOAT64))
  """, {"JAX_ENABLE_X64": "1"}, tmp_path)
