"""The optimizer registry: every optimizer, built in or a user's, is a declaration.

A declaration names a builder that returns an `optax.GradientTransformation`, its **value
hyperparameters** (numbers: may be traced, so a sweep vmaps over them in one compilation; each
with a default, a valid range and the scale a sweep uses by default) and its **structural flags**
(bools, strings, ints: one compiled program per setting). The built-ins sgd, adam, adamw and
rmsprop are declared below with the same `declare` / `register` a user calls.

A config names an optimizer by a registered name or by a plugin spec, loaded when first named
(nothing is imported at start-up):

  'path/to/my_opt.py:lion'   an object in a Python file (relative to the current directory)
  'my_package.opts:lion'     an object in an importable module
  'optax:lion'               any Optax alias ('optax:contrib.schedule_free_adamw' for contrib)

The object is a declaration (`declare(...)`) or a plain factory function: its float keyword
arguments (with their defaults) are then its value hyperparameters and its bool / str / int
arguments its structural flags. Its first argument is `learning_rate`: annotated as a schedule
(`optax.ScalarOrSchedule`, a `Callable`) it receives the config's schedule (a function of the
step), as Optax's aliases accept; unannotated or annotated as a number it receives the
schedule's value at each step, a number (`-learning_rate * u` works).

Example (a user's file):

  def sign_momentum(learning_rate, beta=0.9):
    return optax.chain(optax.trace(decay=beta), optax.scale_by_sign(),
                       optax.scale_by_learning_rate(learning_rate))

  sign_momentum = registry.declare(sign_momentum, values=[
      registry.Value('beta', 0.9, low=0.0, high=1.0, include_high=False)])
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from jaxopt_lab import plugins
from jaxopt_lab.optim import _checks, alias, multipliers

SCALES = ('log', 'linear')
PLUGIN_FORMS = "'path/to/file.py:name', 'package.module:name' or 'optax:<alias>'"
# Names the factory owns for every optimizer: a declaration may not reuse them.
RESERVED = ('name', 'warmup', 'clip_norm', 'schedule', 'decay_fraction', 'end_factor')


@dataclasses.dataclass(frozen=True)
class Value:
  """A value hyperparameter: a number that may be traced (vmapped by a sweep).

  Attributes:
    name: the keyword argument of the builder and the config field `optimizer.<name>`.
    default: used when the config has no field of this name.
    low: lower end of the valid range (None: unbounded).
    high: upper end of the valid range (None: unbounded).
    include_low: whether `low` itself is valid.
    include_high: whether `high` itself is valid.
    scale: 'log' or 'linear', the scale a sweep over this value uses by default.
  """

  name: str
  default: float
  low: float | None = None
  high: float | None = None
  include_low: bool = True
  include_high: bool = True
  scale: str = 'linear'

  def __post_init__(self):
    if self.scale not in SCALES:
      raise ValueError(f'Value {self.name!r}: scale must be one of {", ".join(SCALES)}, '
                       f'got {self.scale!r}')
    if self.scale == 'log' and (self.low is None or self.low < 0):
      raise ValueError(f'Value {self.name!r}: a log scale needs low >= 0')

  @property
  def range_text(self) -> str:
    """The valid range as text: '[0, 1)', '>= 0', 'any number'."""
    if self.low is None and self.high is None:
      return 'any number (not NaN)'
    if self.high is None:
      return f'{">=" if self.include_low else ">"} {self.low:g}'
    if self.low is None:
      return f'{"<=" if self.include_high else "<"} {self.high:g}'
    return (f'in {"[" if self.include_low else "("}{self.low:g}, {self.high:g}'
            f'{"]" if self.include_high else ")"}')

  def check(self, value: Any, label: str) -> None:
    """Raises ValueError naming `label` and the range if a concrete `value` is outside it.

    Traced values and schedules are not checked (see `_checks.concrete_values`).
    """
    values = _checks.concrete_values(value, label)
    if values is None:
      return
    lo = -math.inf if self.low is None else self.low
    hi = math.inf if self.high is None else self.high
    ok = (values >= lo if self.include_low else values > lo) & (
        values <= hi if self.include_high else values < hi)  # NaN fails both.
    if not ok.all():
      bad = values[~ok] if values.ndim else values
      raise ValueError(f'{label} must be {self.range_text}, got {float(bad.ravel()[0])}')


@dataclasses.dataclass(frozen=True)
class Flag:
  """A structural flag: a bool, str or int fixed per compiled program (a sweep groups by it).

  Attributes:
    name: the keyword argument of the builder and the config field `optimizer.<name>`.
    default: used when the config has no field of this name.
    choices: the valid settings; None accepts any value of the default's type.
  """

  name: str
  default: bool | str | int
  choices: tuple[Any, ...] | None = None

  def check(self, value: Any, label: str) -> None:
    """Raises ValueError naming `label` and the valid choices for an invalid setting."""
    same_kind = isinstance(value, bool) == isinstance(self.default, bool) and isinstance(
        value, type(self.default))  # 1 == True, yet a flag of bools takes no int
    if self.choices is not None and (not same_kind or value not in self.choices):
      raise ValueError(f'{label}: unknown setting {value!r}; valid choices: '
                       f'{", ".join(map(str, self.choices))}')
    if not same_kind:
      raise ValueError(f'{label} must be a {type(self.default).__name__}, got {value!r}')


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A declared optimizer (see `declare`).

  Attributes:
    name: the registered name, or the spec that loaded it.
    builder: `builder(learning_rate, **values, **flags) -> optax.GradientTransformation`.
    values: value hyperparameters, `learning_rate` first.
    flags: structural flags.
    schedule: whether the builder takes `learning_rate` as a schedule (a function of the step,
      as Optax's aliases do); else it receives the schedule's value at each step, a 0-d array
      (the builder is called again at every step, as `optax.inject_hyperparams` does).
    mup_rule: which of μP's learning-rate rules its updates follow under
      `model.parametrization='mup'` (`multipliers.RULES`): 'adam' for updates invariant to the
      gradient's scale, 'sgd' for updates proportional to it (`optim.multipliers`).
  """

  name: str
  builder: Callable[..., optax.GradientTransformation]
  values: tuple[Value, ...]
  flags: tuple[Flag, ...]
  schedule: bool = True
  mup_rule: str = 'adam'

  @property
  def value_names(self) -> tuple[str, ...]:
    return tuple(v.name for v in self.values)

  def __call__(self, *args: Any, **kwargs: Any) -> optax.GradientTransformation:
    """Calls the builder: a declaration is still the optimizer's factory function."""
    return self.builder(*args, **kwargs)

  def build(self, learning_rate: Any, values: Mapping[str, Any],
            flags: Mapping[str, Any]) -> optax.GradientTransformation:
    """Calls the builder; raises a one-line ValueError if it returns no GradientTransformation."""
    kwargs = {k: v for k, v in values.items() if k != 'learning_rate'}
    tx = self.builder(learning_rate, **kwargs, **flags)
    if not isinstance(tx, optax.GradientTransformation):
      raise ValueError(f'optimizer.name: {self.name!r} returned {type(tx).__name__}, not an '
                       'optax.GradientTransformation')
    return tx


def _infer(builder: Callable[..., Any], where: str) -> tuple[list[Value], list[Flag], bool]:
  """Values and flags from a plain function's signature: floats are values, the rest flags."""
  try:
    params = list(inspect.signature(builder).parameters.values())
  except (TypeError, ValueError) as e:
    raise ValueError(f'{where}: {builder!r} has no inspectable signature ({e})') from e
  if not params or params[0].name != 'learning_rate':
    raise ValueError(f'{where}: the builder {getattr(builder, "__name__", builder)!r} must take '
                     "'learning_rate' as its first argument")
  lr = params[0]
  # A learning rate annotated as a schedule (optax.ScalarOrSchedule, optax.Schedule, a Callable)
  # receives the config's schedule; any other, or none (`-learning_rate * u`, as most papers'
  # code is written), receives its value at each step, a number (see `Optimizer.schedule`).
  annotation = str(lr.annotation)
  schedule = any(word in annotation for word in ('Callable', 'Schedule'))
  lr_default = lr.default if isinstance(lr.default, float) else 1e-3
  values = [Value('learning_rate', lr_default, low=0.0, scale='log')]
  flags = []
  for p in params[1:]:
    d = p.default
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or d is inspect.Parameter.empty:
      continue
    if isinstance(d, bool):
      flags.append(Flag(p.name, d, (False, True)))
    elif isinstance(d, float):
      values.append(Value(p.name, d))
    elif isinstance(d, int | str):
      flags.append(Flag(p.name, d))
  return values, flags, schedule


def declare(builder: Callable[..., optax.GradientTransformation], *, name: str | None = None,
            values: Sequence[Value] = (), flags: Sequence[Flag] = (),
            schedule: bool | None = None, mup_rule: str = 'adam') -> Optimizer:
  """Declares an optimizer: the builder's signature, refined by the given values and flags.

  Args:
    builder: `builder(learning_rate, **hyperparameters) -> optax.GradientTransformation`.
    name: its name (default: the builder's `__name__`).
    values: value hyperparameters with ranges and scales; they replace the ones of the same
      name read from the signature (float defaults), and a name given here that the signature
      reads as a flag becomes a value.
    flags: structural flags with choices; likewise replace the signature's.
    schedule: whether the builder takes `learning_rate` as a schedule (default: True when its
      annotation names a schedule or a Callable, as `optax.ScalarOrSchedule` does; False, a
      number at each step, when it is unannotated or a number).
    mup_rule: μP's learning-rate rule for its updates, 'adam' or 'sgd' (`Optimizer`,
      `optim.multipliers`): declare 'sgd' for an optimizer whose update is proportional to the
      gradient (SGD, heavy ball, Nesterov); a plain factory function is read as 'adam'.

  Returns:
    The `Optimizer`; pass it to `register`, or leave it in a plugin file for a config to name.

  Raises:
    ValueError: for a reserved name, a name the builder does not take, or a builder without
      `learning_rate` first.
  """
  label = name or getattr(builder, '__name__', repr(builder))
  multipliers.check_rule(mup_rule, f'optimizer {label!r}: mup_rule')
  inferred_values, inferred_flags, inferred_schedule = _infer(builder, f'optimizer {label!r}')
  given = {item.name: item for item in (*values, *flags)}
  items = [given.pop(i.name, i) for i in (*inferred_values, *inferred_flags)]
  items += list(given.values())
  out_values = sorted((i for i in items if isinstance(i, Value)),
                      key=lambda v: v.name != 'learning_rate')  # stable: learning_rate first
  out_flags = [i for i in items if isinstance(i, Flag)]
  accepted = inspect.signature(builder).parameters
  takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
  for item in out_values + out_flags:
    if item.name in RESERVED:
      raise ValueError(f'optimizer {label!r}: {item.name!r} is reserved for the factory '
                       f'({", ".join(RESERVED)}); rename the argument')
    if item.name not in accepted and not takes_any:
      raise ValueError(f'optimizer {label!r}: declares {item.name!r}, which the builder does not '
                       f'take; its arguments: {", ".join(accepted)}')
  return Optimizer(label, builder, tuple(out_values), tuple(out_flags),
                   inferred_schedule if schedule is None else schedule, mup_rule)


_REGISTRY: dict[str, Optimizer] = {}
_LOADED: dict[str, Optimizer] = {}  # plugin spec -> declaration, loaded on first use


def register(optimizer: Optimizer) -> Optimizer:
  """Makes `optimizer` available by its name (`config.optimizer.name = optimizer.name`).

  Raises:
    ValueError: if another optimizer is registered under the same name, or the name has ':'.
  """
  if ':' in optimizer.name:
    raise ValueError(f"optimizer name {optimizer.name!r}: ':' is kept for plugin specs")
  old = _REGISTRY.get(optimizer.name)
  if old is not None and old.builder is not optimizer.builder:
    raise ValueError(f'optimizer {optimizer.name!r} is already registered')
  _REGISTRY[optimizer.name] = optimizer
  return optimizer


def registered() -> tuple[str, ...]:
  """Registered optimizer names, in registration order (the built-ins first)."""
  return tuple(_REGISTRY)


def known() -> tuple[Optimizer, ...]:
  """Every declaration this process knows: registered, then plugins loaded so far."""
  return tuple(_REGISTRY.values()) + tuple(o for o in _LOADED.values()
                                           if o not in _REGISTRY.values())


def resolve(spec: str, where: str = 'optimizer.name') -> Optimizer:
  """The declaration a config names: a registered name or a plugin spec (see module doc).

  Args:
    spec: 'adam', 'path/to/file.py:name', 'package.module:name' or 'optax:<alias>'.
    where: the config field, for error messages.

  Raises:
    ValueError: one line: an unknown name (listing the registered ones), a missing file or
      module, an import failure or a missing object (with the file and the cause), or an
      object that is no optimizer builder.
  """
  if not isinstance(spec, str):
    raise ValueError(f'{where} must be a string, got {spec!r}')
  if spec in _REGISTRY:
    return _REGISTRY[spec]
  if spec in _LOADED:
    return _LOADED[spec]
  if not plugins.is_spec(spec):
    raise ValueError(f'{where}: unknown optimizer {spec!r}; registered: '
                     f'{", ".join(_REGISTRY)}; or a plugin: {PLUGIN_FORMS}')
  obj = plugins.load(spec, where)
  if isinstance(obj, Optimizer):
    optimizer = dataclasses.replace(obj, name=spec)
  elif callable(obj):
    optimizer = declare(obj, name=spec)
  else:
    raise ValueError(f'{where}: {spec!r} is not a function returning an '
                     'optax.GradientTransformation nor a registry.declare(...) '
                     f'(it is a {type(obj).__name__})')
  _LOADED[spec] = optimizer
  return optimizer


# ---------------------------------------------------------------------------------------------
# The built-ins, declared as a user would. Defaults are Optax's; the ranges those the aliases
# check. sgd and rmsprop always keep a momentum buffer (momentum 0.0 is plain SGD / RMSprop), so
# the state's structure never depends on a value.

_LR = Value('learning_rate', 1e-3, low=0.0, scale='log')
_B1 = Value('b1', 0.9, low=0.0, high=1.0, include_high=False)
_B2 = Value('b2', 0.999, low=0.0, high=1.0, include_high=False)
_EPS = Value('eps', 1e-8, low=0.0, scale='log')
_MOMENTUM = Value('momentum', 0.0, low=0.0, high=1.0, include_high=False)
_NESTEROV = Flag('nesterov', False, (False, True))


def _matrices(params: Any) -> Any:
  """AdamW's mask 'matrices': leaves of 2+ dimensions (weights, embeddings; not biases)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


_MASKS = {'all': None, 'matrices': _matrices}


def _sgd(learning_rate: optax.ScalarOrSchedule, momentum=0.0, *, nesterov=False):
  return alias.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def _adam(learning_rate: optax.ScalarOrSchedule, b1=0.9, b2=0.999, eps=1e-8, *, nesterov=False):
  return alias.adam(learning_rate, b1=b1, b2=b2, eps=eps, nesterov=nesterov)


def _adamw(learning_rate: optax.ScalarOrSchedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
           *, nesterov=False, decay_mask='all'):
  return alias.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=_MASKS[decay_mask], nesterov=nesterov)


def _rmsprop(learning_rate: optax.ScalarOrSchedule, decay=0.9, eps=1e-8, momentum=0.0, *,
             centered=False, nesterov=False):
  return alias.rmsprop(learning_rate, decay=decay, eps=eps, centered=centered,
                       momentum=momentum, nesterov=nesterov)


register(declare(_sgd, name='sgd', values=[_LR, _MOMENTUM], flags=[_NESTEROV], mup_rule='sgd'))
register(declare(_adam, name='adam', values=[_LR, _B1, _B2, _EPS], flags=[_NESTEROV]))
register(declare(
    _adamw, name='adamw',
    values=[_LR, _B1, _B2, _EPS, Value('weight_decay', 1e-4, low=0.0, scale='log')],
    flags=[_NESTEROV, Flag('decay_mask', 'all', tuple(_MASKS))]))
register(declare(
    _rmsprop, name='rmsprop',
    values=[_LR, Value('decay', 0.9, low=0.0, high=1.0), _EPS, _MOMENTUM],
    flags=[Flag('centered', False, (False, True)), _NESTEROV]))
