"""Builds the optimizer of a config from a pytree of (possibly traced) hyperparameter values.

The trainer and the sweep driver use this module, and only this one, to make optimizers. The
config's `optimizer` group fixes the structure (optimizer family, Nesterov and centered switches,
schedule shape); the numbers come separately as `hparams`, a mapping of 0-d arrays, so that a
sweep can `jax.vmap` over them and compile one program for all its points:

  hparams = factory.hparams_from_config(config.optimizer)        # float32 0-d arrays
  tx = factory.build(config.optimizer, hparams, total_steps)     # hparams may be tracers

The state structure of `build(...)` depends only on the config, never on a value: SGD and RMSprop
always carry a momentum buffer (momentum 0.0 gives plain SGD exactly), and the learning rate is
always a schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from jaxopt_lab.optim import _checks, alias, clipping, schedules

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'rmsprop')
SCHEDULES = ('constant', 'cosine', 'wsd')
DECAY_MASKS = ('all', 'matrices')
VALUE_FACTORS = (
    'learning_rate', 'b1', 'b2', 'eps', 'momentum', 'decay', 'weight_decay', 'warmup', 'clip_norm')

_SPECIFIC = {
    'sgd': ('momentum',),
    'adam': ('b1', 'b2', 'eps'),
    'adamw': ('b1', 'b2', 'eps', 'weight_decay'),
    'rmsprop': ('decay', 'eps', 'momentum'),
}
_ALWAYS = ('learning_rate', 'warmup', 'clip_norm')

# Valid range of each value factor (see `_checks`). `warmup` is a fraction of the total steps;
# `clip_norm` <= 0 or inf switches clipping off, so any number but NaN is valid.
_KIND = {
    'learning_rate': 'nonnegative',
    'b1': 'unit_open',
    'b2': 'unit_open',
    'eps': 'nonnegative',
    'momentum': 'unit_open',
    'decay': 'unit_closed',
    'weight_decay': 'nonnegative',
    'warmup': 'unit_closed',
    'clip_norm': 'any',
}


def default_config() -> ml_collections.ConfigDict:
  """The `optimizer` group of an experiment config, with defaults (Adam at 1e-3, no schedule)."""
  c = ml_collections.ConfigDict()
  # Structure: one compiled program per distinct combination of these.
  c.name = 'adam'  # One of OPTIMIZERS: 'sgd', 'adam', 'adamw', 'rmsprop'.
  c.nesterov = False  # Nesterov momentum (sgd, rmsprop; NAdam(W) for adam, adamw).
  c.centered = False  # rmsprop only: divide by the standard deviation instead of the RMS.
  c.schedule = 'constant'  # One of SCHEDULES: 'constant', 'cosine', 'wsd' (all after warmup).
  c.decay_fraction = 0.2  # 'wsd': fraction of the total steps spent in the final linear decay.
  c.end_factor = 0.0  # 'cosine', 'wsd': final learning rate as a fraction of the peak.
  # adamw: which parameters weight decay shrinks, one of DECAY_MASKS: 'all' (Optax's default) or
  # 'matrices' (leaves of 2+ dimensions: weights and embeddings, not biases or norm scales).
  c.decay_mask = 'all'
  # Values: may differ between the points of one compiled sweep.
  c.learning_rate = 1e-3  # Peak learning rate (after warmup), >= 0.
  c.b1 = 0.9  # adam, adamw: first-moment decay, in [0, 1).
  c.b2 = 0.999  # adam, adamw: second-moment decay, in [0, 1).
  c.eps = 1e-8  # adam, adamw, rmsprop: denominator constant, >= 0.
  c.momentum = 0.0  # sgd, rmsprop: momentum in [0, 1); 0 is plain SGD / RMSprop.
  c.decay = 0.9  # rmsprop: decay of the squared-gradient average, in [0, 1].
  c.weight_decay = 1e-4  # adamw: decoupled weight decay (multiplied by the learning rate), >= 0.
  c.warmup = 0.0  # Linear warmup length as a fraction of the total steps, in [0, 1].
  c.clip_norm = 0.0  # Clip gradients to this global norm; <= 0 (or inf) is off.
  return c


def _name(opt_cfg: Any) -> str:
  name = _field(opt_cfg, 'name')
  if name not in OPTIMIZERS:
    raise ValueError(
        f'optimizer.name: unknown optimizer {name!r}; valid choices: {", ".join(OPTIMIZERS)}')
  return name


def _field(opt_cfg: Any, field: str) -> Any:
  try:
    return getattr(opt_cfg, field)
  except AttributeError as e:
    raise ValueError(f'optimizer.{field} is missing from the config') from e


def hparam_names(name: str) -> tuple[str, ...]:
  """The value factors that optimizer `name` uses, in the order of `VALUE_FACTORS`.

  Args:
    name: one of `OPTIMIZERS`.

  Returns:
    learning_rate, warmup and clip_norm, plus momentum (sgd); b1, b2, eps (adam); b1, b2, eps,
    weight_decay (adamw); decay, eps, momentum (rmsprop).

  Raises:
    ValueError: for an unknown name.
  """
  if name not in OPTIMIZERS:
    raise ValueError(
        f'optimizer.name: unknown optimizer {name!r}; valid choices: {", ".join(OPTIMIZERS)}')
  used = set(_ALWAYS) | set(_SPECIFIC[name])
  return tuple(f for f in VALUE_FACTORS if f in used)


def hparams_from_config(opt_cfg: Any) -> dict[str, np.ndarray]:
  """Reads the value factors of `opt_cfg.name` from the config, as float32 0-d NumPy arrays.

  Args:
    opt_cfg: the optimizer config (see `default_config`).

  Returns:
    `{name: np.ndarray(shape=(), dtype=float32)}` for each of `hparam_names(opt_cfg.name)`.

  Raises:
    ValueError: naming `optimizer.<field>` for an unknown optimizer, a missing field, a value
      that is not a single number, or one out of its range.
  """
  out = {}
  for field in hparam_names(_name(opt_cfg)):
    label = f'optimizer.{field}'
    value = _field(opt_cfg, field)
    if isinstance(value, bool) or _checks.concrete_values(value, label) is None:
      raise ValueError(f'{label} must be a number, got {value!r}')
    array = np.asarray(value, dtype=np.float32)
    if array.shape:
      raise ValueError(f'{label} must be a single number, got shape {array.shape}')
    _checks.check(value, label, _KIND[field])
    out[field] = array
  return out


def _schedule(opt_cfg: Any, peak: jax.typing.ArrayLike, warmup_steps: jax.typing.ArrayLike,
              total_steps: int) -> schedules.Schedule:
  kind = _field(opt_cfg, 'schedule')
  if kind == 'constant':
    # Linear warmup, then the peak until (and after) total_steps.
    return schedules.warmup_stable_decay_schedule(
        peak, warmup_steps, total_steps, decay_steps=0, end_value=peak)
  if kind not in SCHEDULES:
    raise ValueError(
        f'optimizer.schedule: unknown schedule {kind!r}; valid choices: {", ".join(SCHEDULES)}')
  end_factor = _field(opt_cfg, 'end_factor')
  _checks.check(end_factor, 'optimizer.end_factor', 'nonnegative')
  end_value = end_factor * peak
  if kind == 'cosine':
    return schedules.warmup_cosine_decay_schedule(
        peak, warmup_steps, total_steps, end_value=end_value)
  decay_fraction = _field(opt_cfg, 'decay_fraction')
  _checks.check(decay_fraction, 'optimizer.decay_fraction', 'unit_closed')
  return schedules.warmup_stable_decay_schedule(
      peak, warmup_steps, total_steps, decay_steps=decay_fraction * total_steps,
      end_value=end_value)


def _matrices(params: Any) -> Any:
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _decay_mask(opt_cfg: Any) -> Any:
  """`optimizer.decay_mask` as AdamW's `mask`: None (every leaf) or a function of the params."""
  kind = _field(opt_cfg, 'decay_mask')
  if kind not in DECAY_MASKS:
    raise ValueError(f'optimizer.decay_mask: unknown mask {kind!r}; valid choices: '
                     f'{", ".join(DECAY_MASKS)}')
  return None if kind == 'all' else _matrices


def build(
    opt_cfg: Any,
    hparams: Mapping[str, jax.typing.ArrayLike],
    total_steps: int,
) -> optax.GradientTransformation:
  """The config's optimizer: `chain(clip_by_global_norm, <optimizer>(learning_rate=<schedule>))`.

  Args:
    opt_cfg: the optimizer config; supplies the structure (name, nesterov, centered, schedule,
      decay_fraction, end_factor, decay_mask). Its numeric fields are not read here.
    hparams: the values of `hparam_names(opt_cfg.name)` (other keys are ignored): numbers,
      arrays or tracers. The peak learning rate is `hparams['learning_rate']`, the warmup lasts
      `hparams['warmup'] * total_steps` steps, and gradients are clipped to global norm
      `hparams['clip_norm']` (<= 0 is off).
    total_steps: the length of training, > 0; the cosine and WSD decays end there.

  Returns:
    An `optax.GradientTransformation` whose state structure depends only on `opt_cfg`.

  Raises:
    ValueError: naming the field for an unknown optimizer or schedule, a missing hyperparameter,
      a non-positive `total_steps`, or a concrete value out of range.
  """
  name = _name(opt_cfg)
  if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or (
      total_steps <= 0):
    raise ValueError(f'total_steps must be a positive integer, got {total_steps!r}')
  total_steps = int(total_steps)
  needed = hparam_names(name)
  missing = [k for k in needed if k not in hparams]
  if missing:
    raise ValueError(
        f'hparams: missing {", ".join(missing)} for optimizer {name!r}; it needs '
        f'{", ".join(needed)}')
  hp = {k: hparams[k] for k in needed}
  for k, v in hp.items():
    _checks.check(v, f'hparams[{k!r}]', _KIND[k])

  lr = _schedule(opt_cfg, hp['learning_rate'], hp['warmup'] * total_steps, total_steps)
  mask = _decay_mask(opt_cfg)  # checked for every optimizer, used by adamw
  nesterov = bool(_field(opt_cfg, 'nesterov'))
  if name == 'sgd':
    opt = alias.sgd(lr, momentum=hp['momentum'], nesterov=nesterov)
  elif name == 'adam':
    opt = alias.adam(lr, b1=hp['b1'], b2=hp['b2'], eps=hp['eps'], nesterov=nesterov)
  elif name == 'adamw':
    opt = alias.adamw(lr, b1=hp['b1'], b2=hp['b2'], eps=hp['eps'],
                      weight_decay=hp['weight_decay'], mask=mask,
                      nesterov=nesterov)
  else:
    opt = alias.rmsprop(lr, decay=hp['decay'], eps=hp['eps'],
                        centered=bool(_field(opt_cfg, 'centered')), momentum=hp['momentum'],
                        nesterov=nesterov)
  return optax.chain(clipping.clip_by_global_norm(hp['clip_norm']), opt)
