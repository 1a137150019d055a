r"""SGD, Adam, AdamW and RMSprop: drop-in replacements for Optax's aliases of the same names.

Each alias has the signature and defaults of its Optax namesake (optax 0.2.8) and is an
`optax.chain` of the primitives in `jaxopt_lab.optim.transform`, in the same order as Optax's, so
states and updates follow the same equations. Numeric hyperparameters may be Python numbers,
arrays or tracers: an optimizer built inside a `jax.vmap`-ed function from a batch of values runs
one independent optimizer per value. Concrete out-of-range values raise a `ValueError` naming the
argument; traced values are not checked. Complex parameters are supported as in Optax (second
moments of :math:`|g|^2`; see `jaxopt_lab.optim.transform`).
"""

from __future__ import annotations

from typing import Any

import optax

from jaxopt_lab.optim import _checks, rms, transform
from jaxopt_lab.optim.transform import ArrayLike, ScalarOrSchedule


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Stochastic gradient descent, optionally with heavy-ball or Nesterov momentum.

  With :math:`\alpha_t` the learning rate (a value or a schedule of the step count) and
  :math:`\mu` the momentum:

  .. math::

    \begin{align*}
      m_t &\leftarrow g_t + \mu\, m_{t-1}, \qquad m_0 = 0 \\
      u_t &\leftarrow \begin{cases} -\alpha_t\, m_t & \text{nesterov=False} \\
                                    -\alpha_t\, (g_t + \mu\, m_t) & \text{nesterov=True}
                      \end{cases}
    \end{align*}

  Without momentum (`momentum=None`), :math:`u_t = -\alpha_t g_t`; `momentum=0.0` gives the same
  updates exactly, with a (zero-decay) buffer in the state.

  Args:
    learning_rate: :math:`\alpha`, >= 0: a number, array, tracer or schedule.
    momentum: :math:`\mu`, in [0, 1), or None for no momentum buffer.
    nesterov: whether to use the Nesterov form (only with a momentum).
    accumulator_dtype: dtype of the momentum buffer; None uses the parameters' dtype.

  Returns:
    An `optax.GradientTransformation` (a chain of `trace` and `scale_by_learning_rate`).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_lab import optim
    >>> opt = optim.sgd(learning_rate=0.1, momentum=0.9)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda x: jnp.sum(x**2))(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> optax.apply_updates(params, updates)
    Array([ 0.8, -1.6], dtype=float32)

  References:
    Polyak, `Some methods of speeding up the convergence of iteration methods
    <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964

    Sutskever et al., `On the importance of initialization and momentum in deep learning
    <http://proceedings.mlr.press/v28/sutskever13.pdf>`_, 2013

  .. note::
    PyTorch: `torch.optim.SGD(params, lr, momentum, nesterov=..., dampening=0)` gives the same
    updates. Torch initialises its buffer to the first gradient, :math:`m_1 = g_1`; the trace
    here starts at zero and gives :math:`m_1 = g_1 + \mu \cdot 0 = g_1`, the same, because torch's
    `dampening` (default 0) only applies from the second step. With `dampening=d > 0` torch
    uses :math:`m_t = \mu m_{t-1} + (1-d) g_t`, which has no counterpart here. The Nesterov form
    is torch's (and Optax's) reformulation :math:`g_t + \mu m_t` of Sutskever et al.'s
    look-ahead gradient. Torch's `weight_decay=λ` is coupled L2: use
    `optax.chain(add_decayed_weights(λ), sgd(...))`.
  """
  _checks.check(learning_rate, 'learning_rate', 'nonnegative')
  if momentum is None:
    first = optax.identity()
  else:
    _checks.check(momentum, 'momentum', 'unit_open')
    first = transform.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
  return optax.chain(first, transform.scale_by_learning_rate(learning_rate))


def _check_adam(learning_rate, b1, b2, eps, eps_root) -> None:
  _checks.check(learning_rate, 'learning_rate', 'nonnegative')
  _checks.check(b1, 'b1', 'unit_open')
  _checks.check(b2, 'b2', 'unit_open')
  _checks.check(eps, 'eps', 'nonnegative')
  _checks.check(eps_root, 'eps_root', 'nonnegative')


def adam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  r"""Adam: momentum and per-coordinate step sizes from moment estimates of the gradients.

  .. math::

    \begin{align*}
      m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
      v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, |g_t|^2, \qquad m_0 = v_0 = 0 \\
      \hat m_t &\leftarrow m_t / (1-\beta_1^t), \qquad \hat v_t \leftarrow v_t / (1-\beta_2^t) \\
      u_t &\leftarrow -\alpha_t\, \hat m_t / \left(\sqrt{\hat v_t + \bar\varepsilon}
             + \varepsilon\right)
    \end{align*}

  With `nesterov=True` (NAdam), :math:`\hat m_t \leftarrow \beta_1 m_t / (1-\beta_1^{t+1})
  + (1-\beta_1) g_t / (1-\beta_1^t)`. The first update is
  :math:`-\alpha_1 g_1 / (|g_1| + \varepsilon)` (with :math:`\bar\varepsilon = 0`).

  Args:
    learning_rate: :math:`\alpha`, >= 0: a number, array, tracer or schedule.
    b1: :math:`\beta_1`, decay of the first moment, in [0, 1).
    b2: :math:`\beta_2`, decay of the second moment, in [0, 1).
    eps: :math:`\varepsilon`, added outside the square root (as in the paper), >= 0.
    eps_root: :math:`\bar\varepsilon`, added inside the square root, >= 0; a positive value keeps
      gradients *through* the update finite (meta-learning).
    mu_dtype: dtype of the first moment; None uses the parameters' dtype.
    nesterov: whether to use Nesterov momentum (NAdam, Dozat 2016).

  Returns:
    An `optax.GradientTransformation` (a chain of `scale_by_adam` and `scale_by_learning_rate`).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_lab import optim
    >>> opt = optim.adam(learning_rate=1e-2)
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum(p['w']**2))(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> [round(x, 6) for x in optax.apply_updates(params, updates)['w'].tolist()]
    [0.99, -1.99]

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, ICLR 2015

    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016

  .. note::
    PyTorch: `torch.optim.Adam(params, lr, betas=(b1, b2), eps)` gives the same updates (both
    follow Algorithm 1 of the paper, `eps` outside the square root). Torch's `weight_decay=λ` in
    `Adam` is coupled L2 (added to the gradient before the moments): use
    `optax.chain(add_decayed_weights(λ), adam(...))`; for decoupled decay use `adamw`. Torch's
    `NAdam` decays its momentum with a schedule (`momentum_decay`) and so differs from
    `nesterov=True`. Gradients whose square overflows (|g| > ~1.8e19 in float32) make that
    coordinate's second moment infinite, and its updates zero from then on (finite, not NaN).
  """
  _check_adam(learning_rate, b1, b2, eps, eps_root)
  return optax.chain(
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
      transform.scale_by_learning_rate(learning_rate),
  )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  r"""AdamW: Adam with decoupled weight decay.

  With :math:`\hat m_t, \hat v_t` as in `adam` and :math:`\lambda` the weight decay:

  .. math::

    u_t \leftarrow -\alpha_t \left( \hat m_t / \left(\sqrt{\hat v_t + \bar\varepsilon}
    + \varepsilon\right) + \lambda\, \theta_t \right)

  so a parameter with zero gradient shrinks as :math:`\theta_t = \theta_0 (1 - \alpha\lambda)^t`.
  The decay is applied only to the leaves selected by `mask` (Adam's scaling applies to all).

  Args:
    learning_rate: :math:`\alpha`, >= 0: a number, array, tracer or schedule.
    b1: :math:`\beta_1`, in [0, 1).
    b2: :math:`\beta_2`, in [0, 1).
    eps: :math:`\varepsilon`, added outside the square root, >= 0.
    eps_root: :math:`\bar\varepsilon`, added inside the square root, >= 0.
    mu_dtype: dtype of the first moment; None uses the parameters' dtype.
    weight_decay: :math:`\lambda`, >= 0: a number, array, tracer or schedule.
    mask: None (decay everything), a pytree of booleans matching (a prefix of) the parameters,
      or a callable returning one given the updates; `True` marks leaves to decay.
    nesterov: whether to use Nesterov momentum (NAdamW).

  Returns:
    An `optax.GradientTransformation` (a chain of `scale_by_adam`, `add_decayed_weights` and
    `scale_by_learning_rate`); `update` needs `params`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_lab import optim
    >>> params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
    >>> no_bias_decay = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    >>> opt = optim.adamw(learning_rate=1e-3, weight_decay=0.1, mask=no_bias_decay)
    >>> state = opt.init(params)

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, ICLR 2019

    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, ICLR 2015

  .. note::
    PyTorch: `torch.optim.AdamW(params, lr, betas=(b1, b2), eps, weight_decay=λ)` gives the same
    updates: torch multiplies the parameters by :math:`1 - \alpha_t\lambda` before its Adam step,
    and here the decay is chained before the learning-rate scaling, so it is likewise multiplied
    by the current learning rate :math:`\alpha_t` (schedule included). The paper instead
    multiplies :math:`\lambda` by the schedule multiplier only, not by the base learning rate;
    to get that, pass a `weight_decay` schedule equal to :math:`\lambda \eta_t / \alpha_t`.
    Torch's default `weight_decay` is 1e-2; Optax's and ours is 1e-4.
  """
  _check_adam(learning_rate, b1, b2, eps, eps_root)
  _checks.check(weight_decay, 'weight_decay', 'nonnegative')
  return optax.chain(
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
      transform.add_decayed_weights(weight_decay, mask),
      transform.scale_by_learning_rate(learning_rate),
  )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    initial_scale: ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
  r"""RMSprop: steps scaled by a running root mean square of the gradients.

  With :math:`\rho` the decay, hats denoting division by :math:`1-\rho^t` when
  `bias_correction` (else none), and :math:`s_t` the denominator:

  .. math::

    \begin{align*}
      v_t &\leftarrow \rho\, v_{t-1} + (1-\rho)\, |g_t|^2, \qquad v_0 = \text{initial\_scale} \\
      \bar g_t &\leftarrow \rho\, \bar g_{t-1} + (1-\rho)\, g_t \quad \text{(centered only,
        } \bar g_0 = 0) \\
      s_t &\leftarrow \sqrt{\hat v_t - [|\hat{\bar g}_t|^2] + \varepsilon}
        \text{ if eps\_in\_sqrt else } \sqrt{\hat v_t - [|\hat{\bar g}_t|^2]} + \varepsilon \\
      d_t &\leftarrow -\alpha_t\, g_t / s_t \\
      u_t &\leftarrow d_t \text{ without momentum; else }
        b_t \leftarrow d_t + \mu\, b_{t-1},\ u_t \leftarrow b_t
        \text{ (or } d_t + \mu\, b_t \text{ if nesterov)}
    \end{align*}

  (the bracketed term only when `centered`, where the difference is clipped at 0 so that a
  rounding error cannot make it negative; Optax returns NaN in that case, e.g. at the first
  step of `centered=True, bias_correction=True`). As in Optax, the momentum trace comes after the
  learning-rate scaling, so it accumulates already-scaled steps. The first update with
  `initial_scale=0` and no momentum is :math:`-\alpha g_1 / \sqrt{(1-\rho) |g_1|^2 + \varepsilon}`.

  Args:
    learning_rate: :math:`\alpha`, >= 0: a number, array, tracer or schedule.
    decay: :math:`\rho`, in [0, 1].
    eps: :math:`\varepsilon`, >= 0.
    initial_scale: initial value of :math:`v`, >= 0 (PyTorch uses 0, TF1 used 1).
    eps_in_sqrt: whether :math:`\varepsilon` is added inside the square root.
    centered: whether to divide by the standard deviation (Graves 2013) instead of the RMS.
    momentum: :math:`\mu`, in [0, 1), or None for no momentum buffer.
    nesterov: whether to use the Nesterov form of the momentum.
    bias_correction: whether to divide the averages by :math:`1-\rho^t`.

  Returns:
    An `optax.GradientTransformation` (a chain of `scale_by_rms` or `scale_by_stddev`,
    `scale_by_learning_rate` and, with a momentum, `trace`).

  Example:
    >>> from jaxopt_lab import optim
    >>> # PyTorch's torch.optim.RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9):
    >>> opt = optim.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.9)

  References:
    Tieleman & Hinton, `Lecture 6.5 - RMSProp: Divide the gradient by a running average of its
    recent magnitude <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_,
    COURSERA: Neural Networks for Machine Learning, 2012

    Graves, `Generating Sequences With Recurrent Neural Networks
    <https://arxiv.org/abs/1308.0850>`_, 2013

  .. warning::
    PyTorch: `torch.optim.RMSprop` adds `eps` *outside* the square root; the default here (as in
    Optax) adds it inside. `rmsprop(lr, decay=alpha, eps=eps, eps_in_sqrt=False,
    centered=centered, momentum=m)` reproduces `torch.optim.RMSprop(params, lr, alpha, eps,
    momentum=m, centered=centered)` with a constant learning rate (torch's default `alpha` is
    0.99, ours 0.9; torch's momentum buffer also starts at zero). With a learning-rate schedule
    they differ: torch accumulates unscaled steps and multiplies the buffer by the current
    rate, this accumulates steps already scaled by their own rate. Torch has no Nesterov
    RMSprop and no bias correction; its `weight_decay=λ` is coupled L2
    (`optax.chain(add_decayed_weights(λ), rmsprop(...))`).
  """
  _checks.check(learning_rate, 'learning_rate', 'nonnegative')
  _checks.check(decay, 'decay', 'unit_closed')
  _checks.check(eps, 'eps', 'nonnegative')
  _checks.check(initial_scale, 'initial_scale', 'nonnegative')
  scale_by = rms.scale_by_stddev if centered else rms.scale_by_rms
  if momentum is None:
    last = optax.identity()
  else:
    _checks.check(momentum, 'momentum', 'unit_open')
    last = transform.trace(decay=momentum, nesterov=nesterov)
  return optax.chain(
      scale_by(
          decay=decay,
          eps=eps,
          initial_scale=initial_scale,
          eps_in_sqrt=eps_in_sqrt,
          bias_correction=bias_correction,
      ),
      transform.scale_by_learning_rate(learning_rate),
      last,
  )
