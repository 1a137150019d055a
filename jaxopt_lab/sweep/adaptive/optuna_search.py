"""The 'optuna' design: batched model-based proposals through Optuna's ask / tell interface.

Each group runs `sweep.adaptive.rounds` rounds. A round asks Optuna's sampler for
`sweep.adaptive.batch` trials (value points), trains them (times `sweep.replicates` seeds) from
step 0 to `train.steps` as one compiled program, the same program every round, and tells each
trial the mean over its replicates of the tuning metric (`sweep.metric` on the valid split, signed
so that lower is better: the study minimizes). The design enumerates the `rounds x batch x
replicates` points in advance; round r trains positions [r*batch*R, (r+1)*batch*R) of
`group.points` (value point major, replicate minor), their values unknown until asked.

The study of a group is named after the group and lives in `optuna.db` (SQLite) in the experiment
directory, so `optuna.load_study`, Optuna's visualisations and `optuna-dashboard` read it. Each
trial carries the user attributes `round`, `slot` (its place in the round) and `points` (its rows
of design.csv).

Samplers (`sweep.adaptive.sampler`), each seeded from `sweep.seed`:

  tpe     TPESampler, multivariate; round 0 is its random start-up (n_startup_trials = batch) and
          its constant liar spreads the trials of a batch (asked before any is told).
  cmaes   CmaEsSampler with one generation per round (popsize = batch, so batch >= 4), the
          first in round 1 from the centre of the ranges (round 0 is drawn at random: Optuna
          learns the search space from complete trials); needs the package `cmaes`.
          Categorical factors (`values`) are drawn at random.
  gp      GPSampler (needs PyTorch, which the extra does not install: `pip install torch`);
          round 0 is its random start-up; it accounts for the running trials of a batch.
  qmc     QMCSampler, scrambled Sobol (Optuna draws the study's very first trial at random).
  random  RandomSampler.

A diverged point scores inf; a trial with a non-finite score in any replicate is told +inf as a
COMPLETE value, not FAIL: TPE and GP ignore failed trials (they would learn nothing of the region
that diverged) and CMA-ES completes a generation only with `popsize` complete trials. TPE and
CMA-ES rank values; GP clips inf to the worst finite value.

Resuming: the driver replays `first()` and `next()` for the finished stages, so both are
idempotent against the study. A round whose trials exist is read back (the same values), a trial
already told is not told again, and a round interrupted while asking keeps its asked trials and
asks only the missing slots. The sampler asking slot s of round r is seeded from (sweep.seed, r,
s), so a resumed search asks what an uninterrupted one would have asked. A trial left RUNNING
without its `round` attribute (a kill inside `ask`) never trained: it is told FAIL and its slot
asked again.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxopt_lab import expdir
from jaxopt_lab.sweep import factors, space
from jaxopt_lab.sweep.adaptive import registry, stages

SAMPLERS = ("tpe", "cmaes", "gp", "qmc", "random")
INSTALL = "pip install 'jaxopt_lab[optuna]'"
# The study's user attribute that records the settings it was made with (checked on resume).
SETTINGS_ATTR = "jaxopt_lab"
# CMA-ES's smallest population (its default, 4 + 3 ln n, in one dimension): with 2 or 3 points
# only the best one recombines and the rank-mu update of the covariance vanishes.
CMAES_MIN_BATCH = 4


def _import_optuna() -> Any:
  """Optuna, imported when the design is used (the base install does not need it)."""
  try:
    import optuna
  except ImportError as e:
    raise ValueError(f"sweep.design: 'optuna' needs the optional extra: {INSTALL}") from e
  return optuna


def _check_packages(sampler: str) -> None:
  """Optuna, and what the sampler needs beyond it, are installed."""
  _import_optuna()
  if sampler == "cmaes":
    try:
      import cmaes  # noqa: F401
    except ImportError as e:
      raise ValueError(f"sweep.adaptive.sampler: 'cmaes' needs the package cmaes: {INSTALL}") from e
  if sampler == "gp":
    try:
      import torch  # noqa: F401
    except ImportError as e:
      raise ValueError("sweep.adaptive.sampler: 'gp' (Optuna's GPSampler) needs PyTorch: "
                       "pip install torch") from e


def search_factors(config: ml_collections.ConfigDict) -> tuple[factors.Factor, ...]:
  """The factors the search proposes (the sweep's vmapped value factors), after `validate`'s
  checks; raises a one-line ValueError naming the field."""
  # Checks the declared settings (sampler, batch, rounds) and that a value factor is swept.
  sweep_space = space.parse_space(config.sweep)
  sampler, batch = sweep_space.adaptive["sampler"], sweep_space.adaptive["batch"]
  if sampler == "cmaes" and batch < CMAES_MIN_BATCH:
    raise ValueError(f"sweep.adaptive.batch: 'cmaes' runs one CMA-ES generation of `batch` "
                     f"points per round and needs batch >= {CMAES_MIN_BATCH}, got {batch}.")
  _check_packages(sampler)
  factors.check_ranges(sweep_space, config.optimizer.name)
  return sweep_space.vmapped


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the settings of the 'optuna' design; raises a one-line ValueError naming the field.

  Reads `sweep.adaptive` (sampler, batch, rounds) and `sweep.factors`; checks that Optuna (and
  the sampler's own dependency) is installed. Writes nothing.
  """
  search_factors(config)


def distributions(factors: Sequence[factors.Factor]) -> dict[str, Any]:
  """Optuna's distribution of each factor: a range (log scale: log=True; 'int': integers) or
  its listed values (categorical)."""
  optuna = _import_optuna()
  out = {}
  for f in factors:
    if f.values is not None:
      out[f.name] = optuna.distributions.CategoricalDistribution(list(f.values))
    elif f.scale == "int":
      out[f.name] = optuna.distributions.IntDistribution(int(f.low), int(f.high))
    else:
      out[f.name] = optuna.distributions.FloatDistribution(f.low, f.high, log=f.scale == "log")
  return out


def storage_url(workdir: str | os.PathLike) -> str:
  """The SQLAlchemy URL of the experiment's study file (`optuna.load_study(storage=...)`)."""
  return "sqlite:///" + os.path.abspath(os.path.join(os.fspath(workdir), expdir.OPTUNA_FILE))


def trial_seed(seed: int, round_: int, slot: int) -> int:
  """The seed of the sampler that asks slot `slot` of round `round_`."""
  return int(np.random.SeedSequence([seed, round_, slot]).generate_state(1)[0])


def make_sampler(name: str, seed: int, batch: int, round_: int, slot: int) -> Any:
  """The Optuna sampler that asks slot `slot` of round `round_` (see the module docstring)."""
  optuna = _import_optuna()
  s = trial_seed(seed, round_, slot)
  samplers = optuna.samplers
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
      return samplers.TPESampler(multivariate=True, n_startup_trials=batch, constant_liar=True,
                                 seed=s)
    if name == "cmaes":
      return samplers.CmaEsSampler(popsize=batch, n_startup_trials=0, seed=s,
                                   warn_independent_sampling=False)
    if name == "gp":
      return samplers.GPSampler(n_startup_trials=batch, seed=s)
    if name == "qmc":
      # One seed for the whole study: the scrambled sequence must be the same for every trial.
      return samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
    if name == "random":
      return samplers.RandomSampler(seed=s)
  raise ValueError(f"sweep.adaptive.sampler: unknown sampler {name!r}; choices: "
                   f"{', '.join(SAMPLERS)}.")


def trial_value(scores: np.ndarray) -> float:
  """What a trial is told: the mean of its replicates' scores; +inf if any is not finite."""
  scores = np.asarray(scores, np.float64)
  return float(scores.mean()) if np.all(np.isfinite(scores)) else math.inf


class Policy:
  """The 'optuna' design's decisions for one group (a `stages.Policy`): one stage per round.

  Args:
    group: the group (`grouping.Group`: name, config, points, hparams), its points the design's
      `rounds x batch x replicates`, round-major, then value point, then replicate.
    config: the experiment's config (reads `sweep`).
    workdir: the experiment directory (the study is in its `optuna.db`).
  """

  def __init__(self, group: Any, config: ml_collections.ConfigDict,
               workdir: str | os.PathLike):
    self.factors = search_factors(config)
    optuna = _import_optuna()
    self._optuna = optuna
    adaptive = config.sweep.adaptive
    self.group = group
    self.sampler, self.batch, self.rounds = adaptive.sampler, adaptive.batch, adaptive.rounds
    self.seed = int(config.sweep.seed)
    self.distributions = distributions(self.factors)
    n = len(group.points)
    self.replicates = n // (self.rounds * self.batch)
    if n == 0 or n != self.rounds * self.batch * self.replicates or any(
        p.replicate != i % self.replicates for i, p in enumerate(group.points)):
      raise ValueError(
          f"sweep.design: group {group.name!r} has {n} points; the 'optuna' design needs "
          f"rounds x batch x replicates ({self.rounds} x {self.batch} x R) of them, replicate "
          "minor.")
    for f in self.factors:
      if f.name not in group.hparams:
        raise ValueError(f"sweep.factors.{f.name}: group {group.name!r} has no hyperparameter "
                         f"{f.name!r}; its hyperparameters: {', '.join(group.hparams)}")
    self.study = optuna.create_study(
        storage=optuna.storages.RDBStorage(storage_url(workdir)), study_name=group.name,
        direction="minimize", load_if_exists=True)
    self._check_settings(config)
    self._fail_orphans()

  def _settings(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"sampler": self.sampler, "batch": self.batch, "rounds": self.rounds,
            "seed": self.seed, "replicates": self.replicates,
            "metric": f"{config.sweep.metric} on the valid split, mean over replicates, signed "
                      "so that lower is better",
            "space": {k: repr(d) for k, d in self.distributions.items()}}

  def _check_settings(self, config: ml_collections.ConfigDict) -> None:
    """Records the settings in a new study; refuses to continue a study made with others."""
    settings = json.loads(json.dumps(self._settings(config)))
    stored = self.study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
      self.study.set_user_attr(SETTINGS_ATTR, settings)
    elif stored != settings:
      changed = sorted(k for k in settings if stored.get(k) != settings[k])
      raise ValueError(
          f"sweep.adaptive: {expdir.OPTUNA_FILE} holds study {self.group.name!r} made with other "
          f"settings ({', '.join(changed)} differ); use a new workdir.")

  def _fail_orphans(self) -> None:
    """A RUNNING trial without a round was left by a kill inside `ask`: it never trained."""
    for t in self.study.get_trials(deepcopy=False, states=(self._state.RUNNING,)):
      if "round" not in t.user_attrs:
        self.study.tell(t.number, state=self._state.FAIL)

  @property
  def _state(self) -> Any:
    return self._optuna.trial.TrialState

  def _round_trials(self, round_: int) -> dict[int, Any]:
    """Slot -> trial (a FrozenTrial) of the round's trials in the study."""
    return {t.user_attrs["slot"]: t for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("round") == round_}

  def _slots(self, round_: int) -> np.ndarray:
    size = self.batch * self.replicates
    return np.arange(round_ * size, (round_ + 1) * size)

  def _stage(self, round_: int) -> stages.Stage:
    """Round `round_`: its trials read back, or asked for the slots that have none."""
    slots = self._slots(round_)
    asked = self._round_trials(round_)
    for slot in range(self.batch):
      if slot in asked:
        continue
      self.study.sampler = make_sampler(self.sampler, self.seed, self.batch, round_, slot)
      trial = self.study.ask(self.distributions)
      ids = slots[slot * self.replicates:(slot + 1) * self.replicates]
      trial.set_user_attr("points", [int(self.group.points[i].point) for i in ids])
      trial.set_user_attr("slot", slot)
      trial.set_user_attr("round", round_)  # last: a trial with a round is complete
    trials = self._round_trials(round_)
    hparams = {k: np.asarray(v, np.float32)[slots].copy() for k, v in self.group.hparams.items()}
    for f in self.factors:
      values = [trials[s].params[f.name] for s in range(self.batch)]
      hparams[f.name] = np.repeat(np.asarray(values, np.float32), self.replicates)
    first, last = trials[0].number, trials[self.batch - 1].number
    note = (f"optuna round {round_ + 1} of {self.rounds}: {self.batch} trials of "
            f"{self.sampler} (trials {first}-{last})")
    return stages.Stage(index=round_, slots=slots, end=int(self.group.config.train.steps),
                        source=None, hparams=hparams, note=note)

  def first(self) -> stages.Stage:
    """Round 0."""
    return self._stage(0)

  def next(self, stage: stages.Stage, scores: np.ndarray) -> stages.Stage | None:
    """Tells round `stage.index` its scores (once), then the next round; None after the last."""
    round_ = stage.index
    scores = np.asarray(scores, np.float64)
    if scores.shape != (self.batch * self.replicates,):
      raise ValueError(f"optuna round {round_}: {scores.shape} scores for "
                       f"{self.batch * self.replicates} slots.")
    trials = self._round_trials(round_)
    if sorted(trials) != list(range(self.batch)):
      raise ValueError(f"{expdir.OPTUNA_FILE}: study {self.group.name!r} holds slots "
                       f"{sorted(trials)} of round {round_}, not the {self.batch} it asked.")
    per_trial = scores.reshape(self.batch, self.replicates)
    for slot in range(self.batch):
      t = trials[slot]
      if t.state == self._state.RUNNING:
        self.study.tell(t.number, trial_value(per_trial[slot]), skip_if_finished=True)
    if round_ + 1 >= self.rounds:
      return None
    return self._stage(round_ + 1)


def round_points(sweep_space: space.Space, steps: int | None, draw: Callable[..., Any]
                 ) -> list[tuple[dict[str, float], dict[str, int]]]:
  """`rounds x batch` value points, their values NaN until the sampler proposes them, tagged
  with their round (design.csv's `round` column)."""
  names, a = [f.name for f in sweep_space.vmapped], sweep_space.adaptive
  return [(dict.fromkeys(names, math.nan), {expdir.ROUND_COLUMN: r})
          for r in range(a["rounds"]) for _ in range(a["batch"])]


def _optuna(group: Any, settings: Mapping[str, Any], workdir: str) -> Policy:
  return Policy(group, group.config, workdir)


optuna = registry.declare(
    _optuna, name="optuna", initial=(), points=round_points, tag=expdir.ROUND_COLUMN,
    check=lambda config, settings: validate(config), settings=[
        registry.Setting("sampler", "tpe", choices=SAMPLERS),
        registry.Setting("batch", 8, low=1), registry.Setting("rounds", 4, low=1)])
