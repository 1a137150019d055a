"""TensorBoard event files of the metric rows, written as they are (`config.train.tensorboard`).

One TensorBoard run per point: `WORKDIR/tb/<point id>/` for a sweep, `WORKDIR/tb/` for a single
run; scalars tagged `<split>/<metric>` at their step, and the point's hyperparameters through
the HParams plugin. `tensorboard --logdir=WORKDIR/tb` shows the curves while the run trains.
Needs tensorboardX (the 'tb' extra). The writers are synchronous (no thread per point) and a
point's file is closed once rows of another group arrive, so a long sweep holds few files open.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from jaxopt_lab import expdir

_counter = itertools.count()


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming `train.tensorboard` when it is not a bool or tensorboardX is absent.

  Called before a run writes its workdir, so a refused start writes nothing.
  """
  value = config.train.tensorboard
  if not isinstance(value, bool):
    raise ValueError(f"train.tensorboard: must be True or False, got {value!r}")
  if value:
    try:
      import tensorboardX  # noqa: F401
    except ImportError:
      raise ValueError("train.tensorboard: needs tensorboardX; pip install 'jaxopt_lab[tb]' "
                       "(or set train.tensorboard=False)") from None


def _hparam(value: Any) -> bool | str | float | int:
  return value if isinstance(value, (bool, str, int, float)) else str(value)


class Writer:
  """Writes metric rows as scalars, one TensorBoard run per point (`RowListener`)."""

  def __init__(self, logdir: str, hparams: Mapping[Any, Mapping[str, Any]],
               metric_tags: Sequence[str]):
    """`hparams`: point id -> its hyperparameters (None: the single run, rows without "point")."""
    self.logdir, self.hparams, self.metric_tags = logdir, hparams, list(metric_tags)
    self._open: dict[Any, Any] = {}

  def _writer(self, point: Any, first_step: int):
    from tensorboardX import event_file_writer, summary
    from tensorboardX.proto import event_pb2

    if point in self._open:
      return self._open[point]
    folder = self.logdir if point is None else os.path.join(self.logdir, str(point))
    os.makedirs(folder, exist_ok=True)
    writer = event_file_writer.EventsWriter(
        os.path.join(folder, "events"), f".{os.getpid()}.{next(_counter)}")
    # A resumed run starts again after its checkpoint: TensorBoard drops the earlier events
    # at or past this step (rows a kill left past the checkpoint).
    writer.write_event(event_pb2.Event(
        step=first_step, wall_time=time.time(),
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    hp = {k: _hparam(v) for k, v in self.hparams.get(point, {}).items()}
    for s in summary.hparams(hp, dict.fromkeys(self.metric_tags, 0.0)):
      writer.write_event(event_pb2.Event(summary=s, wall_time=time.time()))
    self._open[point] = writer
    return writer

  def add_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
    from tensorboardX import summary
    from tensorboardX.proto import event_pb2

    points = {r.get("point") for r in rows}
    for point in [p for p in self._open if p not in points]:  # another group's: done for now
      self._open.pop(point).close()
    now = time.time()
    for row in rows:
      writer = self._writer(row.get("point"), int(row["step"]))
      for name, value in row.items():
        if name in expdir.METRIC_ROW_KEYS or not isinstance(value, (int, float)):
          continue
        writer.write_event(event_pb2.Event(
            step=int(row["step"]), wall_time=now,
            summary=summary.scalar(f"{row['split']}/{name}", float(value))))
    for writer in self._open.values():
      writer.flush()

  def close(self) -> None:
    for writer in self._open.values():
      writer.close()
    self._open.clear()


def _metric_tags(config: ml_collections.ConfigDict) -> list[str]:
  metric = config.sweep.metric if "sweep" in config else "loss"
  return ["train/loss", f"valid/{metric}", f"test/{metric}"]


def for_sweep(config: ml_collections.ConfigDict, workdir: str, points: Sequence[Any]
              ) -> Writer | None:
  """The writer of a sweep's points (`sweep.design.Point`s), or None when switched off."""
  validate(config)
  if not config.train.tensorboard:
    return None
  hparams = {p.point: {**p.structural, **p.values, "seed": p.seed, "replicate": p.replicate}
             for p in points}
  return Writer(os.path.join(workdir, expdir.TENSORBOARD_DIR), hparams, _metric_tags(config))


def for_run(config: ml_collections.ConfigDict, workdir: str, hparams: Mapping[str, Any]
            ) -> Writer | None:
  """The writer of a single run, or None when switched off."""
  validate(config)
  if not config.train.tensorboard:
    return None
  hp = {"optimizer": config.optimizer.name, "seed": int(config.seed),
        **{k: float(v) for k, v in hparams.items()}}
  return Writer(os.path.join(workdir, expdir.TENSORBOARD_DIR), {None: hp}, _metric_tags(config))
