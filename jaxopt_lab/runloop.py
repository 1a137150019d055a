"""ONE training loop for a single run and for a group of points of a sweep.

The loop owns what both share: the chunk boundaries (`chunk_ends`), the late fetch, the log rows
of the per-step metrics (`MetricMeans`: the loss's mean over the interval, the others at its last
step), the cadence of log rows, evaluations, file writes and checkpoints, the progress line and
the position an interrupt reports. What differs between a
single run (one point, rows in `metrics.jsonl`, a non-finite loss stops it) and a sweep group (a
population, rows in the store, a diverged point freezes) is a `Job` it is given.

The late fetch: chunk i + 1 is dispatched before the metrics of chunk i are fetched, and the
batches of chunk i + 2 are built and placed while the device computes, so the host's work overlaps
the device's (nanodo's loop fetches one step late the same way). The loop waits for the device
only where it must write: at a log, evaluation or checkpoint step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import ml_collections
import numpy as np

from jaxopt_lab import checkpoints


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message says where it stopped and that the same command resumes.

  Every file was written atomically and checkpoints are synchronous, so the workdir is
  consistent: a rerun resumes from the last checkpoint as after a kill.
  """


class TrainingDiverged(RuntimeError):
  """Raised by the single run's job when the training loss becomes non-finite."""


@dataclasses.dataclass
class Position:
  """Where a training loop is, for the line that reports an interrupt."""

  step: int = 0  # the step the state reached
  checkpoints: str = ""  # the loop's checkpoint directory, once it has one

  def interrupted(self, of: str) -> Interrupted:
    """The error to raise on Ctrl-C; `of` completes "at step N ...", e.g. "of 1000"."""
    # From the disk: an interrupt may come while a save finishes (orbax renames a complete one).
    saved = (max((int(d) for d in os.listdir(self.checkpoints) if d.isdigit()), default=0)
             if os.path.isdir(self.checkpoints) else 0)
    where = f"last checkpoint: step {saved}" if saved else "no checkpoint yet"
    return Interrupted(f"interrupted at step {self.step} {of} ({where}); run the same command "
                       "to resume")


def chunk_ends(start: int, total: int, every: tuple[int, ...]) -> Iterator[int]:
  """Ends of the compiled calls from `start` to `total`: a call stops at each multiple of `every`.

  The boundaries depend on absolute step numbers only, so a resumed run makes the same calls as an
  uninterrupted one.
  """
  step = start
  while step < total:
    step = min([total] + [(step // e + 1) * e for e in every if e > 0])
    yield step


# Training metrics whose log row holds the mean over the log interval's steps; a row holds every
# other training metric (the task's extra training metrics, e.g. `accuracy`, and `grad_norm`,
# `update_norm`, `param_norm`) at the interval's last step, the only step that computes them
# (`train.make_train_step`).
AVERAGED = ("loss",)


@dataclasses.dataclass
class MetricMeans:
  """A log row's training metrics from the per-step metrics of its interval's chunks.

  The `AVERAGED` ones: float64 sums since the last row, divided at `pop`. The others: the last
  step's values (each chunk ends at its last step; the interval's last chunk ends at the row).
  Per point when metrics are [K, P].
  """

  sums: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  last: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  count: int = 0

  def add(self, metrics: Mapping[str, np.ndarray]) -> None:
    """Adds metrics stacked on a leading step axis."""
    for name, values in metrics.items():
      if name in AVERAGED:
        self.sums[name] = self.sums.get(name, 0.0) + np.sum(values, axis=0, dtype=np.float64)
      else:
        self.last[name] = np.asarray(values[-1], np.float64)
    self.count += len(next(iter(metrics.values())))

  def pop(self) -> dict[str, np.ndarray]:
    row = {name: total / self.count for name, total in self.sums.items()}
    row.update(self.last)
    self.sums, self.last, self.count = {}, {}, 0
    return row


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
  """The progress line: at most one every `every` seconds, and always the last one.

  Rates count training only: the seconds spent compiling (the job's `compile_seconds`) and saving
  checkpoints (`exclude`) are left out, so the first line after a compile is not the compile's
  rate. The ETA divides the work left (this loop's and `later` points x steps after it, e.g. the
  sweep's next groups) by this loop's training rate so far, so it leaves out their compiles.
  """

  def __init__(self, label: str, total: int, points: int, *, tokens_per_step: int | None = None,
               flops_per_step: float | None = None, peak: float | None = None, later: int = 0,
               every: float = 5.0, started: float | None = None,
               clock: Callable[[], float] = time.perf_counter):
    """`label` opens each line (e.g. "group 2/3 optimizer=adam"); `started` is the `clock` time
    the elapsed time counts from (default: now)."""
    self.clock = clock
    self.label, self.total, self.points, self.later, self.every = label, total, points, later, every
    self.tokens, self.flops, self.peak = tokens_per_step, flops_per_step, peak
    self.started = clock() if started is None else started
    self.start(0, 0.0)

  def start(self, step: int, compile_seconds: float) -> None:
    """Counts rates from here: the loop's first step, and the job's compile seconds so far."""
    now = self.clock()
    self._first = self._step = step
    self._t0 = self._t = now
    self._excluded = self._excluded_total = 0.0
    self._compile = compile_seconds
    self._printed = -float("inf")

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (a checkpoint save) out of the rates."""
    self._excluded += seconds
    self._excluded_total += seconds

  def update(self, step: int, text: str, compile_seconds: float) -> str | None:
    """Logs a line after `step` (with the job's `text`) when due; returns it, or None."""
    compiled = compile_seconds - self._compile
    self._compile = compile_seconds
    self._excluded += compiled
    self._excluded_total += compiled
    now = self.clock()
    if step < self.total and now - self._printed < self.every:
      return None
    busy = max(now - self._t - self._excluded, 1e-9)
    rate = self.points * (step - self._step) / busy  # points x steps/s since the last line
    overall = self.points * (step - self._first) / max(now - self._t0 - self._excluded_total, 1e-9)
    self._t, self._step, self._excluded, self._printed = now, step, 0.0, now
    filled = int(20 * step / self.total)
    parts = [f"{self.label}[{'#' * filled}{'.' * (20 - filled)}] step {step}/{self.total}", text,
             f"{rate:,.1f} {'steps/s' if self.points == 1 else 'points x steps/s'}"]
    if self.tokens and rate:
      parts.append(f"{rate * self.tokens:,.0f} tok/s")
    if self.flops and rate:
      achieved = rate * self.flops
      parts.append(f"{achieved / 1e9:,.3g} GFLOP/s")
      if self.peak:
        parts.append(f"MFU {100 * achieved / self.peak:.1f}%")
    left = self.points * (self.total - step) + self.later
    parts.append(f"elapsed {_hms(now - self.started)}")
    if left and overall > 0:
      parts.append(f"ETA {_hms(left / overall)}")
    line = " | ".join(parts)
    logging.info(line)
    return line


class ChunkProgram:
  """A jitted chunk-of-steps function, compiled ahead of its first call at each chunk length.

  Compiling explicitly (the same program `jit` would build) lets the loop time the compiles and
  leave them out of its rates. `compiled[k]` is the program of chunks of `k` steps.
  """

  def __init__(self, fn: Any):
    self.fn = fn
    self.compiled: dict[int, Any] = {}
    self.compile_seconds = 0.0

  def __call__(self, k: int, *args: Any) -> Any:
    """Runs the program of `k` steps on `args`, compiling it first if this is the first call."""
    if k not in self.compiled:
      start = time.perf_counter()
      self.compiled[k] = self.fn.lower(*args).compile()
      self.compile_seconds += time.perf_counter() - start
    return self.compiled[k](*args)


class Job(Protocol):
  """What the loop trains: one point (`single.train`) or a group's population (the sweep)."""

  compile_seconds: float  # seconds spent compiling so far (left out of the progress rates)

  def batches(self, begin: int, end: int) -> Any:
    """The training batches of steps [begin, end), built on the host and placed on the devices."""

  def run(self, state: Any, batches: Any, begin: int, end: int) -> tuple[Any, Any]:
    """Dispatches the chunk [begin, end); returns the new state and the per-step metrics."""

  def fetch(self, end: int, metrics: Any) -> dict[str, np.ndarray]:
    """The chunk's metrics on the host, stacked on a leading step axis; may raise (divergence)."""

  def log(self, step: int, means: dict[str, np.ndarray], state: Any) -> str:
    """Records the training row(s) of the metric means; returns the progress line's text."""

  def evaluate(self, step: int, state: Any) -> None:
    """Evaluates the held-out splits and records their rows."""

  def write(self, step: int, state: Any, seconds: float) -> None:
    """Writes the recorded rows; `seconds`: wall time since the loop's first chunk."""


def run(job: Job, state: Any, start: int, config: ml_collections.ConfigDict,
        ckpt: checkpoints.Checkpointer, where: Position, progress: Progress) -> Any:
  """Trains `state` from step `start` to `config.train.steps`; returns the final state.

  Evaluates at step 0 (the reference of every curve) when starting from scratch; then, at the
  multiples of `train.log_every` a row of training metrics (`MetricMeans`), of
  `train.eval_every` an evaluation, at either of them the files, at the multiples of
  `train.checkpoint_every` a checkpoint, and all of them at the last step. `where.step` follows
  the dispatched chunks.
  """
  tc = config.train
  total = tc.steps
  if start == 0:
    job.evaluate(0, state)
  ends = list(chunk_ends(start, total, (tc.steps_per_call, tc.log_every, tc.eval_every,
                                        tc.checkpoint_every)))
  where.step = start
  if not ends:
    return state
  acc = MetricMeans()
  progress.start(start, job.compile_seconds)
  started = time.perf_counter()
  pending = None
  begin, batches = start, job.batches(start, ends[0])
  for i, end in enumerate(ends):
    state, metrics = job.run(state, batches, begin, end)
    begin = where.step = end
    if i + 1 < len(ends):  # the host builds the next chunk while the device computes this one
      batches = job.batches(end, ends[i + 1])
    if pending is not None:  # then fetches the previous chunk's metrics, done or nearly
      acc.add(job.fetch(*pending))
    pending = (end, metrics)
    log, ev = end % tc.log_every == 0 or end == total, end % tc.eval_every == 0 or end == total
    if log or ev:
      acc.add(job.fetch(*pending))
      pending = None
      if log:
        progress.update(end, job.log(end, acc.pop(), state), job.compile_seconds)
      if ev:
        job.evaluate(end, state)
      job.write(end, state, time.perf_counter() - started)
      if end % tc.checkpoint_every == 0 or end == total:
        saving = time.perf_counter()
        ckpt.save(end, state)
        progress.exclude(time.perf_counter() - saving)
  return state
