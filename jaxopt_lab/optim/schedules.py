r"""Learning-rate schedules whose parameters may be traced.

A schedule maps the int32 step count (0 on the first update) to a value. Every parameter here,
step counts included, may be a Python number, an array or a tracer, so that a sweep over peak
learning rates or warmup fractions runs as one compiled program. Phases are selected with
`jnp.where`, and every division has a guarded denominator, so a warmup of 0 steps (or a decay of
0 steps) gives finite values and finite gradients with respect to the parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxopt_lab.optim import _checks

ArrayLike = jax.typing.ArrayLike
Schedule = Callable[[ArrayLike], jax.Array]


def _ratio(num: jax.Array, den: ArrayLike) -> jax.Array:
  """`num / den` clipped to [0, 1]; 1 where `den <= 0` (a phase of no length is complete)."""
  den = jnp.asarray(den, jnp.float32)
  positive = den > 0
  return jnp.where(positive, jnp.clip(num / jnp.where(positive, den, 1.0), 0.0, 1.0), 1.0)


def _as_float(count: ArrayLike) -> jax.Array:
  return jnp.asarray(count).astype(jnp.float32)


def constant_schedule(value: ArrayLike) -> Schedule:
  r"""A schedule that returns `value` at every step.

  .. math:: \alpha_t = \alpha

  Args:
    value: the constant.

  Returns:
    A function of the step count.

  Example:
    >>> from jaxopt_lab import optim
    >>> float(optim.constant_schedule(0.5)(7))
    0.5
  """

  def schedule(count: ArrayLike) -> jax.Array:
    del count
    return jnp.asarray(value)

  return schedule


def warmup_cosine_decay_schedule(
    peak_value: ArrayLike,
    warmup_steps: ArrayLike,
    decay_steps: ArrayLike,
    end_value: ArrayLike = 0.0,
    init_value: ArrayLike = 0.0,
) -> Schedule:
  r"""Linear warmup from `init_value` to `peak_value`, then cosine decay to `end_value`.

  With :math:`w` = `warmup_steps` and :math:`T` = `decay_steps` (the total length, warmup
  included, as in `optax.warmup_cosine_decay_schedule`):

  .. math::

    \alpha_t = \begin{cases}
      \alpha_0 + (\alpha_{\max} - \alpha_0)\, t / w & t < w \\
      \alpha_{\text{end}} + (\alpha_{\max} - \alpha_{\text{end}})\,
        \tfrac12\left(1 + \cos\left(\pi \min(t - w, T - w) / (T - w)\right)\right) & t \ge w
    \end{cases}

  so :math:`\alpha_0` at step 0, :math:`\alpha_{\max}` at step :math:`w`, and
  :math:`\alpha_{\text{end}}` from step :math:`T` on. A warmup of 0 starts at the peak; if
  :math:`T \le w` the value after warmup is `end_value`.

  Args:
    peak_value: the value at the end of warmup.
    warmup_steps: length of the linear warmup, >= 0; may be a (traced) float.
    decay_steps: total length of the schedule including warmup, >= 0; may be a (traced) float.
    end_value: the value at and after `decay_steps`.
    init_value: the value at step 0.

  Returns:
    A function of the step count.

  Example:
    >>> from jaxopt_lab import optim
    >>> lr = optim.warmup_cosine_decay_schedule(1e-3, warmup_steps=100, decay_steps=1000)
    >>> opt = optim.adamw(learning_rate=lr)

  .. note::
    Written as :math:`\alpha_{\text{end}} + (\alpha_{\max} - \alpha_{\text{end}})c` instead of
    Optax's :math:`\alpha_{\max}((1 - a)c + a)` with :math:`a = \alpha_{\text{end}} /
    \alpha_{\max}`, which needs a Python branch on `peak_value == 0`; the values agree to
    rounding whenever the peak is non-zero.
  """
  for name, value in (('warmup_steps', warmup_steps), ('decay_steps', decay_steps)):
    _checks.check(value, name, 'nonnegative')

  def schedule(count: ArrayLike) -> jax.Array:
    t = _as_float(count)
    warm = init_value + (peak_value - init_value) * _ratio(t, warmup_steps)
    progress = _ratio(t - warmup_steps, jnp.asarray(decay_steps) - warmup_steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * progress))
    decayed = end_value + (peak_value - end_value) * cosine
    return jnp.where(t < warmup_steps, warm, decayed)

  return schedule


def warmup_stable_decay_schedule(
    peak_value: ArrayLike,
    warmup_steps: ArrayLike,
    total_steps: ArrayLike,
    decay_steps: ArrayLike,
    end_value: ArrayLike = 0.0,
) -> Schedule:
  r"""Warmup-stable-decay: linear warmup from 0, flat at the peak, linear decay at the end.

  With :math:`w` = `warmup_steps`, :math:`T` = `total_steps`, :math:`d` = `decay_steps`:

  .. math::

    \alpha_t = \begin{cases}
      \alpha_{\max}\, t / w & t < w \\
      \alpha_{\max} + (\alpha_{\text{end}} - \alpha_{\max})
        \operatorname{clip}\left((t - (T - d)) / d, 0, 1\right) & t \ge w
    \end{cases}

  so 0 at step 0, :math:`\alpha_{\max}` from step :math:`w` to step :math:`T - d`, and
  :math:`\alpha_{\text{end}}` from step :math:`T` on. Warmup takes precedence if it overlaps the
  decay. A warmup of 0 starts at the peak; a decay of 0 steps keeps the peak until step
  :math:`T` and is `end_value` from then on.

  Args:
    peak_value: the value of the stable phase.
    warmup_steps: length of the linear warmup, >= 0; may be a (traced) float.
    total_steps: the step at which the decay ends.
    decay_steps: length of the final linear decay, >= 0.
    end_value: the value at and after `total_steps`.

  Returns:
    A function of the step count.

  Example:
    >>> from jaxopt_lab import optim
    >>> lr = optim.warmup_stable_decay_schedule(3e-4, 100, total_steps=1000, decay_steps=200)
    >>> [round(float(lr(t)), 8) for t in (0, 50, 500, 900, 1000)]
    [0.0, 0.00015, 0.0003, 0.00015, 0.0]

  References:
    Hägele et al., `Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations
    <https://arxiv.org/abs/2405.18392>`_, 2024
  """
  for name, value in (
      ('warmup_steps', warmup_steps),
      ('total_steps', total_steps),
      ('decay_steps', decay_steps),
  ):
    _checks.check(value, name, 'nonnegative')

  def schedule(count: ArrayLike) -> jax.Array:
    t = _as_float(count)
    warm = peak_value * _ratio(t, warmup_steps)
    decay_start = jnp.asarray(total_steps, jnp.float32) - decay_steps
    in_decay = jnp.where(t < decay_start, 0.0, _ratio(t - decay_start, decay_steps))
    progress = jnp.where(t >= total_steps, 1.0, in_decay)
    decayed = peak_value + (end_value - peak_value) * progress
    return jnp.where(t < warmup_steps, warm, decayed)

  return schedule


def with_cooldown(schedule: Schedule, start: ArrayLike, steps: ArrayLike) -> Schedule:
  r"""`schedule` until step `start`, then a linear decay to zero from its value there.

  With :math:`s` = `start` and :math:`d` = `steps`:

  .. math::

    \alpha'_t = \begin{cases}
      \alpha_t & t < s \\
      \alpha_s \left(1 - \operatorname{clip}\left((t - s) / d, 0, 1\right)\right) & t \ge s
    \end{cases}

  the cooldown of Hägele et al. (2024): from any point of a stable phase, a short linear decay
  to zero gives the model a run of length :math:`s + d` would have reached. The decay holds the
  value at the fork point, :math:`\alpha_s`, and decays it linearly, whatever the schedule does
  after :math:`s`: for a warmup-stable-decay schedule in its stable phase this is exactly
  `warmup_stable_decay_schedule(peak, w, s + d, d)`; for a cosine schedule it is the cosine's
  value at :math:`s`, decayed linearly (not the cosine's own decline times a decay). The decay
  is `warmup_stable_decay_schedule(\alpha_s, 0, s + d, d)`, the same expression, so the two
  agree bit for bit. `start` and `steps` may be traced: a sweep forks every point at its own
  step in one compiled program (`sweep.adaptive.ranking`).

  Args:
    schedule: the schedule before the fork.
    start: the step of the fork (the first decayed update is the one at count `start`).
    steps: the decay's length, > 0.

  Returns:
    A function of the step count.

  References:
    Hägele et al., `Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations
    <https://arxiv.org/abs/2405.18392>`_, 2024
  """

  def cooled(count: ArrayLike) -> jax.Array:
    t = _as_float(count)
    start_f = jnp.asarray(start, jnp.float32)
    decay = warmup_stable_decay_schedule(schedule(start_f), 0.0, start_f + steps, steps)
    return jnp.where(t < start_f, schedule(count), decay(count))

  return cooled
