"""Before anything trains: a run's (every sweep group's) optimizer and task traced once, abstractly.

A researcher's optimizer or task that cannot run inside the compiled step (a Python `if` on a
traced value, a learning rate used as a number where it is a schedule, an `update` that returns
its state in other containers than `init`) would fail deep inside JAX, with a long traceback,
and in a sweep only when its group's turn comes: after earlier groups trained and the workdir was
written. `check_run` traces `init`, two training steps and the evaluation of one run with
`jax.eval_shape` (nothing is compiled or run: a second or two) and turns any failure into one
line naming the file and line of the user's code, the optimizer and task, and the likely cause;
the single run calls it before its workdir is prepared. `check` does so for each sweep group's
first point, and warns of groups that ignore a setting another group uses (`fairness`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxopt_lab import fairness, plugins, train
from jaxopt_lab.optim import factory

_TRACED = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
           jax.errors.TracerIntegerConversionError, jax.errors.TracerArrayConversionError)


class StateStructureChanged(TypeError):
  """`update` returned the optimizer state in other containers than `init` made."""


def check(groups: Sequence[Any]) -> None:
  """Traces every group's step and evaluation abstractly (`check_run`); raises one line on the
  first failure, prefixed `group <name>: `. Warns first of unfair comparisons (`fairness`).

  Args:
    groups: `programs.Group`s (their `name`, `config`, `task` and `hparams`).
  """
  for line in fairness.unfair({g.name: g.hparams for g in groups}):
    logging.warning('Fair comparison: %s.', line)
  for group in groups:
    check_run(group.config, group.task, list(group.hparams), f'group {group.name}: ')


def check_run(config: Any, task: Any, names: Sequence[str], prefix: str = '') -> None:
  """Traces one run's `init`, two steps and evaluation abstractly; one line on failure.

  Args:
    config: the run's config (its optimizer and train fields).
    task: its built task.
    names: the optimizer's value hyperparameters (traced, as a sweep passes them).
    prefix: put before the message (a sweep's group).

  Raises:
    ValueError: one line: `<prefix><file>:<line>: optimizer <name> on task <name> fails
      when traced before training (<error>); likely cause: <cause>`.
  """
  try:
    _trace(config, task, list(names))
  except Exception as e:  # a user's code: any failure is reported as one line
    name = config.optimizer.name
    raise ValueError(
        f'{prefix}{_location(e, name)}optimizer {name!r} on task {config.task!r} fails when '
        f'traced before training ({_first_line(e)}); likely cause: {_cause(e)}') from None


def _trace(cfg: Any, task: Any, names: list[str]) -> None:
  """`init`, two steps (with and without the log metrics) and the evaluation, abstractly."""
  hparams = {name: jax.ShapeDtypeStruct((), np.float32) for name in names}
  batch = jax.tree.map(lambda x: x[0], task.train_batches(0, 0, 1))
  step = train.make_train_step(task, cfg)

  def two_steps(hp, seed, batch):
    state = train.init_state(task, cfg, hp, seed)
    first, _ = step(state, batch, hp, True)
    return state, first, step(first, batch, hp, False)[0]

  start, first, _ = jax.eval_shape(two_steps, hparams, jax.ShapeDtypeStruct((), np.int32), batch)
  if jax.tree.structure(start.opt_state) != jax.tree.structure(first.opt_state):
    raise StateStructureChanged(
        f'update returned its state with a '
        f'{_difference(start.opt_state, first.opt_state) or "different structure"}')
  for data in task.eval_data.values():
    jax.eval_shape(task.eval_metrics, start.params, data)


def _difference(old: Any, new: Any) -> str | None:
  """Where `new`'s containers first differ from `old`'s: 'tuple where init made list'."""
  containers = (list, tuple, dict)
  if type(old) is not type(new) and (isinstance(old, containers) or isinstance(new, containers)):
    return f'{type(new).__name__} where init made {type(old).__name__}'
  if isinstance(old, (list, tuple)) and len(old) == len(new):
    return next((d for d in map(_difference, old, new) if d), None)
  if isinstance(old, dict) and old.keys() == new.keys():
    return next((d for k in old if (d := _difference(old[k], new[k]))), None)
  return None


def _location(error: BaseException, opt_name: str) -> str:
  """The user's frame of `error`, else the line that defines the optimizer's builder."""
  where = plugins.user_frame(error)
  if where:
    return where
  builder = factory.resolve(opt_name).builder
  try:
    path = plugins.short_path(inspect.getsourcefile(builder))
    return f'{path}:{builder.__code__.co_firstlineno}: '
  except (TypeError, AttributeError):
    return ''


def _first_line(error: BaseException) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else ''
  return f'{type(error).__name__}: {text[:200]}'


def _cause(error: BaseException) -> str:
  text = str(error)
  if isinstance(error, StateStructureChanged) or 'structure' in text or 'pytree' in text.lower():
    return ('the optimizer state changed structure between init and update (a list vs a '
            'tuple?): return the state in the same containers init made')
  if isinstance(error, _TRACED):
    return ('a Python `if`, float() or int() on a traced value (in a sweep every hyperparameter '
            'and the learning rate are arrays): use jnp.where / jax.lax.cond, or declare the '
            'value a structural flag (registry.Flag)')
  if "'function'" in text or 'not callable' in text:
    return ('the learning rate used as a number where it is a schedule, or called where it is a '
            'number: annotate `learning_rate` as a number to receive one at each step, or as '
            'optax.ScalarOrSchedule to receive the schedule (README, "Bring your own optimizer")')
  return 'an error in the code at that line (run it on concrete arrays to see it plainly)'
