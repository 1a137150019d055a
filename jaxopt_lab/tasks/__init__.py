"""Tasks: a model, its data, its loss and its metrics, looked up by name.

A ``Task`` holds pure functions only (no modules, no mutable state), so the trainer can ``jit``,
``vmap`` (over design points) and ``lax.scan`` (over steps) them directly:

=============== ============================ ======================= ========================
task            model                        data                    loss
=============== ============================ ======================= ========================
classic         logistic regression, 10 in   planted linear rule     log-sigmoid BCE
breast_cancer   logistic regression, 30 in   sklearn breast cancer   log-sigmoid BCE
digits          MLP 64-256-256-10            sklearn digits          softmax cross-entropy
lm              decoder-only transformer     bytes of text files     next-byte cross-entropy
=============== ============================ ======================= ========================

``build(config)`` reads ``config.task``, ``config.model`` and ``config.data``; the defaults of each
task are ``default_model_config(task)`` and ``default_data_config(task)``. With
``config.eval.generation`` on, the LM is also scored by BLEU and ROUGE-L of greedy continuations
of held-out prompts (``textmetrics``). Loading is cached, so
``build`` is cheap to call again. Losses and metrics are computed in float32 whatever the model's
compute dtype.

The built-ins are registered with ``register(name, builder)``, the call a user makes too; a
config may also name a builder in a user's file, ``config.task = 'path/to/my_task.py:get_task'``
(or ``'package.module:get_task'``), loaded when first named: ``get_task(config.model,
config.data)`` returns a ``Task`` (``classifier_task`` builds one from a model and splits; see
examples/wine_task.py).

The package: ``registry`` (``Task``, ``register``, ``resolve``, ``build``), one module per task
family (``classic``: the classifiers; ``lm``: the byte LM), each registering its built-ins, and
``textmetrics`` (the LM's generation metrics). ``defaults.TASKS`` names the built-ins for the
JAX-free default configs (a test keeps it equal to the registry's).
"""

from jaxopt_lab.defaults import (
    LM_SIZES,
    TASKS,
    default_data_config,
    default_model_config,
    lm_size_config,
)
from jaxopt_lab.losses import binary_loss, mean_over_batches, softmax_loss
from jaxopt_lab.tasks import classic, lm, textmetrics
from jaxopt_lab.tasks.classic import classifier_task
from jaxopt_lab.tasks.registry import (
    Batch,
    Params,
    Task,
    TaskBuilder,
    build,
    register,
    registered,
    resolve,
)

__all__ = [
    'LM_SIZES',
    'TASKS',
    'Batch',
    'Params',
    'Task',
    'TaskBuilder',
    'binary_loss',
    'build',
    'classic',
    'classifier_task',
    'default_data_config',
    'default_model_config',
    'lm',
    'lm_size_config',
    'mean_over_batches',
    'register',
    'registered',
    'resolve',
    'softmax_loss',
    'textmetrics',
]
