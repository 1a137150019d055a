r"""Writes the report of an experiment directory: WORKDIR/report/ (Markdown, HTML, PNG, CSV).

  python scripts/report.py --workdir=/tmp/sweep
  python scripts/report.py --workdir=/tmp/task_a --workdir=/tmp/task_b --out=/tmp/compare

Reads only the experiment directory (config.json, design.csv, summary.csv, metrics.jsonl,
run.json); a sweep still running is reported with what is there. A directory of
scripts/train.py (config.json, summary.json, metrics.jsonl) is read as a one-point experiment.
The console ends with the verdict and the path of report.html. With several --workdir (e.g. the
same optimizers on several tasks), --out gets their comparison (a verdict per task and overall,
a per-task table, performance profiles, steps and time to target, links to each report); the
experiment directories are only read.
"""

import os

from absl import app, flags, logging

from jaxopt_lab import launch
from jaxopt_lab.analysis import compare, report

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", None, "Experiment directory written by scripts/sweep.py (or a single run's, by "
    "scripts/train.py); repeat to compare several.")
_OUT = flags.DEFINE_string(
    "out", None, "Directory of the comparison of several experiments; default: 'comparison' "
    "next to the first --workdir.")
_RESAMPLES = flags.DEFINE_integer("num_resamples", 2000, "Bootstrap resamples per interval.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _RESAMPLES.value < 1:
    raise ValueError(f"--num_resamples: must be >= 1, got {_RESAMPLES.value}")
  if len(_WORKDIR.value) > 1:
    first = os.path.abspath(_WORKDIR.value[0])
    out = _OUT.value or os.path.join(os.path.dirname(first), "comparison")
    logging.info("Comparison: %s", compare.write(_WORKDIR.value, out,
                                                 num_resamples=_RESAMPLES.value))
    return
  for workdir in _WORKDIR.value:
    try:
      written = report.write(workdir, num_resamples=_RESAMPLES.value)
    except FileNotFoundError as e:  # not an experiment directory: the message says what is missing
      if e.filename is not None:
        raise
      raise ValueError(f"--workdir: {e}") from None
    for line in written.console_lines():  # an incomplete sweep's state among them
      logging.info("%s", line)


if __name__ == "__main__":
  launch.run(main)
