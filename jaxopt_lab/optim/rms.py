r"""RMSprop's preconditioners: the running mean of squared gradients, plain or centered.

Split from `transform` (the other primitives) to keep each file small; the same conventions
hold (see its docstring): values may be tracers, dtypes are preserved, complex parameters
average :math:`|g|^2`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab.optim import _checks
from jaxopt_lab.optim.transform import (
    ArrayLike,
    _abs_sq,
    _cast_like,
    _debias,
    _ema,
    _ema_abs_sq,
    _second_moment_init,
    _zeros_like,
)


class ScaleByRmsState(NamedTuple):
  """State of `scale_by_rms`: step count (int32) and second moment."""

  count: jax.Array
  nu: Any


def _inverse_root(nu_hat: Any, eps: ArrayLike, eps_in_sqrt: bool) -> Any:
  if eps_in_sqrt:
    return jax.tree.map(lambda n: jax.lax.rsqrt(n + eps), nu_hat)
  return jax.tree.map(lambda n: 1 / (jnp.sqrt(n) + eps), nu_hat)


def scale_by_rms(
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
  r"""Rescales updates by the root of an exponential moving average of squared updates.

  .. math::

    \begin{align*}
      v_t &\leftarrow \rho\, v_{t-1} + (1-\rho) |g_t|^2, \qquad v_0 = \text{initial\_scale} \\
      \hat v_t &\leftarrow v_t / (1 - \rho^t) \text{ if bias\_correction else } v_t \\
      u_t &\leftarrow g_t / \sqrt{\hat v_t + \varepsilon} \text{ if eps\_in\_sqrt else }
             g_t / (\sqrt{\hat v_t} + \varepsilon)
    \end{align*}

  Args:
    decay: the average's decay :math:`\rho`, in [0, 1].
    eps: the stabilising constant :math:`\varepsilon`, >= 0.
    initial_scale: initial value of :math:`v`, >= 0.
    eps_in_sqrt: whether `eps` is added inside the square root.
    bias_correction: whether to divide :math:`v_t` by :math:`1-\rho^t`.

  Returns:
    An `optax.GradientTransformation` with state `ScaleByRmsState`.
  """
  _checks.check(decay, 'decay', 'unit_closed')
  _checks.check(eps, 'eps', 'nonnegative')
  _checks.check(initial_scale, 'initial_scale', 'nonnegative')

  def init_fn(params):
    return ScaleByRmsState(
        count=jnp.zeros([], jnp.int32),
        nu=_second_moment_init(params, initial_scale),
    )

  def update_fn(updates, state, params=None):
    del params
    nu = _ema_abs_sq(updates, state.nu, decay)
    count = optax.safe_increment(state.count)
    nu_hat = _debias(nu, decay, count) if bias_correction else nu
    scaling = _inverse_root(nu_hat, eps, eps_in_sqrt)
    out = jax.tree.map(lambda s, g: s * g, scaling, updates)
    return _cast_like(out, updates), ScaleByRmsState(count=count, nu=_cast_like(nu, state.nu))

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByStddevState(NamedTuple):
  """State of `scale_by_stddev`: step count (int32), first and second moments."""

  count: jax.Array
  mu: Any
  nu: Any


def scale_by_stddev(
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
  r"""Rescales updates by a running estimate of their standard deviation (centered RMSprop).

  .. math::

    \begin{align*}
      m_t &\leftarrow \rho\, m_{t-1} + (1-\rho) g_t, \qquad m_0 = 0 \\
      v_t &\leftarrow \rho\, v_{t-1} + (1-\rho) |g_t|^2, \qquad v_0 = \text{initial\_scale} \\
      \sigma_t^2 &\leftarrow \max(\hat v_t - |\hat m_t|^2, 0) \\
      u_t &\leftarrow g_t / \sqrt{\sigma_t^2 + \varepsilon} \text{ if eps\_in\_sqrt
             else } g_t / (\sqrt{\sigma_t^2} + \varepsilon)
    \end{align*}

  where hats are bias-corrected by :math:`1-\rho^t` if `bias_correction`, else plain. The
  variance estimate is clipped at 0, which Optax's `scale_by_stddev` does not do: it differs
  only where rounding makes the estimate negative (Optax then returns NaN), as at the first
  step with `bias_correction=True`, where the estimate is exactly 0. Where :math:`|g_t|^2`
  overflows, :math:`v_t = \infty` and the update is 0, as in `scale_by_rms` (Optax: NaN).

  Args:
    decay: the averages' decay :math:`\rho`, in [0, 1].
    eps: the stabilising constant :math:`\varepsilon`, >= 0.
    initial_scale: initial value of :math:`v`, >= 0.
    eps_in_sqrt: whether `eps` is added inside the square root.
    bias_correction: whether to divide both averages by :math:`1-\rho^t`.

  Returns:
    An `optax.GradientTransformation` with state `ScaleByStddevState`.
  """
  _checks.check(decay, 'decay', 'unit_closed')
  _checks.check(eps, 'eps', 'nonnegative')
  _checks.check(initial_scale, 'initial_scale', 'nonnegative')

  def init_fn(params):
    return ScaleByStddevState(
        count=jnp.zeros([], jnp.int32),
        mu=_zeros_like(params),
        nu=_second_moment_init(params, initial_scale),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = _ema(updates, state.mu, decay)
    nu = _ema_abs_sq(updates, state.nu, decay)
    count = optax.safe_increment(state.count)
    if bias_correction:
      mu_hat, nu_hat = _debias(mu, decay, count), _debias(nu, decay, count)
    else:
      mu_hat, nu_hat = mu, nu
    # Clipped at 0: with bias correction the first estimate is exactly 0 (one sample), and
    # rounding may make v - m^2 slightly negative, whose root would be NaN. An infinite v (a
    # gradient whose square overflows) stays infinite, as in `scale_by_rms`, instead of
    # inf - inf = NaN.
    variance = jax.tree.map(
        lambda m, v: jnp.where(v == jnp.inf, v, jnp.maximum(v - _abs_sq(m), 0)), mu_hat, nu_hat)
    scaling = _inverse_root(variance, eps, eps_in_sqrt)
    out = jax.tree.map(lambda s, g: s * g, scaling, updates)
    new_state = ScaleByStddevState(
        count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu))
    return _cast_like(out, updates), new_state

  return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Learning rate and weight decay.
