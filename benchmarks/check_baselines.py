r"""Checks that the independent baselines compute what our trainer computes (under a minute).

* the plain Optax optimizer of `baselines.plain_optimizer` against the single-run trainer's
  (`train.make_train_step`): the same initial parameters and batches, `--steps` steps of each;
  the parameters' largest difference, relative to the largest parameter. Classic and digits run
  in float64 (Adam magnifies float32 rounding where a gradient is near zero: digits drifts from
  1e-7 after one step to 1e-3 after 50 in float32), the LM in float32 (its parameters are
  float32 by construction); the values as floats of that dtype in both;
* the PyTorch LM (`baselines.TorchLM`) against the JAX transformer: the JAX parameters copied
  in, the loss and the gradients of one batch.

Exits non-zero when a float32 difference passes `--tolerance`, a float64 one 1e-6. (Measured:
float64 4e-18 / 5e-12 after one step, 4e-8 / 5e-8 after 300 for classic / digits; float32 LM
2e-5 after 300; the PyTorch LM's loss 1e-6 and gradients 2e-7.)

  python -m benchmarks.check_baselines
  python -m benchmarks.check_baselines --tasks=classic,lm --steps=700
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from benchmarks import baselines, common

_TASKS = flags.DEFINE_list("tasks", list(common.TASKS), "Tasks whose optimizer to check.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps of the optimizer check.")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-3, "Largest relative difference accepted.")


def _config(task: str):
  base = common.experiment_config(task)
  if task == "lm":
    common.shrink_lm(base)  # the same structure, small enough for a few seconds
  else:
    base.model.dtype = "float64"
  config = common.sweep_config(base, 1, 1, -1)
  config.train.steps = 1000  # warmup (LM: 50 steps) and cosine decay inside the check
  return base, config


def optimizer_difference(task_name: str, steps: int) -> float:
  """Largest |ours - plain| over the parameters after `steps`, over the largest |parameter|."""
  import jax
  import jax.numpy as jnp
  import optax

  from jaxopt_lab import tasks, train
  from jaxopt_lab.optim import factory

  base, config = _config(task_name)
  task = tasks.build(config)
  lr = common.learning_rates(base, 1)[0]
  # The values in the parameters' dtype: the sweep's float32 arrays would round b1, b2 and the
  # learning rate, which the plain optimizer takes as Python floats.
  dtype = jnp.float32 if task_name == "lm" else jnp.float64
  hp = {k: jnp.asarray(v, dtype)
        for k, v in factory.hparams_from_config(config.optimizer).items()}
  hp["learning_rate"] = jnp.asarray(lr, dtype)
  state = train.init_state(task, config, hp, 0)
  ours = jax.jit(train.make_train_step(task, config))
  tx = baselines.plain_optimizer(config.optimizer, int(config.train.steps))(learning_rate=lr)

  @jax.jit
  def plain(params, opt_state, batch):
    grads = jax.grad(lambda p: task.loss_fn(p, batch)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = state.params, tx.init(state.params)
  batches = task.train_batches(0, 0, steps)
  for j in range(steps):
    batch = jax.tree.map(lambda x, j=j: x[j], batches)
    state, _ = ours(state, batch, hp)
    params, opt_state = plain(params, opt_state, batch)
  diff = max(float(jnp.abs(a - b).max())
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True))
  return diff / max(float(jnp.abs(a).max()) for a in jax.tree.leaves(params))


def torch_lm_difference() -> tuple[float, float] | str:
  """(|loss difference|, largest gradient difference over the largest gradient) of the PyTorch
  LM with the JAX LM's parameters, on one `lm_tiny` batch; or why it can't run."""
  try:
    import torch
  except ImportError:
    return "torch is not installed"
  import jax
  import numpy as np

  from jaxopt_lab import tasks

  config = common.sweep_config(common.experiment_config("lm"), 1, 1, -1)
  task = tasks.build(config)
  params = task.init_params(jax.random.key(0))
  tokens = task.train_batches(0, 0, 1)["tokens"][0]
  loss, grads = jax.value_and_grad(lambda p: task.loss_fn(p, {"tokens": tokens})[0])(params)
  model = baselines.TorchLM(**{f: int(config.model[f])
                               for f in ("vocab", "width", "depth", "heads", "context")})
  # JAX names -> PyTorch names; kernels are [in, out], torch's weights [out, in].
  pairs = {"embed.weight": ("embed", "embedding"), "pos_embed": ("pos_embed",),
           "final_norm.weight": ("final_norm", "scale")}
  for i in range(int(config.model.depth)):
    for norm in ("attn_norm", "mlp_norm"):
      pairs[f"blocks.{i}.{norm}.weight"] = ("blocks", str(i), norm, "scale")
    for name, path in (("qkv", "attn"), ("out", "attn"), ("up", "mlp"), ("down", "mlp")):
      pairs[f"blocks.{i}.{name}.weight"] = ("blocks", str(i), path, name, "kernel")

  def pick(tree, path):
    for key in path:
      tree = tree[key]
    return np.asarray(tree)

  state = {}
  for name, path in pairs.items():
    value = pick(params, path)
    state[name] = torch.from_numpy(np.ascontiguousarray(value.T if path[-1] == "kernel"
                                                        else value))
  model.load_state_dict(state)
  t = torch.from_numpy(tokens.astype("int64"))
  out = model(t[:, :-1])
  torch_loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), t[:, 1:].flatten())
  torch_loss.backward()
  grad_diff, grad_max = 0.0, 0.0
  named = dict(model.named_parameters())
  for name, path in pairs.items():
    g = pick(grads, path)
    g = g.T if path[-1] == "kernel" else g
    tg = named[name].grad.numpy()
    grad_diff, grad_max = max(grad_diff, float(np.abs(g - tg).max())), max(grad_max,
                                                                           float(np.abs(g).max()))
  return abs(float(loss) - float(torch_loss)), grad_diff / grad_max


def main(argv: Sequence[str]) -> None:
  del argv
  import jax

  jax.config.update("jax_enable_x64", True)
  bad = []
  for task in _TASKS.value:
    if task not in common.TASKS:
      raise app.UsageError(f"--tasks: unknown task {task!r}; valid choices: "
                           f"{', '.join(common.TASKS)}")
    diff = optimizer_difference(task, _STEPS.value)
    dtype = "float32" if task == "lm" else "float64"
    print(f"{task}: plain Optax vs our trainer after {_STEPS.value} steps ({dtype}): relative "
          f"parameter difference {diff:.2e}")
    if not diff <= (_TOLERANCE.value if task == "lm" else 1e-6):
      bad.append(task)
  result = torch_lm_difference()
  if isinstance(result, str):
    print(f"PyTorch LM: skipped ({result})")
  else:
    print(f"PyTorch LM vs JAX LM, one batch: |loss difference| {result[0]:.2e}, relative "
          f"gradient difference {result[1]:.2e}")
    if not max(result) <= _TOLERANCE.value:
      bad.append("torch lm")
  if bad:
    raise SystemExit(f"differences above --tolerance={_TOLERANCE.value}: {', '.join(bad)}")


if __name__ == "__main__":
  app.run(main)
