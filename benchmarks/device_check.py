r"""The `lm_small` LM on the first accelerator: the sweep at several N against one point's loops.

`experiments/lm_small.py` (bf16 compute, width 512, depth 8, context 512, batch 32) trained as
the single-run trainer's sequential loops on one point (one jitted step per call, one jitted scan
of `--steps` steps), then through the driver's program at N = `--points` (slices of `--width`
points) and at `--fused_points` with `model.attention = 'fused'`. For each: compile seconds, the
first call, the best of at least two timed calls, points x steps/s, tokens/s, MFU against
`hardware.peak_flops` (else a measured float32 matmul), the ratio to the best sequential loop,
XLA's memory analysis and the device's peak bytes in use. The JSON file is rewritten after every
configuration; an error (an out-of-memory at one N) is recorded and the next one runs; what
would start after `--budget_s` is skipped.

  python -m benchmarks.device_check --json_out=/tmp/gpu_lm_small.json
  python -m benchmarks.device_check --shrink --points=1,2,4 --fused_points=2 --steps=3 \
      --json_out=/tmp/t.json   # a tiny LM, to test the check on a CPU
"""

from __future__ import annotations

import copy
import gc
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from benchmarks import common

_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the results to this JSON file (required).")
_POINTS = flags.DEFINE_list("points", ["1", "8", "32", "64"], "Numbers of points N.")
_FUSED_POINTS = flags.DEFINE_list("fused_points", ["8", "64"], "Numbers of points measured again "
                                  "with model.attention = 'fused' (jax.nn.dot_product_attention).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per call.")
_WIDTH = flags.DEFINE_integer("width", 8, "sweep.slice_size (points per slice).")
_BUDGET_S = flags.DEFINE_integer("budget_s", 330, "Skip what would start after this many seconds.")
_SHRINK = flags.DEFINE_bool("shrink", False, "A tiny LM, to test the check on a CPU.")


def _ints(values: Sequence[str], flag: str) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--{flag}: integers expected, got {','.join(values)}") from None


def sequential(task, group, k: int, peak: float, memory: Callable[[], Any]) -> dict[str, Any]:
  """One point through the single-run trainer: one jitted step per call, one jitted scan."""
  import jax

  from jaxopt_lab import train

  train_step, hp, state, batches, per_step = common.one_point(group, k)
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
  rate_step, rate_scan = k / common.best_time(steps, 1), k / common.best_time(scans, 1)
  return dict(rate_step=rate_step, rate_scan=rate_scan, compile_step_s=t1 - t0,
              compile_scan_s=t2 - t1, mfu_step=rate_step * task.flops_per_step / peak,
              mfu_scan=rate_scan * task.flops_per_step / peak, peak_bytes_in_use=memory())


def main(argv: Sequence[str]) -> None:
  del argv
  import jax

  from jaxopt_lab import files, hardware

  if not _JSON_OUT.value:
    raise app.UsageError("--json_out: the device check needs a path for its JSON results")
  points, fused_points = _ints(_POINTS.value, "points"), _ints(_FUSED_POINTS.value, "fused_points")
  jax.config.update("jax_enable_compilation_cache", False)
  started = time.perf_counter()
  device = jax.devices()[0]
  base = common.lm_small_config()
  if _SHRINK.value:
    common.shrink_lm(base)
  dtype = base.model.dtype
  peak = hardware.peak_flops(device, dtype)
  peak_source = "data sheet"
  if peak is None:
    peak, peak_source = hardware.measure_matmul_flops(n=1024), "measured float32 matmul"
  k = _STEPS.value
  doc: dict[str, Any] = dict(device=str(device.device_kind), platform=device.platform,
                             devices=jax.device_count(), dtype=dtype, peak_flops=peak,
                             peak_source=peak_source, steps=k, width=_WIDTH.value,
                             shrink=_SHRINK.value, model=base.model.to_dict(),
                             batch_size=base.data.batch_size, jax=jax.__version__,
                             xla_flags=os.environ.get("XLA_FLAGS", ""), results=[])

  def save():
    doc["elapsed_s"] = time.perf_counter() - started
    files.atomic_write_json(_JSON_OUT.value, doc)

  def memory():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")

  def left():
    return _BUDGET_S.value - (time.perf_counter() - started)

  group = common.one_group(common.sweep_config(base, 1, k, 0))
  doc["flops_per_step"] = group.task.flops_per_step
  doc["tokens_per_step"] = group.task.tokens_per_step
  save()
  try:
    doc["sequential"] = sequential(group.task, group, k, peak, memory)
  except Exception as e:  # noqa: BLE001 - record and go on to the sweeps
    doc["sequential"] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
  gc.collect()
  save()
  best_seq = max(doc["sequential"].get("rate_step", 0), doc["sequential"].get("rate_scan", 0))

  fused = copy.deepcopy(base)
  fused.model.attention = "fused"
  plan = [(base, n) for n in points] + [(fused, n) for n in fused_points]
  for config, n in plan:
    row: dict[str, Any] = {"n": n, "attention": config.model.attention}
    doc["results"].append(row)
    if left() < 30:
      row["skipped"] = f"budget of {_BUDGET_S.value} s spent"
      save()
      continue
    try:
      row.update(common.time_group_program(config, n, k, _WIDTH.value, peak, memory))
      if best_seq:
        row["vs_best_sequential"] = row["rate"] / best_seq
    except Exception as e:  # noqa: BLE001 - an OOM at one N must not lose the others
      row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
    gc.collect()
    jax.clear_caches()
    save()
    print(f"[{time.perf_counter() - started:5.0f}s] N={n}: " + ", ".join(
        f"{key}={value if isinstance(value, str) else common.fmt(value)}"
        for key, value in row.items() if isinstance(value, float | str)), flush=True)
  print(f"sequential: {doc['sequential']}\nwritten to {_JSON_OUT.value} "
        f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
  app.run(main)
