"""The run loop shared by the single run and the sweep: the order of its calls (the late fetch,
the next chunk built while the device computes), its cadence and its progress line."""

import numpy as np
import pytest

from jaxopt_lab import runloop
from jaxopt_lab.configs import base_config


class RecordingJob:
  """A job whose 'device' is the host: each chunk's metric is its step numbers; records calls."""

  compile_seconds = 0.0

  def __init__(self):
    self.calls = []
    self.means = []

  def batches(self, begin, end):
    self.calls.append(("batches", begin, end))
    return np.arange(begin + 1, end + 1, dtype=np.float64)

  def run(self, state, batches, begin, end):
    self.calls.append(("run", begin, end))
    return state + len(batches), {"loss": batches}

  def fetch(self, end, metrics):
    self.calls.append(("fetch", end))
    return metrics

  def log(self, step, means, state):
    self.calls.append(("log", step))
    self.means.append((step, float(means["loss"])))
    return "text"

  def evaluate(self, step, state):
    self.calls.append(("evaluate", step))

  def write(self, step, state, seconds):
    self.calls.append(("write", step))


class RecordingCheckpointer:
  def __init__(self, calls):
    self.calls = calls

  def save(self, step, state):
    self.calls.append(("save", step))


def _config(start_steps=10):
  config = base_config("classic")
  config.train.steps = start_steps
  config.train.steps_per_call = 2
  config.train.log_every = 4
  config.train.eval_every = 5
  config.train.checkpoint_every = 8
  return config


def test_loop_fetches_late_builds_the_next_chunk_early_and_keeps_the_cadence():
  job = RecordingJob()
  where = runloop.Position()
  state = runloop.run(job, 0, 0, _config(), RecordingCheckpointer(job.calls), where,
                      runloop.Progress("", 10, 1, every=0.0))
  assert state == 10 and where.step == 10
  # Chunks end at 2, 4, 5, 6, 8, 10 (multiples of 2, 4, 5 and 8). The next chunk's batches are
  # built right after a chunk is dispatched, before the previous chunk's metrics are fetched.
  assert job.calls == [
      ("evaluate", 0), ("batches", 0, 2),
      ("run", 0, 2), ("batches", 2, 4),
      ("run", 2, 4), ("batches", 4, 5), ("fetch", 2), ("fetch", 4),
      ("log", 4), ("write", 4),
      ("run", 4, 5), ("batches", 5, 6), ("fetch", 5), ("evaluate", 5), ("write", 5),
      ("run", 5, 6), ("batches", 6, 8),
      ("run", 6, 8), ("batches", 8, 10), ("fetch", 6), ("fetch", 8),
      ("log", 8), ("write", 8), ("save", 8),
      ("run", 8, 10), ("fetch", 10), ("log", 10), ("evaluate", 10), ("write", 10), ("save", 10),
  ]
  # Means over each log interval: steps 1-4, 5-8 and 9-10.
  assert job.means == [(4, 2.5), (8, 6.5), (10, 9.5)]


def test_loop_resumed_makes_the_same_calls_past_its_checkpoint():
  job = RecordingJob()
  runloop.run(job, 8, 8, _config(), RecordingCheckpointer(job.calls), runloop.Position(),
              runloop.Progress("", 10, 1))
  assert job.calls == [("batches", 8, 10), ("run", 8, 10), ("fetch", 10), ("log", 10),
                       ("evaluate", 10), ("write", 10), ("save", 10)]
  job = RecordingJob()
  runloop.run(job, 10, 10, _config(), RecordingCheckpointer(job.calls), runloop.Position(),
              runloop.Progress("", 10, 1))
  assert job.calls == []


def test_progress_is_throttled_and_its_rates_leave_out_compile_and_checkpoints():
  now = [0.0]
  progress = runloop.Progress("group 1/2 g ", 100, 4, every=5.0, later=400,
                              clock=lambda: now[0])
  progress.start(0, 0.0)
  now[0] = 3.0
  line = progress.update(10, "loss 1", compile_seconds=2.0)  # the first line is due at once
  # 4 points x 10 steps in 3 s, 2 of them compiling: 40 points x steps/s.
  # ETA: (4 x 90 + 400) points x steps at 40/s = 19 s.
  assert line == ("group 1/2 g [##..................] step 10/100 | loss 1 | "
                  "40.0 points x steps/s | elapsed 0:03 | ETA 0:19")
  now[0] = 4.0
  assert progress.update(20, "loss 1", compile_seconds=2.0) is None  # 1 s after the last line
  progress.exclude(1.0)  # a checkpoint
  now[0] = 9.0
  line = progress.update(30, "loss 1", compile_seconds=2.0)
  # 4 x 20 steps in the 6 s since the last line, less 1 s of checkpoint: 16 points x steps/s.
  assert "| 16.0 points x steps/s |" in line and "elapsed 0:09" in line
  # Over the whole loop: 4 x 30 steps in 9 - 2 - 1 = 6 s, 20/s; (4 x 70 + 400) / 20 = 34 s.
  assert line.endswith("ETA 0:34")
  now[0] = 10.0
  last = progress.update(100, "loss 1", compile_seconds=2.0)  # the last line always comes
  # 4 x 70 steps in 1 s; the later groups' 400 points x steps at 4 x 100 / (10 - 3) per s: 7 s.
  assert last is not None and "step 100/100" in last and "| 280.0 points x steps/s |" in last
  assert last.endswith("ETA 0:07")


def test_chunk_program_compiles_once_per_length():
  import jax
  import jax.numpy as jnp

  program = runloop.ChunkProgram(jax.jit(lambda x: jnp.cumsum(x)))
  np.testing.assert_array_equal(program(3, jnp.ones(3)), [1, 2, 3])
  np.testing.assert_array_equal(program(3, jnp.full(3, 2.0)), [2, 4, 6])
  np.testing.assert_array_equal(program(2, jnp.ones(2)), [1, 2])
  assert sorted(program.compiled) == [2, 3] and program.compile_seconds > 0
  with pytest.raises(TypeError):  # a length's program takes only its own shapes
    program(3, jnp.ones(4))


def test_a_log_row_holds_the_mean_loss_and_the_other_metrics_of_its_last_step():
  """Chunks of [steps] and of [steps, points]: the loss averaged over the interval's steps (in
  float64), every other metric (norms, the task's) the value of the interval's last step."""
  acc = runloop.MetricMeans()
  first = {"loss": np.float32([[1, 10], [2, 20]]), "grad_norm": np.float32([[np.nan] * 2, [5, 6]])}
  second = {"loss": np.float32([[3, 30]]), "grad_norm": np.float32([[7, 8]])}
  acc.add(first)
  acc.add(second)
  row = acc.pop()
  np.testing.assert_array_equal(row["loss"], [2.0, 20.0])
  np.testing.assert_array_equal(row["grad_norm"], [7.0, 8.0])
  acc.add({"loss": np.float32([4, 6]), "accuracy": np.float32([np.nan, 0.5])})
  assert acc.pop() == {"loss": 5.0, "accuracy": 0.5}  # popped rows start afresh
