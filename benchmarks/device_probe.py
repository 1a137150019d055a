r"""Where one `lm_small` training step's time goes on an accelerator: variants side by side.

One point's jitted train step (the single-run trainer's `train.make_train_step`) of
`experiments/lm_small.py` in several model variants (compute dtype, attention), each compiled and
timed in turn in one process; then a `jax.profiler` trace of a few steps of each (Perfetto JSON,
for kernel-time tables) and the driver's vmapped program at `--points` for the fused attention.

  python -m benchmarks.device_probe --out_dir=/tmp/probe
  python -m benchmarks.device_probe --probe_shrink --out_dir=/tmp/probe   # a tiny LM, on a CPU
"""

from __future__ import annotations

import copy
import glob
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "", "Directory for the JSON results and the traces.")
flags.DEFINE_list("step_variants", ["bfloat16:dense", "float32:dense", "bfloat16:fused"],
                  "dtype:attention variants of the single step.")
flags.DEFINE_list("sweep_points", ["8", "64"], "Driver rows with bfloat16 and fused attention.")
flags.DEFINE_integer("probe_steps", 10, "Timed steps per call.")
flags.DEFINE_integer("budget_s", 280, "Skip what would start after this many seconds.")
flags.DEFINE_bool("probe_shrink", False, "A tiny LM (to test the probe on a CPU).")


def _variant(base, spec: str):
  dtype, attention = spec.split(":")
  config = copy.deepcopy(base)
  config.model.dtype = dtype
  config.model.attention = attention
  return config


def _step_row(config, k: int, peak: float, trace_dir: str) -> dict[str, Any]:
  import jax


  group = common.one_group(common.sweep_config(config, 1, k, 0))
  task = group.task
  step, hp, state, _, per_step = common.one_point(group, k)
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, per_step[0], hp).compile()
  compile_s = time.perf_counter() - t0
  holder = {"s": state}

  def steps(n=k):
    s = holder["s"]
    for j in range(n):
      s, _ = compiled(s, per_step[j % k], hp)
    jax.block_until_ready(s)
    holder["s"] = s

  steps()
  seconds = common.best_time(steps, 2)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    steps(3)
  rate = k / seconds
  return dict(compile_s=compile_s, ms_per_step=1e3 * seconds / k, rate=rate,
              mfu=rate * task.flops_per_step / peak, xla_bytes=common.xla_bytes(compiled))


def main(argv: Sequence[str]) -> None:
  del argv
  import jax

  from jaxopt_lab import files, hardware

  if not FLAGS.out_dir:
    raise app.UsageError("--out_dir: a directory for the results is required")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  started = time.perf_counter()
  base = common.lm_small_config()
  if FLAGS.probe_shrink:
    common.shrink_lm(base)
  device = jax.devices()[0]
  peak = hardware.peak_flops(device, "bfloat16") or hardware.measure_matmul_flops(n=1024)
  doc: dict[str, Any] = dict(device=device.device_kind, jax=jax.__version__, peak_flops=peak,
                             steps=FLAGS.probe_steps, rows=[])
  path = os.path.join(FLAGS.out_dir, "probe.json")
  jobs = [("step", spec, None) for spec in FLAGS.step_variants]
  jobs += [("sweep", "bfloat16:fused", int(n)) for n in FLAGS.sweep_points]
  for kind, spec, n in jobs:
    row: dict[str, Any] = dict(kind=kind, variant=spec, n=n)
    doc["rows"].append(row)
    if time.perf_counter() - started > FLAGS.budget_s:
      row["skipped"] = "budget spent"
      continue
    config = _variant(base, spec)
    try:
      if kind == "step":
        tmp = os.path.join(FLAGS.out_dir, "trace_tmp")
        row.update(_step_row(config, FLAGS.probe_steps, peak, tmp))
        (trace,) = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)
        shutil.move(trace, os.path.join(FLAGS.out_dir, f"trace_{spec.replace(':', '_')}.json.gz"))
        shutil.rmtree(tmp)
      else:
        row.update(common.time_group_program(config, n, FLAGS.probe_steps, 8, peak))
    except Exception as e:  # noqa: BLE001 - record and go on
      row["error"] = f"{type(e).__name__}: {str(e)[:800]}"
    jax.clear_caches()
    doc["elapsed_s"] = time.perf_counter() - started
    files.atomic_write_json(path, doc)
    print(f"[{doc['elapsed_s']:4.0f}s] {row}", flush=True)


if __name__ == "__main__":
  app.run(main)
