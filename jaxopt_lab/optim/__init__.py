"""Optimizers written from scratch as `optax.GradientTransformation`s, schedules and clipping.

Every numeric hyperparameter may be a traced array, so a sweep builds the optimizer inside its
vmapped step and compiles once for all values (see `factory.build`).
"""

from jaxopt_lab.optim.alias import adam, adamw, rmsprop, sgd
from jaxopt_lab.optim.clipping import clip_by_global_norm, global_norm
from jaxopt_lab.optim.factory import (
    OPTIMIZERS,
    SCHEDULES,
    VALUE_FACTORS,
    build,
    default_config,
    hparam_names,
    hparams_from_config,
)
from jaxopt_lab.optim.schedules import (
    constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_stable_decay_schedule,
)
from jaxopt_lab.optim.transform import (
    AddDecayedWeightsState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByScheduleState,
    ScaleByStddevState,
    TraceState,
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_stddev,
    trace,
)

__all__ = [
    'OPTIMIZERS',
    'SCHEDULES',
    'VALUE_FACTORS',
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
    'clip_by_global_norm',
    'constant_schedule',
    'default_config',
    'global_norm',
    'hparam_names',
    'hparams_from_config',
    'rmsprop',
    'scale_by_adam',
    'scale_by_learning_rate',
    'scale_by_rms',
    'scale_by_stddev',
    'sgd',
    'trace',
    'warmup_cosine_decay_schedule',
    'warmup_stable_decay_schedule',
]
