"""Peak arithmetic rates of accelerators, for model-FLOPs utilisation (MFU) estimates."""

from __future__ import annotations

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
