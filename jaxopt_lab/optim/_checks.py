"""Range checks of numeric hyperparameters that skip traced values.

A hyperparameter may be a Python number, a NumPy or JAX array, a tracer (under `jax.jit` or
`jax.vmap`), or, for some arguments, a schedule. Only concrete numbers can be checked; tracers and
schedules pass through untouched, so checking never forces a value off the device inside traced
code and never branches on a traced value.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

# Valid ranges by kind: (lower, lower inclusive, upper, upper inclusive, description).
_RANGES = {
    'nonnegative': (0.0, True, np.inf, True, '>= 0'),
    'unit_open': (0.0, True, 1.0, False, 'in [0, 1)'),
    'unit_closed': (0.0, True, 1.0, True, 'in [0, 1]'),
    'any': (-np.inf, True, np.inf, True, 'a number (not NaN)'),
}


def concrete_values(value: Any, name: str) -> np.ndarray | None:
  """Returns `value` as a float64 NumPy array, or None when it is traced or a schedule.

  Args:
    value: a hyperparameter as passed by the user.
    name: the argument's name, for the error message.

  Returns:
    The concrete values, or None when they cannot be known at this point.

  Raises:
    ValueError: if `value` is concrete but not numeric.
  """
  if isinstance(value, jax.core.Tracer) or callable(value):
    return None
  if isinstance(value, (str, bytes)) or value is None:
    raise ValueError(f'{name} must be a number, got {value!r}')
  try:
    return np.asarray(value, dtype=np.float64)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must be a number, got {value!r}') from e


def check(value: Any, name: str, kind: str) -> None:
  """Raises ValueError naming `name` if a concrete `value` is outside the range `kind`.

  Args:
    value: a hyperparameter (number, array, tracer or schedule).
    name: the argument's name, e.g. 'b1' or 'optimizer.b1'.
    kind: one of 'nonnegative', 'unit_open', 'unit_closed', 'any'.
  """
  lo, lo_incl, hi, hi_incl, text = _RANGES[kind]
  values = concrete_values(value, name)
  if values is None:
    return
  above = values >= lo if lo_incl else values > lo
  below = values <= hi if hi_incl else values < hi
  ok = np.logical_and(above, below)  # NaN fails both comparisons.
  if not np.all(ok):
    bad = values[~ok] if values.ndim else values
    raise ValueError(f'{name} must be {text}, got {float(bad.ravel()[0])}')
