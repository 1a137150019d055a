"""Adaptive designs: the design registry, the stage contract, the stage runner and the built-ins
(successive halving, Hyperband, PBT, Optuna batches), each declared as a user's design is.

A user's design (`examples/median_stopping.py`) needs only what is named here:

  from jaxopt_lab.sweep import adaptive
  my_design = adaptive.declare(MyPolicy, settings=[adaptive.Setting('rungs', 4, low=1)])
"""

from jaxopt_lab.sweep.adaptive.registry import Design, Setting, declare, register
from jaxopt_lab.sweep.adaptive.stages import Policy, Stage

__all__ = ["Design", "Policy", "Setting", "Stage", "declare", "register"]
