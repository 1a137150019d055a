r"""Points x steps per second of one group at several slice widths, timed in turn in one process.

`sweep.slice_size` sets how many points one `vmap` trains at a time on a device (the driver runs
the slices of a device one after another with `lax.map`). On a CPU the best width depends on the
cache and the model; `slice_size = -1` picks one from XLA's memory analysis
(`hardware.slice_budget_bytes`). This benchmark measures the driver's compiled chunk program at
each width on the same points, round after round (so a load that drifts cancels), and shows the
width `-1` picks:

  python -m benchmarks.slice_widths --task=digits --num_points=128 --slice_widths=1,2,4,8,64
  python -m benchmarks.slice_widths --task=classic --num_points=128 --slice_widths=8,16,64
  python -m benchmarks.slice_widths --task=lm --num_points=8 --slice_widths=1,2,4 --cpu_devices=2
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from benchmarks import common

_TASK = flags.DEFINE_enum("task", "digits", list(common.TASKS), "Task to measure.")
_NUM_POINTS = flags.DEFINE_integer("num_points", 128, "Points N (learning rates, one seed).")
_SLICE_WIDTHS = flags.DEFINE_list("slice_widths", ["1", "2", "4", "8", "64"],
                                  "Slice widths (sweep.slice_size) to time; 0 = all at once.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "XLA CPU devices; 0 = as scripts/sweep.py "
                                    "(one per usable core, at most one per point).")
_STEPS = flags.DEFINE_integer("steps", 0, "Steps per call; 0 = the task's default.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds (more while under 6 s in all).")


def main(argv: Sequence[str]) -> None:
  del argv
  import jax

  from jaxopt_lab import hardware
  from jaxopt_lab.sweep import driver, programs

  task, n = _TASK.value, _NUM_POINTS.value
  k = _STEPS.value or common.STEPS[task]
  widths = [-1] + [int(w) for w in _SLICE_WIDTHS.value]
  base = common.experiment_config(task)
  devices = _CPU_DEVICES.value or driver.default_cpu_devices(
      common.sweep_config(base, n, k, -1), hardware.usable_cpus())
  jax.config.update("jax_num_cpu_devices", devices)
  calls, used = {}, {}
  for width in widths:
    group = common.one_group(common.sweep_config(base, n, k, width))
    program = common.group_program(group, programs.make_mesh())
    label = "auto" if width == -1 else str(width)
    used[label] = program.width
    pop = program.init_population()
    batches = program.device_batches(k)
    compiled = program.chunk.lower(pop, program.hparams, program.replicate, program.active,
                                  batches).compile()
    state = {"pop": compiled(pop, program.hparams, program.replicate, program.active,
                             batches)[0]}

    def call(compiled=compiled, program=program, batches=batches, state=state):
      new_pop, metrics = compiled(state["pop"], program.hparams, program.replicate, program.active,
                                  batches)
      jax.block_until_ready((new_pop, metrics))
      state["pop"] = new_pop

    call()
    calls[label] = call
  best = common.interleaved_best(calls, _ROUNDS.value, min_seconds=6.0)
  auto = best["auto"]
  print(f"{task}, N = {n}, {devices} XLA CPU device(s), {k} steps per call; "
        f"points x steps / s of the compiled program, best of the rounds:")
  print("| slice_size | points per slice | points x steps / s | x auto |\n|---|---|---|---|")
  for label, seconds in best.items():
    print(f"| {label} | {used[label]} | {common.fmt(n * k / seconds)} | {auto / seconds:.2f} |")


if __name__ == "__main__":
  app.run(main)
