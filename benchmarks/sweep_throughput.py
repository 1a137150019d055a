r"""Throughput of the sweep driver against independent baselines of the same training.

Measured side by side in one run on one machine, for N = 1, 8, 32, 128 design points (learning
rates of one optimizer, one seed) of `classic`, `digits` and the `tiny` LM:

* points x steps per second of the sweep, through the driver's own chunk program: end to end
  (the run loop over several chunks, as `scripts/sweep.py` trains between log steps: the host
  builds the next chunk's batches while the devices compute and fetches the metrics one chunk
  late) and the compiled program alone; the gap between the two is the host's share;
* the independent baselines of `baselines.py`, which use neither our trainer nor the driver:
  plain JAX + Optax, one jitted step per call and one `lax.scan` per point, point after point; a
  plain `jit(vmap(scan))` over the points with `optax.inject_hyperparams` on one device; and
  PyTorch loops with `torch.optim` of the same three models (when `torch` is installed). Every
  row shows our rate over the best of them;
* the single-run trainer's own loops (`train.make_train_step`: a step per call and a scan per
  point), to hold the trainer's step against the plain one;
* the compile time of the group's chunk program against N (best of three compiles), the peak
  resident memory of a process that runs one configuration (`ru_maxrss` of a fresh child), and
  the model-FLOPs utilisation against the machine's measured matmul peak;
* the driver runs as `scripts/sweep.py` runs it: one XLA CPU device per core (at most one per
  point) and `sweep.slice_size = -1`; other setups on the same points: `1dev` (one device),
  explicit slice widths (`--widths` for digits at the largest N, `--lm_widths` for the LM at
  N = 32), and the allocators `glibc` (glibc malloc that keeps its freed memory), `tcmalloc` and
  `jemalloc` (LD_PRELOAD of Debian's libtcmalloc-minimal4 / libjemalloc2).

Every configuration runs in a fresh child process, one at a time, and times all its rates in
turn, round after round, so a load that drifts cancels in the ratios.

  python -m benchmarks.sweep_throughput                              # all of it (2 idle cores)
  python -m benchmarks.sweep_throughput --tasks=classic --points=8 --repeats=1 --allocators=default
  python -m benchmarks.sweep_throughput --json_out=/tmp/bench.json --markdown_out=/tmp/bench.md
  python -m benchmarks.sweep_throughput --from_json=/tmp/bench.json  # its tables again

The `lm_small` accelerator check is `benchmarks/device_check.py`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from benchmarks import baselines, common
from benchmarks import throughput_report as tables
from jaxopt_lab import hardware

_ALLOCATORS = ("default", "glibc", "tcmalloc", "jemalloc")

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(common.TASKS), f"Tasks to measure, of {', '.join(common.TASKS)}.")
flags.DEFINE_list("points", ["1", "8", "32", "128"], "Numbers of design points N.")
flags.DEFINE_integer("repeats", 3, "Timed rounds per measurement (best of); fewer for slow ones.")
flags.DEFINE_integer("seq_points", 4, "Points trained one after another by the sequential loops "
                     "(ours, the plain JAX ones and PyTorch; the LM's at most 2).")
flags.DEFINE_integer("lm_vmap_points", 8, "At most this many points in the LM's plain "
                     "jit(vmap(scan)) (its memory grows with the points, unsliced).")
flags.DEFINE_list("widths", ["8", "0"],
                  "Extra slice widths (sweep.slice_size, 0 = all) of digits at the largest N.")
flags.DEFINE_list("lm_widths", ["4", "0"], "Extra slice widths of the LM at N = 32.")
flags.DEFINE_list("variants", ["1dev"],
                  "Other setups to measure beside the driver's: 1dev (one XLA CPU device).")
flags.DEFINE_list("allocators", list(_ALLOCATORS),
                  f"Memory allocators to compare, of {', '.join(_ALLOCATORS)}.")
flags.DEFINE_bool("torch", True, "Measure the PyTorch loops (needs torch).")
flags.DEFINE_bool("shrink", False, "A tiny LM (to test the benchmark quickly).")
flags.DEFINE_string("json_out", "", "Write every measurement to this JSON file.")
flags.DEFINE_string("markdown_out", "", "Write the result tables to this Markdown file.")
flags.DEFINE_string("worker", "", "Internal: run one measurement (JSON spec) and print it.")
flags.DEFINE_string("from_json", "", "Print the tables of the --json_out file of an earlier run "
                    "(with this version's report) instead of measuring.")

_ALLOCATOR_LIBS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}
# glibc malloc that keeps what it frees: buffers up to 32 MiB (the largest mmap threshold glibc
# takes) come from the heap, which is never trimmed, so repeated steps reuse warm pages.
_GLIBC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736"
_HOST_DEVICES = hardware.usable_cpus()


# ----------------------------------------------------------------------------- measuring


def _base(spec: dict[str, Any]):
  base = common.experiment_config(spec["task"])
  if spec.get("shrink") and spec["task"] == "lm":
    common.shrink_lm(base)
  return base


def sequential_loops(task, config, hparams: dict[str, Any], seed: int, n: int, k: int):
  """The single-run trainer's loops over `n` points of `hparams` ([points] arrays), `k` steps.

  Returns `{'seq_step': loop, 'seq_scan': loop}`: a Python loop of one jitted `train_step` per
  call, and a loop over points of one jitted `train.scan_steps` chunk, both with the batches
  already on the device, each point's values compiled in as the single run does
  (`train.with_fixed_hparams`); each called once here (compile and warm-up).
  """
  import jax

  from jaxopt_lab import train

  # As the single run compiles them: each point's hyperparameters constants of its programs.
  train_step = train.make_train_step(task, config)
  init = jax.jit(lambda h, s: train.init_state(task, config, h, s))
  points = [{key: v[i] for key, v in hparams.items()} for i in range(n)]
  steps = [jax.jit(train.with_fixed_hparams(train_step, h), donate_argnums=0) for h in points]
  scans = [jax.jit(train.with_fixed_hparams(train.scan_steps(train_step), h), donate_argnums=0)
           for h in points]
  batches = jax.device_put(task.train_batches(seed, 0, k))
  per_step = [jax.tree.map(lambda x, j=j: x[j], batches) for j in range(k)]
  states = {name: [init(h, seed) for h in points] for name in ("step", "scan")}

  def loop_steps():
    for i in range(n):
      s = states["step"][i]
      for j in range(k):
        s, _ = steps[i](s, per_step[j])
      jax.block_until_ready(s)
      states["step"][i] = s

  def loop_scans():
    for i in range(n):
      s, metrics = scans[i](states["scan"][i], batches)
      jax.block_until_ready((s, metrics))
      states["scan"][i] = s

  loop_steps()
  loop_scans()
  return {"seq_step": loop_steps, "seq_scan": loop_scans}


def measure_sweep(spec: dict[str, Any]) -> dict[str, Any]:
  """One sweep configuration against the baselines, timed in turn in this process.

  Rates: `e2e`, the sweep's run loop over several chunks (`GroupProgram.run_loop`: the host
  builds the next chunk's batches while the devices compute, the late fetch); `program`, the
  compiled program alone on batches already on the device; `seq_step`, `seq_scan` (the
  single-run trainer) and the baselines of `baselines.py` over `seq_points` of the points
  (`plain_vmap` over `vmap_points`). The peak RSS is read before the loops are built.
  """
  import jax


  task_name, n, k, width = spec["task"], spec["n"], spec["steps"], spec["width"]
  base = _base(spec)
  group = common.one_group(common.sweep_config(base, n, k, width))
  from jaxopt_lab.sweep import programs

  mesh = programs.make_mesh()
  program = common.group_program(group, mesh)
  pop = program.init_population()
  jax.block_until_ready(pop)
  rss_before = common.peak_rss_mb()
  out = dict(width=program.width, devices=mesh.devices.size, padded=program.padded,
             flops_per_step=group.task.flops_per_step, tokens_per_step=group.task.tokens_per_step)
  batches = program.device_batches(k)
  start = time.perf_counter()
  state = {"pop": program.run_chunk(pop, 0, k)[0]}
  jax.block_until_ready(state)
  out["first_call_s"] = time.perf_counter() - start
  compiled = program.compiled(k)
  # A compile varies by +-30 % from one to the next here: the best of three.
  compiles = [program.compile_seconds()]
  for _ in range(2):
    jax.clear_caches()  # else the same lowering is answered from JAX's in-memory cache
    start = time.perf_counter()
    program.chunk.lower(state["pop"], program.hparams, program.replicate, program.active,
                                  batches).compile()
    compiles.append(time.perf_counter() - start)
  out["compile_s"], out["all_compiles_s"] = min(compiles), compiles

  def timed(fn):
    def go():
      new_pop, metrics = fn()
      jax.block_until_ready((new_pop, metrics))
      state["pop"] = new_pop

    return go

  fns = {"program": timed(lambda: compiled(state["pop"], program.hparams, program.replicate,
                                           batches))}
  start = time.perf_counter()
  fns["program"]()  # the second call: every buffer of the steady state allocated once
  # e2e: the run loop over enough chunks (at least 0.2 s, 2 to 64) that building the first
  # chunk's batches before the loop, which a run does once, weighs little. Each call trains new
  # steps (new batches, as a run's next chunks), wrapping round within `train.steps`.
  chunks = int(min(64, max(2, math.ceil(0.2 / (time.perf_counter() - start)))))
  steps = int(group.config.train.steps)
  loop_at = {"begin": k}

  def e2e():
    begin = loop_at["begin"]
    state["pop"] = program.run_loop(state["pop"], begin, chunks)
    jax.block_until_ready(state["pop"])
    end = begin + chunks * k
    loop_at["begin"] = end if end + chunks * k <= steps else k

  e2e()
  fns["e2e"] = e2e
  out["e2e_chunks"] = chunks
  out["peak_rss_mb"] = common.peak_rss_mb()
  out["rss_before_compile_mb"] = rss_before
  out["xla_bytes"] = common.xla_bytes(compiled)
  work = dict.fromkeys(fns, n * k)
  work["e2e"] = n * k * chunks
  seq_n = min(spec.get("seq_points", 0), n)
  seed = group.distinct_seeds[0]
  if seq_n:
    loops = sequential_loops(group.task, group.config, group.hparams, seed, seq_n, k)
    lrs = [float(v) for v in group.hparams["learning_rate"]]
    vmap_n = min(spec.get("vmap_points") or n, n)
    loops.update(baselines.plain_jax(group.task, group.config, lrs, seed, k, seq_n, vmap_n))
    out["plain_vmap_points"] = vmap_n
    for name, loop in loops.items():
      fns[name], work[name] = loop, (vmap_n if name == "plain_vmap" else seq_n) * k
    if spec.get("torch"):
      for threads in baselines.TORCH_THREADS[task_name]:
        loop = baselines.torch_loop(task_name, group.task, group.config, lrs[:seq_n], seed, k,
                                    threads)
        if isinstance(loop, str):
          out["torch_skipped"] = loop
          break
        fns[f"torch{threads}"], work[f"torch{threads}"] = loop, seq_n * k
  if spec.get("matmul"):  # the machine's matmul peak, in the same minutes as the row
    import jax.numpy as jnp

    size = 1024
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    fns["matmul"] = lambda: matmul(a, a).block_until_ready()
    work["matmul"] = 2.0 * size**3
  best = common.interleaved_best(fns, spec["repeats"])
  for name, seconds in best.items():
    out[f"{name}_s"] = seconds
    out[f"rate_{name}"] = work[name] / seconds
  _best_torch(out)
  return out


def _best_torch(out: dict[str, Any]) -> None:
  """`rate_torch` and `torch_threads`: the faster thread count of the PyTorch loops."""
  by_threads = {int(key[len("rate_torch"):]): v for key, v in out.items()
                if key.startswith("rate_torch") and key[len("rate_torch"):].isdigit()}
  if by_threads:
    import torch

    threads = max(by_threads, key=by_threads.get)
    out.update(rate_torch=by_threads[threads], torch_threads=threads,
               torch_version=torch.__version__)


def measure_sequential(spec: dict[str, Any]) -> dict[str, Any]:
  """The trainer's and the plain JAX loops, point after point, alone in a process."""
  task_name, n, k = spec["task"], spec["n"], spec["steps"]
  group = common.one_group(common.sweep_config(_base(spec), n, k, 0))
  seed = group.distinct_seeds[0]
  loops = sequential_loops(group.task, group.config, group.hparams, seed, n, k)
  lrs = [float(v) for v in group.hparams["learning_rate"]]
  loops.update(baselines.plain_jax(group.task, group.config, lrs, seed, k, n, vmap_points=0))
  best = common.interleaved_best(loops, spec["repeats"])
  out = {f"rate_{name.removeprefix('seq_')}": n * k / seconds for name, seconds in best.items()}
  out.update(flops_per_step=group.task.flops_per_step, peak_rss_mb=common.peak_rss_mb(),
             task=task_name)
  return out


def measure_peak(spec: dict[str, Any]) -> dict[str, Any]:
  """The measured matmul peak: the best of `measure_matmul_flops` at a few sizes."""
  del spec
  import jax

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
  env["PYTHONPATH"] = common.REPO + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
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
              with_torch: bool, lm_widths: Sequence[int] = (4, 0),
              lm_vmap_points: int = 8, shrink: bool = False) -> list[dict[str, Any]]:
  """The child measurements, in order: each a JSON-able spec."""
  plan: list[dict[str, Any]] = [dict(kind="peak", allocator="default", devices=1)]
  big = max(points)

  def seq_n(task):
    return min(seq_points, 2) if task == "lm" else seq_points

  def sweep(task, n, width=tables.MAIN_WIDTH, devices=None, allocator="default"):
    devices = tables.main_devices(n, _HOST_DEVICES) if devices is None else devices
    steps = 1 if task == "lm" and n >= 64 else common.STEPS[task]
    slow = (task == "lm" and n >= 32) or (task == "digits" and n >= 64)
    return dict(kind="sweep", task=task, n=n, steps=steps, width=width, variant="driver",
                repeats=min(repeats, 1 if task == "lm" else 2) if slow else repeats,
                devices=devices, allocator=allocator, seq_points=seq_n(task),
                vmap_points=min(n, lm_vmap_points) if task == "lm" else n, torch=with_torch,
                matmul=task != "classic", shrink=shrink)

  for task in tasks:
    plan.append(dict(kind="seq", task=task, n=seq_n(task), steps=common.STEPS[task],
                     repeats=repeats, allocator="default", devices=1, shrink=shrink))
    plan += [sweep(task, n) for n in points]
    if task == "digits":
      plan += [sweep(task, big, width) for width in widths if width == 0 or width < big]
    if task == "lm" and 32 in points:
      plan += [sweep(task, 32, width) for width in lm_widths]
    # Setups that need another process, at the sizes the targets name.
    for n in sorted({"classic": {big}, "digits": {8, big}, "lm": {8}}[task]):
      if n not in points:
        continue
      if "1dev" in variants and tables.main_devices(n, _HOST_DEVICES) > 1:
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
  proc = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True,
                        check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
  out = json.loads(lines[-1][len("RESULT "):])
  out["env"] = {k: env[k] for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if k in env}
  return out


# ----------------------------------------------------------------------------- main


def _ints(values: Sequence[str], flag: str) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--{flag}: integers expected, got {','.join(values)}") from None


def _check_flags() -> None:
  for task in FLAGS.tasks:
    if task not in common.TASKS:
      raise app.UsageError(f"--tasks: unknown task {task!r}; valid choices: "
                           f"{', '.join(common.TASKS)}")
  for variant in FLAGS.variants:
    if variant not in ("1dev",):
      raise app.UsageError(f"--variants: unknown {variant!r}; valid choices: 1dev")
  for allocator in FLAGS.allocators:
    if allocator not in _ALLOCATORS:
      raise app.UsageError(f"--allocators: unknown {allocator!r}; valid choices: "
                           f"{', '.join(_ALLOCATORS)}")


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.worker:
    run_worker(FLAGS.worker)
    return
  _check_flags()
  points = _ints(FLAGS.points, "points")
  if FLAGS.from_json:
    with open(FLAGS.from_json) as f:
      doc = json.load(f)
    results = [(r["spec"], r["result"]) for r in doc["results"]]
    ran = sorted({s["n"] for s, _ in results if s["kind"] == "sweep"})
    ran_tasks = [t for t in common.TASKS if any(s.get("task") == t for s, _ in results)]
    # The main rows of the machine that ran.
    print(tables.report(results, ran_tasks, ran, doc.get("cpus", _HOST_DEVICES))[0])
    return
  plan = make_plan(FLAGS.tasks, points, FLAGS.repeats, FLAGS.seq_points,
                   _ints(FLAGS.widths, "widths"), FLAGS.variants, FLAGS.allocators, FLAGS.torch,
                   _ints(FLAGS.lm_widths, "lm_widths"), FLAGS.lm_vmap_points,
                   FLAGS.shrink)
  started = time.perf_counter()
  results: list[tuple[dict[str, Any], dict[str, Any]]] = []
  for i, spec in enumerate(plan):
    t0 = time.perf_counter()
    out = run_child(spec)
    results.append((spec, out))
    summary = out.get("error") or out.get("skipped") or ", ".join(
        f"{k}={common.fmt(v)}" for k, v in out.items()
        if k.startswith(("rate", "compile", "peak_rss", "peak_flops")))
    print(f"[{i + 1}/{len(plan)} {time.perf_counter() - started:6.0f}s] {tables.label(spec)}: "
          f"{summary} ({time.perf_counter() - t0:.0f}s)", flush=True)
    if FLAGS.json_out:
      _write_json(results, started)
  text, _ = tables.report(results, FLAGS.tasks, points, _HOST_DEVICES)
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
