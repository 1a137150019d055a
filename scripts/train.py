r"""Trains one design point: a task, an optimizer at given hyperparameter values, one seed.

  python scripts/train.py --config=experiments/classic.py --workdir=/tmp/classic
  python scripts/train.py --config=experiments/classic.py:rmsprop --workdir=/tmp/classic_rms \
      --config.optimizer.learning_rate=3e-3

Running the same command again with the same workdir resumes from the last checkpoint.
"""

from absl import flags, logging
from ml_collections import config_flags

from jaxopt_lab import launch, single

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, summary and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  launch.log_devices()
  summary = single.train(_CONFIG.value, _WORKDIR.value)
  final = {k: v for k, v in summary.items() if k.startswith(("final_", "best_"))}
  logging.info("Summary: %s", final)


if __name__ == "__main__":
  launch.run(main)
