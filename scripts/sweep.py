r"""Runs a hyperparameter sweep: every point of a structural group in one compiled program.

  python scripts/sweep.py --config=experiments/sweep_classic_lr.py --workdir=/tmp/sweep
  python scripts/sweep.py --config=experiments/sweep_digits_lr.py --workdir=/tmp/digits \
      --config.sweep.replicates=2

Running the same command again with the same workdir resumes; the report is written at the end
(also by scripts/report.py). On several hosts, pass --coordinator_address, --num_processes and
--process_id (jax.distributed) to every process.

The next experiment, designed from a finished one (`jaxopt_lab.analysis.followup`: the learning
rate narrowed to the measured basin, more seeds where the verdict could not tell groups apart):

  python scripts/sweep.py --continue_from=/tmp/sweep --workdir=/tmp/sweep-next

The base config is the finished experiment's config.json, or --config when given (its
--config.<field> overrides win over the proposal); the workdir gets followup.json.
"""

import jax
from absl import flags, logging
from ml_collections import config_flags

from jaxopt_lab import hardware, launch
from jaxopt_lab.analysis import followup, report
from jaxopt_lab.sweep import driver

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file (optional with --continue_from).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The experiment directory.")
_CONTINUE_FROM = flags.DEFINE_string(
    "continue_from", None, "A finished experiment directory: run the follow-up its report "
    "proposes (base config: --config, else its config.json); followup.json says what changed.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0,
    "XLA CPU devices on a CPU-only machine; 0: one per usable core, but no more than the points "
    "of the largest group (times sweep.data_parallel). A device per core lets the sweep shard "
    "its points over the cores (benchmarks/README.md). Ignored where an accelerator exists.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  if _CPU_DEVICES.value < 0:
    raise ValueError(f"--cpu_devices: must be >= 0 (0: one per usable core), got "
                     f"{_CPU_DEVICES.value}")
  config, proposal = _CONFIG.value, None
  if _CONTINUE_FROM.value is not None:
    keep = config_flags.get_override_values(flags.FLAGS["config"]) if config else {}
    proposal = followup.propose(_CONTINUE_FROM.value, config, keep=keep)
    followup.check_workdir(_WORKDIR.value, proposal)
    config = proposal.config
    for change in proposal.changes:
      logging.info("Follow-up of %s: %s = %s (%s)", proposal.source, change.field, change.new,
                   change.reason)
  elif config is None:
    raise ValueError("--config: required (a sweep config file, e.g. "
                     "experiments/sweep_classic_lr.py), unless --continue_from is given")
  cpu_devices = _CPU_DEVICES.value or driver.default_cpu_devices(config, hardware.usable_cpus())
  jax.config.update("jax_num_cpu_devices", cpu_devices)
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  launch.log_devices()
  if proposal is not None and jax.process_index() == 0:
    with followup.recorded(_WORKDIR.value, proposal):
      driver.run_sweep(config, _WORKDIR.value)
  else:
    driver.run_sweep(config, _WORKDIR.value)
  if config.sweep.report and jax.process_index() == 0:
    for line in report.write(_WORKDIR.value).console_lines():  # the verdict, then report.html
      logging.info("%s", line)


if __name__ == "__main__":
  launch.run(main)
