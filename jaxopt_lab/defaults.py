"""Default configs as plain data: loading an experiment config imports no JAX, Flax or driver.

Every group of `configs.base_config` comes from here: `model` and `data` per task,
`optimizer`, `train`, `eval` and `sweep`. Each field has a one-line comment. The library reads these
fields; it keeps no defaults of its own elsewhere (an optimizer's own hyperparameters, which
the config may leave out, take the defaults of its declaration in `optim.registry`).
"""

from __future__ import annotations

import ml_collections

TASKS = ('classic', 'breast_cancer', 'digits', 'lm')
LM_SIZES = ('tiny', 'small')
COMPUTE_DTYPE = 'float32'  # the compute dtype of a model config that names none (a plugin task's)


def compute_dtype(config: ml_collections.ConfigDict) -> str:
  """The compute dtype of `config.model` (`COMPUTE_DTYPE` where it has no `dtype` field)."""
  return str(config.model.get('dtype', COMPUTE_DTYPE))


def _is_plugin(task: str) -> bool:
  """A task named 'path/to/my_task.py:get_task' or 'package.module:get_task'; else a built-in
  (a ValueError listing the built-ins and the plugin forms where it is none)."""
  if isinstance(task, str) and ':' in task:
    return True
  if task not in TASKS:
    raise ValueError(f"task: unknown task {task!r}; registered: {', '.join(TASKS)}; or a plugin: "
                     "'path/to/file.py:name' or 'package.module:name'")
  return False


def lm_size_config(size: str) -> ml_collections.ConfigDict:
  """Model and data configs of an LM size: ``ConfigDict(model=..., data=...)``.

  'tiny' (0.44M parameters) trains on a CPU in minutes; 'small' (25.6M parameters) is worth a
  GPU. Both compute in float32; bfloat16 is opt-in (experiments/lm_small.py). On an H200, 'small'
  ran a step in 27 ms in float32 (TF32 matmuls) and in 83 ms in bfloat16, 76 ms of which was the
  embedding gradient's bf16 scatter-add, since moved to float32 (benchmarks/README.md).
  """
  sizes = {
      # width, depth, heads, context, batch_size, eval_batch_size, dtype
      'tiny': (128, 2, 4, 128, 16, 64, 'float32'),
      'small': (512, 8, 8, 512, 32, 32, 'float32'),
  }
  if size not in sizes:
    raise ValueError(f"lm_size_config: unknown size {size!r}; valid choices: {', '.join(sizes)}")
  width, depth, heads, context, batch_size, eval_batch_size, dtype = sizes[size]
  model = ml_collections.ConfigDict()
  model.vocab = 256  # Vocabulary: bytes.
  model.width = width  # Residual stream width; a multiple of heads.
  model.depth = depth  # Number of transformer blocks.
  model.heads = heads  # Attention heads.
  model.context = context  # Tokens per training window.
  model.positions = 'learned'  # 'learned' (added table) or 'rope' (rotary).
  model.norm = 'rmsnorm'  # 'rmsnorm' or 'layernorm' (pre-norm blocks and final norm).
  model.dtype = dtype  # Compute dtype, 'float32' or 'bfloat16'; params stay float32.
  model.attention = 'dense'  # 'dense' (einsums) or 'fused' (jax.nn.dot_product_attention).
  model.parametrization = 'sp'  # 'sp' (GPT-2's) or 'mup' (Yang et al. 2022; see base_width).
  model.base_width = width  # 'mup': the width at which it equals 'sp' (a multiple of heads).
  model.qk_norm = False  # Layer-normalise each head's queries and keys (Wortsman et al. 2023).
  data = ml_collections.ConfigDict()
  data.batch_size = batch_size  # Windows per training step.
  data.paths = ''  # Comma-separated text files/dirs/globs; '' = the Python stdlib's .py files.
  data.byte_budget = 8_000_000  # At most this many bytes of text are loaded.
  data.valid_fraction = 0.1  # Share of the bytes (whole files) in the valid split.
  data.test_fraction = 0.1  # Share of the bytes (whole files) in the test split.
  data.eval_windows = 256  # Windows evaluated per held-out split (evenly spaced, fixed).
  data.eval_batch_size = eval_batch_size  # Windows per evaluation batch.
  return ml_collections.ConfigDict({'model': model, 'data': data})


def default_model_config(task: str) -> ml_collections.ConfigDict:
  """The default ``config.model`` of ``task`` (empty for a plugin task: it reads its own)."""
  if _is_plugin(task):
    return ml_collections.ConfigDict()
  if task == 'lm':
    return lm_size_config('tiny').model
  model = ml_collections.ConfigDict()
  if task == 'digits':
    model.hidden = (256, 256)  # Hidden widths of the MLP (input 64, output 10 from the data).
    model.activation = 'relu'  # 'relu', 'gelu' or 'tanh'.
    model.parametrization = 'sp'  # 'sp' or 'mup' (Yang et al. 2022; see base_width).
    model.base_width = 256  # 'mup': the hidden width at which it equals 'sp'.
  model.dtype = COMPUTE_DTYPE  # Compute dtype, 'float32' or 'bfloat16'; params stay float32.
  return model


def default_data_config(task: str) -> ml_collections.ConfigDict:
  """The default ``config.data`` of ``task`` (only ``batch_size`` for a plugin task)."""
  if _is_plugin(task):
    return ml_collections.ConfigDict(dict(
        batch_size=32,  # Examples per step; a plugin task's other fields are its own.
    ))
  if task == 'lm':
    return lm_size_config('tiny').data
  data = ml_collections.ConfigDict()
  if task == 'classic':
    data.batch_size = 100  # Examples per step (100 = full batch).
    data.num_train = 100  # Training examples.
    data.num_valid = 1000  # Validation examples (same planted rule).
    data.num_test = 1000  # Test examples (same planted rule).
    data.features = 10  # Input size.
    data.flip_prob = 0.1  # Label noise; the Bayes accuracy is 1 - flip_prob.
    data.seed = 0  # Dataset seed: the planted rule and the samples (not the batch order).
  else:
    data.batch_size = 32 if task == 'breast_cancer' else 128  # Examples per step.
    data.valid_fraction = 0.2  # Share of the examples in the valid split.
    data.test_fraction = 0.2  # Share of the examples in the test split.
    data.split_seed = 0  # Seed of the fixed train/valid/test split.
  return data


def optimizer_config() -> ml_collections.ConfigDict:
  """The `optimizer` group (Adam at 1e-3, constant schedule).

  A field named like a hyperparameter of the chosen optimizer sets it; one the optimizer lacks
  is ignored (a sweep's groups may use different optimizers). The numbers below are Optax's
  defaults for the built-ins; a plugin's hyperparameter absent here takes its own default
  (add it as a field: `configs.base_config` leaves this group unlocked, and the factory
  rejects a field that no known optimizer reads).
  """
  c = ml_collections.ConfigDict()
  # Structure: one compiled program per distinct combination of these.
  c.name = 'adam'  # Registered ('sgd', 'adam', 'adamw', 'rmsprop') or a plugin 'file.py:fn'.
  c.nesterov = False  # Nesterov momentum (sgd, rmsprop; NAdam(W) for adam, adamw).
  c.centered = False  # rmsprop only: divide by the standard deviation instead of the RMS.
  c.schedule = 'constant'  # One of 'constant', 'cosine', 'wsd' (all after warmup).
  c.decay_fraction = 0.2  # 'wsd': fraction of the total steps spent in the final linear decay.
  c.end_factor = 0.0  # 'cosine', 'wsd': final learning rate as a fraction of the peak.
  c.decay_mask = 'all'  # adamw: decay 'all' leaves (Optax's) or 2+-dim 'matrices' only.
  # Values: may differ between the points of one compiled sweep.
  c.learning_rate = 1e-3  # Peak learning rate (after warmup), >= 0.
  c.b1 = 0.9  # adam, adamw: first-moment decay, in [0, 1).
  c.b2 = 0.999  # adam, adamw: second-moment decay, in [0, 1).
  c.eps = 1e-8  # adam, adamw, rmsprop: denominator constant, >= 0.
  c.momentum = 0.0  # sgd, rmsprop: momentum in [0, 1); 0 is plain SGD / RMSprop.
  c.decay = 0.9  # rmsprop: decay of the squared-gradient average, in [0, 1].
  c.weight_decay = 1e-4  # adamw: decoupled weight decay (multiplied by the learning rate), >= 0.
  c.warmup = 0.0  # Linear warmup length as a fraction of the total steps, in [0, 1].
  c.clip_norm = 0.0  # Clip gradients to this global norm; <= 0 (or inf) is off.
  return c


def train_config() -> ml_collections.ConfigDict:
  """The `train` group: how long to train and how often to log, evaluate and save."""
  return ml_collections.ConfigDict(
      dict(
          steps=1000,  # total optimizer steps (also the horizon of the schedules)
          steps_per_call=50,  # steps run by one compiled call (lax.scan); fewer -> more dispatch
          microbatch_size=0,  # >0: a step's gradient as the mean over parts of this many examples
          log_every=50,  # steps between training-metric rows (mean over those steps)
          eval_every=250,  # steps between held-out evaluations (and one at the end)
          checkpoint_every=500,  # steps between checkpoints (a multiple of log_every)
          z_loss=0.0,  # lm: coefficient of mean(log^2 Z) of the output logits in the loss (PaLM)
          tensorboard=False,  # also write TensorBoard event files, WORKDIR/tb (tensorboardX)
      )
  )


def eval_config() -> ml_collections.ConfigDict:
  """The `eval` group: held-out metrics beyond the task's own (which are always on)."""
  return ml_collections.ConfigDict(
      dict(
          generation=False,  # lm: BLEU and ROUGE-L of greedy continuations (pip '.[text]')
          prompts=64,  # prompts per held-out split, evenly spaced windows (<= data.eval_windows)
          prompt_bytes=64,  # the first bytes of each window, given as the prompt
          continuation_bytes=64,  # bytes generated greedily, scored against the window's next ones
      )
  )


def sweep_config() -> ml_collections.ConfigDict:
  """The `sweep` group: the design (see `sweep.design.make_design`) and how to execute it."""
  return ml_collections.ConfigDict(
      dict(
          # Fixed: grid|random|sobol|lhs|factorial|fractional_factorial|explicit; adaptive
          # (settings in `adaptive`): successive_halving|hyperband|pbt|optuna.
          design="grid",  # the design (above)
          num_points=16,  # value points drawn by random / sobol / lhs
          replicates=1,  # every point repeated over this many seeds (seed + r)
          seed=0,  # seed of replicate 0; also seeds random designs
          generators="",  # fractional_factorial generators, e.g. 'a b c abc'
          points=[],  # explicit designs: list of {factor: value}
          metric="loss",  # tuning metric on the valid split (analysis)
          factors=ml_collections.ConfigDict(),  # factor -> {values | scale, low, high, num}
          slice_size=0,  # points a vmapped slice; 0: all (adaptive: narrowest stage's); -1: auto
          data_parallel=1,  # devices that split each point's batch (the mesh's `data` axis)
          diverge_factor=0.0,  # freeze a point when loss > factor * first loss (0 = only NaN/inf)
          report=True,  # write the analysis report at the end
          continue_from="",  # the experiment this one follows from (set by --continue_from)
          adaptive=adaptive_config(),  # the adaptive designs' settings
      )
  )


def adaptive_config() -> ml_collections.ConfigDict:
  """`sweep.adaptive`: settings of the adaptive designs (read only by the design named)."""
  return ml_collections.ConfigDict(
      dict(
          initial="grid",  # successive_halving / pbt: starting points from grid|random|sobol|lhs
          eta=3,  # successive_halving / hyperband: each rung keeps the best 1/eta (>= 2)
          min_steps=0,  # successive_halving / hyperband: the first rung's steps (0: auto)
          brackets=0,  # hyperband: brackets to run, most exploratory first (0: all)
          rank_by="last",  # successive_halving / hyperband rungs: last|cooldown|extrapolated
          cooldown_fraction=0.2,  # rank_by cooldown: the fork's decay, a fraction of the steps
          fit_evals=0,  # rank_by extrapolated: evaluations a ranking stage fits (0: eval_every's)
          per_replicate=False,  # halving / hyperband: each seed its own search (False: seeds' mean)
          interval=0,  # pbt: steps between exploit / explore (> 0)
          fraction=0.25,  # pbt: the worst fraction copies a point of the best fraction
          perturb=[0.8, 1.25],  # pbt: explore multiplies a value by one of these (then clips)
          resample=0.25,  # pbt: probability of a fresh draw from the range instead
          sampler="tpe",  # optuna: tpe|cmaes|gp|qmc|random
          batch=8,  # optuna: points proposed per round (one compiled program each round)
          rounds=4,  # optuna: rounds of ask / train / tell
      )
  )

