r"""Writes the report of an experiment directory: WORKDIR/report/ (Markdown, HTML, PNG, CSV).

  python scripts/report.py --workdir=/tmp/sweep

Reads only the experiment directory (config.json, design.csv, summary.csv, metrics.jsonl,
run.json); a sweep still running is reported with what is there.
"""

from absl import app, flags, logging

from jaxopt_lab import launch
from jaxopt_lab.analysis import report

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory written by scripts/sweep.py.")
_RESAMPLES = flags.DEFINE_integer("num_resamples", 2000, "Bootstrap resamples per interval.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  path = report.write_report(_WORKDIR.value, num_resamples=_RESAMPLES.value)
  logging.info("Report written to %s", path)


if __name__ == "__main__":
  launch.run(main)
