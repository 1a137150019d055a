r"""The best held-out loss each sweep design finds per unit of compute, on the tiny byte LM.

One factor, AdamW's learning rate on a log range whose top diverges (the base config:
experiments/study_lm_tiny_adaptive.py), searched by each design over several seeds:

* `grid`: the N log-spaced learning rates of the base config, one run with the seeds as its
  replicates (`sweep.seed + r`: a grid has only data / init seeds to vary);
* `random`: N learning rates drawn log-uniformly (the grid's budget), seed s;
* `successive_halving`: the grid's N points, eta = 3, rungs at steps / 9, steps / 3 and steps;
* `hyperband`: eta = 3, first rung at steps / 9, the `--hyperband_brackets` most exploratory
  brackets of random points (2: 9 points to steps / 9, 5 to steps / 3; 0: all three);
* `pbt`: a population of `--pbt_population` random points, exploit / explore every steps / 6;
* `optuna`: TPE, `--optuna_batch` points a round for `--optuna_rounds` rounds.

Successive halving and Hyperband (every ranking) run all seeds as ONE sweep, as the grid does:
the seeds are its replicates (`sweep.seed` 0: replicate r has seed r, the grid's replicate r) and
each replicate is its own search (`sweep.adaptive.per_replicate`): one population, one set of
compiles, its wall time split by the seeds like the grid's. `--adaptive_seeds=separate` runs
them a sweep per seed instead (Hyperband's random points then differ by seed; as replicates
every seed searches the points drawn with seed 0). Random search, PBT and Optuna run a sweep
per seed.

Each design runs through the public driver (`driver.run_sweep`) into its own experiment
directory under --out_dir (a rerun with the same --out_dir resumes or reuses it); everything
below is read back from those directories. Compute is points x steps as the driver tallies it
(run.json `groups[].points_steps`; a frozen diverged point still counts, evaluations do not).
The incumbent is the best valid loss among points trained to the full budget (`train.steps`):
a point an adaptive design stopped early never counts, however good its last evaluation.
A design whose module is not in this checkout (pbt, optuna) is skipped with a note.

  python -m benchmarks.adaptive_study --out_dir=/tmp/adaptive_study \
      --figure=benchmarks/adaptive_study.png        # the study of benchmarks/README.md
  python -m benchmarks.adaptive_study --quick        # a smoke run on a tiny LM, seconds
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import flags

from benchmarks import adaptive_rankings as rankings
from benchmarks.adaptive_figure import figure
from benchmarks.adaptive_traces import Trace, read_traces
from jaxopt_lab import configs, files

DESIGNS = ("grid", "random", "successive_halving", "hyperband", "pbt", "optuna",
           *rankings.RANKED)
# The module each design needs beyond the driver (the ones still being written are skipped).
_MODULES = {"pbt": "jaxopt_lab.sweep.adaptive.pbt",
            "optuna": "jaxopt_lab.sweep.adaptive.optuna_search"}
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments", "study_lm_tiny_adaptive.py")
TOLERANCE, COMPUTE_SHARE = rankings.TOLERANCE, rankings.COMPUTE_SHARE

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "", "Experiment directories go here ('' = a new temp dir); a "
                    "rerun with the same dir resumes or reuses the finished ones.")
flags.DEFINE_list("designs", list(DESIGNS), f"Designs to compare, of {', '.join(DESIGNS)}.")
flags.DEFINE_integer("seeds", 3, "Design seeds 0..n-1 (the grid: replicates with these seeds).")
flags.DEFINE_integer("steps", 0, "train.steps (0: the base config's); a multiple of 9.")
flags.DEFINE_bool("quick", False, "A smoke run: a tiny LM, 9 steps, seconds a design.")
flags.DEFINE_integer("pbt_population", 6, "PBT's points.")
flags.DEFINE_integer("optuna_batch", 3, "Optuna: points a round.")
flags.DEFINE_integer("optuna_rounds", 3, "Optuna: rounds.")
flags.DEFINE_enum("task", "lm", rankings.TASKS, "The study's task: the tiny byte LM, the same "
                  "at width 64 (lm64), or the small digits MLP "
                  "(adaptive_rankings.digits_config).")
flags.DEFINE_enum("adaptive_seeds", "replicates", rankings.ADAPTIVE_SEEDS, "Successive "
                  "halving / Hyperband: all seeds in one sweep as replicates, each its own "
                  "search (sweep.adaptive.per_replicate), or a sweep per seed.")
flags.DEFINE_integer("hyperband_brackets", 2, "Hyperband's brackets, most exploratory first "
                     "(sweep.adaptive.brackets; 0: all).")
flags.DEFINE_string("figure", "", "Write the figure here ('' = OUT_DIR/adaptive_study.png).")


def missing(design: str) -> str | None:
  """Why `design` cannot run here (its module is not in this checkout, or Optuna is not
  installed), or None."""
  if design in _MODULES and importlib.util.find_spec(_MODULES[design]) is None:
    return f"{_MODULES[design]} is not in this checkout yet"
  if design == "optuna" and importlib.util.find_spec("optuna") is None:
    return "Optuna is not installed (pip install 'jaxopt_lab[optuna]')"
  return None


def base_config(quick: bool, steps: int = 0, task: str = "lm") -> ml_collections.ConfigDict:
  """The study's base config (a tiny LM and 9 steps for --quick); `steps` > 0 overrides;
  `task` 'lm64': the LM at width 64; 'digits': the small digits MLP with the same sweep
  (`adaptive_rankings`)."""
  config = configs.sibling(BASE_CONFIG, "study_lm_tiny_adaptive").get_config()
  if task == "lm64":
    config.model.width = rankings.LM64_WIDTH
  if task == "digits":
    config = rankings.digits_config(config)
    quick = False
  if quick:  # the shape of tests/small_configs.tiny_lm_config: compiles and runs in seconds
    config.model.update(dict(width=32, depth=1, heads=2, context=16))
    config.data.update(dict(batch_size=4, eval_windows=8, eval_batch_size=4,
                            byte_budget=200_000))
    config.eval.prompts = 8
    steps = steps or 9
  if task == "digits" and quick:
    steps = steps or 9
  if steps:
    if steps % 9:
      raise ValueError(f"--steps: must be a multiple of 9 (rungs at steps/9, steps/3), got "
                       f"{steps}")
    # Chunks divide every rung (steps / 9, / 3) and PBT's interval (steps / 6).
    unit = math.gcd(steps // 9, max(steps // 6, 1))
    config.train.update(dict(steps=steps, steps_per_call=unit, log_every=unit,
                             eval_every=steps // 2 if steps % 2 == 0 else steps,
                             checkpoint_every=steps))
  return config


def design_config(base: ml_collections.ConfigDict, design: str, seed: int, seeds: int,
                  pbt_population: int = 6, optuna_batch: int = 3, optuna_rounds: int = 3,
                  adaptive_seeds: str = "replicates", hyperband_brackets: int = 2
                  ) -> ml_collections.ConfigDict:
  """`base` set up to run `design` at `seed`; the grid, and successive halving / Hyperband with
  `adaptive_seeds` 'replicates': all `seeds` as replicates, each its own search."""
  if design not in DESIGNS:
    raise ValueError(f"--designs: unknown design {design!r}; choices: {', '.join(DESIGNS)}")
  config = ml_collections.ConfigDict(base.to_dict())  # a copy, unlocked like the original
  design, rank_by = rankings.split(design)
  lr = base.sweep.factors.learning_rate
  n, steps = int(lr.num), int(base.train.steps)
  drawn = ml_collections.ConfigDict({"learning_rate": {"scale": "log", "low": lr.low,
                                                       "high": lr.high}})
  s, a = config.sweep, config.sweep.adaptive
  s.design, s.seed, s.replicates = design, seed, 1
  if design == "grid":
    s.seed, s.replicates = 0, seeds
  elif design == "random":
    s.factors, s.num_points = drawn, n
  elif design == "successive_halving":
    a.initial, a.eta, a.min_steps = "grid", 3, 0  # N = 9: rungs at steps / 9, / 3, / 1
  elif design == "hyperband":
    s.factors = drawn
    a.initial, a.eta, a.min_steps = "random", 3, steps // 9
    a.brackets = hyperband_brackets
  elif design == "pbt":
    s.factors, s.num_points = drawn, pbt_population
    a.initial, a.interval = "random", steps // 6
  elif design == "optuna":
    s.factors = drawn
    a.sampler, a.batch, a.rounds = "tpe", optuna_batch, optuna_rounds
  if rank_by != "last":
    rankings.set_ranking(config, rank_by)
  if design != "grid" and rankings.one_run(design, adaptive_seeds):
    s.seed, s.replicates, a.per_replicate = 0, seeds, True
  return config


def run_design(config: ml_collections.ConfigDict, workdir: str) -> float:
  """Runs (or resumes, or reuses) the sweep of `config` in `workdir`; returns its wall seconds."""
  from jaxopt_lab.sweep import driver  # noqa: PLC0415  (JAX starts after the flags)

  started = time.perf_counter()
  driver.run_sweep(config, workdir)
  return time.perf_counter() - started


@dataclasses.dataclass
class Study:
  """Every trace of a study, and the designs it skipped (with the reason)."""

  traces: list[Trace]
  skipped: dict[str, str]
  grid_points: int
  steps: int
  correlations: list[list[str]] = dataclasses.field(default_factory=list)
  task: str = "lm"

  def of(self, design: str) -> list[Trace]:
    return [t for t in self.traces if t.design == design]


def run_study(out_dir: str, designs: Sequence[str], seeds: int, quick: bool = False,
              steps: int = 0, pbt_population: int = 6, optuna_batch: int = 3,
              optuna_rounds: int = 3, task: str = "lm", adaptive_seeds: str = "replicates",
              hyperband_brackets: int = 2) -> Study:
  """Runs every design of `designs` at seeds 0..seeds-1 under `out_dir` and reads them back
  (see the module's docstring for `adaptive_seeds`)."""
  for d in designs:
    if d not in DESIGNS:
      raise ValueError(f"--designs: unknown design {d!r}; choices: {', '.join(DESIGNS)}")
  if seeds < 1:
    raise ValueError(f"--seeds: must be >= 1, got {seeds}")
  if hyperband_brackets < 0:
    raise ValueError(f"--hyperband_brackets: must be >= 0 (0: all), got {hyperband_brackets}")
  rankings.check_adaptive_seeds(adaptive_seeds)
  base = base_config(quick, steps, task)
  traces, skipped = [], {}
  for design in designs:
    if (why := missing(design)) is not None:
      skipped[design] = why
      print(f"note: skipping {design}: {skipped[design]}", flush=True)
      continue
    for seed in range(1 if rankings.one_run(design, adaptive_seeds) else seeds):
      config = design_config(base, design, seed, seeds, pbt_population, optuna_batch,
                             optuna_rounds, adaptive_seeds, hyperband_brackets)
      workdir = rankings.workdir(out_dir, design, seed, adaptive_seeds)
      wall = run_design(config, workdir)
      got = read_traces(workdir, design)
      for t in got:
        t.wall_seconds = wall / len(got)
      traces += got
      which = f"seeds 0..{seeds - 1}" if len(got) > 1 else f"seed {seed}"
      print(f"{design} {which}: {wall:.0f}s, "
            + "; ".join(f"best {t.best_loss:.4f} at {t.compute} points x steps" for t in got),
            flush=True)
  return Study(traces, skipped, int(base.sweep.factors.learning_rate.num),
               int(base.train.steps),
               rankings.correlation_rows(out_dir, list(designs), seeds, adaptive_seeds), task)


def _fmt_lr(values: Sequence[float]) -> str:
  return " ".join(f"{v:.3g}" for v in values)


def table(study: Study) -> tuple[list[str], list[list[str]], list[str]]:
  """The study's table (columns, rows) and the verdict lines under it.

  Each design's seeds are paired with the grid's replicate of the same seed (the same data order
  and initialisations); "within 1%" counts the seeds whose best loss is at most 1.01 x that
  replicate's best.
  """
  grid = {t.seed: t for t in study.of("grid")}
  grid_compute = np.mean([t.compute for t in grid.values()]) if grid else np.nan
  columns = ["design", "seeds", "points x steps (a seed)", "x grid",
             "best valid loss: median [min, max]", "within 1% of the grid's",
             "% above the grid's best, per seed", "best learning rate per seed", "train s",
             "wall s (compiles incl.)"]
  rows, lines = [], []
  for design in DESIGNS:
    traces = study.of(design)
    if not traces:
      continue
    loss = np.array([t.best_loss for t in traces])
    compute = np.mean([t.compute for t in traces])
    close = [t for t in traces if t.seed in grid
             and t.best_loss <= (1 + TOLERANCE) * grid[t.seed].best_loss]
    rows.append([design, str(len(traces)), f"{compute:,.0f}",
                 f"{compute / grid_compute:.3f}" if grid else "-",
                 f"{np.median(loss):.4f} [{loss.min():.4f}, {loss.max():.4f}]",
                 f"{len(close)}/{len(traces)}" if grid else "-",
                 " ".join(f"{100 * (t.best_loss / grid[t.seed].best_loss - 1):+.2f}"
                          for t in traces if t.seed in grid) or "-",
                 _fmt_lr([t.best_lr for t in traces]),
                 f"{np.mean([t.train_seconds for t in traces]):.0f}",
                 f"{np.mean([t.wall_seconds for t in traces]):.0f}"])
  lines += rankings.verdicts(study, grid, DESIGNS)
  for design, why in study.skipped.items():
    lines.append(f"{design}: skipped ({why}).")
  return columns, rows, lines


def markdown(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table."""
  out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  out += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(out)


def _jsonable(value):
  """`value` with its non-finite floats as None (JSON has no inf or NaN)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def main(argv: Sequence[str]) -> None:
  del argv
  import jax  # noqa: PLC0415

  from jaxopt_lab import hardware, launch  # noqa: PLC0415
  from jaxopt_lab.analysis import plots  # noqa: PLC0415

  out_dir = FLAGS.out_dir or tempfile.mkdtemp(prefix="adaptive_study_")
  # Each seed's run compiles the same programs again: a persistent cache keeps them once.
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(out_dir, "xla_cache")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_num_cpu_devices", max(1, hardware.usable_cpus() or 1))
  launch.log_devices()
  started = time.perf_counter()
  study = run_study(out_dir, FLAGS.designs, FLAGS.seeds, FLAGS.quick, FLAGS.steps,
                    FLAGS.pbt_population, FLAGS.optuna_batch, FLAGS.optuna_rounds, FLAGS.task,
                    FLAGS.adaptive_seeds, FLAGS.hyperband_brackets)
  wall = time.perf_counter() - started
  columns, rows, lines = table(study)
  print(markdown(columns, rows))
  print("\n".join(lines))
  if study.correlations:
    print("Rung ranking vs the grid's final ranking of the same learning rates (Spearman):")
    print(markdown(rankings.CORRELATION_COLUMNS, study.correlations))
  print(f"Wall time: {wall:.0f}s; experiment directories in {out_dir}")
  path = FLAGS.figure or os.path.join(out_dir, "adaptive_study.png")
  files.atomic_write_bytes(path, plots.png(figure(study)))
  files.atomic_write_json(os.path.join(out_dir, "study.json"), {
      "argv": sys.argv[1:], "wall_seconds": wall, "grid_points": study.grid_points,
      "steps": study.steps, "skipped": study.skipped, "columns": columns, "rows": rows,
      "verdict": lines, "correlations": study.correlations,
      "traces": [_jsonable(dataclasses.asdict(t)) for t in study.traces]})
  print(f"Figure: {path}")


if __name__ == "__main__":
  from jaxopt_lab import launch  # noqa: PLC0415

  launch.run(main)
