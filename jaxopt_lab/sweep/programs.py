"""A structural group's compiled programs: every point of the group in one program.

For each group (one combination of structural factors) `GroupPrograms` builds the task and
`train.make_train_step` once, and runs

    shard_map over devices (the `points` mesh axis; a `data` axis splits each batch when
                            `sweep.data_parallel` > 1)
      a loop over the slices of the device's points   (bounds activation memory)
        in use (an adaptive design's later stages use fewer: the loop skips the rest)
        vmap over the points of a slice
          train.scan_chunk: lax.scan over a chunk's steps but the last, then the last (the
                            one that computes the log-step metrics)
            train.train_step, guarded for divergence

so all points of the group share one compilation (per chunk length), whatever their number,
and so do the shrinking populations of an adaptive design's stages: the count of points in use is
a traced value (benchmarks/README.md, "One program for every stage").
Hyperparameters are leaves of the `hparams` pytree with a leading point axis; the initial
states come from `vmap(train.init_state)` over those hparams and the points' seeds. Points of the
same replicate share a seed, hence their initial parameters and data order (common random
numbers). A point whose loss becomes non-finite, or exceeds `sweep.diverge_factor` times its first
loss, is frozen: its state stops changing and it never touches another point's numbers. The
driver (`driver.run_sweep`) runs these programs; the benchmarks time them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxopt_lab import hardware, runloop, tasks, train
from jaxopt_lab.optim import factory
from jaxopt_lab.sweep import grouping, slices


class Population(NamedTuple):
  """The training state of all points of a group, each leaf with a leading point axis.

  Attributes:
    state: the points' `train.TrainState`s.
    alive: bool, False once a point diverged (its state is then frozen).
    diverged_step: int32, the step whose loss diverged, -1 while alive.
    initial_loss: float32, the loss of the first step (the reference of `diverge_factor`).
  """

  state: train.TrainState
  alive: jax.Array
  diverged_step: jax.Array
  initial_loss: jax.Array


def make_point_step(task: tasks.Task, config: ml_collections.ConfigDict,
                    data_axis: str | None = None):
  """`train.train_step` of one point, wrapped so that a diverged point freezes.

  `point_step(pop, batch, hparams, log=False)`: `log` as `train_step`'s (the log-step metrics);
  divergence is checked on every step's loss, and a frozen point's metrics are NaN.
  """
  train_step = train.make_train_step(task, config, data_axis)
  factor = float(config.sweep.diverge_factor)

  def point_step(pop: Population, batch, hparams, log=False):
    state, metrics = train_step(pop.state, batch, hparams, log)
    loss = metrics["loss"]
    initial = jnp.where(pop.state.step == 0, loss, pop.initial_loss).astype(jnp.float32)
    bad = ~jnp.isfinite(loss)
    if factor > 0:  # structure of the config, not a traced value
      bad = bad | (loss > factor * initial)
    ok = pop.alive & ~bad
    new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), state, pop.state)
    diverged_step = jnp.where(pop.alive & bad, pop.state.step + 1, pop.diverged_step)
    metrics = jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), metrics)
    return Population(new_state, ok, diverged_step, initial), metrics

  return point_step


def hparam_packing(names: Sequence[str]) -> tuple[
    Callable[[Mapping[str, Any]], np.ndarray], Callable[[jax.Array], dict[str, jax.Array]]]:
  """The sweep's one packing of a group's hyperparameters: `(pack, unpack)` over `names`.

  A group's compiled program takes the points' values as one float32 array [points, values]
  rather than one argument per value: each argument of a compiled call costs its dispatch, a
  tenth of a small model's step (benchmarks/HISTORY.md, "The sweep's host work"). `pack` takes
  the values by name and refuses any other set of names; `unpack`, inside the program, gives
  them back by name, so the step sees the same named mapping a single run's does.
  """
  names = tuple(names)

  def pack(hparams: Mapping[str, Any]) -> np.ndarray:
    if sorted(hparams) != sorted(names):
      raise ValueError(f"hyperparameters {sorted(hparams)} are not the optimizer's "
                       f"{sorted(names)}")
    return np.stack([np.asarray(hparams[n], np.float32) for n in names], axis=-1)

  def unpack(packed: jax.Array) -> dict[str, jax.Array]:
    return {name: packed[..., i] for i, name in enumerate(names)}

  return pack, unpack


def packed_names(config: ml_collections.ConfigDict, cooldown: bool = False) -> tuple[str, ...]:
  """The names of a group program's packed hyperparameters: the optimizer's values, then, with
  `cooldown`, `train.COOLDOWN_KEYS`: a design that ranks its rungs by cooldown forks
  (`sweep.adaptive.rank_by = 'cooldown'`) runs its forks through the same compiled program as
  its training, with each point's fork start and length as two more traced values."""
  names = tuple(factory.hparam_names(config.optimizer.name))
  return names + train.COOLDOWN_KEYS if cooldown else names


def gather_batch(data, indices: jax.Array):
  """The batch of examples `indices` of the training set `data` ({name: [examples, ...]}), on
  the device: `task.train_batches`' NumPy gather, inside the compiled program."""
  return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)


def make_group_programs(task: tasks.Task, config: ml_collections.ConfigDict, mesh: Mesh,
                        width: int, cooldown: bool = False):
  """The jitted chunk-of-steps and evaluation programs of a group (sharded over `mesh`).

  Points are split over the mesh's `points` axis. Each training batch is split over its `data`
  axis (gradients averaged there); evaluation data is replicated, so every data shard evaluates
  the whole split and the metrics need no reduction. Returns `(chunk, evaluate, metric_names)`:
  the chunk program's metrics are one array [points, steps, metrics], its last axis the names of
  `metric_names` (a list the first trace of the chunk program fills, sorted). With `cooldown`
  the packed values end with `train.COOLDOWN_KEYS` (`packed_names`).
  """
  metric_names: list[str] = []
  data_axis = "data" if mesh.shape["data"] > 1 else None
  point_step = make_point_step(task, config, data_axis)
  _, unpack = hparam_packing(packed_names(config, cooldown))
  eval_step = train.make_eval_step(task)
  pts = P("points")
  # The training set (replicated) and the chunk's example indices [seeds, steps, batch]; the
  # batch axis is split over `data`.
  source_spec = (P(), P(None, None, "data"))

  def chunk_local(pop, hparams, replicate, active, source):
    data, indices = source

    # Gather the point's seed and step of the batch inside the step: under vmap the gather
    # builds one step's batch per point (it stays in cache), not the whole chunk's
    # (benchmarks/README.md: 1.6x at 128 classic points).
    def one_point(p, packed, r):
      hp = unpack(packed)

      def step_at(carry, i, log):
        return point_step(carry, gather_batch(data, indices[r, i]), hp, log)

      return train.scan_chunk(step_at, p, indices.shape[1])

    pop, metrics = slices.by_slices(one_point, width, active[0], (pop, hparams, replicate),
                                    keep=pop)
    # One output array for the host to fetch each chunk, not one per metric (each costs the
    # fetch a copy per device; benchmarks/HISTORY.md, "The sweep's host work").
    metric_names[:] = sorted(metrics)
    return pop, jnp.stack([metrics[name] for name in metric_names], axis=-1)

  def eval_local(params, active, eval_data):
    return slices.by_slices(lambda p: eval_step(p, eval_data), width, active[0], (params,))

  # Points never communicate: no collectives, so the replication checker has nothing to check
  # (and would ask the task's scans to mark their carries as varying).
  chunk = jax.jit(
      jax.shard_map(chunk_local, mesh=mesh, in_specs=(pts, pts, pts, pts, source_spec),
                    out_specs=(pts, pts), check_vma=False),
      donate_argnums=0,
  )
  evaluate = jax.jit(jax.shard_map(eval_local, mesh=mesh, in_specs=(pts, pts, P()), out_specs=pts,
                                   check_vma=False))
  return chunk, evaluate, metric_names


def _pad(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the point axis to `n` by repeating the last point (padding is computed, then dropped)."""
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)]) if n > len(x) else x


def to_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array placed on the devices of `sharding` (each process gives its own shards)."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
  """The arrays of `tree` on the host (gathered from every process on multi-host runs)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def make_mesh(data_parallel: int = 1) -> Mesh:
  """A (`points`, `data`) mesh over every device of every process."""
  devices = jax.devices()
  if data_parallel < 1 or len(devices) % data_parallel:
    raise ValueError(
        f"sweep.data_parallel: must divide the {len(devices)} device(s), got {data_parallel}")
  return Mesh(np.array(devices).reshape(-1, data_parallel), ("points", "data"))


class GroupPrograms:
  """The compiled programs of one group and their placed arguments: what a sweep runs per group.

  Lays the group's points out on `mesh` (padded to whole slices of `width` points per device),
  places their hyperparameters, replicate indices and seeds, and holds the group's chunk-of-steps
  program (compiled once per chunk length, `chunk.compiled[k]`) and evaluation program. The sweep
  and the benchmarks run a group through it; it writes nothing.

  Attributes:
    group, mesh: the group and the (`points`, `data`) mesh.
    n, width, padded: the group's points, points per vmapped slice on a device, points after
      padding to the mesh (the padding is computed, then dropped).
    chunk: `(pop, hparams, replicate, active, (train_data, indices)) -> (pop, metrics)`, a
      `runloop.ChunkProgram`: it gathers each step's batch from the training set on the devices;
      `metrics` is one array [padded, steps, len(metric_names)]. It runs only the slices that
      hold points in use (`active`); the others keep their state, their metrics NaN.
    metric_names: the names of the metrics' last axis (known once the chunk program compiled).
    hparams, replicate, seeds, active, train_data, eval_data: the programs' arguments, placed
      on the mesh (the data replicated on every device); `active` int32 [devices], the points in
      use on each device (`place`: the first `n` of the padded population); `hparams`
      is the points' values packed in one array, [padded, values] (`hparam_packing`, in the
      order of `factory.hparam_names`).
  """

  def __init__(self, group: grouping.Group, mesh: Mesh, width: int | None = None,
               padded: int | None = None, widest: int | None = None):
    """`width`: points per slice, instead of the one `sweep.slice_size` gives (a resume);
    `padded`: the points to pad to (a multiple of the `points` devices), instead of the fewest
    whole slices (an adaptive design's group: the population its largest stage needs);
    `widest`: at most this many points a slice (an adaptive design's narrowest stage: a wider
    slice would compute points no longer in use)."""
    self.group, self.mesh = group, mesh
    self.cooldown = train.COOLDOWN_KEYS[0] in group.hparams  # forks of a cooldown ranking
    cfg = group.config
    n_dev = mesh.shape["points"]
    local = -(-len(group.points) // n_dev) if padded is None else padded // n_dev
    if width is None:
      cap = min(local, widest or local)
      width = slices.slice_width(cfg, cap)
      if int(cfg.sweep.slice_size) == -1:
        width = slices.least_padded_width(cap, self._auto_width(cap))
    width, local = slices.even_slices(local, min(width, local))
    self.width, self.padded = width, local * n_dev
    self.sharding = NamedSharding(mesh, P("points"))
    chunk, self._evaluate, self.metric_names = make_group_programs(group.task, cfg, mesh, width,
                                                                   self.cooldown)
    self.chunk = runloop.ChunkProgram(chunk)
    replicated = NamedSharding(mesh, P())
    self.train_data = jax.tree.map(lambda x: to_global(np.asarray(x), replicated),
                                   group.task.train_data)
    self.eval_data = jax.tree.map(lambda x: to_global(x, replicated), group.task.eval_data)
    self.place(group)

  def place(self, group: grouping.Group) -> None:
    """Makes the programs run `group`'s points: a group of the same structure (an adaptive
    design's stage) with at most `padded` points. Compiled programs are kept."""
    if len(group.points) > self.padded:
      raise ValueError(f"{len(group.points)} points do not fit a program of {self.padded}")
    self.group, self.n = group, len(group.points)
    pack, _ = hparam_packing(packed_names(group.config, self.cooldown))
    self.hparams = to_global(_pad(pack(group.hparams), self.padded), self.sharding)
    self.replicate = to_global(_pad(group.replicate, self.padded), self.sharding)
    self.seeds = to_global(_pad(group.seeds, self.padded), self.sharding)
    # The points in use on each device (they fill the devices' blocks from the front).
    devices = self.mesh.shape["points"]
    local = self.padded // devices
    in_use = np.clip(self.n - local * np.arange(devices), 0, local).astype(np.int32)
    self.active = to_global(in_use, self.sharding)

  def evaluate(self, params: Any) -> dict[str, jax.Array]:
    """The held-out metrics of the points in use: {'<split>_<metric>': [padded]} (NaN past
    them where a whole slice is not in use)."""
    return self._evaluate(params, self.active, self.eval_data)

  @property
  def compile_seconds(self) -> float:
    """Seconds spent compiling the chunk program so far."""
    return self.chunk.compile_seconds

  def _auto_width(self, local: int) -> int:
    """The widest slice whose compiled program (memory analysis) fits `slice_budget_bytes`."""
    if local == 1:
      return 1
    budget = hardware.slice_budget_bytes(self.mesh.devices.flat[0])
    fixed, per_point = self.slice_memory()
    width = max(1, min(local, int((budget - fixed) // per_point)))
    logging.info("Group %s: slices of %d of the %d points per device (%.1f MB shared + %.2f MB "
                 "per point within %.0f MB).", self.group.name, width, local, fixed / 2**20,
                 per_point / 2**20, budget / 2**20)
    return width

  def slice_memory(self) -> tuple[float, float]:
    """(bytes shared by a device's points, bytes per point) of the chunk program.

    From XLA's memory analysis of the program at slices of one and of two points on one device:
    the training set and the chunk's indices are shared; parameters, optimizer state, batches,
    activations and metrics grow with the points.
    """
    cfg = self.group.config
    k = min(cfg.train.steps_per_call, cfg.train.steps)
    mesh1 = Mesh(self.mesh.devices[:1], ("points", "data"))
    batches = jax.eval_shape(lambda: (self.group.task.train_data, self.host_indices(0, k)))

    def program_bytes(width: int) -> float:
      chunk, _, _ = make_group_programs(self.group.task, cfg, mesh1, width, self.cooldown)
      hp = jax.ShapeDtypeStruct((width, len(self.group.hparams)), jnp.float32)
      rep = jax.ShapeDtypeStruct((width,), jnp.int32)
      pop = jax.eval_shape(self._init_fn(), hp, rep)
      active = jax.ShapeDtypeStruct((1,), jnp.int32)
      mem = chunk.lower(pop, hp, rep, active, batches).compile().memory_analysis()
      return float(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                   + mem.output_size_in_bytes - mem.alias_size_in_bytes)

    one, two = program_bytes(1), program_bytes(2)
    if two <= one:  # no growth seen: count the whole program per point (never too wide)
      return 0.0, one
    return max(2 * one - two, 0.0), two - one

  def _init_fn(self):
    task, cfg = self.group.task, self.group.config
    _, unpack = hparam_packing(packed_names(cfg, self.cooldown))

    def init(packed, seeds):
      hparams = unpack(packed)
      state = jax.vmap(lambda h, s: train.init_state(task, cfg, h, s))(hparams, seeds)
      n = seeds.shape[0]
      return Population(state, jnp.ones(n, bool), jnp.full(n, -1, jnp.int32),
                        jnp.full(n, jnp.nan, jnp.float32))

    return init

  def init_population(self) -> Population:
    """The points' initial population, sharded over the mesh."""
    return jax.jit(self._init_fn(), out_shardings=self.sharding)(self.hparams, self.seeds)

  def host_indices(self, begin: int, k: int) -> np.ndarray:
    """The examples of the batches of steps [begin, begin + k) of each distinct seed:
    int32 [seeds, k, batch] (`task.batch_indices`)."""
    return np.stack([self.group.task.batch_indices(s, begin, k)
                     for s in self.group.distinct_seeds]).astype(np.int32)

  def device_batches(self, begin: int, k: int) -> tuple[Any, jax.Array]:
    """The chunk program's batches of steps [begin, begin + k): `(train_data, indices)`, the
    training set already on the devices and `host_indices` placed on the mesh, split over the
    `data` axis. Only the indices travel: a tenth of the bytes of classic's batches, and no
    gather on the host."""
    sharding = NamedSharding(self.mesh, P(None, None, "data"))
    return self.train_data, to_global(self.host_indices(begin, k), sharding)

  def run_chunk(self, pop: Population, batches: tuple[Any, jax.Array]):
    """Dispatches one chunk on `device_batches` (compiling at the first call of its length)."""
    k = batches[1].shape[1]
    return self.chunk(k, pop, self.hparams, self.replicate, self.active, batches)
