"""What a device has: peak arithmetic rates (for MFU estimates), memory and caches (for slices)."""

from __future__ import annotations

import glob
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense peak FLOP/s per chip from vendor data sheets, keyed by a substring of `device_kind`.
# bf16 numbers are tensor-core/MXU rates without sparsity; float32 on GPUs is the TF32 rate that
# XLA uses for float32 matmuls by default.
_PEAKS = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L4": {"bfloat16": 121e12, "float32": 60e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12},
}


def peak_flops(device: jax.Device, dtype: str = "float32") -> float | None:
  """Data-sheet peak FLOP/s of `device` for matmuls in `dtype`; None where unknown (CPUs)."""
  kind = getattr(device, "device_kind", "")
  for name, peaks in _PEAKS.items():
    if name.lower() in kind.lower():
      return peaks.get(dtype)
  return None


def measure_matmul_flops(
    n: int = 1024, dtype: str = "float32", repeats: int = 10, device: jax.Device | None = None
) -> float:
  """Measures the FLOP/s of a square `n`x`n` matmul on `device`: the practical peak of a machine.

  Used where no data-sheet number exists (CPUs): the best of `repeats` timed calls.
  """
  device = device or jax.devices()[0]
  rng = np.random.default_rng(0)
  a = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  b = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best


def device_memory_bytes(device: jax.Device) -> float:
  """The memory of `device`: its allocator's limit on accelerators, physical memory on CPUs."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return float(stats["bytes_limit"])
  return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def usable_cpus() -> int:
  """The cores this process may run on (its affinity mask where the system has one)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def parse_cache_size(text: str) -> int | None:
  """Bytes of a sysfs cache size such as '2048K', '2M' or '512'; None if it is not one."""
  text = text.strip()
  units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
  number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
  return int(number) * unit if number.isdigit() else None


def l2_cache_bytes(default: int = 1 << 20,
                   cache_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
  """The L2 cache of one core (Linux sysfs), `default` where the system does not say."""
  for index in sorted(glob.glob(os.path.join(cache_dir, "index*"))):
    try:
      with open(os.path.join(index, "level")) as f:
        level = f.read().strip()
      with open(os.path.join(index, "size")) as f:
        size = parse_cache_size(f.read())
    except OSError:
      continue
    if level == "2" and size:
      return size
  return default


# On a CPU a slice of points runs fastest when its working set stays near the core's caches.
# Measured with `sweep.slice_size` on 2 Xeon cores (2 MB L2 each), 128 digits MLPs (about 2.2 MB
# per point), one device per core: slices of 2-4 points ran 1.5-1.6x as fast as slices of 64.
_CPU_SLICE_L2_CACHES = 4


def slice_budget_bytes(device: jax.Device) -> float:
  """The memory one vmapped slice of points may use on `device` (`sweep.slice_size = -1`).

  Half the memory of an accelerator; on a CPU, a few times the core's L2 cache (within half the
  RAM): a CPU is not short of memory at these sizes, but of cache.
  """
  budget = device_memory_bytes(device) / 2
  if device.platform == "cpu":
    budget = min(budget, _CPU_SLICE_L2_CACHES * l2_cache_bytes())
  return budget
