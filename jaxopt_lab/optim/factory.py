"""Builds the optimizer of a config from a pytree of (possibly traced) hyperparameter values.

The trainer and the sweep driver use this module, and only this one, to make optimizers. The
config's `optimizer` group fixes the structure (the optimizer, its flags, the schedule's shape);
the numbers come separately as `hparams`, a mapping of 0-d arrays, so that a sweep can `jax.vmap`
over them and compile one program for all its points:

  hparams = factory.hparams_from_config(config.optimizer)        # float32 0-d arrays
  tx = factory.build(config.optimizer, hparams, total_steps)     # hparams may be tracers

Which numbers are values and which settings are flags comes from the optimizer's declaration in
`registry` (built-ins and plugins alike); the factory adds what every optimizer has: a learning
rate schedule with warmup, and gradient clipping. The state structure of `build(...)` depends only
on the config, never on a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

from jaxopt_lab import plugins
from jaxopt_lab.optim import _checks, clipping, registry, schedules

SCHEDULES = ('constant', 'cosine', 'wsd')
# Value hyperparameters of every optimizer, owned by the factory (not the builder): `warmup` is
# a fraction of the total steps; `clip_norm` <= 0 or inf switches clipping off.
COMMON_VALUES = (
    registry.Value('warmup', 0.0, low=0.0, high=1.0),
    registry.Value('clip_norm', 0.0),
)
_MISSING = object()


def value_factors() -> tuple[str, ...]:
  """Value hyperparameters of every known optimizer (built-ins, plugins loaded so far), in order
  of declaration, then the factory's (`warmup`, `clip_norm`)."""
  names = [v.name for o in registry.known() for v in o.values]
  names += [v.name for v in COMMON_VALUES]
  return tuple(dict.fromkeys(names))


def declared_scale(name: str) -> str:
  """The sweep scale ('log' or 'linear') declared for value `name` by the first known optimizer
  that has it ('linear' for warmup, clip_norm)."""
  for value in (*(v for o in registry.known() for v in o.values), *COMMON_VALUES):
    if value.name == name:
      return value.scale
  return 'linear'


def flag_names() -> tuple[str, ...]:
  """Structural flags of every known optimizer, in order of declaration, then 'schedule'."""
  return tuple(dict.fromkeys([f.name for o in registry.known() for f in o.flags] + ['schedule']))


def resolve(name: Any) -> registry.Optimizer:
  """The declaration of `optimizer.name` (loads a plugin the first time it is named)."""
  return registry.resolve(name, 'optimizer.name')


def _field(opt_cfg: Any, field: str, default: Any = _MISSING) -> Any:
  value = getattr(opt_cfg, field, default)
  if value is _MISSING:
    raise ValueError(f'optimizer.{field} is missing from the config')
  return value


def _values(optimizer: registry.Optimizer) -> tuple[registry.Value, ...]:
  return optimizer.values + COMMON_VALUES


def hparam_names(name: str) -> tuple[str, ...]:
  """The value hyperparameters of optimizer `name`: its declared values, then warmup, clip_norm.

  Args:
    name: a registered name or a plugin spec (see `registry.resolve`).

  Raises:
    ValueError: for an unknown name or a plugin that fails to load.
  """
  return tuple(v.name for v in _values(registry.resolve(name, 'optimizer.name')))


def hparams_from_config(opt_cfg: Any) -> dict[str, np.ndarray]:
  """Reads the value hyperparameters of `opt_cfg.name` as float32 0-d NumPy arrays.

  A hyperparameter without a field of its name in the config takes its declared default.

  Args:
    opt_cfg: the optimizer config (see `defaults.optimizer_config`).

  Returns:
    `{name: np.ndarray(shape=(), dtype=float32)}` for each of `hparam_names(opt_cfg.name)`.

  Raises:
    ValueError: naming `optimizer.<field>` for an unknown optimizer, a value that is not a
      single number, or one out of its declared range (named with the range).
  """
  optimizer = resolve(_field(opt_cfg, 'name'))
  _check_field_names(opt_cfg, optimizer)
  out = {}
  for spec in _values(optimizer):
    label = f'optimizer.{spec.name}'
    value = _field(opt_cfg, spec.name, spec.default)
    if isinstance(value, bool) or value is None or _checks.concrete_values(value, label) is None:
      raise ValueError(f'{label} must be a number, got {value!r}')
    array = np.asarray(value, dtype=np.float32)
    if array.shape:
      raise ValueError(f'{label} must be a single number, got shape {array.shape}')
    spec.check(value, label)
    out[spec.name] = array
  return out


STRUCTURE = ('name', 'schedule', 'decay_fraction', 'end_factor')


def _check_field_names(opt_cfg: Any, optimizer: registry.Optimizer) -> None:
  """A field that no known optimizer reads is a typo (the `optimizer` group is not locked)."""
  if not hasattr(opt_cfg, 'keys'):
    return
  known = set(STRUCTURE) | set(value_factors()) | set(flag_names())
  known |= set(optimizer.value_names) | {f.name for f in optimizer.flags}
  unknown = sorted(set(opt_cfg.keys()) - known)
  if unknown:
    raise ValueError(f'optimizer.{unknown[0]}: no known optimizer has this field; '
                     f'{optimizer.name!r} reads: {", ".join(hparam_names(optimizer.name))}, '
                     f'{", ".join([*STRUCTURE, *(f.name for f in optimizer.flags)])}')


def _flags(opt_cfg: Any, optimizer: registry.Optimizer) -> dict[str, Any]:
  """The optimizer's flags from the config (declared defaults where absent), checked.

  A field that is a flag with choices of any known optimizer is checked too, so a setting that
  no optimizer of the sweep could accept (`decay_mask='bias'`) fails for every optimizer.
  """
  own = {f.name for f in optimizer.flags}
  for other in registry.known():
    for flag in other.flags:
      value = _field(opt_cfg, flag.name, None)
      if flag.name not in own and flag.choices is not None and value is not None:
        flag.check(value, f'optimizer.{flag.name}')
  out = {}
  for flag in optimizer.flags:
    value = _field(opt_cfg, flag.name, flag.default)
    flag.check(value, f'optimizer.{flag.name}')
    out[flag.name] = value
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


def build(
    opt_cfg: Any,
    hparams: Mapping[str, jax.typing.ArrayLike],
    total_steps: int,
    cooldown: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] | None = None,
) -> optax.GradientTransformation:
  """The config's optimizer: `chain(clip_by_global_norm, <optimizer>(learning_rate=<schedule>))`.

  Args:
    opt_cfg: the optimizer config; supplies the structure (name, the optimizer's flags,
      schedule, decay_fraction, end_factor). Its numeric fields are not read here.
    hparams: the values of `hparam_names(opt_cfg.name)` (other keys are ignored): numbers,
      arrays or tracers. The peak learning rate is `hparams['learning_rate']`, the warmup lasts
      `hparams['warmup'] * total_steps` steps, and gradients are clipped to global norm
      `hparams['clip_norm']` (<= 0 is off).
    total_steps: the length of training, > 0; the cosine and WSD decays end there.
    cooldown: None, or `(start, steps)`: the schedule decays linearly to zero from its value at
      step `start` over `steps` steps (`schedules.with_cooldown`; both may be traced): a
      successive-halving rung's cooldown fork (`sweep.adaptive.ranking`).

  Returns:
    An `optax.GradientTransformation` whose state structure depends only on `opt_cfg`.

  Raises:
    ValueError: naming the field for an unknown optimizer, flag or schedule, a missing
      hyperparameter, a non-positive `total_steps`, a concrete value out of range, or a builder
      that returns no GradientTransformation.
  """
  optimizer = resolve(_field(opt_cfg, 'name'))
  if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or (
      total_steps <= 0):
    raise ValueError(f'total_steps must be a positive integer, got {total_steps!r}')
  total_steps = int(total_steps)
  specs = _values(optimizer)
  missing = [v.name for v in specs if v.name not in hparams]
  if missing:
    raise ValueError(
        f'hparams: missing {", ".join(missing)} for optimizer {optimizer.name!r}; it needs '
        f'{", ".join(v.name for v in specs)}')
  hp = {v.name: hparams[v.name] for v in specs}
  for spec in specs:
    spec.check(hp[spec.name], f'hparams[{spec.name!r}]')
  flags = _flags(opt_cfg, optimizer)
  lr = _schedule(opt_cfg, hp['learning_rate'], hp['warmup'] * total_steps, total_steps)
  if cooldown is not None:
    lr = schedules.with_cooldown(lr, *cooldown)
  values = {k: hp[k] for k in optimizer.value_names}
  if optimizer.schedule:
    opt = optimizer.build(lr, values, flags)
  else:  # a builder that takes a number: rebuilt at each step with the schedule's value there
    optimizer.build(hp['learning_rate'], values, flags)  # checked now, not at the first step
    opt = optax.inject_hyperparams(
        lambda learning_rate: optimizer.build(learning_rate, values, flags))(learning_rate=lr)
  return optax.chain(clipping.clip_by_global_norm(hp['clip_norm']), opt)


def check_traceable(opt_cfg: Any, total_steps: int) -> None:
  """Raises a one-line ValueError if a value hyperparameter cannot be traced.

  A sweep passes every value hyperparameter as a traced array; one that the builder uses in
  Python control flow (`if beta > 0.5:`) would fail deep inside the compiled step. This traces
  one update abstractly (`jax.eval_shape`, nothing runs) with all values traced, and on failure
  once per value, to name the culprit.

  Raises:
    ValueError: naming `optimizer.<value>` and saying to declare it a structural flag.
  """
  hp = hparams_from_config(opt_cfg)
  params = {'w': jax.ShapeDtypeStruct((2, 3), np.float32), 'b': jax.ShapeDtypeStruct((3,),
                                                                                   np.float32)}

  def one_update(traced, fixed, p):
    tx = build(opt_cfg, {**fixed, **traced}, total_steps)
    return tx.update(p, tx.init(p), p)

  def fails(names):
    traced = {k: hp[k] for k in names}
    fixed = {k: float(v) for k, v in hp.items() if k not in names}
    try:
      jax.eval_shape(lambda t, p: one_update(t, fixed, p), traced, params)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
            jax.errors.TracerIntegerConversionError) as e:
      return e
    except ValueError:  # our own one-line errors (a builder returning no transformation)
      raise
    except Exception:  # noqa: BLE001  (not a traced value's: the sweep's preflight names it)
      return None
    return None

  if fails(tuple(hp)) is None:
    return
  optimizer = resolve(_field(opt_cfg, 'name'))
  for name in hp:
    error = fails((name,))
    if error is not None:
      raise ValueError(
          f'optimizer.{name}: {plugins.user_frame(error)}{optimizer.name!r} uses value '
          f'hyperparameter {name!r} in Python control flow (a Python `if` on a traced value), '
          'so a sweep cannot vmap it; declare it structural '
          f'(registry.Flag({name!r}, ...)) or compute with it as an array '
          f'({type(error).__name__})')
  raise ValueError(f'optimizer.name: {optimizer.name!r} cannot be traced with its values as '
                   'arrays; declare the ones it branches on as structural (registry.Flag)')
