"""Independent baselines of the sweep benchmark: the same training written without our trainer.

Nothing here imports `jaxopt_lab.train` or the sweep driver. The JAX baselines use the task's
data and Flax model (`tasks.build`: `init_params`, `loss_fn`, `train_batches`) so the computation
matches; the optimizer is Optax's own `adam` / `adamw` (with `clip_by_global_norm` and a
warmup-cosine schedule where the config asks for them) under `optax.inject_hyperparams`, so one
compiled program serves every learning rate. The PyTorch loops rebuild the three models in
`torch.nn` and train them with `torch.optim`:

* `plain_step`: a Python loop of one jitted step per call, point after point;
* `plain_scan`: one jitted `lax.scan` over the chunk's steps per point, point after point;
* `plain_vmap`: one `jit(vmap(scan))` over all the points at once, on one device;
* `torch_loop`: the points one after another in PyTorch (its CPU wheel), `torch.optim`.

Each builder returns a function that runs `k` more steps of every point (the states carry on
from call to call, as a training loop's do) and waits for the result.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

# Intra-op threads of the PyTorch loops, each timed (the faster counts). Classic: one (its
# fastest for a 10-input model); the MLP and the LM: one and two (two is the setting for
# the LM; on a loaded machine OpenMP's spin-waits make two threads several times slower).
TORCH_THREADS = {"classic": (1,), "digits": (1, 2), "lm": (1, 2)}
_OPTIMIZERS = ("adam", "adamw")
_SCHEDULES = ("constant", "cosine")


def _unit_schedule(opt_cfg, total_steps: int) -> Callable[[Any], Any] | None:
  """The learning rate's multiplier at each step: linear warmup, then constant or cosine."""
  import optax

  if opt_cfg.schedule not in _SCHEDULES:
    raise ValueError(f"optimizer.schedule: the baselines know {', '.join(_SCHEDULES)}; got "
                     f"{opt_cfg.schedule!r}")
  warmup = int(round(float(opt_cfg.warmup) * total_steps))
  if opt_cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, total_steps,
                                              end_value=float(opt_cfg.end_factor))
  return optax.linear_schedule(0.0, 1.0, warmup) if warmup else None


def plain_optimizer(opt_cfg, total_steps: int):
  """`optax.inject_hyperparams` of the config's Adam / AdamW: call it with `learning_rate=`.

  `chain(clip_by_global_norm(clip_norm), adamw(lr * schedule, b1, b2, eps, weight_decay,
  mask))` as a plain Optax user writes it; no clipping when `clip_norm <= 0`, the weight decay
  masked to leaves of two or more dimensions for `decay_mask = 'matrices'`.
  """
  import jax
  import optax

  if opt_cfg.name not in _OPTIMIZERS:
    raise ValueError(f"optimizer.name: the baselines know {', '.join(_OPTIMIZERS)}; got "
                     f"{opt_cfg.name!r}")
  unit = _unit_schedule(opt_cfg, total_steps)
  clip = float(opt_cfg.clip_norm)
  mask = ((lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
          if opt_cfg.decay_mask == "matrices" else None)
  b1, b2, eps = float(opt_cfg.b1), float(opt_cfg.b2), float(opt_cfg.eps)

  def make(learning_rate):
    lr = learning_rate if unit is None else (lambda count: learning_rate * unit(count))
    if opt_cfg.name == "adamw":
      opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=float(opt_cfg.weight_decay),
                        mask=mask)
    else:
      opt = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt

  return optax.inject_hyperparams(make)


def _parts(config) -> int:
  """The micro-batches of a step of `config` (`train.microbatch_size`; 1: the batch at once)."""
  size, batch = int(config.train.get("microbatch_size", 0)), int(config.data.batch_size)
  return batch // size if 0 < size < batch else 1


def plain_jax(task, config, lrs: Sequence[float], seed: int, k: int, seq_points: int,
              vmap_points: int) -> dict[str, Callable[[], None]]:
  """The plain JAX + Optax loops: `{'plain_step', 'plain_scan', 'plain_vmap'}`.

  `plain_step` and `plain_scan` train the first `seq_points` of `lrs` one after another;
  `plain_vmap` trains the first `vmap_points` of them at once (none at 0). The chunk's batches
  (`task.train_batches(seed, 0, k)`, shared by the points as in a sweep of one seed) are on the
  device before the clock starts; each function is called once here (compile and warm-up).
  A step's gradient is accumulated over the config's parts (`train.microbatch_size`) as ours
  is: on a CPU that is faster for XLA, so the plain loops keep that advantage too.
  """
  import jax
  import jax.numpy as jnp
  import optax

  make_tx = plain_optimizer(config.optimizer, int(config.train.steps))
  tx = make_tx(learning_rate=0.0)  # `update` reads each point's value from its state
  grad_fn = jax.value_and_grad(lambda params, batch: task.loss_fn(params, batch)[0])
  parts = _parts(config)

  def accumulated(params, batch):
    # The config's micro-batches (`train.microbatch_size`), as a user would write them: the
    # mean of the parts' losses and gradients, one part after another.
    if parts == 1:
      return grad_fn(params, batch)
    split = jax.tree.map(lambda x: x.reshape((parts, -1) + x.shape[1:]), batch)

    def add(total, part):
      return jax.tree.map(jnp.add, total, grad_fn(params, part)), None

    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(add, zero, split)
    return jax.tree.map(lambda x: x / parts, total)

  def step(params, opt_state, batch):
    loss, grads = accumulated(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def scan(params, opt_state, batches):
    def body(carry, batch):
      params, opt_state, loss = step(*carry, batch)
      return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
    return params, opt_state, losses

  def init(lr, key):
    params = task.init_params(key)
    return params, make_tx(learning_rate=lr).init(params)

  key = jax.random.key(seed)
  batches = jax.device_put(task.train_batches(seed, 0, k))
  per_step = [jax.tree.map(lambda x, j=j: x[j], batches) for j in range(k)]
  step_c = jax.jit(step, donate_argnums=(0, 1))
  scan_c = jax.jit(scan, donate_argnums=(0, 1))
  vmap_c = jax.jit(jax.vmap(scan, in_axes=(0, 0, None)), donate_argnums=(0, 1))
  init_c = jax.jit(init)
  if max(seq_points, vmap_points) > len(lrs):
    raise ValueError(f"plain_jax: {max(seq_points, vmap_points)} points asked of {len(lrs)}")
  states = {name: [init_c(jnp.float32(lr), key) for lr in lrs[:seq_points]]
            for name in ("step", "scan")}
  holder = {}
  if vmap_points > 0:
    holder["vmap"] = jax.jit(jax.vmap(init, in_axes=(0, None)))(
        jnp.asarray(lrs[:vmap_points], jnp.float32), key)

  def loop_steps():
    for i, (params, opt_state) in enumerate(states["step"]):
      for batch in per_step:
        params, opt_state, loss = step_c(params, opt_state, batch)
      jax.block_until_ready((params, loss))
      states["step"][i] = (params, opt_state)

  def loop_scans():
    for i, (params, opt_state) in enumerate(states["scan"]):
      params, opt_state, losses = scan_c(params, opt_state, batches)
      jax.block_until_ready((params, losses))
      states["scan"][i] = (params, opt_state)

  def vmapped():
    params, opt_state, losses = vmap_c(*holder["vmap"], batches)
    jax.block_until_ready((params, losses))
    holder["vmap"] = (params, opt_state)

  fns = {"plain_step": loop_steps, "plain_scan": loop_scans}
  if vmap_points > 0:
    fns["plain_vmap"] = vmapped
  for fn in fns.values():
    fn()
  return fns


# ----------------------------------------------------------------------------- PyTorch


def torch_loop(task_name: str, task, config, lrs: Sequence[float], seed: int, k: int,
               threads: int) -> Callable[[], None] | str:
  """The points of `lrs` one after another in PyTorch, `k` steps each; or why it can't run.

  classic: `Linear(features, 1)`, `BCEWithLogitsLoss`, `torch.optim.Adam`; digits: the MLP
  64-256-256-10 (ReLU), `CrossEntropyLoss`, `torch.optim.Adam`; the LM: `TorchLM` (the same
  transformer), next-byte cross-entropy, `torch.optim.AdamW` with the config's weight decay on
  the matrices only, gradient clipping and warmup-cosine schedule. The same batches as the JAX
  loops; `threads` intra-op threads (set at every call: the setting is per process).
  """
  try:
    import torch
  except ImportError:
    return "torch is not installed (the CPU wheel of PyTorch, the optional `bench` extra)"
  opt_cfg = config.optimizer
  if opt_cfg.name not in _OPTIMIZERS or opt_cfg.schedule not in _SCHEDULES:
    return (f"the PyTorch loop knows {', '.join(_OPTIMIZERS)} with a {' or '.join(_SCHEDULES)}"
            f" schedule; the config has {opt_cfg.name!r}, {opt_cfg.schedule!r}")
  if str(config.model.get("dtype", "float32")) != "float32":
    return f"the PyTorch loop computes in float32; the config has {config.model.dtype!r}"
  data = task.train_batches(seed, 0, k)
  if task_name == "lm":
    if config.model.positions != "learned" or config.model.norm != "rmsnorm":
      return "the PyTorch LM has learned positions and RMSNorm only"
    tokens = torch.from_numpy(data["tokens"].astype("int64"))
    batches = [(tokens[j, :, :-1], tokens[j, :, 1:]) for j in range(k)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def build(i):
      torch.manual_seed(i)
      model = TorchLM(**{f: int(config.model[f]) for f in ("vocab", "width", "depth", "heads",
                                                          "context")})
      return model, lambda out, target: loss_fn(out.flatten(0, 1), target.flatten())
  else:
    xs = torch.from_numpy(data["inputs"].astype("float32"))
    if task_name == "classic":
      ys = torch.from_numpy(data["labels"].astype("float32"))
      loss_fn = torch.nn.BCEWithLogitsLoss()
      layers = [xs.shape[-1], 1]
    else:
      ys = torch.from_numpy(data["labels"].astype("int64"))
      loss_fn = torch.nn.CrossEntropyLoss()
      layers = [xs.shape[-1], *config.model.hidden, int(task.eval_data["valid"]["labels"].max())
                + 1]
    batches = [(xs[j], ys[j]) for j in range(k)]

    def build(i):
      torch.manual_seed(i)
      mods: list[torch.nn.Module] = []
      for a, b in zip(layers[:-1], layers[1:], strict=True):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
      model = torch.nn.Sequential(*mods[:-1])
      if task_name == "classic":
        return model, lambda out, y: loss_fn(out.squeeze(-1), y)
      return model, loss_fn

  total = int(config.train.steps)
  unit = _torch_unit_schedule(opt_cfg, total)
  points = []
  for i, lr in enumerate(lrs):
    model, loss = build(i)
    betas = (float(opt_cfg.b1), float(opt_cfg.b2))
    if opt_cfg.name == "adamw":
      matrices = [p for p in model.parameters() if p.ndim >= 2]
      rest = [p for p in model.parameters() if p.ndim < 2]
      decay = float(opt_cfg.weight_decay)
      groups = ([{"params": matrices, "weight_decay": decay},
                 {"params": rest, "weight_decay": 0.0}]
                if opt_cfg.decay_mask == "matrices" else
                [{"params": matrices + rest, "weight_decay": decay}])
      opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=float(opt_cfg.eps))
    else:
      opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=float(opt_cfg.eps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, unit) if unit else None
    points.append((model, loss, opt, sched))
  clip = float(opt_cfg.clip_norm)

  def loop():
    # The whole batch at once, whatever the config's `train.microbatch_size`: the loop a user
    # writes, and PyTorch's fastest on a CPU (in parts of 2 windows the LM's step is slower;
    # benchmarks/HISTORY.md, "Micro-batches").
    torch.set_num_threads(threads)
    for model, loss, opt, sched in points:
      for x, y in batches:
        opt.zero_grad(set_to_none=True)
        value = loss(model(x), y)
        value.backward()
        if clip > 0:
          torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
          sched.step()

  loop()
  return loop


def _torch_unit_schedule(opt_cfg, total_steps: int) -> Callable[[int], float] | None:
  """`_unit_schedule` for `torch.optim.lr_scheduler.LambdaLR` (the same multipliers)."""
  warmup = int(round(float(opt_cfg.warmup) * total_steps))
  end = float(opt_cfg.end_factor)
  if opt_cfg.schedule == "constant":
    return (lambda s: min(1.0, s / warmup)) if warmup else None

  def cosine(s: int) -> float:
    if s < warmup:
      return s / warmup
    frac = min(1.0, (s - warmup) / max(1, total_steps - warmup))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * frac))

  return cosine


@functools.lru_cache(maxsize=1)
def _torch_modules():
  """`TorchLM`'s classes, defined when torch is importable (it is an optional dependency)."""
  import torch
  from torch import nn
  from torch.nn import functional as F  # noqa: N812 - PyTorch's own alias

  class Block(nn.Module):
    """Pre-norm block: `x + attn(norm(x))`, `x + mlp(norm(x))`, no biases."""

    def __init__(self, width: int, heads: int, depth: int):
      super().__init__()
      self.heads = heads
      self.attn_norm = nn.RMSNorm(width, eps=1e-6)
      self.qkv = nn.Linear(width, 3 * width, bias=False)
      self.out = nn.Linear(width, width, bias=False)
      self.mlp_norm = nn.RMSNorm(width, eps=1e-6)
      self.up = nn.Linear(width, 4 * width, bias=False)
      self.down = nn.Linear(4 * width, width, bias=False)
      for layer, std in ((self.qkv, 0.02), (self.up, 0.02),
                         (self.out, 0.02 / math.sqrt(2 * depth)),
                         (self.down, 0.02 / math.sqrt(2 * depth))):
        nn.init.normal_(layer.weight, std=std)

    def forward(self, x):
      b, t, w = x.shape
      # The same [batch, time, 3, heads, size] layout as the JAX model's fused projection.
      q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, w // self.heads).unbind(2)
      y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                         v.transpose(1, 2), is_causal=True)
      x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
      # jax.nn.gelu's default is the tanh approximation.
      return x + self.down(F.gelu(self.up(self.mlp_norm(x)), approximate="tanh"))

  class LM(nn.Module):
    """jaxopt_lab/models/transformer.py in PyTorch: learned positions, RMSNorm pre-norm blocks,
    causal attention, GELU 4x MLP, no biases, output head tied to the token embedding, GPT-2
    initialisation (N(0, 0.02^2); the residual projections over sqrt(2 depth))."""

    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int):
      super().__init__()
      self.embed = nn.Embedding(vocab, width)
      self.pos_embed = nn.Parameter(torch.empty(context, width))
      nn.init.normal_(self.embed.weight, std=0.02)
      nn.init.normal_(self.pos_embed, std=0.02)
      self.blocks = nn.ModuleList([Block(width, heads, depth) for _ in range(depth)])
      self.final_norm = nn.RMSNorm(width, eps=1e-6)

    def forward(self, tokens):
      x = self.embed(tokens) + self.pos_embed[: tokens.shape[-1]]
      for block in self.blocks:
        x = block(x)
      return self.final_norm(x) @ self.embed.weight.T

  return LM


def TorchLM(**kwargs):  # noqa: N802 - a class, built lazily (torch is optional)
  """The PyTorch twin of the JAX transformer LM (see `_torch_modules`)."""
  return _torch_modules()(**kwargs)
