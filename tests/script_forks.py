r"""Runs entry scripts in forks of one warm process: many one-line-error cases, one start-up.

  python tests/script_forks.py CASES.json RESULTS.json

CASES.json holds `[{"script": "train.py", "args": [...]}, ...]`; RESULTS.json receives
`[{"returncode": int, "output": str}, ...]` in the same order. Each case runs in a fresh fork of
this process exactly as `python scripts/<script> <args>` would (the script runs as `__main__`,
absl parses its flags, stdout and stderr go to one capture), after the imports every script
shares were done once here; JAX's backend is not started before the fork, so each case starts
its own. The cases run one after another, in order.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import traceback

import jax  # noqa: F401  (the imports that take the time, done once)
from absl import app, flags  # noqa: F401
from ml_collections import config_flags  # noqa: F401

from jaxopt_lab import launch, train  # noqa: F401
from jaxopt_lab.analysis import report  # noqa: F401
from jaxopt_lab.sweep import driver  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_case(script: str, args: list[str]) -> dict[str, object]:
  path = os.path.join(ROOT, "scripts", script)
  with tempfile.TemporaryFile() as capture:
    pid = os.fork()
    if pid == 0:  # the child: never returns
      code = 1
      try:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        sys.argv = [path, *args]
        runpy.run_path(path, run_name="__main__")
        code = 0
      except SystemExit as e:  # as the interpreter ends on it
        if isinstance(e.code, str):
          print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
      except BaseException:  # noqa: BLE001  (an uncaught error: the traceback, exit 1)
        traceback.print_exc()
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    capture.seek(0)
    output = capture.read().decode("utf-8", "replace")
  return {"returncode": os.waitstatus_to_exitcode(status), "output": output}


def main() -> None:
  with open(sys.argv[1]) as f:
    cases = json.load(f)
  results = [run_case(c["script"], c["args"]) for c in cases]
  with open(sys.argv[2], "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main()
