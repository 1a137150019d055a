"""`hardware.keep_freed_memory`: an XLA program's large temporary no longer page-faults per call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# A program whose 64 MB temporary (tanh(a a^T), [4096, 4096] float32) XLA's CPU runtime allocates
# at every call, as it does an lm_tiny step's; the child prints the minor page faults per call.
_CHILD = r"""
import json, resource, sys
from jaxopt_lab import hardware
kept = hardware.keep_freed_memory() if sys.argv[1] == "keep" else None
import jax, jax.numpy as jnp
a = jnp.ones((4096, 8), jnp.float32)
f = jax.jit(lambda a: jnp.tanh(a @ a.T) @ a)
temp = f.lower(a).compile().memory_analysis().temp_size_in_bytes
for _ in range(5):
  f(a).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  f(a).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps(dict(kept=kept, temp=temp, faults=faults)))
"""


def _child(mode: str) -> dict:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), root) if p)
  out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                       check=True, env=dict(os.environ, PYTHONPATH=path))
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_not_faulted_in_again_at_every_call():
  system, kept = _child("system"), _child("keep")
  page = os.sysconf("SC_PAGE_SIZE")
  assert system["temp"] == kept["temp"] == 4096 * 4096 * 4
  assert kept["kept"] is True  # glibc (Linux): every mallopt setting accepted
  # glibc's defaults map the temporary afresh at every call: about one fault per page of it.
  assert system["faults"] > 0.8 * system["temp"] / page
  # Kept: the next call reuses pages already mapped (what is left comes from elsewhere).
  assert kept["faults"] < 0.25 * system["faults"]
