"""Optimizers written from scratch as `optax.GradientTransformation`s, schedules and clipping.

The optimizer registry (`declare`, `register`, `Value`, `Flag`) is how an optimizer, built in or
a user's, tells the factory and the sweep its value hyperparameters and structural flags; the
math test kit is `jaxopt_lab.optim.testing`.

Every numeric hyperparameter may be a traced array, so a sweep builds the optimizer inside its
vmapped step and compiles once for all values (see `factory.build`).
"""

from jaxopt_lab.optim.alias import adam, adamw, rmsprop, sgd
from jaxopt_lab.optim.clipping import clip_by_global_norm, global_norm
from jaxopt_lab.optim.factory import (
    SCHEDULES,
    build,
    check_traceable,
    hparam_names,
    hparams_from_config,
    value_factors,
)
from jaxopt_lab.optim.registry import Flag, Optimizer, Value, declare, register, registered
from jaxopt_lab.optim.rms import ScaleByRmsState, ScaleByStddevState, scale_by_rms, scale_by_stddev
from jaxopt_lab.optim.schedules import (
    constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_stable_decay_schedule,
    with_cooldown,
)
from jaxopt_lab.optim.transform import (
    AddDecayedWeightsState,
    ScaleByAdamState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)

__all__ = [
    'SCHEDULES',
    'Flag',
    'Optimizer',
    'Value',
    'AddDecayedWeightsState',
    'ScaleByAdamState',
    'ScaleByRmsState',
    'ScaleByScheduleState',
    'ScaleByStddevState',
    'TraceState',
    'adam',
    'adamw',
    'add_decayed_weights',
    'build',
    'check_traceable',
    'clip_by_global_norm',
    'constant_schedule',
    'declare',
    'global_norm',
    'hparam_names',
    'hparams_from_config',
    'register',
    'registered',
    'rmsprop',
    'scale_by_adam',
    'scale_by_learning_rate',
    'scale_by_rms',
    'scale_by_stddev',
    'sgd',
    'trace',
    'value_factors',
    'warmup_cosine_decay_schedule',
    'warmup_stable_decay_schedule',
    'with_cooldown',
]
