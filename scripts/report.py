r"""Writes the report of an experiment directory: WORKDIR/report/ (Markdown, HTML, PNG, CSV).

  python scripts/report.py --workdir=/tmp/sweep

Reads only the experiment directory (config.json, design.csv, summary.csv, metrics.jsonl,
run.json); a sweep still running is reported with what is there.
"""

from absl import app, flags, logging

from jaxopt_lab import launch
from jaxopt_lab.analysis import report, results

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory written by scripts/sweep.py.")
_RESAMPLES = flags.DEFINE_integer("num_resamples", 2000, "Bootstrap resamples per interval.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _RESAMPLES.value < 1:
    raise ValueError(f"--num_resamples: must be >= 1, got {_RESAMPLES.value}")
  try:
    path = report.write_report(_WORKDIR.value, num_resamples=_RESAMPLES.value)
  except FileNotFoundError as e:  # not an experiment directory: the message says what is missing
    if e.filename is not None:
      raise
    raise ValueError(f"--workdir: {e}") from None
  logging.info("Report written to %s", path)
  progress = results.load_experiment(_WORKDIR.value).progress
  if not progress.complete:  # the report's banner says so too; say it where it is seen first
    logging.warning("incomplete: %d of %d points finished; the report shows those only (run the "
                    "sweep's command again to finish it)", progress.finished,
                    progress.design_points)


if __name__ == "__main__":
  launch.run(main)
