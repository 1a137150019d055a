r"""Throughput of the sweep driver against the same points trained one after another.

Measured side by side in one run on one machine, for N = 1, 8, 32, 128 design points (learning
rates of one optimizer, one seed) of `classic`, `digits` and the `tiny` LM:

* points x steps per second of the sweep, through the driver's own chunk program
  (`driver._Run.run_chunk`): end to end (host batches and their transfer included) and the
  compiled program alone, after a warm-up call, best of `--repeats`;
* the sequential baselines on the single-run trainer's `train.make_train_step`: (a) a Python loop
  of one jitted `train_step` per call, (b) a loop over points of one jitted `lax.scan` chunk
  (`train.scan_steps`) per point. The better of the two is "the best sequential loop". A point
  costs the same whatever N, so they loop over `--seq_points` points of the same design;
* `classic` only: a plain PyTorch loop of the same model (when `torch` is installed);
* the compile time of the group's chunk program against N (best of three compiles), the peak
  resident memory of a process that runs one configuration and nothing else (`ru_maxrss` of a
  fresh child), and the model-FLOPs utilisation against the machine's measured matmul peak
  (`hardware.measure_matmul_flops`);
* the driver runs as `scripts/sweep.py` runs it: one XLA CPU device per core
  (`jax_num_cpu_devices`, the script's `--cpu_devices` default) and `sweep.slice_size = -1`
  (slices sized to the cache, `hardware.slice_budget_bytes`); other setups measured on the same
  points: `1dev` (one device, whose XLA threads share the cores), explicit slice widths
  (`--widths` for digits at the largest N, `--lm_widths` for the LM at N = 32), and the memory
  allocators `glibc` (glibc malloc that keeps its freed memory), `tcmalloc` and `jemalloc`
  (LD_PRELOAD of Debian's libtcmalloc-minimal4 / libjemalloc2).

Every configuration runs in a fresh child process, one at a time. The load average of the
machine is recorded with each measurement: other work on the machine makes every rate lower.

  python -m benchmarks.sweep_throughput                              # all of it (~15 min, 2 cores)
  python -m benchmarks.sweep_throughput --tasks=classic --points=1,128 --allocators=default
  python -m benchmarks.sweep_throughput --json_out=/tmp/bench.json --markdown_out=/tmp/bench.md

`--device_check` instead runs the `lm_small` LM (experiments/lm_small.py, bf16) on the first
accelerator: the sweep at N = 1, 8, 32, 64 against the sequential loops, points x steps/s and
bf16 MFU against `hardware.peak_flops`, results as JSON (rewritten after every configuration):

  python -m benchmarks.sweep_throughput --device_check --json_out=/tmp/gpu_lm_small.json
  python -m benchmarks.sweep_throughput --device_check --device_shrink --json_out=/tmp/t.json  # CPU
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from jaxopt_lab import hardware

_TASKS = ("classic", "digits", "lm")
_ALLOCATORS = ("default", "glibc", "tcmalloc", "jemalloc")

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(_TASKS), f"Tasks to measure, of {', '.join(_TASKS)}.")
flags.DEFINE_list("points", ["1", "8", "32", "128"], "Numbers of design points N.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (best of); fewer for slow ones.")
flags.DEFINE_integer("seq_points", 4, "Points trained one after another by the sequential loops.")
flags.DEFINE_list("widths", ["8", "0"],
                  "Extra slice widths (sweep.slice_size, 0 = all) of digits at the largest N.")
flags.DEFINE_list("lm_widths", ["4", "0"], "Extra slice widths of the LM at N = 32.")
flags.DEFINE_list("variants", ["1dev"],
                  "Other setups to measure beside the driver's: 1dev (one XLA CPU device).")
flags.DEFINE_list("allocators", list(_ALLOCATORS),
                  f"Memory allocators to compare, of {', '.join(_ALLOCATORS)}.")
flags.DEFINE_bool("overlap", False, "Also time the program with the next chunk's batches built "
                  "while it runs.")
flags.DEFINE_bool("torch", True, "Measure the PyTorch loop of classic (needs torch).")
flags.DEFINE_string("json_out", "", "Write every measurement to this JSON file.")
flags.DEFINE_string("markdown_out", "", "Write the result tables to this Markdown file.")
flags.DEFINE_string("worker", "", "Internal: run one measurement (JSON spec) and print it.")
flags.DEFINE_string("from_json", "", "Print the tables of the --json_out file of an earlier run "
                    "(with this version's report) instead of measuring.")
flags.DEFINE_bool("device_check", False, "Run the lm_small accelerator check instead.")
flags.DEFINE_list("device_points", ["1", "8", "32", "64"], "Device check: numbers of points.")
flags.DEFINE_list("device_fused_points", ["8", "64"], "Device check: numbers of points measured "
                  "again with model.attention = 'fused' (jax.nn.dot_product_attention).")
flags.DEFINE_integer("device_steps", 10, "Device check: timed steps per call (one call).")
flags.DEFINE_integer("device_width", 8, "Device check: sweep.slice_size (points per slice).")
flags.DEFINE_integer("device_budget_s", 330, "Device check: skip what would start after this.")
flags.DEFINE_bool("device_shrink", False, "Device check: a tiny LM, to test the check on a CPU.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXPERIMENT = {"classic": "classic", "digits": "digits_mlp", "lm": "lm_tiny"}
# Steps per timed call; the LM's largest N runs a single step per call.
_STEPS = {"classic": 100, "digits": 20, "lm": 2}
# The driver rows run as scripts/sweep.py does: one XLA CPU device per core (at most one per
# point, `driver.default_cpu_devices`), slices sized by `sweep.slice_size = -1`.
_HOST_DEVICES = hardware.usable_cpus()
_MAIN_WIDTH = -1


def main_devices(n: int) -> int:
  """`driver.default_cpu_devices` of a one-group sweep of n points."""
  return min(_HOST_DEVICES, n)
_ALLOCATOR_LIBS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}
# glibc malloc that keeps what it frees: buffers up to 32 MiB (the largest mmap threshold glibc
# takes) come from the heap, which is never trimmed, so repeated steps reuse warm pages.
_GLIBC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736"


# ----------------------------------------------------------------------------- configs


def experiment_config(task: str):
  """The experiment config of `task` (experiments/<name>.py) as the benchmark's base."""
  from jaxopt_lab import configs

  name = _EXPERIMENT[task]
  return configs.sibling(os.path.join(_REPO, "experiments", f"{name}.py"), name).get_config()


def sweep_config(base, n: int, steps_per_call: int, width: int):
  """`base` as a one-group sweep of `n` learning rates (one seed), `steps_per_call` per chunk."""
  import ml_collections
  import numpy as np

  config = copy.deepcopy(base)
  k = steps_per_call
  config.train.update(dict(steps=10_000, steps_per_call=k, log_every=k, eval_every=k,
                           checkpoint_every=k))
  lr = float(base.optimizer.learning_rate)
  values = [lr] if n == 1 else [float(v) for v in lr * np.geomspace(0.25, 1.0, n)]
  config.sweep.design = "grid"
  config.sweep.replicates = 1
  config.sweep.report = False
  config.sweep.slice_size = width
  config.sweep.factors = ml_collections.ConfigDict({"learning_rate": {"values": values}})
  return config


def shrink_lm(config) -> None:
  """Makes an LM config tiny (to test the device check on a CPU)."""
  config.model.update(dict(width=32, depth=1, heads=2, context=16))
  config.data.update(dict(batch_size=4, eval_windows=8, eval_batch_size=4, byte_budget=200_000))


# ----------------------------------------------------------------------------- measuring


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _best_time(fn: Callable[[], Any], repeats: int, min_seconds: float = 1.0) -> float:
  """The shortest of at least `repeats` timed calls, more while they add up to < min_seconds."""
  best, total, count = math.inf, 0.0, 0
  while count < max(1, repeats) or total < min_seconds:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    best, total, count = min(best, elapsed), total + elapsed, count + 1
  return best


def _xla_bytes(compiled) -> float | None:
  try:
    mem = compiled.memory_analysis()
    return float(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                 - mem.alias_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def device_batches(run, k: int):
  """The chunk's batches of `run` (a `driver._Run`) on its mesh, placed as `run_chunk` does."""
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from jaxopt_lab.sweep import driver

  sharding = NamedSharding(run.mesh, P(None, None, "data"))
  return jax.tree.map(lambda x: driver._to_global(x, sharding), run._batches(0, k))


def _interleaved_best(fns: dict[str, Callable[[], Any]], rounds: int,
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


def sequential_loops(task, config, hparams: dict[str, Any], seed: int, n: int, k: int):
  """The sequential baselines over `n` points of `hparams` ([points] arrays), `k` steps each.

  Returns `({'step': loop, 'scan': loop}, first-call seconds of each)`: a Python loop of one
  jitted `train_step` per call, and a loop over points of one jitted `train.scan_steps` chunk,
  both on the jitted functions themselves (their C++ dispatch path) with the batches already on
  the device. The first call of each (one step, one chunk) is the compile time.
  """
  import jax

  from jaxopt_lab import train

  train_step = train.make_train_step(task, config)
  step = jax.jit(train_step, donate_argnums=0)
  scan = jax.jit(train.scan_steps(train_step), donate_argnums=0)
  init = jax.jit(lambda h, s: train.init_state(task, config, h, s))
  hps = [jax.device_put({key: v[i] for key, v in hparams.items()}) for i in range(n)]
  batches = jax.device_put(task.train_batches(seed, 0, k))
  per_step = [jax.tree.map(lambda x, j=j: x[j], batches) for j in range(k)]
  states = [init(h, seed) for h in hps]
  jax.block_until_ready((states, per_step))
  first = {}
  start = time.perf_counter()
  states[0] = jax.block_until_ready(step(states[0], per_step[0], hps[0])[0])
  first["step"] = time.perf_counter() - start
  start = time.perf_counter()
  states[0] = jax.block_until_ready(scan(states[0], batches, hps[0])[0])
  first["scan"] = time.perf_counter() - start

  def loop_steps():
    for i in range(n):
      s = states[i]
      for j in range(k):
        s, _ = step(s, per_step[j], hps[i])
      jax.block_until_ready(s)
      states[i] = s

  def loop_scans():
    for i in range(n):
      s, metrics = scan(states[i], batches, hps[i])
      jax.block_until_ready((s, metrics))
      states[i] = s

  loop_steps()  # warm-up
  loop_scans()
  return {"step": loop_steps, "scan": loop_scans}, first


def measure_sweep(spec: dict[str, Any]) -> dict[str, Any]:
  """One sweep configuration against the sequential loops, timed in turn in this process.

  Rates: `e2e`, the host builds the chunk's batches, then the program runs (the driver's
  `run_chunk`); `program`, the compiled program alone on batches already on the device;
  `overlap` (optional), the program is dispatched and the next chunk's batches are built
  meanwhile; `seq_step` and `seq_scan`, the sequential loops over `seq_points` of the points.
  The peak RSS is read before the sequential loops are built.
  """
  import jax

  from jaxopt_lab.sweep import design, driver

  task_name, n, k, width = spec["task"], spec["n"], spec["steps"], spec["width"]
  base = experiment_config(task_name)
  if spec.get("shrink"):
    shrink_lm(base)
  config = sweep_config(base, n, k, width)
  (group,) = driver.build_groups(config, design.make_design(config.sweep))
  mesh = driver.make_mesh()
  run = driver._Run(group, mesh, None)
  pop = run.init_population()
  jax.block_until_ready(pop)
  rss_before = _peak_rss_mb()
  out = dict(width=run.width, devices=mesh.devices.size, padded=run.padded,
             flops_per_step=group.task.flops_per_step, tokens_per_step=group.task.tokens_per_step)

  def host_batches():
    return device_batches(run, k)

  batches = host_batches()
  start = time.perf_counter()
  state = {"pop": run.run_chunk(pop, 0, k)[0]}
  jax.block_until_ready(state)
  out["first_call_s"] = time.perf_counter() - start
  compiled = run._compiled[k]
  # A compile varies by +-30 % from one to the next here: the best of three.
  compiles = [run.compile_seconds]
  for _ in range(2):
    jax.clear_caches()  # else the same lowering is answered from JAX's in-memory cache
    start = time.perf_counter()
    run.chunk.lower(state["pop"], run.hparams, run.replicate, batches).compile()
    compiles.append(time.perf_counter() - start)
  out["compile_s"], out["all_compiles_s"] = min(compiles), compiles

  def e2e():
    return run.run_chunk(state["pop"], 0, k)

  def program():
    return compiled(state["pop"], run.hparams, run.replicate, batches)

  def overlap():
    result = compiled(state["pop"], run.hparams, run.replicate, state["next"])
    state["next"] = host_batches()  # while the program runs
    return result

  def timed(fn):
    def go():
      new_pop, metrics = fn()
      jax.block_until_ready((new_pop, metrics))
      state["pop"] = new_pop

    return go

  state["next"] = batches
  timed(e2e)()  # the second call: every buffer of the steady state allocated once
  out["peak_rss_mb"] = _peak_rss_mb()
  out["rss_before_compile_mb"] = rss_before
  out["xla_bytes"] = _xla_bytes(compiled)
  fns = {"program": timed(program), "e2e": timed(e2e)}
  if spec.get("overlap"):
    fns["overlap"] = timed(overlap)
  work = {name: n * k for name in fns}
  seq_n = spec.get("seq_points", 0)
  if seq_n:
    loops, first = sequential_loops(group.task, group.config, group.hparams,
                                    group.distinct_seeds[0], min(seq_n, n), k)
    for name, loop in loops.items():
      fns[f"seq_{name}"] = loop
      work[f"seq_{name}"] = min(seq_n, n) * k
      out[f"seq_first_call_{name}_s"] = first[name]
  if spec.get("matmul"):  # the machine's matmul peak, in the same minutes as the row
    import jax.numpy as jnp

    size = 1024
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    fns["matmul"] = lambda: matmul(a, a).block_until_ready()
    work["matmul"] = 2.0 * size**3
  if spec.get("torch_points"):
    loop = torch_loop(group, min(spec["torch_points"], n), k)
    if isinstance(loop, str):
      out["torch_skipped"] = loop
    else:
      import torch

      fns["torch"], work["torch"] = loop, min(spec["torch_points"], n) * k
      out["torch_version"] = torch.__version__
  best = _interleaved_best(fns, spec["repeats"])
  for name, seconds in best.items():
    out[f"{name}_s"] = seconds
    out[f"rate_{name}"] = work[name] / seconds
  return out


def measure_sequential(spec: dict[str, Any]) -> dict[str, Any]:
  """The points one after another, alone in a process (for its peak memory and first calls)."""
  from jaxopt_lab.sweep import design, driver

  task_name, n, k = spec["task"], spec["n"], spec["steps"]
  base = experiment_config(task_name)
  if spec.get("shrink"):
    shrink_lm(base)
  config = sweep_config(base, n, k, 0)
  (group,) = driver.build_groups(config, design.make_design(config.sweep))
  loops, first = sequential_loops(group.task, group.config, group.hparams,
                                  group.distinct_seeds[0], n, k)
  best = _interleaved_best(loops, spec["repeats"])
  return {"flops_per_step": group.task.flops_per_step, "compile_step_s": first["step"],
          "compile_scan_s": first["scan"], "rate_step": n * k / best["step"],
          "rate_scan": n * k / best["scan"], "peak_rss_mb": _peak_rss_mb()}


def torch_loop(group, n: int, k: int) -> Callable[[], None] | str:
  """A plain PyTorch loop of the classic model over `n` points of `group`, `k` steps each.

  `Linear(features, 1)`, `BCEWithLogitsLoss`, `torch.optim.Adam` at each point's learning rate,
  the same batches; one intra-op thread (the fastest setting for a model this small, and immune
  to OpenMP spin-waiting on a busy machine). Returns the loop, or why it can't run.
  """
  try:
    import torch
  except ImportError:
    return "torch is not installed (the CPU wheel of PyTorch, an optional benchmark dependency)"
  if group.config.optimizer.name != "adam":
    raise ValueError(f"the torch loop is Adam; the config has {group.config.optimizer.name!r}")
  torch.set_num_threads(1)
  batches = group.task.train_batches(group.distinct_seeds[0], 0, k)
  xs = [torch.from_numpy(x) for x in batches["inputs"]]
  ys = [torch.from_numpy(y.astype("float32")) for y in batches["labels"]]
  features = xs[0].shape[-1]
  lrs = [float(v) for v in group.hparams["learning_rate"]]
  hp = group.config.optimizer
  loss_fn = torch.nn.BCEWithLogitsLoss()

  def loop():
    for i in range(n):
      torch.manual_seed(i)
      model = torch.nn.Linear(features, 1)
      opt = torch.optim.Adam(model.parameters(), lr=lrs[i], betas=(hp.b1, hp.b2), eps=hp.eps)
      for j in range(k):
        opt.zero_grad()
        loss = loss_fn(model(xs[j]).squeeze(-1), ys[j])
        loss.backward()
        opt.step()

  loop()
  return loop


def measure_peak(spec: dict[str, Any]) -> dict[str, Any]:
  """The measured matmul peak: the best of `measure_matmul_flops` at a few sizes."""
  del spec
  import jax

  from jaxopt_lab import hardware

  rates = {n: hardware.measure_matmul_flops(n=n, repeats=10) for n in (512, 1024, 2048)}
  return {"peak_flops": max(rates.values()), "by_size": rates,
          "device": str(jax.devices()[0].device_kind)}


_MEASURES = {"sweep": measure_sweep, "seq": measure_sequential, "peak": measure_peak}


def run_worker(spec_json: str) -> None:
  """Child process: runs one measurement and prints it as the last line of stdout."""
  import jax

  spec = json.loads(spec_json)
  jax.config.update("jax_enable_compilation_cache", False)
  if spec.get("devices", 1) > 1:  # before anything touches the backend
    jax.config.update("jax_num_cpu_devices", spec["devices"])
  load = os.getloadavg()[0]
  start = time.perf_counter()
  out = _MEASURES[spec["kind"]](spec)
  out.update(load_before=load, load_after=os.getloadavg()[0],
             wall_s=time.perf_counter() - start)
  print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- the plan


def _env_for(allocator: str) -> tuple[dict[str, str], str | None]:
  """Environment of a child process with `allocator`; or why it can't run."""
  env = dict(os.environ)
  env["PYTHONPATH"] = _REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  if allocator == "glibc":
    env["GLIBC_TUNABLES"] = _GLIBC_TUNED
  elif allocator in _ALLOCATOR_LIBS:
    path = _find_library(_ALLOCATOR_LIBS[allocator])
    if path is None:
      return env, (f"{_ALLOCATOR_LIBS[allocator]} not found (Debian: apt-get install "
                   f"{'libtcmalloc-minimal4' if allocator == 'tcmalloc' else 'libjemalloc2'})")
    env["LD_PRELOAD"] = path
  elif allocator != "default":
    raise ValueError(f"--allocators: unknown {allocator!r}; valid choices: "
                     f"{', '.join(_ALLOCATORS)}")
  return env, None


def _find_library(name: str) -> str | None:
  for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                 "/usr/lib", "/usr/local/lib"):
    path = os.path.join(folder, name)
    if os.path.exists(path):
      return path
  return None


def make_plan(tasks: Sequence[str], points: Sequence[int], repeats: int, seq_points: int,
              widths: Sequence[int], variants: Sequence[str], allocators: Sequence[str],
              with_torch: bool, overlap: bool = False,
              lm_widths: Sequence[int] = (4, 0)) -> list[dict[str, Any]]:
  """The child measurements, in order: each a JSON-able spec."""
  plan: list[dict[str, Any]] = [dict(kind="peak", allocator="default", devices=1)]
  big = max(points)

  def sweep(task, n, width=_MAIN_WIDTH, devices=None, allocator="default"):
    devices = main_devices(n) if devices is None else devices
    steps = 1 if task == "lm" and n >= 64 else _STEPS[task]
    slow = (task == "lm" and n >= 32) or (task == "digits" and n >= 64)
    return dict(kind="sweep", task=task, n=n, steps=steps, width=width, variant="driver",
                repeats=min(repeats, 1 if task == "lm" else 2) if slow else repeats,
                devices=devices, allocator=allocator, overlap=overlap,
                seq_points=min(seq_points, 2) if task == "lm" else seq_points,
                matmul=task != "classic")

  for task in tasks:
    plan.append(dict(kind="seq", task=task, n=min(seq_points, 2) if task == "lm" else seq_points,
                     steps=_STEPS[task], repeats=repeats, allocator="default", devices=1))
    for n in points:
      plan.append(sweep(task, n))
      if task == "classic" and with_torch and n == big:
        plan[-1]["torch_points"] = seq_points
    if task == "digits":
      plan += [sweep(task, big, width) for width in widths if width == 0 or width < big]
    if task == "lm" and 32 in points:
      plan += [sweep(task, 32, width) for width in lm_widths]
    # Setups that need another process, at the sizes the targets name.
    for n in sorted({"classic": {big}, "digits": {8, big}, "lm": {8}}[task]):
      if n not in points:
        continue
      if "1dev" in variants and main_devices(n) > 1:
        plan.append(sweep(task, n, devices=1))
      if (task, n) in (("classic", big), ("lm", 8)):
        plan += [sweep(task, n, allocator=a) for a in allocators if a != "default"]
  return plan


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
  """Runs `spec` in a fresh `python -m benchmarks.sweep_throughput --worker` process."""
  env, problem = _env_for(spec["allocator"])
  if problem:
    return {"skipped": problem}
  cmd = [sys.executable, "-m", "benchmarks.sweep_throughput", f"--worker={json.dumps(spec)}"]
  proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
  out = json.loads(lines[-1][len("RESULT "):])
  out["env"] = {k: env[k] for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if k in env}
  return out


def _width_label(width: int) -> str:
  return {0: "all", -1: "auto"}.get(width, str(width))


def _label(spec: dict[str, Any]) -> str:
  if spec["kind"] != "sweep":
    return f"{spec['kind']} {spec.get('task', '')}".strip()
  parts = [spec["task"], f"N={spec['n']}", f"w={_width_label(spec['width'])}",
           f"{spec['devices']}dev"]
  if spec["allocator"] != "default":
    parts.append(spec["allocator"])
  return " ".join(parts)


# ----------------------------------------------------------------------------- report


def _find(results, **match) -> dict[str, Any] | None:
  for spec, out in results:
    if all(spec.get(k) == v for k, v in match.items()) and "error" not in out and (
        "skipped" not in out):
      return out
  return None


def _fmt(x: float | None, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if abs(x) >= 1000:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def _verdict(ok: bool) -> str:
  return "met" if ok else "NOT met"


def sweep_rate(spec: dict[str, Any], out: dict[str, Any]) -> float:
  """The rate a row stands for: end to end, the host's batches and then the program, the way
  `driver._Run.run_chunk` works (`program` and `overlap` are shown beside it)."""
  del spec
  return out["rate_e2e"]


def row_mfu(spec: dict[str, Any], out: dict[str, Any], peak: float | None) -> float | None:
  """Model FLOPs of the row's rate over the matmul peak timed in turn with it (else `peak`)."""
  reference = out.get("rate_matmul") or peak
  if not reference or not out.get("flops_per_step"):
    return None
  return sweep_rate(spec, out) * out["flops_per_step"] / reference


def best_seq(out: dict[str, Any]) -> float | None:
  """The faster sequential loop timed in the same process as the row, in turn with it."""
  rates = [out[k] for k in ("rate_seq_step", "rate_seq_scan") if k in out]
  return max(rates) if rates else None


def vs_seq(spec: dict[str, Any], out: dict[str, Any]) -> float | None:
  """The row's rate over its own best sequential loop."""
  seq = best_seq(out)
  return sweep_rate(spec, out) / seq if seq else None


def report(results: list[tuple[dict[str, Any], dict[str, Any]]], tasks: Sequence[str],
           points: Sequence[int]) -> tuple[str, list[dict[str, Any]]]:
  """The Markdown tables and the target verdicts."""
  lines: list[str] = []
  targets: list[dict[str, Any]] = []
  peak_out = _find(results, kind="peak")
  peak = peak_out["peak_flops"] if peak_out else None
  if peak_out:
    lines.append(f"Measured matmul peak: {peak / 1e9:,.1f} GFLOP/s "
                 f"({peak_out['device']}, float32, best of n = 512, 1024, 2048); the digits "
                 "and LM rows divide by a 1024² matmul timed in turn with them instead.\n")
  for task in tasks:
    seq = _find(results, kind="seq", task=task)
    lines.append(f"### {task} ({_EXPERIMENT[task]})\n")
    if seq:
      lines.append(f"Sequential loops alone in a process: one jitted step per call "
                   f"{_fmt(seq['rate_step'])}, one jitted scan per point "
                   f"{_fmt(seq['rate_scan'])} points × steps/s (first calls "
                   f"{seq['compile_step_s']:.1f} s / {seq['compile_scan_s']:.1f} s, peak RSS "
                   f"{seq['peak_rss_mb']:,.0f} MB, load {seq['load_before']:.1f}).")
    if task == "classic":
      torch_rows = [o for sp, o in results if sp["kind"] == "sweep" and "rate_torch" in o]
      skipped = next((o["torch_skipped"] for sp, o in results if "torch_skipped" in o), None)
      if torch_rows:
        lines.append(f"PyTorch {torch_rows[0]['torch_version']} loop (1 thread), timed in turn "
                     f"with the N={max(points)} rows: "
                     f"{', '.join(_fmt(o['rate_torch']) for o in torch_rows)} points × steps/s.")
      elif skipped:
        lines.append(f"PyTorch loop skipped: {skipped}.")
    lines += ["", "| N | slice | setup | e2e | program | seq step | seq scan | × best seq | "
              "× step loop | MFU | compile s | peak RSS MB | XLA MB | load |", "|" + "---|" * 14]
    rows = [(s, o) for s, o in results if s["kind"] == "sweep" and s["task"] == task]
    rows.sort(key=lambda so: (so[0]["n"], so[0]["allocator"] != "default", so[0]["allocator"],
                              so[0]["devices"] != main_devices(so[0]["n"]),
                              so[0]["width"] != _MAIN_WIDTH,
                              so[0]["width"] or 10**6))
    for spec, out in rows:
      name = (f"{spec['devices']} dev" + (", auto slices" if spec["width"] == _MAIN_WIDTH else "")
              + (f", {spec['allocator']}" if spec["allocator"] != "default" else ""))
      if "error" in out or "skipped" in out:
        lines.append(f"| {spec['n']} | {_width_label(spec['width'])} | {name} | "
                     f"{out.get('error') or out.get('skipped')} |" + " |" * 10)
        continue
      rate = sweep_rate(spec, out)
      mfu = row_mfu(spec, out, peak)
      step = out.get("rate_seq_step")
      lines.append(
          f"| {spec['n']} | {out['width']} | {name} | **{_fmt(rate)}** | "
          f"{_fmt(out['rate_program'])} | {_fmt(step)} | {_fmt(out.get('rate_seq_scan'))} | "
          f"**{_fmt(vs_seq(spec, out))}** | {_fmt(rate / step if step else None)} | "
          f"{'–' if mfu is None else f'{100 * mfu:.1f}%'} | {out['compile_s']:.1f} | "
          f"{out['peak_rss_mb']:,.0f} | "
          f"{_fmt(out['xla_bytes'] / 2**20 if out['xla_bytes'] else None)} | "
          f"{out['load_before']:.1f} |")
    lines.append("")
    targets += _task_targets(task, results, peak, points)
  if targets:
    lines += ["### Targets\n", "| target | driver now | verdict | best measured setup | verdict |",
              "|---|---|---|---|---|"]
    for t in targets:
      verdict = t["words"][0 if t["now_ok"] else 1] if "words" in t else _verdict(t["now_ok"])
      lines.append(f"| {t['target']} | {t['now']} | {verdict} | "
                   f"{t.get('variant', '–')} | "
                   f"{_verdict(t['variant_ok']) if 'variant_ok' in t else '–'} |")
  return "\n".join(lines) + "\n", targets


def _main(results, task, n, **match):
  """The row of (task, n) as scripts/sweep.py runs it: auto slices, a device per core."""
  fields = dict(kind="sweep", task=task, n=n, width=_MAIN_WIDTH, devices=main_devices(n),
                allocator="default")
  fields.update(match)
  return _find(results, **fields)


def _best(results, task, n, key):
  """The row of (task, n), default allocator, with the largest `key(spec, out)`; its label."""
  rows = [(s, o) for s, o in results if s["kind"] == "sweep" and s["task"] == task
          and s["n"] == n and s["allocator"] == "default" and "rate_e2e" in o
          and key(s, o) is not None]
  if not rows:
    return None, None, None
  spec, out = max(rows, key=lambda so: key(*so))
  return spec, out, _label(spec)


def _task_targets(task, results, peak, points):
  targets = []
  big = max(points)
  main_spec = lambda n: dict(kind="sweep", task=task, n=n, width=_MAIN_WIDTH,  # noqa: E731
                             devices=main_devices(n), allocator="default")

  def ratio(text, n, what, need):
    """`what(spec, out)`: the row's ratio to its reference."""
    now = _main(results, task, n)
    if now is None or what(main_spec(n), now) is None:
      return
    r = what(main_spec(n), now)
    t = dict(target=text, now=f"{r:.2f}×", now_ok=r >= need)
    spec, out, label = _best(results, task, n, what)
    if spec:
      t.update(variant=f"{what(spec, out):.2f}× ({label})", variant_ok=what(spec, out) >= need)
    targets.append(t)

  def over(key):
    return lambda s, o: sweep_rate(s, o) / o[key] if o.get(key) else None

  if task == "classic" and 128 in points:
    ratio("classic N=128 ≥ 5× the scan loop", 128, over("rate_seq_scan"), 5)
    ratio("classic N=128 ≥ 50× the step loop", 128, over("rate_seq_step"), 50)
    ratio("classic N=128 ≥ 500× the PyTorch loop", 128, over("rate_torch"), 500)
  if task == "digits" and 8 in points:
    ratio("digits N=8 ≥ 1.5× the best sequential loop", 8, vs_seq, 1.5)
    if peak:
      mfu = lambda s, o: row_mfu(s, o, peak)  # noqa: E731
      now = _main(results, task, 8)
      if now:
        m = mfu(main_spec(8), now)
        t = dict(target="digits N=8 ≥ 70% of the matmul peak", now=f"{100 * m:.1f}%",
                 now_ok=m >= 0.7)
        spec, out, label = _best(results, task, 8, mfu)
        t.update(variant=f"{100 * mfu(spec, out):.1f}% ({label})",
                 variant_ok=mfu(spec, out) >= 0.7)
        targets.append(t)
    now8, now_big = _main(results, task, 8), _main(results, task, big)
    if now8 and now_big and big > 8:
      # Each row over its own sequential loop: a point costs the same at any N, so the quotient
      # is the throughput ratio with the machine's load drift divided out.
      r = vs_seq(main_spec(big), now_big) / vs_seq(main_spec(8), now8)
      raw = sweep_rate(main_spec(big), now_big) / sweep_rate(main_spec(8), now8)
      t = dict(target=f"digits N={big} ≥ 0.9× N=8 (each over its own sequential loop)",
               now=f"{r:.2f}× (raw {raw:.2f}×)", now_ok=r >= 0.9)
      s8, o8, l8 = _best(results, task, 8, vs_seq)
      sb, ob, lb = _best(results, task, big, vs_seq)
      if s8 and sb:
        rb = vs_seq(sb, ob) / vs_seq(s8, o8)
        t.update(variant=f"{rb:.2f}× ({lb} vs {l8})", variant_ok=rb >= 0.9)
      targets.append(t)
  if task == "lm" and 8 in points:
    ratio("lm N=8 ≥ 1× the best sequential loop", 8, vs_seq, 1.0)
  if task == "lm" and 32 in points:
    sliced, whole = _main(results, task, 32), _main(results, task, 32, width=0)
    if sliced:
      targets.append(dict(target=f"lm N=32 peak memory ≤ 1.5 GB (slices of {sliced['width']})",
                          now=f"{sliced['peak_rss_mb']:,.0f} MB (XLA "
                              f"{_fmt((sliced['xla_bytes'] or 0) / 2**20)} MB)",
                          now_ok=sliced["peak_rss_mb"] <= 1536))
    if sliced and whole:
      r = vs_seq(main_spec(32), sliced) / vs_seq(main_spec(32), whole)
      targets.append(dict(target="lm N=32 slicing keeps throughput (≥ 0.95× unsliced, each "
                                 "over its own sequential loop)",
                          now=f"{r:.2f}× (unsliced: {whole['peak_rss_mb']:,.0f} MB)",
                          now_ok=r >= 0.95))
  one, many = _main(results, task, 1), _main(results, task, big)
  if one and many and big > 1:
    r = many["compile_s"] / one["compile_s"]
    t = dict(target=f"{task}: compile at N={big} ≤ 1.2× N=1",
             now=f"{r:.2f}× ({one['compile_s']:.1f} → {many['compile_s']:.1f} s)", now_ok=r <= 1.2)
    # N = 1 runs on one device: the same device count at N = big is the 1dev row.
    same = _find(results, kind="sweep", task=task, n=big, width=_MAIN_WIDTH, devices=1,
                 allocator="default")
    if same:
      rs = same["compile_s"] / one["compile_s"]
      t.update(variant=f"{rs:.2f}× ({one['compile_s']:.1f} → {same['compile_s']:.1f} s, both "
                       "on 1 device)", variant_ok=rs <= 1.2)
    targets.append(t)
  for spec, out in results:
    if spec["kind"] != "sweep" or spec["task"] != task or spec["allocator"] == "default" or (
        "rate_e2e" not in out):
      continue
    ref_spec = {**spec, "allocator": "default"}
    ref = _find(results, **ref_spec)
    if ref:
      r = sweep_rate(spec, out) / sweep_rate(ref_spec, ref)
      seq_r = (best_seq(out) / best_seq(ref)) if best_seq(out) and best_seq(ref) else None
      targets.append(dict(target=f"allocator {spec['allocator']} ({_label(spec)}) vs default",
                          now=f"{r:.2f}× (its sequential loops {_fmt(seq_r)}×; peak RSS "
                              f"{out['peak_rss_mb']:,.0f} vs {ref['peak_rss_mb']:,.0f} MB)",
                          now_ok=r > 1.0, words=("faster", "slower")))
  return targets


# ----------------------------------------------------------------------------- device check


def device_check() -> None:
  """lm_small on the first accelerator: the sweep at several N against the sequential loops."""
  import jax

  from jaxopt_lab import files, hardware
  from jaxopt_lab.sweep import design, driver

  if not FLAGS.json_out:
    raise ValueError("--json_out: the device check needs a path for its JSON results")
  jax.config.update("jax_enable_compilation_cache", False)
  started = time.perf_counter()
  device = jax.devices()[0]
  base = _lm_small_config()
  if FLAGS.device_shrink:
    shrink_lm(base)
  dtype = base.model.dtype
  peak = hardware.peak_flops(device, dtype)
  peak_source = "data sheet"
  if peak is None:
    peak, peak_source = hardware.measure_matmul_flops(n=1024), "measured float32 matmul"
  k = FLAGS.device_steps
  doc: dict[str, Any] = dict(device=str(device.device_kind), platform=device.platform,
                             devices=jax.device_count(), dtype=dtype, peak_flops=peak,
                             peak_source=peak_source, steps=k, width=FLAGS.device_width,
                             shrink=FLAGS.device_shrink, model=base.model.to_dict(),
                             batch_size=base.data.batch_size, jax=jax.__version__,
                             xla_flags=os.environ.get("XLA_FLAGS", ""), results=[])

  def save():
    doc["elapsed_s"] = time.perf_counter() - started
    files.atomic_write_json(FLAGS.json_out, doc)

  def memory():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")

  def left():
    return FLAGS.device_budget_s - (time.perf_counter() - started)

  # Sequential: one point, one jitted step per call and one jitted scan per chunk.
  config = sweep_config(base, 1, k, 0)
  (group,) = driver.build_groups(config, design.make_design(config.sweep))
  task = group.task
  doc["flops_per_step"] = task.flops_per_step
  doc["tokens_per_step"] = task.tokens_per_step
  save()
  try:
    doc["sequential"] = _device_sequential(task, group, k, peak, memory)
  except Exception as e:  # noqa: BLE001 - record and go on to the sweeps
    doc["sequential"] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
  gc.collect()
  save()
  best_seq = max(doc["sequential"].get("rate_step", 0), doc["sequential"].get("rate_scan", 0))

  fused = copy.deepcopy(base)
  fused.model.attention = "fused"
  plan = ([(base, int(p)) for p in FLAGS.device_points]
          + [(fused, int(p)) for p in FLAGS.device_fused_points])
  for config, n in plan:
    row: dict[str, Any] = {"n": n, "attention": config.model.attention}
    doc["results"].append(row)
    if left() < 30:
      row["skipped"] = f"device budget of {FLAGS.device_budget_s} s spent"
      save()
      continue
    try:
      row.update(_device_sweep(config, n, k, FLAGS.device_width, peak, memory))
      if best_seq:
        row["vs_best_sequential"] = row["rate"] / best_seq
    except Exception as e:  # noqa: BLE001 - an OOM at one N must not lose the others
      row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
    gc.collect()
    jax.clear_caches()
    save()
    print(f"[{time.perf_counter() - started:5.0f}s] N={n}: " + ", ".join(
        f"{key}={value if isinstance(value, str) else _fmt(value)}" for key, value in row.items()
        if isinstance(value, float | str)),
        flush=True)
  seq = doc["sequential"]
  print(f"sequential: {seq}\nwritten to {FLAGS.json_out} ({time.perf_counter() - started:.0f} s)")


def _device_sweep(base, n: int, k: int, width: int, peak: float, memory) -> dict[str, Any]:
  """Device check: one sweep configuration through the driver's program."""
  import jax

  from jaxopt_lab.sweep import design, driver

  config = sweep_config(base, n, k, width)
  (group,) = driver.build_groups(config, design.make_design(config.sweep))
  run = driver._Run(group, driver.make_mesh(), None)
  pop = run.init_population()
  batches = device_batches(run, k)
  t0 = time.perf_counter()
  pop, metrics = run.run_chunk(pop, 0, k)
  compile_s = run.compile_seconds
  compiled = run._compiled[k]
  jax.block_until_ready((pop, metrics))
  first = time.perf_counter() - t0
  state = {"pop": pop}

  def call():
    new_pop, new_metrics = compiled(state["pop"], run.hparams, run.replicate, batches)
    jax.block_until_ready((new_pop, new_metrics))
    state["pop"] = new_pop

  seconds = _best_time(call, 2)
  rate = n * k / seconds
  return dict(width=run.width, compile_s=compile_s, first_call_s=first, seconds=seconds,
              rate=rate, tokens_per_s=rate * group.task.tokens_per_step,
              mfu=rate * group.task.flops_per_step / peak, xla_bytes=_xla_bytes(compiled),
              peak_bytes_in_use=memory())


def _device_sequential(task, group, k: int, peak: float, memory) -> dict[str, Any]:
  """Device check: one point, one jitted step per call and one jitted scan of `k` steps."""
  import jax

  from jaxopt_lab import train

  train_step = train.make_train_step(task, group.config)
  hp = jax.device_put({key: v[0] for key, v in group.hparams.items()})
  state = jax.jit(lambda h: train.init_state(task, group.config, h, 0))(hp)
  batches = jax.device_put(task.train_batches(0, 0, k))
  per_step = [jax.tree.map(lambda x, j=j: x[j], batches) for j in range(k)]
  t0 = time.perf_counter()
  step_c = jax.jit(train_step, donate_argnums=0).lower(state, per_step[0], hp).compile()
  t1 = time.perf_counter()
  scan_c = jax.jit(train.scan_steps(train_step), donate_argnums=0).lower(
      state, batches, hp).compile()
  t2 = time.perf_counter()
  holder = {"s": state}

  def steps():
    s = holder["s"]
    for j in range(k):
      s, _ = step_c(s, per_step[j], hp)
    jax.block_until_ready(s)
    holder["s"] = s

  def scans():
    s, metrics = scan_c(holder["s"], batches, hp)
    jax.block_until_ready((s, metrics))
    holder["s"] = s

  steps()  # warm-up
  scans()
  rate_step, rate_scan = k / _best_time(steps, 1), k / _best_time(scans, 1)
  return dict(rate_step=rate_step, rate_scan=rate_scan, compile_step_s=t1 - t0,
              compile_scan_s=t2 - t1, mfu_step=rate_step * task.flops_per_step / peak,
              mfu_scan=rate_scan * task.flops_per_step / peak, peak_bytes_in_use=memory())


def _lm_small_config():
  from jaxopt_lab import configs

  return configs.sibling(os.path.join(_REPO, "experiments", "lm_small.py"), "lm_small").get_config()


# ----------------------------------------------------------------------------- main


def _ints(values: Sequence[str], flag: str) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f"--{flag}: integers expected, got {','.join(values)}") from None


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.worker:
    run_worker(FLAGS.worker)
    return
  if FLAGS.device_check:
    device_check()
    return
  for task in FLAGS.tasks:
    if task not in _TASKS:
      raise app.UsageError(f"--tasks: unknown task {task!r}; valid choices: {', '.join(_TASKS)}")
  for variant in FLAGS.variants:
    if variant not in ("1dev",):
      raise app.UsageError(f"--variants: unknown {variant!r}; valid choices: 1dev")
  for allocator in FLAGS.allocators:
    if allocator not in _ALLOCATORS:
      raise app.UsageError(f"--allocators: unknown {allocator!r}; valid choices: "
                           f"{', '.join(_ALLOCATORS)}")
  points = _ints(FLAGS.points, "points")
  if FLAGS.from_json:
    with open(FLAGS.from_json) as f:
      doc = json.load(f)
    results = [(r["spec"], r["result"]) for r in doc["results"]]
    global _HOST_DEVICES
    _HOST_DEVICES = doc.get("cpus", _HOST_DEVICES)  # the main rows of the machine that ran
    ran = sorted({s["n"] for s, _ in results if s["kind"] == "sweep"})
    ran_tasks = [t for t in _TASKS if any(s.get("task") == t for s, _ in results)]
    print(report(results, ran_tasks, ran)[0])
    return
  plan = make_plan(FLAGS.tasks, points, FLAGS.repeats, FLAGS.seq_points,
                   _ints(FLAGS.widths, "widths"), FLAGS.variants, FLAGS.allocators, FLAGS.torch,
                   FLAGS.overlap, _ints(FLAGS.lm_widths, "lm_widths"))
  started = time.perf_counter()
  results: list[tuple[dict[str, Any], dict[str, Any]]] = []
  for i, spec in enumerate(plan):
    t0 = time.perf_counter()
    out = run_child(spec)
    results.append((spec, out))
    summary = out.get("error") or out.get("skipped") or ", ".join(
        f"{k}={_fmt(v)}" for k, v in out.items()
        if k.startswith(("rate", "compile", "peak_rss", "peak_flops")))
    print(f"[{i + 1}/{len(plan)} {time.perf_counter() - started:6.0f}s] {_label(spec)}: "
          f"{summary} ({time.perf_counter() - t0:.0f}s)", flush=True)
    if FLAGS.json_out:
      _write_json(results, started)
  text, _ = report(results, FLAGS.tasks, points)
  command = "python -m benchmarks.sweep_throughput " + " ".join(sys.argv[1:])
  text = (f"Command: `{command.strip()}`; {os.cpu_count()} CPUs; "
          f"{time.perf_counter() - started:.0f} s in all.\n\n" + text)
  print("\n" + text)
  if FLAGS.markdown_out:
    from jaxopt_lab import files

    files.atomic_write_text(FLAGS.markdown_out, text)


def _write_json(results, started) -> None:
  from jaxopt_lab import files

  files.atomic_write_json(FLAGS.json_out, dict(
      cpus=_HOST_DEVICES, elapsed_s=time.perf_counter() - started,
      results=[dict(spec=s, result=o) for s, o in results]))


if __name__ == "__main__":
  app.run(main)
