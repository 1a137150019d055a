"""What the benchmarks share: their configs, timing helpers and the driver's group program.

Imports no JAX at module level (the sweep benchmark sets `jax_num_cpu_devices` in its children
before the backend starts).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import resource
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("classic", "digits", "lm")
# The experiment config (experiments/<name>.py) of each task.
EXPERIMENT = {"classic": "classic", "digits": "digits_mlp", "lm": "lm_tiny"}
# Steps per timed call; the LM's largest N runs a single step per call.
STEPS = {"classic": 100, "digits": 20, "lm": 2}


# ----------------------------------------------------------------------------- configs


def _experiment(name: str):
  from jaxopt_lab import configs

  return configs.sibling(os.path.join(REPO, "experiments", f"{name}.py"), name).get_config()


def experiment_config(task: str):
  """The experiment config of `task` (experiments/<name>.py) as the benchmark's base."""
  if task not in EXPERIMENT:
    raise ValueError(f"task: unknown task {task!r}; valid choices: {', '.join(EXPERIMENT)}")
  return _experiment(EXPERIMENT[task])


def lm_small_config():
  """`experiments/lm_small.py`: the accelerator's LM (bf16, width 512, depth 8, context 512)."""
  return _experiment("lm_small")


def sweep_config(base, n: int, steps_per_call: int, width: int):
  """`base` as a one-group sweep of `n` learning rates (one seed), `steps_per_call` per chunk.

  The learning rates are `base`'s times `geomspace(0.25, 1, n)` (`base`'s alone at n = 1);
  `width` is `sweep.slice_size` (-1 auto, 0 all).
  """
  import ml_collections

  config = copy.deepcopy(base)
  k = steps_per_call
  config.train.update(dict(steps=10_000, steps_per_call=k, log_every=k, eval_every=k,
                           checkpoint_every=k))
  config.sweep.design = "grid"
  config.sweep.replicates = 1
  config.sweep.report = False
  config.sweep.slice_size = width
  config.sweep.factors = ml_collections.ConfigDict(
      {"learning_rate": {"values": learning_rates(base, n)}})
  return config


def learning_rates(base, n: int) -> list[float]:
  """The `n` learning rates of the benchmark's sweeps of `base`."""
  import numpy as np

  lr = float(base.optimizer.learning_rate)
  return [lr] if n == 1 else [float(v) for v in lr * np.geomspace(0.25, 1.0, n)]


def shrink_lm(config) -> None:
  """Makes an LM config tiny (to test the LM's benchmarks on a CPU in seconds)."""
  config.model.update(dict(width=32, depth=1, heads=2, context=16))
  config.data.update(dict(batch_size=4, eval_windows=8, eval_batch_size=4, byte_budget=200_000))
  config.train.microbatch_size = min(config.train.get("microbatch_size", 0), 2)


# ----------------------------------------------------------------------------- timing


def peak_rss_mb() -> float:
  """The peak resident memory of this process so far, in MB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_time(fn: Callable[[], Any], repeats: int, min_seconds: float = 1.0) -> float:
  """The shortest of at least `repeats` timed calls, more while they add up to < min_seconds."""
  best, total, count = math.inf, 0.0, 0
  while count < max(1, repeats) or total < min_seconds:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    best, total, count = min(best, elapsed), total + elapsed, count + 1
  return best


def interleaved_best(fns: dict[str, Callable[[], Any]], rounds: int,
                     min_seconds: float = 2.0, max_rounds: int = 40) -> dict[str, float]:
  """The shortest time of each of `fns`, timed in turn round after round.

  Interleaving makes the ratios robust to a load that drifts (other work on the machine): each
  function meets the quiet moments as often as the others. At least `rounds` rounds, more while
  they add up to less than `min_seconds`.
  """
  best = dict.fromkeys(fns, math.inf)
  total, count = 0.0, 0
  while count < max(1, rounds) or (total < min_seconds and count < max_rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      elapsed = time.perf_counter() - start
      best[name] = min(best[name], elapsed)
      total += elapsed
    count += 1
  return best


def xla_bytes(compiled) -> float | None:
  """A compiled program's memory: arguments + temporaries + outputs - donated aliases."""
  try:
    mem = compiled.memory_analysis()
    return float(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                 - mem.alias_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def fmt(x: float | None, digits: int = 3) -> str:
  """A rate or ratio for a table: thousands separators from 1000, else `digits` significant."""
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if abs(x) >= 1000:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


# ----------------------------------------------------------------------------- the driver


@dataclasses.dataclass(frozen=True)
class GroupProgram:
  """The driver's compiled chunk program of one group, as the benchmarks use it.

  Attributes:
    width: points per vmapped slice on a device; padded: points after padding to the mesh.
    mesh: the (`points`, `data`) mesh; chunk: the jitted chunk program
      `(pop, hparams, replicate, active, batches) -> (pop, metrics)`; hparams, replicate, active:
      its arguments (`active`: the points in use per device, all of them here).
    init_population: `() -> pop` on the mesh.
    run_chunk: `(pop, begin, end) -> (pop, metrics)`, the driver's own call: the host builds the
      chunk's batches, places them, compiles at the first call of a length, runs.
    run_loop: `(pop, begin, chunks) -> pop`, a sweep's training as `scripts/sweep.py` runs it
      between two log steps: `chunks` chunks from step `begin` through the run loop
      (`runloop.run`) and the driver's job (`jobs.GroupJob`: its batches, dispatch and late
      fetch), the host building the next chunk's batches while the devices compute; it writes
      nothing (no rows, evaluations or checkpoints) and returns when the last chunk's metrics
      are on the host.
    device_batches: `k -> batches` of the chunk `[0, k)` placed on the mesh as `run_chunk` does.
    compiled: `k -> ` the program `run_chunk` compiled for chunks of `k` steps.
    compile_seconds: `() -> ` seconds `run_chunk` spent compiling so far.
  """

  width: int
  padded: int
  mesh: Any
  chunk: Any
  hparams: Any
  replicate: Any
  active: Any
  init_population: Callable[[], Any]
  run_chunk: Callable[[Any, int, int], Any]
  run_loop: Callable[[Any, int, int], Any]
  device_batches: Callable[[int], Any]
  compiled: Callable[[int], Any]
  compile_seconds: Callable[[], float]


def group_program(group, mesh) -> GroupProgram:
  """The driver's program of `group` (a `grouping.Group`) on `mesh`, without a store."""
  from jaxopt_lab.sweep import programs

  run = programs.GroupPrograms(group, mesh)
  return GroupProgram(
      width=run.width, padded=run.padded, mesh=run.mesh, chunk=run.chunk.fn,
      hparams=run.hparams, replicate=run.replicate, active=run.active,
      init_population=run.init_population,
      run_chunk=lambda pop, begin, end: run.run_chunk(pop, run.device_batches(begin, end - begin)),
      run_loop=_loop_runner(run), device_batches=lambda k: run.device_batches(0, k),
      compiled=lambda k: run.chunk.compiled[k], compile_seconds=lambda: run.compile_seconds)


def _loop_runner(run) -> Callable[[Any, int, int], Any]:
  """`GroupProgram.run_loop` of `run` (a `programs.GroupPrograms`)."""
  import ml_collections

  from jaxopt_lab import runloop
  from jaxopt_lab.sweep import jobs

  class Job(jobs.GroupJob):
    """The driver's job, writing nothing: its batches, dispatch and fetch are the sweep's own."""

    def log(self, step, means, pop):
      return ""

    def evaluate(self, step, pop):
      pass

    def write(self, step, pop, seconds):
      pass

  class NoCheckpoints:
    def save(self, step, state):
      pass

  job = Job(run, None)
  k = int(run.group.config.train.steps_per_call)
  never = 2**62  # no log, evaluation or checkpoint step before the loop's last one
  config = ml_collections.ConfigDict(dict(train=dict(
      steps=0, steps_per_call=k, log_every=never, eval_every=never, checkpoint_every=never)))

  def run_loop(pop, begin: int, chunks: int):
    if begin <= 0:  # the loop evaluates at step 0: start past it
      raise ValueError(f"run_loop: begin must be positive, got {begin}")
    config.train.steps = begin + chunks * k
    progress = runloop.Progress("", config.train.steps, run.n, every=math.inf)
    return runloop.run(job, pop, begin, config, NoCheckpoints(), runloop.Position(), progress)

  return run_loop


def one_group(config):
  """The single group of a one-group sweep config: `grouping.build_groups` of its design."""
  from jaxopt_lab.sweep import design, grouping

  (group,) = grouping.build_groups(config, design.make_design(config.sweep))
  return group


def one_point(group, k: int):
  """The first point of `group` set up for the single-run trainer, `k` steps of batches on the
  device: `(train_step, hparams, state, batches, per_step_batches)`."""
  import jax

  from jaxopt_lab import train

  task = group.task
  train_step = train.make_train_step(task, group.config)
  hp = jax.device_put({key: v[0] for key, v in group.hparams.items()})
  state = jax.jit(lambda h: train.init_state(task, group.config, h, 0))(hp)
  batches = jax.device_put(task.train_batches(0, 0, k))
  per_step = [jax.tree.map(lambda x, j=j: x[j], batches) for j in range(k)]
  return train_step, hp, state, batches, per_step


def time_group_program(base, n: int, k: int, width: int, peak: float,
                       memory: Callable[[], Any] = lambda: None) -> dict[str, Any]:
  """One sweep of `base` at `n` points through the driver's compiled program (accelerators).

  Compile seconds, the first call, the best of at least two timed calls of `k` steps on batches
  already on the device, points x steps/s, tokens/s, MFU over `peak` FLOP/s, XLA's memory
  analysis and `memory()` (the device's peak bytes in use, where it reports them).
  """
  import jax

  from jaxopt_lab.sweep import programs

  group = one_group(sweep_config(base, n, k, width))
  program = group_program(group, programs.make_mesh())
  pop = program.init_population()
  batches = program.device_batches(k)
  t0 = time.perf_counter()
  pop, metrics = program.run_chunk(pop, 0, k)
  jax.block_until_ready((pop, metrics))
  first = time.perf_counter() - t0
  compiled = program.compiled(k)
  state = {"pop": pop}

  def call():
    new_pop, new_metrics = compiled(state["pop"], program.hparams, program.replicate, batches)
    jax.block_until_ready((new_pop, new_metrics))
    state["pop"] = new_pop

  seconds = best_time(call, 2)
  rate = n * k / seconds
  return dict(width=program.width, compile_s=program.compile_seconds(), first_call_s=first,
              seconds=seconds, rate=rate, tokens_per_s=rate * (group.task.tokens_per_step or 0),
              mfu=rate * group.task.flops_per_step / peak, xla_bytes=xla_bytes(compiled),
              peak_bytes_in_use=memory())
