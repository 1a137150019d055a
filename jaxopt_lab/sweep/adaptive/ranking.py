"""What a rung ranks its points by: the last value, a cooldown fork's, or an extrapolation.

Successive halving ranks its points at a rung by the valid metric they reached there ('last').
Early in training that ranking favours learning rates too high for the full horizon (the
short-horizon bias, Wu et al., 2018): `benchmarks/adaptive_study.py` saw a rate one grid step
too high lead at step 12 of 108 and fall behind by step 54. Two rankings look at the horizon:

* 'cooldown' (`cooldown_scores`): each live point's state is forked (copied on the devices), the
  fork trains `fork_steps` more steps with the schedule decaying linearly to zero from its value
  at the rung (`optim.with_cooldown`; Hägele et al., 2024: a cooldown from any step of a stable
  phase matches a full run of that length), its valid metric ranks the point, and the fork is
  discarded: the survivors continue from the state it forked, unchanged. The fork runs through
  the group's own compiled program (the fork's start and length are two more traced values of
  each point, `train.COOLDOWN_KEYS`), so it compiles nothing new but chunk lengths. Its points x
  steps count as training; its rows go to stages.csv (kind 'cooldown').
* 'extrapolated' (`extrapolate`): a saturating power law L(t) = c + a t^-alpha fitted to each
  point's valid curve so far (least squares on log L; Domhan et al., 2015 use a mixture of such
  curves), ranked by its value at the horizon. Where it cannot be fitted (fewer than 3
  evaluations after step 0, a metric that is maximised, a failed fit), the point's last value
  ranks it and stages.csv's `ranked_by` says why.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxopt_lab import train
from jaxopt_lab.sweep import grouping, programs, store
from jaxopt_lab.sweep.adaptive import stages
from jaxopt_lab.tasks import textmetrics

MIN_EVALUATIONS = 3  # the power law's parameters


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(t) = c + a t^-alpha."""

  c: float
  a: float
  alpha: float

  def __call__(self, t: float | np.ndarray) -> float | np.ndarray:
    return self.c + self.a * np.power(t, -self.alpha)


def fit_power_law(steps: Sequence[float], values: Sequence[float]) -> PowerLaw | str:
  """The saturating power law through a decreasing curve, or why there is none.

  Minimises sum_i (log(c + a t_i^-alpha) - log L_i)^2 over c >= 0, a >= 0, alpha in
  [0.01, 4] (trust-region reflective least squares, `scipy.optimize.least_squares`): relative
  errors, so the late, flat part of a curve weighs as much as its steep start.

  Args:
    steps: the evaluation steps, > 0.
    values: the metric there, > 0 (a loss).

  Returns:
    The fit, or a one-line reason it failed (recorded in stages.csv).
  """
  t, y = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  ok = np.isfinite(y) & (t > 0)
  t, y = t[ok], y[ok]
  if len(t) < MIN_EVALUATIONS:
    return f"{len(t)} valid evaluations after step 0 (the fit needs {MIN_EVALUATIONS})"
  if np.any(y <= 0):
    return "a non-positive value (the power law fits a positive loss)"
  c0 = 0.5 * y.min()
  alpha0 = 0.5
  a0 = max((y[0] - c0) * t[0] ** alpha0, 1e-12)

  def residual(x):
    c, a, alpha = x
    return np.log(np.maximum(c + a * t ** -alpha, 1e-300)) - np.log(y)

  try:
    fit = optimize.least_squares(residual, [c0, a0, alpha0],
                                 bounds=([0.0, 0.0, 0.01], [np.inf, np.inf, 4.0]),
                                 xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
  except (ValueError, FloatingPointError) as e:
    return f"the fit failed ({e})"
  if not fit.success or not np.all(np.isfinite(fit.x)):
    return f"the fit did not converge ({fit.message})"
  return PowerLaw(*map(float, fit.x))


def extrapolate(st: store.Store, ids: Sequence[int], step: int, horizon: int,
                last: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """Each point's valid metric predicted at `horizon` from its curve up to `step`.

  Args:
    st: the store (its rows hold the curves).
    ids: the points.
    step: the rung.
    horizon: the step to predict.
    last: [n] the points' signed scores at `step` (`runner`'s: inf when diverged).

  Returns:
    ([n] signed scores, lower is better: the prediction, or `last` where the fit fails or the
    point diverged; [n] what ranked each point: 'extrapolated' or 'last (<reason>)').
  """
  metric = st.config.sweep.metric
  maximised = st.metric_modes.get(metric) == "max"
  curves: dict[int, list[tuple[int, float]]] = {int(i): [] for i in ids}
  for r in st.rows:
    if r["split"] == "valid" and 0 < r["step"] <= step and r["point"] in curves:
      curves[r["point"]].append((r["step"], float(r.get(metric, math.nan))))
  scores, how = np.array(last, np.float64), []
  for j, i in enumerate(ids):
    if not np.isfinite(last[j]):
      how.append("last (diverged)")
      continue
    if maximised:
      how.append(f"last ({metric} is maximised; the power law fits a decreasing loss)")
      continue
    t, y = zip(*sorted(curves[int(i)]), strict=True) if curves[int(i)] else ((), ())
    fit = fit_power_law(t, y)
    if isinstance(fit, str):
      how.append(f"last ({fit})")
      continue
    scores[j] = float(fit(horizon))
    how.append("extrapolated")
  return scores, how


def _copy(pop: programs.Population) -> programs.Population:
  """A copy of `pop` on the devices (the chunk program donates its input; the original stays)."""
  return jax.jit(lambda p: jax.tree.map(jnp.copy, p))(pop)


@dataclasses.dataclass
class Fork:
  """A rung's cooldown fork: what it scored and spent.

  Attributes:
    scores: [n] signed scores (lower is better), inf where the fork diverged.
    values: [n] the valid metric as the task reports it.
    points_steps: n x fork steps.
    seconds: its wall time, compiles left out.
  """

  scores: np.ndarray
  values: np.ndarray
  points_steps: int
  seconds: float


def cooldown_scores(run: programs.GroupPrograms, sub: grouping.Group, pop: programs.Population,
                    stage: stages.Stage, st: store.Store) -> Fork:
  """Forks `pop` (the stage's population at `stage.end`), decays each fork's schedule to zero
  over `stage.fork_steps` steps, and scores the forks' valid metric; `pop` is not touched.

  Args:
    run: the stage's programs (with `train.COOLDOWN_KEYS` among its values), placed for `sub`.
    sub: the stage's group; its cooldown values must be off (`train.COOLDOWN_OFF`).
    pop: the stage's final population.
    stage: the stage ('cooldown', `fork_steps` > 0).
    st: the store (the metric and its mode).
  """
  n, begin, steps = len(sub.points), stage.end, stage.fork_steps
  start_key, steps_key = train.COOLDOWN_KEYS
  hparams = dict(sub.hparams, **{start_key: np.full(n, begin, np.float32),
                                 steps_key: np.full(n, steps, np.float32)})
  compiled_before, started = run.compile_seconds, time.perf_counter()
  run.place(dataclasses.replace(sub, hparams=hparams))
  fork = _copy(pop)
  step, per_call = begin, int(sub.config.train.steps_per_call)
  while step < begin + steps:
    k = min(per_call, begin + steps - step)
    fork, _ = run.run_chunk(fork, run.device_batches(step, k))
    step += k
  values = programs.to_host(run.evaluate(fork.state.params))
  values = textmetrics.score_generated(sub.task, {k: np.asarray(v)[:n] for k, v in
                                                  values.items()})
  alive = np.asarray(programs.to_host(fork.alive))[:n]
  run.place(sub)  # the survivors train on with the cooldown off
  raw = np.asarray(values[f"valid_{st.config.sweep.metric}"], np.float64)
  seconds = time.perf_counter() - started - (run.compile_seconds - compiled_before)
  return Fork(signed(st, raw, alive), raw, n * steps, seconds)


def signed(st: store.Store, values: np.ndarray, alive: np.ndarray) -> np.ndarray:
  """`values` of `sweep.metric` as scores a rung ranks by: lower is better (a maximised metric
  negated), inf where the point diverged or the value is not finite."""
  sign = -1.0 if st.metric_modes.get(st.config.sweep.metric) == "max" else 1.0
  out = sign * np.asarray(values, np.float64)
  return np.where(np.isfinite(out) & alive, out, np.inf)
