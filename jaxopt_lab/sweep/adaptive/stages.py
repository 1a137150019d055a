"""Adaptive designs as stages of one group's compiled population.

A fixed design trains every point of a group from step 0 to `train.steps` in one go. An adaptive
design trains a group in **stages**: a stage is a set of slots (the population the compiled
program runs), each slot one point of the group, trained to the stage's end step. Between two
stages the design's `Policy` looks at the scores the stage reached and says what the next stage
is: which points train on (successive halving keeps the best 1/eta), from whose state (population-
based training's exploit copies a better point's state), with which values (its explore
perturbs them) and up to which step; or fresh points from step 0 (a Hyperband bracket, an Optuna
round). Every move between stages is a gather over the point axis of the population on the
device; nothing else changes, so a slot trains exactly as the same point of a fixed design.

A policy is deterministic given the scores it is shown (random choices come from generators
seeded by the design's seed and the stage's index; Optuna's from its stored study), so a resumed
run replays the finished stages from the rows on disk and continues the interrupted one from its
checkpoint: the same survivors, the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

# What a rung may rank its points by (`sweep.adaptive.rank_by`; `Stage.rank_by`).
RANK_BY = ("last", "cooldown", "extrapolated")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stretch of a group's training between two decisions of an adaptive design.

  Attributes:
    index: 0, 1, ...; the stage's checkpoints live in `checkpoints/<group>/stage-<index>`.
    slots: [S] int, the positions in `group.points` of the points that train in this stage (a
      point appears at most once).
    end: the step the stage trains its slots to.
    source: [S] int or None. For each slot, the position in the previous stage's `slots` whose
      final state it continues from (a survivor continues from itself; PBT's exploit names a
      better point). None: every slot starts fresh, initialised from its seed at step 0.
    hparams: value hyperparameter -> [S] float32, the slots' values from this stage on; None:
      the values they had (the design's values for fresh slots).
    note: what the stage is, for the log and the record ("rung 1 of 3: 9 of 27 points").
    rank_by: how the runner scores the slots for `Policy.next` (`RANK_BY`; `ranking`): 'last', the
      valid metric at `end`; 'cooldown', that of a fork of each state decayed to zero over
      `fork_steps` more steps; 'extrapolated', a power law fitted to each valid curve so far,
      at `horizon`.
    fork_steps: the cooldown fork's length (rank_by 'cooldown').
    horizon: the step the extrapolation predicts (rank_by 'extrapolated'; 0: `train.steps`).
    eval_every: the stage's evaluation interval (0: `train.eval_every`): an extrapolating rung
      fits a curve of several evaluations; the stages after it need only the run's own.
  """

  index: int
  slots: np.ndarray
  end: int
  source: np.ndarray | None = None
  hparams: dict[str, np.ndarray] | None = None
  note: str = ""
  rank_by: str = "last"
  fork_steps: int = 0
  horizon: int = 0
  eval_every: int = 0


class Policy(Protocol):
  """An adaptive design's decisions for one structural group.

  `next` must be a function of its arguments (and of state the policy keeps on disk, like an
  Optuna study): the driver calls it again for finished stages when a run resumes. A policy
  may say `narrowest`, the fewest points any of its stages trains: the runner's slices are no
  wider (else the first stage's size), so no stage computes points out of use.
  """

  def first(self) -> Stage:
    """The first stage (fresh slots from step 0)."""

  def next(self, stage: Stage, scores: np.ndarray) -> Stage | None:
    """The stage after `stage`, or None when the group is done.

    Args:
      stage: the stage that just finished.
      scores: [S] float64, the slots' tuning metric at `stage.end` (`sweep.metric` on the valid
        split), signed so that lower is better; inf for a diverged slot.
    """
