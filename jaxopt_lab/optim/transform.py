r"""Gradient transformations: the primitives our optimizers are chained from.

Each primitive is a factory that closes over its hyperparameters and returns an
`optax.GradientTransformation`. Numeric hyperparameters may be Python numbers, arrays or tracers
(so one compiled program can serve many values under `jax.vmap`); the code branches only on
structure (`nesterov`, `eps_in_sqrt`, `callable(learning_rate)`), never on a value. Concrete values
are range-checked with a `ValueError` naming the argument.

Dtypes: each primitive returns updates in the dtype of the incoming updates and keeps every state
leaf in the dtype it was initialised with, even when a hyperparameter is a float32 array and the
parameters are bfloat16 (arithmetic is then carried out in float32 and rounded once).

Complex parameters are handled as in Optax: second moments average :math:`|g|^2 = \bar g g`
(not :math:`g^2`, which would turn them complex and lose the gradient's phase), and a centered
variance subtracts :math:`|m|^2`. Second moments are kept real, in the real dtype of the
parameters (Optax keeps the same values in the complex dtype, with a zero imaginary part).
Gradients of a real loss are conjugated before an update, as in Optax's tests:
`jax.tree.map(jnp.conj, jax.grad(f)(params))`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab.optim import _checks

ArrayLike = jax.typing.ArrayLike
ScalarOrSchedule = ArrayLike | Callable[[ArrayLike], ArrayLike]


def _cast_like(tree: Any, like: Any) -> Any:
  """Casts each leaf of `tree` to the dtype of the matching leaf of `like`."""
  return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), tree, like)


def _zeros_like(params: Any, dtype: Any = None) -> Any:
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)


def _real_dtype(x: Any) -> Any:
  """The dtype of `x`, or of its real part for a complex `x` (complex64 -> float32)."""
  dtype = jnp.result_type(x)
  return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _second_moment_init(params: Any, value: ArrayLike) -> Any:
  """Second moments filled with `value`, real (the real dtype of each parameter leaf)."""
  return jax.tree.map(lambda p: jnp.full_like(p, value, dtype=_real_dtype(p)), params)


def _abs_sq(x: jax.Array) -> jax.Array:
  """``|x|^2``, real: ``x**2`` for real `x` (Optax's HLO), ``Re(conj(x) x)`` for complex `x`."""
  return (x.conj() * x).real if jnp.iscomplexobj(x) else x**2


def _ema(updates: Any, moments: Any, decay: ArrayLike) -> Any:
  """One step of a moving average per leaf: ``(1 - decay) g + decay m``."""
  return jax.tree.map(lambda g, m: (1 - decay) * g + decay * m, updates, moments)


def _ema_abs_sq(updates: Any, moments: Any, decay: ArrayLike) -> Any:
  """One step of a moving average of ``|g|^2`` per leaf: ``(1 - decay) |g|^2 + decay v``."""
  return jax.tree.map(lambda g, v: (1 - decay) * _abs_sq(g) + decay * v, updates, moments)


@functools.partial(jax.jit, inline=True)
def _debias(moment: Any, decay: ArrayLike, count: jax.Array) -> Any:
  """Divides an exponential moving average started at zero by `1 - decay**count`.

  The correction is computed before the cast to each leaf's dtype, so that `decay**count` is not
  rounded to 1 in low precision (which would divide by zero). Jitted (and inlined into an outer
  jit) so that `decay**count` is computed by the same kernel eagerly and under `jax.jit`, and as
  in `optax.tree.bias_correction`: an eager `pow` of a Python float can differ by an ulp. The
  division is written as a multiplication by the reciprocal, which is what XLA makes of a
  division by a broadcast scalar in a single run anyway; written out, a run under `jax.vmap`
  (where the divisor is no longer a scalar) and an eager run round the same way.
  """
  correction = 1 - decay**count
  inverse = 1 / correction
  return jax.tree.map(lambda t: t * jnp.asarray(inverse).astype(t.dtype), moment)


# ---------------------------------------------------------------------------------------------
# Momentum.


class TraceState(NamedTuple):
  """State of `trace`: the momentum buffer, one leaf per parameter."""

  trace: Any


def trace(
    decay: ArrayLike,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Accumulates a (heavy-ball or Nesterov) momentum trace of past updates.

  .. math::

    \begin{align*}
      m_t &\leftarrow g_t + \mu\, m_{t-1}, \qquad m_0 = 0 \\
      u_t &\leftarrow \begin{cases} m_t & \text{heavy ball} \\
                                   g_t + \mu\, m_t & \text{Nesterov} \end{cases}
    \end{align*}

  Args:
    decay: the momentum :math:`\mu`, in [0, 1). A value of 0 returns the updates unchanged.
    nesterov: whether to return the Nesterov form :math:`g_t + \mu m_t`.
    accumulator_dtype: dtype of the momentum buffer; None uses the parameters' dtype.

  Returns:
    An `optax.GradientTransformation` with state `TraceState`.
  """
  _checks.check(decay, 'decay', 'unit_open')
  accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

  def init_fn(params):
    return TraceState(trace=_zeros_like(params, accumulator_dtype))

  def update_fn(updates, state, params=None):
    del params
    new_trace = jax.tree.map(lambda g, t: g + decay * t, updates, state.trace)
    if nesterov:
      out = jax.tree.map(lambda g, t: g + decay * t, updates, new_trace)
    else:
      out = new_trace
    return _cast_like(out, updates), TraceState(trace=_cast_like(new_trace, state.trace))

  return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Adaptive scalings.


class ScaleByAdamState(NamedTuple):
  """State of `scale_by_adam`: step count (int32) and first and second moments."""

  count: jax.Array
  mu: Any
  nu: Any


def scale_by_adam(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  r"""Rescales updates by Adam's bias-corrected moment estimates.

  .. math::

    \begin{align*}
      m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2 \\
      \hat m_t &\leftarrow m_t / (1-\beta_1^t), \quad \hat v_t \leftarrow v_t / (1-\beta_2^t) \\
      u_t &\leftarrow \hat m_t / \left(\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon\right)
    \end{align*}

  With `nesterov=True` (NAdam), :math:`\hat m_t \leftarrow \beta_1 m_t / (1-\beta_1^{t+1}) +
  (1-\beta_1) g_t / (1-\beta_1^t)`.

  Args:
    b1: decay of the first-moment average, in [0, 1).
    b2: decay of the second-moment average, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to the second moment inside the square root, >= 0.
    mu_dtype: dtype of the first moment; None uses the parameters' dtype.
    nesterov: whether to use Nesterov momentum (Dozat 2016).

  Returns:
    An `optax.GradientTransformation` with state `ScaleByAdamState`.
  """
  _checks.check(b1, 'b1', 'unit_open')
  _checks.check(b2, 'b2', 'unit_open')
  _checks.check(eps, 'eps', 'nonnegative')
  _checks.check(eps_root, 'eps_root', 'nonnegative')
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=_zeros_like(params, mu_dtype),
        nu=_second_moment_init(params, 0.0),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = _ema(updates, state.mu, b1)
    nu = _ema_abs_sq(updates, state.nu, b2)
    count = optax.safe_increment(state.count)
    if nesterov:
      mu_hat = _ema(_debias(updates, b1, count), _debias(mu, b1, optax.safe_increment(count)), b1)
    else:
      mu_hat = _debias(mu, b1, count)
    nu_hat = _debias(nu, b2, count)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
    new_state = ScaleByAdamState(
        count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu))
    return _cast_like(out, updates), new_state

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByScheduleState(NamedTuple):
  """State of a scheduled scaling: the step count (int32) fed to the schedule."""

  count: jax.Array


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None,
    *,
    flip_sign: bool = True,
) -> optax.GradientTransformation:
  r"""Multiplies updates by the (negated) learning rate, a value or a schedule of the step count.

  .. math::

    u_t \leftarrow -\alpha_t\, g_t \quad (\text{or } \alpha_t g_t \text{ if not flip\_sign})

  Args:
    learning_rate: :math:`\alpha`: a number, an array, a tracer, or a schedule (a callable of the
      int32 step count, starting at 0). None means no scaling.
    flip_sign: whether to negate, turning a descent direction into an update.

  Returns:
    An `optax.GradientTransformation`; its state is `ScaleByScheduleState` for a schedule and
    `optax.EmptyState` otherwise.
  """
  if learning_rate is None:
    return optax.identity()
  _checks.check(learning_rate, 'learning_rate', 'nonnegative')
  sign = -1 if flip_sign else 1

  def scale(updates, step):
    return jax.tree.map(lambda g: (step * g).astype(g.dtype), updates)

  if callable(learning_rate):

    def init_fn(params):
      del params
      return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
      del params
      step = sign * jnp.asarray(learning_rate(state.count))
      return scale(updates, step), ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)

  def update_fn(updates, state, params=None):
    del params
    return scale(updates, sign * learning_rate), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


class AddDecayedWeightsState(NamedTuple):
  """State of `add_decayed_weights` with a scheduled decay: the step count (int32)."""

  count: jax.Array


def _mask_tree(mask: Any, tree: Any) -> Any:
  return mask(tree) if callable(mask) else mask


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
  r"""Adds the parameters times a weight decay to the updates (decoupled weight decay).

  .. math::

    u_t \leftarrow g_t + \lambda_t\, \theta_t \quad \text{for the leaves selected by the mask}

  Chained before `scale_by_learning_rate`, the decay is multiplied by the learning rate:
  :math:`\theta_{t+1} = \theta_t - \alpha_t(g_t + \lambda\theta_t)`. Chained before a momentum
  `trace` or an adaptive scaling, it becomes coupled L2 regularisation instead (PyTorch's
  `weight_decay` argument of SGD, Adam and RMSprop).

  Args:
    weight_decay: :math:`\lambda`, >= 0: a number, array, tracer or schedule of the step count.
    mask: None (decay every leaf), a pytree of booleans with the structure of (or a prefix of)
      the parameters, or a callable returning such a pytree given the updates. `True` marks the
      leaves (or subtrees) to decay.

  Returns:
    An `optax.GradientTransformation`; its state is `AddDecayedWeightsState` for a scheduled
    decay and `optax.EmptyState` otherwise. Its `update` requires `params`.
  """
  _checks.check(weight_decay, 'weight_decay', 'nonnegative')
  scheduled = callable(weight_decay)

  def init_fn(params):
    del params
    if scheduled:
      return AddDecayedWeightsState(count=jnp.zeros([], jnp.int32))
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('add_decayed_weights: update() needs params (the current parameters)')
    if scheduled:
      rate = weight_decay(state.count)
      new_state = AddDecayedWeightsState(count=optax.safe_increment(state.count))
    else:
      rate, new_state = weight_decay, state
    decayed = jax.tree.map(lambda g, p: (g + rate * p).astype(g.dtype), updates, params)
    if mask is not None:
      decayed = jax.tree.map(
          lambda m, new, old: new if m else old, _mask_tree(mask, updates), decayed, updates)
    return decayed, new_state

  return optax.GradientTransformation(init_fn, update_fn)
